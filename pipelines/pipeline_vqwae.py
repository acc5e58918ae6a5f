"""VQWAEPipeline: sample codes with the prior, decode them with the tokenizer, return images."""

from __future__ import annotations

import numbers
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from infra.checkpointing import push_folder
from infra.fid_score import FIDResult, compute_fid
from infra.files import check_saved_model, read_json
from prior.codes import is_identity_of, tokenizer_identity
from prior.export import PIPELINE_CONFIG, save_pipeline_folder
from prior.model import check_matches_tokenizer, vocabulary_of
from prior.sampling import sample_codes
from tokenizer.model import VQWAE


@dataclass
class VQWAEPipelineOutput:
    """images: a list of PIL images, an array (n, H, W, C) in [0, 1] or a tensor (n, C, H, W) in
    [0, 1], by output_type; codes: the sampled code grids (n, h, w)."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    codes: torch.Tensor


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    array = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in array]


class VQWAEPipeline:
    """Two-stage generation: a `transformers` prior over codes and a VQ-WAE tokenizer to decode them.

    >>> pipe = VQWAEPipeline.from_pretrained("outputs/quickstart/prior/pipeline")
    >>> images = pipe(n=16, generator=torch.Generator().manual_seed(0)).images
    """

    def __init__(self, tokenizer: VQWAE, prior: PreTrainedModel, config: dict | None = None):
        self.tokenizer_id = tokenizer_identity(tokenizer)
        check_matches_tokenizer(prior, tokenizer, self.tokenizer_id)
        prior.config.vqwae["tokenizer_id"] = self.tokenizer_id  # today's identity, also for an older file
        self.tokenizer = tokenizer.eval()
        self.prior = prior.eval()
        self.config = {"pipeline": "VQWAEPipeline", **(config or {})}

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, **hub_kwargs) -> VQWAEPipeline:
        """Load a folder (or a Hub repo, downloaded with snapshot_download) holding tokenizer/,
        prior/ and pipeline_config.json; refuse a prior trained on another tokenizer."""
        folder = Path(path_or_repo_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(path_or_repo_id), **hub_kwargs))
        missing = [part for part in ("tokenizer", "prior", PIPELINE_CONFIG) if not (folder / part).exists()]
        if missing:
            raise ValueError(
                f"{folder} is not a complete pipeline folder: missing {missing}. prior/train.py writes one to "
                "<output_dir>/pipeline; VQWAEPipeline(tokenizer=..., prior=...).save_pretrained(dir) makes one"
            )
        # Each file is checked before its loader meets it: a damaged one is one line naming it.
        fix = "export the pipeline again (prior/train.py writes <output_dir>/pipeline) or copy it again"
        config = read_json(folder / PIPELINE_CONFIG, fix)
        for part in ("tokenizer", "prior"):
            check_saved_model(folder / part, part, fix)
        tokenizer = VQWAE.from_pretrained(folder / "tokenizer")
        prior = AutoModelForCausalLM.from_pretrained(folder / "prior")
        expected = config.get("tokenizer_id")
        if not expected:
            raise ValueError(f"{folder / PIPELINE_CONFIG} records no tokenizer_id; {fix}")
        if not is_identity_of(tokenizer, expected):
            raise ValueError(
                f"{folder}/tokenizer is not the tokenizer this pipeline was saved with (its identity changed); "
                "the prior's codes would mean something else. Re-export the pipeline from prior/train.py"
            )
        return cls(tokenizer, prior, {key: value for key, value in config.items() if key != "tokenizer_id"})

    def save_pretrained(self, folder: str | Path) -> Path:
        """tokenizer/ + prior/ + pipeline_config.json, written atomically."""
        extra = {key: value for key, value in self.config.items() if key != "pipeline"}
        return save_pipeline_folder(folder, self.tokenizer, self.prior, self.tokenizer_id, extra)

    def push_to_hub(self, repo_id: str) -> str:
        """Save to a temporary folder and upload it as the Hub repo `repo_id`."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(Path(folder) / "pipeline")
            return push_folder(Path(folder) / "pipeline", repo_id)

    def to(self, device: str | torch.device) -> VQWAEPipeline:
        self.tokenizer.to(device)
        self.prior.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.tokenizer.parameters()).device

    @torch.no_grad()
    def __call__(
        self,
        n: int = 16,
        class_labels=None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        output_type: str = "pil",
        progress: bool = True,
        unconditional: str | None = None,
    ) -> VQWAEPipelineOutput:
        """Sample `n` images. Sampling settings left as None take the pipeline's defaults
        (`sampling_defaults`: chosen on validation when the prior was trained), else temperature 1,
        no top-k / top-p and no guidance; top_k=0 asks for no top-k explicitly. guidance_scale
        applies to class-conditional calls (class_labels given) only.

        unconditional: how a class-conditional prior draws samples without class_labels:
        `null_class` (its null-class prompt, trained on the label_dropout share of the data only) or
        `classes` (a class drawn uniformly for each sample, then that class: a draw from
        sum_y p(y) p(x | y), the model's p(x) through its stronger conditionals; guided by the
        pipeline's `unconditional_guidance_scale` unless guidance_scale is given)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type={output_type!r} is not allowed; choose one of ['pil', 'np', 'pt']")
        for name, value in (("n", n), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        # 0. Settings the caller left open come from the pipeline.
        defaults = self.sampling_defaults
        if temperature is None:
            temperature = defaults.get("temperature", 1.0)
        if top_k is None and top_p is None:
            top_k = defaults.get("top_k")
        if unconditional is None:
            unconditional = defaults.get("unconditional", "null_class")
        if unconditional not in ("null_class", "classes"):
            raise ValueError(f"unconditional={unconditional!r} is not allowed; choose one of ['null_class', 'classes']")
        guidance_default = "guidance_scale" if class_labels is not None else None
        if class_labels is None and unconditional == "classes" and self.num_classes:
            # Drawn from the call's generator first, so the same seed gives the same classes.
            class_labels = torch.randint(0, self.num_classes, (n,), generator=generator)
            guidance_default = "unconditional_guidance_scale"
        if guidance_scale is None:
            guidance_scale = defaults.get(guidance_default, 1.0) if guidance_default else 1.0
        # 1. Sample code grids from the prior (KV-cached generate, special tokens masked).
        codes = sample_codes(
            self.prior, n, class_labels, guidance_scale, temperature, top_k, top_p, generator, batch_size,
            progress=progress,
        )  # fmt: skip
        # 2. Decode them with the tokenizer, batch by batch.
        images = self.decode(codes, batch_size, progress)
        # 3. Postprocess to the requested type.
        if output_type == "np":
            return VQWAEPipelineOutput(images.permute(0, 2, 3, 1).numpy(), codes)
        if output_type == "pt":
            return VQWAEPipelineOutput(images, codes)
        return VQWAEPipelineOutput(_to_pil(images), codes)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Code grids (n, h, w) -> images (n, C, H, W) in [0, 1] on the CPU, `batch_size` at a time;
        also for codes sampled elsewhere (benchmarks/gpu/gpu_prior.py samples them on a GPU). The
        tokenizer's decode checks the grids (integer dtype, shape, range)."""
        images = []
        for start in tqdm(range(0, len(codes), batch_size), desc="decode", disable=not progress, leave=False):
            batch = codes[start : start + batch_size].to(self.device)
            images.append(self.tokenizer.decode(batch).clamp(0, 1).cpu())
        return torch.cat(images)

    def fid(self, n: int = 10000, reference: str = "mnist:test", reference_n: int | None = None, batch_size: int = 64,
            generator: torch.Generator | None = None, weights_path: str | None = None, **sampling) -> FIDResult:  # fmt: skip
        """FID of `n` samples (drawn with `sampling`, e.g. class_labels="each", guidance_scale=2)
        against `reference` (SOURCE:SPLIT), through torch-fidelity's Inception and FID."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        images = self(n=n, generator=generator, batch_size=batch_size, output_type="pt", **sampling).images
        return compute_fid(images, reference, reference_n=reference_n, weights_path=weights_path, batch_size=batch_size)

    @property
    def sampling_defaults(self) -> dict:
        """The sampling settings `__call__` uses when given none (pipeline_config.json `sampling`;
        empty for a pipeline saved without a sweep)."""
        return dict(self.config.get("sampling") or {})

    @property
    def codebook_size(self) -> int:
        return vocabulary_of(self.prior).codebook_size

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional prior (0: unconditional)."""
        return vocabulary_of(self.prior).num_classes
