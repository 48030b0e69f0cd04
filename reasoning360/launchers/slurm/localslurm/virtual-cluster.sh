#!/usr/bin/env bash
# virtual-cluster.sh: a real multi-node Slurm 22.05 cluster on this one machine (Debian 12, root).
#
# Every machine of the cluster is a set of Linux namespaces: network (its own interfaces and IPs),
# UTS (its own hostname), PID and mount (its own /proc, /sys, /etc/hosts and a node-local
# /tmp/r360-ray), with a tiny init (vm-init.py) as PID 1. Everything else is the machine's shared
# filesystem, as compute nodes share NFS. Killing a machine's init kills all of its processes at
# once, as a power cut would.
#
#   vhead          10.231.0.2   slurmctld, slurmdbd, mariadb, munged (the controller)
#   vnode1..N      10.231.0.11+ slurmd each (NodeName=vnodeK NodeAddr=10.231.0.1K), own spool/pid/log
#
# Two networks, two interfaces per machine, on two bridges that carry no host address:
#   eth0 on r360vc0, 10.231.0.0/24: the cluster fabric; Slurm's NodeAddr; every node reaches every node.
#   eth1 on r360vc1, 10.232.0.0/24: the uplink; holds the default route (via vhead); node ports are
#        isolated from each other (bridge port isolation), so node-to-node traffic on it is dropped.
# And each node's /etc/hosts maps its own name to 127.0.1.1 (Debian's default). So the usual
# guesses are wrong here, as on many real clusters: the default-route address (what Ray picks by
# itself) hangs, the hostname address (what gloo picks by itself) is loopback. Only the interface
# of the route to the head (or cluster.network_interface=eth0) works.
#
# It coexists with the single-node cluster (start-slurm.sh): its own SLURM_CONF, ClusterName
# (r360virt), ports (slurmctld 6827, slurmd 6828, slurmdbd 6829, mariadb 3308, all inside the
# namespaces), munged (own socket and key), state under $VCLUSTER_BASE. It never touches
# /etc/slurm or the single-node daemons, and puts no address on any host interface.
#
# Clients on this machine reach the controller through wrappers in $VCLUSTER_BASE/bin (sbatch,
# squeue, sacct, ...), which enter vhead's network namespace; `eval "$(virtual-cluster.sh env)"`
# puts them first on PATH and sets SLURM_CONF. Jobs inherit both; on a node the wrappers call
# Slurm directly, over the fabric.
#
# usage: virtual-cluster.sh start [N]      bring up the controller and N nodes (default 3); prints the time
#        virtual-cluster.sh stop           remove every namespace, link, daemon and file it made
#        virtual-cluster.sh env            print the exports a client shell needs
#        virtual-cluster.sh status         machines, their init PIDs, sinfo
#        virtual-cluster.sh exec NAME CMD  run CMD on machine NAME (all its namespaces)
#        virtual-cluster.sh kill NAME      power a node off: its slurmd and every process on it die at once
#        virtual-cluster.sh boot NAME      power it on again: init + slurmd (ReturnToService=2 returns it)
#        virtual-cluster.sh link NAME up|down   plug or unplug its fabric cable (eth0)
# Env knobs: VCLUSTER_BASE (default /tmp/r360-vcluster), VCLUSTER_NODES (default 3),
#            VCLUSTER_NODE_MEM_MB (RealMemory per node, default 4096)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${VCLUSTER_BASE:-/tmp/r360-vcluster}
NET=10.231.0 UPLINK=10.232.0
NS=r360vc                       # namespaces r360vc-<machine>; bridges r360vc0 (fabric), r360vc1 (uplink)
CLUSTER=r360virt PARTITION=virtual
CTLD_PORT=6827 SLURMD_PORT=6828 DBD_PORT=6829 MY_PORT=3308 DBPW=slurmpw
CONF=$BASE/etc/slurm.conf
MUNGE_SOCK=$BASE/munge/munge.socket
CLIENTS="sbatch squeue sacct scontrol scancel sinfo srun salloc sattach sacctmgr sstat sprio sshare sdiag sreport"

