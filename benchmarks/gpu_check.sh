#!/usr/bin/env bash
# The block benchmark suite on CUDA (bf16 autocast, channels_last): writes bench_cuda.json and bench_cuda.md under
# $OUT (else benchmarks/results/) and prints the ratio table.
#   BUDGET_S=0.1 (timing budget per benchmark)   BENCH_ARGS="" (extra pytest arguments, split at spaces)
#   BENCH_SELECT="" (a pytest -k expression, kept whole)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -d .device_data ]] && export PYTHONPATH="$PWD/.device_data/pylib:$PYTHONPATH"
out=${OUT:-benchmarks/results}
mkdir -p "$out"
"${PYTHON:-python3}" -m pytest benchmarks --device "${DEVICE:-cuda}" --benchmark-enable --bench-budget "${BUDGET_S:-0.1}" -q \
  -p no:cacheprovider --benchmark-json "$out/bench_cuda.json" ${BENCH_ARGS:-} ${BENCH_SELECT:+-k "$BENCH_SELECT"} | tail -n 5
"${PYTHON:-python3}" benchmarks/report.py "$out/bench_cuda.json" --out "$out/bench_cuda" \
  --command "BUDGET_S=${BUDGET_S:-0.1} bash benchmarks/gpu_check.sh"
