"""benchmarks/sharpness.py: the detail kept by reconstructions, against reconstructions whose
answer is known (the originals themselves: ratio 1; a box blur: below 1, by the blur's own ratio)."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks import sharpness
from infra.data import DataConfig, load_images
from infra.photos import gradient_statistics
from tokenizer import VQWAE, VQWAEConfig


@pytest.fixture
def tokenizer(tmp_path):
    VQWAE(VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32)).save_pretrained(tmp_path)
    return str(tmp_path)


def test_gradient_ratio_is_one_for_the_originals_and_the_blurs_for_a_blur(tokenizer, monkeypatch):
    originals = load_images(DataConfig(image_size=32), 1)["test"][:20]["pixel_values"].float() / 255
    monkeypatch.setattr(sharpness, "reconstruct", lambda model, images: images.float() / 255)
    same = sharpness.sharpness(tokenizer, "mnist", "test", 20)
    assert same["gradient_ratio"] == pytest.approx(1.0) and same["psnr"] > 100 and same["n"] == 20

    def blur(images):
        return F.avg_pool2d(F.pad(images, [1] * 4, mode="replicate"), 3, 1)

    monkeypatch.setattr(sharpness, "reconstruct", lambda model, images: blur(images.float() / 255))
    blurred = sharpness.sharpness(tokenizer, "mnist", "test", 20)
    expected = gradient_statistics((blur(originals) * 255).round().to(torch.uint8).numpy()).mean()
    expected /= gradient_statistics((originals * 255).round().to(torch.uint8).numpy()).mean()
    assert blurred["gradient_ratio"] == pytest.approx(float(expected), rel=1e-6) and blurred["gradient_ratio"] < 0.9
