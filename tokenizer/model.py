"""VQWAE: encoder -> quantizer -> decoder, saved and loaded with the Hugging Face Hub mixin."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from infra.config import check_choice, check_positive, from_dict
from infra.files import check_saved_model

from . import legacy
from .baseline_quantizers import FiniteScalarQuantizer, FSQConfig, LibraryVectorQuantizer, VQEMAConfig
from .networks import Decoder, Encoder
from .quantizers import QuantizerOutput, VectorQuantizer, WassersteinQuantizer, is_integer_dtype
from .transport_config import TransportConfig


@dataclass
class VQWAEConfig:
    """Architecture and quantizer of a tokenizer. The defaults are the recipe (BENCHMARKS.md):
    the paper's 32x32 model; VQ-WAE with codes drawn from the first batch's encoder outputs and the
    OT term posed and solved as `TransportConfig`'s defaults say. Baselines: `quantizer` vq (our
    VQ-VAE), vq_ema and fsq (vector-quantize-pytorch, set by `vq_ema` and `fsq`)."""

    in_channels: int = 1
    image_size: int = 32
    hidden_channels: int = 128
    num_res_blocks: int = 2
    downsample: int = 4  # 32x32 -> 8x8 grid
    embedding_dim: int = 64
    codebook_size: int = 512
    quantizer: str = "wasserstein"  # wasserstein | vq | vq_ema | fsq (the last two from vector-quantize-pytorch)
    codebook_init: str = "encoder"  # encoder | randn (the reference code's)
    init_noise: float = 0.1
    transport: TransportConfig = field(default_factory=TransportConfig)
    vq_ema: VQEMAConfig = field(default_factory=VQEMAConfig)
    fsq: FSQConfig = field(default_factory=FSQConfig)

    def __post_init__(self):
        # Sections arrive as dicts from a saved config.json (the Hub mixin) or from Python callers.
        for name, section in (("transport", TransportConfig), ("vq_ema", VQEMAConfig), ("fsq", FSQConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, from_dict(section, getattr(self, name), prefix=f"model.{name}."))
        check_choice("model.quantizer", self.quantizer, ("wasserstein", "vq", "vq_ema", "fsq"))
        check_choice("model.codebook_init", self.codebook_init, ("encoder", "randn"))
        check_choice("model.downsample", self.downsample, (4, 8))
        for name in ("in_channels", "image_size", "hidden_channels", "embedding_dim"):
            check_positive(f"model.{name}", getattr(self, name))
        check_positive("model.num_res_blocks", self.num_res_blocks, allow_zero=True)
        check_positive("model.init_noise", self.init_noise, allow_zero=True)
        if self.quantizer == "fsq" and math.prod(self.fsq.levels) != self.codebook_size:
            raise ValueError(
                f"model.fsq.levels={self.fsq.levels} give {math.prod(self.fsq.levels)} codes but "
                f"model.codebook_size={self.codebook_size}; set codebook_size={math.prod(self.fsq.levels)}"
            )
        if self.codebook_size < 2:
            raise ValueError(f"model.codebook_size must be >= 2, got {self.codebook_size}")
        if self.hidden_channels % 2:
            raise ValueError(f"model.hidden_channels must be even, got {self.hidden_channels}")
        if self.image_size % self.downsample:
            fitted = math.ceil(self.image_size / self.downsample) * self.downsample
            raise ValueError(
                f"model.image_size={self.image_size} is not divisible by model.downsample={self.downsample}; "
                f"use image_size={fitted}"
            )

    @staticmethod
    def old_key_error(prefix: str, key: str) -> str | None:
        """`from_dict`'s error for an option that moved (e.g. into model.transport) or was retired."""
        return legacy.moved_error(prefix, key)

    @classmethod
    def from_saved(cls, values: dict) -> VQWAEConfig:
        """A saved config.json, in today's nested layout or the flat one of earlier versions."""
        return from_dict(cls, legacy.upgrade(values) if legacy.is_flat(values) else values, prefix="model.")

    def architecture(self) -> dict:
        """What determines a trained tokenizer's codes besides its weights (the identity hashes it):
        the networks, the codebook size and the quantizer; not how it was trained."""
        values = asdict(self)
        for training_only in ("transport", "codebook_init", "init_noise"):
            del values[training_only]
        values["vq_ema"] = {key: values["vq_ema"][key] for key in ("code_dim", "cosine_similarity")}
        return values

    @property
    def grid_size(self) -> int:
        """Side of the latent grid (8 for 32x32 images with downsample 4)."""
        return self.image_size // self.downsample


@dataclass
class VQWAEOutput:
    """reconstruction (B, C, H, W); codes (B, h, w); unweighted loss terms and batch statistics."""

    reconstruction: torch.Tensor
    codes: torch.Tensor
    reconstruction_loss: torch.Tensor
    quantizer: QuantizerOutput

    @property
    def perplexity(self) -> torch.Tensor:
        return self.quantizer.perplexity


class VQWAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vqwae",
    tags=["vq-wae", "image-tokenizer", "optimal-transport"],
    repo_url="https://github.com/vqwae/vqwae",
):
    """Vector Quantized Wasserstein Auto-Encoder (Vuong et al., ICML 2023) image tokenizer.

    encode: images (B, C, H, W) in [0, 1] -> codes (B, h, w); decode: codes -> images;
    forward: images -> `VQWAEOutput` with the reconstruction and the loss terms.
    """

    def __init__(self, config: VQWAEConfig | dict):
        super().__init__()
        # The raw dict of a config.json written before model.transport existed: kept, because the
        # identity recorded beside it (pipelines, priors, code caches) was computed from it.
        self.legacy_config = dict(config) if isinstance(config, dict) and legacy.is_flat(config) else None
        if isinstance(config, dict):
            config = VQWAEConfig.from_saved(config)
        self.config = config
        self._hub_mixin_config = config  # save_pretrained writes today's layout, whatever was loaded
        backbone = dict(
            hidden_channels=config.hidden_channels,
            num_res_blocks=config.num_res_blocks,
            downsample=config.downsample,
            embedding_dim=config.embedding_dim,
        )
        self.encoder = Encoder(config.in_channels, **backbone)
        self.decoder = Decoder(config.in_channels, **backbone)
        codebook = dict(
            codebook_size=config.codebook_size,
            embedding_dim=config.embedding_dim,
            codebook_init=config.codebook_init,
            init_noise=config.init_noise,
        )
        if config.quantizer == "vq":
            self.quantizer = VectorQuantizer(**codebook)
        elif config.quantizer == "vq_ema":
            self.quantizer = LibraryVectorQuantizer(config.codebook_size, config.embedding_dim, config.vq_ema)
        elif config.quantizer == "fsq":
            self.quantizer = FiniteScalarQuantizer(config.embedding_dim, config.fsq.levels)
        else:
            self.quantizer = WassersteinQuantizer(**codebook, grid_size=config.grid_size, transport=config.transport)

    def _check_images(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images (B, {self.config.in_channels}, H, W); got shape {tuple(images.shape)}. "
                "Convert them to the tokenizer's channel count (model.in_channels)"
            )
        if not images.dtype.is_floating_point:
            raise ValueError(
                f"images must be floating point in [0, 1], got {images.dtype}; convert uint8 pixels with "
                "infra.data.to_unit_range (x / 255)"
            )
        height, width = images.shape[-2:]
        if height % self.config.downsample or width % self.config.downsample:
            raise ValueError(
                f"images are {height}x{width} but the tokenizer needs sides divisible by "
                f"{self.config.downsample}; resize them (e.g. data.image_size={self.config.image_size})"
            )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) in [0, 1] -> codes (B, H/downsample, W/downsample), long."""
        self._check_images(images)
        return self.quantizer.encode(self.encoder(images))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long -> images (B, C, h*downsample, w*downsample)."""
        if codes.dim() != 3 or not is_integer_dtype(codes.dtype):
            raise ValueError(f"codes must be integer code grids (B, h, w), got shape {tuple(codes.shape)} {codes.dtype}")
        return self.decoder(self.quantizer.embed(codes.long()))

    def forward(self, images: torch.Tensor) -> VQWAEOutput:
        self._check_images(images)
        latents = self.encoder(images)  # (B, D, h, w)
        quantized = self.quantizer(latents)
        reconstruction = self.decoder(quantized.quantized)
        loss = torch.nn.functional.mse_loss(reconstruction.float(), images.float())
        return VQWAEOutput(reconstruction, quantized.codes, loss, quantized)

    def config_dict(self) -> dict:
        return asdict(self.config)

    def identity(self) -> str:
        """sha256 of what determines the codes: the architecture (`VQWAEConfig.architecture`:
        networks, codebook size, quantizer; not how it was trained) and the weights (less the
        Sinkhorn warm start, a training state). Two tokenizers share it only if they encode alike;
        pipelines, priors and code caches record it."""
        weights = {name: tensor for name, tensor in self.state_dict().items() if not name.endswith("code_potential")}
        return legacy.config_and_weights_digest(self.config.architecture(), weights)

    def has_identity(self, recorded: str, identity: str | None = None) -> bool:
        """Whether an identity recorded in a pipeline, prior or code cache names this tokenizer:
        today's identity (`identity` when the caller has it already), or for a tokenizer loaded
        from a flat (earlier) config.json, the one computed then."""
        if recorded == (identity if identity is not None else self.identity()):
            return True
        return self.legacy_config is not None and recorded == legacy.legacy_identity(self.legacy_config, self.state_dict())


def load_tokenizer(name_or_path: str) -> VQWAE:
    """VQWAE.from_pretrained for a folder or a Hub id, with a clear error when it is neither."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"tokenizer folder {name_or_path} has no config.json: is it a saved tokenizer (<output_dir>/final)?"
            )
        check_saved_model(path, "tokenizer", "train it again (tokenizer/train.py writes <output_dir>/final) or copy it again")
        return VQWAE.from_pretrained(path)
    if path.exists() or name_or_path.count("/") != 1 or name_or_path.startswith(("/", ".")):
        raise FileNotFoundError(f"tokenizer {name_or_path!r}: no such folder, and not a Hub repo id (USER/NAME)")
    return VQWAE.from_pretrained(name_or_path)