trap 'echo "[virtual-cluster] error: line $LINENO: $BASH_COMMAND failed" >&2' ERR
log() { echo "[virtual-cluster] $*"; }
die() { echo "[virtual-cluster] error: $*" >&2; exit 1; }
now() { date +%s.%N; }
nodes() { [ -s "$BASE/nodes" ] && cat "$BASE/nodes"; }
init_pid() { cat "$BASE/vm/$1/init.pid" 2>/dev/null; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
ours() {  # ours PID MACHINE: PID is that machine's init (or its unshare), not a PID the kernel
          # gave to another process since (after a reboot the pid files outlive the machines)
  alive "${1:-}" && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q "vm-init.py $2 "
}
up() { ours "$(init_pid "$1")" "$1"; }
on() {  # on MACHINE CMD...: run in every namespace of the machine, with the cluster's SLURM_CONF
  local m=$1; shift
  local p; p=$(init_pid "$m") || die "no machine $m"
  ours "$p" "$m" || die "machine $m is not running"
  SLURM_CONF=$CONF nsenter -t "$p" -n -u -p -m --wd=/ -- "$@" 9<&-    # (no daemon keeps the lock)
}
ip_of() { case $1 in vhead) echo "$NET.2" ;; vnode*) echo "$NET.$((10 + ${1#vnode}))" ;; esac; }
up_of() { case $1 in vhead) echo "$UPLINK.2" ;; vnode*) echo "$UPLINK.$((10 + ${1#vnode}))" ;; esac; }
idx_of() { case $1 in vhead) echo 0 ;; vnode*) echo "${1#vnode}" ;; esac; }

install_packages() {
  local need=() p
  for p in slurmctld slurmd slurm-client munge slurmdbd slurm-wlm-mysql-plugin mariadb-server; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing: ${need[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep postinst scripts from starting services
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# ------------------------------------------------------------------------------------- machines

make_netns() {   # the namespace, its two cables, addresses, routes
  local m=$1 i; i=$(idx_of "$m")
  ip netns add "$NS-$m"
  ip link add "vc${i}f" type veth peer name eth0 netns "$NS-$m"
  ip link add "vc${i}u" type veth peer name eth1 netns "$NS-$m"
  ip link set "vc${i}f" master "${NS}0" up
  ip link set "vc${i}u" master "${NS}1" up
  [ "$m" = vhead ] || bridge link set dev "vc${i}u" isolated on
  ip -n "$NS-$m" link set lo up
  ip -n "$NS-$m" addr add "$(ip_of "$m")/24" dev eth0
  ip -n "$NS-$m" addr add "$(up_of "$m")/24" dev eth1
  ip -n "$NS-$m" link set eth0 up
  ip -n "$NS-$m" link set eth1 up
  [ "$m" = vhead ] || ip -n "$NS-$m" route add default via "$UPLINK.2" dev eth1
}

hosts_file() {   # Debian's /etc/hosts for machine $1: itself on 127.0.1.1, the others on the fabric
  local m=$1 o
  { echo "127.0.0.1 localhost"; echo "127.0.1.1 $m"
    for o in vhead $(nodes); do [ "$o" = "$m" ] || echo "$(ip_of "$o") $o"; done
  } > "$BASE/etc/hosts.$m"
}

boot_machine() {   # init (PID 1) of machine $1 in its network namespace
  local m=$1 d=$BASE/vm/$1
  mkdir -p "$d/tmp"; rm -f "$d/ready"
  hosts_file "$m"
  setsid nsenter --net="/run/netns/$NS-$m" -- unshare --uts --pid --mount --fork --kill-child \
    --mount-proc --propagation slave /usr/bin/python3 "$HERE/vm-init.py" "$m" "$BASE/etc/hosts.$m" \
    "$d/tmp" "$d/ready" </dev/null >"$d/init.log" 2>&1 9<&- &
  local unshare_pid=$! child="" i
  for i in $(seq 1 100); do
    child=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null | awk '{print $1}')
    [ -n "$child" ] && [ -e "$d/ready" ] && break
    sleep 0.05
  done
  [ -n "$child" ] && [ -e "$d/ready" ] || die "machine $m did not boot: $(cat "$d/init.log")"
  echo "$child" > "$d/init.pid"; echo "$unshare_pid" > "$d/unshare.pid"
}

start_slurmd() {
  local m=$1
  mkdir -p "$BASE/node/$m/spool"
  on "$m" /usr/sbin/slurmd -f "$CONF" -N "$m"
}

wait_idle() {   # all named nodes usable in sinfo
  local want=$* i s bad
  for i in $(seq 1 200); do
    bad=""
    for s in $want; do
      case "$(on vhead sinfo -h -n "$s" -o '%T' 2>/dev/null | head -1)" in
        idle|mixed|allocated|completing) ;; *) bad="$bad $s" ;;
      esac
    done
    [ -z "$bad" ] && return 0
    [ "$i" = 50 ] && for s in $bad; do on vhead scontrol update nodename="$s" state=resume 2>/dev/null || true; done
    sleep 0.1
  done
  die "node(s)$bad not idle: $(on vhead sinfo 2>&1)"
}

