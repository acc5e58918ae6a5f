"""The float checks hold on any CPU: the switch that runs the suite as another CPU would, and the
measured record behind every tolerance a `cpu_kernels` test states (tests/cpu_kernels.py)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.cpu_kernels import SWITCH, max_abs_deviation, mean_abs_deviation, relative_mean_deviation
from tests.helpers import ROOT
from tests.tokenizer import test_cuda_graph, test_gpu_path, test_recipe

RECORD = ROOT / "benchmarks" / "results" / "float-spread-2026-12-03.json"
TOLERANCES = {  # each float-checking test module's stated tolerances, by comparison name
    "tests/tokenizer/test_recipe.py": test_recipe.FLOAT_TOLERANCES,
    "tests/tokenizer/test_cuda_graph.py": test_cuda_graph.FLOAT_TOLERANCES,
    "tests/tokenizer/test_gpu_path.py": test_gpu_path.FLOAT_TOLERANCES,
}


def pytest_in(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_switch_runs_the_tests_with_another_cpus_kernels():
    """VQWAE_CPU_KERNELS reaches ATen before torch loads (the header says what runs), and a name
    that is not a setting stops the run naming the choices."""
    for name, capability in (("generic", "DEFAULT"), ("avx2", "AVX2")):
        result = pytest_in({SWITCH: name}, "tests/test_docs.py::test_slug_matches_github")
        assert result.returncode == 0, result.stdout[-2000:]
        assert f"CPU kernels: {name} (ATen {capability})" in result.stdout
    wrong = pytest_in({SWITCH: "sse9"}, "tests/test_docs.py::test_slug_matches_github")
    assert wrong.returncode != 0
    assert f"{SWITCH}=sse9 is not a kernel setting; choose one of native, generic, avx2, avx512" in wrong.stdout + wrong.stderr


def test_every_float_check_states_a_tolerance_its_record_justifies():
    """benchmarks/results/float-spread-2026-12-03.json ran every `cpu_kernels` test under every
    kernel setting at 1 and 2 threads: each same-computation deviation stays under a third of the
    tolerance the test states today, and each guarded change lands beyond it everywhere."""
    record = json.loads(RECORD.read_text())
    assert set(record["pytest_exit"].values()) == {0} and len(record["settings"]) == 8
    for name, check in record["checks"].items():
        module, _, comparison = name.partition("::")
        key = comparison.split("::")[-1].split(",")[0]
        assert check["tolerance"] == TOLERANCES[module][key], f"{name}: the tolerance changed since it was measured"
        assert len(check["deviations"]) == 8, name
        if check["kind"] == "same computation":
            assert 3 * max(check["deviations"].values()) <= check["tolerance"], name
        else:
            assert min(check["deviations"].values()) > check["tolerance"], name
    collected = pytest_in({}, "--collect-only", "-q", "-m", "cpu_kernels", "tests")
    marked = {line for line in collected.stdout.splitlines() if "::" in line}
    assert marked == {name.rpartition("::")[0] for name in record["checks"]}, "a float check without a measurement"


def test_the_deviations_against_a_direct_computation():
    assert relative_mean_deviation([1.0, 3.0], [2.0, 2.0]) == 0.0
    assert relative_mean_deviation([2.0, 4.0], [2.0, 2.0]) == pytest.approx(0.5)
    assert max_abs_deviation([0.1, 0.2], [0.1, 0.25]) == pytest.approx(0.05)
    weights = {"a": torch.zeros(3), "b": torch.ones(1), "mask": torch.ones(2, dtype=torch.bool)}
    moved = {"a": torch.tensor([0.0, 0.0, 0.4]), "b": torch.ones(1), "mask": torch.zeros(2, dtype=torch.bool)}
    assert mean_abs_deviation(moved, weights) == pytest.approx(0.1)  # 0.4 over 4 float entries
    with pytest.raises(ValueError, match="different keys"):
        mean_abs_deviation({"a": torch.zeros(3)}, weights)
