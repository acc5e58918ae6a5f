"""Reliability: kills, partial writes, non-finite losses, bad input from the command line,
safe loading, and data parallelism checked across real processes."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from infra.checkpointing import latest_step, list_checkpoints, resolve_resume
from tests.helpers import ROOT, read_metrics, run_script
from tokenizer import train as tokenizer_train
from tokenizer import update as tokenizer_update


def last_per_step(output_dir, key):
    values = {}
    for row in read_metrics(output_dir):
        if key in row:
            values[row["step"]] = row[key]
    return values


# The same environment (threads included) for every run that is compared: float sums depend on it.
RUN_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start(args):
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=RUN_ENV
    )


def finish(args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=RUN_ENV)


def kill_after_checkpoint(process, output_dir, at_least: int, timeout: float = 300):
    """SIGKILL the run once a checkpoint at >= `at_least` exists (a real kill, mid-training)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(path.name.split("_")[1]) for path in list_checkpoints(output_dir)]
        if steps and max(steps) >= at_least:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return max(steps)
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {process.stderr.read()[-2000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("no checkpoint appeared in time")


STAGES = {
    "tokenizer": ["tokenizer/train.py", "--config", "configs/tokenizer/tiny.yaml"],
    "prior": ["prior/train.py", "--config", "configs/prior/tiny.yaml"],
}


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
    from tokenizer import VQWAE, VQWAEConfig

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tok")
    VQWAE(
        VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32, image_size=16)
    ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("stage", ["tokenizer", "prior"])
def test_sigkill_then_resume_matches_an_uninterrupted_run(stage, tmp_path, tiny_tokenizer_dir):
    common = [*STAGES[stage], "max_steps=60", "checkpoint_every=5", "validate_every=1000", "log_every=1",
              "checkpoints_to_keep=3"]  # fmt: skip
    if stage == "prior":
        common.append(f"tokenizer={tiny_tokenizer_dir}")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert finish([*common, f"output_dir={straight}"]).returncode == 0
    process = start([*common, f"output_dir={killed}"])
    kill_after_checkpoint(process, killed, at_least=10)
    # The kill landed mid-run: no final model, the newest checkpoint and the last logged step short
    # of the end; the resumed run starts from that checkpoint.
    key = "train/loss" if stage == "tokenizer" else "train/bits_per_code"
    checkpoint = latest_step(killed)
    assert not (killed / "final").exists() and 10 <= checkpoint < 60 and max(last_per_step(killed, key)) < 60
    resumed = finish([*common, f"output_dir={killed}", "resume=latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {checkpoint}" in resumed.stdout + resumed.stderr
    reference, after = last_per_step(straight, key), last_per_step(killed, key)
    assert sorted(after) == sorted(reference)
    assert [after[step] for step in sorted(after)] == pytest.approx(
        [reference[step] for step in sorted(reference)], rel=1e-4
    )
    weights = "final/model.safetensors"
    a, b = load_file(straight / weights), load_file(killed / weights)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_partial_checkpoints_are_never_picked(tmp_path, capsys):
    root = tmp_path / "checkpoints"
    (root / "step_00000004").mkdir(parents=True)
    (root / "step_00000004" / "trainer_state.json").write_text('{"step": 4, "batches_seen": 4}')
    (root / ".tmp_step_00000006").mkdir()  # killed during save_state: never renamed
    (root / "step_00000008").mkdir()  # no state file: incomplete
    assert resolve_resume("latest", tmp_path).checkpoint.name == "step_00000004"
    assert resolve_resume("latest", tmp_path / "fresh").checkpoint is None
    assert "starting fresh" in capsys.readouterr().out


def poison_step(monkeypatch, bad_step: int):
    """Make the reconstruction term NaN on one step."""
    real = tokenizer_update.total_loss
    calls = {"count": 0}

    def poisoned(output, weights):
        calls["count"] += 1
        result = real(output, weights)
        if calls["count"] == bad_step:
            result.terms["reconstruction"] = result.terms["reconstruction"] * float("nan")
            result.total = sum(result.terms.values())
        return result

    monkeypatch.setattr(tokenizer_update, "total_loss", poisoned)


def test_nonfinite_loss_stops_with_step_and_term(train, tmp_path, monkeypatch):
    poison_step(monkeypatch, 4)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 4 in term\(s\) \['reconstruction'\]"):
        train(f"output_dir={tmp_path}", "max_steps=6", "checkpoint_every=3")
    checkpoint = list_checkpoints(tmp_path)[-1]
    assert checkpoint.name == "step_00000003"
    assert all(torch.isfinite(tensor).all() for tensor in load_file(checkpoint / "model.safetensors").values())


def test_nonfinite_loss_can_skip_the_step(train, tmp_path, monkeypatch, capsys):
    poison_step(monkeypatch, 2)
    train(f"output_dir={tmp_path}", "max_steps=4", "nonfinite_loss=skip")
    assert "skipping the step" in capsys.readouterr().out
    assert all(torch.isfinite(tensor).all() for tensor in load_file(tmp_path / "final" / "model.safetensors").values())


@pytest.mark.parametrize(
    "args,message",
    [
        (["learnin_rate=0.1"], "unknown config key"),
        (["lr0.1"], "malformed override 'lr0.1'"),
        (["max_steps=many"], "max_steps must be an integer"),
        (["model.in_channels=3"], "MNIST images have 1 channel"),
        (["data.image_size=30"], "use image_size=32"),
        (["data.source=/no/such/folder"], "no/such/folder"),
    ],
)
def test_bad_input_from_the_command_line_is_one_clear_line(args, message, tmp_path, monkeypatch, capsys):
    """In-process through run_cli, as `python tokenizer/train.py` runs it: exit 2, the message, no
    traceback, nothing written."""
    from infra.config import run_cli
    from tests.helpers import reset_accelerate

    monkeypatch.chdir(ROOT)
    reset_accelerate()
    argv = ["--config", "configs/tokenizer/tiny.yaml", f"output_dir={tmp_path / 'run'}", *args]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: tokenizer_train.main(argv))
    reset_accelerate()
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in error and "Traceback" not in error, error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_config_file_from_the_command_line(tmp_path):
    """One real subprocess (the script run by path, as users run it)."""
    result = subprocess.run([sys.executable, "prior/train.py", "--config", "configs/prior/nope.yaml"], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_saved_models_hold_no_pickles(tmp_path):
    from tests.readme_fixtures import tiny_pipeline

    tiny_pipeline(tmp_path / "pipe")
    files = [path.name for path in (tmp_path / "pipe").rglob("*") if path.is_file()]
    assert "model.safetensors" in files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_our_code_never_unpickles():
    offenders = []
    for path in [*ROOT.glob("tokenizer/*.py"), *ROOT.glob("prior/*.py"), *ROOT.glob("pipelines/*.py")]:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if (
                "weights_only=True" not in match.group(1)
                and "lambda" not in text[max(0, match.start() - 40) : match.start()]
            ):
                offenders.append(f"{path.name}: {match.group(0)}")
        if re.search(r"^\s*import pickle|pickle\.load", text, flags=re.M):
            offenders.append(f"{path.name}: pickle")
    assert not offenders, offenders


def test_two_processes_keep_ranks_identical_and_data_distinct(tmp_path):
    out = tmp_path / "records.json"
    result = run_script(["tests/distributed_check.py", str(out)], processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(out.read_text())
    assert records["initial_identical"]
    for step in records["steps"]:
        assert step["params_identical"] and step["codebook_identical"]
        first, second = step["rank_indices"]
        assert not set(first) & set(second)  # each rank sees different examples
    # The OT loss is the 1-process loss on the same global batch (same seed, same order).
    single = subprocess.run([sys.executable, "tests/distributed_check.py", str(tmp_path / "one.json")], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "ACCELERATE_USE_CPU": "1"})  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    assert (
        one["steps"][0]["rank_indices"][0]
        == records["steps"][0]["rank_indices"][0] + records["steps"][0]["rank_indices"][1]
    )
    assert one["steps"][0]["transport"] == pytest.approx(records["steps"][0]["transport"], rel=1e-4)
