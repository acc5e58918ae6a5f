"""Multi-seed tokenizer comparison: train each named variant for S seeds at one step budget, score
every run on a held-out split, and report per variant the mean, min and spread over seeds, plus
the training-step time ratio to the plain VQ-VAE measured side by side.

    python -m benchmarks.compare_tokenizers --out outputs/compare \\
        --variant vq-wae configs/tokenizer/mnist.yaml \\
        --variant vq-vae configs/tokenizer/mnist-vqvae.yaml \\
        --variant vq-ema configs/tokenizer/mnist-vq-ema.yaml \\
        --variant fsq configs/tokenizer/mnist-fsq.yaml \\
        --seeds 0 1 2 --steps 1500 --rfid-n 1000 [--parallel 2] [--split test]

A variant is NAME CONFIG [key=value ...] (the overrides of `tokenizer/train.py`): the paper's
codebook-size sweep (its Table 2) is `--variant k64 configs/tokenizer/mnist.yaml model.codebook_size=64
--variant k128 ...`, a design choice `--variant cell configs/tokenizer/mnist.yaml
model.transport.encoder_target=cell`; choose on `--split validation`, report on `--split test`. Every run trains
with `tokenizer/train.py` into OUT/NAME/seed-S; a finished run (its result.json) is skipped on a
rerun and an interrupted one resumes from its last checkpoint, so a sweep survives a stop.
`--parallel N` trains N runs at once (on a CPU the cores are split between them unless
OMP_NUM_THREADS is set; on a GPU all share it). `--deadline-minutes M` stops every run M minutes
from now with a checkpoint (each run's start-up, data loading included, comes on top; for a lent
machine's time, and `benchmarks/gpu/gpu_compare.py` brings the runs back); the tables wait until a
rerun has finished them all. Writes OUT/results.json, OUT/results.md and the figures in
OUT/figures/ (validation curves, code use, step times: `benchmarks/plots.py`). Choose settings on `--split validation`; report `--split test`. Every run also
records its validation-split metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.common import draw_figures
from infra.config import load_config
from infra.metrics_file import read_metrics
from tokenizer.config import TokenizerTrainConfig

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["psnr", "ssim", "lpips", "rfid", "perplexity", "codes_used"]


def parse_variants(
    specs: list[list[str]], fixed: list[str], config_class: type = TokenizerTrainConfig
) -> dict[str, tuple[str, list[str]]]:
    """[[NAME, CONFIG, k=v, ...], ...] -> {NAME: (CONFIG, overrides)}, every config loaded once (as
    `config_class`, with the `fixed` overrides every run gets) so a bad name, file or override is
    one clear error before anything trains."""
    variants = {}
    for spec in specs:
        if len(spec) < 2:
            raise ValueError(f"--variant {' '.join(spec)}: give NAME CONFIG [key=value ...]")
        name, config, *overrides = spec
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"variant name {name!r}: use letters, digits, '.', '_' or '-' (it names a folder)")
        if name in variants:
            raise ValueError(f"variant name {name!r} is given twice")
        try:
            load_config(config_class, config, [*overrides, *fixed])
        except ValueError as error:
            raise ValueError(f"variant {name!r}: {error}") from None
        variants[name] = (config, overrides)
    if not variants:
        raise ValueError("give at least one --variant NAME CONFIG [key=value ...]")
    return variants


def add_variant_argument(parser: argparse.ArgumentParser) -> None:
    """--variant NAME CONFIG [key=value ...], repeatable (read with `parse_variants`)."""
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME CONFIG [key=value]")


def run_config(config: str, overrides: list[str], seed: int, steps: int, folder: Path) -> TokenizerTrainConfig:
    return load_config(TokenizerTrainConfig, config, [*overrides, *run_overrides(seed, steps, folder)])


def run_overrides(seed: int, steps: int, folder: Path) -> list[str]:
    return [f"seed={seed}", f"max_steps={steps}", f"output_dir={folder}", "resume=latest", "log_with=none"]


def is_trained(folder: Path) -> bool:
    return (folder / "final" / "config.json").is_file()


def run_environment(parallel: int) -> dict:
    """The training processes' environment: ROOT on PYTHONPATH before what it already holds (a
    device machine keeps its wheels there), and on a CPU the cores split between the runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # Oversubscribed OpenMP threads spin and slow every run ~8x.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def train_all(
    jobs: list[tuple[str, list[str], int, Path]], steps: int, parallel: int, deadline: float | None = None
) -> None:
    """Run `tokenizer/train.py` for every unfinished job, `parallel` at a time. `deadline` (a
    time.monotonic() value): every run stops there with a checkpoint (time_limit_minutes), and no
    run starts after it; a rerun resumes them. A failed run is reported once the others end."""
    env = run_environment(parallel)
    pending, running, failed = [job for job in jobs if not is_trained(job[3])], [], []
    print(f"{len(jobs) - len(pending)} of {len(jobs)} runs already trained; training {len(pending)}", flush=True)
    while pending or running:
        minutes_left = None if deadline is None else (deadline - time.monotonic()) / 60
        while pending and len(running) < parallel and (minutes_left is None or minutes_left > 0.1):
            config, overrides, seed, folder = pending.pop(0)
            folder.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, str(ROOT / "tokenizer" / "train.py"), "--config", config, *overrides]
            command += run_overrides(seed, steps, folder)
            command += [] if minutes_left is None else [f"time_limit_minutes={minutes_left:.3f}"]
            log = open(folder / "train.log", "a")
            running.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log), folder, log))
            print(f"training {folder}", flush=True)
        if pending and not running:
            break  # past the deadline: the rest waits for a rerun
        time.sleep(0.5)
        for item in list(running):
            process, folder, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            if process.returncode != 0:
                tail = (folder / "train.log").read_text()[-2000:]
                failed.append(f"training {folder} failed (exit {process.returncode}); end of its log:\n{tail}")
                print(failed[-1].splitlines()[0], flush=True)
            else:
                print(f"{'trained' if is_trained(folder) else 'stopped at the deadline:'} {folder}", flush=True)
    if failed:
        raise RuntimeError("\n\n".join(failed))


