"""Where a trained tokenizer's unused codes are: for the first N images of a split, which codes are
some latent's nearest (used) and which no latent's (unused), and for each group the squared
distance from a code to its nearest latent, in units of the transport's cost scale (the mean
nearest-code cost, `tokenizer/transport.py`), beside the semi-relaxed problem's tau (its
code_relaxation x that scale). A code whose nearest latent costs many tau more than the codes in
use is cheaper for the semi-relaxed optimum to leave empty than to fill: its target mass
pi e^(-g / tau) vanishes as its potential g climbs to the cost of reaching it.

    python -m benchmarks.unused_codes --tokenizer RUN/final --split validation --n 2000 --out FILE
"""

from __future__ import annotations

import argparse
import math

import torch
from tqdm.auto import tqdm

from infra.config import provenance
from infra.data import DataConfig, load_images, to_unit_range
from infra.files import write_record
from tokenizer.model import load_tokenizer
from tokenizer.transport_chunked import squared_distances


def nearest(points: torch.Tensor, others: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of `points` (N, D): the squared distance to its nearest row of `others` (M, D)
    (the training's own fp32 cost, `squared_distances`) and that row's index, `chunk` rows at a
    time (memory O(chunk x M))."""
    costs, indices = [], []
    for block in points.split(chunk):
        best = squared_distances(block, others).min(dim=1)
        costs.append(best.values)
        indices.append(best.indices)
    return torch.cat(costs), torch.cat(indices)


def quantiles(values: torch.Tensor) -> dict:
    if not len(values):
        return {}
    levels = torch.tensor([0.1, 0.5, 0.9], dtype=values.dtype)
    return dict(zip(("q10", "median", "q90"), values.quantile(levels).tolist()))


@torch.no_grad()
def unused_codes(tokenizer: str, split: str, n: int, batch_size: int = 250) -> dict:
    model = load_tokenizer(tokenizer).eval()
    if not hasattr(model.quantizer, "codebook"):
        raise ValueError(f"{tokenizer} has no codebook to inspect (quantizer {model.config.quantizer})")
    data = load_images(DataConfig(image_size=model.config.image_size), model.config.in_channels)[split]
    images = to_unit_range(data[: min(n, len(data))]["pixel_values"])
    latents = torch.cat([model.encoder(chunk) for chunk in tqdm(images.split(batch_size), desc="encode")])
    latents = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).float()  # (N * h * w, D)
    codebook = model.quantizer.codebook.detach().float()  # (K, D)
    latent_cost, code_of = nearest(latents, codebook)
    used = torch.bincount(code_of, minlength=len(codebook)) > 0
    scale = latent_cost.mean().item()  # the transport's cost scale: the mean nearest-code cost
    relaxation = model.quantizer.transport_config.code_relaxation if hasattr(model.quantizer, "transport_config") else None
    tau = (relaxation or 0.0) * scale
    code_cost, _ = nearest(codebook, latents)
    groups = {}
    for name, mask in (("used", used), ("unused", ~used)):
        cost = code_cost[mask]
        groups[name] = {"codes": int(mask.sum()), "cost_to_nearest_latent": quantiles(cost),
                        "in_scales": quantiles(cost / scale)}  # fmt: skip
    result = {"tokenizer": tokenizer, "split": split, "images": len(images), "latents": len(latents),
              "codebook_size": len(codebook), "scale": scale, "code_relaxation": relaxation, "tau": tau, **groups}  # fmt: skip
    if tau and groups["unused"]["codes"]:
        # The semi-relaxed target mass of a typical unused code, as a share of pi, when its potential
        # has climbed to the cost gap between it and the codes in use.
        gap = groups["unused"]["cost_to_nearest_latent"]["median"] - groups["used"]["cost_to_nearest_latent"]["median"]
        result["unused_target_share"] = math.exp(-gap / tau)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a tokenizer folder (RUN/final) or Hub id")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--n", type=int, default=2000, help="the first N images of the split")
    parser.add_argument("--out", help="also write the result as a JSON record here")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    result = {**provenance("benchmarks.unused_codes", argv), **unused_codes(args.tokenizer, args.split, args.n)}
    for name in ("used", "unused"):
        group = result[name]
        print(f"{name}: {group['codes']:,} codes; cost to the nearest latent in scales: {group.get('in_scales')}")
    print(f"scale {result['scale']:.3g}, tau {result['tau']:.3g}; unused target share {result.get('unused_target_share')}")
    if args.out:
        write_record(args.out, result)
    return result


if __name__ == "__main__":
    main()
