"""VQWAE: encoder -> quantizer -> decoder, saved and loaded with the Hugging Face Hub mixin."""

import math
from dataclasses import asdict, dataclass, field

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .baseline_quantizers import FiniteScalarQuantizer, LibraryVectorQuantizer
from .config import check_choice, check_positive
from .networks import Decoder, Encoder
from .quantizers import QuantizerOutput, VectorQuantizer, WassersteinQuantizer


@dataclass
class VQWAEConfig:
    """Architecture and quantizer of a tokenizer. Defaults: the paper's 32x32 model; VQ-WAE with
    codes initialised from encoder outputs, one global OT problem a step against uniform code
    weights, solved by warm-started Sinkhorn (epsilon = 0.1 x the mean nearest-code cost) whose
    code potential assigns each latent to its Laguerre cell (see BENCHMARKS.md for the sweep)."""

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
    ot_scope: str = "global"  # global | position
    ot_solver: str = "sinkhorn"  # sinkhorn | exact
    learn_code_weights: bool = False  # the paper's uniform pi; true = the reference code's learnable pi
    sinkhorn_epsilon: float = 0.1
    sinkhorn_epsilon_scale: str = "nearest"  # nearest | mean
    sinkhorn_iterations: int = 50
    sinkhorn_tolerance: float = 1e-3
    sinkhorn_check_every: int = 50  # absorb the scalings and test the tolerance every N iterations
    sinkhorn_warm_start: bool = True
    sinkhorn_plan: str = "assignment"  # assignment (Laguerre cells of the code potential) | entropic
    sinkhorn_step_bound: float = 0.0  # > 0: a block moves a code potential by <= this x eps (0 = unbounded)
    # > 0: semi-relaxed OT, the code marginal held to pi by this x cost scale x KL (0 = exact marginals)
    sinkhorn_code_relaxation: float = 0.0
    # > 0 (assignment plan): subgradient steps on the unregularised dual after Sinkhorn, so the
    # Laguerre cells solve the problem without entropy (BENCHMARKS.md section 0, OT gap)
    sinkhorn_dual_steps: int = 0
    # > 0: the dual steps choose each latent's cell among its this many nearest codes under the
    # Sinkhorn potential (one top-c pass, then (N, c) work a step instead of (N, K)); 0 = all codes
    sinkhorn_dual_candidates: int = 0
    # What the OT term pulls each latent towards (assignment plan): `cell`, its OT cell's code (the
    # paper's gradient), or `nearest`, the code that decodes it; the codebook is trained by OT either way.
    ot_encoder_target: str = "cell"
    exact_max_iterations: int = 500_000
    # Baselines from vector-quantize-pytorch. vq_ema: VectorQuantize with k-means init, EMA,
    # dead-code expiry and the rotation trick; fsq: FSQ, codebook_size = the product of fsq_levels.
    ema_decay: float = 0.99  # 0.99 beat the library README's 0.8 on MNIST validation (BENCHMARKS.md)
    dead_code_threshold: float = 2.0
    code_dim: int = 0  # vq_ema: 0 = embedding_dim; lower = codes in a projected space
    cosine_similarity: bool = False  # vq_ema: l2-normalised latents and codes
    fsq_levels: list[int] = field(default_factory=lambda: [8, 8, 8])

    def __post_init__(self):
        check_choice("model.quantizer", self.quantizer, ("wasserstein", "vq", "vq_ema", "fsq"))
        check_choice("model.codebook_init", self.codebook_init, ("encoder", "randn"))
        check_choice("model.ot_scope", self.ot_scope, ("global", "position"))
        check_choice("model.ot_solver", self.ot_solver, ("sinkhorn", "exact"))
        check_choice("model.sinkhorn_plan", self.sinkhorn_plan, ("entropic", "assignment"))
        check_choice("model.ot_encoder_target", self.ot_encoder_target, ("cell", "nearest"))
        check_choice("model.sinkhorn_epsilon_scale", self.sinkhorn_epsilon_scale, ("mean", "nearest"))
        check_choice("model.downsample", self.downsample, (4, 8))
        for name in ("in_channels", "image_size", "hidden_channels", "embedding_dim", "sinkhorn_iterations"):
            check_positive(f"model.{name}", getattr(self, name))
        for name in ("sinkhorn_epsilon", "sinkhorn_tolerance", "sinkhorn_check_every", "exact_max_iterations"):
            check_positive(f"model.{name}", getattr(self, name))
        check_positive("model.num_res_blocks", self.num_res_blocks, allow_zero=True)
        check_positive("model.init_noise", self.init_noise, allow_zero=True)
        check_positive("model.sinkhorn_step_bound", self.sinkhorn_step_bound, allow_zero=True)
        check_positive("model.sinkhorn_code_relaxation", self.sinkhorn_code_relaxation, allow_zero=True)
        check_positive("model.sinkhorn_dual_steps", self.sinkhorn_dual_steps, allow_zero=True)
        check_positive("model.sinkhorn_dual_candidates", self.sinkhorn_dual_candidates, allow_zero=True)
        if self.sinkhorn_dual_steps and self.sinkhorn_plan != "assignment":
            raise ValueError(
                "model.sinkhorn_dual_steps > 0 needs model.sinkhorn_plan=assignment (it refines the cells)"
            )
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must lie in (0, 1), got {self.ema_decay}")
        check_positive("model.dead_code_threshold", self.dead_code_threshold, allow_zero=True)
        check_positive("model.code_dim", self.code_dim, allow_zero=True)
        if self.quantizer == "fsq":
            if not self.fsq_levels or any(level < 3 for level in self.fsq_levels):
                raise ValueError(
                    f"model.fsq_levels must be a list of levels >= 3, e.g. [8, 8, 8]; got {self.fsq_levels}"
                )
            if math.prod(self.fsq_levels) != self.codebook_size:
                raise ValueError(
                    f"model.fsq_levels={self.fsq_levels} give {math.prod(self.fsq_levels)} codes but "
                    f"model.codebook_size={self.codebook_size}; set codebook_size={math.prod(self.fsq_levels)}"
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

    def __init__(self, config: VQWAEConfig):
        super().__init__()
        if isinstance(config, dict):
            config = VQWAEConfig(**config)
        self.config = config
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
            self.quantizer = LibraryVectorQuantizer(
                config.codebook_size,
                config.embedding_dim,
                code_dim=config.code_dim,
                decay=config.ema_decay,
                dead_code_threshold=config.dead_code_threshold,
                cosine_similarity=config.cosine_similarity,
            )
        elif config.quantizer == "fsq":
            self.quantizer = FiniteScalarQuantizer(config.embedding_dim, config.fsq_levels)
        else:
            self.quantizer = WassersteinQuantizer(
                **codebook,
                grid_size=config.grid_size,
                scope=config.ot_scope,
                solver=config.ot_solver,
                learn_code_weights=config.learn_code_weights,
                sinkhorn_options=dict(
                    epsilon=config.sinkhorn_epsilon,
                    epsilon_scale=config.sinkhorn_epsilon_scale,
                    max_iterations=config.sinkhorn_iterations,
                    tolerance=config.sinkhorn_tolerance,
                    check_every=config.sinkhorn_check_every,
                    plan_type=config.sinkhorn_plan,
                    step_bound=config.sinkhorn_step_bound,
                    code_relaxation=config.sinkhorn_code_relaxation,
                    dual_steps=config.sinkhorn_dual_steps,
                    dual_candidates=config.sinkhorn_dual_candidates,
                ),
                exact_max_iterations=config.exact_max_iterations,
                warm_start=config.sinkhorn_warm_start,
                encoder_target=config.ot_encoder_target,
            )

    def _check_images(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images (B, {self.config.in_channels}, H, W); got shape {tuple(images.shape)}. "
                "Convert them to the tokenizer's channel count (model.in_channels)"
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
        return self.decoder(self.quantizer.embed(codes))

    def forward(self, images: torch.Tensor) -> VQWAEOutput:
        self._check_images(images)
        latents = self.encoder(images)  # (B, D, h, w)
        quantized = self.quantizer(latents)
        reconstruction = self.decoder(quantized.quantized)
        loss = torch.nn.functional.mse_loss(reconstruction.float(), images.float())
        return VQWAEOutput(reconstruction, quantized.codes, loss, quantized)

    def config_dict(self) -> dict:
        return asdict(self.config)


def load_tokenizer(name_or_path: str) -> VQWAE:
    """VQWAE.from_pretrained for a folder or a Hub id, with a clear error when it is neither."""
    from pathlib import Path

    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"tokenizer folder {name_or_path} has no config.json: is it a saved tokenizer (<output_dir>/final)?"
            )
        return VQWAE.from_pretrained(path)
    if path.exists() or name_or_path.count("/") != 1 or name_or_path.startswith(("/", ".")):
        raise FileNotFoundError(f"tokenizer {name_or_path!r}: no such folder, and not a Hub repo id (USER/NAME)")
    return VQWAE.from_pretrained(name_or_path)
