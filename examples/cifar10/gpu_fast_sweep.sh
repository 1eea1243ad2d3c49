#!/usr/bin/env bash
# One-seed variants of the fast preset on a lent GPU, to see where its accuracy goes with more epochs and more
# regularisation: appends each variant's runs.json, tagged with its flags, to $OUT/fast_sweep.jsonl (else runs/gpu/).
#   VARIANTS (newline-separated flag sets; "" is the preset itself)   RUNS=1   DEVICE=cuda
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source tools/device_env.sh || exit 1
out=${OUT:-runs/gpu}
mkdir -p "$out"
default_variants=$'\n--epochs 20\n--cutout 12\n--lr 0.3\n--weight-decay 1e-3\n--batch-size 512 --lr 0.35\n--epochs 20 --cutout 12'
while IFS= read -r flags; do
  runs=/tmp/dynconv-sweep && rm -rf "$runs"
  echo "== variant: fast ${flags:-(preset)}"
  # shellcheck disable=SC2086  # flags are a word list on purpose
  "$PYTHON" examples/cifar10/train.py --preset fast --device "${DEVICE:-cuda}" --runs "${RUNS:-1}" --progress off \
    --out "$runs" $flags 2>&1 | grep -E "^(done|  )"
  result=$runs/runs.json && [[ -f $result ]] || result=$runs/summary.json  # one run writes only its summary
  "$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1])); r["flags"] = sys.argv[2]; print(json.dumps(r))' \
    "$result" "$flags" >> "$out/fast_sweep.jsonl"
done <<< "${VARIANTS:-$default_variants}"