def evaluate_run(config: TokenizerTrainConfig, split: str, rfid_n: int, max_batches: int | None) -> dict:
    """Metrics of a trained run on `split` (with rFID and LPIPS on its first rfid_n images), on the
    validation split, and where the data set has one (the embedded photos) on its `cifar` split."""
    from infra.data import load_images
    from tokenizer.evaluation import evaluate_reconstruction, reconstruction_fid, reconstruction_lpips
    from tokenizer.model import load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_tokenizer(str(Path(config.output_dir) / "final")).to(device)
    splits = load_images(config.data, config.model.in_channels, seed=config.seed)
    result = {}
    for name in dict.fromkeys([split, "validation", *(["cifar"] if "cifar" in splits else [])]):
        loader = torch.utils.data.DataLoader(splits[name], batch_size=256)
        metrics = asdict(evaluate_reconstruction(model, loader, max_batches=max_batches, progress=False))
        if name in (split, "cifar") and rfid_n:
            images = splits[name].select(range(min(rfid_n, len(splits[name]))))
            metrics.update(lpips=reconstruction_lpips(model, images)["mean"], lpips_n=len(images))
            if name == split:
                fid = reconstruction_fid(model.eval(), images, reference=f"{config.data.source}:{name}")
                metrics.update(rfid=fid.fid, rfid_n=len(images))
        result[name] = metrics
    history = Path(config.output_dir) / "metrics.jsonl"
    if history.is_file():
        train_logs = read_metrics(history)
        result["train_seconds"] = train_logs[-1]["time"] - train_logs[0]["time"] if len(train_logs) > 1 else None
        result["curves"] = training_curves(train_logs)
    return result


