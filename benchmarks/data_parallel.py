"""Data-parallel scaling on this machine: 2 CPU processes (gloo) vs 1 on the same global batch.

    python -m benchmarks.data_parallel [--steps 60]

Runs tokenizer/train.py through `accelerate launch` both ways with the default model and
batch_size 32 (16 per process with 2), every core in use both ways (1 process x all threads, or
2 processes x half the threads each), and compares steps per second between the first and last
logged step (start-up and data loading excluded).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.metrics_file import read_metrics

ROOT = Path(__file__).resolve().parent.parent


def steps_per_second(processes: int, steps: int, folder: Path) -> float:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", str(processes),
                "--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // processes))]  # fmt: skip
    if processes > 1:
        launcher += ["--multi_gpu", "--main_process_port", "29531"]
    output = folder / f"p{processes}"
    subprocess.run(
        [*launcher, "tokenizer/train.py", "--config", "configs/tokenizer/mnist.yaml", f"output_dir={output}",
         f"max_steps={steps}", "log_every=10", "validate_every=100000", "checkpoint_every=100000",
         "validation_batches=1", "log_with=none"],
        cwd=ROOT, check=True, capture_output=True, env={**os.environ, "ACCELERATE_USE_CPU": "1"},
    )  # fmt: skip
    rows = [row for row in read_metrics(output) if "train/loss" in row]
    first, last = rows[1], rows[-1]  # from step 10: past start-up
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        one = steps_per_second(1, args.steps, Path(folder))
        two = steps_per_second(2, args.steps, Path(folder))
    print(f"CPU, {os.cpu_count()} cores, all in use both ways; global batch 32, default VQ-WAE model\n")
    print("| processes | steps/s | throughput ratio |")
    print("|---|---|---|")
    print(f"| 1 | {one:.2f} | 1.00x |")
    print(f"| 2 (gloo) | {two:.2f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
