"""One recipe wherever a user goes: the defaults are the measured recipe, every shipped tokenizer
config trains it unless the file says why not, the recipe trains as it did before its settings
were typed, and an old option name says where it went."""

import json
import os
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml

from infra.config import load_config
from tests.helpers import read_metrics
from tokenizer import VQWAEConfig
from tokenizer.config import TokenizerTrainConfig
from tokenizer.transport import TransportConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "tokenizer"
# The settings that make the recipe: how OT is posed and solved, and how training optimises.
OPTIMISATION = ("batch_size", "learning_rate", "lr_scheduler", "warmup_steps", "max_grad_norm", "weight_decay")


def recipe_settings(config: TokenizerTrainConfig) -> dict:
    """The recipe's settings of a resolved config, dotted."""
    values = {name: getattr(config, name) for name in OPTIMISATION}
    values.update({f"model.transport.{key}": value for key, value in asdict(config.model.transport).items()})
    values["model.codebook_init"] = config.model.codebook_init
    values["loss.transport"] = config.loss.transport
    return values


def test_the_defaults_are_the_recipe_mnist_yaml_measures():
    """What BENCHMARKS.md measured (section 0) is what a bare VQWAEConfig() and run config build."""
    config = TokenizerTrainConfig()
    assert asdict(config.model.transport) == dict(
        solver="sinkhorn", scope="global", learn_code_weights=False, epsilon=0.1, iterations=10,
        code_relaxation=1.0, dual_steps=20, dual_candidates=8, encoder_target="nearest",
    )  # fmt: skip
    assert config.model.codebook_init == "encoder" and config.model.quantizer == "wasserstein"
    assert (config.learning_rate, config.batch_size, config.lr_scheduler) == (2e-3, 32, "cosine")
    assert (config.warmup_steps, config.max_grad_norm, config.loss.transport) == (100, 1.0, 3e-3)
    assert VQWAEConfig() == config.model


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_trains_the_recipe_unless_it_says_why_not(path):
    """A setting that differs from the recipe is allowed only with a reason in the file: a comment on
    its line, or the paper config, whose header says it states the reference code's settings. The
    baselines have no OT term, so only their optimisation is held to the recipe."""
    config = load_config(TokenizerTrainConfig, path)
    recipe = recipe_settings(TokenizerTrainConfig())
    differing = {key for key, value in recipe_settings(config).items() if value != recipe[key]}
    if config.model.quantizer != "wasserstein":
        differing = {key for key in differing if not key.startswith(("model.transport", "loss.transport"))}
    text = path.read_text()
    for key in sorted(differing):
        leaf = key.split(".")[-1]
        lines = [line for line in text.splitlines() if line.strip().startswith(f"{leaf}:")]
        explained = any("#" in line for line in lines) or "reference code" in text.split("\n\n")[0]
        assert lines and explained, f"{path.name} sets {key} away from the recipe without saying why"
    # The YAML states only what differs: no line repeats a default.
    defaults = asdict(TokenizerTrainConfig())

    def repeated(values: dict, base: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in values.items():
            if isinstance(value, dict):
                found += repeated(value, base[key], f"{prefix}{key}.")
            elif key != "output_dir" and value == base[key]:
                found.append(prefix + key)
        return found

    assert repeated(yaml.safe_load(text), defaults) == [], f"{path.name} repeats defaults"


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.sinkhorn_iterations=5", r"model.sinkhorn_iterations moved to model.transport.iterations"),
        ("model.ot_scope=position", r"model.ot_scope moved to model.transport.scope"),
        ("model.fsq_levels=[4,4]", r"model.fsq_levels moved to model.fsq.levels"),
        ("model.ema_decay=0.9", r"model.ema_decay moved to model.vq_ema.decay"),
        ("model.sinkhorn_plan=entropic", r"model.sinkhorn_plan was retired: the plan is always the Laguerre cells"),
        ("model.sinkhorn_step_bound=2", r"model.sinkhorn_step_bound was retired: semi-relaxed OT"),
        ("model.sinkhorn_check_every=5", r"was retired: folded into model.transport.iterations"),
        ("model.transport.plan=entropic", r"unknown config key\(s\) \['model.transport.plan'\]; allowed keys here"),
    ],
)
def test_an_old_option_name_says_where_it_went(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(TokenizerTrainConfig, CONFIGS / "mnist.yaml", [override])


def test_one_name_per_knob_from_yaml_to_the_solver():
    """Each transport field is one `model.transport.<name>` override away and arrives unchanged."""
    for field in fields(TransportConfig):
        value = {"solver": "exact", "scope": "position", "learn_code_weights": True, "encoder_target": "cell"}.get(
            field.name, 7
        )
        config = load_config(TokenizerTrainConfig, None, [f"model.transport.{field.name}={value}"])
        assert getattr(config.model.transport, field.name) == value


def test_mnist_recipe_trains_as_before_its_settings_were_typed(tmp_path):
    """configs/tokenizer/mnist.yaml gives the losses, perplexities and code counts of its first 20
    steps that main 356dcdd gave (before this layout; one thread, where CPU runs are bit-exact)."""
    pinned = json.loads((ROOT / "tests/fixtures/mnist-recipe-first-steps.json").read_text())
    command = [sys.executable, "tokenizer/train.py", "--config", "configs/tokenizer/mnist.yaml",
               f"output_dir={tmp_path}", *pinned["overrides"]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    rows = [row for row in read_metrics(tmp_path) if "train/loss" in row]
    assert [row["step"] for row in rows] == list(range(1, 21))
    for key, expected in pinned["steps"].items():
        assert [row[key] for row in rows] == pytest.approx(expected, rel=1e-5, abs=1e-7), key
    validation = [row for row in read_metrics(tmp_path) if "validation/psnr" in row][-1]
    assert validation["validation/psnr"] == pytest.approx(pinned["validation/psnr"], rel=1e-5)
