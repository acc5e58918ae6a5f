"""The pipeline's default sampling settings: chosen on validation by the stated rule, stored in
the pipeline folder by prior/train.py, used by `pipe(...)` when the caller gives none, overridden
by explicit arguments; pipelines saved without them sample as before."""

import json
import shutil

import pytest
import torch
from transformers import GenerationConfig

from infra.data import DataConfig, load_images, to_unit_range
from pipelines import VQWAEPipeline
from prior import sampling_choice
from prior.sampling import SAMPLING_SETTINGS, sampling_config
from prior.sampling_choice import FID_SLACK, choice_table, choose_sampling
from tests.helpers import reset_accelerate
from tests.readme_fixtures import tiny_pipeline


def choose_by_hand(rows, score):
    """The rule, written out: the best score among rows within FID_SLACK of the best FID."""
    best = min(row["feature_fid"] for row in rows)
    ranked = sorted((row for row in rows if row["feature_fid"] <= FID_SLACK * best),
                    key=lambda row: (-row[score], row["feature_fid"]))  # fmt: skip
    return ranked[0]


def test_the_rule_prefers_legible_samples_but_not_collapsed_ones():
    rows = [dict(name="sharp but collapsed", recognisable=0.99, feature_fid=40.0),
            dict(name="legible", recognisable=0.93, feature_fid=14.0),
            dict(name="diverse", recognisable=0.70, feature_fid=10.0),
            dict(name="as legible, worse FID", recognisable=0.93, feature_fid=14.5)]  # fmt: skip
    assert sampling_choice._choose(rows, "recognisable")["name"] == "legible" == choose_by_hand(rows, "recognisable")["name"]


@pytest.fixture(scope="module")
def validation_digits():
    return to_unit_range(load_images(DataConfig(), 1)["validation"][:200]["pixel_values"])


def test_the_sweep_on_a_class_conditional_prior(tmp_path, small_digit_classifier, validation_digits):
    _, classifier, _ = small_digit_classifier
    pipe = tiny_pipeline(tmp_path / "pipe", image_size=32)
    choice = choose_sampling(pipe.prior, pipe.tokenizer, validation_digits, classifier, n=20)
    null_class = [row for row in choice.rows if row["kind"] == "unconditional (null_class)"]
    conditional = [row for row in choice.rows if row["kind"] == "class-conditional"]
    classes = [row for row in choice.rows if row["kind"] == "unconditional (classes)"]
    assert [(row["temperature"], row["top_k"]) for row in null_class] == sampling_choice.UNCONDITIONAL
    assert [row["guidance_scale"] for row in conditional] == sampling_choice.GUIDANCE
    settings = choice.settings
    picked = choose_by_hand(null_class, "recognisable")
    assert (settings["temperature"], settings["top_k"]) == (picked["temperature"], picked["top_k"])
    assert settings["guidance_scale"] == choose_by_hand(conditional, "accuracy")["guidance_scale"]
    assert all(row["temperature"] == settings["temperature"] for row in conditional + classes)
    assert [row["guidance_scale"] for row in classes] == list(dict.fromkeys([1.0, settings["guidance_scale"]]))
    unconditional = choose_by_hand(null_class + classes, "recognisable")
    assert (settings["unconditional"], settings["unconditional_guidance_scale"]) == (
        unconditional["unconditional"], unconditional["guidance_scale"])
    again = choose_sampling(pipe.prior, pipe.tokenizer, validation_digits, classifier, n=20)
    assert again.rows == choice.rows  # the same seed for every setting: reproducible
    assert "chosen:" in choice_table(choice)
    with pytest.raises(ValueError, match="n >= 10"):
        choose_sampling(pipe.prior, pipe.tokenizer, validation_digits, classifier, n=5)


CHOSEN = {"temperature": 0.7, "top_k": 5, "guidance_scale": 2.0, "unconditional_guidance_scale": 1.5}


