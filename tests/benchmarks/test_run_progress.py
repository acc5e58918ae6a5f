"""benchmarks.run_progress: the chunks of a long resumable run, and its record, from its own files."""

import json

import pytest

from benchmarks.run_progress import chunks_of, main, split_chunks
from tests.helpers import read_metrics


def rows_of(steps_and_times: list[tuple[int, float]]) -> list[dict]:
    return [{"step": step, "time": time, "train/loss": 1.0} for step, time in steps_and_times]


def synthetic_run() -> list[dict]:
    """Two GPU calls (14 ms a step, a 20-minute pause between them), a CPU chunk a day later
    (85 ms a step, one slow interval from a validation pass, a validation row), then a chunk
    after a kill: resumed from the checkpoint at 6,000, so it logs 6,500 and 7,000 again."""
    gpu_1 = [(500 * i, 7.0 * i) for i in range(1, 5)]  # 500..2000
    gpu_2 = [(2000 + 500 * i, 28 + 1200 + 7.0 * i) for i in range(1, 4)]  # 2500..3500
    day = 86_400.0
    cpu = [(3500 + 500 * i, day + 42.5 * i + (20.0 if i >= 3 else 0.0)) for i in range(1, 8)]  # 4000..7000
    after_kill = [(6000 + 500 * i, 2 * day + 42.5 * i) for i in range(1, 5)]  # 6500..8000
    rows = rows_of(gpu_1 + gpu_2 + cpu + after_kill)
    rows.insert(10, {"step": 5000, "time": day + 140.0, "validation/psnr": 30.0})
    return rows


def test_chunks_start_at_pauses_and_at_a_step_going_back():
    chunks = chunks_of(synthetic_run())
    assert [(c.first_step, c.last_step, c.steps) for c in chunks] == [
        (0, 2000, 2000), (2000, 3500, 1500), (3500, 7000, 3500), (6000, 8000, 2000)]  # fmt: skip
    # Paces by hand: 7 s per 500 steps; 42.5 s per 500 (the one validation interval 62.5 s).
    assert [c.loop_ms_per_step for c in chunks] == [14.0, 14.0, 85.0, 85.0]
    assert chunks[2].minutes == round((42.5 * 7 + 20 - 42.5) / 60, 1)


def test_a_slow_interval_is_not_a_chunk_but_a_long_pause_is():
    steady = [(500 * i, 42.5 * i) for i in range(1, 9)]
    slow = steady[:4] + [(step, time + 50.0) for step, time in steady[4:]]  # validation + save: 50 s
    assert len(split_chunks(rows_of(slow))) == 1
    paused = steady[:4] + [(step, time + 61.0) for step, time in steady[4:]]
    assert [len(group) for group in split_chunks(rows_of(paused))] == [4, 4]
    assert len(split_chunks(rows_of(paused), pause_seconds=120)) == 1
    # A machine slowing to half speed (400 ms a step, from 200): the new pace is the usual one.
    slower = [(500 * i, 100.0 * i) for i in range(1, 5)] + [(2000 + 500 * i, 400 + 200.0 * i) for i in range(1, 5)]
    assert len(split_chunks(rows_of(slower))) == 1


def test_the_record_of_a_real_resumed_run(train, tmp_path):
    train(f"output_dir={tmp_path}", "max_steps=3", "log_every=1")
    train(f"output_dir={tmp_path}", "max_steps=6", "log_every=1", "resume=latest")
    out = tmp_path / "progress.json"
    record = main([str(tmp_path), "--every", "2", "--devices", "CPU", "--out", str(out), "--what", "tiny"])
    assert json.loads(out.read_text()) == record
    assert (record["step"], record["of"], record["finished"], record["batch_size"]) == (6, 6, True, 8)
    logged = {row["step"]: row for row in read_metrics(tmp_path) if "train/loss" in row}
    assert list(record["train"]) == ["1", "2", "4", "6"]
    assert record["train"]["4"]["train/transport"] == logged[4]["train/transport"]
    assert record["train"]["6"]["lr"] == logged[6]["lr"]
    # The two calls ran back to back: one chunk, 0 to 6, on the named device.
    assert [(c["first_step"], c["last_step"], c["device"]) for c in record["chunks"]] == [(0, 6, "CPU")]
    assert record["command"].startswith("python -m benchmarks.run_progress ")


def test_refusals_name_the_problem(train, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training run's output_dir"):
        main([str(tmp_path)])
    train(f"output_dir={tmp_path}", "max_steps=2", "log_every=1")
    with pytest.raises(ValueError, match=r"--devices names 2 chunks, the run has 1 \(\['0-2'\]\)"):
        main([str(tmp_path), "--devices", "GPU", "CPU"])
