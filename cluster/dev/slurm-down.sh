#!/usr/bin/env bash
# Stop the throw-away SLURM started by cluster/dev/slurm-up.sh and remove its state directory.
#
#   cluster/dev/slurm-down.sh [STATE_DIR]          # default: $HTS_SLURM_DIR or /var/tmp/hts-slurm
#   cluster/dev/slurm-down.sh --after PID:START STATE_DIR
#                                                  # wait until process PID (started at START,
#                                                  # /proc/PID/stat field 22) has ended, then stop
#
# Cancels every job of this cluster first (job processes outlive slurmd otherwise), then stops
# only the daemons that slurm-up.sh recorded in STATE_DIR/pids, each after checking
# /proc/PID/comm, so a reused PID or a stale pid file never gets a signal. Other clusters on
# the machine are not touched. munged is shared: it is stopped only if one of these clusters
# started it and no slurmctld, slurmd or slurmstepd is left on the machine; a munged that was
# running before is left alone. Nothing up: succeeds and does nothing.
#
# --after is slurm-up.sh's watcher (HTS_SLURM_OWNER_PID): it also ends, doing nothing, when
# the state directory goes away (the cluster was stopped by a plain slurm-down.sh).
set -euo pipefail

AFTER=""
if [[ ${1:-} == --after ]]; then
    AFTER=${2:?--after needs PID:START}
    shift 2
fi
STATE_DIR=${1:-${HTS_SLURM_DIR:-/var/tmp/hts-slurm}}
MARKER=.hts-slurm
JOB_WAIT_S=${HTS_SLURM_JOB_WAIT_S:-30}    # how long to wait for cancelled jobs to end
STOP_WAIT_S=10                            # per daemon, before SIGKILL
LOCK=${HTS_SLURM_LOCK:-/run/lock/hts-slurm.lock}            # shared with slurm-up.sh
MUNGE_MARK=${HTS_SLURM_MUNGE_MARK:-/run/lock/hts-slurm-munged.pid}

log() { echo "slurm-down: $*" >&2; }
die() { echo "slurm-down: error: $*" >&2; exit 1; }

STATE_DIR=$(realpath -m -- "$STATE_DIR")
# Start time of process PID (field 22 of /proc/PID/stat): tells a reused PID apart.
proc_start() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }

# --- watcher mode: wait for the owner to end ------------------------------------------------
if [[ -n $AFTER ]]; then
    owner=${AFTER%%:*} start=${AFTER#*:}
    while [[ -e $STATE_DIR/$MARKER ]]; do
        if [[ $(proc_start "$owner") != "$start" ]]; then
            log "owner process $owner has ended: stopping the cluster in $STATE_DIR"
            break
        fi
        sleep 1
    done
    [[ -e $STATE_DIR/$MARKER ]] || exit 0
fi

if [[ ! -e $STATE_DIR ]]; then
    log "nothing to do: $STATE_DIR does not exist"
    exit 0
fi
[[ -e $STATE_DIR/$MARKER ]] || die "$STATE_DIR was not made by slurm-up.sh (no $MARKER); not touching it"
export SLURM_CONF=$STATE_DIR/slurm.conf

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$STATE_DIR/pids" 2>/dev/null | tail -n1; }
# Is PID a live (not zombie) process named NAME?
running() {
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
    [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]
}
# Live PID of the recorded daemon NAME, or nothing (dead, never started, or PID reused).
live_pid() {
    local pid; pid=$(pid_of "$1")
    if [[ -n $pid ]] && running "$pid" "$1"; then echo "$pid"; fi
}
# Any live process named one of NAMES on this machine (any cluster)?
any_running() {
    local f pid name
    for f in /proc/[0-9]*/comm; do
        pid=${f#/proc/}; pid=${pid%/comm}
        for name in "$@"; do running "$pid" "$name" && return 0; done
    done 2>/dev/null
    return 1
}
# Job steps of this cluster still running: slurmstepd keeps a socket in our spool directory.
steps_left() { [[ -n $(find "$STATE_DIR/spool" -type s 2>/dev/null | head -n1) ]]; }

# --- cancel this cluster's jobs and wait for them to leave the queue ------------------------
if [[ -n $(live_pid slurmctld) ]] && scontrol ping >/dev/null 2>&1; then
    # Jobs still in the queue, one id per line (pending, running, completing...).
    queued() { squeue -h -o %A 2>/dev/null || true; }
    ids=$(queued)
    if [[ -n $ids ]]; then
        log "cancelling jobs: $(echo $ids)"
        # shellcheck disable=SC2086
        scancel $ids 2>/dev/null || true
        deadline=$((SECONDS + JOB_WAIT_S))
        while [[ -n $(queued) ]]; do
            if ((SECONDS >= deadline)); then
                log "warning: jobs still listed after ${JOB_WAIT_S}s: $(echo $(queued))"
                break
            fi
            sleep 0.2
        done
    fi
    # The slurmstepd processes of the last jobs may need a moment after the queue is empty.
    for ((i = 0; i < 50; i++)); do
        steps_left || break
        sleep 0.1
    done
fi

# --- stop the recorded daemons: slurmd first, then slurmctld --------------------------------
stop() {
    local name=$1 pid i
    pid=$2
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
        running "$pid" "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for ${STOP_WAIT_S}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}
for name in slurmd slurmctld; do
    pid=$(live_pid "$name")
    if [[ -n $pid ]]; then
        stop "$name" "$pid"
    elif [[ -n $(pid_of "$name") ]]; then
        log "$name (pid $(pid_of "$name")) is not running"
    fi
done

# --- munged: stopped by the last of these clusters, if one of them started it ---------------
# Under slurm-up.sh's lock, so that no cluster is starting on it meanwhile.
stop_munged() {
    local pid
    pid=$(cat "$MUNGE_MARK" 2>/dev/null || true)
    [[ -n $pid ]] || return 0
    if ! running "$pid" munged; then
        rm -f "$MUNGE_MARK"
        return 0
    fi
    if any_running slurmctld slurmd slurmstepd; then
        log "munged (pid $pid) left running: other Slurm daemons on this machine use it"
        return 0
    fi
    stop munged "$pid"
    rm -f "$MUNGE_MARK"
}
if [[ -e $MUNGE_MARK ]]; then
    exec 9>>"$LOCK"
    if flock -w 120 9; then
        stop_munged
    else
        log "warning: waited 120 s for $LOCK; munged left running"
    fi
    exec 9>&-
fi

rm -rf -- "$STATE_DIR"
log "stopped; removed $STATE_DIR"
