"""The training objective: weights of each loss term and their weighted sum.

The model returns unweighted terms; how much each counts is a training choice, kept here.
VQ-WAE (reference code): MSE + beta * OT + KL(pi || uniform). VQ-VAE: MSE + codebook + beta_c *
commitment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infra.config import check_positive

from .model import VQWAEOutput


@dataclass
class LossConfig:
    """transport: beta, the OT weight per grid position (the quantizer sums over positions, so
    per-position and global scopes weigh the same); weights_kl: the KL(pi || uniform) weight;
    commitment / codebook: the VQ-VAE terms."""

    transport: float = 3e-3
    weights_kl: float = 1.0
    commitment: float = 0.25
    codebook: float = 1.0

    def __post_init__(self):
        for name in ("transport", "weights_kl", "commitment", "codebook"):
            check_positive(f"loss.{name}", getattr(self, name), allow_zero=True)


@dataclass
class LossTerms:
    """total: the scalar to minimise; terms: each weighted term, for logging."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def total_loss(output: VQWAEOutput, weights: LossConfig) -> LossTerms:
    """Weighted sum of the reconstruction loss and whatever terms the quantizer produced."""
    quantizer = output.quantizer
    terms = {"reconstruction": output.reconstruction_loss}
    for name, value in (
        ("transport", quantizer.transport_loss),
        ("weights_kl", quantizer.weights_kl),
        ("commitment", quantizer.commitment_loss),
        ("codebook", quantizer.codebook_loss),
    ):
        if value is not None:
            terms[name] = getattr(weights, name) * value
    return LossTerms(total=sum(terms.values()), terms=terms)
