"""Vector quantizers: nearest codeword with a straight-through gradient, and their training terms.

`VectorQuantizer` is the VQ-VAE baseline (codebook + commitment losses). `WassersteinQuantizer` is
VQ-WAE: the same nearest-code lookup, trained by the optimal-transport cost between the code
distribution (codewords c_k with weights pi_k) and the batch latents, plus KL(pi || uniform).
Distances and transport run in fp32 even under autocast. Loss weights live with the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from infra.metrics.reconstruction import code_histogram, perplexity_from_counts

from .transport import TransportResult, exact_transport, sinkhorn_transport
from .transport_chunked import CostRows, chunk_rows, chunked_sinkhorn_transport, over_budget, spans, squared_distances
from .transport_compiled import compiled_sinkhorn_transport
from .transport_config import TransportConfig


@dataclass
class TransportProblem:
    """The OT problem a VQ-WAE step solved (detached): cost_matrix (P, K, N) (None when it was
    solved in chunks, never built), code_weights (P, K), and the solver's result, for checking it
    against an exact solver (`check_against_exact`)."""

    cost_matrix: torch.Tensor | None
    code_weights: torch.Tensor
    result: TransportResult


@dataclass
class QuantizerOutput:
    """quantized (B, D, h, w) straight-through; codes (B, h, w); unweighted loss terms (None when
    the quantizer has no such term); batch perplexity and number of distinct codes used;
    transport_problem: what the OT term solved (VQ-WAE only)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    perplexity: torch.Tensor
    codes_used: torch.Tensor
    commitment_loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    transport_loss: torch.Tensor | None = None
    weights_kl: torch.Tensor | None = None
    transport_problem: TransportProblem | None = None


def nearest_codes(costs: CostRows, rows: int) -> torch.Tensor:
    """(P, N): each latent's nearest code, `rows` latents at a time (the distances never built whole)."""
    return torch.cat([costs.rows(*span).min(dim=-1).indices for span in spans(costs.num_latents, rows)], dim=1)


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """True for the integer dtypes (bool, although integral in torch, is refused as a code or label)."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def check_codes(codes: torch.Tensor, codebook_size: int) -> None:
    """Raise a `ValueError` naming the range when `codes` fall outside [0, codebook_size)."""
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}); got range [{codes.min()}, {codes.max()}]")


def code_statistics(codes: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Batch perplexity and number of distinct codes used, the `QuantizerOutput` fields, as
    tensors computed without a host sync (no `torch.unique`, whose size depends on the data)."""
    counts = code_histogram(codes, codebook_size)
    return dict(perplexity=perplexity_from_counts(counts), codes_used=(counts > 0).sum().float())


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """All ranks' copies of `tensor` (detached), in rank order."""
    gathered = [torch.empty_like(tensor) for _ in range(_world_size())]
    dist.all_gather(gathered, tensor.detach().contiguous())
    return gathered


class _Quantizer(nn.Module):
    """Codebook, its initialisation, and the nearest-code lookup shared by both quantizers."""

    def __init__(self, codebook_size: int, embedding_dim: int, codebook_init: str, init_noise: float):
        super().__init__()
        self.codebook_size = codebook_size
        self.codebook_init = codebook_init
        self.init_noise = init_noise
        self.codebook = nn.Parameter(torch.randn(codebook_size, embedding_dim))
        # Set once the codebook holds its initial values (saved, so a loaded model never re-inits).
        self.register_buffer("initialized", torch.tensor(codebook_init == "randn"))
        self._known_initialized = False  # host copy once seen True: reading the buffer syncs a GPU
        self.lookup_rows: int | None = None  # set: the lookup finds codes this many latents at a time
        # Whether a loss differentiates the lookup's distances (POT's exact plan does); otherwise they
        # are built without autograd, one (N, K) matrix instead of the graph's extra copy.
        self.differentiable_distances = False

    @torch.no_grad()
    def _initialize_from(self, latents: torch.Tensor) -> None:
        """Codes = random encoder outputs of the first batch + noise (0.1 x their RMS by default),
        so every code starts where the latents are. With several processes the choice is made from
        the global batch and broadcast from rank 0, so every rank starts identical."""
        if _world_size() > 1:
            latents = torch.cat(_gather(latents))
        indices = torch.randint(0, latents.shape[0], (self.codebook_size,), device=latents.device)
        if latents.shape[0] >= self.codebook_size:
            indices = torch.randperm(latents.shape[0], device=latents.device)[: self.codebook_size]
        chosen = latents[indices].float()
        chosen += self.init_noise * chosen.pow(2).mean().sqrt() * torch.randn_like(chosen)
        if _world_size() > 1:
            dist.broadcast(chosen, src=0)
        self.codebook.data.copy_(chosen)
        self.initialized.fill_(True)

    def lookup(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """latents (B, D, h, w) -> flat latents (B*h*w, D), distances (B*h*w, K), codes (B*h*w,).
        With lookup_rows set and more latents than that, the codes are found a chunk at a time and
        the distances are never built (None)."""
        flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (B*h*w, D)
        if self.training and not self._known_initialized:
            if not bool(self.initialized):
                self._initialize_from(flat.detach())
            self._known_initialized = True
        with torch.autocast(latents.device.type, enabled=False), self._distances_autograd():
            if self.lookup_rows is not None and flat.shape[0] > self.lookup_rows:
                costs = CostRows.of_latents(flat.detach()[None], self.codebook.detach())
                return flat, None, nearest_codes(costs, self.lookup_rows)[0]
            distances = squared_distances(flat, self.codebook)  # (B*h*w, K)
        # min(...).indices, not argmin: the same first-minimum indices, 2-3x faster on CPU (torch 2.14).
        codes = distances.detach().min(dim=-1).indices
        return flat, distances, codes

    def _distances_autograd(self) -> torch.autograd.grad_mode.set_grad_enabled:
        return torch.set_grad_enabled(torch.is_grad_enabled() and self.differentiable_distances)

    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, D, h, w) -> nearest codes (B, h, w)."""
        _, _, codes = self.lookup(latents)
        return codes.view(latents.shape[0], *latents.shape[2:])

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> codewords (B, D, h, w)."""
        check_codes(codes, self.codebook_size)
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    def _finish(self, latents: torch.Tensor, codes: torch.Tensor) -> dict:
        batch, _, height, width = latents.shape
        codes = codes.view(batch, height, width)
        # The lookup's own codes need no range check (a host sync): embed them directly.
        codewords = F.embedding(codes, self.codebook).permute(0, 3, 1, 2).to(latents.dtype)
        quantized = latents + (codewords - latents).detach()  # straight-through estimator
        return dict(quantized=quantized, codes=codes, **code_statistics(codes, self.codebook_size)), codewords