# ------------------------------------------------------------------------------------- config

write_config() {
  local n=$1 mem=$2 k nodeline cpus
  cpus=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //; s/ RealMemory=.*//')   # CPUs=2 Boards=1 ...
  mkdir -p "$BASE"/{etc,bin,munge,head/state,head/mysql,node}
  : > "$BASE/nodes"
  for k in $(seq 1 "$n"); do echo "vnode$k" >> "$BASE/nodes"; done
  nodeline=""
  for k in $(seq 1 "$n"); do
    nodeline+="NodeName=vnode$k NodeAddr=$(ip_of "vnode$k") NodeHostname=vnode$k $cpus RealMemory=$mem State=UNKNOWN"$'\n'
  done
  cat > "$CONF" <<EOF
# generated by virtual-cluster.sh: $n virtual nodes on this machine (not /etc/slurm/slurm.conf)
ClusterName=$CLUSTER
SlurmctldHost=vhead($NET.2)
SlurmUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
# own munged; requeued jobs wait cred_expire+1 s before they may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCK,cred_expire=5
StateSaveLocation=$BASE/head/state
SlurmdSpoolDir=$BASE/node/%n/spool
SlurmctldPidFile=$BASE/head/slurmctld.pid
SlurmdPidFile=$BASE/node/%n/slurmd.pid
SlurmctldLogFile=$BASE/head/slurmctld.log
SlurmdLogFile=$BASE/node/%n/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
# a node that stops answering is DOWN after 20 s (default 300)
SlurmdTimeout=20
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_min_interval=0,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MaxJobCount=100000
MaxArraySize=1001
MinJobAge=300
KillWait=15
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NET.2
AccountingStoragePort=$DBD_PORT
# the munge socket for slurmdbd connections (AuthInfo covers only slurmctld/slurmd)
AccountingStoragePass=$MUNGE_SOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
${nodeline}# LLN: jobs go to the least loaded nodes (else every small job packs onto vnode1)
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP LLN=YES
EOF
  cat > "$BASE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=vhead
DbdAddr=$NET.2
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$BASE/head/slurmdbd.log
PidFile=$BASE/head/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MY_PORT
StorageUser=slurm
StoragePass=$DBPW
StorageLoc=r360virt_acct_db
EOF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  # client wrappers for this machine: enter the controller's network namespace from here, call
  # Slurm directly from inside a node
  local host_ns c; host_ns=$(stat -L -c %i /proc/self/ns/net)
  for c in $CLIENTS; do
    cat > "$BASE/bin/$c" <<EOF
#!/bin/sh
# $c of the virtual cluster ($BASE)
export SLURM_CONF=$CONF
if [ "\$(stat -L -c %i /proc/self/ns/net)" = "$host_ns" ]; then
  exec nsenter --net=/run/netns/$NS-vhead -- /usr/bin/$c "\$@"
fi
exec /usr/bin/$c "\$@"
EOF
    chmod +x "$BASE/bin/$c"
  done
  printf 'export SLURM_CONF=%q\nexport PATH=%q:"$PATH"\n' "$CONF" "$BASE/bin" > "$BASE/env"
}

