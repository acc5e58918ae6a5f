"""VQWAEPipeline: outputs, determinism, save/load, refusals, CLIs."""

import json
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from pipelines import VQWAEPipeline
from tests.readme_fixtures import tiny_pipeline


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "pipeline"
    tiny_pipeline(folder)
    return folder


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_sixteen_images_of_the_tokenizer_size(pipeline_dir, output_type):
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    output = pipe(n=16, output_type=output_type, batch_size=5, progress=False)
    assert output.codes.shape == (16, 4, 4) and output.codes.max() < 32
    if output_type == "pil":
        assert len(output.images) == 16 and all(
            isinstance(image, Image.Image) and image.size == (16, 16) for image in output.images
        )
    elif output_type == "np":
        assert output.images.shape == (16, 16, 16, 1) and output.images.min() >= 0 and output.images.max() <= 1
    else:
        assert output.images.shape == (16, 1, 16, 16)
        expected = pipe.tokenizer.decode(output.codes).clamp(0, 1)
        torch.testing.assert_close(output.images, expected)


def test_the_three_output_types_hold_the_same_pixels(pipeline_dir):
    """One seed, three output types: np is pt channels-last, PIL is np x 255 rounded to uint8
    (a missing x255, a wrong transpose or a truncation instead of rounding fails here)."""
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    draw = {kind: pipe(n=3, generator=torch.Generator().manual_seed(5), output_type=kind, progress=False)
            for kind in ("pil", "np", "pt")}  # fmt: skip
    assert all(torch.equal(draw["pt"].codes, output.codes) for output in draw.values())
    pixels = draw["pt"].images
    assert pixels.dtype == torch.float32 and 0 <= pixels.min() and pixels.max() <= 1 and pixels.std() > 0
    np.testing.assert_array_equal(draw["np"].images, pixels.permute(0, 2, 3, 1).numpy())
    for index, image in enumerate(draw["pil"].images):
        assert image.mode == "L" and image.size == (16, 16)
        expected = np.floor(pixels[index, 0].double().numpy() * 255 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_a_pipeline_folder_without_the_tokenizer_identity_is_refused(pipeline_dir, tmp_path):
    import json
    import shutil

    copy = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir, copy)
    config = json.loads((copy / "pipeline_config.json").read_text())
    del config["tokenizer_id"]
    (copy / "pipeline_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pipeline_config.json records no tokenizer_id; export the pipeline again"):
        VQWAEPipeline.from_pretrained(copy)


def test_same_seed_same_images(pipeline_dir):
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    first = pipe(n=4, generator=torch.Generator().manual_seed(3), output_type="np", progress=False).images
    again = pipe(n=4, generator=torch.Generator().manual_seed(3), output_type="np", progress=False).images
    other = pipe(n=4, generator=torch.Generator().manual_seed(4), output_type="np", progress=False).images
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_save_load_round_trip(pipeline_dir, tmp_path):
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    pipe.save_pretrained(tmp_path / "copy")
    loaded = VQWAEPipeline.from_pretrained(tmp_path / "copy")
    card = ModelCard.load(tmp_path / "copy" / "README.md")  # the Hub card, metadata included
    assert card.data.library_name == "vqwae" and card.data.pipeline_tag == "unconditional-image-generation"
    for name, tensor in pipe.prior.state_dict().items():
        assert torch.equal(tensor, loaded.prior.state_dict()[name])
    for name, tensor in pipe.tokenizer.state_dict().items():
        assert torch.equal(tensor, loaded.tokenizer.state_dict()[name])
    codes = pipe(n=3, generator=torch.Generator().manual_seed(0), progress=False).codes
    assert torch.equal(codes, loaded(n=3, generator=torch.Generator().manual_seed(0), progress=False).codes)


def test_prior_of_another_tokenizer_is_refused(pipeline_dir, tmp_path):
    other = tiny_pipeline(tmp_path / "other", seed=1)
    mixed = tmp_path / "mixed"
    shutil.copytree(pipeline_dir, mixed)
    shutil.rmtree(mixed / "tokenizer")
    other.tokenizer.save_pretrained(mixed / "tokenizer")
    with pytest.raises(ValueError, match="not the tokenizer this pipeline was saved with"):
        VQWAEPipeline.from_pretrained(mixed)
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    with pytest.raises(ValueError, match="trained on the codes of tokenizer"):
        VQWAEPipeline(tokenizer=other.tokenizer, prior=pipe.prior)


