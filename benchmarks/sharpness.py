"""How much of the originals' fine detail the reconstructions keep: for each tokenizer, the mean
absolute luminance gradient of its reconstructions over that of the originals (1 = as sharp, below
1 = smoothed; `infra.photos.gradient_statistics`), beside PSNR, on the first N images of a split.
A tokenizer can lead in PSNR by averaging detail away, which LPIPS and FID punish.

    python -m benchmarks.sharpness --source photos --split test --n 1000 --out FILE \\
        --tokenizer vq-wae RUN/final --tokenizer vq-ema RUN/final ...
"""

from __future__ import annotations

import argparse

import torch

from infra.config import provenance
from infra.data import DataConfig, load_images
from infra.files import write_record
from infra.metrics.reconstruction import psnr
from infra.photos import gradient_statistics
from tokenizer.evaluation import reconstruct
from tokenizer.model import load_tokenizer


def sharpness(tokenizer: str, source: str, split: str, n: int) -> dict:
    model = load_tokenizer(tokenizer)
    data = load_images(DataConfig(source=source, image_size=model.config.image_size), model.config.in_channels)[split]
    originals = data[: min(n, len(data))]["pixel_values"].to(torch.uint8)
    reconstructions = reconstruct(model, originals)
    detail = gradient_statistics((reconstructions * 255).round().to(torch.uint8).numpy())
    reference = gradient_statistics(originals.numpy())
    return {"n": len(originals), "gradient_ratio": float(detail.mean() / reference.mean()),
            "psnr": psnr(reconstructions, originals.float() / 255).mean().item()}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", nargs=2, action="append", required=True, metavar=("NAME", "FOLDER"))
    parser.add_argument("--source", default="photos")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = {name: sharpness(folder, args.source, args.split, args.n) for name, folder in args.tokenizer}
    for name, row in result.items():
        print(f"{name}: gradient ratio {row['gradient_ratio']:.3f}, PSNR {row['psnr']:.2f} dB on {row['n']} images")
    if args.out:
        write_record(args.out, provenance("benchmarks.sharpness", argv) | {"source": args.source, "split": args.split,
                                                                            "tokenizers": result})  # fmt: skip
    return result


if __name__ == "__main__":
    main()
