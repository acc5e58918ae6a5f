"""The training solver compiled on its own (`model.transport.compile_solver=true`): `torch.compile`
of the pure Sinkhorn and dual-step function, not of the convolutions around it, one compiled
function per solver setting, static shapes (a new batch shape compiles once more).

Off by default: on this project's 2-core CPU the compiled solver is slower than the eager one,
whose in-place kernels were tuned for it (BENCHMARKS.md, "Scale: large codebooks and grids"); the GPU figure waits for a GPU.
Where compilation fails (no C++ compiler, a backend that refuses the graph), one line says so and
the eager solver runs from then on: a run never stops for it.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from .transport import TransportResult, sinkhorn_transport
from .transport_config import TransportConfig

_COMPILED: dict[tuple, object] = {}
_EAGER_FROM_NOW_ON: set[tuple] = set()


def _solve(cost_matrix, code_weights, code_potential, config: TransportConfig):
    """sinkhorn_transport without a dense plan, as a tuple of tensors (what a compiled graph returns)."""
    result = sinkhorn_transport(cost_matrix, code_weights, config, code_potential=code_potential, dense_plan=False)
    relaxation = result.code_relaxation if result.code_relaxation is not None else torch.zeros(0)
    return result.cost, result.code_potential, result.marginal_error, result.cells, relaxation


def compiled_sinkhorn_transport(
    cost_matrix: torch.Tensor, code_weights: torch.Tensor, config: TransportConfig, code_potential: torch.Tensor
) -> TransportResult:
    """`sinkhorn_transport(cost_matrix, code_weights, config, code_potential, dense_plan=False)`,
    compiled on the first call of each setting; the eager solve where compilation failed."""
    config = config.for_codebook(code_weights.shape[-1])
    key = dataclasses.astuple(config)
    if key in _EAGER_FROM_NOW_ON:
        return sinkhorn_transport(cost_matrix, code_weights, config, code_potential=code_potential, dense_plan=False)
    solve = _COMPILED.get(key)
    if solve is None:
        solve = _COMPILED[key] = torch.compile(lambda *tensors: _solve(*tensors, config=config), dynamic=False)
    try:
        cost, potential, error, cells, relaxation = solve(cost_matrix, code_weights, code_potential)
    except Exception as error:  # noqa: BLE001 - any compiler failure: say it once, solve eagerly
        _EAGER_FROM_NOW_ON.add(key)
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        print(f"model.transport.compile_solver: compilation failed ({reason}); solving eagerly", file=sys.stderr)
        return sinkhorn_transport(cost_matrix, code_weights, config, code_potential=code_potential, dense_plan=False)
    relaxation = relaxation if config.code_relaxation > 0 else None
    return TransportResult(cost, None, potential, error, config.iterations, cells, relaxation)
