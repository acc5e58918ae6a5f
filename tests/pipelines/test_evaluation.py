"""python -m pipelines.evaluation: the digit classifier's verdict on a pipeline's samples, equal to
judging the same seeded samples by hand; bad input is one clear line."""

import json
import shutil

import pytest
import torch

from infra.metrics.digit_classifier import VERSION, judge
from infra.metrics.fid_score import FIDResult
from pipelines import evaluation
from tests.readme_fixtures import tiny_pipeline


@pytest.fixture
def cached_classifier(tmp_path, monkeypatch, small_digit_classifier):
    shutil.copytree(small_digit_classifier[0], tmp_path / "cache" / "digit-classifier" / f"{VERSION}-e2-s0")
    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path / "cache"))
    return small_digit_classifier


def test_the_verdict_is_the_classifiers_on_the_same_samples(tmp_path, cached_classifier, capsys):
    _, classifier, info = cached_classifier
    pipe = tiny_pipeline(tmp_path / "pipe", image_size=32)
    record = tmp_path / "verdict.json"
    result = evaluation.main(["--pipeline", str(tmp_path / "pipe"), "--per-class", "3", "--unconditional", "12",
                            "--temperature", "0.9", "--out", str(record)])  # fmt: skip
    assert '"recognisable"' in capsys.readouterr().out
    written = json.loads(record.read_text())
    assert written["command"].startswith("python -m pipelines.evaluation --pipeline") and written["pipeline"] == str(tmp_path / "pipe")
    assert {key: written[key] for key in result} == json.loads(json.dumps(result))
    with pytest.raises(FileExistsError, match="is not overwritten"):
        evaluation.main(["--pipeline", str(tmp_path / "pipe"), "--out", str(record)])
    assert result["classifier_test_accuracy"] == info.test_accuracy
    labels = torch.arange(10).repeat_interleave(3)
    images = pipe(n=30, class_labels=labels, temperature=0.9, generator=torch.Generator().manual_seed(0),
                  output_type="pt", progress=False).images  # fmt: skip
    assert result["class_conditional"] == {"samples": 30, **judge(classifier, images).accuracy(labels)}
    images = pipe(n=12, temperature=0.9, generator=torch.Generator().manual_seed(1), output_type="pt",
                  progress=False).images  # fmt: skip
    assert result["unconditional"]["recognisable"] == judge(classifier, images).recognisable()
    # Unconditional samples drawn through classes take the guidance; the same samples by hand.
    result = evaluation.main(["--pipeline", str(tmp_path / "pipe"), "--per-class", "0", "--unconditional", "12",
                            "--unconditional-mode", "classes", "--guidance-scale", "2"])  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    drawn = torch.randint(0, 10, (12,), generator=generator)
    images = pipe(n=12, class_labels=drawn, guidance_scale=2.0, generator=generator, output_type="pt",
                  progress=False).images  # fmt: skip
    assert "class_conditional" not in result
    assert result["unconditional"]["recognisable"] == judge(classifier, images).recognisable()


def test_bad_input_is_one_clear_error(tmp_path, cached_classifier, capsys):
    tiny_pipeline(tmp_path / "small")  # 16 x 16 images: not what the classifier judges
    with pytest.raises(SystemExit) as stop:
        evaluate_cli(tmp_path / "small")
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and "judges 1 x 32 x 32 digits; this pipeline makes 1 x 16 x 16" in error.splitlines()[-1]
    tiny_pipeline(tmp_path / "pipe", image_size=32)
    with pytest.raises(ValueError, match="must be >= 0"):
        evaluation.evaluate_samples(evaluation.VQWAEPipeline.from_pretrained(tmp_path / "pipe"), per_class=-1)


def evaluate_cli(folder):
    """The command as a user runs it: a ValueError becomes one line and exit status 2."""
    from infra.config import run_cli

    run_cli(lambda: evaluation.main(["--pipeline", str(folder)]))


def test_fid_scores_the_judged_unconditional_samples(tmp_path, cached_classifier, monkeypatch):
    """--fid-n N at most --unconditional: the FID is of the first N judged images, drawn once."""
    pipe = tiny_pipeline(tmp_path / "pipe", image_size=32)
    judged, scored, drawn = [], [], []
    monkeypatch.setattr(evaluation, "judge", lambda model, images: judged.append(images) or judge(model, images))
    monkeypatch.setattr(evaluation, "compute_fid", lambda images, reference, reference_n: scored.append(
        (images, reference, reference_n)) or FIDResult(1.0, len(images), reference, reference_n, "stub"))  # fmt: skip
    call = type(pipe).__call__
    monkeypatch.setattr(type(pipe), "__call__", lambda self, *a, **k: drawn.append(k["n"]) or call(self, *a, **k))
    result = evaluation.evaluate_samples(pipe, per_class=0, num_unconditional=12, fid_n=8)
    assert drawn == [12] and len(judged) == 1 and result["gfid"]["n"] == 8
    images, reference, reference_n = scored[0]
    assert torch.equal(images, judged[0][:8]) and (reference, reference_n) == ("mnist:test", 8)
