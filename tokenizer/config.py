"""Settings of a stage-one (tokenizer) training run: the YAML files in configs/tokenizer/."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from infra.data import DataConfig
from infra.training import RunConfig

from .model import VQWAEConfig
from .objective import LossConfig
from .transport_chunked import fits_budget, over_budget


@dataclass
class TokenizerTrainConfig(RunConfig):
    """A tokenizer run: the shared run settings plus model, data and loss weights.
    model.image_size follows data.image_size."""

    output_dir: str = "outputs/tokenizer"
    model: VQWAEConfig = field(default_factory=VQWAEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Every N steps also solve that step's OT problem exactly (POT, CPU) and log the training
    # solver's relative cost gap and code-marginal error (ot_check/*). 0 = never.
    ot_check_every: int = 0
    # Record the warm training step once and replay it as one CUDA graph (infra/step_graph.py):
    # one launch a step instead of hundreds. One CUDA device; elsewhere the step runs eagerly.
    cuda_graph: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.cuda_graph:
            self._check_graphable()
        if self.ot_check_every < 0:
            raise ValueError(f"ot_check_every must be >= 0 (0 = never), got {self.ot_check_every}")
        if self.ot_check_every and self.model.quantizer != "wasserstein":
            raise ValueError(
                f"ot_check_every checks the OT term of VQ-WAE, but model.quantizer={self.model.quantizer!r} has "
                "none; set ot_check_every=0"
            )
        if self.model.image_size != self.data.image_size:
            self.model = dataclasses.replace(self.model, image_size=self.data.image_size)
        if self.model.quantizer == "wasserstein":
            self._check_memory_budget()

    def _check_memory_budget(self) -> None:
        """What needs a step's whole (latents x codes) matrix is refused past the OT memory budget
        (where the step works in chunks): POT's exact solver and the exact check."""
        transport, latents = self.model.transport, self.batch_size * self.model.grid_size**2
        if fits_budget(1, latents, self.model.codebook_size, transport.memory_budget_mb):
            return
        codes, budget = self.model.codebook_size, transport.memory_budget_mb
        if transport.solver == "exact":
            raise ValueError(over_budget("model.transport.solver=exact", latents, codes, budget, "use solver=sinkhorn"))
        if self.ot_check_every:
            raise ValueError(over_budget("ot_check_every", latents, codes, budget, "set ot_check_every=0"))

    def _check_graphable(self) -> None:
        """cuda_graph=true needs a step of fixed shapes and no host read: refuse what breaks that."""
        conflicts = {
            "compile=true": self.compile,  # its own graphs (compile_mode=reduce-overhead) or none
            f"gradient_accumulation_steps={self.gradient_accumulation_steps}": self.gradient_accumulation_steps > 1,
            "nonfinite_loss=skip (it reads every loss on the host)": self.nonfinite_loss == "skip",
            f"mixed_precision={self.mixed_precision}": self.mixed_precision != "no",
            "model.transport.solver=exact (POT runs on the host)": self.model.quantizer == "wasserstein"
            and self.model.transport.solver == "exact",
            "model.quantizer=vq_ema (its codebook update reads the host)": self.model.quantizer == "vq_ema",
        }
        for setting, conflicts_with_graph in conflicts.items():
            if conflicts_with_graph:
                raise ValueError(f"cuda_graph=true cannot record a step with {setting}; drop one of the two")
