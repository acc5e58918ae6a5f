"""The GPU path, checked on the CPU: a training step that never waits for the host, compiled
steps equal to eager ones, and time-limited chunks of a long run."""

import json
import os
import subprocess
import sys
import tarfile
from collections import Counter

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from infra.training import NonFiniteGuard, RunConfig
from tests.cpu_kernels import max_abs_deviation
from tests.helpers import ROOT, read_metrics, reset_accelerate
from tokenizer import VQWAE, VQWAEConfig
from tokenizer.objective import LossConfig, total_loss
from tokenizer.transport import entropic_sinkhorn, sinkhorn_transport
from tokenizer.transport_config import TransportConfig

TINY = dict(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32, image_size=16)
# Every way Python code can read a tensor's value on the host: on a GPU each one is a sync.
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


def count_host_reads(monkeypatch) -> Counter:
    """Patch torch.Tensor so every host read is counted (by name) and still works."""
    counts = Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


@pytest.fixture
def accelerator():
    reset_accelerate()
    yield Accelerator(cpu=True)
    reset_accelerate()


@pytest.mark.parametrize(
    "settings",
    [
        dict(quantizer="wasserstein"),
        dict(quantizer="wasserstein", transport=dict(scope="position", encoder_target="cell", code_relaxation=0.0)),
        dict(quantizer="vq"),
    ],
    ids=["vq-wae-recipe", "vq-wae-position", "vq-vae"],
)
def test_training_step_reads_nothing_on_the_host(settings, accelerator, monkeypatch):
    """Forward, loss, the non-finite guard and backward of a warm training step: zero host reads.
    (The first step may sync: it draws the codebook and cold-starts Sinkhorn.)"""
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(**TINY, **settings)).train()
    guard = NonFiniteGuard(accelerator, RunConfig(nonfinite_loss="stop"))
    images = torch.rand(8, 1, 16, 16)

    def step(number: int) -> None:
        loss = total_loss(model(images), LossConfig())
        assert guard.step_ok(loss.terms, loss.total, number)
        loss.total.backward()

    step(1)
    counts = count_host_reads(monkeypatch)
    step(2)
    step(3)
    assert counts == Counter(), f"host reads in a training step: {dict(counts)}"
    monkeypatch.undo()
    guard.verify()  # a finite run passes the (syncing) check


def test_guard_names_the_first_nonfinite_step_only_when_verified(accelerator, monkeypatch):
    guard = NonFiniteGuard(accelerator, RunConfig(output_dir="run", nonfinite_loss="stop"))
    finite, nan = torch.tensor(1.0), torch.tensor(float("nan"))
    counts = count_host_reads(monkeypatch)
    assert guard.step_ok({"reconstruction": finite, "transport": finite}, finite, 1)
    assert guard.step_ok({"reconstruction": finite, "transport": nan}, nan, 2)
    assert guard.step_ok({"reconstruction": nan, "transport": nan}, nan, 3)
    assert counts == Counter()
    monkeypatch.undo()
    with pytest.raises(FloatingPointError, match=r"step 2 in term\(s\) \['transport'\].*run/checkpoints are intact"):
        guard.verify()


def test_warm_sinkhorn_is_a_fixed_budget_without_host_reads(monkeypatch):
    """The training solver (the recipe: semi-relaxed, dual steps over candidates) runs exactly
    transport.iterations from the carried potential with no host read, and its Sinkhorn part gives
    the potential of the reference solver run for the same iterations from the same start."""
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(1, 32, 96, generator=generator)
    weights = torch.full((1, 32), 1 / 32)
    start = entropic_sinkhorn(cost, weights, epsilon=0.1, max_iterations=200, code_relaxation=1.0).code_potential
    counts = count_host_reads(monkeypatch)
    warm = sinkhorn_transport(cost * 1.01, weights, TransportConfig(iterations=25), start, dense_plan=False)
    assert counts == Counter() and warm.iterations == 25
    monkeypatch.undo()
    sinkhorn_only = sinkhorn_transport(cost * 1.01, weights, TransportConfig(iterations=25, dual_steps=0), start)
    reference = entropic_sinkhorn(cost * 1.01, weights, 0.1, 25, code_relaxation=1.0, check_every=25, code_potential=start)
    torch.testing.assert_close(sinkhorn_only.code_potential, reference.code_potential)


