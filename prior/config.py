"""Settings of a stage-two (prior) training run: the YAML files in configs/prior/."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import check_positive
from infra.data import DataConfig
from infra.training import RunConfig

from .model import PriorModelConfig


@dataclass
class PriorTrainConfig(RunConfig):
    """A prior run: the shared run settings, the tokenizer whose codes it models (folder or Hub
    id), the transformer size and the data. data.image_size follows the tokenizer."""

    output_dir: str = "outputs/prior"
    max_steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 6e-4
    weight_decay: float = 0.01
    tokenizer: str = ""
    class_conditional: bool = False
    num_classes: int = 10
    label_dropout: float = 0.1  # conditional: share of labels replaced by the null class (for CFG)
    encode_batch_size: int = 64  # on 2 CPU cores 64 encodes 10k digits in 6.0 s, 256 in 7.4-9.1 s (same codes)
    num_samples: int = 16  # decoded samples in the PNG grid of each validation
    # Samples a setting in the sweep that chooses the pipeline's default sampling settings on the
    # validation split (prior/sampling_choice.py; MNIST only: a digit classifier judges them). 0 = off.
    sampling_sweep: int = 200
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        super().__post_init__()
        if not self.tokenizer:
            raise ValueError("set tokenizer=PATH_OR_HUB_ID: the trained tokenizer whose codes the prior models")
        check_positive("num_classes", self.num_classes)
        check_positive("num_samples", self.num_samples)
        if 0 < self.sampling_sweep < 10:
            raise ValueError(f"sampling_sweep must be 0 (off) or >= 10 samples a setting, got {self.sampling_sweep}")
        check_positive("sampling_sweep", self.sampling_sweep, allow_zero=True)
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
