#!/usr/bin/env bash
# The fast preset (or PRESET) on a lent GPU: RUNS seeds one after another (the first pays for torch.compile; the reported
# training time is the median), then the table of mean and std with and without test-time augmentation. Writes
# $NAME.json (default fast.json) under $OUT (else runs/gpu/), and the first seed's weights under $OUT/weights/$NAME/.
#   RUNS=5  NAME=fast  PRESET=fast  DEVICE=cuda  EXTRA_ARGS=""   (environment overrides)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tools/device_env.sh || exit 1
out=${OUT:-runs/gpu}
name=${NAME:-fast}
runs=${RUNS_DIR:-/tmp/dynconv-$name}
mkdir -p "$out" && rm -rf "$runs"
"$PYTHON" examples/cifar10/train.py --preset "${PRESET:-fast}" --device "${DEVICE:-cuda}" --runs "${RUNS:-5}" --progress off \
  --out "$runs" ${EXTRA_ARGS:-} 2>&1
# RUNS>1 trains seed*/ subfolders and writes runs.json; RUNS=1 trains in $runs itself
if [[ -f $runs/runs.json ]]; then
  cp "$runs/runs.json" "$out/$name.json"
elif [[ -f $runs/summary.json ]]; then
  "$PYTHON" examples/cifar10/collect_runs.py "$runs" --out "$out/$name.json"
else
  echo "$name: no runs.json (the runs did not finish)"
fi
# the first seed's final weights (float16) and records under $OUT/weights/$NAME/, for ship_weights.py
first=$(ls -d "$runs"/seed* 2>/dev/null | head -1)
[[ -z $first && -f $runs/summary.json ]] && first=$runs
[[ -n $first ]] && "$PYTHON" examples/cifar10/collect_weights.py "$first" --out "$out/weights/$name" --half
