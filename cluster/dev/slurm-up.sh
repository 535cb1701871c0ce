#!/usr/bin/env bash
# Start a throw-away single-node SLURM on this machine, for tests and local trials.
#
#   cluster/dev/slurm-up.sh [STATE_DIR]            # default: $HTS_SLURM_DIR or /var/tmp/hts-slurm
#   eval "$(cluster/dev/slurm-up.sh)"              # also sets SLURM_CONF in this shell
#
# Needs root (Debian/Ubuntu: installs slurmctld, slurmd, slurm-client and munge with apt-get
# when they are missing). Everything it writes (slurm.conf, gres.conf, state, spool, logs, pid
# files, fake GPU devices) lives in STATE_DIR; /etc/slurm is left alone: every Slurm command
# finds the config through SLURM_CONF. The node is this host (`hostname -s`) on 127.0.0.1 with
# 8 advertised CPUs and 2 fake GPUs (symlinks to /dev/null named nvidia0, nvidia1), so
# `--gres=gpu:N` jobs get CUDA_VISIBLE_DEVICES set as on a real GPU node.
#
# Several clusters can run on one machine side by side (the tests start one per session):
# give each its own STATE_DIR, ports (HTS_SLURM_CTLD_PORT, HTS_SLURM_SLURMD_PORT) and name
# (HTS_SLURM_CLUSTER). They share munged, which is machine-wide. HTS_SLURM_OWNER_PID=PID
# makes the cluster stop itself (slurm-down.sh) once that process has ended, however it ended.
#
# The PID of each daemon it starts is recorded in STATE_DIR/pids; cluster/dev/slurm-down.sh
# stops exactly those. Running it again while the cluster is up only prints the exports.
# stdout carries only the `export` lines; progress and errors go to stderr.
set -euo pipefail

STATE_DIR=${1:-${HTS_SLURM_DIR:-/var/tmp/hts-slurm}}
CLUSTER=${HTS_SLURM_CLUSTER:-hts-dev}     # ClusterName: one per cluster on a machine
CTLD_PORT=${HTS_SLURM_CTLD_PORT:-6817}   # slurmctld's port (Slurm's default)
SLURMD_PORT=${HTS_SLURM_SLURMD_PORT:-6818}
CPUS=${HTS_SLURM_CPUS:-8}                 # advertised, not real: lets a driver and workers run together
WAIT_S=${HTS_SLURM_WAIT_S:-30}            # how long to wait for the node to become idle
OWNER_PID=${HTS_SLURM_OWNER_PID:-}        # stop the cluster when this process ends (empty: never)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MARKER=.hts-slurm                         # marks a directory as ours (slurm-down.sh checks it)
# Machine-wide, shared with slurm-down.sh: a lock that serialises port checks, daemon start-up
# and the decision to stop munged, and the PID of a munged that one of these clusters started.
LOCK=${HTS_SLURM_LOCK:-/run/lock/hts-slurm.lock}
MUNGE_MARK=${HTS_SLURM_MUNGE_MARK:-/run/lock/hts-slurm-munged.pid}

log() { echo "slurm-up: $*" >&2; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }

# --- preconditions ------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and runs slurmctld/slurmd as root)"
STATE_DIR=$(realpath -m -- "$STATE_DIR")
[[ $STATE_DIR != / ]] || die "refusing STATE_DIR=/"
[[ $CLUSTER =~ ^[a-z][a-z0-9-]{0,39}$ ]] || die "HTS_SLURM_CLUSTER=$CLUSTER: use lower-case letters, digits and -"
for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "bad port '$port'"
done
[[ $CTLD_PORT != "$SLURMD_PORT" ]] || die "slurmctld and slurmd need two different ports, got $CTLD_PORT twice"
HOST=$(hostname -s)
CONF=$STATE_DIR/slurm.conf
export SLURM_CONF=$CONF                   # every slurm command below uses our config

print_env() { echo "export SLURM_CONF=$CONF"; }

