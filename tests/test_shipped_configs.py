"""Every shipped data-set config works for a user with network: each names a Hub data set whose
schema it states (columns, image mode and size, splits, configuration); a local stand-in with that
schema, laid out as the Hub repository is (parquet files per configuration and split, a dataset
card listing them), goes through the real `datasets.load_dataset` code path with nothing
overridden but where the data is, and a few steps of the tokenizer and of its prior run on it."""

import io
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from infra.config import load_config
from prior import train as prior_train
from prior.config import PriorTrainConfig
from tests.helpers import read_metrics, reset_accelerate
from tokenizer import VQWAE
from tokenizer import train as tokenizer_train
from tokenizer.config import TokenizerTrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DIGITS = datasets.ClassLabel(names=[str(digit) for digit in range(10)])
CIFAR10 = datasets.ClassLabel(names=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])

# The Hub data sets the configs name, as their repositories hold them: {configuration: {split: rows}},
# the columns, the images' size (width, height) and format. SVHN has two configurations with other
# columns (full_numbers: digit boxes), so its config must choose one.
SCHEMAS = {
    "cifar10": dict(repo="uoft-cs/cifar10", configs={"plain_text": {"train": 24, "test": 8}},
                    columns={"img": datasets.Image(), "label": CIFAR10}, size=(32, 32), format="PNG"),
    "svhn": dict(repo="ufldl-stanford/svhn",
                 configs={"cropped_digits": {"train": 24, "test": 8, "extra": 8},
                          "full_numbers": {"train": 8, "test": 4, "extra": 4}},
                 columns={"image": datasets.Image(), "label": DIGITS}, size=(32, 32), format="PNG"),
    "celeba": dict(repo="nielsr/CelebA-faces", configs={"default": {"train": 24}},
                   columns={"image": datasets.Image()}, size=(178, 218), format="JPEG"),
}  # fmt: skip


def hub_stand_in(folder: Path, schema: dict) -> Path:
    """A local clone of the schema's Hub repository: random images of its size and format, its
    columns and label classes, one parquet file per configuration and split, and the dataset card's
    `configs` list that tells `load_dataset` which file is which split."""
    generator, cards = np.random.default_rng(0), []
    for config, splits in schema["configs"].items():
        files = []
        for split, rows in splits.items():
            images = []
            for _ in range(rows):
                buffer = io.BytesIO()
                pixels = generator.integers(0, 256, (schema["size"][1], schema["size"][0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(buffer, format=schema["format"])
                images.append({"bytes": buffer.getvalue(), "path": None})
            columns = dict(schema["columns"])
            if config == "full_numbers":  # SVHN's other configuration: boxes of digits, no label column
                columns = {"image": datasets.Image(), "digits": datasets.Sequence({"bbox": datasets.Sequence(
                    datasets.Value("int32"), length=4), "label": DIGITS})}  # fmt: skip
            values = {name: images if isinstance(kind, datasets.Image) else
                      [{"bbox": [[0, 0, 8, 8]], "label": [1]}] * rows if name == "digits" else
                      generator.integers(0, kind.num_classes, rows).tolist() for name, kind in columns.items()}  # fmt: skip
            path = folder / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(values, features=datasets.Features(columns)).to_parquet(str(path))
            files.append({"split": split, "path": f"{config}/{split}-*.parquet"})
        cards.append({"config_name": config, "data_files": files, **({"default": True} if len(schema["configs"]) == 1 else {})})
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': cards})}---\n# stand-in for {schema['repo']}\n")
    return folder


@pytest.mark.parametrize("name,size,grid", [("cifar10", 32, 8), ("svhn", 32, 8), ("celeba", 64, 16)])
def test_config_trains_tokenizer_and_prior_on_its_hub_schema(name, size, grid, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    schema = SCHEMAS[name]
    tokenizer_config, prior_config = CONFIGS / "tokenizer" / f"{name}.yaml", CONFIGS / "prior" / f"{name}.yaml"
    for path in (tokenizer_config, prior_config):  # the config names the repository and states its schema
        text, parsed = path.read_text(), yaml.safe_load(path.read_text())
        assert parsed["data"]["source"] == schema["repo"]
        assert all(f"`{column}`" in text for column in schema["columns"]), f"{path.name} does not state the columns"
    data = hub_stand_in(tmp_path / "hub", schema)
    local = [f"data.source={data}", "batch_size=4", "max_steps=2", "checkpoint_every=2",
             "validate_every=2", "validation_batches=1", "log_with=none"]  # fmt: skip
    parsed = load_config(TokenizerTrainConfig, tokenizer_config)
    assert parsed.model.in_channels == 3 and parsed.data.image_size == size
    reset_accelerate()
    tokenizer_train.main(["--config", str(tokenizer_config), f"output_dir={tmp_path / 'tokenizer'}", *local])
    tokenizer = VQWAE.from_pretrained(tmp_path / "tokenizer" / "final")
    assert tokenizer.config.grid_size == grid

    load_config(PriorTrainConfig, prior_config)  # parses as shipped
    reset_accelerate()
    metrics = prior_train.main(["--config", str(prior_config), f"tokenizer={tmp_path / 'tokenizer' / 'final'}",
                                f"output_dir={tmp_path / 'prior'}", "num_samples=2", *local])  # fmt: skip
    reset_accelerate()
    # Between no uncertainty and a uniform guess over the whole vocabulary (where the prior
    # starts), and what its last validation logged.
    shipped = load_config(PriorTrainConfig, prior_config)
    assert shipped.class_conditional == ("label" in schema["columns"])  # conditional where the data has labels
    vocabulary = 1 + tokenizer.config.codebook_size + (shipped.num_classes + 1 if shipped.class_conditional else 0)
    assert 0 < metrics["bits_per_code"] < math.log2(vocabulary) + 0.5
    logged = [row["validation/bits_per_code"] for row in read_metrics(tmp_path / "prior")
              if "validation/bits_per_code" in row]  # fmt: skip
    assert metrics["bits_per_code"] == pytest.approx(logged[-1])
    # The saved pipeline samples colour images of the config's size.
    from pipelines import VQWAEPipeline

    images = VQWAEPipeline.from_pretrained(tmp_path / "prior" / "pipeline")(n=2, batch_size=2).images
    assert [(image.mode, image.size) for image in images] == [("RGB", (size, size))] * 2


def test_a_data_set_with_several_configurations_needs_its_subset(tmp_path):
    """SVHN without `data.subset`: datasets' own one-line error names the configurations."""
    from infra.data import DataConfig, load_images

    data = hub_stand_in(tmp_path / "hub", SCHEMAS["svhn"])
    with pytest.raises(ValueError, match="cropped_digits"):
        load_images(DataConfig(source=str(data)), 3)
    splits = load_images(DataConfig(source=str(data), subset="cropped_digits"), 3)
    assert {split: len(part) for split, part in splits.items()} == {"train": 22, "validation": 2, "test": 8}


def test_every_shipped_config_parses():
    for path in sorted((CONFIGS / "tokenizer").glob("*.yaml")):
        load_config(TokenizerTrainConfig, path)
    for path in sorted((CONFIGS / "prior").glob("*.yaml")):  # tiny.yaml leaves the tokenizer to the command
        load_config(PriorTrainConfig, path, [] if "tokenizer:" in path.read_text() else ["tokenizer=some/tokenizer"])
