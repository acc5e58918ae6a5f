"""A polite stop: SIGTERM / SIGINT finish the step, save a checkpoint and exit 128 + the signal;
resume=latest then trains the uninterrupted run (infra/polite_stop.py)."""

import os
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from infra.checkpointing import checkpoint_damage, list_checkpoints
from tests.helpers import ROOT, launch_command, read_metrics, run_script
from tests.infra.test_run_folder import TOKENIZER, finish, losses, start, wait_for_step

STOPPABLE = ["max_steps=40", "checkpoint_every=1000", "validate_every=1000", "log_every=1"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The run the stopped ones must equal: 40 steps, a checkpoint only at the end."""
    folder = tmp_path_factory.mktemp("straight")
    result = finish([*TOKENIZER, f"output_dir={folder}", *STOPPABLE])
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_step_saves_a_checkpoint_and_resume_is_exact(signal_number, straight_run, tmp_path):
    """Mid-run, at a step that is no checkpoint step: the run saves that step's checkpoint, marks
    it in metrics.jsonl and exits 128 + the signal; resume=latest then trains the very losses and
    weights of the straight run (same machine, same kernels: bit for bit)."""
    name = signal.Signals(signal_number).name
    process = start([*TOKENIZER, f"output_dir={tmp_path}", *STOPPABLE])
    wait_for_step(process, tmp_path, 5)
    process.send_signal(signal_number)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal_number, err[-2000:]
    (checkpoint,) = list_checkpoints(tmp_path)
    step = int(checkpoint.name.split("_")[1])
    assert 5 <= step < 40 and checkpoint_damage(checkpoint) is None and not (tmp_path / "final").exists()
    assert f"{name} received: finishing this step and saving a checkpoint" in err
    assert f"stopped by {name} at step {step}: checkpoint {checkpoint} saved" in out and "resume=latest" in out
    marks = [row for row in read_metrics(tmp_path) if "stopped_by_signal" in row]
    assert [(row["step"], row["stopped_by_signal"]) for row in marks] == [(step, signal_number)]
    resumed = finish([*TOKENIZER, f"output_dir={tmp_path}", *STOPPABLE, "resume=latest"])
    assert resumed.returncode == 0 and f"resumed from {checkpoint} at step {step}" in resumed.stdout
    assert losses(tmp_path) == losses(straight_run)
    a, b = (load_file(folder / "final" / "model.safetensors") for folder in (straight_run, tmp_path))
    assert all(a[key].equal(b[key]) for key in a)


def test_a_second_signal_stops_at_once_and_a_forwarded_copy_does_not():
    """The same signal twice at once (a launcher forwarding what its process group already got) is
    one request; another a second later ends the process there and then, as with no handler."""
    script = """
import os, signal, time
from types import SimpleNamespace
from infra.polite_stop import PoliteStop
with PoliteStop(SimpleNamespace(num_processes=1), log_every=1) as stop:
    os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("requested", stop.requested(1), flush=True)
    time.sleep(1.2)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    print("still running", flush=True)
"""
    result = finish([sys.executable, "-c", script])
    assert result.returncode == -signal.SIGTERM and result.stdout == "requested True\n", result


def test_two_processes_stop_together_at_one_step(tmp_path):
    """SIGTERM to a 2-process run's whole process group (as a scheduler sends it; the launcher
    forwards it again): both ranks agree on a log step, save one complete checkpoint (each rank's
    RNG state in it) and stop; resume=latest on 2 processes then trains the straight run's losses."""
    common = ["tokenizer/train.py", "--config", "configs/tokenizer/tiny.yaml", "log_with=none", "max_steps=60",
              "checkpoint_every=1000", "validate_every=1000", "log_every=4"]  # fmt: skip
    straight = run_script([*common, f"output_dir={tmp_path / 'straight'}"], processes=2)
    assert straight.returncode == 0, straight.stderr[-2000:]
    folder = tmp_path / "stopped"
    command, env = launch_command([*common, f"output_dir={folder}"], processes=2)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    wait_for_step(process, folder, 8)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=180)
    (checkpoint,) = list_checkpoints(folder)
    step = int(checkpoint.name.split("_")[1])
    assert step % 4 == 0 and 8 <= step < 60 and checkpoint_damage(checkpoint) is None, err[-3000:]
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {path.name for path in checkpoint.iterdir()}
    assert f"stopped by SIGTERM at step {step}" in out and not (folder / "final").exists()
    resumed = run_script([*common, f"output_dir={folder}", "resume=latest"], processes=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert losses(folder) == pytest.approx(losses(tmp_path / "straight"), rel=1e-6)