# Is a recorded daemon alive? name = expected /proc/PID/comm.
pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$STATE_DIR/pids" 2>/dev/null | tail -n1; }
# Is PID a live (not zombie) process named NAME?
running() {
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
    [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]
}
alive() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && running "$pid" "$1"; }
# Start time of process PID (field 22 of /proc/PID/stat, in clock ticks): tells a reused PID apart.
proc_start() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }
listening() { command -v ss >/dev/null && ss -Hltn "sport = :$1" | grep -q .; }
munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1; }

# --- already up? ----------------------------------------------------------------------------
if [[ -e $STATE_DIR/$MARKER ]]; then
    if alive slurmctld && alive slurmd && munge_ok && scontrol ping >/dev/null 2>&1; then
        log "already up in $STATE_DIR (node $HOST: $(node_state))"
        print_env
        exit 0
    fi
    log "stale or half-started cluster in $STATE_DIR: tearing it down first"
    "$HERE/slurm-down.sh" "$STATE_DIR" >&2
elif [[ -e $STATE_DIR ]] && [[ -n $(ls -A "$STATE_DIR") ]]; then
    die "$STATE_DIR exists, is not empty and was not made by this script; pick another STATE_DIR"
fi

# --- packages -------------------------------------------------------------------------------
# Two test processes (pytest -n 2), or a test installing chromium, may reach apt-get at the same
# moment: dpkg refuses a second one at once ("Could not get lock"). Every apt-get of the project
# takes APT_LOCK first and then checks again; DPkg::Lock::Timeout waits out any other apt user.
APT_LOCK=${HTS_APT_LOCK:-/run/lock/hts-apt.lock}
missing() {
    ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null
}
if missing; then
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is not available"
    mkdir -p "$(dirname "$APT_LOCK")"
    exec 8>"$APT_LOCK"
    flock -w 900 8 || die "waited 900 s for $APT_LOCK (another apt-get of the tests hangs?)"
    if missing; then
        log "installing slurmctld slurmd slurm-client munge (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
    fi
    flock -u 8
    exec 8>&-
fi
if [[ -n $OWNER_PID ]]; then
    OWNER_START=$(proc_start "$OWNER_PID")
    [[ -n $OWNER_START ]] || die "HTS_SLURM_OWNER_PID=$OWNER_PID is not a running process"
fi

# --- state directory and config -------------------------------------------------------------
mkdir -p "$STATE_DIR"/{state,spool,log,dev}
touch "$STATE_DIR/$MARKER"
# From here on a failure may leave daemons running: say how to clean up (logs are kept).
trap 'rc=$?; ((rc == 0)) || log "logs in $STATE_DIR/log; clean up with $HERE/slurm-down.sh $STATE_DIR"' EXIT
: > "$STATE_DIR/pids"
# Fake GPUs: Slurm needs a File= per GPU; the trailing digit becomes the CUDA_VISIBLE_DEVICES index.
ln -sfn /dev/null "$STATE_DIR/dev/nvidia0"
ln -sfn /dev/null "$STATE_DIR/dev/nvidia1"

MEM_MIB=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)

cat > "$CONF" <<EOF
# Written by cluster/dev/slurm-up.sh: a throw-away single-node cluster for tests.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups needed (containers, no systemd).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default a job with no --mem would take the whole node's memory.
DefMemPerCPU=1024
# Let the node advertise more CPUs than the machine has.
SlurmdParameters=config_overrides
# Start batch jobs at once instead of batching submissions for up to 3 s (the default).
SchedulerParameters=batch_sched_delay=0
KillWait=5
MailProg=/bin/true
ReturnToService=2
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MIB Gres=gpu:2 Feature=gpu State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF

cat > "$STATE_DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu Count=2 File=$STATE_DIR/dev/nvidia[0-1]
EOF

