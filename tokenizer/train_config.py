"""Settings of a stage-one (tokenizer) training run: the YAML files in configs/tokenizer/."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import DataConfig
from .model import VQWAEConfig
from .objective import LossConfig
from .training import RunConfig


@dataclass
class TokenizerTrainConfig(RunConfig):
    """A tokenizer run: the shared run settings plus model, data and loss weights.
    model.image_size follows data.image_size."""

    output_dir: str = "outputs/tokenizer"
    model: VQWAEConfig = field(default_factory=VQWAEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.model.image_size != self.data.image_size:
            self.model = dataclasses.replace(self.model, image_size=self.data.image_size)
