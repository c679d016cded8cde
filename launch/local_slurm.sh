#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, without systemd: for trying the launchers on a
# workstation and for the test suite (tests/slurm_cluster.py). Debian/Ubuntu, as root.
#
#   launch/local_slurm.sh start   # install munge + slurmctld + slurmd if missing, start them, wait for the node
#   source /tmp/roots-slurm/env.sh   # exports SLURM_CONF; then sinfo, srun, sbatch work as on a cluster
#   launch/local_slurm.sh stop    # cancel every job, stop exactly the daemons `start` started (by pid file)
#
# ROOTS_SLURM_DIR  config, state, logs and pid files (default /tmp/roots-slurm)
# ROOTS_SLURM_WAIT seconds to wait for each daemon (default 60)
#
# Each cluster has its own munged (own socket, as the munge user) and free ports, so two can run side
# by side and `stop` never takes down what another uses. Pitfalls handled: libpmix is installed before
# slurmd starts (slurmd loads PMIx once; otherwise `srun --mpi=pmix` hangs); package post-install
# scripts must not start daemons (policy-rc.d).
set -euo pipefail

BASE=${ROOTS_SLURM_DIR:-/tmp/roots-slurm}
WAIT_S=${ROOTS_SLURM_WAIT:-60}
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log STATE=$BASE/state MUNGE=$BASE/munge
export SLURM_CONF=$ETC/slurm.conf
PACKAGES=(munge slurmctld slurmd slurm-client libpmix-dev)  # libpmix-dev: the libpmix.so slurmd dlopens

log() { echo "[local_slurm] $*"; }
die() {
  log "error: $*"
  for f in "$LOG"/*.log; do [ -f "$f" ] && { echo "---- $f"; tail -n 20 "$f"; }; done
  exit 1
}

# alive PID NAME: PID is a live, non-zombie process whose command is NAME (never trust a stale pid file)
alive() {
  local pid=$1 name=$2
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != [ZX] ]]
}
pid_in() { if [ -s "$1" ]; then tr -dc '0-9' < "$1"; fi; }
wait_for() {  # wait_for WHAT CMD...
  local what=$1 i; shift
  for ((i = 0; i < WAIT_S * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "timed out after ${WAIT_S}s waiting for $what"
}
free_port() {  # a port nothing listens on: connecting to it through bash's /dev/tcp fails
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]} (log: $BASE.apt.log)"
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # no systemd: keep post-install scripts from starting daemons
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}" > "$BASE.apt.log" 2>&1; then
    apt-get update >> "$BASE.apt.log" 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" \
      >> "$BASE.apt.log" 2>&1 || rc=$?
  fi
  [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { tail -n 30 "$BASE.apt.log"; die "apt-get install ${missing[*]} failed"; }
}

write_config() {
  local node hw mem topo
  node=$(hostname -s)
  hw=$(/usr/sbin/slurmd -C | head -n1)  # e.g. NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  topo=$(sed 's/^NodeName=[^ ]* //; s/ RealMemory=[0-9]*//' <<<"$hw")
  cat > "$SLURM_CONF.tmp" <<EOF
# written by launch/local_slurm.sh: one node, no systemd, no cgroups, no accounting
ClusterName=roots-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
# A requeued job may not start before its credential expires (default 120 s), and a job whose
# begin time has passed waits for the next scheduler pass (default every 60 s): short here.
AuthInfo=cred_expire=10,socket=$MUNGE/munge.socket
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
NodeName=$node NodeAddr=127.0.0.1 $topo RealMemory=$((mem - (mem / 20 > 512 ? mem / 20 : 512)))
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$SLURM_CONF.tmp" "$SLURM_CONF"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key && chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
  mkdir -p "$MUNGE" && chown munge:munge "$MUNGE" && chmod 0755 "$MUNGE"
  touch "$LOG/munged.log" && chown munge:munge "$LOG/munged.log"
  rm -f "$MUNGE/munged.pid"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE/munge.socket" --pid-file="$MUNGE/munged.pid" \
    --seed-file="$MUNGE/munged.seed" --log-file="$LOG/munged.log"
  wait_for "munged" test -s "$MUNGE/munged.pid"
  wait_for "a munge credential round trip" sh -c "munge -n -S '$MUNGE/munge.socket' | unmunge -S '$MUNGE/munge.socket'"
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1 | tr -d '*~#$@+'; }

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts munged as the munge user)"
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/d"
  chmod 0755 "$BASE"  # the munge user reaches its socket below it
  install_packages
  if alive "$(pid_in "$RUN/slurmctld.pid")" slurmctld && alive "$(pid_in "$RUN/slurmd.pid")" slurmd \
      && alive "$(pid_in "$MUNGE/munged.pid")" munged; then
    log "already running ($SLURM_CONF)"
  else
    stop_daemons
    write_config
    start_munge
    /usr/sbin/slurmctld -f "$SLURM_CONF"  # daemonizes, writes its pid file
    wait_for "slurmctld" sh -c 'scontrol ping | grep -q "is UP"'
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$(hostname -s)"
    wait_for "slurmd" test -s "$RUN/slurmd.pid"
  fi
  echo "export SLURM_CONF=$SLURM_CONF" > "$BASE/env.sh"
  local i state
  for ((i = 0; i < WAIT_S * 4; i++)); do
    state=$(node_state)
    case $state in
      idle|mixed|allocated) log "node $(hostname -s) is $state; use: source $BASE/env.sh"; return 0 ;;
      down|drained|draining|fail|inval) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
  done
  die "node $(hostname -s) not ready (state '$(node_state)')"
}

stop_daemon() {  # stop_daemon NAME PIDFILE
  local pid i
  pid=$(pid_in "$2")
  if alive "$pid" "$1"; then
    kill -TERM "$pid"
    for ((i = 0; i < 80; i++)); do alive "$pid" "$1" || break; sleep 0.25; done
    if alive "$pid" "$1"; then kill -KILL "$pid"; fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$2"
}

stop_daemons() {
  stop_daemon slurmd "$RUN/slurmd.pid"
  stop_daemon slurmctld "$RUN/slurmctld.pid"
  stop_daemon munged "$MUNGE/munged.pid"
}

stop() {
  local i jobs=()
  if alive "$(pid_in "$RUN/slurmctld.pid")" slurmctld; then mapfile -t jobs < <(squeue -h -o %i 2>/dev/null); fi
  if [ ${#jobs[@]} -gt 0 ]; then
    scancel --full "${jobs[@]}" 2>/dev/null || true  # no orphaned slurmstepd
    for ((i = 0; i < 120; i++)); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
  fi
  stop_daemons
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
