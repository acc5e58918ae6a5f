"""How VQ-WAE's OT term grows with the codebook (K) and the grid: its forward + backward time and
peak memory at batch 32, with the whole (latents x codes) matrix and within the memory budget
(`model.transport.memory_budget_mb`, solved in chunks), for every K and grid asked.

    python -m benchmarks.ot_scale --out FILE [--codes 512 2048 8192 16384] [--grids 8 16 32]
        [--batch 32] [--rounds 3] [--budgets whole 2048] [--steps] [--figures FOLDER]

Each size runs in a fresh process, so its peak memory is its own: on the CPU the peak resident
set (VmHWM, reset after a first call; glibc told to unmap what is freed) over the resident set
just before the timed calls, on a GPU the peak
allocated over the allocated. The term is the quantizer's: nearest-code lookup, the warm-started
solve (the second call of the same latents is timed: the steady state), and the backward of the
OT loss to the latents and codebook. Times are medians of --rounds calls; sizes run one after the
other, so compare ratios within one record. --steps adds, per size, the whole training step of
VQ-WAE against VQ-VAE on the same backbone (side by side, at the first budget) and the OT term's
share of VQ-WAE's step.
"""

from __future__ import annotations

import multiprocessing
import os

import torch

from benchmarks.common import device_name, draw_figures, in_fresh_process
from infra.config import CommandLine, check_arguments, provenance, run_cli
from infra.files import write_record
from tokenizer.quantizers import WassersteinQuantizer
from tokenizer.transport_chunked import chunk_rows
from tokenizer.transport_config import TransportConfig

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


def measure_steps(grid: int, num_codes: int, batch: int, budget_mb: float, rounds: int, device: str) -> dict:
    """One size in this process: the whole training step (forward, loss, backward, clipping, Adam)
    of the recipe and of VQ-VAE on the same backbone at that grid and K, median seconds of
    interleaved rounds, on random images of the grid's size (the time does not depend on content)."""
    from benchmarks.common import time_side_by_side
    from benchmarks.train_step import make_step
    from tokenizer import VQWAEConfig

    size = grid * VQWAEConfig.downsample
    images = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    configs = {
        "vq_vae": VQWAEConfig(quantizer="vq", image_size=size, codebook_size=num_codes),
        "vq_wae": VQWAEConfig(image_size=size, codebook_size=num_codes, transport=dict(memory_budget_mb=budget_mb)),
    }
    seconds = time_side_by_side({name: make_step(config, images, device) for name, config in configs.items()},
                                rounds=rounds, warmup=1, device=device)  # fmt: skip
    return dict(grid=grid, codes=num_codes, budget_mb=None if budget_mb == WHOLE else budget_mb,
                vq_vae_seconds=seconds["vq_vae"], vq_wae_seconds=seconds["vq_wae"],
                ratio=seconds["vq_wae"] / seconds["vq_vae"])  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--codes", type=int, nargs="+", default=[512, 2048, 8192, 16384])
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budgets", nargs="+", default=["whole", "2048"], help="MB, or `whole` (no chunks)")
    parser.add_argument("--figures", help="also draw the growth figure (ot-scale.png) into this folder")
    parser.add_argument("--steps", action="store_true",
                        help="also time the whole training step, VQ-WAE against VQ-VAE, at the first budget")  # fmt: skip
    args = parser.parse_args(argv)
    check_arguments(args, {"batch": 1, "rounds": 1})
    budgets = [WHOLE if budget == "whole" else float(budget) for budget in args.budgets]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, steps = [], []
    # glibc maps (and unmaps) every allocation over 128 kB, so a peak counts live tensors rather
    # than what the allocator keeps after freeing them (its adaptive threshold otherwise grows).
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    context = multiprocessing.get_context("spawn")
    for grid in args.grids:
        for num_codes in args.codes:
            for budget in budgets:
                row = in_fresh_process(context, measure, grid, num_codes, args.batch, budget, args.rounds, device)
                rows.append(row)
                print(f"{grid}x{grid} grid, K={num_codes}, budget {row['budget_mb'] or 'whole'}: "
                      f"{row['seconds'] * 1e3:.1f} ms, peak {row['peak_mb']:.0f} MB ({row['chunks']} chunk(s))", flush=True)  # fmt: skip
            if args.steps:
                step = in_fresh_process(context, measure_steps, grid, num_codes, args.batch, budgets[0], args.rounds, device)
                term = next(row["seconds"] for row in rows[::-1] if row["budget_mb"] == step["budget_mb"] and
                            (row["grid"], row["codes"]) == (grid, num_codes))  # fmt: skip
                steps.append({**step, "ot_share": term / step["vq_wae_seconds"]})
                print(f"  training step: VQ-WAE {step['vq_wae_seconds']:.2f} s, VQ-VAE {step['vq_vae_seconds']:.2f} s "
                      f"({step['ratio']:.2f}x); the OT term {steps[-1]['ot_share']:.0%} of VQ-WAE's step", flush=True)  # fmt: skip
    record = {**provenance("benchmarks.ot_scale", argv), "device": device_name(), "threads": torch.get_num_threads(),
              "batch": args.batch, "rounds": args.rounds, "rows": rows, **({"steps": steps} if args.steps else {})}  # fmt: skip
    write_record(args.out, record)
    if args.figures:
        draw_figures("ot_scale_figures", record, args.figures, f"VQ-WAE's OT term, batch {args.batch}, {device_name()}")
    return record


if __name__ == "__main__":
    run_cli(main)
