"""cuda_graph=true, checked on the CPU: the step it records equals the plain step, keeps every
piece of state in place and reads nothing on the host once warm, and its checkpoints resume
either way. On the CPU the step runs eagerly; the tests switch on what a GPU run switches on
(Adam with capturable=True and a device learning rate, filled by the scheduler) by letting
capturable Adam run on the CPU. benchmarks/gpu/gpu_suite.py checks graph replay against eager on
a GPU."""

import copy
import importlib
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from infra import step_graph
from infra.step_graph import WARMUP_STEPS, GraphedStep, match_optimizer
from infra.training import backward_and_step
from tests.cpu_kernels import max_abs_deviation, mean_abs_deviation
from tests.helpers import read_metrics
from tests.tokenizer.test_gpu_path import count_host_reads
from tokenizer import train as train_module
from tokenizer import update as update_module
from tokenizer.config import TokenizerTrainConfig

ADAM = importlib.import_module("torch.optim.adam")  # the module (torch.optim.adam is the function)
# warmup_steps: the scheduler changes the learning rate during the run (a float lr baked into a
# recorded step would not follow it); constant after, so a run stopped at step 3 resumes exactly.
SCHEDULE = ["lr_scheduler=constant", "warmup_steps=4"]


@pytest.fixture
def graph_mode():
    """Train as on a GPU with cuda_graph=true: capturable fused Adam with a device lr (allowed on
    the CPU here), the step on static buffers (eager: the CPU has no graphs). `.undo()` leaves it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step_graph, "graph_applies", lambda requested, accelerator: requested)
        patch.setattr(train_module, "graph_applies", lambda requested, accelerator: requested)
        supported = ADAM._get_capturable_supported_devices
        patch.setattr(ADAM, "_get_capturable_supported_devices", lambda *a, **k: [*supported(*a, **k), "cpu"])
        yield patch


def losses(folder) -> list[float]:
    return [row["train/loss"] for row in read_metrics(folder) if "train/loss" in row]


# The plain step updates with torch's default Adam, the graphed one with capturable fused Adam:
# the same update summed in another order, whose last bits differ by CPU kernel (and the training
# carries them on). Measured (benchmarks/results/float-spread-2026-12-03.json, every kernel setting
# at 1 and 2 threads): the six losses part by at most 7e-7 and the final weights by a mean of
# 2.1e-6; with the 4th of 6 updates skipped in the graphed run they part by 3.4e-4 and 8.6e-4.
# Each tolerance is at least 7x the spread and at most a seventeenth of that change. (The weights
# are compared by their mean difference: Adam moves an entry whose gradient is rounding noise by a
# whole learning rate either way, so a few codebook entries part by up to 6e-4 on their own.)
FLOAT_TOLERANCES = {"losses": 5e-6, "final weights": 5e-5}


def plain_and_graphed(train, tmp_path, quantizer: str) -> dict:
    """Same seed, 6 steps, plain and graphed: (losses, final weights) of each."""
    runs = {}
    for name, mode in (("plain", []), ("graphed", ["cuda_graph=true"])):
        folder = tmp_path / name
        train(f"output_dir={folder}", f"model.quantizer={quantizer}", "max_steps=6", *SCHEDULE, *mode)
        runs[name] = losses(folder), load_file(folder / "final" / "model.safetensors")
    assert len(runs["plain"][0]) == 6
    return runs["plain"], runs["graphed"]


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("quantizer", ["wasserstein", "vq"])
def test_graphed_step_equals_the_plain_step(quantizer, train, graph_mode, tmp_path, float_check):
    """Same seed, 6 steps: the same losses and final weights, within what the two Adam kernels'
    rounding makes of them on any CPU."""
    (plain_losses, plain_weights), (graphed_losses, graphed_weights) = plain_and_graphed(train, tmp_path, quantizer)
    float_check.within("losses", max_abs_deviation(graphed_losses, plain_losses), FLOAT_TOLERANCES["losses"])
    deviation = mean_abs_deviation(graphed_weights, plain_weights)
    float_check.within("final weights", deviation, FLOAT_TOLERANCES["final weights"])


@pytest.mark.cpu_kernels
def test_the_graph_check_sees_a_skipped_optimizer_step(train, graph_mode, tmp_path, float_check, monkeypatch):
    """The change the check exists for: a recorded step that drops its update once (here the 4th
    of 6) leaves both the losses and the weights outside their tolerances."""
    graphed_calls = []

    def fourth_update_skipped(accelerator, model, optimizer, loss, config):
        graphed_calls.extend([config.cuda_graph] if config.cuda_graph else [])
        if config.cuda_graph and len(graphed_calls) == 4:
            accelerator.backward(loss)
            optimizer.zero_grad(set_to_none=True)
            return
        backward_and_step(accelerator, model, optimizer, loss, config)

    monkeypatch.setattr(update_module, "backward_and_step", fourth_update_skipped)
    (plain_losses, plain_weights), (graphed_losses, graphed_weights) = plain_and_graphed(train, tmp_path, "wasserstein")
    deviation = max_abs_deviation(graphed_losses, plain_losses)
    float_check.beyond("losses, 4th update skipped", deviation, FLOAT_TOLERANCES["losses"])
    deviation = mean_abs_deviation(graphed_weights, plain_weights)
    float_check.beyond("final weights, 4th update skipped", deviation, FLOAT_TOLERANCES["final weights"])


def test_a_graphed_runs_checkpoint_resumes_where_capturable_adam_cannot_run(train, graph_mode, tmp_path):
    """Three graphed steps (a GPU run's checkpoint: capturable fused Adam, a tensor lr), then
    resume=latest eagerly where capturable Adam is not supported (the CPU, as it is): the losses
    of a straight eager run."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(f"output_dir={straight}", "max_steps=6", *SCHEDULE)
    train(f"output_dir={split}", "cuda_graph=true", "max_steps=3", *SCHEDULE)
    graph_mode.undo()
    train(f"output_dir={split}", "cuda_graph=false", "max_steps=6", "resume=latest", *SCHEDULE)
    assert losses(split) == pytest.approx(losses(straight), abs=1e-6)


def test_warm_graphed_step_keeps_state_in_place_and_reads_nothing(train, graph_mode, tmp_path, monkeypatch):
    """Resumed from an eager run's checkpoint (its optimizer matched to the graphed mode), then
    after warm-up every tensor a replay reads or writes (weights, buffers, Adam's moments and
    step counts, the learning rate, the non-finite guard's record, the static batch) keeps its
    storage while its values move, and the step reads nothing on the host: a recorded step would
    otherwise go on reading stale copies, or wait for the host."""
    seen = {}

    class Recording(GraphedStep):
        def __call__(self, batch, step):
            if self.calls < WARMUP_STEPS:
                return super().__call__(batch, step)
            update = self.step_fn.__self__  # the TokenizerUpdate whose update is recorded
            if not seen:
                seen["before"] = state_of(self, update.model, update.optimizer, update.guard)
                seen["capturable"] = update.optimizer.param_groups[0]["capturable"]
            with monkeypatch.context() as patch:
                counts = count_host_reads(patch)
                outputs = super().__call__(batch, step)
            seen.setdefault("reads", Counter()).update(counts)
            seen["after"] = state_of(self, update.model, update.optimizer, update.guard)
            return outputs

    monkeypatch.setattr(update_module, "GraphedStep", Recording)
    schedule = ["lr_scheduler=constant", "warmup_steps=20"]  # the lr still moves in the recorded steps
    train(f"output_dir={tmp_path}", "max_steps=3", *schedule)
    train(f"output_dir={tmp_path}", "cuda_graph=true", "max_steps=9", "resume=latest", *schedule)
    assert seen["reads"] == Counter(), f"host reads in a warm graphed step: {dict(seen['reads'])}"
    before, after = seen["before"], seen["after"]
    assert before.keys() == after.keys() and len(before) > 20
    assert {name: pointer for name, (pointer, _) in after.items()} == {
        name: pointer for name, (pointer, _) in before.items()
    }, "state tensors replaced instead of updated in place"
    assert seen["capturable"] is True
    moved = [name for name in before if not torch.equal(before[name][1], after[name][1])]
    assert "lr" in moved and "optimizer.step.0" in moved and "model.encoder" in " ".join(moved)


def state_of(graphed: GraphedStep, model, optimizer, guard) -> dict[str, tuple[int, torch.Tensor]]:
    """(storage pointer, value copy) of every tensor a recorded step touches."""
    tensors = {f"model.{name}": value for name, value in [*model.named_parameters(), *model.named_buffers()]}
    for index, state in enumerate(optimizer.state.values()):
        tensors.update({f"optimizer.{key}.{index}": value for key, value in state.items()})
    tensors.update(lr=optimizer.param_groups[0]["lr"], inputs=graphed.inputs, step=graphed.step)
    tensors.update(guard_first_step=guard.first_step, guard_flags=guard.flags)
    return {name: (value.data_ptr(), value.detach().clone()) for name, value in tensors.items()}


def test_match_optimizer_turns_a_graphed_runs_state_into_an_eager_one():
    """A graphed run saves capturable=True, a tensor lr and device step counts; loaded into eager
    Adam and matched, the next update equals the one from an eager run's state."""
    torch.manual_seed(0)
    weights = torch.nn.Parameter(torch.randn(4, 3))

    def run_steps(optimizer, count):
        for _ in range(count):
            optimizer.zero_grad()
            weights.pow(2).sum().backward()
            optimizer.step()

    eager = torch.optim.Adam([weights], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(eager, lambda step: 1.0)
    run_steps(eager, 2)
    saved = copy.deepcopy(eager.state_dict())
    saved["param_groups"][0].update(lr=torch.tensor(1e-2), initial_lr=torch.tensor(1e-2), capturable=True, fused=True)
    start = weights.detach().clone()
    run_steps(eager, 1)
    expected = weights.detach().clone()

    weights.data.copy_(start)
    loaded = torch.optim.Adam([weights], lr=1e-2)
    loaded.load_state_dict(saved)
    scheduler = torch.optim.lr_scheduler.LambdaLR(loaded, lambda step: 1.0)
    scheduler.base_lrs = [torch.tensor(1e-2)]
    match_optimizer(loaded, scheduler, capturable=False)
    group = loaded.param_groups[0]
    assert group["capturable"] is False and group["fused"] is None and isinstance(group["lr"], float)
    assert scheduler.base_lrs == [pytest.approx(1e-2)] and isinstance(scheduler.base_lrs[0], float)
    run_steps(loaded, 1)
    torch.testing.assert_close(weights.detach(), expected)

    match_optimizer(loaded, scheduler, capturable=True)
    assert group["capturable"] is True and group["fused"] is True and isinstance(group["lr"], torch.Tensor)
    assert loaded.state[weights]["step"].device == weights.device


@pytest.mark.parametrize(
    "override, named",
    [
        ("compile=true", "compile=true"),
        ("gradient_accumulation_steps=2", "gradient_accumulation_steps=2"),
        ("nonfinite_loss=skip", "nonfinite_loss=skip"),
        ("mixed_precision=bf16", "mixed_precision=bf16"),
        ("model.transport.solver=exact", "solver=exact"),
        ("model.quantizer=vq_ema", "quantizer=vq_ema"),
    ],
)
def test_settings_a_graph_cannot_record_are_refused(override, named):
    from infra.config import load_config
    from tests.helpers import ROOT

    with pytest.raises(ValueError, match=f"cuda_graph=true cannot record a step with .*{named}"):
        load_config(TokenizerTrainConfig, ROOT / "configs/tokenizer/tiny.yaml", ["cuda_graph=true", override])


def test_on_the_cpu_it_says_so_and_runs_eagerly(train, tmp_path, capsys):
    train(f"output_dir={tmp_path}", "cuda_graph=true", "max_steps=2")
    assert "cuda_graph=true needs a CUDA device (this run is on cpu)" in capsys.readouterr().out
    assert len(losses(tmp_path)) == 2


def test_a_batch_of_another_shape_is_refused():
    step = GraphedStep(lambda inputs, number: inputs.sum(), graph=True)
    step(torch.ones(4, 1, 8, 8), 1)
    with pytest.raises(ValueError, match=r"batches of one shape.*\(4, 1, 8, 8\).*\(3, 1, 8, 8\).*drop_last=True"):
        step(torch.ones(3, 1, 8, 8), 2)


def test_the_long_run_uses_the_graph_only_when_it_matched_eager_and_is_faster():
    from benchmarks.gpu.gpu_suite import chunk_mode

    times = {"VQ-WAE, eager": 16.5, "VQ-WAE, graph": 4.0, "VQ-WAE, compiled": 12.0}
    assert chunk_mode(times, {"VQ-WAE": {"ok": True}}) == ["cuda_graph=true"]
    assert chunk_mode(times, {"VQ-WAE": {"ok": False}}) == ["compile=true"]  # replay disagreed with eager
    assert chunk_mode(times, {"error": "Traceback"}) == ["compile=true"]
    assert chunk_mode({**times, "VQ-WAE, graph": 15.5}, {"VQ-WAE": {"ok": True}}) == ["compile=true"]  # < 10% faster
    assert chunk_mode({**times, "VQ-WAE, compiled": "failed: AssertionError"}, {"VQ-WAE": {"ok": False}}) == []


def test_the_graph_verdict_fails_on_a_nan_or_a_drift():
    """The device check's verdict: a NaN anywhere fails it (Python's max() skipped a NaN that was
    not first, and a GPU check of NaN losses once reported a finite difference), and the first step
    past the tolerance is named."""
    from benchmarks.gpu.gpu_suite import graph_verdict

    eager = [0.5, 0.4, 0.3, 0.2]
    runs = {"recorded step run eagerly": eager, "recorded step run eagerly, again": eager, "default eager": eager}
    same = graph_verdict({**runs, "replayed": [0.5, 0.4 + 5e-5, 0.3, 0.2]})
    assert same["ok"] and same["first_step_past_tolerance"] is None
    assert same["max_loss_difference"] == pytest.approx(5e-5) and same["eager_run_to_run"] == 0.0
    drift = graph_verdict({**runs, "replayed": [0.5, 0.4, 0.3 + 2e-4, 0.2 + 3e-4]})
    assert not drift["ok"] and drift["first_step_past_tolerance"] == 3
    assert drift["max_loss_difference"] == pytest.approx(3e-4)
    for nan_run in ("replayed", "recorded step run eagerly"):
        broken = graph_verdict({**runs, "replayed": eager, nan_run: [0.5, 0.4, float("nan"), float("nan")]})
        assert not broken["ok"] and not broken["all_losses_finite"] and broken["first_step_past_tolerance"] == 3
        assert broken["max_loss_difference"] != broken["max_loss_difference"]  # NaN, not the finite part's max


@pytest.mark.parametrize("model", ["VQ-VAE", "VQ-WAE"])
def test_the_benchmark_step_trains_stably_as_the_loop_does(model):
    """The step the device check replays (benchmarks.train_step.make_step, the MNIST configs'
    models) warms up and clips as tokenizer/train.py does: 12 steps stay finite, and a 1e-6 change
    to the first batch moves no later loss by more than a quarter of the check's 1e-4 tolerance
    (measured: about 1e-6 by step 12, 3e-5 by step 20). Without warm-up and clipping the VQ-WAE
    step was NaN from step 3 and the VQ-VAE one had drifted by 3e-3 at step 12: replay against
    eager could not be judged at 1e-4."""
    from benchmarks.gpu.gpu_suite import GRAPH_TOLERANCE, batch_for, model_configs
    from benchmarks.train_step import make_step

    config = model_configs(dry_run=False)[model]
    batches = [batch_for(config, "cpu", offset=32 * index) for index in range(12)]
    runs = []
    for change in (0.0, 1e-6):
        step = make_step(config, batches[0], "cpu")
        runs.append([step(batch + change * (index == 0)).item() for index, batch in enumerate(batches)])
    assert all(0 < loss < 0.2 for loss in runs[0]), runs[0]
    assert max(abs(a - b) for a, b in zip(*runs)) < GRAPH_TOLERANCE / 4
