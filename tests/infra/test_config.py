"""YAML + key=value config loading into dataclasses."""

import pytest

from infra.config import load_config, parse_overrides
from tokenizer.config import TokenizerTrainConfig


def test_shipped_configs_load(repo_root):
    for path in sorted((repo_root / "configs" / "tokenizer").glob("*.yaml")):
        config = load_config(TokenizerTrainConfig, path)
        assert config.model.image_size == config.data.image_size


def test_overrides_are_typed_and_nested(repo_root):
    config = load_config(
        TokenizerTrainConfig,
        repo_root / "configs/tokenizer/mnist.yaml",
        ["learning_rate=3e-4", "model.codebook_size=256", "model.transport.scope=position", "resume=latest", "seed=7"],
    )
    assert config.learning_rate == 3e-4 and isinstance(config.learning_rate, float)
    assert config.model.codebook_size == 256 and config.model.transport.scope == "position"
    assert config.resume == "latest" and config.seed == 7


def test_data_image_size_drives_the_model():
    config = load_config(TokenizerTrainConfig, None, ["data.image_size=64"])
    assert config.model.image_size == 64 and config.model.grid_size == 16


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["learnin_rate=0.1"], r"unknown config key\(s\) \['learnin_rate'\].*allowed keys"),
        (["model.codebok_size=3"], r"unknown config key\(s\) \['model.codebok_size'\]"),
        (["lr0.1"], "malformed override 'lr0.1'"),
        (["max_steps=ten"], "max_steps must be an integer"),
        (["model.quantizer=sq"], r"choose one of \['wasserstein', 'vq', 'vq_ema', 'fsq'\]"),
        (["mixed_precision=fp8"], r"choose one of \['no', 'bf16', 'fp16'\]"),
        (["push_to_hub=true"], "needs hub_repo_id"),
        (["batch_size=0"], "batch_size must be > 0"),
    ],
)
def test_bad_configs_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(TokenizerTrainConfig, None, overrides)


def test_missing_config_file():
    with pytest.raises(ValueError, match="does not exist"):
        load_config(TokenizerTrainConfig, "configs/tokenizer/nope.yaml")


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c=x", "d=true"]) == {"a": {"b": 1}, "c": "x", "d": True}


def test_shipped_prior_configs_load(repo_root):
    from prior.config import PriorTrainConfig

    for path in sorted((repo_root / "configs" / "prior").glob("*.yaml")):
        config = load_config(PriorTrainConfig, path, ["tokenizer=some/tokenizer"])
        assert config.model.hidden_size % config.model.num_heads == 0


def test_no_yes_on_off_stay_words(tmp_path):
    """YAML 1.2 booleans: only true/false. PyYAML's YAML 1.1 read `no` as False, so
    `mixed_precision=no` (the quickstart's prior override) failed as "must be a string"."""
    assert parse_overrides(["a=no", "b=yes", "c=off", "d=false", "e=True"]) == {
        "a": "no", "b": "yes", "c": "off", "d": False, "e": True
    }
    assert load_config(TokenizerTrainConfig, None, ["mixed_precision=no"]).mixed_precision == "no"
    config_file = tmp_path / "run.yaml"
    config_file.write_text("mixed_precision: no\ncompile: false\n")
    assert load_config(TokenizerTrainConfig, config_file).mixed_precision == "no"
    with pytest.raises(ValueError, match="compile must be true or false, got 'no'"):
        load_config(TokenizerTrainConfig, None, ["compile=no"])


def test_the_quickstart_prior_overrides_load(repo_root):
    from pipelines.quickstart import PRIOR_OVERRIDES
    from prior.config import PriorTrainConfig

    config = load_config(PriorTrainConfig, repo_root / "configs/prior/mnist.yaml", ["tokenizer=t", *PRIOR_OVERRIDES])
    assert (config.mixed_precision, config.model.num_layers, config.batch_size) == ("no", 4, 32)