# ------------------------------------------------------------------------------------- commands

cmd_start() {
  local n=${1:-${VCLUSTER_NODES:-3}} mem=${VCLUSTER_NODE_MEM_MB:-4096} t0 m
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, bridges, Slurm daemons)"
  [[ "$n" =~ ^[1-9]$ ]] || die "N must be 1..9, got '$n'"
  if [ -e "$BASE/nodes" ] && up vhead && on vhead scontrol ping 2>/dev/null | grep -q UP; then
    log "already running ($(nodes | wc -l) nodes): $BASE"; return 0
  fi
  # what a dead cluster left (a machine restart, a killed session): its state, namespaces,
  # bridges; cleared the way stop clears a live one
  if [ -e "$BASE" ] || ip netns list 2>/dev/null | grep -q "^$NS-" || ip -o link | grep -qE ": ${NS}[01]:"; then
    log "a stale cluster (not running) at $BASE: clearing it first"
    cmd_stop
  fi
  ip -o addr | grep -qE " ($NET|$UPLINK)\." && die "$NET.0/24 or $UPLINK.0/24 is in use on this machine"
  install_packages
  t0=$(now)
  write_config "$n" "$mem"
  # the network
  ip link add "${NS}0" type bridge; ip link set "${NS}0" up
  ip link add "${NS}1" type bridge; ip link set "${NS}1" up
  for m in vhead $(nodes); do make_netns "$m"; done
  for m in vhead $(nodes); do boot_machine "$m"; done
  # munge: own daemon, own key and socket
  dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1 count=128 status=none
  chmod 0400 "$BASE/munge/munge.key"; chmod 0755 "$BASE/munge"
  on vhead /usr/sbin/munged --socket="$MUNGE_SOCK" --key-file="$BASE/munge/munge.key" \
    --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/munge/munged.log" --seed-file="$BASE/munge/munged.seed"
  # accounting: mariadb + slurmdbd on the controller
  mariadb-install-db --no-defaults --datadir="$BASE/head/mysql" --user=root \
    --auth-root-authentication-method=socket --skip-test-db > "$BASE/head/mariadb-install.log" 2>&1
  on vhead /usr/sbin/mariadbd --no-defaults --datadir="$BASE/head/mysql" --user=root \
    --socket="$BASE/head/mysqld.sock" --pid-file="$BASE/head/mysqld.pid" --bind-address=127.0.0.1 \
    --port=$MY_PORT --skip-name-resolve --log-error="$BASE/head/mariadb.err" \
    --innodb-buffer-pool-size=32M --innodb-log-file-size=16M </dev/null >/dev/null 2>&1 9<&- &
  for i in $(seq 1 150); do mariadb-admin --socket="$BASE/head/mysqld.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb --socket="$BASE/head/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPW';
    GRANT ALL ON r360virt_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;" \
    || die "mariadb did not start: $(tail -5 "$BASE/head/mariadb.err")"
  on vhead /usr/sbin/slurmdbd
  for i in $(seq 1 100); do on vhead sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.1; done
  on vhead sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "slurmdbd: $(tail -5 "$BASE/head/slurmdbd.log")"
  # controller and nodes
  on vhead /usr/sbin/slurmctld -f "$CONF"
  for i in $(seq 1 100); do on vhead scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  for m in $(nodes); do start_slurmd "$m"; done
  wait_idle $(nodes)
  log "$n nodes up in $(printf '%.1f' "$(echo "$(now) - $t0" | bc)")s (excluding install): $(nodes | tr '\n' ' ')"
  log "clients: eval \"\$($0 env)\""
  on vhead sinfo
}

