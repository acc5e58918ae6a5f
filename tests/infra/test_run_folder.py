"""Runs that cannot destroy each other: one run per output folder (an OS lock), no fresh start over
an earlier run unless asked by name, a failed write (a full disk) named in one line with nothing
half-written left (the polite stop on SIGTERM / SIGINT: test_polite_stop.py)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from infra.checkpointing import checkpoint_damage, list_checkpoints
from infra.files import WriteFailedError
from infra.run_folder import LOCK_FILE, lock_folder
from tests.helpers import ROOT, read_metrics

RUN_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TOKENIZER = [sys.executable, "tokenizer/train.py", "--config", "configs/tokenizer/tiny.yaml", "log_with=none"]


def start(command: list[str], **options) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=RUN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **options)  # fmt: skip


def finish(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=RUN_ENV, capture_output=True, text=True, timeout=600)


def wait_for_step(process: subprocess.Popen, folder: Path, step: int, timeout: float = 300) -> None:
    """Until the run has logged `step` (it is training, its lock held)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (folder / "metrics.jsonl").is_file() and any(row.get("step", 0) >= step for row in read_metrics(folder)):
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended early: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"step {step} never came")


def losses(folder: Path) -> dict[int, float]:
    return {row["step"]: row["train/loss"] for row in read_metrics(folder) if "train/loss" in row}


# 1. One run per folder.