def test_the_pipeline_samples_with_its_defaults_unless_told(tmp_path):
    """The defaults live in the prior's generation_config.json, a transformers GenerationConfig."""
    pipe = tiny_pipeline(tmp_path / "pipe")
    plain = VQWAEPipeline.from_pretrained(tmp_path / "pipe")  # saved without a sweep: as before
    assert plain.sampling_defaults == {}

    def codes(pipeline, **kwargs):
        return pipeline(n=6, generator=torch.Generator().manual_seed(0), progress=False, **kwargs).codes

    assert torch.equal(codes(plain), codes(plain, temperature=1.0, top_k=0))
    pipe.prior.generation_config = sampling_config(pipe.prior.generation_config, **CHOSEN)
    pipe.save_pretrained(tmp_path / "chosen")
    saved = GenerationConfig.from_pretrained(tmp_path / "chosen" / "prior")
    assert {name: getattr(saved, name) for name in CHOSEN} == CHOSEN
    assert "sampling" not in json.loads((tmp_path / "chosen" / "pipeline_config.json").read_text())
    chosen = VQWAEPipeline.from_pretrained(tmp_path / "chosen")
    assert chosen.sampling_defaults == CHOSEN and chosen.generation_config.temperature == 0.7
    assert torch.equal(codes(chosen), codes(plain, temperature=0.7, top_k=5))
    assert not torch.equal(codes(chosen), codes(plain))
    assert torch.equal(
        codes(chosen, class_labels=3), codes(plain, class_labels=3, guidance_scale=2.0, temperature=0.7, top_k=5)
    )
    # Explicit arguments win, top_k=0 included (no top-k); a call's top_p drops the saved top-k.
    assert torch.equal(codes(chosen, temperature=1.0, top_k=0), codes(plain))
    assert torch.equal(codes(chosen, top_p=0.9), codes(plain, temperature=0.7, top_p=0.9))
    # unconditional="classes": a class drawn for each sample from the call's generator, then that class.
    generator = torch.Generator().manual_seed(0)
    drawn = torch.randint(0, 10, (6,), generator=generator)
    by_hand = plain(n=6, class_labels=drawn, generator=generator, progress=False).codes
    assert torch.equal(codes(plain, unconditional="classes"), by_hand)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.randint(0, 10, (6,), generator=generator)
    guided = plain(n=6, class_labels=drawn, generator=generator, guidance_scale=1.5, temperature=0.7, top_k=5,
                   progress=False).codes  # fmt: skip
    assert torch.equal(codes(chosen, unconditional="classes"), guided)  # the pipeline's unconditional guidance
    with pytest.raises(ValueError, match=r"unconditional='prior' is not allowed; choose one of"):
        codes(plain, unconditional="prior")
    with pytest.raises(ValueError, match=r"unknown sampling setting\(s\) \['temprature'\]; the settings are"):
        codes(plain, temprature=0.5)
    assert torch.equal(codes(chosen, class_labels=3, guidance_scale=1.0, temperature=1.0, top_k=0),
                       codes(plain, class_labels=3))  # fmt: skip
    # A folder saved before the defaults moved (pipeline_config.json `sampling`) loads them into the
    # prior's generation config and samples alike; saved again, it is today's layout.
    config_file = tmp_path / "pipe" / "pipeline_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "sampling": CHOSEN}))
    before = VQWAEPipeline.from_pretrained(tmp_path / "pipe")
    assert before.sampling_defaults == CHOSEN and "sampling" not in before.config
    assert torch.equal(codes(before), codes(chosen)) and torch.equal(
        codes(before, class_labels=3), codes(chosen, class_labels=3)
    )
    before.save_pretrained(tmp_path / "again")
    assert "sampling" not in json.loads((tmp_path / "again" / "pipeline_config.json").read_text())
    assert VQWAEPipeline.from_pretrained(tmp_path / "again").sampling_defaults == CHOSEN


def test_prior_training_stores_the_chosen_settings(tmp_path, repo_root, monkeypatch, small_digit_classifier):
    """prior/train.py with sampling_sweep=N runs the sweep on the validation split with the cached
    classifier and writes its choice and table into the pipeline folder; data the classifier does
    not judge (not mnist) skips it with one line."""
    from infra.metrics.digit_classifier import VERSION
    from prior import train as prior_train

    cache = tmp_path / "cache"
    shutil.copytree(small_digit_classifier[0], cache / "digit-classifier" / f"{VERSION}-e2-s0")
    monkeypatch.setenv("VQWAE_CACHE", str(cache))
    monkeypatch.chdir(repo_root)
    tokenizer = tiny_pipeline(tmp_path / "source", image_size=32).tokenizer
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    reset_accelerate()
    prior_train.main(["--config", "configs/prior/tiny.yaml", f"tokenizer={tmp_path / 'tokenizer'}",
                      f"output_dir={tmp_path / 'prior'}", "sampling_sweep=10", "class_conditional=true"])  # fmt: skip
    reset_accelerate()
    config = json.loads((tmp_path / "prior" / "pipeline" / "pipeline_config.json").read_text())
    saved = GenerationConfig.from_pretrained(tmp_path / "prior" / "pipeline" / "prior")
    chosen = {name: getattr(saved, name) for name in SAMPLING_SETTINGS if getattr(saved, name, None) is not None}
    assert set(chosen) >= {"temperature", "unconditional", "guidance_scale", "unconditional_guidance_scale"}
    assert saved.do_sample  # transformers' own generate samples with them too
    assert "sampling" not in config
    classes_rows = len({1.0, chosen["guidance_scale"]})
    assert (
        len(config["sampling_sweep"])
        == len(sampling_choice.UNCONDITIONAL) + len(sampling_choice.GUIDANCE) + classes_rows
    )
    assert VQWAEPipeline.from_pretrained(tmp_path / "prior" / "pipeline").sampling_defaults == chosen
    assert GenerationConfig.from_pretrained(tmp_path / "prior" / "final").temperature == chosen["temperature"]
