#!/usr/bin/env bash
# Single-node development / CI SLURM cluster (Debian 12, Slurm 22.05, run as root).
#
#   scripts/slurm-dev-cluster.sh up       install if needed, configure, start munged, MariaDB,
#                                         slurmdbd, slurmctld, slurmd; wait for the node to be idle.
#                                         Idempotent: returns at once when the cluster is already up.
#   scripts/slurm-dev-cluster.sh down     cancel leftover jobs, then stop the daemons by the PIDs in
#                                         their pid files (never by name), waiting for each to exit.
#   scripts/slurm-dev-cluster.sh status   sinfo + daemon PIDs; exit 0 only if the cluster is up.
#
# Accounting (slurmdbd + MariaDB) is always on: submitit needs `sacct` to notice a job that dies
# without writing its result (os._exit, segfault, OOM kill, scancel); without it, it waits forever.
#
# Environment knobs:
#   SLURM_DIR=/tmp/slurm   state, spool, logs and slurm pid files (kept across down/up, so job ids
#                          keep increasing and never collide with older rows in the accounting DB)
#   MIN_CPUS=4             the node advertises at least this many CPUs (SlurmdParameters=config_overrides),
#                          so several array tasks run at once on a 2-core runner
#   MEM_PERCENT=90         RealMemory = this % of what `slurmd -C` reports (slurmd drains a node
#                          configured with more memory than it has)
#   UP_TIMEOUT_S=90        how long `up` waits for the node to become idle
set -euo pipefail

SLURM_DIR=${SLURM_DIR:-/tmp/slurm}
MIN_CPUS=${MIN_CPUS:-4}
MEM_PERCENT=${MEM_PERCENT:-90}
UP_TIMEOUT_S=${UP_TIMEOUT_S:-90}
SLURM_CONF_FILE=/etc/slurm/slurm.conf
SLURMDBD_CONF_FILE=/etc/slurm/slurmdbd.conf
PKGS="slurm-wlm munge slurmdbd mariadb-server"
NEEDED_CMDS="munged munge unmunge mariadbd mariadb mariadb-admin slurmdbd slurmctld slurmd sinfo squeue sbatch srun sacct sacctmgr scontrol scancel"

# name : pid file : process name (as in /proc/PID/comm).  Stop order = this order.
DAEMONS=(
  "slurmd:$SLURM_DIR/slurmd.pid:slurmd"
  "slurmctld:$SLURM_DIR/slurmctld.pid:slurmctld"
  "slurmdbd:$SLURM_DIR/slurmdbd.pid:slurmdbd"
  "mariadbd:/run/mysqld/mysqld.pid:mariadbd"
  "munged:/run/munge/munged.pid:munged"
)

export DEBIAN_FRONTEND=noninteractive
ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }
log() { echo "[slurm-dev-cluster] $*"; }
die() { echo "[slurm-dev-cluster] ERROR: $*" >&2; exit 1; }
node_name() { hostname -s 2>/dev/null || uname -n; }

# ---- process helpers (by PID only) ------------------------------------------------------------------
# pid_of NAME PIDFILE COMM: print the PID if the pid file names a live (non-zombie) process with the
# expected name, else nothing. A stale pid file whose PID was reused by another program is ignored.
pid_of() {
  local f=$2 comm=$3 pid state
  [ -s "$f" ] || return 0
  pid=$(tr -dc '0-9' < "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 0
  state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$state" != Z ] || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 0
  echo "$pid"
}
alive() {   # alive PID: exists and is not a zombie (PID 1 here may not reap the daemons' parents)
  [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]
}
daemon_pid() {   # daemon_pid NAME
  local d
  for d in "${DAEMONS[@]}"; do
    IFS=: read -r n f c <<<"$d"
    [ "$n" = "$1" ] && { pid_of "$n" "$f" "$c"; return 0; }
  done
}
all_daemons_running() {
  local d
  for d in "${DAEMONS[@]}"; do
    IFS=: read -r n f c <<<"$d"
    [ -n "$(pid_of "$n" "$f" "$c")" ] || return 1
  done
}
node_state() { sinfo -h -N -n "$(node_name)" -o '%T' 2>/dev/null | sed -n 1p || true; }

stop_daemon() {   # stop_daemon NAME PIDFILE COMM: SIGTERM, wait up to 30 s, then SIGKILL
  local name=$1 f=$2 comm=$3 pid t0=$SECONDS i
  pid=$(pid_of "$name" "$f" "$comm")
  if [ -z "$pid" ]; then log "$name: not running"; rm -f "$f"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 120); do
    alive "$pid" || { log "$name ($pid) stopped after $((SECONDS - t0))s"; rm -f "$f"; return 0; }
    sleep 0.25
  done
  log "$name ($pid) still running after 30s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
  rm -f "$f"
}

# ---- down ---------------------------------------------------------------------------------------------
cmd_down() {
  local t0 d jobs i
  t0=$(ms)
  # 1. cancel leftover jobs so no slurmstepd / job process outlives slurmd
  if [ -n "$(daemon_pid slurmctld)" ] && scontrol ping 2>/dev/null | grep -q UP; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      log "cancelling leftover jobs: $jobs"
      # shellcheck disable=SC2086
      scancel --full $jobs 2>/dev/null || true
      for i in $(seq 1 60); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
      [ -z "$(squeue -h 2>/dev/null)" ] || log "warning: jobs still listed after 30s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
    fi
  fi
  # 2. stop daemons in dependency order, each by PID, waiting for it to exit
  for d in "${DAEMONS[@]}"; do
    IFS=: read -r n f c <<<"$d"
    stop_daemon "$n" "$f" "$c"
  done
  log "down in $(secs $(( $(ms) - t0 )))s"
}