class VectorQuantizer(_Quantizer):
    """VQ-VAE quantizer: codebook loss ||sg(z) - c||^2 and commitment loss ||z - sg(c)||^2."""

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        _, _, codes = self.lookup(latents)
        fields, codewords = self._finish(latents, codes)
        latents32, codewords32 = latents.float(), codewords.float()
        return QuantizerOutput(
            **fields,
            codebook_loss=F.mse_loss(codewords32, latents32.detach()),
            commitment_loss=F.mse_loss(latents32, codewords32.detach()),
        )


class WassersteinQuantizer(_Quantizer):
    """VQ-WAE quantizer: nearest-code lookup, trained by W(latents, (codebook, pi)).

    scope `position`: one OT problem per grid position (its own pi over K codes, B latents each);
    `global`: one problem over all B*h*w latents. The transport loss is `num_positions` x the mean
    cost over problems, so both scopes weigh the same. With several processes the latents are
    gathered so the OT problem is the global batch's; gradients reach the local latents only.
    """

    def __init__(
        self, codebook_size: int, embedding_dim: int, codebook_init: str, init_noise: float, grid_size: int,
        transport: TransportConfig,
    ):  # fmt: skip
        super().__init__(codebook_size, embedding_dim, codebook_init, init_noise)
        self.transport_config = transport.for_codebook(codebook_size)  # the recipe's relaxation for this K
        self.grid_size = grid_size
        self.num_positions = grid_size * grid_size
        num_problems = self.num_positions if transport.scope == "position" else 1
        self.code_logits = nn.Parameter(
            torch.zeros(num_problems, codebook_size), requires_grad=transport.learn_code_weights
        )
        # Last step's code potentials: the Sinkhorn warm start (codes move little per step).
        self.register_buffer("code_potential", torch.zeros(num_problems, codebook_size))
        # Past the memory budget the lookup and the OT term work in chunks of this many latents.
        self.lookup_rows = chunk_rows(1, codebook_size, transport.memory_budget_mb)
        self.differentiable_distances = transport.solver == "exact"  # its cost's gradient is the plan

    def code_weights(self) -> torch.Tensor:
        """pi = softmax(logits): (num_problems, K)."""
        return torch.softmax(self.code_logits.float(), dim=-1)

    def _gather_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, h*w, D) local -> (world*B, h*w, D) global; the local slice keeps its gradient, scaled
        by the world size because data parallelism averages gradients over ranks."""
        world = _world_size()
        if world == 1:
            return latents
        gathered = _gather(latents)
        local = latents * world - latents.detach() * (world - 1)  # value unchanged, gradient x world
        gathered[dist.get_rank()] = local
        return torch.cat(gathered, dim=0)

    def _cost_matrix(self, grid: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """(P, K, N) in the scope's layout from the grid latents (B, h*w, D) and the lookup's
        distances (B*h*w, K) (recomputed when the latents were gathered from several processes)."""
        batch, positions, _ = grid.shape
        if _world_size() == 1:
            grid_distances = distances.view(batch, positions, -1)  # (B, h*w, K)
        else:
            with self._distances_autograd():
                grid_distances = squared_distances(grid, self.codebook)  # (world*B, h*w, K)
        if self.transport_config.scope == "position":
            return grid_distances.permute(1, 2, 0)  # (h*w, K, B)
        return grid_distances.reshape(-1, self.codebook_size).t()[None]  # (1, K, B*h*w)

    def transport(
        self, latents: torch.Tensor, distances: torch.Tensor | None, nearest: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, TransportProblem]:
        """OT loss for latents (B, D, h, w) with their code distances (B*h*w, K) and nearest codes
        (B*h*w,) from `lookup`: num_positions x the mean OT cost over problems, and the problem.
        distances=None (a lookup in chunks): the problem is solved in chunks, its costs recomputed."""
        config = self.transport_config
        batch, dim, height, width = latents.shape
        if config.scope == "position" and height * width != self.num_positions:
            raise ValueError(
                f"per-position OT was built for a {self.grid_size}x{self.grid_size} grid but the latents are "
                f"{height}x{width}; use images of the training size or model.ot_scope=global"
            )
        with torch.autocast(latents.device.type, enabled=False):
            grid = latents.float().permute(0, 2, 3, 1).reshape(batch, height * width, dim)
            if _world_size() > 1:
                grid = self._gather_latents(grid)  # (world*B, h*w, D)
            if config.scope == "position":
                problems = grid.transpose(0, 1)  # (h*w, B, D): position m's pi_m vs its B latents
            else:
                problems = grid.reshape(1, -1, dim)  # (1, B*h*w, D)
            chunked = distances is None or problems.shape[1] * problems.shape[0] > self.lookup_rows
            cost = None if chunked else self._cost_matrix(grid, distances)  # (P, K, N)
            weights = self.code_weights()
            assignment = config.solver == "sinkhorn"  # Laguerre cells; the exact solver's plan is dense
            if config.solver == "exact":
                if cost is None:
                    raise ValueError(over_budget("model.transport.solver=exact", problems.shape[0] * problems.shape[1],
                                                 self.codebook_size, config.memory_budget_mb, "use solver=sinkhorn"))  # fmt: skip
                result = exact_transport(cost, weights)
            elif chunked:  # past the memory budget: the costs recomputed a chunk of latents at a time
                costs = CostRows.of_latents(problems.detach(), self.codebook.detach())
                result = chunked_sinkhorn_transport(costs, weights, config, code_potential=self.code_potential)
            elif config.compile_solver:
                result = compiled_sinkhorn_transport(cost, weights, config, self.code_potential)
            else:
                # Warm-started from the last training step's potential; eval reads it without update.
                result = sinkhorn_transport(cost, weights, config, code_potential=self.code_potential, dense_plan=False)
            if self.training:
                self.code_potential.copy_(result.code_potential)
            problem = TransportProblem(None if cost is None else cost.detach(), weights.detach(), result)
            if not assignment:
                return self.num_positions * result.cost.mean(), problem
            # The assignment plan is one-hot: its cost is the mean ||z_n - c_cell(n)||^2 of each
            # problem, differentiated through those pairs only (no dense (N, K) backward). The
            # envelope gradient of the cost in pi is the code potential g, as for the other plans.
            # F.embedding, not codebook[cells]: its backward sums each code's rows in a fixed order on
            # CPU (indexing's backward, index_put_ with accumulate, does not across threads).
            codewords = F.embedding(result.cells, self.codebook).float()  # (P, N, D)
            if config.encoder_target == "cell":
                cost_per_problem = (problems - codewords).pow(2).sum(-1).mean(-1)
            else:
                # Same value and codebook gradient; the latents are pulled to the code that decodes
                # them (their nearest) instead of their OT cell's code.
                if nearest is None or _world_size() > 1:  # gathered latents: recompute
                    nearest = nearest_codes(CostRows.of_latents(problems.detach(), self.codebook.detach()),
                                            self.lookup_rows)  # fmt: skip
                elif config.scope == "position":
                    nearest = nearest.view(batch, height * width).t()  # (h*w, B)
                else:
                    nearest = nearest.view(1, -1)  # (1, B*h*w)
                nearest_codewords = self.codebook[nearest].float().detach()  # (P, N, D)
                codebook_side = (problems.detach() - codewords).pow(2).sum(-1).mean(-1)
                encoder_side = (problems - nearest_codewords).pow(2).sum(-1).mean(-1)
                cost_per_problem = codebook_side + encoder_side - encoder_side.detach()
            potential_term = (weights * result.code_potential).sum(-1)
            cost_per_problem = cost_per_problem + potential_term - potential_term.detach()
            return self.num_positions * cost_per_problem.mean(), problem

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        _, distances, codes = self.lookup(latents)
        fields, _ = self._finish(latents, codes)
        weights = self.code_weights()
        # KL(pi || uniform), averaged like torch's KLDivLoss(reduction="mean") in the reference code.
        log_size = torch.log(torch.tensor(float(self.codebook_size)))
        weights_kl = (weights * (weights.clamp_min(1e-12).log() + log_size)).sum(-1)
        transport_loss, problem = self.transport(latents, distances, codes)
        return QuantizerOutput(
            **fields,
            transport_loss=transport_loss,
            weights_kl=weights_kl.mean() / self.codebook_size,
            transport_problem=problem,
        )