# Wait until FILE holds the PID of a live process named NAME; print it.
wait_pid() {
    local name=$1 file=$2 pid="" i
    for ((i = 0; i < 100; i++)); do
        pid=$(cat "$file" 2>/dev/null || true)
        if [[ -n $pid ]] && running "$pid" "$name"; then
            echo "$pid"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not start (no live pid in $file); see $STATE_DIR/log"
}
# Wait until PID's daemon NAME listens on PORT (so that the next cluster's port check sees it).
wait_listen() {
    local name=$1 pid=$2 port=$3 i
    command -v ss >/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        listening "$port" && return 0
        running "$pid" "$name" || die "$name exited at start-up (port $port taken?); see $STATE_DIR/log/$name.log"
        sleep 0.1
    done
    die "$name does not listen on port $port after 10 s; see $STATE_DIR/log/$name.log"
}
# Start daemon NAME (it forks and writes PIDFILE), record its PID, wait for it to listen on PORT.
# fd 9 (the lock) is closed in the daemon, so that it never holds the lock.
start_daemon() {
    local name=$1 pidfile=$2 port=$3 pid
    shift 3
    "$name" "$@" </dev/null >>"$STATE_DIR/log/$name.out" 2>&1 9>&- \
        || die "$name failed to start; see $STATE_DIR/log/$name.log"
    pid=$(wait_pid "$name" "$pidfile")
    echo "$name $pid" >> "$STATE_DIR/pids"
    wait_listen "$name" "$pid" "$port"
}

# --- under the machine-wide lock: ports, munged, daemons ------------------------------------
# Another cluster starting, or stopping munged, waits; so no two clusters race for a port.
mkdir -p "$(dirname "$LOCK")"
exec 9>>"$LOCK"
flock -w 120 9 || die "waited 120 s for $LOCK (another slurm-up.sh or slurm-down.sh hangs?)"
# Ports already taken (by another Slurm on this machine) would make the daemons fail late.
for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if listening "$port"; then
        die "TCP port $port is in use (another Slurm?); set HTS_SLURM_CTLD_PORT/HTS_SLURM_SLURMD_PORT"
    fi
done

# --- munge (shared by every Slurm on the machine: only started when not running) -----------
if munge_ok; then
    log "munged already running: using it"
else
    [[ -s /etc/munge/munge.key ]] || { log "creating /etc/munge/munge.key"; mungekey --create >&2; }
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
    rm -f /run/munge/munged.pid
    # munged forks into the background itself; its fds go to /dev/null so callers that
    # capture this script's output do not wait on the daemon.
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 9>&- \
        || die "munged failed to start (see /var/log/munge/munged.log)"
    # Marked machine-wide, not in STATE_DIR: the last of these clusters to stop stops it.
    munged_pid=$(wait_pid munged /run/munge/munged.pid)
    echo "$munged_pid" > "$MUNGE_MARK"
    munge_ok || die "munged is running but 'munge -n | unmunge' fails"
fi

# --- slurmctld and slurmd (both daemonise and write their pid files) ------------------------
start_daemon slurmctld "$STATE_DIR/slurmctld.pid" "$CTLD_PORT" -f "$CONF"
start_daemon slurmd "$STATE_DIR/slurmd.pid" "$SLURMD_PORT" -f "$CONF" -N "$HOST"
flock -u 9
exec 9>&-

# --- the owner's watcher: slurm-down.sh once the owner has ended ----------------------------
if [[ -n $OWNER_PID ]]; then
    setsid bash "$HERE/slurm-down.sh" --after "$OWNER_PID:$OWNER_START" "$STATE_DIR" \
        </dev/null >>"$STATE_DIR/log/watch.log" 2>&1 &
    log "will stop by itself once process $OWNER_PID has ended"
fi

# --- wait for the node ----------------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
state=$(node_state)
while [[ $state != idle ]]; do
    if ((SECONDS >= deadline)); then
        die "node $HOST is '${state:-unknown}' after ${WAIT_S}s, not idle (SLURM_CONF=$CONF scontrol show node $HOST)"
    fi
    sleep 0.2
    state=$(node_state)
done
print_env > "$STATE_DIR/env"
log "up in $STATE_DIR: cluster $CLUSTER, ports $CTLD_PORT/$SLURMD_PORT, node $HOST idle, ${CPUS} CPUs, gpu:2, partitions debug (default) and gpu"
print_env
