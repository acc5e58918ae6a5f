"""benchmarks/ot_gap.py population: a trained plan against exact OT on pools of real latents."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT
from tokenizer import VQWAE, VQWAEConfig


def test_population_check_on_a_tiny_tokenizer(tmp_path):
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32, image_size=32))
    model.quantizer.codebook.data.mul_(0.1)  # near the untrained encoder's outputs
    model.save_pretrained(tmp_path)  # zero code potential: every Laguerre cell is a Voronoi cell
    command = [sys.executable, "-m", "benchmarks.ot_gap", "population", "--tokenizer", str(tmp_path)]
    command += ["--images", "64", "--pools", "256", "512", "--repeats", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{") : result.stdout.index("\n| pool")])
    assert report["latents"] == 64 * 8 * 8 and report["cell_differs_from_nearest"] == 0
    assert report["cell_marginal_l1"] == pytest.approx(report["nearest_marginal_l1"])
    assert [pool["size"] for pool in report["pools"]] == [256, 512]
    for pool in report["pools"]:
        assert pool["plan_cost"] == pytest.approx(pool["nearest_cost"], rel=1e-5)
        assert pool["exact_cost"] >= pool["nearest_cost"] * (1 - 1e-5)  # nearest: a lower bound on any plan
    assert "| 512 |" in result.stdout
