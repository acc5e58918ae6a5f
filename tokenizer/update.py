"""The tokenizer's training update, written once: `tokenizer/train.py` trains with it and every
benchmark that times or checks a training step calls it (`benchmarks/train_step.make_step`).

One update: forward (reconstruction and quantizer terms, the OT term in fp32), the weighted loss,
the non-finite guard, backward, clipping, the optimizer step. The schedule steps outside it, once
per optimizer step, in the caller's loop: a recorded CUDA graph reads the learning rate from the
device, where the scheduler writes it. With `cuda_graph` the same update runs on static buffers
and is replayed as one graph once warm (infra/step_graph.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from infra.step_graph import GraphedStep, adam_settings
from infra.training import NonFiniteGuard, Optimization, backward_and_step

from .config import TokenizerTrainConfig
from .model import VQWAEOutput
from .objective import LossTerms, total_loss


@dataclass
class StepOutput:
    """What one training step leaves for logging: the model's output and the weighted loss terms
    (None when nonfinite_loss=skip skipped the step)."""

    output: VQWAEOutput
    loss: LossTerms | None


def build_optimization(model: torch.nn.Module, config: TokenizerTrainConfig, capturable: bool,
                       device: torch.device) -> Optimization:  # fmt: skip
    """Adam at config.learning_rate with config.weight_decay, and the configured schedule (warmup,
    then cosine to zero at max_steps, or constant). capturable: the graphed step's Adam (a device
    lr, the fused kernel; `adam_settings`)."""
    optimizer = torch.optim.Adam(
        model.parameters(), weight_decay=config.weight_decay,
        **adam_settings(config.learning_rate, capturable=capturable, device=device),
    )  # fmt: skip
    scheduler = get_scheduler(config.scheduler_name, optimizer, config.warmup_steps, config.max_steps)
    return Optimization(optimizer, scheduler)


class TokenizerUpdate:
    """`update(images, step) -> StepOutput`: one training update of `model` on images in [0, 1].

    graph: record and replay the update as a CUDA graph (with config.cuda_graph; on a CPU the same
    update runs eagerly on the static buffers). autocast: a dtype to run the model's forward in
    (the quantizer and OT stay fp32 inside); training sets mixed precision through Accelerate
    instead, so the training script leaves it None."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, accelerator: Accelerator,
                 config: TokenizerTrainConfig, graph: bool, autocast: torch.dtype | None = None):  # fmt: skip
        self.model, self.optimizer, self.accelerator, self.config = model, optimizer, accelerator, config
        self.autocast = autocast
        self.guard = NonFiniteGuard(accelerator, config)
        self._run = GraphedStep(self._update, graph) if config.cuda_graph else self._update

    def __call__(self, images: torch.Tensor, step: int | torch.Tensor) -> StepOutput:
        return self._run(images, step)

    def _update(self, images: torch.Tensor, step: int | torch.Tensor) -> StepOutput:
        # Forward: reconstruction + quantizer terms (OT in fp32 over the global batch).
        autocast = torch.autocast(images.device.type, self.autocast) if self.autocast else contextlib.nullcontext()
        with autocast:
            output = self.model(images)
        loss = total_loss(output, self.config.loss)
        # A non-finite loss skips the step (nonfinite_loss=skip) or stops the run at the next
        # log/checkpoint step (stop), before anything non-finite is saved.
        if not self.guard.step_ok(loss.terms, loss.total, step):
            self.optimizer.zero_grad(set_to_none=True)
            return StepOutput(output, None)
        # Backward, clipping (max_grad_norm), update.
        backward_and_step(self.accelerator, self.model, self.optimizer, loss.total, self.config)
        return StepOutput(output, loss)
