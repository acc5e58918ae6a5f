"""Sample images from a pipeline into a PNG grid.

python -m pipelines.sample --pipeline DIR --n 16 --out samples.png [--seed S --class-label C]
python -m pipelines.sample --pipeline DIR --per-class 10 --guidance-scale 2 --out classes.png  # a row per class
"""

from __future__ import annotations

import math

import torch
from torchvision.utils import save_image

from infra.config import CommandLine, check_arguments, run_cli

from .pipeline_vqwae import VQWAEPipeline


def main(argv: list[str] | None = None) -> str:
    parser = CommandLine(__doc__)
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub repo id")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--out", default="samples.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-label", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None, help="K samples of every class, one row per class")
    # Left out: the pipeline's own defaults (chosen on validation when its prior was trained).
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--temperature", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--top-k", type=int, default=None, help="default: the pipeline's; 0 = no top-k")
    parser.add_argument("--top-p", type=float, default=None)
    args = parser.parse_args(argv)
    # Counts are checked before anything loads or samples (the grid's width takes a square root).
    check_arguments(args, at_least={"n": 1, "per_class": 1})
    pipe = VQWAEPipeline.from_pretrained(args.pipeline).to("cuda" if torch.cuda.is_available() else "cpu")
    n, labels, columns = args.n, args.class_label, max(1, int(math.sqrt(args.n)))
    if args.per_class is not None:
        if args.class_label is not None:
            raise ValueError("give --per-class or --class-label, not both")
        if not pipe.num_classes:
            raise ValueError("--per-class needs a class-conditional prior (train it with class_conditional=true)")
        n, labels, columns = args.per_class * pipe.num_classes, "each", args.per_class
    output = pipe(
        n=n, class_labels=labels, guidance_scale=args.guidance_scale, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, generator=torch.Generator().manual_seed(args.seed), output_type="pt",
    )  # fmt: skip
    save_image(output.images, args.out, nrow=columns, padding=2)
    what = f"{args.per_class} per class" if args.per_class else f"{n} samples"
    used = {**pipe.sampling_defaults, **{k: v for k, v in (("guidance_scale", args.guidance_scale),
            ("temperature", args.temperature), ("top_k", args.top_k)) if v is not None}}  # fmt: skip
    print(f"wrote {what} (sampling {used or 'temperature 1, no top-k, no guidance'}) to {args.out}")
    return args.out


if __name__ == "__main__":
    run_cli(main)
