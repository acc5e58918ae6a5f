"""Settings of a stage-one (tokenizer) training run: the YAML files in configs/tokenizer/."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import check_choice, check_positive
from .data import DataConfig
from .model import VQWAEConfig
from .objective import LossConfig


@dataclass
class TokenizerTrainConfig:
    """batch_size is the global batch per optimizer step: it is split over processes and gradient
    accumulation steps, so the same config gives the same optimisation on 1 or N devices.
    model.image_size follows data.image_size."""

    output_dir: str = "outputs/tokenizer"
    max_steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    lr_scheduler: str = "cosine"  # cosine (to zero at max_steps) | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0 = no clipping
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16 (the quantizer always runs in fp32)
    seed: int = 0
    resume: str | None = None  # latest | path to a checkpoint folder
    checkpoint_every: int = 500
    checkpoints_to_keep: int = 2
    log_every: int = 50
    validate_every: int = 500
    validation_batches: int = 0  # 0 = the whole validation split
    log_with: str = "auto"  # auto (tensorboard when installed) | tensorboard | none
    nonfinite_loss: str = "stop"  # stop | skip (the step)
    push_to_hub: bool = False
    hub_repo_id: str | None = None
    model: VQWAEConfig = field(default_factory=VQWAEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        check_choice("lr_scheduler", self.lr_scheduler, ("constant", "cosine"))
        check_choice("mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        check_choice("log_with", self.log_with, ("auto", "tensorboard", "none"))
        check_choice("nonfinite_loss", self.nonfinite_loss, ("stop", "skip"))
        for name in (
            "max_steps",
            "batch_size",
            "learning_rate",
            "gradient_accumulation_steps",
            "checkpoint_every",
            "checkpoints_to_keep",
            "log_every",
            "validate_every",
        ):
            check_positive(name, getattr(self, name))
        for name in ("warmup_steps", "weight_decay", "max_grad_norm", "validation_batches"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.push_to_hub and not self.hub_repo_id:
            raise ValueError("push_to_hub=true needs hub_repo_id=USER/NAME")
        if self.model.image_size != self.data.image_size:
            self.model = dataclasses.replace(self.model, image_size=self.data.image_size)
