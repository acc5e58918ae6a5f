"""Convolutional encoder and decoder of VQ-WAE (the paper's 32x32 architecture, configurable).

Encoder: two (or three) 4x4 stride-2 convolutions, a 3x3 convolution, residual blocks (each with
its own weights), a 1x1 projection to the embedding dimension. The decoder mirrors it and ends
linear: images live in [0, 1] but the network is not squashed, as in the reference code.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))), the block of the reference (SQ-VAE) code."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.block(hidden)


class Encoder(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> latents (B, D, H/downsample, W/downsample)."""

    def __init__(
        self, in_channels: int, hidden_channels: int, num_res_blocks: int, downsample: int, embedding_dim: int
    ):
        super().__init__()
        num_strided = int(math.log2(downsample))
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(num_strided):
            # The first stride-2 layers use half the width, the last one the full width.
            out_channels = hidden_channels if index == num_strided - 1 else hidden_channels // 2
            layers += [nn.Conv2d(channels, out_channels, 4, stride=2, padding=1), nn.ReLU()]
            channels = out_channels
        layers.append(nn.Conv2d(channels, hidden_channels, 3, padding=1))
        layers += [ResidualBlock(hidden_channels) for _ in range(num_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(hidden_channels, embedding_dim, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class Decoder(nn.Module):
    """Quantized latents (B, D, h, w) -> images (B, C, h*downsample, w*downsample), linear output."""

    def __init__(
        self, out_channels: int, hidden_channels: int, num_res_blocks: int, downsample: int, embedding_dim: int
    ):
        super().__init__()
        num_strided = int(math.log2(downsample))
        layers: list[nn.Module] = [nn.Conv2d(embedding_dim, hidden_channels, 3, padding=1)]
        layers += [ResidualBlock(hidden_channels) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        channels = hidden_channels
        for index in range(num_strided):
            last = index == num_strided - 1
            next_channels = out_channels if last else hidden_channels // 2
            layers.append(nn.ConvTranspose2d(channels, next_channels, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            channels = next_channels
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)
