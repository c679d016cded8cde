#!/usr/bin/env bash
# A real SLURM cluster on this machine, without systemd: for trying the launchers on a workstation and
# for the test suite (tests/slurm_cluster.py). Debian/Ubuntu, as root.
#
#   launch/local_slurm.sh start [--nodes N]   # install munge + slurmctld + slurmd if missing, start them, wait
#   source /tmp/roots-slurm/env.sh            # exports SLURM_CONF; then sinfo, srun, sbatch work as on a cluster
#   launch/local_slurm.sh kill-node NAME [SIGNAL]   # N >= 2: every process of that node gets SIGNAL (KILL)
#   launch/local_slurm.sh stop                # cancel every job, stop and remove exactly what `start` made
#
# --nodes 1 (the default): one node, this host, on 127.0.0.1.
# --nodes N >= 2: N nodes node1..nodeN, each in its own network namespace (its own address on a private
# bridge the script creates, 10.x.y.11...), UTS namespace (hostname nodeI) and mount namespace, where
# /etc/hosts names the cluster's hosts and ROOTS_NODE_LOCAL (= $ROOTS_SLURM_DIR/local) is a directory of
# that node only: a node-local disk. Everything else (the filesystem, the CPUs) is shared, as on a
# cluster with a shared filesystem. slurmctld runs on this host, on the bridge's address. `start` again
# after `kill-node` brings the dead node's slurmd back (the node returns to service).
#
# ROOTS_SLURM_DIR  config, state, logs and pid files (default /tmp/roots-slurm)
# ROOTS_SLURM_WAIT seconds to wait for each daemon (default 60)
#
# Each cluster has its own munged (own socket, as the munge user), ports, bridge and subnet, so two can
# run side by side and `stop` never takes down what another uses. Pitfalls handled: libpmix is installed
# before slurmd starts (slurmd loads PMIx once; otherwise `srun --mpi=pmix` hangs); package post-install
# scripts must not start daemons (policy-rc.d); a node's hostname must resolve to its bridge address,
# not to 127.0.1.1 as Debian's /etc/hosts has it, or gloo/NCCL bind loopback and the ranks never meet.
set -euo pipefail

