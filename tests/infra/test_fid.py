"""FID offline: converted Inception weights, torch-fidelity scores against a direct computation."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from infra.data import DataConfig, load_images
from infra.metrics import fid_score


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path_factory.getbasetemp() / "vqwae-cache"))


@pytest.fixture(scope="module")
def mnist_images():
    return load_images(DataConfig(image_size=32), 1)["test"][:40]["pixel_values"].to(torch.uint8)


def extractor():
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    weights = fid_score.resolve_inception_weights()
    return FeatureExtractorInceptionV3(
        fid_score.EXTRACTOR, ["2048"], feature_extractor_weights_path=str(weights)
    ).eval()


def test_converted_weights_match_the_torchscript_network(mnist_images):
    images = F.interpolate(mnist_images[:3].float().expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear")
    images = images.round().clamp(0, 255).to(torch.uint8)
    torchscript = fid_score.load_torchscript_inception(fid_score.fid_helper_torchscript())
    with torch.no_grad():
        ours = extractor()(images)[0]
        reference = torchscript((images.float() - 128) / 128)
    reference = reference.mean(dim=(2, 3)) if reference.dim() == 4 else reference
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def features(images):
    with torch.no_grad():
        return extractor()(images.expand(-1, 3, -1, -1).contiguous())[0].double().numpy()


def frechet(first, second):
    mean1, mean2 = first.mean(0), second.mean(0)
    cov1, cov2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(cov1 @ cov2).real
    return float(((mean1 - mean2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root))


def test_fid_matches_a_direct_frechet_distance(mnist_images):
    first, second = mnist_images[:20], mnist_images[20:40]
    result = fid_score.compute_fid(first, second, cache=False)
    expected = frechet(features(first), features(second))
    assert result.fid == pytest.approx(expected, rel=1e-3)
    assert result.n == 20 and result.reference == "tensor"


def test_frechet_distance_is_the_closed_form_on_diagonal_statistics():
    """In 2048 dimensions with full-rank statistics: for diagonal covariances the distance is
    |mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2)); rotating both by one orthogonal matrix changes
    nothing (the same closed form for dense covariances)."""
    rng = np.random.default_rng(0)
    dimension = 2048
    mu1, mu2 = rng.normal(size=dimension), rng.normal(size=dimension)
    s1, s2 = rng.uniform(0.1, 2.0, dimension), rng.uniform(0.1, 2.0, dimension)
    expected = float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum())
    diagonal = fid_score.frechet_distance({"mu": mu1, "sigma": np.diag(s1)}, {"mu": mu2, "sigma": np.diag(s2)})
    assert diagonal == pytest.approx(expected, rel=1e-6)
    rotation, _ = np.linalg.qr(rng.normal(size=(256, 256)))  # 256 dimensions: sqrtm of a dense matrix
    m1, m2, d1, d2 = mu1[:256], mu2[:256], s1[:256], s2[:256]
    dense = fid_score.frechet_distance(
        {"mu": rotation @ m1, "sigma": rotation @ np.diag(d1) @ rotation.T},
        {"mu": rotation @ m2, "sigma": rotation @ np.diag(d2) @ rotation.T},
    )
    assert dense == pytest.approx(float(((m1 - m2) ** 2).sum() + (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum()), rel=1e-5)


def test_fid_of_a_set_against_itself_is_zero(mnist_images):
    assert abs(fid_score.compute_fid(mnist_images[:20], mnist_images[:20], cache=False).fid) < 1e-2


def test_reference_split_and_float_images(mnist_images):
    result = fid_score.compute_fid(mnist_images[:12].float() / 255, "mnist:test", reference_n=12)
    assert result.fid == pytest.approx(0.0, abs=1e-2)  # the same 12 images, as floats in [0, 1]
    assert result.reference == "mnist:test" and result.reference_n == 12
    with pytest.raises(ValueError, match="SOURCE:SPLIT"):
        fid_score.compute_fid(mnist_images[:4], "mnist")


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_score, "fid_helper_torchscript", lambda: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="no FID Inception weights offline: install them with"):
        fid_score.resolve_inception_weights()
    with pytest.raises(FileNotFoundError, match="do not exist"):
        fid_score.resolve_inception_weights(tmp_path / "nope.pth")


def test_torch_fidelity_cache_file_is_preferred(tmp_path, monkeypatch):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / fid_score.FIDELITY_WEIGHTS).write_bytes(b"x")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert fid_score.resolve_inception_weights() == checkpoints / fid_score.FIDELITY_WEIGHTS


def test_rfid_by_reference_name_equals_rfid_against_the_originals():
    """evaluate --rfid names the split so its statistics are cached: same images, same score."""
    from tokenizer import VQWAE, VQWAEConfig
    from tokenizer.evaluation import reconstruction_fid

    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32)).eval()
    split = load_images(DataConfig(image_size=32), 1)["test"].select(range(12))
    by_tensor = reconstruction_fid(model, split, batch_size=8)
    by_name = reconstruction_fid(model, split, batch_size=8, reference="mnist:test")
    assert by_tensor.reference == "originals" and by_name.reference == "mnist:test" and by_name.reference_n == 12
    assert by_tensor.fid > 1.0  # an untrained tokenizer: far from the originals
    assert by_name.fid == pytest.approx(by_tensor.fid, rel=1e-4)


def test_reference_statistics_are_cached(mnist_images, monkeypatch):
    """A second call with the same SOURCE:SPLIT reference computes features of the samples only,
    and scores the same FID."""
    calls = []
    original = fid_score.inception_features
    monkeypatch.setattr(
        fid_score, "inception_features", lambda images, *a, **k: calls.append(len(images)) or original(images, *a, **k)
    )
    first = fid_score.compute_fid(mnist_images[:6], "mnist:test", reference_n=10)
    second = fid_score.compute_fid(mnist_images[:6], "mnist:test", reference_n=10)
    assert calls == [10, 6, 6] and first.fid == pytest.approx(second.fid, abs=1e-9)
    # The same reference rebuilt with other images (same name, size and count) is scored afresh.
    reference_images = fid_score.reference_images
    monkeypatch.setattr(fid_score, "reference_images", lambda *args: 255 - reference_images(*args))
    third = fid_score.compute_fid(mnist_images[:6], "mnist:test", reference_n=10)
    assert calls == [10, 6, 6, 10, 6] and abs(third.fid - first.fid) > 1.0


def quickstart_reference_tag() -> str:
    """The tag this machine computes for the quickstart's reference: the first 500 test images, 32 px."""
    images = fid_score.reference_images("mnist:test", 32, 1, 500)
    return fid_score.reference_tag("mnist:test", images, fid_score.resolve_inception_weights())


