"""The prepared device script for the GPU prior recipe: train configs/prior/mnist-gpu.yaml on a
trained tokenizer's codes within a time budget, then sample the code grids of every gFID setting.

    python -m benchmarks.gpu.gpu_prior --tokenizer TOKENIZER_DIR --out $OUT [--minutes 5.5] \\
        [--n 10000] [--guidance-scales 1.5 1 2 3] [--deadline-minutes 8.5]
    python -m benchmarks.gpu.gpu_prior --tokenizer TOKENIZER_DIR --out /tmp/x --dry-run --n 20   # CPU rehearsal

1. times warm training steps of the recipe's prior (random codes, the recipe's batch and precision)
   and sets max_steps to what fits in --minutes (at most the recipe's), so that the cosine
   schedule runs to its end rather than being cut by the clock;
2. trains it with prior/train.py (time_limit_minutes only as a guard);
3. samples, from the pipeline folder that run wrote, N code grids per setting: unconditional, and
   class-conditional (N / num_classes of every class, class-ordered) at each guidance scale, in
   the given order while the deadline allows, each saved at once as OUT/codes-<setting>.pt;
4. writes OUT/gpu_prior.json and OUT/gpu_prior.md: step time, steps, validation bits per code
   over training, sampling minutes.

The prior (12 x 512, about 150 MB) does not come back from a device call; its samples do, and
generation_fid.py scores them here with the same tokenizer:
    python -m benchmarks.generation_fid --pipeline <a pipeline with that tokenizer> --codes <OUT> ...
Running it on a GPU machine, with or without network: benchmarks/gpu/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import device_name, time_side_by_side
from benchmarks.generation_fid import PLAIN_SAMPLING, setting_tag
from infra.config import load_config
from infra.metrics_file import read_metrics
from pipelines import VQWAEPipeline
from prior.config import PriorTrainConfig
from prior.model import CodeVocabulary, build_prior
from prior.train import build_optimization, causal_lm_loss
from tokenizer.model import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
LOOP_OVERHEAD = 1.3  # the training loop's step over the bare step: data, Accelerate, logging, validation


def step_seconds(config: PriorTrainConfig, vocabulary: CodeVocabulary, device: str, steps: int) -> float:
    """Median seconds of a warm training step of the prior (random codes, the recipe's batch,
    precision and optimizer), the loop's overhead left out."""
    model = build_prior(config.model, vocabulary, "probe").to(device).train()
    optimizer = build_optimization(model, config).optimizer  # the recipe's (the schedule does not change a step's time)
    tokens = torch.randint(0, vocabulary.codebook_size, (config.batch_size, 1 + vocabulary.sequence_length),
                           device=device)  # fmt: skip
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16")

    def step() -> None:
        with autocast:
            loss = causal_lm_loss(model, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_side_by_side({"step": step}, rounds=steps, warmup=3, device=device)["step"]


def steps_that_fit(seconds_per_step: float, minutes: float, most: int, warmup: int, round_to: int) -> int:
    """The largest multiple of round_to (at most `most`, above `warmup`) whose steps fit in `minutes`."""
    fit = int(60 * minutes / (LOOP_OVERHEAD * seconds_per_step)) // round_to * round_to
    return max(min(fit, most), warmup + round_to)


def validation_curve(metrics_file: Path) -> list[dict]:
    """[{step, bits_per_code}] of the run's validations, from its metrics.jsonl."""
    if not metrics_file.is_file():
        return []
    rows = read_metrics(metrics_file)
    return [{"step": row["step"], "bits_per_code": row["validation/bits_per_code"]}
            for row in rows if "validation/bits_per_code" in row]  # fmt: skip


def sample_settings(pipe: VQWAEPipeline, scales: list[float | None], n: int, seed: int, batch_size: int,
                    out: Path, deadline: float, results: dict) -> None:  # fmt: skip
    """Sample every setting while time is left, plainly (generation_fid's default: temperature 1,
    no top-k, the null class); each one's codes are saved as soon as made, in the form
    generation_fid.py --codes reads."""
    for scale in scales:
        if time.monotonic() > deadline:
            results["sampling"][setting_tag(scale)] = "skipped: deadline"
            continue
        started = time.monotonic()
        labels = {} if scale is None else dict(class_labels="each", guidance_scale=scale)
        generator = torch.Generator().manual_seed(seed)
        codes = pipe(n=n, generator=generator, batch_size=batch_size, output_type="pt", progress=False,
                     **PLAIN_SAMPLING, **labels).codes  # fmt: skip
        payload = dict(codes=codes.to(torch.int16).cpu(), guidance_scale=scale, seed=seed, n=n,
                       num_classes=pipe.num_classes, tokenizer_id=pipe.tokenizer_id, sampled_on=device_name())  # fmt: skip
        torch.save(payload, out / f"codes-{setting_tag(scale)}.pt")
        results["sampling"][setting_tag(scale)] = {"minutes": round((time.monotonic() - started) / 60, 3)}


def markdown(results: dict) -> str:
    lines = [f"# gpu_prior on {results['device']} (torch {results['torch']})", ""]
    lines += [f"- {key}: {json.dumps(value)}" for key, value in results.items() if key not in ("curve", "sampling")]
    lines += ["", "| step | validation bits per code |", "|---|---|"]
    lines += [f"| {row['step']} | {row['bits_per_code']:.4f} |" for row in results.get("curve", [])]
    lines += ["", "| setting | sampling |", "|---|---|"]
    lines += [f"| {tag} | {json.dumps(value)} |" for tag, value in results.get("sampling", {}).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="trained tokenizer folder whose codes the prior models")
    parser.add_argument("--out", required=True, help="folder for gpu_prior.json / .md and codes-*.pt ($OUT)")
    parser.add_argument("--config", default="configs/prior/mnist-gpu.yaml")
    parser.add_argument("--minutes", type=float, default=5.5, help="training loop time the steps are sized to")
    parser.add_argument("--deadline-minutes", type=float, default=8.5, help="no setting is sampled after this")
    parser.add_argument("--n", type=int, default=10000, help="samples per setting")
    parser.add_argument("--guidance-scales", type=float, nargs="*", default=[1.5, 1.0, 2.0, 3.0],
                        help="class-conditional settings, sampled in this order")  # fmt: skip
    parser.add_argument("--no-unconditional", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (generation_fid.py's default: 0)")
    parser.add_argument("--batch-size", type=int, default=2000, help="sampling batch")
    parser.add_argument("--work", default="/tmp/gpu-prior", help="the prior run's output_dir, emptied first")
    parser.add_argument("--dry-run", action="store_true", help="tiny prior, a few steps: a rehearsal on the CPU")
    parser.add_argument("--train-arg", action="append", default=[], help="extra key=value for prior/train.py")
    args = parser.parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if any(scale < 0 for scale in args.guidance_scales):
        parser.error(f"--guidance-scales must be >= 0, got {args.guidance_scales}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config_file = ROOT / ("configs/prior/tiny.yaml" if args.dry_run else args.config)
    settings = [f"tokenizer={args.tokenizer}", f"output_dir={args.work}", "log_with=none", *args.train_arg]
    if args.dry_run:  # the tiny prior, class-conditional as the recipe's
        settings.insert(1, "class_conditional=true")
    config = load_config(PriorTrainConfig, config_file, settings)
    tokenizer = load_tokenizer(args.tokenizer)
    grid = tokenizer.config.grid_size
    vocabulary = CodeVocabulary(tokenizer.config.codebook_size, grid, grid,
                                config.num_classes if config.class_conditional else 0)  # fmt: skip
    results = {"device": device_name(), "torch": torch.__version__, "dry_run": args.dry_run,
               "config": str(config_file.relative_to(ROOT)), "tokenizer": args.tokenizer,
               "tokenizer_id": tokenizer.identity(), "sampling": {}}  # fmt: skip

    def write() -> None:
        (out / "gpu_prior.json").write_text(json.dumps(results, indent=2))
        (out / "gpu_prior.md").write_text(markdown(results))

    # 1. Size the run: the steps that fit in --minutes at the measured step time.
    seconds = step_seconds(config, vocabulary, device, steps=2 if args.dry_run else 20)
    max_steps = config.max_steps if args.dry_run else steps_that_fit(
        seconds, args.minutes, config.max_steps, config.warmup_steps, round_to=500)  # fmt: skip
    results.update(probe_step_ms=round(1e3 * seconds, 2), max_steps=max_steps, recipe_max_steps=config.max_steps)
    write()

    # 2. Train (one process; the time limit is a guard that should not trigger), in an emptied
    # folder: a warm device machine keeps /tmp between calls, and an earlier run's metrics and
    # checkpoints must not mix into this one's.
    shutil.rmtree(args.work, ignore_errors=True)
    guard = [f"max_steps={max_steps}", f"checkpoint_every={max_steps}", f"time_limit_minutes={args.minutes + 1.5}"]
    command = [sys.executable, str(ROOT / "prior/train.py"), "--config", str(config_file), *settings, *guard]
    train_started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    results.update(train_minutes=round((time.monotonic() - train_started) / 60, 2), train_settings=settings[1:] + guard)
    results["curve"] = validation_curve(Path(args.work) / "metrics.jsonl")
    pipeline = Path(args.work) / "pipeline"
    if run.returncode != 0 or not pipeline.is_dir():
        results["train_error"] = (run.stderr or run.stdout)[-3000:]
        write()
        raise SystemExit(f"prior training did not finish: {results['train_error'][-500:]}")
    results["train_ms_per_step_with_startup"] = round(6e4 * results["train_minutes"] / max_steps, 2)
    results["final_bits_per_code"] = json.loads((pipeline / "pipeline_config.json").read_text())[
        "validation_bits_per_code"]  # fmt: skip
    write()

    # 3. Sample every setting's code grids from the trained pipeline.
    pipe = VQWAEPipeline.from_pretrained(pipeline).to(device)
    unconditional = [] if args.no_unconditional else [None]
    scales = unconditional  # a conditional prior: the headline scale first, the unconditional one, the rest
    if pipe.num_classes:
        scales = args.guidance_scales[:1] + unconditional + args.guidance_scales[1:]
    sample_settings(
        pipe, scales, args.n, args.seed, args.batch_size, out, started + 60 * args.deadline_minutes, results
    )
    results["total_minutes"] = round((time.monotonic() - started) / 60, 2)
    write()
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