def test_missing_part_is_named(pipeline_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(pipeline_dir, broken)
    shutil.rmtree(broken / "prior")
    with pytest.raises(ValueError, match=r"missing \['prior'\]"):
        VQWAEPipeline.from_pretrained(broken)


def test_class_conditional_call_and_bad_output_type(pipeline_dir):
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    output = pipe(n=2, class_labels=[3, 4], guidance_scale=2.0, top_k=10, output_type="pt", progress=False)
    assert output.images.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="output_type='jpg'"):
        pipe(n=2, output_type="jpg")


def test_push_to_hub_uploads_a_loadable_pipeline(pipeline_dir, fake_hub):
    VQWAEPipeline.from_pretrained(pipeline_dir).push_to_hub("me/pipe")
    assert VQWAEPipeline.from_pretrained(fake_hub.folder / "me/pipe").codebook_size == 32


def test_sample_cli_writes_a_grid(pipeline_dir, tmp_path):
    from pipelines import sample

    out = tmp_path / "grid.png"
    sample.main(["--pipeline", str(pipeline_dir), "--n", "9", "--out", str(out), "--seed", "1", "--class-label", "2"])
    assert Image.open(out).size == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)
    classes = tmp_path / "classes.png"
    sample.main(["--pipeline", str(pipeline_dir), "--per-class", "2", "--guidance-scale", "2", "--out", str(classes)])
    assert Image.open(classes).size == (2 * 16 + 3 * 2, 10 * 16 + 11 * 2)  # 10 rows (classes) of 2


def test_fid_cli_prints_json(pipeline_dir, tmp_path, capsys, monkeypatch):
    from pipelines import fid

    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path / "cache"))
    fid.main(["--pipeline", str(pipeline_dir), "--n", "8", "--reference", "mnist:test", "--reference-n", "8"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n") :])
    assert result["n"] == 8 and result["reference"] == "mnist:test"
    # The command's number is the API's on the same draw (seed 0, the first 8 test images).
    expected = VQWAEPipeline.from_pretrained(pipeline_dir).fid(n=8, reference="mnist:test", reference_n=8)
    assert result["fid"] == pytest.approx(expected.fid, rel=1e-6) and expected.fid > 1  # random codes: far from digits
    assert "inception-v3-compat" in result["extractor"]


def test_fid_cli_class_conditional_with_guidance(pipeline_dir, tmp_path, capsys, monkeypatch):
    """--each-class --guidance-scale: the samples are drawn n / num_classes per class with that
    guidance."""
    from pipelines import fid

    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path / "cache"))
    seen = []
    original = VQWAEPipeline.__call__
    monkeypatch.setattr(VQWAEPipeline, "__call__", lambda self, **kw: seen.append(kw) or original(self, **kw))
    arguments = ["--pipeline", str(pipeline_dir), "--n", "10", "--reference-n", "10"]
    fid.main([*arguments, "--each-class", "--guidance-scale", "2"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n") :])
    assert seen[0]["class_labels"] == "each" and seen[0]["guidance_scale"] == 2.0
    monkeypatch.setattr(VQWAEPipeline, "__call__", original)
    expected = VQWAEPipeline.from_pretrained(pipeline_dir).fid(n=10, reference_n=10, class_labels="each", guidance_scale=2.0)
    assert result["n"] == 10 and result["fid"] == pytest.approx(expected.fid, rel=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "-1"], "--n must be >= 1, got -1"),
        (["--n", "0"], "--n must be >= 1, got 0"),
        (["--per-class", "-2"], "--per-class must be >= 1, got -2"),
        (["--top-p", "2"], "top_p must lie in (0, 1], got 2.0"),
    ],
)
def test_sample_cli_bad_counts_are_one_line_and_write_nothing(pipeline_dir, tmp_path, args, message):
    import subprocess
    import sys

    from tests.helpers import ROOT

    out = tmp_path / "grid.png"
    result = subprocess.run([sys.executable, "-m", "pipelines.sample", "--pipeline", str(pipeline_dir), "--out",
                             str(out), *args], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}" and not out.exists()
