"""FID cost: Inception images per second by memory layout, precision and batch size (measured side
by side on the same images), the FID each precision gives on the same image sets (test vs train
digits, and a tokenizer's reconstructions vs their originals with --tokenizer), and what cached
reference statistics save on a second call. bf16 is autocast around infra.metrics.fid_score's fp32
feature loop; the library itself computes FID in fp32 only (bf16 moved rFID by about 10%).

    python -m benchmarks.fid_speed [--n 256] [--fid-n 500] [--tokenizer DIR --rfid-n 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import torch

from benchmarks.common import device_name
from infra.data import DataConfig, load_images
from infra.metrics import fid_score
from tokenizer.evaluation import reconstruct
from tokenizer.model import load_tokenizer

SETTINGS = [  # (label, channels_last, precision, batch size)
    ("NCHW, fp32, batch 64 (torch-fidelity's own loop)", False, "fp32", 64),
    ("NCHW, fp32, batch 16", False, "fp32", 16),
    ("channels-last, fp32, batch 64 (default)", True, "fp32", 64),
    ("channels-last, fp32, batch 16", True, "fp32", 16),
    ("NCHW, bf16 autocast, batch 64", False, "bf16", 64),
    ("channels-last, bf16 autocast, batch 64", True, "bf16", 64),
]


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def images_per_second(images: torch.Tensor, channels_last: bool, precision: str, batch_size: int) -> float:
    extractor = fid_score.feature_extractor(channels_last=channels_last, device="cpu")
    with autocast(precision):
        fid_score.inception_features(images[:8], extractor, batch_size=8)  # warm-up
        start = time.perf_counter()
        fid_score.inception_features(images, extractor, batch_size=batch_size)
    return len(images) / (time.perf_counter() - start)


def fid_by_precision(first: torch.Tensor, second: torch.Tensor, label: str) -> None:
    print(f"\n| precision | FID, {label} | seconds |\n|---|---|---|")
    results = {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        with autocast(precision):
            results[precision] = fid_score.compute_fid(first, second, cache=False).fid
        print(f"| {precision} | {results[precision]:.4f} | {time.perf_counter() - start:.1f} |", flush=True)
    print(f"\nbf16 - fp32: {100 * (results['bf16'] / results['fp32'] - 1):+.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="images per speed measurement")
    parser.add_argument("--fid-n", type=int, default=500, help="test vs train images for the precision check")
    parser.add_argument("--tokenizer", default=None, help="also check precision on its reconstructions vs originals")
    parser.add_argument("--rfid-n", type=int, default=1000, help="test images reconstructed for that check")
    args = parser.parse_args()
    splits = load_images(DataConfig(image_size=32), 1)
    test = splits["test"][: max(args.n, args.fid_n)]["pixel_values"].to(torch.uint8)
    train = splits["train"][: args.fid_n]["pixel_values"].to(torch.uint8)
    print(f"device: {device_name()}, torch {torch.__version__}\n")
    print(f"| setting | Inception images/s ({args.n} MNIST test images) |\n|---|---|")
    for label, channels_last, precision, batch_size in SETTINGS:
        print(
            f"| {label} | {images_per_second(test[: args.n], channels_last, precision, batch_size):.1f} |", flush=True
        )

    fid_by_precision(test[: args.fid_n], train, f"first {args.fid_n} test vs first {args.fid_n} train images")
    if args.tokenizer:
        originals = splits["test"][: args.rfid_n]["pixel_values"].to(torch.uint8)
        reconstructions = reconstruct(load_tokenizer(args.tokenizer).eval(), originals)
        fid_by_precision(reconstructions, originals, f"{args.rfid_n} reconstructions vs their originals (rFID)")

    with tempfile.TemporaryDirectory() as cache:
        os.environ["VQWAE_CACHE"] = cache
        fid_score.resolve_inception_weights()  # convert once, outside the timings
        calls = []
        for _ in range(2):
            start = time.perf_counter()
            fid = fid_score.compute_fid(test[: args.n], "mnist:test", reference_n=args.n).fid
            calls.append((time.perf_counter() - start, fid))
    print(f"\nfirst call (features of samples and reference): {calls[0][0]:.1f} s; second (reference statistics")
    print(
        f"from the cache): {calls[1][0]:.1f} s; FID {calls[0][1]:.3f} both times: {abs(calls[0][1] - calls[1][1]) < 1e-9}"
    )


if __name__ == "__main__":
    main()
