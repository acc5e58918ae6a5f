"""A run's metrics.jsonl: one JSON line per logged step, written by `log_metrics` (which also
sends the values to Accelerate's trackers) and read back by `read_metrics`, which survives the
half-written last line a killed run leaves."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator

from .checkpointing import how_to_resume
from .files import write_failed

if TYPE_CHECKING:  # infra.training imports this module
    from .training import RunConfig


METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a run folder or the file). A line a kill left half
    written is skipped with a warning naming the file and line, never a JSON traceback."""
    path = Path(path)
    path = path / METRICS_FILE if path.is_dir() else path
    records, damaged = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        else:
            damaged.append(number)
    if damaged:
        warnings.warn(f"{path}: skipped damaged line(s) {damaged[:10]} (a run killed while writing?)", stacklevel=2)
    return records


def _start_on_a_new_line(path: Path) -> None:
    """Before appending to a metrics file: if a killed run left its last line unfinished, end it,
    so that the next record starts on a line of its own (one seek and a byte, on log steps only)."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as file:
            file.seek(-1, 2)
            if file.read(1) != b"\n":
                file.write(b"\n")


def log_metrics(
    accelerator: Accelerator, config: RunConfig, step: int, values: dict[str, torch.Tensor | float]
) -> dict:
    """Means over processes of `values`, sent to the trackers and appended to metrics.jsonl."""
    names = list(values)
    stacked = torch.stack(
        [
            torch.as_tensor(values[name], dtype=torch.float32, device=accelerator.device).detach().reshape(())
            for name in names
        ]
    )
    logs = dict(zip(names, accelerator.reduce(stacked, "mean").tolist()))
    accelerator.log(logs, step=step)
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        path = Path(config.output_dir) / METRICS_FILE
        try:
            _start_on_a_new_line(path)
            with open(path, "a") as file:
                file.write(json.dumps({"step": step, "time": time.time(), **logs}) + "\n")
        except OSError as error:  # a full disk: readers skip a half-written line
            raise write_failed(path, error, "the metrics", how_to_resume(config.output_dir)) from None
    return logs
