"""Checking a training solver against the exact optimal transport of the same problems: POT's
`emd2` for the balanced problem, a certified solve of the unregularised semi-relaxed problem for a
`code_relaxation` solve. Used by tokenizer/train.py's `ot_check_every` and benchmarks/ot_gap.py;
CPU, seconds a check. Nothing here runs in a training step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .transport import TransportResult, check_shapes, exact_transport


@dataclass
class SemiRelaxedSolution:
    """The exact semi-relaxed OT problem min_P <P, C> + tau KL(P^T 1 || pi), P 1 = b (latent side
    exact), per problem: lower_bound = the dual value at the potential found (a certified lower
    bound on the optimum), upper_bound = the objective of a feasible plan (the optimum lies
    between), code_marginal = pi exp(-g / tau), the optimal plan's code marginal at the optimum,
    code_potential g, cell_marginal = the masses of the Laguerre cells of g (the one-hot plan that
    rounding the exact potential gives), cell_objective = that one-hot plan's objective. All
    float64, on the CPU."""

    lower_bound: np.ndarray  # (P,)
    upper_bound: np.ndarray  # (P,)
    code_marginal: np.ndarray  # (P, K)
    code_potential: np.ndarray  # (P, K)
    cell_marginal: np.ndarray  # (P, K)
    cell_objective: np.ndarray  # (P,)


def relaxed_objective(cost: float, code_marginal: np.ndarray, code_weights: np.ndarray, tau: float) -> float:
    """<P, C> + tau KL(m || pi) (the generalised KL, sum m log(m / pi) - m + pi) of a plan."""
    m, pi = np.asarray(code_marginal, dtype=np.float64), np.asarray(code_weights, dtype=np.float64)
    kl = np.sum(np.where(m > 0, m * np.log(np.where(m > 0, m, 1.0) / pi), 0.0) - m + pi)
    return float(cost + tau * kl)


def semi_relaxed_transport(
    cost_matrix: torch.Tensor, code_weights: torch.Tensor, tau: torch.Tensor, max_iterations: int = 2000
) -> SemiRelaxedSolution:
    """Solve the unregularised semi-relaxed problem of a `code_relaxation` solve (uniform latents)
    to certified precision, independently of Sinkhorn: L-BFGS on its concave dual

        D(g) = sum_n b_n min_k (C_kn - g_k) + tau sum_k pi_k (1 - exp(-g_k / tau)),

    whose gradient is pi exp(-g / tau) minus the masses of the Laguerre cells argmin_k C_kn - g_k.
    Any g gives a lower bound D(g); the upper bound is the better of two feasible plans: the
    Laguerre cells of g, and POT's exact `emd` from the latents to the normalised pi exp(-g / tau).
    cost_matrix (P, K, N), code_weights (P, K), tau (P,) in cost units. CPU, seconds a problem."""
    import ot  # POT and scipy: imported where used (seconds to import), by this check only
    from scipy.optimize import minimize

    check_shapes(cost_matrix, code_weights)
    costs = cost_matrix.detach().to("cpu", torch.float64).numpy()
    weights = code_weights.detach().to("cpu", torch.float64).numpy()
    taus = tau.detach().to("cpu", torch.float64).reshape(-1).numpy()
    num_problems, num_codes, num_latents = costs.shape
    latents = np.full(num_latents, 1.0 / num_latents)
    columns = np.arange(num_latents)
    lower, upper, marginals, potentials, cell_marginals, cell_objectives = [], [], [], [], [], []
    for cost, pi, t in zip(costs, weights, taus):
        pi = pi / pi.sum()

        def negative_dual(h, cost=cost / t, pi=pi):  # in units of tau: h = g / tau, so steps are O(1)
            scores = cost - h[:, None]
            cells = scores.argmin(0)
            kl_side = pi * np.exp(-h)
            value = latents @ scores[cells, columns] + np.sum(pi - kl_side)
            gradient = kl_side - np.bincount(cells, weights=latents, minlength=num_codes)
            return -value, -gradient

        options = dict(maxiter=max_iterations, maxfun=4 * max_iterations, ftol=1e-15, gtol=1e-12)
        h = minimize(negative_dual, np.zeros(num_codes), jac=True, method="L-BFGS-B", options=options).x
        g = t * h
        cells = (cost - g[:, None]).argmin(0)
        cell_masses = np.bincount(cells, weights=latents, minlength=num_codes)
        marginal = pi * np.exp(-g / t)
        target = marginal / marginal.sum()
        candidates = [
            relaxed_objective(latents @ cost[cells, columns], cell_masses, pi, t),
            relaxed_objective(ot.emd2(target, latents, cost, numItermax=1_000_000), target, pi, t),
        ]
        lower.append(-t * negative_dual(h)[0])
        upper.append(min(candidates))
        marginals.append(marginal)
        potentials.append(g)
        cell_marginals.append(cell_masses)
        cell_objectives.append(candidates[0])
    return SemiRelaxedSolution(
        np.array(lower), np.array(upper), np.stack(marginals), np.stack(potentials), np.stack(cell_marginals),
        np.array(cell_objectives),
    )  # fmt: skip


@dataclass
class TransportCheck:
    """A training solver's result against the exact solution of the same problems (means over
    problems). Balanced solves: POT's `emd2`; solver_cost and exact_cost are transport costs and
    marginal_error is the largest L1 distance between the solver plan's code marginals and the code
    weights. Semi-relaxed solves: costs are the objective <P, C> + tau KL(m || pi), exact_cost the
    certified lower bound of `semi_relaxed_transport` (so relative_gap overstates the gap by at
    most exact_bound_gap, the reference's upper / lower bound - 1), and marginal_error is the L1
    distance to the optimal code marginal, which no one-hot plan can match exactly (each code holds
    whole latents): marginal_floor is the L1 distance of the exact potential's own Laguerre cells,
    and objective_floor the relative gap of that one-hot plan's objective (rounding the exact
    potential, what a perfectly converged solver would return). relative_gap = solver_cost /
    exact_cost - 1."""

    solver_cost: float
    exact_cost: float
    relative_gap: float
    marginal_error: float
    exact_bound_gap: float = 0.0
    marginal_floor: float = 0.0
    objective_floor: float = 0.0


def code_marginals(result: TransportResult, num_codes: int) -> torch.Tensor:
    """(P, K) code sums of a result's plan (its cells' masses for an assignment without a dense plan)."""
    if result.plan is not None:
        return result.plan.detach().double().sum(-1)
    cells = result.cells
    ones = torch.full(cells.shape, 1.0 / cells.shape[-1], dtype=torch.float64, device=cells.device)
    return torch.zeros(cells.shape[0], num_codes, dtype=torch.float64, device=cells.device).scatter_add_(
        -1, cells, ones
    )


def check_against_exact(
    cost_matrix: torch.Tensor,
    code_weights: torch.Tensor,
    solved: TransportResult,
    exact: SemiRelaxedSolution | None = None,
) -> TransportCheck:
    """Solve the problems of `solved` (cost_matrix (P, K, N), code_weights (P, K)) exactly (POT's
    `emd2`; for a semi-relaxed solve, `semi_relaxed_transport`, or `exact` when that was already
    solved for the same problems and tau) and compare the solver's cost and code marginals with
    the exact solution's. CPU, seconds at most."""
    extra = {}
    if solved.code_relaxation is not None:
        if exact is None:
            exact = semi_relaxed_transport(cost_matrix, code_weights, solved.code_relaxation)
        marginals = code_marginals(solved, cost_matrix.shape[1]).cpu().numpy()
        taus = solved.code_relaxation.detach().double().cpu().numpy()
        costs = solved.cost.detach().double().cpu().numpy()
        weights = code_weights.detach().double().cpu().numpy()
        objectives = [relaxed_objective(c, m, w / w.sum(), t) for c, m, w, t in zip(costs, marginals, weights, taus)]
        solver_cost, exact_cost = float(np.mean(objectives)), float(np.mean(exact.lower_bound))
        marginal_error = float(np.abs(marginals - exact.code_marginal).sum(-1).max())
        extra = dict(
            exact_bound_gap=float(np.mean(exact.upper_bound) / exact_cost - 1.0) if exact_cost > 0 else 0.0,
            marginal_floor=float(np.abs(exact.cell_marginal - exact.code_marginal).sum(-1).max()),
            objective_floor=float(np.mean(exact.cell_objective) / exact_cost - 1.0) if exact_cost > 0 else 0.0,
        )
    else:
        exact = exact_transport(cost_matrix.detach(), code_weights.detach())
        solver_cost, exact_cost = solved.cost.detach().double().mean().item(), exact.cost.double().mean().item()
        marginal_error = float(solved.marginal_error)
    return TransportCheck(
        solver_cost=solver_cost,
        exact_cost=exact_cost,
        relative_gap=solver_cost / exact_cost - 1.0 if exact_cost > 0 else 0.0,
        marginal_error=marginal_error,
        **extra,
    )