cmd_stop() {
  local t0 m p k
  t0=$(now)
  # power every machine off: killing a PID namespace's init kills all of its processes
  if [ -d "$BASE/vm" ]; then
    for m in $(ls "$BASE/vm"); do
      for k in init unshare; do p=$(cat "$BASE/vm/$m/$k.pid" 2>/dev/null || true); ours "$p" "$m" && kill -KILL "$p" || true; done
    done
  fi
  # anything else left in our network namespaces (a process entered with nsenter --net only)
  for m in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS-" || true); do
    for p in $(ip netns pids "$m" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  for i in $(seq 1 50); do
    left=""; for m in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS-" || true); do left+=$(ip netns pids "$m"); done
    [ -z "$left" ] && break; sleep 0.1
  done
  for m in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS-" || true); do ip netns del "$m"; done
  for k in 0 1; do ip link del "${NS}$k" 2>/dev/null || true; done
  # the host ends of the cables go away with their namespaces (asynchronously)
  for i in $(seq 1 50); do ip -o link | grep -qE ": (vc[0-9]+[fu]|${NS}[01])[@:]" || break; sleep 0.1; done
  rm -rf "$BASE"
  log "stopped in $(printf '%.1f' "$(echo "$(now) - $t0" | bc)")s"
}

cmd_status() {
  local m p
  [ -e "$BASE/nodes" ] || { log "not running ($BASE)"; return 1; }
  for m in vhead $(nodes); do
    p=$(init_pid "$m" || true)
    if ours "$p" "$m"; then echo "$m $(ip_of "$m") init $p up"; else echo "$m $(ip_of "$m") down"; fi
  done
  # running means: the controller's machine is up and slurmctld answers (a node may be powered
  # off by a test; the state of a cluster that died with the machine is not running)
  up vhead && on vhead scontrol ping 2>/dev/null | grep -q UP || { log "not running (stale state at $BASE)"; return 1; }
  on vhead sinfo -N -o '%N %T %E' || true
}

# one start/stop/boot/kill at a time on this machine (two test sessions may race): a lock on
# this script itself, so that nothing is left behind
case "${1:-}" in start|stop|boot|kill) exec 9<"$0"; flock 9 ;; esac
case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  env) cat "$BASE/env" 2>/dev/null || die "not running ($BASE)" ;;
  status) cmd_status || exit 1 ;;    # (not running: no ERR trap message)
  exec) shift; m=$1; shift; on "$m" "$@" ;;
  kill)
    m=${2:?machine}; p=$(init_pid "$m") || die "no machine $m"
    if ours "$p" "$m"; then kill -KILL "$p" 2>/dev/null || true; fi
    for i in $(seq 1 50); do alive "$p" || break; sleep 0.05; done
    # the cable stays plugged in; reap what the kernel left of the pid namespace
    for i in $(seq 1 50); do [ -z "$(ip netns pids "$NS-$m")" ] && break; sleep 0.05; done
    log "$m powered off" ;;
  boot)
    m=${2:?machine}; up "$m" && die "$m is running"
    boot_machine "$m"; start_slurmd "$m"; wait_idle "$m"; log "$m booted" ;;
  link)
    m=${2:?machine}; st=${3:?up|down}; [[ "$st" =~ ^(up|down)$ ]] || die "link NAME up|down"
    ip -n "$NS-$m" link set eth0 "$st"; log "$m eth0 $st" ;;
  *) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
