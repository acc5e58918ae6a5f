"""The semi-relaxed OT term of a trained tokenizer against the exact optimum of its own problem,
per Sinkhorn setting, in the steady state of training.

    python benchmarks/ot_gap.py --tokenizer outputs/ot-check-relaxed/final --warm 20 --batches 20 \
        --setting default \
        --setting eps0.05 epsilon=0.05 \
        --setting 100it iterations=100

Each step of training solves one global problem (K codes x 32 images x 64 latents) warm-started
from the previous step's code potential; this replays that on consecutive training batches with
the tokenizer's codebook held fixed. Every setting (the tokenizer's own `model.transport` with
key=value overrides of its fields: epsilon, iterations, dual_steps, ...) carries its own potential from the
tokenizer's saved one through `--warm` batches, then is measured on `--batches` more: the rounded
plan's objective against the certified lower bound of `semi_relaxed_transport` (the gap
`ot_check_every` logs in training), the L1 distance of its code marginal from the optimal one,
and the solve time relative to the first setting, all settings interleaved batch by batch so
machine noise hits them alike. Writes OUT/results.json and OUT/results.md.
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
from tokenizer.model import VQWAE, load_tokenizer
from tokenizer.quantizers import WassersteinQuantizer, squared_distances
from tokenizer.transport import TransportConfig, sinkhorn_transport
from tokenizer.transport_check import check_against_exact, semi_relaxed_transport

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a trained tokenizer folder (semi-relaxed Sinkhorn)")
    parser.add_argument("--setting", nargs="+", action="append", metavar="NAME [key=value]", required=True)
    parser.add_argument("--warm", type=int, default=20, help="batches each setting runs before it is measured")
    parser.add_argument("--batches", type=int, default=20, help="batches measured")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="outputs/ot-gap")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.warm < 0 or args.batch_size < 1:
        parser.error("--batches and --batch-size must be >= 1 and --warm >= 0")
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


def option_scope(options: dict[str, TransportConfig]) -> str:
    """The scope every setting shares (the tokenizer's: the problem, not the solve)."""
    return next(iter(options.values())).scope


if __name__ == "__main__":
    main()