# What the curves figure shows, from the run's metrics.jsonl: {curve name: logged key}.
CURVES = {"psnr": "validation/psnr", "perplexity": "validation/perplexity", "ot_gap": "ot_check/relative_gap",
          "ot_marginal": "ot_check/marginal_error", "ot_marginal_floor": "ot_check/marginal_floor"}


def training_curves(logs: list[dict]) -> dict[str, dict[int, float]]:
    """Validation PSNR and perplexity, and where `ot_check_every` logged them the OT gap and the
    code marginal's L1 error with its one-hot floor, by step."""
    return {name: {row["step"]: row[key] for row in logs if key in row} for name, key in CURVES.items()}


def step_ratios(variants: dict, seed: int, steps: int, out: Path, reference: str, rounds: int) -> dict:
    """Median training-step time of each variant (forward, loss, backward, Adam), side by side in
    interleaved rounds on one MNIST batch of 32, every model starting from its trained run of
    `seed` (the steady state). Ratios to the `reference` variant."""
    from benchmarks.common import time_side_by_side
    from benchmarks.train_step import make_step
    from infra.data import load_images, to_unit_range
    from tokenizer.model import load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps_by_name = {}
    for name, (config, overrides) in variants.items():
        run = run_config(config, overrides, seed, steps, out / name / f"seed-{seed}")
        images = to_unit_range(load_images(run.data, run.model.in_channels)["train"][:32]["pixel_values"])
        trained = load_tokenizer(str(Path(run.output_dir) / "final")).state_dict()
        steps_by_name[name] = make_step(run.model, images.to(device), device, trained, run.loss, run.learning_rate)
    seconds = time_side_by_side(steps_by_name, rounds=rounds, device=device)
    return {name: dict(step_ms=1e3 * value, ratio=value / seconds[reference]) for name, value in seconds.items()}


def summarise(results: dict, split: str) -> dict:
    """Per variant and metric: mean, min, max and spread (max - min) over seeds."""
    summary = {}
    for name, runs in results.items():
        summary[name] = {}
        for metric in METRICS:
            values = [run[split][metric] for run in runs.values() if metric in run.get(split, {})]
            if values:
                summary[name][metric] = dict(
                    mean=statistics.fmean(values), min=min(values), max=max(values), spread=max(values) - min(values)
                )
    return summary


