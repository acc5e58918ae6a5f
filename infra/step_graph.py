"""A whole training step as one CUDA graph (`cuda_graph: true`).

A warm training step is bound by kernel launches, not arithmetic (BENCHMARKS.md): the Sinkhorn
iterations and the dual steps of VQ-WAE add a few hundred small kernels. `GraphedStep` records
the step (forward, loss, backward, clipping and Adam) once after a few eager warm-up steps and
replays it: one launch a step. What a replay needs, and what this module provides:

- static inputs: every batch is copied into one buffer allocated on the first call, and the step
  number lives in a device tensor filled before each call;
- state updated in place: parameters, buffers, Adam's moments, the learning rate (a device tensor
  the scheduler fills) and the non-finite guard's record keep their storage from step to step;
- no host read inside the step (tests/tokenizer/test_gpu_path.py), and Adam with
  `capturable=True`, which keeps its step counts on the device.

Eager kernels throughout, so it does not depend on `torch.compile` working on the machine's torch.
Without a CUDA device the same function runs eagerly on the same static buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import torch

Output = TypeVar("Output")
WARMUP_STEPS = 3  # eager steps before capture: lazy initialisation (the codebook draw, cuBLAS) happens here


class GraphedStep(Generic[Output]):
    """Call `step_fn(inputs, step)` on static buffers, as a CUDA graph once warm.

    `step_fn` takes the batch (a tensor) and the step number (a 0-dim float tensor on the device)
    and returns its outputs; with `graph=True` on a CUDA device, calls after the first
    `WARMUP_STEPS` replay the recorded step, and the outputs they return are the same tensors,
    overwritten by each replay (read them before the next call). Every batch must have the shape
    and dtype of the first.
    """

    def __init__(self, step_fn: Callable[[torch.Tensor, torch.Tensor], Output], graph: bool):
        self.step_fn = step_fn
        self.graph_requested = graph
        self.inputs: torch.Tensor | None = None
        self.step: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Output | None = None
        self.calls = 0

    def __call__(self, batch: torch.Tensor, step: int) -> Output:
        if self.inputs is None:
            self.inputs = torch.empty_like(batch)
            self.step = torch.zeros((), dtype=torch.float32, device=batch.device)
        elif batch.shape != self.inputs.shape or batch.dtype != self.inputs.dtype:
            raise ValueError(
                f"a graphed training step takes batches of one shape and dtype: the first was "
                f"{tuple(self.inputs.shape)} {self.inputs.dtype}, this one {tuple(batch.shape)} {batch.dtype}. "
                "Keep drop_last=True on the training loader, or set cuda_graph=false"
            )
        self.inputs.copy_(batch, non_blocking=True)
        self.step.fill_(step)
        self.calls += 1
        use_graph = self.graph_requested and self.inputs.is_cuda
        if not use_graph:
            return self.step_fn(self.inputs, self.step)
        if self.graph is None and self.calls <= WARMUP_STEPS:
            return self._on_side_stream()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.outputs

    def _on_side_stream(self) -> Output:
        """Warm-up steps run on a side stream, as CUDA graph capture requires."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = self.step_fn(self.inputs, self.step)
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def _capture(self) -> None:
        """Record one step (recording runs nothing: the caller replays it)."""
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self.step_fn(self.inputs, self.step)


def graph_applies(requested: bool, accelerator) -> bool:
    """Whether to record the step as a CUDA graph: requested, one process, a CUDA device.
    Otherwise says in one line why not (the step then runs eagerly)."""
    if not requested:
        return False
    if accelerator.num_processes > 1:
        accelerator.print(
            f"cuda_graph=true records one process's step; with {accelerator.num_processes} processes "
            "(their gradient all-reduce) every step runs eagerly"
        )
        return False
    if accelerator.device.type != "cuda":
        accelerator.print(
            f"cuda_graph=true needs a CUDA device (this run is on {accelerator.device.type}): "
            "the step runs eagerly on the same static buffers"
        )
        return False
    return True


def adam_settings(learning_rate: float, capturable: bool, device: torch.device) -> dict:
    """Adam's lr settings. A graphed step: the lr a device tensor (filled by the scheduler, read by
    every replay), capturable=True and the fused kernel (one launch; the unfused capturable update
    divides by the lr and turns a zero-gradient entry NaN at lr 0, the first warmup step's).
    Otherwise a float lr and torch's default implementation."""
    if capturable:
        return dict(lr=torch.tensor(learning_rate, dtype=torch.float32, device=device), capturable=True, fused=True)
    return dict(lr=learning_rate)


def match_optimizer(optimizer: torch.optim.Optimizer, scheduler, capturable: bool) -> None:
    """After resuming, put the optimizer (and its scheduler) in this run's mode whatever mode the
    checkpoint was saved in: `load_state_dict` brings back the saved `capturable` flag, lr type
    and step-count device, so a checkpoint of a graphed run would otherwise break an eager one."""
    for group in optimizer.param_groups:
        learning_rate = group["lr"]
        if capturable and not isinstance(learning_rate, torch.Tensor):
            device = group["params"][0].device
            group["lr"] = torch.tensor(learning_rate, dtype=torch.float32, device=device)
        elif not capturable and isinstance(learning_rate, torch.Tensor):
            group["lr"] = learning_rate.item()
        if isinstance(group.get("initial_lr"), torch.Tensor):
            group["initial_lr"] = group["initial_lr"].item()
        group.update(capturable=capturable, fused=True if capturable else None)
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if "step" in state:  # capturable keeps it beside the parameter; eager Adam on the host
                device = parameter.device if capturable else "cpu"
                state["step"] = state["step"].to(dtype=torch.float32, device=device)
    scheduler.base_lrs = [float(value) for value in scheduler.base_lrs]
    scheduler._last_lr = [float(value) for value in scheduler._last_lr]
