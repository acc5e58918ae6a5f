"""Shared helpers for the training tests: run a stage in-process or as real processes."""

import os
import subprocess
import sys
from pathlib import Path

from infra.metrics_file import read_metrics  # noqa: F401 - the tests read metrics.jsonl as every reader does

ROOT = Path(__file__).resolve().parent.parent


def reset_accelerate() -> None:
    """Accelerate keeps process-wide state; tests that run several trainings in one process reset it."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()




def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(args: list[str], processes: int = 1) -> tuple[list[str], dict]:
    """A real `accelerate launch` of a script (several processes: CPU/gloo) and its environment."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", str(processes)]  # fmt: skip
    if processes > 1:  # a fixed port collides with a run still closing or a parallel test
        launcher += ["--multi_gpu", "--main_process_port", str(free_port())]
    return launcher + args, env


def run_script(args: list[str], processes: int = 1, timeout: int = 600, extra_env: dict | None = None):
    """Run a training script as a real (possibly multi-process, CPU/gloo) accelerate launch."""
    command, env = launch_command(args, processes)
    return subprocess.run(command, cwd=ROOT, env={**env, **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def assert_figure(path: Path, min_width: int = 400) -> None:
    """A PNG a benchmark drew: a real image of a sensible size with data drawn on it. Axes, ticks
    and labels are black and grey; lines, markers and bars take matplotlib's colours, so at least
    0.3% of the pixels must be coloured (an empty set of axes has none)."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    assert path.is_file() and path.stat().st_size > 5_000, f"{path}: missing or nearly empty"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[1] >= min_width, f"{path}: {pixels.shape[1]} px wide"
    coloured = float(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean())
    assert coloured > 0.003, f"{path}: only {coloured:.2%} of its pixels are coloured: no data drawn"
