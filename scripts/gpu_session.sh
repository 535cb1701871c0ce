#!/usr/bin/env bash
# All the GPU work of one lent GPU session (H100/H200, ~9 minutes), as one prepared script.
#
#   HTS_DATA=../shared/data OUT=/tmp/gpu-out scripts/gpu_session.sh
#
# 1. smoke: 3 CUDA training steps with loader workers, then validation (stops here on failure);
# 2. scripts/gpu_check.py: engine on GPU (bf16) vs CPU (fp32) on the same images (the shipped
#    default model), tiles/s per width; then scripts/bench_engine.py on the GPU (issue 20's MP/s per GPU);
# 3. only with TABLE1=1 (done once, docs/table1.md): scripts/ablation.py, Table 1, two runs at a time
#    (2026-11-26 on an H200: 14 training processes sharing the GPU ran 4-6 steps/s each, 2 ran 17-24);
# 4. two width-16 candidates for the default model at once: the shipped recipe (7,500 steps, lr decay
#    from 4,500) with seeds 1 and 2 (~20 steps/s each), then their threshold selection
#    (scripts/tune_postprocess.py) on the validation split. Rerunning the script resumes them.
# Results land in $OUT: session.tar.gz (logs, histories) and the candidates' checkpoints.
# Every stage has a time limit so that the script ends inside one 10-minute device call.
set -u
DATA=${HTS_DATA:-../shared/data}
OUT=${OUT:-/tmp/hts-gpu-session}
WORK=${WORK:-/tmp/hts-gpu-work}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}          # DEVICE=cpu LONG_STEPS=6 DECAY=3 VAL_EVERY=3 SMOKE_T=200: a dry run of the plumbing
ABL_STEPS=${ABL_STEPS:-2000}
LONG_STEPS=${LONG_STEPS:-7500}
DECAY=${DECAY:-4500}
VAL_EVERY=${VAL_EVERY:-1500}
TABLE1=${TABLE1:-0}
SMOKE_T=${SMOKE_T:-60}          # a CPU dry run needs ~150 s (validation on 54 images)
SEEDS=${SEEDS:-"1 2"}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/logs"
TRAIN="$DATA/dsb2018_fluo_train.npz"
VAL="$DATA/dsb2018_fluo_val.npz"
log() { echo "[$(date +%T)] $*"; }
finish() {
    (cd "$WORK" && tar czf "$OUT/session.tar.gz" logs table1/table1.md table1/table1.json table1/fig5.png 2>/dev/null)
    for seed in $SEEDS; do [ -f "$WORK/iu16s$seed.pt" ] && cp "$WORK/iu16s$seed.pt" "$OUT/"; done
    ls -la "$OUT"
}
trap finish EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nproc

log "1. smoke"
timeout $SMOKE_T $PY -m hts train --data "$VAL" --val "$VAL" --out "$WORK/smoke.pt" --steps 3 --val-every 3 \
    --device $DEVICE --workers 2 --no-resume >"$WORK/logs/smoke.log" 2>&1
rc=$?
tail -c 1500 "$WORK/logs/smoke.log"
[ $rc -eq 0 ] || { log "smoke failed (rc $rc)"; exit 1; }

log "2. gpu_check"
timeout 75 $PY scripts/gpu_check.py --images 3 --size 1024 2>&1 | tee "$WORK/logs/gpu_check.log"

log "2b. bench_engine (MP/s end to end, GPU busy fraction, host cost with a stub network)"
timeout 120 $PY scripts/bench_engine.py --device $DEVICE --data "$VAL" --settings 448:auto 1280:auto \
    2>&1 | tee "$WORK/logs/bench_engine.log"

if [ "$TABLE1" = 1 ]; then
    log "3. Table 1"
    timeout -k 10 240 $PY scripts/ablation.py --data "$TRAIN" --val "$VAL" --steps $ABL_STEPS --width 16 --seeds 0 \
        --device $DEVICE --jobs 2 --workers 3 --out "$WORK/table1" >"$WORK/logs/ablation.log" 2>&1
    tail -n 20 "$WORK/logs/ablation.log"
fi

log "4. width-16 candidates, seeds $SEEDS"
for seed in $SEEDS; do
    timeout -k 10 420 $PY -m hts train --data "$TRAIN" --val "$VAL" --out "$WORK/iu16s$seed.pt" --width 16 --seed $seed \
        --steps $LONG_STEPS --decay-from $DECAY --val-every $VAL_EVERY --device $DEVICE --workers 3 \
        >"$WORK/logs/iu16s$seed.log" 2>&1 &
done
wait
for seed in $SEEDS; do
    grep -a -h -o 'step [0-9]*: loss.*' "$WORK/logs/iu16s$seed.log"
    [ -f "$WORK/iu16s$seed.pt" ] || continue
    $PY -c "
import json, sys
from hts.model.checkpoint import read_checkpoint
c = read_checkpoint(sys.argv[1]); json.dump({'step': c['step'], 'meta': c['meta']}, open(sys.argv[2], 'w'), default=float)
" "$WORK/iu16s$seed.pt" "$WORK/logs/iu16s$seed.history.json"
    timeout 60 $PY scripts/tune_postprocess.py --model "$WORK/iu16s$seed.pt" --data "$VAL" \
        --scores 0.5 --fg 0.8 0.85 0.9 >"$WORK/logs/iu16s$seed.tune.log" 2>&1 &
done
wait
tail -n 30 "$WORK"/logs/*.tune.log
log "done"