# ---- up -------------------------------------------------------------------------------------------------
install_packages() {
  local c missing=""
  for c in $NEEDED_CMDS; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
  [ -n "$missing" ] || { log "packages already installed"; return 0; }
  log "installing $PKGS (missing:$missing)"
  # Never let the packages' init scripts start their daemons (Docker images without policy-rc.d
  # would otherwise start munged / mariadbd themselves, outside our pid-file bookkeeping).
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends $PKGS
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  for c in $NEEDED_CMDS; do command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"; done
}

write_configs() {
  local node hw mem cpus
  node=$(node_name)
  mkdir -p "$SLURM_DIR"/{state,spool,log} /etc/slurm
  getent hosts "$node" >/dev/null || echo "127.0.0.1 $node" >> /etc/hosts   # slurm must resolve it
  # Real node line from hwloc; RealMemory lowered to MEM_PERCENT %. `sed -n 1p`, not `head -1`
  # (SIGPIPE under pipefail).
  hw=$(slurmd -C | sed -n 1p)   # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$mem" ] && [ -n "$cpus" ] || die "cannot parse 'slurmd -C' output: $hw"
  hw=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * MEM_PERCENT / 100))/; s/^NodeName=[^ ]*/NodeName=$node/" <<<"$hw")
  if [ "$cpus" -lt "$MIN_CPUS" ]; then
    # Oversubscribe: advertise MIN_CPUS single-core sockets (with CR_Core_Memory one job takes a
    # whole core, so the topology must have MIN_CPUS cores, not just MIN_CPUS CPUs).
    # config_overrides makes slurmd accept the node line instead of draining the node.
    hw=$(sed -E "s/ (CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g" <<<"$hw")
    hw=$(sed "s/^NodeName=$node/NodeName=$node CPUs=$MIN_CPUS/" <<<"$hw")
  fi

  cat > "$SLURM_CONF_FILE" <<CONF
# Generated by scripts/slurm-dev-cluster.sh -- single-node dev/CI cluster.
ClusterName=dev
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
$hw State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

  cat > "$SLURMDBD_CONF_FILE" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$SLURM_DIR/log/slurmdbd.log
PidFile=$SLURM_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$SLURMDBD_CONF_FILE"      # slurmdbd refuses a world-readable file
  log "node: $hw"
}

wait_for() {   # wait_for TIMEOUT_S DESCRIPTION COMMAND...
  local timeout=$1 what=$2 deadline=$((SECONDS + $1)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what not ready after ${timeout}s (logs: $SLURM_DIR/log)"
    sleep 0.25
  done
}
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q UP; }

start_munged() {
  [ -n "$(daemon_pid munged)" ] && return 0
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -k /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge    # no systemd RuntimeDirectory= here
  runuser -u munge -- /usr/sbin/munged               # as root it refuses ("PRNG seed dir is insecure")
  wait_for 10 munged munge_ok
}

start_mariadb() {
  if [ -z "$(daemon_pid mariadbd)" ]; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
      --log-error="$SLURM_DIR/log/mariadb.log" \
      --innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadbd mariadb-admin ping
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurm() {
  if [ -z "$(daemon_pid slurmdbd)" ]; then
    slurmdbd                                      # daemonizes
    wait_for 60 slurmdbd sacctmgr -n list cluster
  fi
  if [ -z "$(daemon_pid slurmctld)" ]; then
    slurmctld                                     # registers the cluster + root association itself
    wait_for 30 slurmctld ctld_ok
  fi
  [ -n "$(daemon_pid slurmd)" ] || slurmd
}

wait_node_idle() {
  local node deadline=$((SECONDS + UP_TIMEOUT_S)) state=""
  node=$(node_name)
  while [ $SECONDS -lt $deadline ]; do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated) log "node $node is $state"; return 0 ;;
      *drain*|down)   # show the reason and try to bring it back
        log "node $node is $state: $(sinfo -h -N -n "$node" -o '%E')"
        scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  echo "node $node not idle after ${UP_TIMEOUT_S}s (state='$state')" >&2
  sinfo -N -l >&2 || true
  tail -n 30 "$SLURM_DIR"/log/slurmctld.log "$SLURM_DIR"/log/slurmd.log >&2 || true
  return 1
}

cmd_up() {
  local t0 t1 state
  t0=$(ms)
  [ "$(id -u)" = 0 ] || die "run as root"
  if command -v sinfo >/dev/null 2>&1 && all_daemons_running; then
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated) log "already up (node $state)"; return 0 ;;
    esac
    log "daemons running but node is '${state:-unknown}': restarting"
  fi
  install_packages
  t1=$(ms)
  # A half-up cluster (some daemon died) or an old config: stop what runs, start clean.
  cmd_down >/dev/null
  write_configs
  start_munged
  start_mariadb
  start_slurm
  wait_node_idle
  log "up: install $(secs $((t1 - t0)))s, start $(secs $(( $(ms) - t1 )))s, total $(secs $(( $(ms) - t0 )))s"
}

cmd_status() {
  local d pid rc=0
  for d in "${DAEMONS[@]}"; do
    IFS=: read -r n f c <<<"$d"
    pid=$(pid_of "$n" "$f" "$c")
    printf '%-10s %s\n' "$n" "${pid:-not running}"
    [ -n "$pid" ] || rc=1
  done
  if command -v sinfo >/dev/null 2>&1 && [ "$rc" = 0 ]; then
    sinfo || rc=1
  else
    echo "cluster is not up (scripts/slurm-dev-cluster.sh up)"
  fi
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
