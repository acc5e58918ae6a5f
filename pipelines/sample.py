"""Sample images from a pipeline into a PNG grid.

python -m pipelines.sample --pipeline DIR --n 16 --out samples.png [--seed S --class-label C]
"""

from __future__ import annotations

import argparse
import math

import torch
from torchvision.utils import save_image

from tokenizer.config import run_cli

from .pipeline_vqwae import VQWAEPipeline


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub repo id")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--out", default="samples.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-label", type=int, default=None)
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    args = parser.parse_args(argv)
    pipe = VQWAEPipeline.from_pretrained(args.pipeline).to("cuda" if torch.cuda.is_available() else "cpu")
    output = pipe(
        n=args.n, class_labels=args.class_label, guidance_scale=args.guidance_scale, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, generator=torch.Generator().manual_seed(args.seed), output_type="pt",
    )  # fmt: skip
    save_image(output.images, args.out, nrow=max(1, int(math.sqrt(args.n))), padding=2)
    print(f"wrote {args.n} samples to {args.out}")
    return args.out


if __name__ == "__main__":
    run_cli(main)
