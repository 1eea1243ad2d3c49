#!/usr/bin/env bash
# The coursework preset on a lent GPU: several seeds at once on the one GPU (batch 64 leaves it mostly idle), each
# its full 50 epochs. Prints the runs' logs, each run, and the mean and std of the final test accuracy; writes
# coursework.json (configs, per-epoch metrics, summaries) under $OUT (else runs/gpu/), and each finished run's final
# weights (float16) with its records under $OUT/weights/coursework/ for ship_weights.py.
#   SEEDS="0 1 2"  WORKERS=4  LIMIT_S=900  DEVICE=cuda  EXTRA_ARGS=""   (environment overrides)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tools/device_env.sh || exit 1
out=${OUT:-runs/gpu}
runs=${RUNS_DIR:-/tmp/dynconv-coursework}
mkdir -p "$out" && rm -rf "$runs" && mkdir -p "$runs"
for seed in ${SEEDS:-0 1 2}; do
  timeout "${LIMIT_S:-900}" "$PYTHON" examples/cifar10/train.py --preset coursework --device "${DEVICE:-cuda}" \
    --seed "$seed" --workers "${WORKERS:-4}" --save-every 10 --progress off --out "$runs/seed$seed" ${EXTRA_ARGS:-} \
    > "$runs/seed$seed.log" 2>&1 &
done
wait
for log in "$runs"/seed*.log; do echo "== $log"; cat "$log"; done
"$PYTHON" examples/cifar10/collect_runs.py "$runs"/seed*/ --out "$out/coursework.json"
"$PYTHON" examples/cifar10/collect_weights.py "$runs"/seed*/ --out "$out/weights/coursework" --half