def test_the_shipped_reference_features_are_the_extractors(mnist_images):
    """models/fid-reference-mnist holds the features of the first 500 MNIST test images at 32 px,
    named by the tag this machine computes for them; its rows are the extractor's features."""
    tag = quickstart_reference_tag()
    shipped = fid_score.shipped_reference_features(tag, 500)
    assert shipped is not None and shipped.shape == (500, 2048)
    np.testing.assert_allclose(shipped[:16].numpy(), features(mnist_images[:16]), rtol=1e-4, atol=1e-4)
    assert fid_score.shipped_reference_features(tag[:-4] + "0000", 500) is None  # other images, same count


def test_the_quickstarts_reference_costs_no_inception(mnist_images, monkeypatch):
    """With an empty cache, FID against the first 500 test images runs the extractor on the samples
    only, and scores the distance the shipped features give."""
    calls = []
    original = fid_score.inception_features
    monkeypatch.setattr(
        fid_score, "inception_features", lambda images, *a, **k: calls.append(len(images)) or original(images, *a, **k)
    )
    result = fid_score.compute_fid(mnist_images[20:40], "mnist:test", reference_n=500)
    assert calls == [20] and result.reference_n == 500
    shipped = fid_score.shipped_reference_features(quickstart_reference_tag(), 500)
    expected = frechet(shipped.numpy(), features(mnist_images[20:40]))
    assert result.fid == pytest.approx(expected, rel=1e-3)


def test_damaged_shipped_features_are_computed_instead(tmp_path):
    (tmp_path / "features.npz").write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="damaged"):
        assert fid_score.shipped_reference_features("any", 500, folder=tmp_path) is None
