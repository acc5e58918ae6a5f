"""What keeping freed memory (infra/allocator.py, every command-line run) buys on this machine:
the tokenizer's training update (the recipe, batch 32 MNIST images) and the prior's (the
quickstart's 4 x 128 GPT-2, batch 32), and Inception's FID features of 64 images, each timed in
fresh processes with glibc's defaults and with the setting, alternating, with the minor page faults
the kernel counted.

    python -m benchmarks.kept_memory [--repeats 3] [--steps 20] [--out FILE]
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time

import torch

from benchmarks.common import device_name, in_fresh_process, mnist_batch
from infra.allocator import keep_freed_memory
from infra.config import CommandLine, check_arguments, provenance
from infra.files import write_record

WORKLOADS = ("tokenizer update", "prior update", "Inception features of 64 images")


def _workload(name: str):
    """A closure running one unit of `name` (built here, in the fresh process)."""
    if name == "tokenizer update":
        from benchmarks.train_step import make_step
        from tokenizer import VQWAEConfig

        return make_step(VQWAEConfig(), mnist_batch(32), "cpu")
    if name == "prior update":
        from prior.model import CodeVocabulary, PriorModelConfig, build_prior

        vocabulary = CodeVocabulary(512, 8, 8, 10)
        model = build_prior(PriorModelConfig(num_layers=4, hidden_size=128, num_heads=4, dropout=0.0), vocabulary, "x")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)

        def update():
            codes = torch.randint(0, 512, (32, 65), generator=generator)
            model(input_ids=codes, labels=codes).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return update
    from infra.metrics.fid_score import feature_extractor, inception_features

    extractor, images = feature_extractor(), (mnist_batch(64) * 255).round().to(torch.uint8)
    return lambda: inception_features(images, extractor)


def measure(name: str, kept: bool, steps: int) -> dict:
    """In this (fresh) process: the setting or glibc's defaults, 3 warm-up units of `name`, then
    `steps` timed ones: their mean seconds and minor page faults, and whether the setting was on."""
    if kept and not keep_freed_memory():
        raise RuntimeError("keep_freed_memory: glibc refused the settings (not glibc?)")
    torch.manual_seed(0)
    unit = _workload(name)
    for _ in range(3):
        unit()
    faults, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(steps):
        unit()
    seconds = (time.perf_counter() - started) / steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    return {"seconds": seconds, "faults": faults, "kept": kept}


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per workload and setting")
    parser.add_argument("--steps", type=int, default=20, help="timed units per process (Inception: a quarter)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--out", help="also write the record here")
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"repeats": 1, "steps": 1})
    context = multiprocessing.get_context("spawn")
    rows = []
    for name in args.workloads:
        steps = max(1, args.steps // 4) if name.startswith("Inception") else args.steps
        runs = {"defaults": [], "kept": []}
        for _ in range(args.repeats):  # alternating, so a drift of the machine's pace hits both
            for setting in runs:
                runs[setting].append(in_fresh_process(context, measure, name, setting == "kept", steps))
        row = {"workload": name, "steps": steps, "runs": runs}
        for setting, measured in runs.items():
            row[f"{setting}_ms"] = 1e3 * statistics.median(run["seconds"] for run in measured)
            row[f"{setting}_faults"] = statistics.median(run["faults"] for run in measured)
        row["speedup"] = row["defaults_ms"] / row["kept_ms"]
        rows.append(row)
        print(f"{name}: {row['defaults_ms']:.1f} ms ({row['defaults_faults']:,.0f} page faults) with glibc's defaults, "
              f"{row['kept_ms']:.1f} ms ({row['kept_faults']:,.0f}) kept: {row['speedup']:.2f}x", flush=True)  # fmt: skip
    record = {**provenance("benchmarks.kept_memory", argv), "device": device_name(), "repeats": args.repeats, "rows": rows}
    if args.out:
        write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
