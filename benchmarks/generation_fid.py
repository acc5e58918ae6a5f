"""gFID the way papers measure it: N samples of a pipeline against the N test images, torch-fidelity's
Inception (TF 2015-12-05 weights, offline), unconditional and class-conditional (N / num_classes
samples of every class) at several classifier-free guidance scales, each also scored at smaller
sample counts so small-sample figures can be placed.

    python -m benchmarks.generation_fid --pipeline PIPELINE_DIR --out outputs/gfid \
        --n 10000 --guidance-scales 1 1.5 2 3 4 --counts 1000 2000 5000 10000 [--floor]

Every setting's samples and Inception features are saved under OUT as they are made, and the
tables are rewritten after each one, so a stopped run resumes where it stopped. A count m below
N takes the first m unconditional samples, or the first m / num_classes samples of every class.
--floor adds the tokenizer's own rFID: its reconstructions of the same reference images.
Sampling is plain by default (temperature 1, no top-k / top-p, unconditional samples from the
null class): the standard gFID, comparable across pipelines; `--sampling pipeline` uses the
sampling defaults the pipeline chose on validation (pipeline_config.json). The report records which.
Writes OUT/results.json, OUT/results.md, OUT/figures/gfid-vs-samples.png, and a grid per setting, OUT/grid-<setting>.png:
the first (up to) 10 samples of every class, a row each, or the first 100 unconditional samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from benchmarks.common import draw_figures
from infra.metrics.fid_score import (
    as_uint8_rgb,
    feature_extractor,
    fid_statistics,
    frechet_distance,
    inception_features,
    reference_images,
    reference_statistics,
    resolve_inception_weights,
)
from pipelines import VQWAEPipeline
from tokenizer.evaluation import reconstruct


def cached(path: Path, make, *args, **kwargs):
    """torch.load(path), or make(*args, **kwargs) saved atomically to path first."""
    if not path.is_file():
        value = make(*args, **kwargs)
        temporary = path.with_suffix(".tmp")
        torch.save(value, temporary)
        temporary.rename(path)
    return torch.load(path)


def sample_images(pipe: VQWAEPipeline, n: int, seed: int, batch_size: int, channels: int, **sampling) -> torch.Tensor:
    """n samples as uint8 (n, channels, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    images = pipe(n=n, generator=generator, batch_size=batch_size, output_type="pt", **sampling).images
    return as_uint8_rgb(images)[:, :channels]


# The standard gFID draw: the model's own distribution, nothing truncated or reweighted.
PLAIN_SAMPLING = dict(temperature=1.0, top_k=0, unconditional="null_class")


def setting_name(guidance_scale: float | None) -> str:
    """A setting's row name: unconditional (None), or class-conditional at a guidance scale."""
    return "unconditional" if guidance_scale is None else f"class-conditional g={guidance_scale:g}"


def setting_tag(guidance_scale: float | None) -> str:
    """A setting's file tag (samples-TAG.pt, features-TAG.pt, and codes-TAG.pt of --codes)."""
    return setting_name(guidance_scale).replace(" ", "-").replace("=", "")


def decoded_codes(pipe: VQWAEPipeline, folder: Path, guidance_scale: float | None, n: int, channels: int,
                  batch_size: int) -> torch.Tensor:  # fmt: skip
    """The code grids sampled elsewhere for a setting (folder/codes-TAG.pt, as benchmarks/gpu/gpu_prior.py
    writes them), decoded with the pipeline's tokenizer as uint8 (n, channels, H, W)."""
    path = folder / f"codes-{setting_tag(guidance_scale)}.pt"
    if not path.is_file():
        there = sorted(file.name for file in folder.glob("codes-*.pt"))
        raise FileNotFoundError(f"--codes {folder}: no {path.name} (there: {there}); score only the settings sampled")
    payload = torch.load(path)
    if payload["tokenizer_id"] != pipe.tokenizer_id:
        raise ValueError(f"{path} holds codes of another tokenizer than the pipeline's: decode them with a pipeline "
                         "of the tokenizer they were sampled for")  # fmt: skip
    if payload["n"] != n or payload["guidance_scale"] != guidance_scale:
        raise ValueError(f"{path} holds n={payload['n']} at guidance {payload['guidance_scale']}, not n={n} at "
                         f"{guidance_scale}: pass the --n it was sampled with")  # fmt: skip
    if guidance_scale is not None and payload["num_classes"] != pipe.num_classes:
        raise ValueError(f"{path}: sampled with {payload['num_classes']} classes, the pipeline has {pipe.num_classes}")
    return as_uint8_rgb(pipe.decode(payload["codes"], batch_size))[:, :channels]


def subset(count: int, n: int, num_classes: int) -> torch.Tensor:
    """Indices of the first `count` samples, or of the first count / num_classes of every class
    when the n samples are class-ordered blocks (num_classes > 0)."""
    if not num_classes:
        return torch.arange(count)
    if count % num_classes:
        raise ValueError(f"--counts: {count} is not a multiple of num_classes={num_classes}")
    per_class, block = count // num_classes, n // num_classes
    return (torch.arange(num_classes)[:, None] * block + torch.arange(per_class)).reshape(-1)


def markdown(report: dict) -> str:
    counts = report["counts"]
    lines = [
        f"{report['n']} samples per setting against {report['reference']} ({report['reference_n']} images), "
        f"{report['extractor']}; seed {report['seed']}"
        + (
            f"; code grids sampled on {report['codes_from']['device']} ({report['codes_from']['folder']})"
            if report.get("codes_from")
            else ""
        ),
        "",
        "| setting | guidance scale | "
        + " | ".join(f"FID @ {count}" for count in counts)
        + " | sampling min | Inception min |",
        "|---|---|" + "---|" * len(counts) + "---|---|",
    ]
    for name, row in report["settings"].items():
        scale = "-" if row["guidance_scale"] is None else f"{row['guidance_scale']:g}"
        cells = " | ".join(f"{row['fid'][str(count)]:.2f}" for count in counts)
        sampling, inception = (
            "-" if row[key] is None else f"{row[key]:.1f}" for key in ("sampling_minutes", "inception_minutes")
        )
        lines.append(f"| {name} | {scale} | {cells} | {sampling} | {inception} |")
    if "floor" in report:
        floor = report["floor"]
        lines.append(
            f"\nTokenizer floor: rFID {floor['fid']:.2f} (reconstructions of the {floor['n']} reference images)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub repo id")
    parser.add_argument("--out", default="outputs/gfid")
    parser.add_argument("--n", type=int, default=10000, help="samples per setting, and reference images")
    parser.add_argument("--reference", default="mnist:test", help="SOURCE:SPLIT of the real images")
    parser.add_argument("--guidance-scales", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0, 4.0],
                        help="class-conditional settings (none: unconditional only)")  # fmt: skip
    parser.add_argument("--no-unconditional", action="store_true", help="skip the unconditional setting")
    parser.add_argument("--counts", type=int, nargs="*", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--floor", action="store_true", help="also the tokenizer's rFID on the reference images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256, help="sampling batch")
    parser.add_argument("--inception-batch-size", type=int, default=64)
    parser.add_argument("--weights", default=None, help="Inception weights in torch-fidelity's layout")
    parser.add_argument("--codes", type=Path, default=None,
                        help="score code grids sampled elsewhere (DIR/codes-<setting>.pt of benchmarks/gpu/gpu_prior.py), "
                             "decoded with the pipeline's tokenizer, instead of sampling the pipeline's prior")  # fmt: skip
    parser.add_argument("--sampling", choices=["plain", "pipeline"], default="plain",
                        help="plain: temperature 1, no top-k/top-p, unconditional from the null class (default); "
                             "pipeline: the sampling defaults the pipeline chose on validation")  # fmt: skip
    args = parser.parse_args(argv)
    counts = sorted({count for count in args.counts if count <= args.n} | {args.n})
    if min(counts) < 2:
        parser.error("--n and --counts must be >= 2 (a covariance needs two samples)")
    if any(scale < 0 for scale in args.guidance_scales):
        parser.error(f"--guidance-scales must be >= 0, got {args.guidance_scales}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = VQWAEPipeline.from_pretrained(args.pipeline).to(device)
    num_classes = pipe.num_classes
    if args.guidance_scales and not num_classes:
        parser.error("--guidance-scales needs a class-conditional prior; give --guidance-scales with no value")
    scales = ([] if args.no_unconditional else [None]) + list(args.guidance_scales)
    settings = {setting_name(scale): scale for scale in scales}
    if not settings:
        parser.error("nothing to score: drop --no-unconditional or give --guidance-scales")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Inception and the reference statistics (cached across runs).
    weights = resolve_inception_weights(args.weights)
    extractor = feature_extractor(weights, device)
    size, channels = pipe.tokenizer.config.image_size, pipe.tokenizer.config.in_channels
    reference, reference_n = reference_statistics(
        args.reference, size, channels, args.n, extractor, weights, args.inception_batch_size
    )
    report = dict(pipeline=str(args.pipeline), n=args.n, counts=counts, reference=args.reference,
                  reference_n=reference_n, extractor=f"inception-v3-compat ({weights.name})", seed=args.seed,
                  device=torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)",
                  settings={})  # fmt: skip
    # Plain sampling is passed explicitly; the pipeline's defaults apply to whatever is left open.
    sampling = dict(PLAIN_SAMPLING) if args.sampling == "plain" else {}
    if args.codes is None:
        report["sampling"] = dict(mode=args.sampling, **(sampling or pipe.sampling_defaults))
    else:
        if not args.codes.is_dir():
            parser.error(f"--codes {args.codes}: no such folder")
        record = args.codes / "gpu_prior.json"
        prior = json.loads(record.read_text()) if record.is_file() else None
        report["codes_from"] = dict(folder=str(args.codes), device=(prior or {}).get("device", "?"), prior=prior)

    def write() -> None:
        (out / "results.json").write_text(json.dumps(report, indent=2))
        (out / "results.md").write_text(markdown(report))
        draw_figures("generation_figures", report, out / "figures", f"gFID against {args.reference}, {report['device']}")

    # 2. Each setting: samples, their features, FID at every count. A resumed setting keeps the
    # minutes its files took when they were made (None if that record is gone), not the load time.
    previous_report = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    if previous_report and previous_report.get("sampling") != report.get("sampling"):
        parser.error(
            f"{out} holds samples drawn with sampling {previous_report.get('sampling')}, not {report.get('sampling')}: "
            "give another --out (or the same --sampling)"
        )
    previous = previous_report.get("settings", {})
    for name, scale in settings.items():
        tag = setting_tag(scale)
        resumed = [(out / f"{kind}-{tag}.pt").is_file() for kind in ("samples", "features")]
        started = time.monotonic()
        if args.codes is not None:
            images = cached(out / f"samples-{tag}.pt", decoded_codes, pipe, args.codes, scale, args.n, channels,
                            args.batch_size)  # fmt: skip
        else:
            labels = {} if scale is None else dict(class_labels="each", guidance_scale=scale)
            images = cached(out / f"samples-{tag}.pt", sample_images, pipe, args.n, args.seed, args.batch_size,
                            channels, **sampling, **labels)  # fmt: skip
        sampled = time.monotonic()
        features = cached(out / f"features-{tag}.pt", inception_features, images, extractor, args.inception_batch_size,
                          desc=name)  # fmt: skip
        blocks = num_classes if scale is not None else 0
        # What a person sees: a row of (up to) 10 samples per class, or 10 x 10 unconditional ones.
        per_row = min(10, args.n // blocks) if blocks else 10
        shown = subset(per_row * blocks, args.n, blocks) if blocks else torch.arange(min(100, args.n))
        save_image(images[shown].float() / 255, out / f"grid-{tag}.png", nrow=per_row, padding=2)
        fid = {str(count): frechet_distance(fid_statistics(features[subset(count, args.n, blocks)]), reference)
               for count in counts}  # fmt: skip
        minutes = dict(sampling_minutes=(sampled - started) / 60, inception_minutes=(time.monotonic() - sampled) / 60)
        for key, was_saved in zip(minutes, resumed):
            if was_saved:
                minutes[key] = previous.get(name, {}).get(key)
        if args.codes is not None:  # sampled elsewhere: the minutes it took there (decoding here is seconds)
            sampled_there = ((report["codes_from"]["prior"] or {}).get("sampling") or {}).get(tag)
            minutes["sampling_minutes"] = sampled_there.get("minutes") if isinstance(sampled_there, dict) else None
        report["settings"][name] = dict(guidance_scale=scale, fid=fid, **minutes)
        print(f"{name}: FID {fid[str(args.n)]:.2f} @ {args.n}", flush=True)
        write()

    # 3. The tokenizer's floor: its reconstructions of the same reference images.
    if args.floor:
        originals = reference_images(args.reference, size, channels, args.n)
        reconstructions = cached(out / "reconstructions.pt", reconstruct, pipe.tokenizer.eval(), originals)
        features = cached(out / "features-reconstructions.pt", inception_features, reconstructions, extractor,
                          args.inception_batch_size, desc="reconstructions")  # fmt: skip
        report["floor"] = dict(fid=frechet_distance(fid_statistics(features), reference), n=len(reconstructions))
        write()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
