"""Data sources offline: the embedded MNIST, an image folder, a saved in-memory data set, a Hub
name (through a patched `datasets.load_dataset`), and the errors for bad data."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from infra import data as data_module
from infra.data import DataConfig, load_images, load_mnist, mnist_csv_files


def write_images(folder, count=12, mode="L", size=(20, 24)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        shape = size[::-1] if mode == "L" else (*size[::-1], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(folder / f"{index}.png")


def test_embedded_mnist_splits_and_pixels():
    splits = load_mnist(32)
    assert {name: len(split) for name, split in splits.items()} == {"train": 50000, "validation": 10000, "test": 10000}
    raw = np.loadtxt(mnist_csv_files()["test"], delimiter=",", skiprows=1, max_rows=2, dtype=np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(raw[:, 1:]).view(2, 1, 28, 28), size=(32, 32), mode="bilinear", align_corners=False
    )
    first = splits["test"].with_format("torch")[:2]
    assert first["label"].tolist() == raw[:, 0].astype(int).tolist()
    assert (first["pixel_values"].float() - expected.round()).abs().max() <= 1


def test_image_folder_is_resized_cropped_and_split(tmp_path):
    write_images(tmp_path / "images", count=30)
    splits = load_images(DataConfig(source=str(tmp_path / "images"), image_size=16, validation_size=5), channels=1)
    assert len(splits["train"]) == 27 and len(splits["validation"]) == 3  # a tenth at most when small
    batch = splits["train"][:4]["pixel_values"]
    assert batch.shape == (4, 1, 16, 16)


def test_saved_in_memory_dataset(tmp_path):
    images = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in range(0, 200, 10)]
    dataset = datasets.Dataset.from_dict({"img": images, "label": list(range(20))}).cast_column("img", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    splits = load_images(DataConfig(source=str(tmp_path / "saved"), image_size=8, image_column="img"), channels=3)
    sample = splits["train"][0]
    assert sample["pixel_values"].shape == (3, 8, 8)
    assert int(sample["pixel_values"][0, 0, 0]) == 10 * int(sample["label"])


def test_hub_name_goes_through_load_dataset(monkeypatch):
    images = [Image.fromarray(np.full((10, 10), value, np.uint8)) for value in range(30)]
    fake = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": images, "label": [0] * 30}).cast_column("image", datasets.Image()),
        test=datasets.Dataset.from_dict({"image": images[:4], "label": [1] * 4}).cast_column("image", datasets.Image()),
    )
    asked = []
    monkeypatch.setattr(data_module.datasets, "load_dataset", lambda *args: asked.append(args) or fake)
    splits = load_images(DataConfig(source="someone/digits", image_size=8), channels=1)
    assert asked == [("someone/digits", None)] and len(splits["test"]) == 4
    load_images(DataConfig(source="someone/svhn", subset="cropped_digits", image_size=8), channels=1)
    assert asked[-1] == ("someone/svhn", "cropped_digits")


def test_wrong_channel_count_names_the_fix(tmp_path):
    write_images(tmp_path / "rgb", mode="RGB")
    with pytest.raises(ValueError, match=r"images have 3 channel\(s\).*set model.in_channels=3"):
        load_images(DataConfig(source=str(tmp_path / "rgb")), channels=1)
    with pytest.raises(ValueError, match="MNIST images have 1 channel"):
        load_images(DataConfig(), channels=3)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_images(DataConfig(source=str(tmp_path / "empty")), channels=1)


def test_corrupt_image_fails_or_is_skipped(tmp_path):
    write_images(tmp_path / "mixed", count=20)
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read image .*broken.png.*on_bad_image=skip"):
        load_images(DataConfig(source=str(tmp_path / "mixed"), image_size=8), channels=1)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        splits = load_images(DataConfig(source=str(tmp_path / "mixed"), image_size=8, on_bad_image="skip"), channels=1)
    assert len(splits["train"]) + len(splits["validation"]) == 20
