"""The training solver in chunks of latents, for problems whose (latents x codes) matrices would
pass `model.transport.memory_budget_mb` (a 32x32 grid of 32 images at K = 16,384 is 2.1 GB a copy).

The budget bounds the (latents x codes) fp32 matrices the OT term holds at once, WORKING_COPIES of
them: the dense solver keeps the costs and one work buffer (its absorbed plan, then its cell
scores); in chunks, a chunk's cost rows and at most one matrix derived from them (every other step
works on the rows in place). So the whole problem is solved densely when two copies of its matrix
fit, and otherwise in chunks of latents of half the budget each.

The same computation as `sinkhorn_transport(..., dense_plan=False)`, each pass over the latents a
chunk at a time: costs come from `CostRows`, recomputed from the latents and codebook when the
quantizer gives them (never built whole), and every sum over latents (the code sums of a plan, the
cells' masses) runs across chunks while everything per latent (its softmax over codes, its nearest
candidates) stays inside one. The OT term then holds O(chunk x K), not O(N x K). The price is time:
the dense solver keeps one absorbed plan for all its Sinkhorn iterations, this one rebuilds each
chunk's plan every iteration. Uniform latent weights; no dense plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .transport import TransportResult, _bounded, _finish_potential, batched_product, candidate_cells, dual_ascent
from .transport_config import TransportConfig

BYTES = 4  # fp32
WORKING_COPIES = 2  # (latents x codes) matrices the OT term holds at once (see above)


def squared_distances(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_i - c_k||^2 for latents (..., N, D) and codebook (K, D) -> (..., N, K), in fp32. Where no
    gradient is asked of either input, the result is the only (N, K) matrix built: the same
    operations, in place, so the same values bit for bit."""
    latents, codebook = latents.float(), codebook.float()
    if torch.is_grad_enabled() and (latents.requires_grad or codebook.requires_grad):
        return (latents.pow(2).sum(-1, keepdim=True) - 2.0 * latents @ codebook.t() + codebook.pow(2).sum(-1)).clamp_min(
            0.0
        )
    distances = 2.0 * latents @ codebook.t()  # (2 z) @ c^T, as above
    torch.sub(latents.pow(2).sum(-1, keepdim=True), distances, out=distances)
    return distances.add_(codebook.pow(2).sum(-1)).clamp_min_(0.0)


@dataclass
class CostRows:
    """A (P, N, K) cost matrix read a chunk of latents at a time: rows(start, stop) -> (P, stop -
    start, K) fp32, a tensor of its own (the solver overwrites it). `of_matrix` wraps a built (P, K,
    N) matrix (the solvers' layout)."""

    rows: Callable[[int, int], torch.Tensor]
    num_problems: int
    num_latents: int
    num_codes: int

    @classmethod
    def of_matrix(cls, cost_matrix: torch.Tensor) -> CostRows:
        num_problems, num_codes, num_latents = cost_matrix.shape
        return cls(lambda start, stop: cost_matrix[:, :, start:stop].transpose(1, 2).float().clone(), num_problems,
                   num_latents, num_codes)  # fmt: skip

    @classmethod
    def of_latents(cls, latents: torch.Tensor, codebook: torch.Tensor) -> CostRows:
        """||z_n - c_k||^2 for latents (P, N, D) and a codebook (K, D), computed a chunk at a time."""
        num_problems, num_latents, _ = latents.shape
        return cls(lambda start, stop: squared_distances(latents[:, start:stop], codebook), num_problems,
                   num_latents, codebook.shape[0])  # fmt: skip