def markdown(summary: dict, results: dict, timing: dict, args, cifar: dict | None = None) -> str:
    rfid_n = {run[args.split].get("rfid_n") for runs in results.values() for run in runs.values()} - {None}
    lines = [
        f"{args.steps} steps, seeds {' '.join(map(str, args.seeds))}, {args.split} split; each cell: mean "
        f"(min-max) over seeds"
        + (f"; rFID and LPIPS on the first {', '.join(map(str, sorted(rfid_n)))} images" if rfid_n else ""),
        "",
        "| variant | PSNR dB | SSIM | LPIPS | rFID | perplexity | codes used | PSNR by seed | step vs "
        f"{args.reference or 'VQ-VAE'} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(summary, name, metric, digits):
        stats = summary[name].get(metric)
        if stats is None:
            return "-"
        return f"{stats['mean']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"

    for name in summary:
        by_seed = ", ".join(f"{run[args.split]['psnr']:.2f}" for run in results[name].values())
        ratio = f"{timing[name]['ratio']:.2f}x ({timing[name]['step_ms']:.1f} ms)" if name in timing else "-"
        lines.append(
            f"| {name} | {cell(summary, name, 'psnr', 2)} | {cell(summary, name, 'ssim', 3)} | "
            f"{cell(summary, name, 'lpips', 3)} | {cell(summary, name, 'rfid', 2)} | "
            f"{cell(summary, name, 'perplexity', 1)} | {cell(summary, name, 'codes_used', 0)} | {by_seed} | {ratio} |"
        )
    if cifar:  # the 40 real CIFAR test images of the embedded photos
        lines += ["", "The 40 CIFAR-10/CIFAR-100 test images (never seen in training):", "",
                  "| variant | PSNR dB | SSIM | LPIPS |", "|---|---|---|---|"]  # fmt: skip
        for name in cifar:
            lines.append(f"| {name} | {cell(cifar, name, 'psnr', 2)} | {cell(cifar, name, 'ssim', 3)} | "
                         f"{cell(cifar, name, 'lpips', 3)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variant_argument(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", default="outputs/compare")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--rfid-n", type=int, default=1000, help="rFID on the first N images of the split (0: none)")
    parser.add_argument("--max-batches", type=int, default=None, help="score only N batches of 256 (quick checks)")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at once")
    parser.add_argument("--reference", default=None, help="variant the step times are relative to (default: first vq)")
    parser.add_argument("--timing-rounds", type=int, default=20, help="0 skips the step-time ratios")
    parser.add_argument("--deadline-minutes", type=float, default=None,
                        help="stop every run this many minutes from now with a checkpoint; a rerun resumes")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variant, [f"max_steps={args.steps}"])
    except ValueError as error:
        parser.error(str(error))
    if args.parallel < 1 or args.steps < 1:
        parser.error("--parallel and --steps must be >= 1")
    if args.deadline_minutes is not None and args.deadline_minutes <= 0:
        parser.error("--deadline-minutes must be > 0")
    deadline = None if args.deadline_minutes is None else time.monotonic() + 60 * args.deadline_minutes
    if args.reference is None:
        plain = [name for name, (config, overrides) in variants.items()
                 if load_config(TokenizerTrainConfig, config, overrides).model.quantizer == "vq"]  # fmt: skip
        args.reference = plain[0] if plain else None
    elif args.reference not in variants:
        parser.error(f"--reference {args.reference!r} is not a variant; choose one of {list(variants)}")
    out = Path(args.out)

    # 1. Train every (variant, seed) that has not finished yet.
    jobs = [(config, overrides, seed, out / name / f"seed-{seed}")
            for name, (config, overrides) in variants.items() for seed in args.seeds]  # fmt: skip
    train_all(jobs, args.steps, args.parallel, deadline)

    # 2. Score each finished run once (result.json next to it; a rerun reads it back).
    results, unfinished = {}, []
    for name, (config, overrides) in variants.items():
        results[name] = {}
        for seed in args.seeds:
            folder = out / name / f"seed-{seed}"
            if not is_trained(folder):
                unfinished.append(str(folder))
                continue
            saved = folder / f"result-{args.split}-rfid{args.rfid_n}-batches{args.max_batches}.json"
            if not saved.is_file():
                run = run_config(config, overrides, seed, args.steps, folder)
                saved.write_text(json.dumps(evaluate_run(run, args.split, args.rfid_n, args.max_batches), indent=2))
            results[name][seed] = json.loads(saved.read_text())
            print(f"{name} seed {seed}: {args.split} PSNR {results[name][seed][args.split]['psnr']:.2f} dB", flush=True)

    if unfinished:  # a summary over fewer seeds than asked would mislead: no tables yet
        print(f"not finished (stopped at the deadline): {', '.join(unfinished)}; run the same command to resume")
        return {"unfinished": unfinished, "runs": results}

    # 3. Step-time ratios, side by side, from the first seed's trained models.
    timing = {}
    if args.timing_rounds and args.reference:
        timing = step_ratios(variants, args.seeds[0], args.steps, out, args.reference, args.timing_rounds)

    # 4. Tables.
    summary = summarise(results, args.split)
    cifar = {name: stats for name, stats in summarise(results, "cifar").items() if stats}
    report = dict(
        steps=args.steps, seeds=args.seeds, split=args.split, variants={k: [v[0], *v[1]] for k, v in variants.items()},
        summary=summary, cifar_summary=cifar, runs=results, step_time=timing, reference=args.reference,
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)",
    )  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown(summary, results, timing, args, cifar)
    (out / "results.md").write_text(table)
    print(table)
    draw_figures("compare_figures", report, out / "figures", f"{args.steps} steps, seeds {' '.join(map(str, args.seeds))}, {report['device']}")
    return report


if __name__ == "__main__":
    main()
