"""How far is the OT term from exact optimal transport? Two measurements of one question.

    python -m benchmarks.ot_gap settings --tokenizer outputs/ot-check-relaxed/final --warm 20 --batches 20 \
        --setting default \
        --setting eps0.05 epsilon=0.05 \
        --setting 100it iterations=100
    python -m benchmarks.ot_gap population --tokenizer outputs/tokenizer-mnist/final [--pools 2048 8192]

`settings`: per training step. Each step solves one problem (K codes x 32 images x 64 latents)
warm-started from the previous step's code potential; this replays that on consecutive training
batches with the tokenizer's codebook held fixed. Every setting (the tokenizer's own
`model.transport` with key=value overrides of its fields: epsilon, iterations, code_relaxation,
dual_steps, dual_candidates) carries its own potential from the tokenizer's saved one through
`--warm` batches, then is measured on `--batches` more: the rounded plan's objective against the
certified lower bound of `semi_relaxed_transport` (the gap `ot_check_every` logs in training), the
L1 distance of its code marginal from the optimal one, and the solve time relative to the first
setting, all settings interleaved batch by batch so machine noise hits them alike. Writes
OUT/results.json and OUT/results.md.

`population`: over the data. Checks the plan of a trained tokenizer (its carried code potential
g: each latent goes to its Laguerre cell argmin_k C - g_k) against POT's exact OT on pools of real
training latents, and its cell masses against pi on the whole training split. A mini-batch's exact
OT forces every code to take exactly its share pi_k of *that batch* (4 of the 2048 latents of a
batch of 32 at K = 512), which sends latents to far codes when the batch's own counts fluctuate:
the exact cost of a pool falls as the pool grows, towards the population's W. So the gap to
exact OT is reported per pool size, and the marginals on the whole split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import device_name, mnist_batch
from infra.config import from_dict, merge, parse_overrides
from infra.data import DataConfig, load_images, to_unit_range
from tokenizer.model import VQWAE, load_tokenizer
from tokenizer.quantizers import WassersteinQuantizer, squared_distances
from tokenizer.transport import exact_transport, sinkhorn_transport
from tokenizer.transport_check import check_against_exact, semi_relaxed_transport
from tokenizer.transport_config import TransportConfig

# The solver's own settings; solver, scope and the rest shape the problem, not its solve.
KEYS = ("epsilon", "iterations", "code_relaxation", "dual_steps", "dual_candidates")


def cost_matrices(model: VQWAE, images: torch.Tensor, scope: str) -> torch.Tensor:
    """The OT problem a training step of `model` poses for `images`: (1, K, B*h*w) global, or
    (h*w, K, B) per position, as the same strided views WassersteinQuantizer.transport passes."""
    with torch.no_grad():
        latents = model.encoder(images)  # (B, D, h, w)
        grid = latents.permute(0, 2, 3, 1).reshape(latents.shape[0], -1, latents.shape[1])  # (B, h*w, D)
        distances = squared_distances(grid, model.quantizer.codebook)  # (B, h*w, K)
    if scope == "position":
        return distances.permute(1, 2, 0)  # (h*w, K, B)
    return distances.reshape(-1, distances.shape[-1]).t()[None]  # (1, K, B*h*w)


def parse_setting(spec: list[str], base: TransportConfig) -> tuple[str, TransportConfig]:
    """NAME [key=value ...] -> (NAME, the tokenizer's transport config with those fields changed),
    with one clear error for a bad key or value."""
    name, items = spec[0], spec[1:]
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"--setting {name}: {item!r} is not key=value with a key in {list(KEYS)}")
    try:
        return name, from_dict(TransportConfig, merge(asdict(base), parse_overrides(items)), "model.transport.")
    except ValueError as error:
        raise ValueError(f"--setting {name}: {error}") from None


def settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The `settings` measurement (see the module docstring)."""
    model = load_tokenizer(args.tokenizer).eval()
    quantizer = model.quantizer
    if not isinstance(quantizer, WassersteinQuantizer) or quantizer.transport_config.solver != "sinkhorn":
        parser.error(f"{args.tokenizer} does not train its codebook with Sinkhorn; nothing to measure")
    try:
        options = dict(parse_setting(spec, quantizer.transport_config) for spec in args.setting)
    except ValueError as error:
        parser.error(str(error))
    for name, option in options.items():
        if option.code_relaxation <= 0:
            parser.error(f"--setting {name}: needs a semi-relaxed solve (code_relaxation > 0)")
    weights = quantizer.code_weights().detach()
    potentials = {name: quantizer.code_potential.clone() for name in options}
    rows = {name: dict(gap=[], marginal=[], floor=[], gap_floor=[], width=[], seconds=[]) for name in options}

    for index in range(args.warm + args.batches):
        cost = cost_matrices(model, mnist_batch(args.batch_size, offset=index * args.batch_size), option_scope(options))
        exact = {}  # one exact solve per tau (settings that share code_relaxation share it)
        for name, option in options.items():
            start = time.perf_counter()
            result = sinkhorn_transport(cost, weights, option, potentials[name], dense_plan=False)
            seconds = time.perf_counter() - start
            potentials[name] = result.code_potential
            if index < args.warm:
                continue
            key = float(result.code_relaxation[0])
            if key not in exact:
                exact[key] = semi_relaxed_transport(cost, weights, result.code_relaxation)
            check = check_against_exact(cost, weights, result, exact=exact[key])
            for field, value in zip(rows[name], (check.relative_gap, check.marginal_error, check.marginal_floor,
                                                  check.objective_floor, check.exact_bound_gap, seconds)):  # fmt: skip
                rows[name][field].append(value)
        if index >= args.warm:
            print(f"batch {index - args.warm + 1}/{args.batches}: "
                  + ", ".join(f"{n} {rows[n]['gap'][-1]:+.2%}" for n in options), flush=True)  # fmt: skip

    first = next(iter(options))
    reference = statistics.median(rows[first]["seconds"])
    summary = {
        name: dict(
            options={key: getattr(options[name], key) for key in KEYS},
            gap_mean=float(np.mean(r["gap"])),
            gap_max=float(np.max(r["gap"])),
            marginal_mean=float(np.mean(r["marginal"])),
            floor_mean=float(np.mean(r["floor"])),
            gap_floor_mean=float(np.mean(r["gap_floor"])),
            bound_width_max=float(np.max(r["width"])),
            solve_ms=1000 * statistics.median(r["seconds"]),
            time_ratio=statistics.median(r["seconds"]) / reference,
        )  # fmt: skip
        for name, r in rows.items()
    }
    report = dict(tokenizer=args.tokenizer, warm=args.warm, batches=args.batches, device=device_name(),
                  summary=summary, runs=rows)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"{args.tokenizer}, {args.batches} batches after {args.warm} warm ones, {device_name()}",
        "",
        "| setting | eps | iterations | dual steps | candidates | objective gap, mean (max) | marginal L1 | solve ms "
        "| time vs first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        o = s["options"]
        lines.append(
            f"| {name} | {o['epsilon']} | {o['iterations']} | {o['dual_steps']} | {o['dual_candidates'] or 'all'} | "
            f"{s['gap_mean']:+.2%} ({s['gap_max']:+.2%}) | "
            f"{s['marginal_mean']:.3f} | {s['solve_ms']:.1f} | {s['time_ratio']:.2f}x |"
        )
    s = next(iter(summary.values()))
    lines.append(f"| rounding the exact potential (one-hot floor) | - | - | - | - | {s['gap_floor_mean']:+.2%} | "
                 f"{s['floor_mean']:.3f} | - | - |")  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


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


def population(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The `population` measurement (see the module docstring)."""
    model = load_tokenizer(args.tokenizer).eval()
    quantizer = model.quantizer
    if quantizer.code_potential.shape[0] != 1:
        parser.error("the population check is for the global OT scope (one potential over all latents)")
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

    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    per_step = commands.add_parser("settings", help="Sinkhorn settings against the exact optimum of each step")
    per_step.add_argument("--tokenizer", required=True, help="a trained tokenizer folder (semi-relaxed Sinkhorn)")
    per_step.add_argument("--setting", nargs="+", action="append", metavar="NAME [key=value]", required=True)
    per_step.add_argument("--warm", type=int, default=20, help="batches each setting runs before it is measured")
    per_step.add_argument("--batches", type=int, default=20, help="batches measured")
    per_step.add_argument("--batch-size", type=int, default=32)
    per_step.add_argument("--out", default="outputs/ot-gap")
    pools = commands.add_parser("population", help="the trained plan against exact OT on pools of real latents")
    pools.add_argument("--tokenizer", required=True)
    pools.add_argument("--pools", type=int, nargs="+", default=[2048, 8192], help="latents per exact OT problem")
    pools.add_argument("--repeats", type=int, default=3, help="pools of each size (disjoint)")
    pools.add_argument("--images", type=int, default=None, help="training images for the marginals (default: all)")
    args = parser.parse_args(argv)
    if args.command == "population":
        return population(args, pools)
    if args.batches < 1 or args.warm < 0 or args.batch_size < 1:
        per_step.error("--batches and --batch-size must be >= 1 and --warm >= 0")
    return settings(args, per_step)


def option_scope(options: dict[str, TransportConfig]) -> str:
    """The scope every setting shares (the tokenizer's: the problem, not the solve)."""
    return next(iter(options.values())).scope


if __name__ == "__main__":
    main()
