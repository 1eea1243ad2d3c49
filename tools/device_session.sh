#!/usr/bin/env bash
# Everything this project runs on a lent GPU, in one call, each stage with its own time limit so the call always
# returns with what finished: the coursework preset (3 seeds), the fast preset (5 seeds), the block benchmarks.
# Locally first: tools/prepare_device_carry.sh; then run this with carry [".device_data"].
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OUT=${OUT:-runs/gpu} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  source tools/device_env.sh || exit 1
  stage() { local name=$1 limit=$2; shift 2; echo "== stage $name (limit ${limit}s) $(date -u +%T)";
            local start=$SECONDS; timeout "$limit" "$@"; echo "== stage $name: exit $?, $((SECONDS - start))s"; }
  stage coursework "${COURSEWORK_S:-310}" env LIMIT_S=$(( ${COURSEWORK_S:-310} - 25 )) bash examples/cifar10/gpu_coursework.sh
  stage fast "${FAST_S:-60}" bash examples/cifar10/gpu_fast.sh
  stage fast_lr0.3 "${FAST_LR_S:-45}" env NAME=fast_lr0.3 RUNS=3 EXTRA_ARGS="--lr 0.3" bash examples/cifar10/gpu_fast.sh
  stage benchmarks "${BENCH_S:-120}" env BUDGET_S=0.05 bash benchmarks/gpu_check.sh
  date -u
} 2>&1 | tee "$OUT/session.log"
