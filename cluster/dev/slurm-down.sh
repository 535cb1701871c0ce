#!/usr/bin/env bash
# Stop the throw-away SLURM started by cluster/dev/slurm-up.sh and remove its state directory.
#
#   cluster/dev/slurm-down.sh [STATE_DIR]          # default: $HTS_SLURM_DIR or /var/tmp/hts-slurm
#
# Cancels every job first (job processes outlive slurmd otherwise), then stops only the daemons
# that slurm-up.sh recorded in STATE_DIR/pids, each after checking /proc/PID/comm, so a reused
# PID or a stale pid file never gets a signal. A munged that was already running when the
# cluster came up was not recorded and is left alone. Nothing up: succeeds and does nothing.
set -euo pipefail

STATE_DIR=${1:-${HTS_SLURM_DIR:-/var/tmp/hts-slurm}}
MARKER=.hts-slurm
JOB_WAIT_S=${HTS_SLURM_JOB_WAIT_S:-30}    # how long to wait for cancelled jobs to end
STOP_WAIT_S=10                            # per daemon, before SIGKILL

log() { echo "slurm-down: $*" >&2; }
die() { echo "slurm-down: error: $*" >&2; exit 1; }

STATE_DIR=$(realpath -m -- "$STATE_DIR")
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

# --- cancel all jobs and wait for them to leave the queue -----------------------------------
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
    # slurmstepd processes of the last jobs may need a moment after the queue is empty.
    for ((i = 0; i < 50; i++)); do
        [[ -z $(ps -eo comm= | grep -x slurmstepd || true) ]] && break
        sleep 0.1
    done
fi

# --- stop the recorded daemons: slurmd first, then slurmctld, then munged (if ours) ---------
stop() {
    local name=$1 pid i
    pid=$(live_pid "$name")
    if [[ -z $pid ]]; then
        [[ -n $(pid_of "$name") ]] && log "$name (pid $(pid_of "$name")) is not running"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
        running "$pid" "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for ${STOP_WAIT_S}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}
stop slurmd
stop slurmctld
stop munged

rm -rf -- "$STATE_DIR"
log "stopped; removed $STATE_DIR"
