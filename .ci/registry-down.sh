#!/usr/bin/env bash
# Stop the registry that .ci/registry-up.sh started, found by its pid file (nothing else is touched).
# The pushed images stay under $REGISTRY_CI_DIR/data.
set -uo pipefail
D=${REGISTRY_CI_DIR:-/tmp/registry-ci}
p=$(cat "$D/registry.pid" 2>/dev/null) || { echo "registry-down: not running"; exit 0; }
[ "$(cat "/proc/$p/comm" 2>/dev/null)" = docker-registry ] || { echo "registry-down: not running"; exit 0; }
kill -TERM "$p"
for _ in $(seq 50); do [ -d "/proc/$p" ] || break; sleep 0.1; done
[ -d "/proc/$p" ] && kill -KILL "$p"
rm -f "$D/registry.pid"
echo "registry-down: stopped docker-registry (pid $p)"
