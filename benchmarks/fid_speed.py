"""FID cost: images per second of the Inception feature extractor, and what cached reference
statistics save on a second call.

    python benchmarks/fid_speed.py [--n 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import device_name, mnist_batch

from tokenizer import fid_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    images = (mnist_batch(args.n, 0) * 255).round().to(torch.uint8)
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["VQWAE_CACHE"] = cache
        fid_score.resolve_inception_weights()  # convert once, outside the timings
        start = time.perf_counter()
        first = fid_score.compute_fid(images, "mnist:test", reference_n=args.n)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        second = fid_score.compute_fid(images, "mnist:test", reference_n=args.n)
        warm = time.perf_counter() - start
    print(f"device: {device_name()}; {args.n} samples vs {args.n} mnist:test images\n")
    print("| call | seconds | Inception images/s |")
    print("|---|---|---|")
    print(f"| first (features of samples and reference) | {cold:.1f} | {2 * args.n / cold:.1f} |")
    print(f"| second (reference statistics from cache) | {warm:.1f} | {args.n / warm:.1f} |")
    print(f"\nFID {first.fid:.2f} both times: {abs(first.fid - second.fid) < 1e-6}")


if __name__ == "__main__":
    main()
