"""Every shipped data-set config works for a user with their own copy of the data: parsed, then a
few steps of the tokenizer and of its prior on a local image folder through data.source=FOLDER
(the configs' Hub data sets are not downloaded in tests)."""

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infra.config import load_config
from prior import train as prior_train
from prior.config import PriorTrainConfig
from tests.helpers import read_metrics, reset_accelerate
from tokenizer import VQWAE
from tokenizer import train as tokenizer_train
from tokenizer.config import TokenizerTrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def image_folder(folder: Path, size: int, classes: int = 2, per_class: int = 12) -> Path:
    """Colour PNGs of the config's size (half of them larger, so resizing is exercised), one
    subfolder per class as datasets' imagefolder reads labels."""
    generator = np.random.default_rng(0)
    for label in range(classes):
        (folder / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            side = size if index % 2 else size + 8
            pixels = generator.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{label}" / f"{index}.png")
    return folder


@pytest.mark.parametrize("name,size,grid", [("cifar10", 32, 8), ("svhn", 32, 8), ("celeba", 64, 16)])
def test_config_trains_tokenizer_and_prior_on_a_local_folder(name, size, grid, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    data = image_folder(tmp_path / "images", size)
    local = [f"data.source={data}", "data.image_column=image", "batch_size=4", "max_steps=2", "checkpoint_every=2",
             "validate_every=2", "validation_batches=1", "log_with=none"]  # fmt: skip
    tokenizer_config = CONFIGS / "tokenizer" / f"{name}.yaml"
    parsed = load_config(TokenizerTrainConfig, tokenizer_config)
    assert parsed.model.in_channels == 3 and parsed.data.image_size == size
    reset_accelerate()
    tokenizer_train.main(["--config", str(tokenizer_config), f"output_dir={tmp_path / 'tokenizer'}", *local])
    tokenizer = VQWAE.from_pretrained(tmp_path / "tokenizer" / "final")
    assert tokenizer.config.grid_size == grid

    prior_config = CONFIGS / "prior" / f"{name}.yaml"
    load_config(PriorTrainConfig, prior_config)  # parses as shipped
    reset_accelerate()
    metrics = prior_train.main(["--config", str(prior_config), f"tokenizer={tmp_path / 'tokenizer' / 'final'}",
                                f"output_dir={tmp_path / 'prior'}", "num_samples=2", *local])  # fmt: skip
    reset_accelerate()
    # Between no uncertainty and a uniform guess over the whole vocabulary (where the prior
    # starts), and what its last validation logged.
    shipped = load_config(PriorTrainConfig, prior_config)
    vocabulary = 1 + tokenizer.config.codebook_size + (shipped.num_classes + 1 if shipped.class_conditional else 0)
    assert 0 < metrics["bits_per_code"] < math.log2(vocabulary) + 0.5
    logged = [row["validation/bits_per_code"] for row in read_metrics(tmp_path / "prior")
              if "validation/bits_per_code" in row]  # fmt: skip
    assert metrics["bits_per_code"] == pytest.approx(logged[-1])
    assert (tmp_path / "prior" / "pipeline" / "pipeline_config.json").is_file()


def test_every_shipped_config_parses():
    for path in sorted((CONFIGS / "tokenizer").glob("*.yaml")):
        load_config(TokenizerTrainConfig, path)
    for path in sorted((CONFIGS / "prior").glob("*.yaml")):  # tiny.yaml leaves the tokenizer to the command
        load_config(PriorTrainConfig, path, [] if "tokenizer:" in path.read_text() else ["tokenizer=some/tokenizer"])
