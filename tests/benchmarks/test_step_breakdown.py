"""benchmarks/step_breakdown.py on its smallest setting: the solver's operators are found inside the
recipe's profiled step, as many as its configuration runs, and the quantizer's solver is restored."""

import json

import pytest

import tokenizer.quantizers as quantizers
from benchmarks import step_breakdown
from tokenizer import VQWAEConfig


def test_the_solver_is_found_in_the_step_with_the_operators_its_settings_run(tmp_path):
    solver = quantizers.sinkhorn_transport
    out = tmp_path / "breakdown.json"
    step_breakdown.main(["--rounds", "1", "--profiled", "2", "--out", str(out)])
    assert quantizers.sinkhorn_transport is solver
    record = json.loads(out.read_text())
    assert record["ratio"] == pytest.approx(record["step_ms"]["VQ-WAE"] / record["step_ms"]["VQ-VAE"])
    profiled, transport = record["profiled"], VQWAEConfig().transport
    assert profiled["solves_per_step"] == 1
    calls = {row["operator"]: row["calls_per_step"] for row in profiled["operators"]}
    # One problem: each Sinkhorn iteration is two matrix-vector products (torch.mm), and one top-c
    # pass picks the candidates of the dual steps.
    assert calls["aten::mm"] == 2 * transport.iterations
    assert calls["aten::topk"] == 1
    assert sum(row["ms"] for row in profiled["operators"]) <= profiled["solver_ms"] < profiled["step_ms"]["VQ-WAE"]
    assert record["solver_alone_ms"] > 0
