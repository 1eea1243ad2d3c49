#!/usr/bin/env bash
# Stage what a lent GPU machine needs beside the working tree into .device_data/ (git-ignored; name it in `carry`):
# the CIFAR-10 source and its builder (29 MB, rebuilt there by cifar10-root), and this venv's timm and airbench (pure
# Python), so the device runs the timm version we test against and has the anchor without network.
#   SHARED=../shared  DEST=.device_data  PYTHON=.venv/bin/python   (environment overrides)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shared=${SHARED:-../shared}
dest=${DEST:-.device_data}
python=${PYTHON:-.venv/bin/python}
rm -rf "$dest"
mkdir -p "$dest"/tools "$dest"/data "$dest"/pylib
cp "$shared"/tools/cifar10-root "$shared"/tools/make_cifar10.py "$dest"/tools/
cp -r "$shared"/data/cifar10-source "$dest"/data/
for package in timm airbench; do  # pure Python; airbench is the anchor (benchmarks/airbench_anchor.py)
  cp -r "$("$python" -c "import $package, os; print(os.path.dirname($package.__file__))")" "$dest"/pylib/
  # its dist-info too: the anchor's record names the package's version, which importlib.metadata reads from there
  cp -r "$("$python" -c "import importlib.metadata as m
print(next(f for f in m.distribution('$package').files if f.name == 'METADATA').locate().parent)")" "$dest"/pylib/
done
find "$dest"/pylib -name __pycache__ -prune -exec rm -rf {} +
du -sh "$dest"
