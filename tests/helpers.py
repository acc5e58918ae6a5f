"""Shared helpers for the training tests: run a stage in-process or as real processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def reset_accelerate() -> None:
    """Accelerate keeps process-wide state; tests that run several trainings in one process reset it."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def run_script(args: list[str], processes: int = 1, timeout: int = 600, extra_env: dict | None = None):
    """Run a training script as a real (possibly multi-process, CPU/gloo) accelerate launch."""
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if processes > 1:
        launcher += [
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29517",
        ]
    else:
        launcher += ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return subprocess.run(launcher + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