# Inductor writes its own C++ kernels (vectorised for the ISA it detects), so compiled and eager
# losses part by rounding that depends on the CPU. Measured (benchmarks/results/float-spread-
# 2026-12-03.json, every kernel setting at 1 and 2 threads): at most 1e-7. A 10% change of the
# learning rate moves these three losses by 3.6e-5: the tolerance lies between.
FLOAT_TOLERANCES = {"losses": 1e-5}


@pytest.mark.cpu_kernels
def test_compiled_training_matches_eager(train, tmp_path, float_check):
    """compile=true (torch.compile, inductor on the CPU) trains to the same losses as eager within
    what CPU kernels change, and its checkpoints and final weights keep the eager keys (resumable
    either way). Inductor draws random numbers from its own stream (the first batch's codebook
    draw); the test makes it use eager's, so only the compiled arithmetic is compared."""
    import torch._inductor.config

    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    common = ["max_steps=3", "checkpoint_every=2", "validate_every=100"]
    # inductor's own patch, not monkeypatch: undoing a setattr on its config module deletes the
    # setting, and the next compilation in this process fails for want of it.
    with torch._inductor.config.patch(fallback_random=True):
        train(f"output_dir={eager}", *common)
        train(f"output_dir={compiled}", "compile=true", *common)
    losses = {
        name: [row["train/loss"] for row in read_metrics(folder) if "train/loss" in row]
        for name, folder in (("eager", eager), ("compiled", compiled))
    }
    assert len(losses["eager"]) == 3
    float_check.within("losses", max_abs_deviation(losses["compiled"], losses["eager"]), FLOAT_TOLERANCES["losses"])
    eager_keys = set(load_file(eager / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert set(load_file(compiled / "checkpoints" / "step_00000002" / "model.safetensors")) == eager_keys
    VQWAE.from_pretrained(compiled / "final")


def test_time_limit_checkpoints_and_resumes(train, tmp_path):
    """time_limit_minutes stops at the first log step past the limit with a checkpoint and no
    final model; the same command with resume=latest finishes the run."""
    stopped = train(f"output_dir={tmp_path}", "max_steps=4", "time_limit_minutes=1e-9")
    assert stopped == {"stopped_at_step": 1}
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["step_00000001"]
    assert not (tmp_path / "final").exists()
    train(f"output_dir={tmp_path}", "max_steps=4", "resume=latest")
    assert (tmp_path / "final" / "config.json").is_file()
    assert [row["step"] for row in read_metrics(tmp_path) if "train/loss" in row] == [1, 2, 3, 4]


def test_gpu_suite_dry_run_advances_the_run_across_calls(tmp_path):
    """The device script rehearsed on the CPU (tiny config): its JSON/Markdown report, and a run
    chunk that comes back as one tar, is unpacked, carried into the next call and resumed there."""

    def suite(out, *args):
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.gpu.gpu_suite", "--out", str(out), "--dry-run", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out / "gpu_suite.json").read_text())

    first = suite(tmp_path / "call1")
    assert set(first["step_ms"]) == {
        f"{m}, {mode}"
        for m in ("VQ-VAE", "VQ-WAE")
        for mode in ("eager", "graph", "compiled", "compiled, layout_optimization off", "bf16")
    } | {"VQ-WAE compiled solver, eager", "VQ-WAE compiled solver, graph"}
    assert all(isinstance(value, float) and value > 0 for value in first["step_ms"].values())  # none failed
    # The recorded step (eager on the CPU) against itself run eagerly: the same arithmetic.
    for check in first["graph_check"].values():
        assert check["ok"] and check["max_loss_difference"] <= 1e-6 and check["steps"] == 3 and not check["graph"]
        assert check["eager_run_to_run"] <= 1e-6 and check["first_step_past_tolerance"] is None
        losses = check["losses"]  # four runs of three steps; the recorded step, eager, twice
        assert len(losses) == 4 and all(len(values) == 3 for values in losses.values())
        assert check["max_loss_difference"] == max(
            abs(x - y) for x, y in zip(losses["replayed"], losses["recorded step run eagerly"])
        )
    assert first["run_100ep"]["step"] == 1 and not first["run_100ep"]["finished"]
    assert "VQ-WAE / VQ-VAE, compiled" in (tmp_path / "call1" / "gpu_suite.md").read_text()
    assert sorted(path.name for path in (tmp_path / "call1").iterdir()) == [
        "gpu_suite.json",
        "gpu_suite.md",
        "run-100ep.tar",
    ]
    carried = tmp_path / "gpu-run"
    with tarfile.open(tmp_path / "call1" / "run-100ep.tar") as tar:
        tar.extractall(carried, filter="data")
    second = suite(tmp_path / "call2", "--skip", "syncs", "graph", "timing", "--run-from", str(carried))
    assert (second["run_100ep"]["start_step"], second["run_100ep"]["step"]) == (1, 2)


def test_training_batches_reach_the_device_without_a_stream_sync(train, tmp_path, monkeypatch):
    """A copy from pageable memory to a GPU waits for every kernel queued before it, so the loop
    ran at step time plus host time (the H200's 14 ms a step in the loop against 9.7 for the step).
    On a GPU the training loader pins its batches (training_loader) and the prepared loader copies
    them non-blocking (build_accelerator): checked here on the copies a CPU run makes, and on the
    loader a CUDA accelerator would get."""
    from types import SimpleNamespace

    from accelerate import data_loader

    from infra.training import training_loader

    copies = []
    send = data_loader.send_to_device

    def recording(batch, device, non_blocking=False, **kwargs):
        copies.append(non_blocking)
        return send(batch, device, non_blocking=non_blocking, **kwargs)

    monkeypatch.setattr(data_loader, "send_to_device", recording)
    train(f"output_dir={tmp_path}", "max_steps=2", "validate_every=100")
    assert len(copies) >= 2 and all(copies), copies  # training and validation batches alike
    dataset = torch.utils.data.TensorDataset(torch.arange(10))
    for device, pinned in (("cuda", True), ("cpu", False)):
        accelerator = SimpleNamespace(device=torch.device(device), num_processes=1)
        loader = training_loader(dataset, accelerator, RunConfig(batch_size=4))
        assert loader.pin_memory is pinned and loader.drop_last and len(loader) == 2, device


def test_a_chunks_loop_pace_is_its_own_log_intervals():
    """gpu_suite's loop pace: the median of the chunk's own log intervals (the gap across two
    device calls and validation rows left out), in ms a step."""
    from benchmarks.run_progress import loop_ms_per_step

    rows = [{"step": 500, "time": 0.0, "train/loss": 1}, {"step": 1000, "time": 7.0, "train/loss": 1},
            {"step": 1000, "time": 7.5, "validation/psnr": 30},
            {"step": 1500, "time": 500.0, "train/loss": 1},  # the next call: resumed after a pause
            {"step": 2000, "time": 506.0, "train/loss": 1}, {"step": 2500, "time": 513.0, "train/loss": 1},
            {"step": 3000, "time": 521.0, "train/loss": 1}]  # fmt: skip
    assert loop_ms_per_step(rows, after_step=0) == 14.0  # 14, 985, 12, 14, 16 ms: the median
    assert loop_ms_per_step(rows, after_step=1000) == 14.0  # 12, 14, 16
    assert loop_ms_per_step(rows, after_step=2500) is None
