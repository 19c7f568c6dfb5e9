#!/usr/bin/env bash
# Start a real OCI registry (Debian's docker-registry: CNCF distribution 2.8) on 127.0.0.1 for the image tests.
# Idempotent: a registry already answering on the port is reused. Stop it with .ci/registry-down.sh.
#
#   eval "$(bash .ci/registry-up.sh)"    # exports FAASCTL_REGISTRY=127.0.0.1:PORT; progress goes to stderr
#
# Env: REGISTRY_CI_DIR (default /tmp/registry-ci: config, blobs, pid file, log), REGISTRY_PORT (default 5055).
# Plain HTTP on loopback: dockerd trusts 127.0.0.0/8 without TLS; podman is told so by .ci/podman-setup.sh.
set -euo pipefail
D=${REGISTRY_CI_DIR:-/tmp/registry-ci}
PORT=${REGISTRY_PORT:-5055}
say() { echo "registry-up: $*" >&2; }
answers() { curl -fsS -o /dev/null "http://127.0.0.1:$PORT/v2/"; }

if ! command -v docker-registry >/dev/null || ! command -v curl >/dev/null; then
  say "installing docker-registry"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry curl >/dev/null
fi

if ! answers 2>/dev/null; then
  mkdir -p "$D/data"
  cat > "$D/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $D/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
YAML
  say "starting docker-registry on 127.0.0.1:$PORT (log: $D/registry.log)"
  setsid docker-registry serve "$D/config.yml" >"$D/registry.log" 2>&1 </dev/null &
  echo $! >"$D/registry.pid"
  for _ in $(seq 100); do answers 2>/dev/null && break; sleep 0.1; done
  answers || { say "the registry did not start: $(tail -1 "$D/registry.log")"; exit 1; }
fi

echo "export FAASCTL_REGISTRY=127.0.0.1:$PORT"
