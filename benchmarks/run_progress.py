"""Where a long, chunked training run stands, from its own files: a results JSON for the docs.

    python -m benchmarks.run_progress outputs/run-100ep --devices "H200" "H200" "CPU, 2 cores" \
        --out benchmarks/results/run-100ep-progress.json

A run that advances in resumable chunks (time_limit_minutes, resume=latest; on a GPU when one is
lent, on the CPU otherwise) keeps one metrics.jsonl. This reads it and the latest checkpoint and
writes: the step reached of max_steps, each chunk's steps, minutes and loop pace, the training
terms every --every steps and every validation row. A chunk starts where the logged step goes
back (a run resumed from a checkpoint before its last log) or after a pause of --pause-seconds
beyond the pace (a chunk ended by time_limit_minutes stops on a log step, so the next one goes on
from there). --devices names each chunk's machine, oldest first; their count must match.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.checkpointing import CONFIG_FILE, list_checkpoints, read_state
from infra.config import provenance
from infra.files import write_record
from infra.metrics_file import read_metrics

TRAIN_TERMS = ("train/reconstruction", "train/transport", "train/loss", "train/perplexity", "train/codes_used", "lr")


@dataclass
class Chunk:
    first_step: int  # the step the chunk resumed from (0 for the first)
    last_step: int  # its last logged step
    minutes: float  # wall time between its first and last log
    loop_ms_per_step: float | None  # median over its log intervals
    device: str | None = None

    @property
    def steps(self) -> int:
        return self.last_step - self.first_step


def training_rows(rows: list[dict]) -> list[dict]:
    return [row for row in rows if "train/loss" in row]


def loop_ms_per_step(rows: list[dict], after_step: int) -> float | None:
    """Median milliseconds a step in the training loop, from the wall times of consecutive
    metrics.jsonl training rows past `after_step` (the chunk's own; None with fewer than two)."""
    rows = [row for row in training_rows(rows) if row["step"] > after_step]
    paces = [1e3 * (b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(rows, rows[1:])]
    return round(statistics.median(paces), 2) if paces else None


def split_chunks(rows: list[dict], pause_seconds: float = 60.0) -> list[list[dict]]:
    """The training rows grouped by chunk: a new one where the step does not go up, or where an
    interval took more than `pause_seconds` beyond its steps at the slower neighbouring pace (a
    validation pass, a checkpoint save or the quieter half of a noisy machine stays inside)."""
    rows = training_rows(rows)
    paces = [(b["time"] - a["time"]) / (b["step"] - a["step"]) if b["step"] > a["step"] else None
             for a, b in zip(rows, rows[1:])]  # fmt: skip
    chunks = [rows[:1]] if rows else []
    for index, row in enumerate(rows[1:]):
        before = [pace for pace in paces[max(0, index - 3) : index] if pace is not None]
        after = [pace for pace in paces[index + 1 : index + 4] if pace is not None]
        usual = max(statistics.median(before) if before else 0.0, statistics.median(after) if after else 0.0)
        previous = rows[index]
        if paces[index] is None or row["time"] - previous["time"] - (row["step"] - previous["step"]) * usual > pause_seconds:
            chunks.append([])
        chunks[-1].append(row)
    return chunks


def chunks_of(rows: list[dict], pause_seconds: float = 60.0) -> list[Chunk]:
    """Each chunk resumed from the last step logged before its first row (a chunk stopped by
    time_limit_minutes saves its checkpoint on that step; after a kill it is an upper bound)."""
    result, logged = [], []
    for group in split_chunks(rows, pause_seconds):
        first = max((step for step in logged if step < group[0]["step"]), default=0)
        minutes = (group[-1]["time"] - group[0]["time"]) / 60
        result.append(Chunk(first, group[-1]["step"], round(minutes, 1), loop_ms_per_step(group, -1)))
        logged += [row["step"] for row in group]
    return result


def progress(folder: Path, devices: list[str] | None = None, every: int = 5000, pause_seconds: float = 60.0) -> dict:
    """The record: step reached, chunks, training terms every `every` steps, validation rows."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints and not (folder / "final").is_dir():
        raise FileNotFoundError(f"{folder}: no checkpoints/step_* and no final/: not a training run's output_dir")
    config = json.loads((checkpoints[-1] / CONFIG_FILE).read_text()) if checkpoints else {}
    rows = read_metrics(folder)
    chunks = chunks_of(rows, pause_seconds)
    if devices is not None:
        if len(devices) != len(chunks):
            found = [f"{c.first_step}-{c.last_step}" for c in chunks]
            raise ValueError(f"--devices names {len(devices)} chunks, the run has {len(chunks)} ({found}): name one per chunk")
        for chunk, device in zip(chunks, devices):
            chunk.device = device
    train = [{key: row[key] for key in ("step", *TRAIN_TERMS) if key in row}
             for row in training_rows(rows) if row["step"] % every == 0 or row["step"] == 1]  # fmt: skip
    validation = [row for row in rows if any(key.startswith("validation/") for key in row)]
    return {
        "step": read_state(checkpoints[-1])["step"] if checkpoints else None,
        "of": config.get("max_steps"),
        "finished": (folder / "final").is_dir(),
        "batch_size": config.get("batch_size"),
        "settings": {key: config[key] for key in ("learning_rate", "lr_scheduler", "seed", "mixed_precision") if key in config},
        "chunks": [asdict(chunk) | {"steps": chunk.steps} for chunk in chunks],
        "train": {str(row.pop("step")): row for row in train},
        "validation": validation,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the run's output_dir (metrics.jsonl, checkpoints/)")
    parser.add_argument("--devices", nargs="+", default=None, help="each chunk's machine, oldest first")
    parser.add_argument("--every", type=int, default=5000, help="keep the training terms of every N steps")
    parser.add_argument("--pause-seconds", type=float, default=60.0)
    parser.add_argument("--what", default=None, help="one line on what the run is, for the record")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (else print it)")
    args = parser.parse_args(argv)
    record = provenance("benchmarks.run_progress", argv) | {"what": args.what, "run": str(args.run)}
    record |= progress(args.run, args.devices, args.every, args.pause_seconds)
    if args.out:
        write_record(args.out, record)
    else:
        print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
