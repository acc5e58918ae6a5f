"""The strongest VQ baselines, from `vector-quantize-pytorch` (not hand-written), behind our quantizer
interface so they run on the same encoder/decoder, trainer and metrics as VQ-WAE.

`LibraryVectorQuantizer`: its `VectorQuantize` set up as its README recommends for high code use:
k-means initialisation on the first batch, EMA codebook updates, expiry of dead codes (EMA cluster
size below a threshold: replaced by batch latents), the rotation trick for the gradient through
the quantizer; optionally a lower code dimension or cosine similarity.
`FiniteScalarQuantizer`: FSQ (Mentzer et al., 2023): project to a few dimensions, bound each and
round it to a fixed number of levels; the codebook is the implicit grid (8 x 8 x 8 = 512 codes).

Both take latents (B, D, h, w) and return a `QuantizerOutput`; `encode` gives codes (B, h, w)
without touching any codebook statistics, and `embed` maps codes back to (B, D, h, w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from infra.config import check_positive

from .quantizers import QuantizerOutput, check_codes, code_statistics


@dataclass
class VQEMAConfig:
    """model.vq_ema: the VectorQuantize baseline's library settings."""

    decay: float = 0.99  # 0.99 beat the library README's 0.8 on MNIST validation (BENCHMARKS.md)
    dead_code_threshold: float = 2.0  # EMA cluster size below which a code is replaced by a batch latent
    code_dim: int = 0  # 0 = embedding_dim; lower = codes in a projected space
    cosine_similarity: bool = False  # l2-normalised latents and codes

    def __post_init__(self):
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"model.vq_ema.decay must lie in (0, 1), got {self.decay}")
        check_positive("model.vq_ema.dead_code_threshold", self.dead_code_threshold, allow_zero=True)
        check_positive("model.vq_ema.code_dim", self.code_dim, allow_zero=True)


@dataclass
class FSQConfig:
    """model.fsq: the levels of each FSQ dimension; their product is the codebook size."""

    levels: list[int] = field(default_factory=lambda: [8, 8, 8])

    def __post_init__(self):
        if not self.levels or any(level < 3 for level in self.levels):
            raise ValueError(f"model.fsq.levels must be a list of levels >= 3, e.g. [8, 8, 8]; got {self.levels}")


class LibraryVectorQuantizer(nn.Module):
    """`vector_quantize_pytorch.VectorQuantize` with EMA, k-means init, dead-code expiry and the
    rotation trick. Its commitment loss (weight 1 inside; `loss.commitment` weighs it) is returned
    as `commitment_loss`; the codebook learns by EMA, so there is no codebook loss."""

    def __init__(self, codebook_size: int, embedding_dim: int, config: VQEMAConfig, kmeans_iterations: int = 10):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize  # imported where used (seconds), by the baselines only

        self.codebook_size = codebook_size
        self.vq = VectorQuantize(
            dim=embedding_dim,
            codebook_size=codebook_size,
            codebook_dim=config.code_dim or None,  # lower than embedding_dim: projected down and back up
            decay=config.decay,
            kmeans_init=True,
            kmeans_iters=kmeans_iterations,
            threshold_ema_dead_code=config.dead_code_threshold,
            use_cosine_sim=config.cosine_similarity,
            rotation_trick=True,
            commitment_weight=1.0,
            accept_image_fmap=True,  # (B, D, h, w) in and out
        )

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(latents.device.type, enabled=False):
            quantized, codes, commitment = self.vq(latents.float())  # (B, D, h, w), (B, h, w), (1,)
        codes = codes.long()
        return QuantizerOutput(
            quantized=quantized.to(latents.dtype),
            codes=codes,
            commitment_loss=commitment.sum(),
            **code_statistics(codes, self.codebook_size),
        )

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, D, h, w) -> codes (B, h, w), in eval mode: no EMA update, init or expiry."""
        was_training = self.vq.training
        self.vq.eval()
        try:
            with torch.autocast(latents.device.type, enabled=False):
                _, codes, _ = self.vq(latents.float())
        finally:
            self.vq.train(was_training)
        return codes.long()

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> quantized latents (B, D, h, w), as `forward` returns them."""
        check_codes(codes, self.codebook_size)
        codewords = self.vq.codebook[codes]  # (B, h, w, code_dim)
        return self.vq.project_out(codewords).permute(0, 3, 1, 2)


class FiniteScalarQuantizer(nn.Module):
    """`vector_quantize_pytorch.FSQ` on `levels` (their product is the codebook size). No auxiliary
    loss: every code of the grid is reachable by construction."""

    def __init__(self, embedding_dim: int, levels: list[int]):
        super().__init__()
        from vector_quantize_pytorch import FSQ  # imported where used (seconds), by the baselines only

        self.codebook_size = math.prod(levels)
        self.fsq = FSQ(levels=list(levels), dim=embedding_dim, channel_first=True)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(latents.device.type, enabled=False):
            quantized, codes = self.fsq(latents.float())  # (B, D, h, w), (B, h, w)
        codes = codes.long()
        return QuantizerOutput(
            quantized=quantized.to(latents.dtype), codes=codes, **code_statistics(codes, self.codebook_size)
        )

    @torch.no_grad()
    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, D, h, w) -> codes (B, h, w)."""
        with torch.autocast(latents.device.type, enabled=False):
            return self.fsq(latents.float())[1].long()

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> quantized latents (B, D, h, w)."""
        check_codes(codes, self.codebook_size)
        return self.fsq.indices_to_codes(codes)
