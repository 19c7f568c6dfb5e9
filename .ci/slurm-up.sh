#!/usr/bin/env bash
# faasctl CI: bring up a one-node Slurm cluster on localhost (Debian 12, as root, no systemd)
# for tests/deploy/test_slurm.py (marker slurm). ~5 s once the packages are installed.
# Idempotent: re-running while it is up changes nothing. Tear down: .ci/slurm-down.sh.
# SLURM_ACCOUNTING=1 also starts MariaDB + slurmdbd so that sacct works (the tests do not need it).
# Adapted from ../shared/tools/slurm-up.sh.
set -euo pipefail
B=${SLURM_CI_DIR:-/tmp/slurm}
ACCT=${SLURM_ACCOUNTING:-0}

# alive PIDFILE COMM: process from pidfile exists, has that name, and is not a zombie
alive() { local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] &&
  ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null; }
waitfor() { local i; for i in $(seq 150); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm-up.sh: timed out waiting for: $1" >&2; tail -n 20 "$B"/log/*.log >&2 || true; return 1; }

# 1. packages (the policy-rc.d/no-systemd environment just skips their service start)
pkgs="slurmctld slurmd slurm-client munge"; [ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
mkdir -p "$B"/state/ctld "$B"/state/d "$B"/run "$B"/log /etc/slurm

# 2. munge (the Debian postinst normally creates the key)
[ -s /etc/munge/munge.key ] || mungekey --create --force
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
alive /run/munge/munged.pid munged || runuser -u munge -- /usr/sbin/munged --force
waitfor 'munge -n | unmunge'

# 3. optional accounting: MariaDB (datadir under $B) + slurmdbd
if [ "$ACCT" = 1 ]; then
  M=$B/mysql
  if [ ! -d "$M/mysql" ]; then
    install -d -o mysql -g mysql "$M"
    mariadb-install-db --user=mysql --datadir="$M" --skip-test-db >"$B/log/mariadb-install.log" 2>&1
  fi
  if ! alive "$M/mysqld.pid" mariadbd; then
    setsid mariadbd --user=mysql --datadir="$M" --socket="$M/mysqld.sock" --pid-file="$M/mysqld.pid" \
      --log-error="$M/mysqld.err" --bind-address=127.0.0.1 --port=3306 </dev/null >/dev/null 2>&1 &
  fi
  waitfor "mariadb-admin --socket=$M/mysqld.sock ping"
  mariadb --socket="$M/mysqld.sock" -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$B/log/slurmdbd.log
PidFile=$B/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmci
StorageLoc=slurm_acct_db
EOF
  chmod 0600 /etc/slurm/slurmdbd.conf
  alive "$B/run/slurmdbd.pid" slurmdbd || slurmdbd
  waitfor '(: </dev/tcp/127.0.0.1/6819)'
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

# 4. slurm.conf: node "localhost" whatever the hostname; hardware as slurmd detects it
HW=$(slurmd -C | head -n 1 | cut -d' ' -f2-)   # CPUs=.. Boards=.. ... RealMemory=..
NEW=$(cat <<EOF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
$ACCT_LINES
JobCompType=jobcomp/filetxt
JobCompLoc=$B/log/jobcomp.txt
StateSaveLocation=$B/state/ctld
SlurmdSpoolDir=$B/state/d
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ "$NEW" != "$(cat /etc/slurm/slurm.conf 2>/dev/null)" ]; then
  for d in slurmd slurmctld; do   # config changed: restart whatever is running
    if alive "$B/run/$d.pid" $d; then p=$(cat "$B/run/$d.pid"); kill "$p"
      waitfor "! alive $B/run/$d.pid $d"; fi
  done
  printf '%s\n' "$NEW" > /etc/slurm/slurm.conf
fi

# 5. daemons (they fork into the background themselves)
alive "$B/run/slurmctld.pid" slurmctld || slurmctld
alive "$B/run/slurmd.pid" slurmd || slurmd -N localhost
waitfor '[ "$(sinfo -h -n localhost -o %T)" = idle ]'
sinfo
