"""The embedded colour data set (infra/photos.py): split by photo, crops where and as large as they
should be, deterministic, whole-scene statistics like the real CIFAR test images, and one line when
a package that holds the photos is missing."""

import numpy as np
import pytest
from PIL import Image

from infra import photos
from infra.data import DataConfig, load_images

# The first 20 labels of the CIFAR-10 test set (cat, ship, ship, airplane, frog, ...), from its batch file.
CIFAR10_FIRST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
SMALL = {"train": 190, "validation": 30, "test": 50}


@pytest.fixture(scope="module")
def small():
    return photos.load_photos(32, counts=SMALL).with_format("numpy")


def test_no_photo_gives_crops_to_two_splits(small):
    names = list(photos.PHOTOS)
    used = {split: {names[label] for label in small[split][:]["label"].tolist()} for split in SMALL}
    assert used == {split: set(photos.SPLITS[split]) for split in SMALL}  # every photo of a split, no other
    assert not used["train"] & used["validation"] and not used["train"] & used["test"]
    assert not used["validation"] & used["test"]
    assert used["train"] | used["validation"] | used["test"] == set(names)
    assert {split: len(small[split]) for split in SMALL} == SMALL
    counts = np.bincount(small["train"][:]["label"])
    assert set(counts[counts > 0]) == {SMALL["train"] // len(photos.SPLITS["train"])}  # balanced over photos


def test_the_cifar_split_is_the_forty_real_test_images(small):
    cifar = small["cifar"]
    assert len(cifar) == 40 and cifar[0]["pixel_values"].shape == (3, 32, 32)
    assert cifar[:20]["label"].tolist() == CIFAR10_FIRST_LABELS
    first = np.asarray(Image.open(photos.cifar_files()[0]).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(cifar[0]["pixel_values"], first)  # unchanged at 32 px


def test_a_crop_lies_inside_the_photo_at_a_scale_in_range():
    # A photo whose red channel is the column and green the row: a crop's corners say where it came
    # from and how large it was (independently of PIL's resampling, up to its smoothing at the edges).
    width, height = 250, 200
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    ramp = Image.fromarray(np.stack([columns, rows, np.zeros_like(rows)], -1).astype(np.uint8))
    rng = np.random.default_rng(0)
    sides = []
    for _ in range(200):
        crop = photos.random_crop(ramp, 16, rng).astype(int)
        side = (crop[0, :, -1].mean() - crop[0, :, 0].mean()) * 16 / 15  # centres of the first and last pixel
        assert abs(side - (crop[1, -1].mean() - crop[1, 0].mean()) * 16 / 15) < 3  # square
        assert crop[0].min() >= 0 and crop[0].max() <= width - 1 and crop[1].max() <= height - 1
        sides.append(side / min(width, height))
    assert photos.SCALE[0] - 0.02 <= min(sides) < photos.SCALE[0] + 0.05
    assert photos.SCALE[1] - 0.05 < max(sides) <= photos.SCALE[1] + 0.02
    # log-uniform: the median scale is the geometric mean of the range
    assert np.median(sides) == pytest.approx(np.sqrt(photos.SCALE[0] * photos.SCALE[1]), rel=0.08)


def test_crops_are_deterministic_and_the_seed_matters():
    files, labels = tuple(str(photos.photo_file(name)) for name in photos.SPLITS["test"]), (0,) * 5
    first = [row["pixel_values"] for row in photos.generate_crops(files, labels, 20, 32, seed=2)]
    again = [row["pixel_values"] for row in photos.generate_crops(files, labels, 20, 32, seed=2)]
    other = [row["pixel_values"] for row in photos.generate_crops(files, labels, 20, 32, seed=3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_crops_look_like_whole_scenes_not_flat_texture(small):
    """The chosen scale's crops have the real CIFAR test images' gradient statistics (a two-sample
    Kolmogorov-Smirnov test cannot tell them apart, medians within 15%); crops of a tenth of the
    photo, the check's counterexample, are flat texture the test tells apart at once."""
    from scipy.stats import ks_2samp

    cifar = photos.gradient_statistics(small["cifar"][:]["pixel_values"])
    crops = photos.gradient_statistics(np.concatenate([small[split][:]["pixel_values"] for split in SMALL]))
    assert ks_2samp(crops, cifar).pvalue > 0.05
    assert np.median(crops) == pytest.approx(np.median(cifar), rel=0.15)
    files = tuple(str(photos.photo_file(name)) for name in photos.PHOTOS)
    texture = np.stack([row["pixel_values"] for row in photos.generate_crops(files, (0,) * 27, 270, 32, 0, scale=(0.08, 0.12))])
    assert ks_2samp(photos.gradient_statistics(texture), cifar).pvalue < 1e-3


@pytest.mark.parametrize("package, install", [("foolbox", "pip install --no-deps foolbox==3.3.4"),
                                              ("sklearn", "pip install scikit-learn")])  # fmt: skip
def test_a_missing_package_is_one_line_naming_the_install(monkeypatch, package, install):
    find_spec = photos.importlib.util.find_spec
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None if name == package else find_spec(name))
    with pytest.raises(FileNotFoundError, match=f"need the {package} package, which is not installed: {install}$"):
        load_images(DataConfig(source="photos"), 3)


def test_a_damaged_photo_is_one_line(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read the embedded photo .*broken.jpg"):
        next(photos.generate_crops((str(broken),), (0,), 1, 32, 0))


def test_grey_tokenizer_on_colour_photos_is_refused():
    with pytest.raises(ValueError, match="the embedded photos have 3 channels .* set model.in_channels=3"):
        load_images(DataConfig(source="photos"), 1)
