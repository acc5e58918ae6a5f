"""Tokenizer design sweep: train VQWAE variants for a fixed budget on MNIST held as tensors on the
device (no data loader, no Accelerate) and print test PSNR and perplexity per run, one JSON line
each. This is how the defaults in configs/tokenizer/mnist.yaml were chosen (BENCHMARKS.md).

    BENCHMARK_MNIST_NPZ=mnist.npz python benchmarks/sweep_tokenizer.py \
        '[{"name": "default", "model_kw": {}, "loss_kw": {}, "cosine": true, "lr": 0.002}]'

The .npz holds the 28x28 uint8 MNIST images as `train` (60k; the first 50k are used) and `test`
(10k). Runs are independent: launch several in parallel on one GPU.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenizer import VQWAE, VQWAEConfig  # noqa: E402
from tokenizer.metrics import code_histogram, perplexity_from_counts, psnr  # noqa: E402
from tokenizer.objective import LossConfig, total_loss  # noqa: E402


def to_images(pixels: np.ndarray, device: str) -> torch.Tensor:
    """28x28 uint8 -> (N, 1, 32, 32) in [0, 1], bilinear as infra/data.py."""
    images = torch.from_numpy(pixels).float()[:, None]
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    return (images / 255.0).to(device)


def run(name, model_kw, loss_kw, steps=1500, cosine=False, lr=1e-3, seed=0, device=None, batch_size=32) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    data = np.load(os.environ["BENCHMARK_MNIST_NPZ"])
    train, test = to_images(data["train"][:50000], device), to_images(data["test"], device)
    model = VQWAE(VQWAEConfig(**model_kw)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)) if cosine else 1.0  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    weights = LossConfig(**loss_kw)
    generator = torch.Generator().manual_seed(seed)
    order, position, times = torch.randperm(len(train), generator=generator), 0, []
    for _ in range(steps):
        if position + batch_size > len(train):  # next epoch
            order, position = torch.randperm(len(train), generator=generator), 0
        images = train[order[position : position + batch_size].to(device)]
        position += batch_size
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = total_loss(model(images), weights)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        scheduler.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    model.eval()
    counts, scores = torch.zeros(model.config.codebook_size, device=device), []
    with torch.no_grad():
        for start in range(0, len(test), 500):
            images = test[start : start + 500]
            codes = model.encode(images)
            counts += code_histogram(codes, model.config.codebook_size)
            scores.append(psnr(model.decode(codes).clamp(0, 1), images))
    result = dict(name=name, psnr=torch.cat(scores).mean().item(), perplexity=perplexity_from_counts(counts).item(),
                  used=int((counts > 0).sum()), step_ms=1e3 * float(np.median(times[50:])))  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    for settings in json.loads(sys.argv[1]):
        run(**settings)
