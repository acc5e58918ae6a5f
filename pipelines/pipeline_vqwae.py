"""VQWAEPipeline: sample codes with the prior, decode them with the tokenizer, return images.

A pipeline folder, written by `VQWAEPipeline.save_pretrained` and read by `from_pretrained`:
    tokenizer/             the VQ-WAE tokenizer (config.json, model.safetensors, README.md)
    prior/                 the transformers causal LM (config.json with our `vqwae` metadata,
                           model.safetensors) and generation_config.json: the sampling defaults
                           (temperature, top_k, guidance_scale, and our unconditional,
                           unconditional_guidance_scale), chosen on validation by prior/train.py
    pipeline_config.json   {"pipeline": "VQWAEPipeline", "tokenizer_id": the tokenizer's identity,
                           and what the trainer recorded (validation bits per code, the sweep)}
    README.md              the model card
Folders saved before the sampling defaults moved to generation_config.json keep them in
pipeline_config.json's `sampling`; they load into the prior's generation config."""

from __future__ import annotations

import copy
import json
import numbers
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel

from infra.cards import pipeline_card, tokenizer_card
from infra.checkpointing import push_folder
from infra.files import check_saved_model, folder_megabytes, read_json, written_atomically
from infra.metrics.fid_score import FIDResult, compute_fid
from prior.model import check_matches_tokenizer, vocabulary_of
from prior.sampling import sample_codes, sampling_config, saved_sampling, settings_for_call
from tokenizer.model import VQWAE

PIPELINE_CONFIG = "pipeline_config.json"


