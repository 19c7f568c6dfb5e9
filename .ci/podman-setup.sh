#!/usr/bin/env bash
# Install podman and configure it for CI on this VM: the local registry of .ci/registry-up.sh over plain HTTP,
# runc (crun refuses this VM's hybrid cgroup layout) and default ulimits under the VM's hard limits.
# Idempotent; the files it writes are named faasctl-ci.conf so that removing them undoes it.
#
#   bash .ci/podman-setup.sh 127.0.0.1:5055
set -euo pipefail
REGISTRY=${1:-${FAASCTL_REGISTRY:-127.0.0.1:5055}}
say() { echo "podman-setup: $*" >&2; }

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  say "installing podman and runc"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc >/dev/null
fi

mkdir -p /etc/containers/registries.conf.d /etc/containers/containers.conf.d
cat > /etc/containers/registries.conf.d/faasctl-ci.conf <<CONF
# faasctl CI (.ci/podman-setup.sh): the local registry of .ci/registry-up.sh speaks plain HTTP.
[[registry]]
location = "$REGISTRY"
insecure = true
CONF
cat > /etc/containers/containers.conf.d/faasctl-ci.conf <<'CONF'
# faasctl CI (.ci/podman-setup.sh): crun refuses this VM's hybrid cgroups; podman's default ulimits exceed its hard limits.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
say "podman $(podman --version | awk '{print $3}') trusts $REGISTRY over HTTP and runs runc"
