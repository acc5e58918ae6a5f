"""What a person would see in a pipeline's samples, measured: a digit classifier's verdict beside gFID.

    python -m pipelines.evaluation --pipeline outputs/quickstart/prior/pipeline [--per-class 50]
        [--unconditional 500] [--fid-n 500] [--seed 0] [--guidance-scale G --temperature T --top-k K]
        [--unconditional-mode null_class|classes]

Class-conditional samples (a class-conditional prior): the share the classifier judges the asked
digit, overall and per class. Unconditional samples: the share it classifies with confidence
>= 0.9 (recognisable). --fid-n N adds the Inception FID of N unconditional samples against the
first N MNIST test images (equal counts: small-sample FID reads high): the first N of the judged
ones, so FID and verdict describe the same images (drawn apart when N is more than were judged). Sampling settings left out are the pipeline's own defaults. The
classifier (infra/metrics/digit_classifier.py) is the one shipped in models/digit-classifier-mnist (or
a cached one); its test accuracy is printed with every result. Prints JSON; `--out FILE` also writes it there as a
results record, with the date and the command that measured it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from infra.config import CommandLine, check_arguments, provenance, run_cli
from infra.files import write_record
from infra.metrics.digit_classifier import judge, load_classifier
from infra.metrics.fid_score import compute_fid
from pipelines.pipeline_vqwae import VQWAEPipeline


def evaluate_samples(pipe: VQWAEPipeline, per_class: int = 50, num_unconditional: int = 500, fid_n: int = 0,
                     seed: int = 0, **sampling) -> dict:  # fmt: skip
    """The classifier's verdict on `per_class` samples of every class (class-conditional priors)
    and on `num_unconditional` samples, and optionally the FID of the first `fid_n` of them;
    `sampling` overrides the pipeline's defaults (temperature, top_k, top_p, guidance_scale)."""
    config = pipe.tokenizer.config
    if (config.in_channels, config.image_size) != (1, 32):
        raise ValueError(f"the digit classifier judges 1 x 32 x 32 digits; this pipeline makes "
                         f"{config.in_channels} x {config.image_size} x {config.image_size} images")  # fmt: skip
    if per_class < 0 or num_unconditional < 0 or fid_n < 0:
        raise ValueError("--per-class, --unconditional and --fid-n must be >= 0")
    classifier, info = load_classifier()
    result = {"classifier_test_accuracy": info.test_accuracy, "sampling_defaults": pipe.sampling_defaults,
              "sampling_overrides": sampling}  # fmt: skip
    if per_class and pipe.num_classes:
        labels = torch.arange(pipe.num_classes).repeat_interleave(per_class)
        conditional_sampling = {key: value for key, value in sampling.items() if key != "unconditional"}
        images = pipe(n=len(labels), class_labels=labels, generator=torch.Generator().manual_seed(seed),
                      output_type="pt", progress=False, **conditional_sampling).images  # fmt: skip
        result["class_conditional"] = {"samples": len(labels), **judge(classifier, images).accuracy(labels)}
    # Guidance reaches unconditional samples only when they are drawn through classes.
    drawn_through_classes = sampling.get("unconditional", pipe.sampling_defaults.get("unconditional")) == "classes"
    unconditional_sampling = {key: value for key, value in sampling.items()
                              if key != "guidance_scale" or drawn_through_classes}  # fmt: skip
    if num_unconditional:
        images = pipe(n=num_unconditional, generator=torch.Generator().manual_seed(seed + 1), output_type="pt",
                      progress=False, **unconditional_sampling).images  # fmt: skip
        result["unconditional"] = {"samples": num_unconditional, "recognisable": judge(classifier, images).recognisable()}
    if fid_n and fid_n <= num_unconditional:  # the judged samples themselves
        result["gfid"] = asdict(compute_fid(images[:fid_n], "mnist:test", reference_n=fid_n))
    elif fid_n:
        result["gfid"] = asdict(pipe.fid(n=fid_n, reference="mnist:test", reference_n=fid_n, **unconditional_sampling))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub repo id")
    parser.add_argument("--per-class", type=int, default=50, help="class-conditional samples of every class")
    parser.add_argument("--unconditional", type=int, default=500, help="unconditional samples")
    parser.add_argument("--fid-n", type=int, default=0, help="> 0: Inception FID of this many unconditional samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--temperature", type=float, default=None, help="default: the pipeline's")
    parser.add_argument("--top-k", type=int, default=None, help="default: the pipeline's; 0 = no top-k")
    parser.add_argument("--unconditional-mode", choices=["null_class", "classes"], default=None,
                        help="how a class-conditional prior draws unconditional samples (default: the pipeline's)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here, with the date and command")
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"per_class": 0, "unconditional": 0, "fid_n": 0})
    if args.out is not None and args.out.exists():  # refused before the work, not after it
        raise FileExistsError(f"--out {args.out} exists: give another path or remove it (a results record is not overwritten)")
    sampling = {key: value for key, value in (("guidance_scale", args.guidance_scale),
                ("temperature", args.temperature), ("top_k", args.top_k),
                ("unconditional", args.unconditional_mode)) if value is not None}  # fmt: skip
    pipe = VQWAEPipeline.from_pretrained(args.pipeline)
    result = evaluate_samples(pipe, args.per_class, args.unconditional, args.fid_n, args.seed, **sampling)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        write_record(args.out, provenance("pipelines.evaluation", argv) | {"pipeline": args.pipeline} | result)
    return result


if __name__ == "__main__":
    run_cli(main)
