"""benchmarks/prior_recipe.py on the tiny prior: every variant trains once on one shared code
cache, its table reads the runs' own logs, a bf16 run is compared curve against curve with its
fp32 twin, a rerun skips finished runs, and a bad variant is one clear line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, read_metrics
from tokenizer import VQWAE, VQWAEConfig

MODULE = "benchmarks.prior_recipe"
TINY = ["configs/prior/tiny.yaml", "max_steps=4", "validate_every=2", "checkpoint_every=4"]


def recipe(out, tokenizer, *variants):
    command = [sys.executable, "-m", MODULE, "--out", str(out), "--tokenizer", str(tokenizer)]
    for variant in variants:
        command += ["--variant", *variant]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_recipes_share_codes_and_compare_precisions(tmp_path):
    torch.manual_seed(0)
    tokenizer = tmp_path / "tokenizer"
    VQWAE(
        VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32, image_size=16)
    ).save_pretrained(tokenizer)
    variants = [("fp32", *TINY), ("bf16", *TINY, "mixed_precision=bf16"), ("wide", *TINY, "model.hidden_size=64")]
    first = recipe(tmp_path / "out", tokenizer, *variants)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(report["runs"]) == ["fp32", "bf16", "wide"]
    for name, run in report["runs"].items():
        logs = read_metrics(tmp_path / "out" / name)
        curve = {str(row["step"]): row["validation/bits_per_code"] for row in logs if "validation/bits_per_code" in row}
        assert run["curve"] == curve and set(curve) == {"2", "4"}
        assert run["bits_per_code"] == pytest.approx(curve["4"], rel=1e-6)  # logged as float32
        assert (tmp_path / "out" / name / "codes").resolve() == (tmp_path / "out" / "codes").resolve()
    assert report["runs"]["wide"]["parameters"] > report["runs"]["fp32"]["parameters"]
    assert report["runs"]["bf16"]["mixed_precision"] == "bf16"
    pair = report["precision_pairs"]["bf16"]
    fp32, bf16 = report["runs"]["fp32"]["curve"], report["runs"]["bf16"]["curve"]
    assert pair["fp32"] == "fp32" and set(report["precision_pairs"]) == {"bf16"}
    assert pair["largest_gap"] == max((bf16[step] - fp32[step] for step in fp32), key=abs)
    assert "| wide | 1 x 64 |" in (tmp_path / "out" / "results.md").read_text()

    again = recipe(tmp_path / "out", tokenizer, *variants)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already trained") == 3


def test_bad_variant_is_one_clear_line(tmp_path):
    result = recipe(tmp_path, "unused", ("bad", "configs/prior/tiny.yaml", "model.nope=1"))
    assert result.returncode != 0
    assert "variant 'bad': unknown config key(s) ['model.nope']" in result.stderr.strip().splitlines()[-1]


def test_judged_pipelines_match_evaluate_and_are_cached(tmp_path, monkeypatch, small_digit_classifier):
    import shutil

    from benchmarks import prior_recipe
    from infra.metrics.digit_classifier import VERSION
    from pipelines.evaluation import evaluate_samples
    from pipelines.pipeline_vqwae import VQWAEPipeline
    from tests.readme_fixtures import tiny_pipeline

    shutil.copytree(small_digit_classifier[0], tmp_path / "cache" / "digit-classifier" / f"{VERSION}-e2-s0")
    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    tiny_pipeline(run / "pipeline", image_size=32)
    judged = prior_recipe.judge(run, per_class=2)
    # The same samples judged by pipelines.evaluation: 2 of every class, 20 unconditional.
    expected = evaluate_samples(VQWAEPipeline.from_pretrained(run / "pipeline"), per_class=2, num_unconditional=20)
    assert judged["class_accuracy"] == expected["class_conditional"]["accuracy"]
    assert judged["worst_class"] == expected["class_conditional"]["worst_class"]
    assert judged["recognisable"] == expected["unconditional"]["recognisable"]
    # Cached in the run folder: a rerun reads it back instead of sampling again.
    saved = json.loads((run / prior_recipe.JUDGED).read_text())
    (run / prior_recipe.JUDGED).write_text(json.dumps({**saved, "recognisable": 0.123}))
    assert prior_recipe.judge(run, per_class=2)["recognisable"] == 0.123
    prior_recipe.judge(run, per_class=3)  # another count samples again
    assert json.loads((run / prior_recipe.JUDGED).read_text())["per_class"] == 3
    # The table shows the verdict beside the bits.
    result = {"layers": 1, "hidden": 32, "batch_size": 16, "learning_rate": 3e-3, "steps": 6, "mixed_precision": "no",
              "minutes": 0.1, "wall_minutes": None, "bits_per_code": 8.0, "curve": {6: 8.0},
              "judged": {**judged, "class_accuracy": 0.975, "worst_class": 0.9, "recognisable": 0.5}}  # fmt: skip
    row = prior_recipe.markdown({"v": result}, {}, "1").splitlines()[-1]
    assert "| 97.5% (90%) | 50.0% |" in row and "| - | 8.000 |" in row
