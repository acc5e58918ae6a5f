"""How VQ-WAE's OT term grows with the codebook (K) and the grid: its forward + backward time and
peak memory at batch 32, with the whole (latents x codes) matrix and within the memory budget
(`model.transport.memory_budget_mb`, solved in chunks), for every K and grid asked.

    python -m benchmarks.ot_scale --out FILE [--codes 512 2048 8192 16384] [--grids 8 16 32]
        [--batch 32] [--rounds 3] [--budgets whole 1024]

Each size runs in a fresh process, so its peak memory is its own: on the CPU the peak resident
set (VmHWM, reset after a first call; glibc told to unmap what is freed) over the resident set
just before the timed calls, on a GPU the peak
allocated over the allocated. The term is the quantizer's: nearest-code lookup, the warm-started
solve (the second call of the same latents is timed: the steady state), and the backward of the
OT loss to the latents and codebook. Times are medians of --rounds calls; sizes run one after the
other, so compare ratios within one record.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import torch

from benchmarks.common import device_name, draw_figures
from infra.config import CommandLine, check_arguments, provenance, run_cli
from infra.files import write_record
from tokenizer.quantizers import WassersteinQuantizer
from tokenizer.transport import TransportConfig
from tokenizer.transport_chunked import chunk_rows

WHOLE = 1e12  # a budget no matrix passes: the whole (N, K) matrix every time


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def reset_peak_resident() -> float:
    """Reset this process's peak resident set (Linux: 5 > /proc/self/clear_refs); return the MB resident now."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_mb("VmRSS")


def measure(grid: int, num_codes: int, batch: int, budget_mb: float, rounds: int, device: str) -> dict:
    """One size in this process: median seconds of the OT term (forward + backward) and its peak MB."""
    import statistics
    import time

    torch.manual_seed(0)
    transport = TransportConfig(memory_budget_mb=budget_mb)
    quantizer = WassersteinQuantizer(num_codes, 64, "encoder", 0.1, grid_size=grid, transport=transport).to(device)
    latents = torch.randn(batch, 64, grid, grid, device=device, requires_grad=True)
    quantizer(latents).transport_loss.backward()  # the codebook drawn from these latents, the warm start set

    def term() -> None:
        quantizer(latents).transport_loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = reset_peak_resident()
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        term()
        seconds.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - before
    else:
        peak = _status_mb("VmHWM") - before
    latents_n = batch * grid * grid
    rows = chunk_rows(1, num_codes, budget_mb)
    return dict(grid=grid, codes=num_codes, latents=latents_n, latents_x_codes=latents_n * num_codes,
                budget_mb=None if budget_mb == WHOLE else budget_mb, chunks=-(-latents_n // rows),
                seconds=statistics.median(seconds), peak_mb=round(peak, 1))  # fmt: skip


def _in_fresh_process(arguments: tuple) -> dict:
    return measure(*arguments)


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--codes", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budgets", nargs="+", default=["whole", "1024"], help="MB, or `whole` (no chunks)")
    args = parser.parse_args(argv)
    check_arguments(args, {"batch": 1, "rounds": 1})
    budgets = [WHOLE if budget == "whole" else float(budget) for budget in args.budgets]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    # glibc maps (and unmaps) every allocation over 128 kB, so a peak counts live tensors rather
    # than what the allocator keeps after freeing them (its adaptive threshold otherwise grows).
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    context = multiprocessing.get_context("spawn")
    for grid in args.grids:
        for num_codes in args.codes:
            for budget in budgets:
                with context.Pool(1, maxtasksperchild=1) as pool:
                    row = pool.apply(_in_fresh_process, ((grid, num_codes, args.batch, budget, args.rounds, device),))
                rows.append(row)
                print(f"{grid}x{grid} grid, K={num_codes}, budget {row['budget_mb'] or 'whole'}: "
                      f"{row['seconds'] * 1e3:.1f} ms, peak {row['peak_mb']:.0f} MB ({row['chunks']} chunk(s))", flush=True)  # fmt: skip
    record = {**provenance("benchmarks.ot_scale", argv), "device": device_name(), "threads": torch.get_num_threads(),
              "batch": args.batch, "rounds": args.rounds, "rows": rows}  # fmt: skip
    write_record(args.out, record)
    draw_figures("ot_scale_figures", record, Path(args.out).parent, f"VQ-WAE's OT term, batch {args.batch}, {device_name()}")
    return record


if __name__ == "__main__":
    run_cli(main)
