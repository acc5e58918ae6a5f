"""Is a trained VQ-WAE's OT plan the Wasserstein plan it claims to be? Checks the plan of a trained
tokenizer (its carried code potential g: each latent goes to its Laguerre cell argmin_k C - g_k)
against POT's exact OT on pools of real training latents, and its cell masses against pi on the
whole training split.

    python benchmarks/ot_population.py --tokenizer outputs/tokenizer-mnist/final [--pools 2048 8192]

A mini-batch's exact OT forces every code to take exactly its share pi_k of *that batch* (4 of the
2048 latents of a batch of 32 at K = 512), which sends latents to far codes when the batch's own
counts fluctuate: the exact cost of a pool falls as the pool grows, towards the population's W.
So the gap to exact OT is reported per pool size, and the marginals on the whole split.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import device_name

from infra.data import DataConfig, load_images, to_unit_range
from tokenizer.model import load_tokenizer
from tokenizer.quantizers import squared_distances
from tokenizer.transport import exact_transport


@torch.no_grad()
def training_latents(model, limit: int | None) -> torch.Tensor:
    """Encoder latents (N, D) of the first `limit` training images (all when None)."""
    split = load_images(DataConfig(image_size=model.config.image_size), model.config.in_channels)["train"]
    limit = len(split) if limit is None else min(limit, len(split))
    chunks = []
    for start in range(0, limit, 500):
        images = to_unit_range(split[start : min(start + 500, limit)]["pixel_values"])
        latents = model.encoder(images)
        chunks.append(latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]))
    return torch.cat(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--pools", type=int, nargs="+", default=[2048, 8192], help="latents per exact OT problem")
    parser.add_argument("--repeats", type=int, default=3, help="pools of each size (disjoint)")
    parser.add_argument("--images", type=int, default=None, help="training images for the marginals (default: all)")
    args = parser.parse_args()
    model = load_tokenizer(args.tokenizer).eval()
    quantizer = model.quantizer
    if quantizer.code_potential.shape[0] != 1:
        raise SystemExit("error: this check is for the global OT scope (one potential over all latents)")
    potential, weights = quantizer.code_potential[0], quantizer.code_weights()[0].detach()
    latents = training_latents(model, args.images)  # (N, D)

    # 1. Marginals on the whole split: cell masses (the OT plan) and nearest-code masses (what decodes).
    cells, nearest = [], []
    for chunk in latents.split(65536):
        distances = squared_distances(chunk, quantizer.codebook)
        cells.append((distances - potential).argmin(-1))
        nearest.append(distances.argmin(-1))
    cells, nearest = torch.cat(cells), torch.cat(nearest)
    size = quantizer.codebook_size

    def l1(assigned):
        return (torch.bincount(assigned, minlength=size) / assigned.numel() - weights).abs().sum().item()

    report = dict(
        tokenizer=args.tokenizer, device=device_name(), latents=latents.shape[0],
        cell_marginal_l1=l1(cells), nearest_marginal_l1=l1(nearest),
        cell_differs_from_nearest=(cells != nearest).float().mean().item(), pools=[],
    )  # fmt: skip

    # 2. Exact OT on disjoint pools of real latents vs the carried potential's plan on the same pool.
    order = torch.randperm(latents.shape[0], generator=torch.Generator().manual_seed(0))
    offset = 0
    for pool_size in args.pools:
        for _ in range(args.repeats):
            pool = latents[order[offset : offset + pool_size]]
            offset += pool_size
            cost = squared_distances(pool, quantizer.codebook)  # (N, K)
            start = time.perf_counter()
            exact = exact_transport(cost.t()[None], weights[None]).cost.item()
            seconds = time.perf_counter() - start
            plan_cells = (cost - potential).argmin(-1)
            report["pools"].append(
                dict(
                    size=pool_size, exact_cost=exact, exact_seconds=seconds,
                    plan_cost=cost.gather(1, plan_cells[:, None]).mean().item(),
                    nearest_cost=cost.amin(-1).mean().item(), plan_marginal_l1=l1(plan_cells),
                )
            )  # fmt: skip
    print(json.dumps(report, indent=2))
    print("\n| pool latents | exact OT cost | plan cost (gap) | nearest-code cost (gap) | plan marginal L1 |")
    print("|---|---|---|---|---|")
    for size in args.pools:
        rows = [row for row in report["pools"] if row["size"] == size]
        exact = sum(row["exact_cost"] for row in rows) / len(rows)
        plan = sum(row["plan_cost"] for row in rows) / len(rows)
        near = sum(row["nearest_cost"] for row in rows) / len(rows)
        marginal = sum(row["plan_marginal_l1"] for row in rows) / len(rows)
        print(
            f"| {size} | {exact:.5f} | {plan:.5f} ({plan / exact - 1:+.1%}) | {near:.5f} ({near / exact - 1:+.1%}) | {marginal:.3f} |"
        )
    print(
        f"\nwhole training split ({report['latents']} latents): cell masses L1 {report['cell_marginal_l1']:.3f}, "
        f"nearest-code masses L1 {report['nearest_marginal_l1']:.3f}; cell != nearest for "
        f"{report['cell_differs_from_nearest']:.1%} of latents"
    )


if __name__ == "__main__":
    main()
