"""The GPU path, checked on the CPU: a training step that never waits for the host."""

from collections import Counter

import pytest
import torch
from accelerate import Accelerator

from tests.helpers import reset_accelerate
from tokenizer import VQWAE, VQWAEConfig
from tokenizer.objective import LossConfig, total_loss
from tokenizer.training import NonFiniteGuard, RunConfig
from tokenizer.transport import sinkhorn_transport

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
        dict(quantizer="wasserstein", ot_encoder_target="nearest", sinkhorn_iterations=25, sinkhorn_check_every=25),
        dict(quantizer="wasserstein", ot_scope="position", ot_encoder_target="cell"),
        dict(quantizer="vq"),
    ],
    ids=["vq-wae-mnist-default", "vq-wae-position", "vq-vae"],
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
    """With check_every >= max_iterations a warm start runs exactly max_iterations, unchecked, and
    gives the same potentials as the same iterations run with a (syncing) check."""
    generator = torch.Generator().manual_seed(0)
    cost = torch.rand(1, 32, 96, generator=generator)
    weights = torch.full((1, 32), 1 / 32)
    cold = sinkhorn_transport(cost, weights, max_iterations=200, check_every=10)
    options = dict(code_potential=cold.code_potential, plan_type="assignment", dense_plan=False)
    counts = count_host_reads(monkeypatch)
    warm = sinkhorn_transport(cost * 1.01, weights, max_iterations=25, check_every=25, tolerance=0.0, **options)
    assert counts == Counter() and warm.iterations == 25
    monkeypatch.undo()
    checked = sinkhorn_transport(cost * 1.01, weights, max_iterations=25, check_every=5, tolerance=0.0, **options)
    torch.testing.assert_close(warm.code_potential, checked.code_potential)
    torch.testing.assert_close(warm.cells, checked.cells)
