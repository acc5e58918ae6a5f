"""Optimal transport between code weights and a batch of latents. Pure tensors in and out.

Every problem p transports the code distribution `code_weights[p]` (K codes) onto the latent
distribution (N latents, uniform unless given) at cost `cost_matrix[p]` (K, N). Both solvers
return the transport cost <plan, cost> as a differentiable scalar per problem with the gradient
semantics of POT's `emd2`: d cost / d cost_matrix = plan, d cost / d code_weights = the code-side
dual potential (centred). Nothing here knows about models or training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TransportResult:
    """cost (P,) differentiable; plan (P, K, N), code_potential (P, K) and marginal_error detached."""

    cost: torch.Tensor
    plan: torch.Tensor
    code_potential: torch.Tensor
    marginal_error: float
    iterations: int


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


def _check_shapes(cost_matrix: torch.Tensor, code_weights: torch.Tensor) -> None:
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

    _check_shapes(cost_matrix, code_weights)
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
    error = (plan.sum(-1) - code_weights.detach().float()).abs().sum(-1).max().item()
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
) -> TransportResult:
    """Batched entropic OT (Sinkhorn) for all P problems at once, on the tensors' own device, fp32.

    Potentials live in the log domain; between absorptions the iterations run in kernel form
    (two batched matrix-vector products each), which is several times cheaper than logsumexp.
    Every `check_every` iterations the scalings are absorbed into the potentials (so nothing
    overflows) and the code-marginal L1 error is checked against `tolerance`.

    epsilon: regularisation relative to the cost scale, per problem: `nearest` = the mean over
    latents of their nearest-code cost (what decides the plan once codes sit among the latents),
    `mean` = the mean cost. code_potential: (P, K) warm start, e.g. the previous step's; without
    one, epsilon starts at the mean cost and shrinks by `anneal_factor` per block to its target.
    plan_type: `entropic` returns the Sinkhorn plan; `assignment` rounds it through the code
    potential g: each latent goes wholly to argmin_k (C_ki - g_k), its Laguerre cell, which is the
    exact OT plan once g is the exact dual. Entropic plans spread every code over many latents
    and pull codes together; the assignment keeps the sharp plan of exact OT at Sinkhorn's price.
    Returns the cost of the entropic plan, <plan, cost_matrix>.
    """
    _check_shapes(cost_matrix, code_weights)
    if epsilon_scale not in ("nearest", "mean"):
        raise ValueError(f"epsilon_scale={epsilon_scale!r} is not allowed; choose one of ['nearest', 'mean']")
    if plan_type not in ("entropic", "assignment"):
        raise ValueError(f"plan_type={plan_type!r} is not allowed; choose one of ['entropic', 'assignment']")
    num_problems, num_codes, num_latents = cost_matrix.shape
    with torch.no_grad(), torch.autocast(cost_matrix.device.type, enabled=False):
        cost = cost_matrix.detach().float()  # (P, K, N)
        code_mass = code_weights.detach().float().clamp_min(1e-12)
        code_mass = (code_mass / code_mass.sum(-1, keepdim=True)).unsqueeze(-1)  # (P, K, 1)
        if latent_weights is None:
            latent_mass = _uniform(num_problems, num_latents, cost).unsqueeze(1)  # (P, 1, N)
        else:
            latent_mass = latent_weights.detach().float().unsqueeze(1)
            latent_mass = latent_mass / latent_mass.sum(-1, keepdim=True)
        if epsilon_scale == "nearest":
            scale = cost.amin(dim=1).mean(dim=-1)
        else:
            scale = cost.mean(dim=(-2, -1))
        eps_target = (epsilon * scale).clamp_min(1e-8)[:, None, None]  # (P, 1, 1)
        # Cold starts anneal epsilon from the mean cost down to the target (epsilon scaling):
        # small-epsilon Sinkhorn from zero potentials needs thousands of iterations.
        if code_potential is None:
            eps = torch.maximum(eps_target, cost.mean(dim=(-2, -1), keepdim=True))
        else:
            eps = eps_target
        log_code_mass = code_mass.log()

        if code_potential is None:
            potential = torch.zeros_like(code_mass)  # g, (P, K, 1)
        else:
            potential = code_potential.detach().float().reshape(num_problems, num_codes, 1).clone()

        def absorbed_plan(potential: torch.Tensor) -> torch.Tensor:
            # The latent potential f is the exact c-transform of g, so columns sum to b exactly.
            scores = (potential - cost) / eps + log_code_mass  # (P, K, N)
            return torch.softmax(scores, dim=1) * latent_mass

        def code_error(plan: torch.Tensor) -> float:
            return (plan.sum(-1, keepdim=True) - code_mass).abs().sum(1).max().item()

        plan = absorbed_plan(potential)
        error, iterations = code_error(plan), 0
        while (error > tolerance or bool((eps > eps_target).any())) and iterations < max_iterations:
            # Kernel-form scaling iterations around the current potentials: u rescales rows
            # (codes), v columns (latents); both stay near 1, so fp32 is safe.
            latent_scaling = torch.ones_like(latent_mass)  # (P, 1, N)
            for _ in range(min(check_every, max_iterations - iterations)):
                # Broadcast-and-sum beats bmm for these skinny matrix-vector products on CPU.
                rows = (plan * latent_scaling).sum(-1, keepdim=True)  # (P, K, 1)
                code_scaling = code_mass / rows.clamp_min(1e-30)
                columns = (plan * code_scaling).sum(1, keepdim=True)  # (P, 1, N)
                latent_scaling = latent_mass / columns.clamp_min(1e-30)
                iterations += 1
            # Absorb u into g; the c-transform then plays the part of the last v update.
            potential = potential + eps * code_scaling.log()
            eps = torch.maximum(eps_target, eps * anneal_factor)
            plan = absorbed_plan(potential)
            error = code_error(plan)
        if plan_type == "assignment":
            cells = (cost - potential).argmin(dim=1, keepdim=True)  # (P, 1, N)
            plan = torch.zeros_like(cost).scatter_(1, cells, latent_mass)
            error = code_error(plan)
        potential = potential.squeeze(-1)
        potential = potential - potential.mean(-1, keepdim=True)
    transport_cost = _TransportCost.apply(cost_matrix.float(), code_weights.float(), plan, potential)
    return TransportResult(transport_cost, plan, potential, error, iterations)
