"""The digit classifier that judges generated samples: trained on real digits it reads real test
digits as well as its recorded test accuracy says and noise at chance; its cache is reused, and
rebuilt when damaged; its scores and feature FID against independent computations."""

import shutil

import numpy as np
import pytest
import torch

from infra.data import DataConfig, load_images, to_unit_range
from infra.metrics import digit_classifier
from infra.metrics.digit_classifier import Judgement, feature_fid, judge, load_classifier


@pytest.fixture
def small(small_digit_classifier):
    """The session's small classifier (tests/conftest.py), in a folder of this test's own."""
    return small_digit_classifier


def test_real_digits_at_its_test_accuracy_and_noise_at_chance(small):
    _, model, info = small
    assert info.train_images == 6000 and 0.85 < info.test_accuracy <= 1.0
    test = load_images(DataConfig(), 1)["test"][-2000:]  # a part of the split the accuracy was measured on
    judged = judge(model, to_unit_range(test["pixel_values"]))
    assert judged.accuracy(test["label"])["accuracy"] == pytest.approx(info.test_accuracy, abs=0.03)
    noise = torch.rand(2000, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    random_labels = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(1))
    assert abs(judge(model, noise).accuracy(random_labels)["accuracy"] - 0.1) < 0.03  # chance


def test_the_cache_is_reused_and_a_damaged_one_rebuilt(small, monkeypatch, tmp_path):
    _, model, info = small
    folder = tmp_path / "cache"
    shutil.copytree(small[0], folder)
    monkeypatch.setattr(digit_classifier, "_train", lambda *args: pytest.fail("trained again"))
    again, again_info = load_classifier(folder, epochs=2, train_images=6000)
    assert again_info == info
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    (folder / "model.safetensors").write_bytes(b"\x00" * 10)  # truncated by a full disk
    monkeypatch.setattr(digit_classifier, "_train", lambda *args: (model, 0.5))
    with pytest.warns(UserWarning, match="damaged"):
        _, rebuilt = load_classifier(folder, epochs=2, train_images=6000)
    assert rebuilt.test_accuracy == 0.5 and (folder / "model.safetensors").stat().st_size > 10


def test_without_a_cache_the_shipped_classifier_judges_and_reads_real_digits(monkeypatch, tmp_path):
    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(digit_classifier, "_train", lambda *args: pytest.fail("trained a classifier"))
    model, info = load_classifier()
    assert info == digit_classifier.ClassifierInfo(digit_classifier.VERSION, 2, 0, info.test_accuracy, 50_000)
    # Its recorded accuracy is what it scores: all 10,000 test digits, judged here.
    test = load_images(DataConfig(), 1)["test"][:]
    measured = judge(model, to_unit_range(test["pixel_values"])).accuracy(test["label"])["accuracy"]
    assert measured == pytest.approx(info.test_accuracy, abs=5e-4) and measured > 0.98
    assert not (tmp_path / "empty").exists()  # nothing written
    # Asked for a classifier made another way, it trains one rather than hand over the shipped one.
    monkeypatch.setattr(digit_classifier, "_train", lambda *args: (model, 0.5))
    assert load_classifier(epochs=3)[1].test_accuracy == 0.5
    assert load_classifier(seed=1)[1].test_accuracy == 0.5


def test_scores_against_brute_force():
    predictions = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 1])
    confidence = torch.tensor([0.95, 0.5, 0.9, 0.99, 0.2, 0.91])
    judged = Judgement(predictions, confidence, torch.zeros(6, 128))
    scores = judged.accuracy(labels)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["per_class"] == pytest.approx({0: 1.0, 1: 0.5, 2: 2 / 3}) and scores["worst_class"] == 0.5
    assert judged.recognisable() == pytest.approx(4 / 6)  # 0.95, 0.9, 0.99, 0.91


def test_feature_fid_is_the_closed_form():
    """Same covariance, means apart by v: FID = ||v||^2; identical sets: 0."""
    generator = np.random.default_rng(0)
    features = torch.from_numpy(generator.normal(size=(4000, 128)))
    shift = torch.zeros(128)
    shift[:4] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    a, b = Judgement(None, None, features), Judgement(None, None, features + shift)
    assert feature_fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert feature_fid(a, b) == pytest.approx(float(shift.pow(2).sum()), rel=1e-6)


def test_wrong_images_are_one_clear_error(small):
    _, model, _ = small
    with pytest.raises(ValueError, match=r"takes images \(B, 1, 32, 32\)"):
        judge(model, torch.rand(2, 3, 32, 32))