BASE=${ROOTS_SLURM_DIR:-/tmp/roots-slurm}
WAIT_S=${ROOTS_SLURM_WAIT:-60}
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log STATE=$BASE/state MUNGE=$BASE/munge
export SLURM_CONF=$ETC/slurm.conf
PACKAGES=(munge slurmctld slurmd slurm-client libpmix-dev)  # libpmix-dev: the libpmix.so slurmd dlopens
TAG=$(printf %s "$BASE" | md5sum | cut -c1-6)  # names this cluster's bridge, links and namespaces
BRIDGE=rsb$TAG

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
free_port() {  # a port nothing listens on (connecting through bash's /dev/tcp fails), below the kernel's
  # ephemeral range: a port there may be some outgoing connection's local end, which nothing listens on
  # but which a daemon still cannot bind ("Address already in use")
  local low port
  read -r low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  (( low > 11000 )) || low=32768
  while :; do
    port=$((10000 + RANDOM % (low - 10000)))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# The cluster's nodes, one per line: NAME ADDRESS NAMESPACE (a one-node cluster: this host, 127.0.0.1, none).
nodes() { if [ -s "$ETC/nodes" ]; then cat "$ETC/nodes"; fi; }
node_namespace() { nodes | awk -v n="$1" '$1 == n {print $3}'; }
slurmd_pid_file() { echo "$RUN/slurmd-$1.pid"; }

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

# The bridge, then per node a network namespace joined to it by a veth pair; writes $ETC/nodes and $ETC/hosts.
setup_network() {
  local count=$1 a b i subnet name ns
  a=$((200 + 16#${TAG:0:2} % 50)) b=$((16#${TAG:2:2}))
  for ((i = 0; i < 256; i++)); do  # the first 10.a.b.0/24 no interface of this host uses
    subnet=10.$a.$(((b + i) % 256))
    ip -4 -o addr show | grep -q " $subnet\." || break
  done
  log "network: bridge $BRIDGE $subnet.0/24, controller $subnet.1"
  ip link add "$BRIDGE" type bridge && ip addr add "$subnet.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up \
    || die "could not create bridge $BRIDGE (needs root and network namespaces)"
  printf '127.0.0.1 localhost\n%s %s\n' "$subnet.1" "$(hostname -s)" > "$ETC/hosts"
  : > "$ETC/nodes.tmp"
  for ((i = 1; i <= count; i++)); do
    name=node$i ns=roots-$TAG-node$i
    ip netns add "$ns" || die "could not create network namespace $ns"
    ip link add "rsv$TAG$i" type veth peer name eth0 netns "$ns"
    ip link set "rsv$TAG$i" master "$BRIDGE" up
    ip -n "$ns" addr add "$subnet.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up
    echo "$subnet.$((10 + i)) $name" >> "$ETC/hosts"
    echo "$name $subnet.$((10 + i)) $ns" >> "$ETC/nodes.tmp"
    mkdir -p "$BASE/nodes/$name/local"
  done
  mkdir -p "$BASE/local"  # the mount point of each node's own local directory
  mv "$ETC/nodes.tmp" "$ETC/nodes"
}

# Every process of each node's namespace killed, the namespaces (and their veth links) and the bridge removed.
teardown_network() {
  local name addr ns pids
  while read -r name addr ns; do
    [ -n "$ns" ] && [ "$ns" != - ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null && log "removed node $name ($addr, namespace $ns)"
  done < <(nodes)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" && log "removed bridge $BRIDGE"; fi
  rm -f "$ETC/nodes"
}

write_config() {
  local hw mem topo controller=127.0.0.1 name addr ns
  hw=$(/usr/sbin/slurmd -C | head -n1)  # e.g. NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  topo=$(sed 's/^NodeName=[^ ]* //; s/ RealMemory=[0-9]*//' <<<"$hw")
  if [ "$(nodes | awk '{print $3}')" != - ]; then controller=$(awk 'NR == 2 {print $1}' "$ETC/hosts"); fi
  cat > "$SLURM_CONF.tmp" <<EOF
# written by launch/local_slurm.sh: $(nodes | wc -l) node(s), no systemd, no cgroups, no accounting
ClusterName=roots-local
SlurmctldHost=$(hostname -s)($controller)
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
# A node whose slurmd stops answering is DOWN after 20 s (default 300 s): its jobs end as NODE_FAIL.
SlurmdTimeout=20
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
EOF
  while read -r name addr ns; do
    echo "NodeName=$name NodeAddr=$addr $topo RealMemory=$((mem - (mem / 20 > 512 ? mem / 20 : 512)))"
  done < <(nodes) >> "$SLURM_CONF.tmp"
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >> "$SLURM_CONF.tmp"
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

# start_slurmd NAME: slurmd for node NAME, in that node's namespaces when it has them.
start_slurmd() {
  local name=$1 ns
  ns=$(node_namespace "$name")
  mkdir -p "$STATE/d/$name"
  rm -f "$(slurmd_pid_file "$name")"
  if [ "$ns" = - ]; then
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$name"
  else
    # shellcheck disable=SC2016  # expanded by the inner shell
    # (nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup filesystem slurmd needs)
    nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private -- sh -c \
      'hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" "$4" && exec /usr/sbin/slurmd -f "$5" -N "$1"' \
      node "$name" "$ETC/hosts" "$BASE/nodes/$name/local" "$BASE/local" "$SLURM_CONF"
  fi
  wait_for "slurmd on $name" test -s "$(slurmd_pid_file "$name")"
}

node_states() { sinfo -h -N -o '%N %T' 2>/dev/null | tr -d '*~#$@+'; }

start() {
  local count=1 name addr ns state ready i
  while [ $# -gt 0 ]; do
    case $1 in
      --nodes) count=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
      --nodes=*) count=${1#--nodes=}; shift ;;
      *) die "unknown option '$1' (usage: start [--nodes N])" ;;
    esac
  done
  [[ $count =~ ^[1-9][0-9]?$ ]] || die "--nodes must be a number from 1 to 99, not '$count'"
  [ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts munged as the munge user)"
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/d"
  chmod 0755 "$BASE"  # the munge user reaches its socket below it
  install_packages
  if alive "$(pid_in "$RUN/slurmctld.pid")" slurmctld && alive "$(pid_in "$MUNGE/munged.pid")" munged; then
    [ "$(nodes | wc -l)" = "$count" ] || die "a $(nodes | wc -l)-node cluster runs from $BASE: stop it first"
    log "already running ($SLURM_CONF)"
  else
    stop_daemons
    teardown_network
    if [ "$count" = 1 ]; then
      echo "$(hostname -s) 127.0.0.1 -" > "$ETC/nodes"
    else
      setup_network "$count"
    fi
    write_config
    start_munge
    /usr/sbin/slurmctld -f "$SLURM_CONF"  # daemonizes, writes its pid file
    wait_for "slurmctld" sh -c 'scontrol ping | grep -q "is UP"'
  fi
  while read -r name addr ns; do  # every node's slurmd, including one that `kill-node` took down
    alive "$(pid_in "$(slurmd_pid_file "$name")")" slurmd || start_slurmd "$name"
  done < <(nodes)
  {
    echo "export SLURM_CONF=$SLURM_CONF ROOTS_SLURM_DIR=$BASE"
    [ "$count" = 1 ] || echo "export ROOTS_NODE_LOCAL=$BASE/local  # on each node, that node's own directory"
  } > "$BASE/env.sh"
  for ((i = 0; i < WAIT_S * 4; i++)); do
    ready=0
    while read -r name state; do
      case $state in
        idle|mixed|allocated|completing) ready=$((ready + 1)) ;;
        down|drained|draining|fail|inval) scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true ;;
      esac
    done < <(node_states)
    if [ "$ready" = "$count" ]; then
      log "$count node(s) up: $(nodes | awk '{printf "%s%s (%s)", sep, $1, $2; sep = ", "}'); use: source $BASE/env.sh"
      return 0
    fi
    sleep 0.25
  done
  die "nodes not ready: $(node_states | tr '\n' ' ')"
}

# kill-node NAME [SIGNAL]: SIGNAL (default KILL, as a crashed node) to every process in NAME's namespace.
kill_node() {
  local name=${1:-} signal=${2:-KILL} ns pids
  ns=$(node_namespace "$name")
  [ -n "$ns" ] && [ "$ns" != - ] || die "no node '$name' with its own namespace in $BASE (start --nodes 2 makes them)"
  pids=$(ip netns pids "$ns")
  if [ -n "$pids" ]; then kill -s "$signal" $pids; fi
  log "sent SIG$signal to $(wc -w <<<"$pids") process(es) of $name"
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
  local pid_file
  for pid_file in "$RUN"/slurmd-*.pid; do if [ -e "$pid_file" ]; then stop_daemon slurmd "$pid_file"; fi; done
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
  teardown_network
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) stop ;;
  kill-node) shift; kill_node "$@" ;;
  *) echo "usage: $0 start [--nodes N] | stop | kill-node NAME [SIGNAL]" >&2; exit 2 ;;
esac