def test_a_second_run_on_a_busy_folder_stops_at_once_naming_the_holder(tmp_path):
    """The second command exits 2 in one line naming the folder and the first run's process; after
    a `kill -9` of the first, the lock is gone with it and resume=latest goes on."""
    first = start([*TOKENIZER, f"output_dir={tmp_path}", "max_steps=100000", "checkpoint_every=5"])
    try:
        wait_for_step(first, tmp_path, 6)
        began = time.time()
        second = finish([*TOKENIZER, f"output_dir={tmp_path}", "max_steps=4", "resume=latest"])
        assert second.returncode == 2, second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in second.stderr
        assert f"{tmp_path} is in use by process {first.pid} (train.py" in lines[0] and "another output_dir" in lines[0]
        assert time.time() - began < 60  # before any data or model work
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    stopped_at = max(int(path.name.split("_")[1]) for path in list_checkpoints(tmp_path))
    resumed = finish([*TOKENIZER, f"output_dir={tmp_path}", f"max_steps={stopped_at + 2}", "resume=latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "final" / "model.safetensors").is_file()


def test_the_lock_is_the_operating_systems(tmp_path):
    """In one process a second claim takes over the first (a run that raised in this process is no
    concurrent run); from another process the held folder is refused, and free once released."""
    claim = lock_folder(tmp_path)
    probe = [sys.executable, "-c", "import sys; from infra.run_folder import lock_folder; lock_folder(sys.argv[1])", str(tmp_path)]  # fmt: skip
    held = finish(probe)
    assert held.returncode != 0 and f"in use by process {os.getpid()}" in held.stderr
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    claim = lock_folder(tmp_path)  # takes over this process's own claim
    claim.release()
    assert finish(probe).returncode == 0


# 2. No silent overwrite.


def test_a_fresh_run_over_a_finished_one_is_refused_and_start_over_moves_it_aside(train, tmp_path, capsys):
    folder = tmp_path / "run"
    train(f"output_dir={folder}", "max_steps=3")
    before = load_file(folder / "final" / "model.safetensors")
    rows = len(read_metrics(folder))
    with pytest.raises(FileExistsError) as refused:
        train(f"output_dir={folder}", "max_steps=3", "seed=1")
    message = str(refused.value)
    assert "holds an earlier run (checkpoints/, final/, metrics.jsonl)" in message
    assert "resume=latest" in message and "start_over=true" in message and "\n" not in message
    assert len(read_metrics(folder)) == rows  # nothing written
    assert load_file(folder / "final" / "model.safetensors")["quantizer.codebook"].equal(before["quantizer.codebook"])

    train(f"output_dir={folder}", "max_steps=3", "seed=1", "start_over=true")
    moved = tmp_path / "run.previous-1"
    assert f"the earlier run in {folder} moved to {moved}" in capsys.readouterr().out
    kept = load_file(moved / "final" / "model.safetensors")
    assert all(kept[name].equal(before[name]) for name in before)  # the earlier run, whole
    assert len(read_metrics(moved)) == rows and len(read_metrics(folder)) == rows  # none mixed in
    assert not load_file(folder / "final" / "model.safetensors")["quantizer.codebook"].equal(before["quantizer.codebook"])
    train(f"output_dir={folder}", "max_steps=3", "start_over=true")
    assert (tmp_path / "run.previous-2" / "final").is_dir()  # never onto an earlier previous


def test_a_prior_run_is_refused_the_same_way(tmp_path):
    from tests.readme_fixtures import tiny_pipeline

    tiny_pipeline(tmp_path / "pipe")
    tokenizer = tmp_path / "pipe" / "tokenizer"
    command = [sys.executable, "prior/train.py", "--config", "configs/prior/tiny.yaml", f"output_dir={tmp_path / 'prior'}",
               f"tokenizer={tokenizer}", "max_steps=2", "log_with=none"]  # fmt: skip
    assert finish(command).returncode == 0
    again = finish(command)
    assert again.returncode == 2 and "holds an earlier run" in again.stderr and "resume=latest" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_start_over_and_resume_together_are_refused():
    from infra.config import load_config
    from prior.config import PriorTrainConfig
    from tokenizer.config import TokenizerTrainConfig

    for config_class, path in ((TokenizerTrainConfig, "tokenizer/tiny.yaml"), (PriorTrainConfig, "prior/tiny.yaml")):
        with pytest.raises(ValueError, match="start_over=true starts afresh but resume=latest continues a run"):
            load_config(config_class, ROOT / "configs" / path, ["start_over=true", "resume=latest"])


def test_a_finished_run_resumed_trains_no_further_step(train, tmp_path):
    """resume=latest on a finished run (the way back after a failed final save) writes final/ again
    from its last checkpoint, with no step past max_steps."""
    train(f"output_dir={tmp_path}", "max_steps=3")
    train(f"output_dir={tmp_path}", "max_steps=3", "resume=latest")
    assert max(losses(tmp_path)) == 3 and [path.name for path in list_checkpoints(tmp_path)][-1] == "step_00000003"


# 3. A failed write.


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KB tmpfs (room for two tiny checkpoints and a little), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()[:100]}); the injected-ENOSPC test covers the writer")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_ends_the_run_in_one_line_and_resume_goes_on(small_disk):
    """Checkpoints every 2 steps on a disk that fills at the third: exit 2, one line naming the
    checkpoint, the file, the space left and the checkpoint to resume from; no temporary folder
    left, the checkpoints on disk intact; with an old checkpoint deleted, resume=latest finishes."""
    run = small_disk / "run"
    common = [*TOKENIZER, f"output_dir={run}", "max_steps=8", "checkpoint_every=2", "validate_every=100"]
    failed = finish([*common, "checkpoints_to_keep=50"])
    assert failed.returncode == 2, failed.stderr[-2000:]
    errors = [line for line in failed.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    line = errors[0]
    assert line.startswith("error: could not write checkpoint step 6: ") and "the disk is full: " in line
    assert f"{run}/checkpoints/.tmp_step_00000006/" in line and "free there" in line
    assert f"the last intact checkpoint is {run}/checkpoints/step_00000004" in line and "resume=latest" in line
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert all(checkpoint_damage(path) is None for path in list_checkpoints(run))
    subprocess.run(["rm", "-r", str(run / "checkpoints" / "step_00000002")], check=True)  # the user frees space
    resumed = finish([*common, "checkpoints_to_keep=1", "resume=latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and (run / "final" / "model.safetensors").is_file()


def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_nothing_half_written(train, tmp_path, monkeypatch):
    """OSError(ENOSPC) from the weights writer at the step-6 checkpoint: one line naming the file,
    the error, the free space and the checkpoint to resume from; no temporary folder is left and
    every checkpoint on disk is intact; after that, resume=latest finishes the run."""
    import accelerate.utils.other

    real = accelerate.utils.other.safe_save_file  # what accelerate's save_state writes weights with

    def disk_fills(tensors, filename, metadata=None):
        if "step_00000006" in str(filename):
            Path(filename).write_bytes(b"\0" * 100)  # the partial file a full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", disk_fills)
    with pytest.raises(WriteFailedError) as failed:
        train(f"output_dir={tmp_path}", "max_steps=9", "checkpoint_every=3", "checkpoints_to_keep=5")
    message = str(failed.value)
    assert "\n" not in message and "could not write checkpoint step 6: " in message
    assert f"{tmp_path}/checkpoints/.tmp_step_00000006/model.safetensors: No space left on device" in message
    assert "free there)" in message and f"the last intact checkpoint is {tmp_path}/checkpoints/step_00000003" in message
    assert "resume=latest" in message
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["step_00000003"]
    assert checkpoint_damage(tmp_path / "checkpoints" / "step_00000003") is None
    monkeypatch.undo()
    train(f"output_dir={tmp_path}", "max_steps=9", "checkpoint_every=3", "checkpoints_to_keep=5", "resume=latest")
    assert (tmp_path / "final" / "model.safetensors").is_file() and sorted(losses(tmp_path))[-1] == 9


def test_a_full_disk_at_a_metrics_line_says_where_to_resume(train, tmp_path, monkeypatch):
    import infra.metrics_file

    real, calls = infra.metrics_file._start_on_a_new_line, []

    def disk_full_at_step_4(path):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path)

    monkeypatch.setattr(infra.metrics_file, "_start_on_a_new_line", disk_full_at_step_4)
    with pytest.raises(WriteFailedError) as failed:
        train(f"output_dir={tmp_path}", "max_steps=6", "checkpoint_every=3", "validate_every=100")
    assert str(failed.value).startswith(f"could not write the metrics: {tmp_path}/metrics.jsonl: No space left on device (")
    assert f"the last intact checkpoint is {tmp_path}/checkpoints/step_00000003; free space" in str(failed.value)


def enospc(path) -> OSError:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\0" * 10)  # what a full disk leaves: the start of the file
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def save_a_final_model(target: Path, monkeypatch):
    from infra.checkpointing import save_final
    from tokenizer import VQWAE, VQWAEConfig

    model = VQWAE(VQWAEConfig(hidden_channels=8, num_res_blocks=1, embedding_dim=4, codebook_size=8, image_size=16))
    save_final(model, target, "card")  # the earlier version

    def fails(folder, **options):
        raise enospc(Path(folder) / "model.safetensors")

    monkeypatch.setattr(model, "save_pretrained", fails)
    return lambda: save_final(model, target, "card")


def save_a_pipeline(target: Path, monkeypatch):
    from tests.readme_fixtures import tiny_pipeline

    pipe = tiny_pipeline(target)  # the earlier version

    def fails(folder, **options):
        raise enospc(Path(folder) / "model.safetensors")

    monkeypatch.setattr(pipe.prior, "save_pretrained", fails)
    return lambda: pipe.save_pretrained(target)


def save_a_code_cache(target: Path, monkeypatch):
    import datasets
    import torch

    import prior.codes
    from tokenizer import VQWAE, VQWAEConfig

    tokenizer = VQWAE(VQWAEConfig(hidden_channels=8, num_res_blocks=1, embedding_dim=4, codebook_size=8, image_size=16))
    split = datasets.Dataset.from_dict({"pixel_values": torch.zeros(4, 1, 16, 16, dtype=torch.uint8).numpy(),
                                        "label": [0, 1, 2, 3]}).with_format("torch")  # fmt: skip
    monkeypatch.setattr(prior.codes, "save_file", lambda tensors, path, metadata=None: (_ for _ in ()).throw(enospc(path)))
    return lambda: prior.codes.load_or_encode(target, "train", tokenizer, split)  # no earlier version


def save_a_record(target: Path, monkeypatch):
    from infra.files import write_record

    write_record(target, {"earlier": True})
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(enospc(self))
                        if self.name.startswith(".tmp_") else real(self, *a, **k))  # fmt: skip
    return lambda: write_record(target, {"earlier": False})


@pytest.mark.parametrize("writer", [save_a_final_model, save_a_pipeline, save_a_code_cache, save_a_record],
                         ids=["final model", "pipeline folder", "code cache", "results record"])  # fmt: skip
def test_every_writer_names_a_full_disk_and_leaves_no_half_file(writer, tmp_path, monkeypatch):
    """ENOSPC from inside each writer: one line naming the file and the error; no temporary left,
    an earlier version in place untouched (nothing half-written where a reader would take it)."""
    target = tmp_path / ("codes" if writer is save_a_code_cache else "thing.json" if writer is save_a_record else "thing")
    fail = writer(target, monkeypatch)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(WriteFailedError) as failed:
        fail()
    message = str(failed.value)
    assert "\n" not in message and message.startswith("could not write ") and "No space left on device" in message
    assert f"{tmp_path}/" in message and ".tmp" in message and "free there" in message  # the file being written
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_the_quickstart_moves_an_earlier_quickstart_aside(tmp_path, monkeypatch, capsys):
    """It says so, and the earlier one is whole beside the new folder (stopped here before training)."""
    from pipelines import quickstart

    earlier = tmp_path / "quick"
    (earlier / "tokenizer" / "final").mkdir(parents=True)
    (earlier / "summary.json").write_text('{"earlier": true}')

    def stop_here(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(quickstart, "launch", stop_here)
    with pytest.raises(KeyboardInterrupt):
        quickstart.main(["--output-dir", str(earlier)])
    moved = tmp_path / "quick.previous-1"
    assert f"{earlier} held an earlier quickstart (tokenizer, summary.json): moved to {moved}" in capsys.readouterr().out
    assert (moved / "summary.json").read_text() == '{"earlier": true}' and (moved / "tokenizer" / "final").is_dir()
    assert not (earlier / "tokenizer").exists()
