"""Where the recipe's extra training-step time goes on the CPU: VQ-WAE's and VQ-VAE's training updates (the
same backbone, batch 32 MNIST images, K = 512) timed side by side, then both profiled, the OT
solver's time inside the recipe's step split by operator, and the same solve timed alone on the
step's own cost matrix. Run as tokenizer/train.py runs, freed memory kept (infra/allocator.py).

    python -m benchmarks.step_breakdown [--rounds 30] [--profiled 10] [--out FILE]

The profiled times include the profiler's own cost (some microseconds an operator); the step times
and the solve alone are measured without it.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

from torch.profiler import ProfilerActivity, profile, record_function

import tokenizer.quantizers as quantizers
from benchmarks.common import device_name, mnist_batch, time_side_by_side
from benchmarks.train_step import make_step
from infra.allocator import keep_freed_memory
from infra.config import CommandLine, check_arguments, provenance
from infra.files import write_record
from tokenizer import VQWAEConfig

SOLVER = "OT solver"  # the profiler range around each solve
MODELS = {"VQ-VAE": VQWAEConfig(quantizer="vq"), "VQ-WAE": VQWAEConfig()}


@contextmanager
def labelled_solver(solves: list):
    """The quantizer's Sinkhorn solver inside a profiler range named SOLVER; `solves` holds the last
    call's arguments (the potential copied: the quantizer updates it in place), to time it alone."""
    solve = quantizers.sinkhorn_transport

    def labelled(cost, weights, config, **options):
        solves[:] = [(cost, weights, config, options["code_potential"].clone())]
        with record_function(SOLVER):
            return solve(cost, weights, config, **options)

    quantizers.sinkhorn_transport = labelled
    try:
        yield
    finally:
        quantizers.sinkhorn_transport = solve


def descendants(event) -> list:
    found = []
    for child in event.cpu_children:
        found += [child, *descendants(child)]
    return found


def profiled_steps(steps: dict, rounds: int) -> dict:
    """Each step `rounds` times under the profiler, interleaved: per step, each model's profiled
    milliseconds, and the recipe's solver milliseconds with its operators' own times and calls."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(rounds):
            for name, step in steps.items():
                with record_function(name):
                    step()
    events = profiler.events()
    totals = {name: sum(e.cpu_time_total for e in events if e.name == name) / 1e3 / rounds for name in steps}
    solves = [event for event in events if event.name == SOLVER]
    operators = defaultdict(lambda: [0.0, 0])
    for event in [child for solve in solves for child in descendants(solve)]:
        operators[event.name][0] += event.self_cpu_time_total / 1e3 / rounds
        operators[event.name][1] += 1
    ranked = sorted(operators.items(), key=lambda item: -item[1][0])
    return {
        "step_ms": totals,
        "solves_per_step": len(solves) / rounds,
        "solver_ms": sum(event.cpu_time_total for event in solves) / 1e3 / rounds,
        "operators": [{"operator": name, "ms": ms, "calls_per_step": calls / rounds} for name, (ms, calls) in ranked],
    }


def solve_alone(solve: tuple, rounds: int) -> float:
    """Median milliseconds of the step's last solve, repeated on its own (the same inputs each time)."""
    cost, weights, config, potential = solve
    seconds = []
    for _ in range(rounds + 3):
        started = time.perf_counter()
        quantizers.sinkhorn_transport(cost, weights, config, code_potential=potential.clone(), dense_plan=False)
        seconds.append(time.perf_counter() - started)
    return 1e3 * statistics.median(seconds[3:])


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timed rounds of both steps")
    parser.add_argument("--profiled", type=int, default=10, help="interleaved profiled rounds of both steps")
    parser.add_argument("--out", help="also write the record here")
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"rounds": 1, "profiled": 1})
    kept = keep_freed_memory()
    images, solves = mnist_batch(32), []
    steps = {name: make_step(config, images, "cpu") for name, config in MODELS.items()}
    step_ms = {name: 1e3 * seconds for name, seconds in time_side_by_side(steps, rounds=args.rounds).items()}
    with labelled_solver(solves):
        profiled = profiled_steps(steps, args.profiled)
    alone_ms = solve_alone(solves[-1], args.rounds)
    base, recipe = step_ms["VQ-VAE"], step_ms["VQ-WAE"]
    print(f"steps: VQ-VAE {base:.1f} ms, VQ-WAE {recipe:.1f} ms ({recipe / base:.2f}x; 1.05x would be {1.05 * base:.1f} ms)")
    print(f"the solver: {profiled['solver_ms']:.1f} ms a step profiled inside the step, {alone_ms:.1f} ms alone")
    for row in profiled["operators"][:8]:
        print(f"  {row['operator']}: {row['ms']:.2f} ms ({row['calls_per_step']:.0f} calls)")
    record = {
        **provenance("benchmarks.step_breakdown", argv), "device": device_name(), "kept_memory": kept,
        "rounds": args.rounds, "profiled_rounds": args.profiled, "step_ms": step_ms, "ratio": recipe / base,
        "profiled": profiled, "solver_alone_ms": alone_ms,
    }  # fmt: skip
    if args.out:
        write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
