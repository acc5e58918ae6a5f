"""The metrics in every table and model card, against independent computations: SSIM against
scikit-image's `structural_similarity` with the same settings, PSNR against its closed form,
perplexity from `torch.unique` counts and its uniform case."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from infra.metrics.reconstruction import code_histogram, code_perplexity, perplexity_from_counts, psnr, ssim


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_is_scikit_images(channels):
    generator = torch.Generator().manual_seed(0)
    references = torch.rand(4, channels, 32, 32, generator=generator)
    noise = torch.tensor([0.0, 0.02, 0.1, 0.4]).view(4, 1, 1, 1)
    images = (references + noise * torch.randn(references.shape, generator=generator)).clamp(0, 1)
    ours = ssim(images, references)
    for index in range(4):
        # Wang et al.'s settings: an 11 x 11 Gaussian window of sigma 1.5 (scikit-image truncates at
        # 3.5 sigma: radius 5), population covariance, the mean over the region the window fits.
        expected = structural_similarity(
            images[index].permute(1, 2, 0).double().numpy(), references[index].permute(1, 2, 0).double().numpy(),
            data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=2,
        )  # fmt: skip
        assert ours[index].item() == pytest.approx(expected, abs=2e-5)
    assert ours[0].item() == pytest.approx(1.0, abs=1e-6) and ours[3] < ours[2] < ours[1] < 1


def test_psnr_is_the_closed_form():
    references = torch.zeros(2, 1, 8, 8)
    images = references + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # mse 1e-2 and 1e-4
    assert psnr(images, references).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)


def test_perplexity_from_independent_counts():
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 40, (6, 8, 8), generator=generator) ** 2 % 50  # skewed, some codes unused
    values, counts = torch.unique(codes, return_counts=True)
    shares = counts.double() / counts.sum()
    expected = math.exp(-(shares * shares.log()).sum().item())
    assert code_perplexity(codes, 50).item() == pytest.approx(expected, rel=1e-5)
    histogram = code_histogram(codes, 50)
    assert histogram[values].tolist() == counts.float().tolist() and histogram.sum() == codes.numel()
    # Every code used equally: perplexity K; one code only: 1.
    assert perplexity_from_counts(torch.full((512,), 7.0)).item() == pytest.approx(512, rel=1e-5)
    assert perplexity_from_counts(torch.tensor([0.0, 9.0, 0.0])).item() == pytest.approx(1.0)
    assert np.isfinite(perplexity_from_counts(torch.zeros(4)).item())
