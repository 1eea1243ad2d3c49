#!/usr/bin/env bash
# Stage what a lent GPU machine needs beside the working tree into .device_data/ (git-ignored; name it in `carry`):
# the CIFAR-10 source and its builder (29 MB, rebuilt there by cifar10-root), and this venv's timm and airbench (pure
# Python), so the device runs the timm version we test against and has the anchor without network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shared=${SHARED:-../shared}
rm -rf .device_data
mkdir -p .device_data/tools .device_data/data .device_data/pylib
cp "$shared"/tools/cifar10-root "$shared"/tools/make_cifar10.py .device_data/tools/
cp -r "$shared"/data/cifar10-source .device_data/data/
for package in timm airbench; do  # pure Python; airbench is the anchor (benchmarks/airbench_anchor.py)
  cp -r "$(.venv/bin/python -c "import $package, os; print(os.path.dirname($package.__file__))")" .device_data/pylib/
done
find .device_data/pylib -name __pycache__ -prune -exec rm -rf {} +
du -sh .device_data
