"""Helpers for the benchmark scripts: timing by interleaved rounds, and real training latents."""

from __future__ import annotations

import os
import statistics
import time

import torch


def _in_fresh_process(arguments: tuple) -> dict:
    function, *rest = arguments
    return function(*rest)


def in_fresh_process(context, function, *arguments) -> dict:
    """function(*arguments) in a new process of `context` (spawned): its memory, peak and allocator
    settings are its own."""
    with context.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_in_fresh_process, ((function, *arguments),))


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_side_by_side(functions: dict, rounds: int = 20, warmup: int = 3, device="cpu") -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds so that machine
    noise hits every candidate alike (ratios are what we report)."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    samples = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            function()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def mnist_batch(batch_size: int = 32, offset: int = 0) -> torch.Tensor:
    """A batch of the embedded MNIST training images in [0, 1], (B, 1, 32, 32). On a machine
    without `datasets` (a bare GPU box), $BENCHMARK_MNIST_NPZ may point at an .npz holding uint8
    training images as `train`: the data pipeline's (B, 1, 32, 32) as benchmarks/gpu/device_wheels.sh
    writes them, or raw (B, 28, 28) ones, which get the pipeline's bilinear resize."""
    npz = os.environ.get("BENCHMARK_MNIST_NPZ")
    if npz:
        import numpy as np

        stored = np.load(npz)["train"]
        if offset + batch_size > len(stored):
            raise ValueError(
                f"$BENCHMARK_MNIST_NPZ={npz} holds {len(stored)} images; images {offset}-{offset + batch_size - 1} "
                "were asked for. Write more with benchmarks/gpu/device_wheels.sh, or unset it where `datasets` imports"
            )
        pixels = torch.from_numpy(stored[offset : offset + batch_size]).float()
        if pixels.dim() == 3:
            pixels = torch.nn.functional.interpolate(pixels[:, None], size=(32, 32), mode="bilinear")
        return pixels.round().clamp(0, 255) / 255.0
    from infra.data import DataConfig, load_images, to_unit_range

    split = load_images(DataConfig(), 1)["train"]
    return to_unit_range(split[offset : offset + batch_size]["pixel_values"])


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def draw_figures(drawer: str, *args) -> list:
    """`benchmarks.plots.<drawer>(*args)`, or nothing with a line saying why where matplotlib is
    missing (a bare device machine): the numbers matter more than their pictures."""
    try:
        from benchmarks import plots
    except ImportError as error:
        print(f"figures skipped: {error} (pip install matplotlib, or the project's [bench] extra)", flush=True)
        return []
    paths = getattr(plots, drawer)(*args)
    for path in paths:
        print(f"figure: {path}", flush=True)
    return paths
