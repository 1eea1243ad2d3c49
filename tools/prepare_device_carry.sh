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
# each package's folder and its dist-info (the anchor's record names airbench's version: importlib.metadata reads it
# from there); airbench is the anchor (benchmarks/airbench_anchor.py), both are pure Python
"$python" - <<'PY' | xargs -d '\n' cp -r -t "$dest"/pylib/
import importlib, importlib.metadata
for package in ("timm", "airbench"):
    files = importlib.metadata.distribution(package).files
    print(importlib.import_module(package).__path__[0])
    print(next(f for f in files if f.name == "METADATA").locate().parent)
PY
find "$dest"/pylib -name __pycache__ -prune -exec rm -rf {} +
du -sh "$dest"
