"""Float comparisons that hold on any x86 CPU, and a switch that runs the suite as another CPU would.

Three libraries inside torch pick CPU kernels by what the processor offers, and each sums in its own
order: ATen's vectorised elementwise ops and reductions (`ATEN_CPU_CAPABILITY`), oneDNN's
convolutions (`ONEDNN_MAX_CPU_ISA`) and MKL's matrix products (`MKL_CBWR`). A float computed on one
machine is therefore not the float another machine computes, and a training run amplifies the first
differing bit step by step. A test that compares floats across machines (a pinned fixture) or across
two code paths with their own kernels (fused against plain Adam, compiled against eager) states a
tolerance measured over those choices, and records what it compared so that the measurement can
be repeated:

    VQWAE_CPU_KERNELS=generic make test        # the whole suite as a CPU with no AVX would run it
    python -m benchmarks.float_spread          # every float check under every setting, 1 and 2 threads

`VQWAE_CPU_KERNELS` is read by tests/conftest.py before torch loads (and inherited by every
subprocess a test starts); `make test` runs the float checks (`-m cpu_kernels`) again under
`generic`, so a number pinned to one machine's bits fails where it is written.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

SWITCH = "VQWAE_CPU_KERNELS"
RECORD = "VQWAE_FLOAT_RECORD"  # a folder: each float check writes what it compared there
# The kernel choices a run can force. `native` lets each library pick for this CPU; the others cap all
# three libraries at one instruction set (MKL_CBWR pins MKL's code path, whatever the vendor).
KERNELS = {
    "native": {},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AVX512"},
}


def apply_kernel_setting(environ: dict = os.environ) -> str:
    """Set the three libraries' kernel choice named by VQWAE_CPU_KERNELS (default native) in
    `environ`; call before torch is imported. Returns the name."""
    name = environ.get(SWITCH, "native") or "native"
    if name not in KERNELS:
        raise ValueError(f"{SWITCH}={name} is not a kernel setting; choose one of {', '.join(KERNELS)}")
    environ.update(KERNELS[name])
    # Inductor's cache does not tell kernel settings apart: code cached under one ATen capability
    # failed to compile (precompiled header without at::vec) or crashed under another. One cache
    # folder per capability.
    capability = environ.get("ATEN_CPU_CAPABILITY", "native")
    environ.setdefault("TORCHINDUCTOR_CACHE_DIR", f"{tempfile.gettempdir()}/torchinductor_{getpass.getuser()}_{capability}")
    return name


def check_kernel_setting(name: str) -> None:
    """After torch loaded: ATen runs the capability the setting asked for (a switch that silently
    did nothing would make `make test`'s second pass a copy of the first)."""
    import torch

    wanted = KERNELS[name].get("ATEN_CPU_CAPABILITY")
    running = torch.backends.cpu.get_cpu_capability().lower()
    if wanted and running != wanted:
        raise RuntimeError(
            f"{SWITCH}={name} asks ATen for {wanted} kernels but it runs {running}: torch was imported before "
            "tests/conftest.py set the switch (a pytest plugin importing torch?); set ATEN_CPU_CAPABILITY "
            "in the environment instead"
        )


def relative_mean_deviation(actual: Sequence[float], expected: Sequence[float]) -> float:
    """|mean(actual) - mean(expected)| / |mean(expected)|: how far a series' level moved. A
    training run turns a rounding difference into step-to-step noise of either sign (chaos), which
    a mean over the steps averages out, while a changed setting moves the level one way."""
    if len(actual) != len(expected) or not expected:
        raise ValueError(f"series of {len(actual)} and {len(expected)} values cannot be compared")
    reference = sum(expected) / len(expected)
    return abs(sum(actual) / len(actual) - reference) / abs(reference)


def max_abs_deviation(actual, expected) -> float:
    """The largest |actual - expected| over two equally shaped sequences or tensors (or dicts of them)."""
    import torch

    if isinstance(expected, dict):
        if actual.keys() != expected.keys():
            raise ValueError(f"different keys: {sorted(actual.keys() ^ expected.keys())}")
        return max(max_abs_deviation(actual[key], expected[key]) for key in expected)
    actual, expected = torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes {tuple(actual.shape)} and {tuple(expected.shape)} differ")
    return (actual - expected).abs().max().item()


def mean_abs_deviation(actual: dict, expected: dict) -> float:
    """The mean |actual - expected| over every element of two state dicts' float tensors. Adam
    divides each gradient by its own running size, so an entry whose gradient is rounding noise
    moves by a whole learning rate either way: a few such entries (a little-used code's) part two
    runs by about the learning rate, while a changed update moves nearly every entry."""
    if actual.keys() != expected.keys():
        raise ValueError(f"different keys: {sorted(actual.keys() ^ expected.keys())}")
    total, count = 0.0, 0
    for key, value in expected.items():
        if value.is_floating_point():
            total += (actual[key].double() - value.double()).abs().sum().item()
            count += value.numel()
    return total / count


class FloatCheck:
    """One test's float comparisons: `within` asserts a deviation is inside its tolerance, `beyond`
    that a change the check exists to catch lands outside it. Both write the deviation to
    $VQWAE_FLOAT_RECORD when set (benchmarks/float_spread.py reads them)."""

    def __init__(self, test: str):
        self.test = test  # the pytest node id

    def within(self, name: str, deviation: float, tolerance: float) -> None:
        self._record(name, deviation, tolerance, "same computation")
        assert deviation <= tolerance, (
            f"{name}: deviation {deviation:.3g} past the tolerance {tolerance:.3g} measured across CPU kernels "
            f"({SWITCH}={os.environ.get(SWITCH, 'native')}; see tests/cpu_kernels.py)"
        )

    def beyond(self, name: str, deviation: float, tolerance: float) -> None:
        self._record(name, deviation, tolerance, "guarded change")
        assert deviation > tolerance, f"{name}: the check cannot see the change it guards ({deviation:.3g} <= {tolerance:.3g})"

    def _record(self, name: str, deviation: float, tolerance: float, kind: str) -> None:
        folder = os.environ.get(RECORD)
        if not folder:
            return
        entry = dict(test=self.test, name=name, kind=kind, deviation=deviation, tolerance=tolerance)
        path = Path(folder) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.test}::{name}") + ".json")
        path.write_text(json.dumps(entry))


def machine() -> dict:
    """What a float was computed on: the CPU, its vector extensions, torch, the kernels, the threads."""
    import platform

    import torch

    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {
        "cpu": model,
        "vector_extensions": sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}),
        "torch": torch.__version__,
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "kernels": os.environ.get(SWITCH, "native"),
        "threads": torch.get_num_threads(),
    }
