"""FID of a pipeline's samples against a reference split, as JSON.

python -m pipelines.fid --pipeline DIR --n N --reference mnist:test [--reference-n M]
    [--each-class --guidance-scale 2]

--each-class samples n / num_classes images of every class (class-conditional priors), the
standard class-conditional gFID; --guidance-scale is classifier-free guidance for those samples.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from infra.config import CommandLine, check_arguments, run_cli

from .pipeline_vqwae import VQWAEPipeline


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub repo id")
    parser.add_argument("--n", type=int, default=10000, help="number of generated samples")
    parser.add_argument("--reference", default="mnist:test", help="SOURCE:SPLIT of the real images")
    parser.add_argument("--reference-n", type=int, default=None, help="use the first M reference images (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--weights", default=None, help="Inception weights in torch-fidelity's layout (default: resolved offline)"
    )
    parser.add_argument("--each-class", action="store_true", help="n / num_classes samples of every class")
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help="classifier-free guidance (with --each-class)"
    )
    parser.add_argument("--temperature", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--top-k", type=int, default=None, help="default: the pipeline's; 0 = no top-k")
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"n": 1, "reference_n": 1, "batch_size": 1})
    if ":" not in args.reference:
        raise ValueError(f"--reference must be SOURCE:SPLIT (e.g. mnist:test), got {args.reference!r}")
    sampling = dict(temperature=args.temperature, top_k=args.top_k)
    if args.each_class:
        sampling["class_labels"] = "each"
    if args.guidance_scale is not None:
        sampling["guidance_scale"] = args.guidance_scale
    pipe = VQWAEPipeline.from_pretrained(args.pipeline).to("cuda" if torch.cuda.is_available() else "cpu")
    result = pipe.fid(
        n=args.n, reference=args.reference, reference_n=args.reference_n, batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(args.seed), weights_path=args.weights,
        **sampling,
    )  # fmt: skip
    print(json.dumps(asdict(result), indent=2))
    return asdict(result)


if __name__ == "__main__":
    run_cli(main)
