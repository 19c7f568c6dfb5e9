#!/usr/bin/env bash
# Stop the engine that .ci/docker-up.sh started, found by its pid file (nothing else is touched).
# Images stay under $DOCKER_CI_DIR/data for the next docker-up.sh.
set -uo pipefail
D=${DOCKER_CI_DIR:-/tmp/docker-ci}
p=$(cat "$D/dockerd.pid" 2>/dev/null) || { echo "docker-down: not running"; exit 0; }
[ "$(cat "/proc/$p/comm" 2>/dev/null)" = dockerd ] || { echo "docker-down: not running"; exit 0; }
kill -TERM "$p"
for _ in $(seq 75); do [ -d "/proc/$p" ] || break; sleep 0.2; done
[ -d "/proc/$p" ] && kill -KILL "$p"
echo "docker-down: stopped dockerd (pid $p)"
