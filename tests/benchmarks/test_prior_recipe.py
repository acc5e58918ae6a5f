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
