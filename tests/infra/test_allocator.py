"""infra/allocator.py: with freed memory kept, a training step stops faulting in fresh pages."""

import subprocess
import sys

import pytest

# A fresh process (glibc settings are per process) runs the tokenizer's training update on 8 random
# images and prints the minor page faults the kernel counted over 5 steps after 3 of warm-up.
PROGRAM = """
import resource, sys, torch
from infra.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
from benchmarks.train_step import make_step
from tokenizer import VQWAEConfig
step = make_step(VQWAEConfig(), torch.rand(8, 1, 32, 32), "cpu")
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def faults_per_step(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True).stdout
    kept, count = out.split()[-2:]
    return kept, float(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_training_step_reuses_kept_memory():
    """Without the setting glibc hands large freed blocks back and every step faults hundreds of
    pages in again (zeroed by the kernel); with it, next to none after the warm-up."""
    kept, with_keep = faults_per_step("keep")
    _, without = faults_per_step("plain")
    assert kept == "True"
    assert without >= 100, without  # the cost the setting exists for
    assert with_keep <= 0.02 * without, (with_keep, without)
