"""Keep freed memory in the process (glibc): fewer page faults when training on the CPU.

glibc serves a large allocation (past 128 kB, a threshold it raises to at most 32 MB as blocks are
freed) with its own mmap and hands it back to the kernel when it is freed, and it trims the heap's
top once 128 kB of it are free. A training step allocates and frees the same few-megabyte
activations every step, so every step faults in each of their 4 kB pages again, and the kernel
zeroes each one. `keep_freed_memory` tells glibc (mallopt) to serve allocations up to 1 GB from its
heap and never trim it: a freed block is reused by the next step. Values are computed as before
(PyTorch aligns its CPU tensors to 64 bytes wherever they live); the process holds its peak heap
until it ends, as jemalloc or tcmalloc (PyTorch's tuning guide suggests them) would.

Measured on this project's 2-core CPU (benchmarks/kept_memory.py): the tokenizer's training update
1.09x and Inception's FID features 1.46x as fast, the prior's update 1.03x (docs/guide.md, "Devices
and speed").
Entry points call it through `infra.config.run_cli`; a library import changes nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt's parameters (malloc.h)
HEAP_UP_TO = 1 << 30  # allocations up to 1 GB come from the heap; larger ones are still mapped
NEVER_TRIM = 2**31 - 1  # the largest value mallopt's int takes


def keep_freed_memory() -> bool:
    """Set glibc's arena count (one), mmap and trim thresholds for this process; True when glibc
    took them (False on other platforms and C libraries, where nothing changes). Affects later
    allocations only."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # One arena: the heap the settings keep serves the worker threads too (a thread's own arena is
    # a mapped heap that still shrinks when its blocks are freed).
    settings = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, HEAP_UP_TO), (M_TRIM_THRESHOLD, NEVER_TRIM))
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])
