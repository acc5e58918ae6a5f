"""benchmarks/ot_gap.py: Sinkhorn settings against the exact optimum of the semi-relaxed problem."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT
from tokenizer import VQWAE, VQWAEConfig


def run_ot_gap(tmp_path, *settings, extra=()):
    command = [sys.executable, "-m", "benchmarks.ot_gap", "settings", "--tokenizer", str(tmp_path / "tok")]
    command += ["--warm", "2", "--batches", "2", "--batch-size", "8", "--out", str(tmp_path / "out")]
    for setting in settings:
        command += ["--setting", *setting.split()]
    command += list(extra)  # later flags win
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_settings_are_measured_against_the_exact_optimum(tmp_path):
    torch.manual_seed(0)
    config = VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32, image_size=32,
                         transport=dict(iterations=25))  # fmt: skip
    model = VQWAE(config)
    model.quantizer.codebook.data.mul_(0.1)  # near the untrained encoder's outputs
    model.save_pretrained(tmp_path / "tok")
    result = run_ot_gap(tmp_path, "one iterations=1 dual_steps=0", "converged iterations=200 dual_steps=80")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    one, converged = report["summary"]["one"], report["summary"]["converged"]
    assert converged["options"]["iterations"] == 200 and converged["options"]["epsilon"] == 0.1  # the tokenizer's
    for name, row in report["summary"].items():
        assert min(report["runs"][name]["gap"]) >= -1e-6  # feasible plans: never below the lower bound
        assert row["marginal_mean"] >= row["floor_mean"] - 0.05
    assert converged["gap_mean"] < one["gap_mean"]
    # Each time ratio is its solve time over the first option's, both reported; 200 Sinkhorn
    # iterations and 80 dual steps cost more than one iteration.
    assert converged["time_ratio"] == pytest.approx(converged["solve_ms"] / one["solve_ms"], rel=1e-6)
    assert converged["time_ratio"] > 1
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| converged | 0.1 | 200 | 80 |" in table and "one-hot floor" in table


def test_a_bad_setting_is_one_clear_error(tmp_path):
    tiny = dict(hidden_channels=8, num_res_blocks=0, embedding_dim=4, codebook_size=8)
    VQWAE(VQWAEConfig(**tiny, transport=dict(code_relaxation=0.0))).save_pretrained(tmp_path / "tok")
    result = run_ot_gap(tmp_path, "bad epsilon=0.1 max_iterations=3")
    assert result.returncode == 2 and "'max_iterations=3' is not key=value with a key in" in result.stderr
    result = run_ot_gap(tmp_path, "bad dual_steps=-2")
    assert result.returncode == 2 and "--setting bad: model.transport.dual_steps must be >= 0" in result.stderr
    result = run_ot_gap(tmp_path, "plain", extra=["--batches", "0"])
    assert result.returncode == 2 and "--batches and --batch-size must be >= 1" in result.stderr
    result = run_ot_gap(tmp_path, "plain")  # the tokenizer above is balanced (no code relaxation)
    assert result.returncode == 2 and "needs a semi-relaxed solve" in result.stderr
