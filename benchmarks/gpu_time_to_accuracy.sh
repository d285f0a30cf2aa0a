#!/usr/bin/env bash
# Time to accuracy on a lent GPU, in one call (see the device notes in the brief):
#   bash benchmarks/gpu_time_to_accuracy.sh CIFAR10_TGZ OUT_DIR [TOTAL_S] [PARALLEL]
# 1. fast_cifar10 and fast_cifar10_muon1024, seed 0 each, alone on the GPU: item 4's GPU times;
# 2. benchmarks/sweep.py over benchmarks/plans/gpu_speedrun_variants.yaml, PARALLEL runs side by side, no run
#    started later than TOTAL_S minus a minute after this script began.
# The records (benchmarks/results/time_to_accuracy, or $RESULTS) are packed into OUT_DIR/records.tar.gz.
# Set VGGLAB_COMMIT to this checkout's HEAD in the command: the copied tree's .git can be stale.
set -u
DATA=$1; OUT=$2; TOTAL=${3:-480}; PAR=${4:-4}
RESULTS=${RESULTS:-benchmarks/results/time_to_accuracy}
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
sha256sum "$DATA"
X=${EXTRACT:-/tmp/c10}
rm -rf "$X" && mkdir -p "$X" && tar -xzf "$DATA" -C "$X" || exit 1
ROOT=$X/cifar10
for cfg in fast_cifar10 fast_cifar10_muon1024; do
  echo "== $cfg alone (t=${SECONDS}s)"
  $PY benchmarks/time_to_accuracy.py --config configs/$cfg.yaml --data-root $ROOT --seeds 1 --first-seed 0 --results "$RESULTS" 2>&1 \
    | grep -v "images (.*%)"
done
LEFT=$((TOTAL - SECONDS - 60))
echo "== sweep, $PAR side by side, runs started for ${LEFT}s (t=${SECONDS}s)"
$PY benchmarks/sweep.py --plan benchmarks/plans/gpu_speedrun_variants.yaml --data-root $ROOT --parallel "$PAR" --threads 4 \
  --deadline-s "$LEFT" --grace-s 50 --results "$RESULTS"
tar -czf "$OUT/records.tar.gz" "$RESULTS"
echo "== done (t=${SECONDS}s)"
