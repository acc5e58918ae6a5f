"""Reconstruction and codebook metrics: PSNR, SSIM, perplexity. Pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code in `codes` (any shape) -> (codebook_size,) float. A scatter-add, not
    `torch.bincount`, whose output size depends on the data and so syncs a GPU with the host."""
    codes = codes.flatten()
    counts = torch.zeros(codebook_size, dtype=torch.long, device=codes.device)
    return counts.scatter_add_(0, codes, torch.ones_like(codes)).float()


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code-use histogram `counts` (K,): K when every code is used equally."""
    probabilities = counts / counts.sum().clamp_min(1.0)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
    return entropy.exp()


def code_perplexity(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Perplexity of the codes in `codes` (any shape) over `codebook_size` codes."""
    return perplexity_from_counts(code_histogram(codes, codebook_size))


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of images vs references, both (B, C, H, W) in [0, data_range] -> (B,)."""
    mse = (images.float() - references.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    coordinates = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    kernel = torch.exp(-(coordinates**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] * kernel[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(
    images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5, valid region, channel
    mean) of images vs references (B, C, H, W) -> (B,)."""
    images, references = images.float(), references.float()
    channels = images.shape[1]
    window = _gaussian_window(window_size, sigma, channels, images.device)

    def blur(tensor: torch.Tensor) -> torch.Tensor:
        return F.conv2d(tensor, window, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mean_x, mean_y = blur(images), blur(references)
    var_x = blur(images * images) - mean_x**2
    var_y = blur(references * references) - mean_y**2
    covariance = blur(images * references) - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(1)
