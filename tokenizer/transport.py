"""Optimal transport between code weights and a batch of latents. Pure tensors in and out.

Every problem p transports the code distribution `code_weights[p]` (K codes) onto the latent
distribution (N latents, uniform unless given) at cost `cost_matrix[p]` (K, N). Both solvers
return the transport cost <plan, cost> as a differentiable scalar per problem with the gradient
semantics of POT's `emd2`: d cost / d cost_matrix = plan, d cost / d code_weights = the code-side
dual potential (centred for the balanced problems; see `sinkhorn_transport` for the relaxed one). Nothing here knows about models or training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TransportResult:
    """cost (P,) differentiable (detached when the dense plan was not built); plan (P, K, N),
    code_potential (P, K) (centred, except for a semi-relaxed solve) and marginal_error detached.
    cells (P, N): for the assignment plan, the code each latent goes to wholly (its Laguerre cell);
    None for other plans. code_relaxation (P,): tau, the KL strength (in cost units) of a
    semi-relaxed solve; None when the code marginal was held exactly."""

    cost: torch.Tensor
    plan: torch.Tensor | None
    code_potential: torch.Tensor
    marginal_error: torch.Tensor  # 0-dim, on the problem's device: reading it is the caller's sync
    iterations: int
    cells: torch.Tensor | None = None
    code_relaxation: torch.Tensor | None = None


class _TransportCost(torch.autograd.Function):
    """<plan, cost_matrix> per problem with the envelope-theorem gradients of optimal transport."""

    @staticmethod
    def forward(ctx, cost_matrix, code_weights, plan, code_potential):
        ctx.save_for_backward(plan, code_potential)
        return (plan * cost_matrix).sum(dim=(-2, -1))

    @staticmethod
    def backward(ctx, grad_cost):
        plan, code_potential = ctx.saved_tensors
        grad_matrix = grad_cost[:, None, None] * plan
        grad_weights = grad_cost[:, None] * code_potential
        return grad_matrix, grad_weights, None, None


def _uniform(num_problems: int, size: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((num_problems, size), 1.0 / size, dtype=like.dtype, device=like.device)


def check_shapes(cost_matrix: torch.Tensor, code_weights: torch.Tensor) -> None:
    if cost_matrix.dim() != 3 or code_weights.shape != cost_matrix.shape[:2]:
        raise ValueError(
            f"expected cost_matrix (P, K, N) and code_weights (P, K); got {tuple(cost_matrix.shape)} "
            f"and {tuple(code_weights.shape)}"
        )


def exact_transport(
    cost_matrix: torch.Tensor,
    code_weights: torch.Tensor,
    latent_weights: torch.Tensor | None = None,
    max_iterations: int = 500_000,
) -> TransportResult:
    """Exact OT with POT's network simplex (`ot.emd2`), one problem at a time on the CPU.

    cost_matrix: (P, K, N); code_weights: (P, K) summing to 1; latent_weights: (P, N) or uniform.
    """
    import ot  # POT, needed by the exact solver only

    check_shapes(cost_matrix, code_weights)
    num_problems, num_codes, num_latents = cost_matrix.shape
    if latent_weights is None:
        latent_weights = _uniform(num_problems, num_latents, cost_matrix)
    costs64 = cost_matrix.detach().to("cpu", torch.float64).numpy()
    codes64 = code_weights.detach().to("cpu", torch.float64).numpy()
    latents64 = latent_weights.detach().to("cpu", torch.float64).numpy()
    plans, potentials = [], []
    for index in range(num_problems):
        # emd needs both marginals to sum to the same mass in float64.
        source = codes64[index] / codes64[index].sum()
        target = latents64[index] / latents64[index].sum()
        _, log = ot.emd2(source, target, costs64[index], numItermax=max_iterations, log=True, return_matrix=True)
        plans.append(log["G"])
        potentials.append(log["u"] - np.mean(log["u"]))  # what emd2 uses as d cost / d a
    plan = torch.from_numpy(np.stack(plans)).to(cost_matrix.device, torch.float32)
    potential = torch.from_numpy(np.stack(potentials)).to(cost_matrix.device, torch.float32)
    error = (plan.sum(-1) - code_weights.detach().float()).abs().sum(-1).max()
    cost = _TransportCost.apply(cost_matrix.float(), code_weights.float(), plan, potential)
    return TransportResult(cost, plan, potential, error, 0)


def sinkhorn_transport(
    cost_matrix: torch.Tensor,
    code_weights: torch.Tensor,
    latent_weights: torch.Tensor | None = None,
    epsilon: float = 0.05,
    epsilon_scale: str = "nearest",
    max_iterations: int = 50,
    tolerance: float = 1e-3,
    check_every: int = 10,
    code_potential: torch.Tensor | None = None,
    anneal_factor: float = 0.5,
    plan_type: str = "entropic",
    dense_plan: bool = True,
    step_bound: float = 0.0,
    code_relaxation: float = 0.0,
    dual_steps: int = 0,
    dual_step_size: float = 0.01,
    dual_candidates: int = 0,
) -> TransportResult:
    """Batched entropic OT (Sinkhorn) for all P problems at once, on the tensors' own device, fp32.

    Potentials live in the log domain; between absorptions the iterations run in kernel form
    (two batched matrix-vector products each), which is several times cheaper than logsumexp.
    Every `check_every` iterations the scalings are absorbed into the potentials (so nothing
    overflows) and the code-marginal L1 error is checked against `tolerance`. A warm start always
    runs its first block unchecked and checks only between blocks, so with check_every >=
    max_iterations it is a fixed budget that never synchronises with the host (a GPU step runs
    ahead of Python); cold starts check before every block and sync there.

    epsilon: regularisation relative to the cost scale, per problem: `nearest` = the mean over
    latents of their nearest-code cost (what decides the plan once codes sit among the latents),
    `mean` = the mean cost. code_potential: (P, K) warm start, e.g. the previous step's; without
    one, epsilon starts at the mean cost and shrinks by `anneal_factor` per block to its target.
    plan_type: `entropic` returns the Sinkhorn plan; `assignment` rounds it through the code
    potential g: each latent goes wholly to argmin_k (C_ki - g_k), its Laguerre cell, which is the
    exact OT plan once g is the exact dual. Entropic plans spread every code over many latents
    and pull codes together; the assignment keeps the sharp plan of exact OT at Sinkhorn's price.
    Returns the cost of the returned plan, <plan, cost_matrix>. dense_plan=False (assignment only)
    skips building the (P, K, N) plan: `cells` says everything, and the caller differentiates the
    cost of the assigned pairs itself (the quantizer does: no dense backward through C).
    step_bound > 0 bounds the code scalings to [e^-b, e^b], so one block moves a code's potential
    by at most b x eps. Unbounded, a code with no mass in the batch is raised by up to
    eps x log(pi_k / 1e-30), about 62 eps, while a full code can fall by at most eps x log(1 / pi_k)
    (6 eps at K = 512): warm-started across steps, codes that alternate between empty and full
    drift upwards (BENCHMARKS.md section 0, the 10-epoch run).
    code_relaxation rho > 0 solves the semi-relaxed problem instead: the latent marginal stays
    exact, the code marginal m is held to the code weights by rho x scale x KL(m || pi) rather than
    exactly (Chizat et al., 2018: the code update u = (pi / K v)^(tau / (tau + eps)), tau = rho x
    scale). This is the paper's own trade, W(latents, sum_k pi_k c_k) with pi kept near uniform by
    a KL term, solved inside the step. Its potential has a unique level and stays bounded (at the
    optimum g_k = -tau log(m_k / pi_k)), so warm starts cannot drift; it is returned uncentred.
    dual_steps > 0 (assignment plans) then refines g for the problem without entropy, whose
    Laguerre cells the plan is: that many subgradient-ascent steps on the unregularised dual
    D(g) = sum_n b_n min_k (C_kn - g_k) + (pi . g, balanced; tau sum_k pi_k (1 - e^(-g_k / tau)),
    semi-relaxed), g_k += dual_step_size x scale x K x (target_k - m_k) / sqrt(t + 1), with m the
    cells' masses and target = pi (balanced) or pi e^(-g / tau). Rounding the entropic potential
    costs a few percent of objective (eps blurs the cell boundaries); each step is one argmin.
    dual_candidates c > 0 makes those steps cheap: each latent keeps the c codes nearest to it under
    the Sinkhorn potential (one top-c pass) and the steps choose its cell among them, (N, c) work a
    step instead of (N, K). The potential moves little in a few steps, so the cells rarely leave
    the candidates; the plan stays feasible either way (every latent wholly in one code).
    """
    check_shapes(cost_matrix, code_weights)
    if epsilon_scale not in ("nearest", "mean"):
        raise ValueError(f"epsilon_scale={epsilon_scale!r} is not allowed; choose one of ['nearest', 'mean']")
    if plan_type not in ("entropic", "assignment"):
        raise ValueError(f"plan_type={plan_type!r} is not allowed; choose one of ['entropic', 'assignment']")
    if not dense_plan and plan_type != "assignment":
        raise ValueError("dense_plan=False needs plan_type='assignment' (an entropic plan is dense)")
    if dual_steps < 0 or (dual_steps > 0 and plan_type != "assignment"):
        raise ValueError(f"dual_steps={dual_steps} needs to be >= 0, and > 0 only with plan_type='assignment'")
    if dual_candidates < 0:
        raise ValueError(f"dual_candidates={dual_candidates} must be >= 0 (0: every code is a candidate)")
    num_problems, num_codes, num_latents = cost_matrix.shape
    with torch.no_grad(), torch.autocast(cost_matrix.device.type, enabled=False):
        # Work latent-major, (P, N, K): the layout nearest-code distances come in (a free view when
        # cost_matrix is a transposed (P, N, K) tensor), so every reduction over codes is contiguous.
        cost = cost_matrix.detach().float().transpose(1, 2).contiguous()  # (P, N, K)
        code_mass = code_weights.detach().float().clamp_min(1e-12)
        code_mass = (code_mass / code_mass.sum(-1, keepdim=True)).unsqueeze(1)  # (P, 1, K)
        if latent_weights is None:
            latent_mass = _uniform(num_problems, num_latents, cost).unsqueeze(-1)  # (P, N, 1)
        else:
            latent_mass = latent_weights.detach().float().unsqueeze(-1)
            latent_mass = latent_mass / latent_mass.sum(1, keepdim=True)
        if epsilon_scale == "nearest":
            scale = cost.amin(dim=-1).mean(dim=-1)
        else:
            scale = cost.mean(dim=(-2, -1))
        eps_target = (epsilon * scale).clamp_min(1e-8)[:, None, None]  # (P, 1, 1)
        tau = code_relaxation * scale.clamp_min(1e-8)[:, None, None]  # (P, 1, 1); 0 = balanced
        # Cold starts anneal epsilon from the mean cost down to the target (epsilon scaling):
        # small-epsilon Sinkhorn from zero potentials needs thousands of iterations.
        if code_potential is None:
            eps = torch.maximum(eps_target, cost.mean(dim=(-2, -1), keepdim=True))
        else:
            eps = eps_target
        log_code_mass = code_mass.log()

        if code_potential is None:
            potential = torch.zeros_like(code_mass)  # g, (P, 1, K)
        else:
            potential = code_potential.detach().float().reshape(num_problems, 1, num_codes).clone()

        # One (P, N, K) work buffer holds every absorbed plan in turn, then the cell scores: fresh
        # 4 MB allocations page-fault on every call and cost more than the arithmetic on CPU.
        work = torch.empty_like(cost)

        def absorbed_plan(potential: torch.Tensor) -> torch.Tensor:
            # The latent potential f is the exact c-transform of g, so rows sum to b exactly.
            # A hand-rolled, in-place softmax over codes: several times faster on CPU than
            # torch.softmax or a division by the broadcast eps (measured, 2048 x 512).
            # Scores are floored at -40 (relative weight 4e-18, nothing in fp32): far below that,
            # exp takes a slow path and yields subnormals, which slow every later product ~10x.
            scores = torch.sub(potential + eps * log_code_mass, cost, out=work).mul_(1.0 / eps)  # (P, N, K)
            scores = scores.sub_(scores.amax(-1, keepdim=True)).clamp_(min=-40.0).exp_()
            return scores.mul_(latent_mass / scores.sum(-1, keepdim=True))

        def code_error(plan: torch.Tensor) -> torch.Tensor:
            return (plan.sum(1, keepdim=True) - code_mass).abs().sum(-1).max()

        def unfinished() -> bool:  # a host sync: the only one in the solver
            return bool(error > tolerance) or bool((eps > eps_target).any())

        plan = absorbed_plan(potential)
        error, iterations = code_error(plan), 0
        warm = code_potential is not None
        while iterations < max_iterations and ((warm and iterations == 0) or unfinished()):
            # Kernel-form scaling iterations around the current potentials: u rescales codes, v
            # latents; both stay near 1, so fp32 is safe. Each is one batched matrix-vector product.
            latent_scaling = torch.ones_like(latent_mass)  # (P, N, 1)
            if code_relaxation > 0:
                # Relaxed code update: the new potential is fi x (g + eps log(pi / m)), fi = tau / (tau
                # + eps), with g this block's absorbed potential and m the code sums of its plan; as a
                # scaling of that plan, u = (pi / m)^fi x exp((fi - 1) g / eps).
                exponent = tau / (tau + eps)
                shrink = ((exponent - 1.0) * potential / eps).exp()  # (P, 1, K)
            for _ in range(min(check_every, max_iterations - iterations)):
                code_sums = torch.bmm(latent_scaling.transpose(1, 2), plan)  # (P, 1, K)
                code_scaling = code_mass / code_sums.clamp_min(1e-30)
                if code_relaxation > 0:
                    code_scaling = code_scaling.pow(exponent).mul_(shrink)
                if step_bound > 0:
                    code_scaling = code_scaling.clamp(math.exp(-step_bound), math.exp(step_bound))
                latent_sums = torch.bmm(plan, code_scaling.transpose(1, 2))  # (P, N, 1)
                latent_scaling = latent_mass / latent_sums.clamp_min(1e-30)
                iterations += 1
            # Absorb u into g; the c-transform then plays the part of the last v update.
            potential = potential + eps * code_scaling.log()
            eps = torch.maximum(eps_target, eps * anneal_factor)
            plan = absorbed_plan(potential)
            error = code_error(plan)
        cells = None
        if plan_type == "assignment":

            def cells_of(potential: torch.Tensor) -> torch.Tensor:  # (P, N, 1): each latent's Laguerre cell
                # min(...).indices rather than argmin: the same indices, 2-3x faster on CPU.
                return torch.sub(cost, potential, out=work).min(dim=-1, keepdim=True).indices

            if dual_steps and 0 < dual_candidates < num_codes:  # the steps look only at each latent's candidates
                candidates = torch.sub(cost, potential, out=work).topk(dual_candidates, dim=-1, largest=False).indices
                candidate_cost = cost.gather(-1, candidates)  # (P, N, c)
                everywhere = (num_problems, num_latents, num_codes)

                def cells_of(potential: torch.Tensor) -> torch.Tensor:  # noqa: F811
                    scores = candidate_cost - potential.expand(everywhere).gather(-1, candidates)
                    return candidates.gather(-1, scores.min(dim=-1, keepdim=True).indices)

            def masses_of(cells: torch.Tensor) -> torch.Tensor:  # (P, 1, K): the latent mass in each cell
                return torch.zeros_like(code_mass).scatter_add_(-1, cells.transpose(1, 2), latent_mass.transpose(1, 2))

            cells = cells_of(potential)
            assigned_mass = masses_of(cells)
            step = dual_step_size * num_codes * scale[:, None, None]
            for t in range(dual_steps):  # subgradient ascent on the dual without entropy
                target = code_mass * (-potential / tau).exp() if code_relaxation > 0 else code_mass
                potential = potential + step / math.sqrt(t + 1) * (target - assigned_mass)
                cells = cells_of(potential)
                assigned_mass = masses_of(cells)
            error = (assigned_mass - code_mass).abs().sum(-1).max()
            plan = torch.zeros_like(cost).scatter_(-1, cells, latent_mass) if dense_plan else None
        potential = potential.squeeze(1)
        if code_relaxation <= 0:  # balanced: the level is free; centred, as POT's emd2 gradient
            potential = potential - potential.mean(-1, keepdim=True)
    relaxation = tau.reshape(-1) if code_relaxation > 0 else None
    if not dense_plan:
        assigned_cost = (cost.gather(-1, cells) * latent_mass).sum(dim=(-2, -1))
        return TransportResult(assigned_cost, None, potential, error, iterations, cells.squeeze(-1), relaxation)
    plan = plan.transpose(1, 2)  # (P, K, N), the caller's layout
    transport_cost = _TransportCost.apply(cost_matrix.float(), code_weights.float(), plan, potential)
    return TransportResult(
        transport_cost, plan, potential, error, iterations, None if cells is None else cells.squeeze(-1), relaxation
    )