class FolderTooLargeError(ValueError):
    """A pipeline folder larger than save_pretrained's max_mb (nothing was written)."""

    def __init__(self, message: str, megabytes: float):
        super().__init__(message)
        self.megabytes = megabytes


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
        self.tokenizer_id = tokenizer.identity()
        check_matches_tokenizer(prior, tokenizer, self.tokenizer_id)
        prior.config.vqwae["tokenizer_id"] = self.tokenizer_id  # today's identity, also for an older file
        self.tokenizer = tokenizer.eval()
        self.prior = prior.eval()
        self.config = {key: value for key, value in (config or {}).items() if key not in ("pipeline", "tokenizer_id")}
        # The sampling defaults: the prior's generation config (do_sample: the pipeline samples), with
        # those a folder saved before they moved there kept in pipeline_config.json's `sampling`.
        saved_before = self.config.pop("sampling", None) or {}
        prior.generation_config = sampling_config(prior.generation_config, do_sample=True, **saved_before)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, prior_dtype: torch.dtype = torch.float32,
                        **hub_kwargs) -> VQWAEPipeline:  # fmt: skip
        """Load a folder (or a Hub repo, downloaded with snapshot_download) holding tokenizer/,
        prior/ and pipeline_config.json; refuse a prior trained on another tokenizer. The prior
        computes in `prior_dtype` whatever its stored dtype (the shipped folder stores float16):
        float32 by default, torch.bfloat16 or torch.float16 to halve its memory on a GPU."""
        if prior_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"prior_dtype={prior_dtype!r}: use torch.float32 (the default), torch.bfloat16 or torch.float16")
        folder = Path(path_or_repo_id)
        if not folder.is_dir():
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
        prior = AutoModelForCausalLM.from_pretrained(folder / "prior", dtype=prior_dtype)
        expected = config.get("tokenizer_id")
        if not expected:
            raise ValueError(f"{folder / PIPELINE_CONFIG} records no tokenizer_id; {fix}")
        if not tokenizer.has_identity(expected):
            raise ValueError(
                f"{folder}/tokenizer is not the tokenizer this pipeline was saved with (its identity changed); "
                "the prior's codes would mean something else. Re-export the pipeline from prior/train.py"
            )
        return cls(tokenizer, prior, config)

    def save_pretrained(self, folder: str | Path, recovery: str = "free space and save it again",
                        prior_dtype: torch.dtype | None = None, max_mb: float | None = None) -> Path:  # fmt: skip
        """The pipeline folder: tokenizer/ (VQWAE.save_pretrained), prior/ (the transformers model
        with its generation_config.json: the sampling defaults), pipeline_config.json (the
        tokenizer's identity and what the trainer recorded) and a model card, README.md; where the
        config carries results records (a shipped pipeline), the tokenizer's own card shows its
        reconstruction records and the command that trained it. Written atomically: a failed write
        (a full disk) leaves an earlier folder as it was and is one line naming the file and
        `recovery`. prior_dtype: store the prior's weights in this dtype (torch.float16 halves them;
        from_pretrained computes in float32 all the same). max_mb: a folder that would be larger (MB,
        10^6 bytes) is
        refused (FolderTooLargeError) and an earlier folder stays as it was."""
        config = {"pipeline": "VQWAEPipeline", "tokenizer_id": self.tokenizer_id, **self.config}
        card = {key: value for key, value in config.items() if key != "tokenizer_id"}
        prior = self.prior if prior_dtype in (None, self.prior.dtype) else copy.deepcopy(self.prior).to(prior_dtype)
        with written_atomically(folder, f"the pipeline {folder}", recovery) as temporary:
            self.tokenizer.save_pretrained(temporary / "tokenizer")
            if "results" in config:
                self._tokenizer_card().save(temporary / "tokenizer" / "README.md")
            prior.save_pretrained(temporary / "prior", safe_serialization=True)
            (temporary / PIPELINE_CONFIG).write_text(json.dumps(config, indent=2))
            pipeline_card({**card, "sampling_defaults": self.sampling_defaults}).save(temporary / "README.md")
            if max_mb is not None and (size := folder_megabytes(temporary)) > max_mb:
                raise FolderTooLargeError(f"the pipeline folder would hold {size:.1f} MB, over the {max_mb:g} MB "
                                          f"allowed; {folder} is left as it was. Store the prior in float16 "
                                          "(prior_dtype) or allow more (max_mb)", size)  # fmt: skip
        return Path(folder)

    def _tokenizer_card(self):
        """The tokenizer's card in a shipped folder: its reconstruction records (those with a PSNR)
        and the training commands of the tokenizer stage."""
        results = [result for result in self.config["results"] if "psnr" in result["values"]]
        metrics = results[-1]["values"] if results else {}
        trained_by = [command for command in self.config.get("made_by", []) if "tokenizer/train.py" in command]
        return tokenizer_card({"data": {"source": self.config.get("data_source", "mnist")}}, metrics,
                              split=metrics.get("split", "test"), results=results, made_by=trained_by)  # fmt: skip

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
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        output_type: str = "pil",
        progress: bool = True,
        **sampling,
    ) -> VQWAEPipelineOutput:
        """Sample `n` images (class_labels: one label, n labels or "each", for a class-conditional
        prior). `sampling`: temperature, top_k, top_p, guidance_scale, unconditional,
        unconditional_guidance_scale (prior/sampling.py SAMPLING_SETTINGS); one left out takes the
        pipeline's default, the prior's generation_config.json (`generation_config`: chosen on
        validation when the prior was trained), else temperature 1, no top-k / top-p and no
        guidance. top_k=0 asks for no top-k. guidance_scale applies to class-conditional calls.

        unconditional: how a class-conditional prior draws samples without class_labels:
        `null_class` (its null-class prompt, trained on the label_dropout share of the data only) or
        `classes` (a class drawn uniformly for each sample, then that class: a draw from
        sum_y p(y) p(x | y), the model's p(x) through its stronger conditionals; guided by
        `unconditional_guidance_scale` unless guidance_scale is given)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type={output_type!r} is not allowed; choose one of ['pil', 'np', 'pt']")
        for name, value in (("n", n), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        # 0. The call's settings: the pipeline's defaults under what the call sets.
        call = settings_for_call(self.prior, n, class_labels, generator, **sampling)
        # 1. Sample code grids from the prior (KV-cached generate, special tokens masked).
        codes = sample_codes(self.prior, n, call.class_labels, call.settings, generator, batch_size, progress)
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
    def generation_config(self) -> GenerationConfig:
        """The sampling defaults of `__call__`: the prior's transformers GenerationConfig, saved as
        prior/generation_config.json."""
        return self.prior.generation_config

    @property
    def sampling_defaults(self) -> dict:
        """The sampling settings the generation config sets ({} for a prior saved without a sweep)."""
        return saved_sampling(self.generation_config)

    @property
    def codebook_size(self) -> int:
        return vocabulary_of(self.prior).codebook_size

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional prior (0: unconditional)."""
        return vocabulary_of(self.prior).num_classes
