#!/usr/bin/env bash
# Everything this project runs on a lent GPU, in one call, each stage with its own time limit so the call always
# returns with what finished, cheapest and most important first: the fast preset (5 seeds, eager), the airbench94
# anchor on the same card and data (3 runs), our airbench94 preset beside it (3 seeds), the block benchmarks, the
# fast preset under torch.compile (3 seeds); the coursework preset (2 seeds at once, 50 epochs, compiled) is a stage
# of its own call (it needs the whole 600 s a call may run).
# Locally first: tools/prepare_device_carry.sh; then run this with carry [".device_data"] and timeout_s >= 480.
#   STAGES="fast anchor airbench94 benchmarks fast_compile"  FAST_S=90 ANCHOR_S=60 AIRBENCH94_S=50
#   BENCH_S=100 COURSEWORK_S=255 FAST_COMPILE_S=150 AIRBENCH94_RUNS=3 FAST_COMPILE_RUNS=3  DEVICE=cuda  ANCHOR_ARGS="--runs 3"  COURSEWORK_ARGS="--channels-last --compile default"
#   (measured on an H200, 2026-11-30: fast 79 s for 5 seeds with the data build; fast_compile 117 s, since compiling
#   takes about 30 s per graph and the whitening bias freezing after 3 epochs makes a second graph)
#   optional stages: throughput (THROUGHPUT_S=150), whole-model training images/s eager vs compiled;
#   family_floor (FAMILY_FLOOR_S=150, FAMILY_FLOOR_ARGS), every block family beside its floor;
#   blocks_compiled (BLOCKS_COMPILED_S=240), the block benchmarks compiled beside eager
#   COURSEWORK_SEEDS="0 1"   (environment overrides; e.g. the whole 50-epoch coursework run alone, ~10 minutes:
#   STAGES=coursework COURSEWORK_SEEDS=0 COURSEWORK_S=560)
#   EXTRA_ARGS (train.py flags added to every preset stage) and BENCH_SELECT (a pytest -k expression for every benchmark
#   stage) shrink the stages for tests/test_device_session.py's dry runs on the CPU
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OUT=${OUT:-runs/gpu} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
stages=" ${STAGES:-fast anchor airbench94 benchmarks fast_compile} "
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  source tools/device_env.sh || exit 1
  stage() { local name=$1 limit=$2; shift 2; [[ $stages == *" $name "* ]] || return 0
            echo "== stage $name (limit ${limit}s) $(date -u +%T)"
            local start=$SECONDS; timeout "$limit" "$@"; echo "== stage $name: exit $?, $((SECONDS - start))s"; }
  stage fast "${FAST_S:-90}" bash examples/cifar10/gpu_fast.sh
  # airbench's own code on the same card and data (tests/test_device_session.py dry-runs it on the CPU)
  stage anchor "${ANCHOR_S:-60}" "$PYTHON" -m benchmarks.airbench_anchor --device "${DEVICE:-cuda}" \
    ${ANCHOR_ARGS:---runs 3} --work-dir "$OUT/airbench-work" --out "$OUT/airbench94_${DEVICE:-cuda}.json"
  # our reproduction of airbench94's recipe (the airbench94 preset, static blocks) beside it
  stage airbench94 "${AIRBENCH94_S:-50}" env PRESET=airbench94 NAME=airbench94 RUNS="${AIRBENCH94_RUNS:-3}" \
    bash examples/cifar10/gpu_fast.sh
  # the block benchmarks only: the whole-model ones compile every model (the optional stage below)
  stage benchmarks "${BENCH_S:-100}" env BUDGET_S=0.03 BENCH_ARGS="--ignore=benchmarks/test_train_speed.py \
    --ignore=benchmarks/test_inference_speed.py --ignore=benchmarks/test_block_speed_compiled.py" \
    bash benchmarks/gpu_check.sh
  # optional: the block benchmarks compiled beside eager (fused/floor with launch overhead removed)
  stage blocks_compiled "${BLOCKS_COMPILED_S:-240}" "$PYTHON" -m pytest benchmarks/test_block_speed_compiled.py \
    --device "${DEVICE:-cuda}" --benchmark-enable --bench-budget 0.03 -q -p no:cacheprovider \
    --benchmark-json "$OUT/blocks_compiled_${DEVICE:-cuda}.json" ${BENCH_SELECT:+-k "$BENCH_SELECT"}
  # optional (not in the default STAGES): whole-model training throughput, eager and compiled, of the tiny, cpu
  # (small) and fast presets' models and their static twins
  stage throughput "${THROUGHPUT_S:-150}" "$PYTHON" -m pytest benchmarks/test_train_speed.py --device "${DEVICE:-cuda}" \
    --benchmark-enable -q -p no:cacheprovider -k "${BENCH_SELECT:-tiny or small or fast}" --benchmark-json "$OUT/train_throughput.json"
  # optional: every block family beside its floor (benchmarks/family_floor.py's table and mode check) on the card
  stage family_floor "${FAMILY_FLOOR_S:-150}" "$PYTHON" -m benchmarks.family_floor --device "${DEVICE:-cuda}" \
    ${FAMILY_FLOOR_ARGS:-} --out "$OUT/family_floor_${DEVICE:-cuda}"
  stage coursework "${COURSEWORK_S:-255}" env SEEDS="${COURSEWORK_SEEDS:-0 1}" WORKERS=6 \
    LIMIT_S=$(( ${COURSEWORK_S:-255} - 15 )) EXTRA_ARGS="${COURSEWORK_ARGS:---channels-last --compile default} ${EXTRA_ARGS:-}" \
    bash examples/cifar10/gpu_coursework.sh
  stage fast_compile "${FAST_COMPILE_S:-150}" env NAME=fast_compile RUNS="${FAST_COMPILE_RUNS:-3}" EXTRA_ARGS="--compile default ${EXTRA_ARGS:-}" \
    bash examples/cifar10/gpu_fast.sh
  date -u
} 2>&1 | tee "$OUT/session.log"
