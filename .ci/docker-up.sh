#!/usr/bin/env bash
# Start a private Docker engine for the tests and make a local base image with Python, since Docker Hub
# cannot be reached here. Idempotent: an engine already answering on the socket and an existing base are reused.
#
#   eval "$(.ci/docker-up.sh)"     # exports DOCKER_HOST and FAASCTL_BASE_IMAGE; progress goes to stderr
#
# Env: DOCKER_CI_DIR (default /tmp/docker-ci: socket, data, logs), FAASCTL_BASE_IMAGE (default
# local/bookworm-python:ci). The engine is Debian's docker.io with vfs storage, no bridge and no iptables, on its
# own socket; builds need the legacy builder with host networking (the docker SDK: network_mode="host").
# The base is Debian bookworm minbase by debootstrap with python3 (3.11, /usr/bin/python3) and python3-venv.
# It trusts this machine's extra CAs (/usr/local/share/ca-certificates) so that pip inside a build reaches the
# package index through this machine's egress: that is for CI only, the shipped Dockerfiles copy no CA in.
# Stop the engine with .ci/docker-down.sh.
set -euo pipefail
D=${DOCKER_CI_DIR:-/tmp/docker-ci}
BASE=${FAASCTL_BASE_IMAGE:-local/bookworm-python:ci}
export DOCKER_HOST=unix://$D/docker.sock
say() { echo "docker-up: $*" >&2; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker >/dev/null; then
  say "installing docker.io and debootstrap"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd on $DOCKER_HOST (log: $D/dockerd.log)"
  mkdir -p "$D"
  setsid dockerd --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" -H "$DOCKER_HOST" \
    --storage-driver vfs --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    >"$D/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { say "dockerd did not start: $(tail -1 "$D/dockerd.log")"; exit 1; }
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  say "making the base image $BASE by debootstrap (about a minute)"
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  rm -rf "$D/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$D/rootfs" "$MIRROR" >"$D/debootstrap.log" 2>&1 \
    || { say "debootstrap failed: $(tail -1 "$D/debootstrap.log")"; exit 1; }
  cp /usr/local/share/ca-certificates/*.crt "$D/rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$D/rootfs" update-ca-certificates >/dev/null 2>&1
  rm -rf "$D/rootfs/var/cache/apt/archives/"*.deb "$D/rootfs/var/lib/apt/lists/"*
  tar -C "$D/rootfs" -c . | docker import -c 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$D/rootfs"
fi

echo "export DOCKER_HOST=$DOCKER_HOST"
echo "export FAASCTL_BASE_IMAGE=$BASE"
