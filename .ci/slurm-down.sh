#!/usr/bin/env bash
# faasctl CI: tear down what .ci/slurm-up.sh started: cancel jobs, stop the daemons by their pid files,
# remove config and state. Idempotent. Keeps $B/log and the installed packages.
set -uo pipefail
B=${SLURM_CI_DIR:-/tmp/slurm}

alive() { local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] &&
  ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null; }
stop() {  # stop PIDFILE COMM: SIGTERM, wait up to 15 s, then SIGKILL
  alive "$1" "$2" || return 0
  local p i; p=$(cat "$1"); kill -TERM "$p" 2>/dev/null
  for i in $(seq 75); do alive "$1" "$2" || return 0; sleep 0.2; done
  echo "slurm-down.sh: $2 ($p) ignored SIGTERM, killing" >&2; kill -KILL "$p" 2>/dev/null; sleep 0.5; }

if alive "$B/run/slurmctld.pid" slurmctld; then
  ids=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$ids" ]; then
    scancel $ids 2>/dev/null || true
    for i in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
stop "$B/run/slurmd.pid" slurmd
stop "$B/run/slurmctld.pid" slurmctld
stop "$B/run/slurmdbd.pid" slurmdbd
stop "$B/mysql/mysqld.pid" mariadbd
stop /run/munge/munged.pid munged
rm -rf "$B/state" "$B/run" "$B/mysql"
rm -f /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf
echo "slurm: down"
