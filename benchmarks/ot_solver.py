"""OT solve on the training shapes: exact POT network simplex vs our batched Sinkhorn.

    python benchmarks/ot_solver.py [--tokenizer outputs/tokenizer-mnist/final]

Problems are built from real encoder latents of MNIST batches (32 images -> 2048 latents of
dim 64) and the codebook (K = 512) of a trained tokenizer when given, else of a fresh one
initialised from encoder outputs. Per position: 64 problems of 512 codes x 32 latents; global:
one problem of 512 x 2048. Sinkhorn runs warm (the code potential of the previous batch), as in
training. Prints a markdown table: time per solve, speed-up over exact, cost gap to exact.
"""

from __future__ import annotations

import argparse

import torch
from common import device_name, mnist_batch, time_side_by_side

from tokenizer import VQWAE, VQWAEConfig
from tokenizer.quantizers import squared_distances
from tokenizer.transport import exact_transport, sinkhorn_transport


def cost_matrices(model: VQWAE, images: torch.Tensor, scope: str) -> torch.Tensor:
    with torch.no_grad():
        latents = model.encoder(images)  # (B, D, 8, 8)
        grid = latents.permute(0, 2, 3, 1).reshape(latents.shape[0], -1, latents.shape[1])  # (B, 64, D)
        distances = squared_distances(grid, model.quantizer.codebook)  # (B, 64, K)
    # The same (strided) views of the distances as WassersteinQuantizer.transport passes.
    if scope == "position":
        return distances.permute(1, 2, 0)  # (64, K, B)
    return distances.reshape(-1, distances.shape[-1]).t()[None]  # (1, K, B*64)


SETTINGS = {
    "default (eps 0.1 x nearest, <=50 it)": dict(epsilon=0.1, epsilon_scale="nearest", max_iterations=50),
    "eps 0.1 x nearest, <=30 it": dict(epsilon=0.1, epsilon_scale="nearest", max_iterations=30),
    "eps 0.02 x mean, <=25 it": dict(epsilon=0.02, epsilon_scale="mean", max_iterations=25),
    "eps 0.01 x mean, <=60 it": dict(epsilon=0.01, epsilon_scale="mean", max_iterations=60),
}


def benchmark(cost, previous, name: str, settings: dict, rounds: int, device: str) -> str:
    """One table row: exact vs warm-started Sinkhorn on `cost`, warmed on `previous` as in training."""
    weights = torch.full(cost.shape[:2], 1.0 / cost.shape[1], device=device)
    options = dict(tolerance=1e-3, check_every=settings["max_iterations"], **settings)  # one block, as in training
    # Training carries the potential over many steps: start from a converged one (a cold start
    # annealed in blocks of 10 iterations, run to the tolerance), then a few steps of this setting.
    warm = sinkhorn_transport(
        previous, weights, **{**options, "max_iterations": 3000, "check_every": 10}
    ).code_potential
    for _ in range(5):
        warm = sinkhorn_transport(cost, weights, code_potential=warm, **options).code_potential

    def solve_exact():
        return exact_transport(cost, weights)

    def solve_sinkhorn():
        return sinkhorn_transport(cost, weights, code_potential=warm, plan_type="assignment", **options)

    timings = time_side_by_side({"exact": solve_exact, "sinkhorn": solve_sinkhorn}, rounds=rounds, device=device)
    exact = solve_exact().cost.sum().item()
    entropic = sinkhorn_transport(cost, weights, code_potential=warm, **options)
    assigned = solve_sinkhorn()

    def gap(value: float) -> str:
        return f"{100 * (value - exact) / exact:+.2f}%"

    shape = " x ".join(str(size) for size in cost.shape)
    return (
        f"| {shape} | {name} | {1e3 * timings['exact']:.1f} | {1e3 * timings['sinkhorn']:.2f} | "
        f"{timings['exact'] / timings['sinkhorn']:.1f}x | {assigned.iterations} | {gap(entropic.cost.sum().item())} | "
        f"{gap(assigned.cost.sum().item())} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = VQWAE.from_pretrained(args.tokenizer) if args.tokenizer else VQWAE(VQWAEConfig())
    model.train()
    model(mnist_batch(32, 0))  # encoder-output codebook initialisation when fresh
    model.eval().to(device)
    print(f"device: {device_name()}; tokenizer: {args.tokenizer or 'fresh, encoder-initialised'}\n")
    print(
        "| problems (P x K x N) | Sinkhorn setting | exact ms | Sinkhorn ms | speed-up | iterations | cost gap, entropic plan | cost gap, assignment plan |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for scope in ("position", "global"):
        previous = cost_matrices(model, mnist_batch(32, 32).to(device), scope)
        cost = cost_matrices(model, mnist_batch(32, 64).to(device), scope)
        for name, settings in SETTINGS.items():
            print(benchmark(cost, previous, name, settings, args.rounds, device), flush=True)


if __name__ == "__main__":
    main()