def chunk_rows(num_problems: int, num_codes: int, memory_budget_mb: float) -> int:
    """How many latents a chunk holds: WORKING_COPIES (P, rows, K) fp32 matrices within
    `memory_budget_mb` (at least one latent)."""
    return max(1, int(memory_budget_mb * 2**20) // (WORKING_COPIES * num_problems * num_codes * BYTES))


def fits_budget(num_problems: int, num_latents: int, num_codes: int, memory_budget_mb: float) -> bool:
    """True when WORKING_COPIES of the whole (P, N, K) fp32 matrix fit the budget (the dense solver's case)."""
    return WORKING_COPIES * num_problems * num_latents * num_codes * BYTES <= memory_budget_mb * 2**20


def over_budget(setting: str, num_latents: int, num_codes: int, memory_budget_mb: float, remedy: str) -> str:
    """The one line that refuses a setting needing the whole (latents x codes) matrix past the budget."""
    return (f"{setting} needs the whole cost matrix: {num_latents} latents x {num_codes} codes pass "
            f"model.transport.memory_budget_mb={memory_budget_mb:g}; {remedy} or raise the budget")  # fmt: skip


def spans(num_latents: int, rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each chunk of `rows` latents."""
    for start in range(0, num_latents, rows):
        yield start, min(start + rows, num_latents)


def chunked_sinkhorn_transport(
    costs: CostRows, code_weights: torch.Tensor, config: TransportConfig, code_potential: torch.Tensor | None = None
) -> TransportResult:
    """`sinkhorn_transport(cost_matrix, code_weights, config, code_potential, dense_plan=False)` for
    a cost matrix given as `CostRows`, in chunks of `chunk_rows(P, K, config.memory_budget_mb)`
    latents. Equal to it up to the order of float sums (tests/tokenizer/test_transport_scale.py)."""
    config = config.for_codebook(costs.num_codes)
    relaxation, num_codes, num_latents = config.code_relaxation, costs.num_codes, costs.num_latents
    chunks = list(spans(num_latents, chunk_rows(costs.num_problems, num_codes, config.memory_budget_mb)))
    with torch.no_grad(), torch.autocast(code_weights.device.type, enabled=False):
        code_mass = code_weights.detach().float().clamp_min(1e-12)
        code_mass = (code_mass / code_mass.sum(-1, keepdim=True)).unsqueeze(1)  # (P, 1, K)
        latent_mass = torch.full((costs.num_problems, num_latents, 1), 1.0 / num_latents, device=code_mass.device)
        scale = torch.cat([costs.rows(*span).amin(dim=-1) for span in chunks], dim=1).mean(dim=-1)  # (P,)
        eps = (config.epsilon * scale).clamp_min(1e-8)[:, None, None]
        tau = relaxation * scale.clamp_min(1e-8)[:, None, None]
        start = torch.zeros_like(code_mass) if code_potential is None else code_potential.detach().float()
        start = _bounded(start.reshape(code_mass.shape), code_mass, tau, relaxation)
        offset = start + eps * code_mass.log()

        def absorbed_plan(start_row: int, stop_row: int) -> torch.Tensor:  # as _sinkhorn's, one chunk
            scores = costs.rows(start_row, stop_row)
            scores = torch.sub(offset, scores, out=scores).mul_(1.0 / eps)  # in the rows' own memory
            scores = scores.sub_(scores.amax(-1, keepdim=True)).clamp_(min=-40.0).exp_()
            return scores.mul_(latent_mass[:, start_row:stop_row] / scores.sum(-1, keepdim=True))

        # Kernel-form Sinkhorn around the warm start, one pass a iteration: each chunk's plan is
        # rebuilt, rescaled by the last code scaling (its latent update) and summed over its codes.
        latent_scaling = torch.ones_like(latent_mass)
        shrink = ((tau / (tau + eps) - 1.0) * start / eps).exp() if relaxation > 0 else None
        code_scaling = None
        for _ in range(config.iterations):
            code_sums = torch.zeros_like(code_mass)
            for first, last in chunks:
                plan = absorbed_plan(first, last)
                if code_scaling is not None:
                    latent_sums = batched_product(plan, code_scaling.transpose(1, 2))
                    latent_scaling[:, first:last] = latent_mass[:, first:last] / latent_sums.clamp_min(1e-30)
                code_sums += batched_product(latent_scaling[:, first:last].transpose(1, 2), plan)
                del plan  # before the next chunk's is built
            code_scaling = code_mass / code_sums.clamp_min(1e-30)
            if relaxation > 0:
                code_scaling = code_scaling.pow(tau / (tau + eps)).mul_(shrink)
        potential = start + eps * code_scaling.log()

        # Cells and dual steps: candidates found chunk by chunk, then (N, c) work as the dense solver.
        def cell_of_rows(rows: torch.Tensor, potential: torch.Tensor) -> torch.Tensor:
            return torch.sub(rows, potential, out=rows).min(-1, keepdim=True).indices

        def cells_of(potential: torch.Tensor) -> torch.Tensor:
            return torch.cat([cell_of_rows(costs.rows(*span), potential) for span in chunks], 1)

        if config.dual_steps and 0 < config.dual_candidates < num_codes:
            found, found_cost = [], []
            for first, last in chunks:  # the rows and their scores: the two working copies
                rows = costs.rows(first, last)
                found.append((rows - potential).topk(config.dual_candidates, dim=-1, largest=False).indices)
                found_cost.append(rows.gather(-1, found[-1]))
                del rows
            candidates, candidate_cost = torch.cat(found, dim=1), torch.cat(found_cost, dim=1)
            cells_of = candidate_cells(candidates, candidate_cost, num_codes)
        potential, cells, assigned_mass = dual_ascent(
            potential, cells_of, code_mass, latent_mass, tau, relaxation, config.dual_steps, scale
        )
        error = (assigned_mass - code_mass).abs().sum(-1).max()
        cell_cost = torch.cat([costs.rows(a, b).gather(-1, cells[:, a:b]) for a, b in chunks], dim=1)
        assigned_cost = (cell_cost * latent_mass).sum(dim=(-2, -1))
    relaxation_strength = tau.reshape(-1) if relaxation > 0 else None
    potential = _finish_potential(potential, relaxation)
    return TransportResult(
        assigned_cost, None, potential, error, config.iterations, cells.squeeze(-1), relaxation_strength
    )
