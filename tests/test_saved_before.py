"""Files saved by main 356dcdd, before the OT settings were typed (tests/fixtures/saved-356dcdd: a
tiny pipeline with its flat tokenizer config.json, a code cache, and what that main sampled and
encoded from them) load and behave exactly as they did."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from pipelines import VQWAEPipeline
from prior.codes import load_or_encode
from tokenizer import VQWAE
from tokenizer.legacy import FLAT_DEFAULTS

SAVED = Path(__file__).resolve().parent / "fixtures" / "saved-356dcdd"


@pytest.fixture(scope="module")
def expected():
    return load_file(str(SAVED / "expected.safetensors"))


def test_an_old_pipeline_samples_what_it_sampled_then(expected):
    pipe = VQWAEPipeline.from_pretrained(SAVED / "pipeline")
    output = pipe(n=4, generator=torch.Generator().manual_seed(0), output_type="pt", progress=False)
    assert torch.equal(output.codes, expected["sampled_codes"])
    torch.testing.assert_close(output.images, expected["sampled_images"])


def test_an_old_flat_config_loads_with_the_settings_it_was_trained_with():
    """Fields the old file holds land in their new places; the retired ones are dropped (they only
    shaped training); today's defaults do not leak in (the file was trained without dual steps)."""
    flat = json.loads((SAVED / "pipeline" / "tokenizer" / "config.json").read_text())
    assert "transport" not in flat and flat["sinkhorn_iterations"] == 50
    tokenizer = VQWAE.from_pretrained(SAVED / "pipeline" / "tokenizer")
    transport = tokenizer.config.transport
    assert (transport.iterations, transport.epsilon, transport.scope) == (50, 0.1, flat["ot_scope"])
    assert (transport.code_relaxation, transport.dual_steps, transport.encoder_target) == (0.0, 0, "cell")
    assert tokenizer.config.vq_ema.decay == flat["ema_decay"] and tokenizer.config.fsq.levels == flat["fsq_levels"]
    # An older file still (before dual steps existed): the missing fields take the defaults of then.
    older = {key: value for key, value in flat.items() if not key.startswith("sinkhorn_dual")}
    assert VQWAE(older).config.transport.dual_steps == FLAT_DEFAULTS["sinkhorn_dual_steps"] == 0
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sinkhorn_magic'\]"):
        VQWAE({**flat, "sinkhorn_magic": 1})


def test_an_old_code_cache_is_reused_not_reencoded(expected, tmp_path, monkeypatch):
    tokenizer = VQWAE.from_pretrained(SAVED / "pipeline" / "tokenizer")
    shutil.copytree(SAVED / "codes", tmp_path / "codes")
    monkeypatch.setattr("prior.codes.encode_split", lambda *args, **kwargs: pytest.fail("re-encoded"))
    images = expected["images"]
    split = datasets.Dataset.from_dict({"pixel_values": images.numpy(), "label": list(range(len(images)))})
    cached = load_or_encode(tmp_path / "codes", "train", tokenizer, split.with_format("torch"))
    assert torch.equal(cached["codes"], expected["codes"])
    monkeypatch.undo()
    assert torch.equal(tokenizer.encode(images.float() / 255).flatten(1), expected["codes"])  # and it is right
    # Another tokenizer (one weight changed) is refused the same cache.
    tokenizer.quantizer.codebook.data[0, 0] += 1.0
    with pytest.raises(ValueError, match="made by another tokenizer"):
        load_or_encode(tmp_path / "codes", "train", tokenizer, split.with_format("torch"))


def test_resaving_an_old_pipeline_writes_todays_layout(tmp_path, expected):
    pipe = VQWAEPipeline.from_pretrained(SAVED / "pipeline")
    pipe.save_pretrained(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "tokenizer" / "config.json").read_text())
    assert config["transport"]["iterations"] == 50 and "sinkhorn_iterations" not in config
    again = VQWAEPipeline.from_pretrained(tmp_path / "again")
    assert again.tokenizer.legacy_config is None and again.tokenizer.has_identity(again.tokenizer_id)
    assert again.prior.config.vqwae["tokenizer_id"] == again.tokenizer.identity()
    codes = again(n=4, generator=torch.Generator().manual_seed(0), progress=False).codes
    assert torch.equal(codes, expected["sampled_codes"])


def test_a_changed_tokenizer_in_an_old_pipeline_is_refused(tmp_path):
    """The old identity still guards the old folder: a tokenizer with other weights is refused."""
    folder = tmp_path / "pipeline"
    shutil.copytree(SAVED / "pipeline", folder)
    tokenizer = VQWAE.from_pretrained(folder / "tokenizer")
    tokenizer.quantizer.codebook.data[0, 0] += 1.0
    flat = json.loads((folder / "tokenizer" / "config.json").read_text())
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "tokenizer" / "config.json").write_text(json.dumps(flat))  # still the old layout
    with pytest.raises(ValueError, match="not the tokenizer this pipeline was saved with"):
        VQWAEPipeline.from_pretrained(folder)


SAMPLING_SAVED = Path(__file__).resolve().parent / "fixtures" / "saved-0a2b468"


def test_a_pipeline_with_sampling_defaults_in_its_config_samples_what_it_sampled_then(tmp_path):
    """Main 0a2b468 kept the chosen sampling settings in pipeline_config.json `sampling`
    (tests/fixtures/saved-0a2b468, made by its make.py); they now load into the prior's
    GenerationConfig, and every kind of call draws the codes and images it drew then."""
    expected = load_file(str(SAMPLING_SAVED / "expected.safetensors"))
    pipe = VQWAEPipeline.from_pretrained(SAMPLING_SAVED / "pipeline")
    saved = json.loads((SAMPLING_SAVED / "pipeline" / "pipeline_config.json").read_text())["sampling"]
    assert pipe.sampling_defaults == saved and pipe.generation_config.top_k == saved["top_k"]

    def run(target, **kwargs):
        return target(n=4, generator=torch.Generator().manual_seed(0), output_type="pt", progress=False, **kwargs)

    for folder in (SAMPLING_SAVED / "pipeline", tmp_path / "again"):  # as saved then, and saved again today
        pipe = VQWAEPipeline.from_pretrained(folder)
        unconditional, conditional = run(pipe), run(pipe, class_labels=[1, 2, 3, 4])
        assert torch.equal(unconditional.codes, expected["unconditional_codes"])  # drawn the "classes" way, guided
        torch.testing.assert_close(unconditional.images, expected["unconditional_images"])
        assert torch.equal(conditional.codes, expected["conditional_codes"])
        torch.testing.assert_close(conditional.images, expected["conditional_images"])
        null_class = run(pipe, unconditional="null_class", temperature=1.0, top_k=0).codes
        assert torch.equal(null_class, expected["null_class_codes"])
        pipe.save_pretrained(tmp_path / "again")
    assert "sampling" not in json.loads((tmp_path / "again" / "pipeline_config.json").read_text())
