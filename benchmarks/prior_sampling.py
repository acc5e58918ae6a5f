"""Prior sampling and decoding speed: `generate` with vs without the KV cache, 16 x 64 tokens
(an 8x8 grid), with the MNIST prior size (GPT-2, 6 layers, 256 wide); then decode throughput.

    python -m benchmarks.prior_sampling
"""

from __future__ import annotations

import torch

from benchmarks.common import device_name, time_side_by_side
from prior import CodeVocabulary, PriorModelConfig, build_prior, sample_codes
from tokenizer import VQWAE, VQWAEConfig


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    prior = build_prior(PriorModelConfig(), CodeVocabulary(512, 8, 8, num_classes=10), "benchmark").to(device).eval()
    tokenizer = VQWAE(VQWAEConfig()).to(device).eval()
    codes = torch.randint(0, 512, (256, 8, 8), device=device)

    def generate(use_cache: bool):
        return lambda: sample_codes(prior, 16, generator=torch.Generator().manual_seed(0), use_cache=use_cache)

    def decode():
        with torch.no_grad():
            tokenizer.decode(codes)

    timings = time_side_by_side(
        {"cache": generate(True), "no cache": generate(False), "decode": decode}, rounds=5, device=device
    )
    print(f"device: {device_name()}\n")
    print("| what | time | rate |")
    print("|---|---|---|")
    print(
        f"| generate 16 x 64 tokens, KV cache | {timings['cache']:.2f} s | {16 * 64 / timings['cache']:.0f} tokens/s |"
    )
    print(
        f"| generate 16 x 64 tokens, no cache | {timings['no cache']:.2f} s | {16 * 64 / timings['no cache']:.0f} tokens/s |"
    )
    print(f"| KV cache speed-up | | {timings['no cache'] / timings['cache']:.1f}x |")
    print(
        f"| decode 256 code grids to 32x32 images | {timings['decode']:.3f} s | {256 / timings['decode']:.0f} images/s |"
    )


if __name__ == "__main__":
    main()
