"""Prior recipes against CPU minutes: train each named prior variant (a config plus overrides,
each with its own max_steps) on one tokenizer's codes and report its validation bits per code
against the wall minutes it took, with the validation curve. Variants that differ only in
`mixed_precision` are compared curve against curve. With `--judge-per-class N`, each finished
pipeline is also judged at the sampling defaults its validation sweep chose (the digit classifier's
class accuracy on N samples a digit, and the recognisable share of as many unconditional ones):
what a person sees, beside bits per code.

    python -m benchmarks.prior_recipe --out outputs/prior-recipe \
        --tokenizer outputs/compare-10ep/vq-wae-relax1/seed-0/final \
        --variant 4x128-fp32 configs/prior/mnist.yaml model.num_layers=4 model.hidden_size=128 max_steps=1000 \
        --variant 4x128-bf16 configs/prior/mnist.yaml model.num_layers=4 model.hidden_size=128 max_steps=1000 \
            mixed_precision=bf16

Every run trains with `prior/train.py` into OUT/NAME (a finished run is skipped on a rerun, an
interrupted one resumes); all runs share one code cache (OUT/codes), so the tokenizer encodes the
data once. Runs go one after another, so their minutes compare (set OMP_NUM_THREADS to pin the
threads); `wall minutes` is the whole `prior/train.py` process (start-up, validation and the
sampling sweep included). Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

from benchmarks.compare_tokenizers import add_variant_argument, parse_variants
from infra.config import load_config
from infra.metrics_file import read_metrics
from pipelines.pipeline_vqwae import PIPELINE_CONFIG
from prior.config import PriorTrainConfig

ROOT = Path(__file__).resolve().parent.parent
WALL = "wall.json"  # seconds the run's `prior/train.py` process took, written when it ends
JUDGED = "judged.json"


def run_overrides(folder: Path, tokenizer: str) -> list[str]:
    return [f"output_dir={folder}", f"tokenizer={tokenizer}", "resume=latest", "log_with=none"]


def train(config: str, overrides: list[str], folder: Path, tokenizer: str, codes: Path) -> None:
    """`prior/train.py` into `folder` unless it has finished, reading the shared code cache."""
    if (folder / "final" / "config.json").is_file():
        print(f"{folder}: already trained", flush=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    codes.mkdir(parents=True, exist_ok=True)
    if not (folder / "codes").exists():
        (folder / "codes").symlink_to(codes.resolve(), target_is_directory=True)
    command = [sys.executable, str(ROOT / "prior" / "train.py"), "--config", config, *overrides,
               *run_overrides(folder, tokenizer)]  # fmt: skip
    print(f"training {folder}", flush=True)
    resumed, started = (folder / "checkpoints").exists(), time.time()
    with open(folder / "train.log", "a") as log:
        process = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log)
    if process.returncode != 0:
        tail = (folder / "train.log").read_text()[-2000:]
        raise RuntimeError(f"training {folder} failed (exit {process.returncode}); end of its log:\n{tail}")
    # A resumed run's wall time would cover only its last part: none is recorded (the table shows -).
    if not resumed:
        (folder / WALL).write_text(json.dumps({"seconds": time.time() - started}))


def judge(folder: Path, per_class: int) -> dict:
    """The digit classifier's verdict on the run's pipeline at its default sampling (cached in the
    run folder, so a rerun does not sample again)."""
    cached = folder / JUDGED
    saved = json.loads(cached.read_text()) if cached.is_file() else None
    if saved is not None and saved["per_class"] == per_class:
        return saved
    from pipelines.evaluation import evaluate_samples
    from pipelines.pipeline_vqwae import VQWAEPipeline

    verdict = evaluate_samples(VQWAEPipeline.from_pretrained(folder / "pipeline"), per_class=per_class,
                               num_unconditional=10 * per_class)  # fmt: skip
    result = dict(
        per_class=per_class, sampling=verdict["sampling_defaults"],
        class_accuracy=verdict.get("class_conditional", {}).get("accuracy"),
        worst_class=verdict.get("class_conditional", {}).get("worst_class"),
        recognisable=verdict["unconditional"]["recognisable"],
    )  # fmt: skip
    cached.write_text(json.dumps(result, indent=2))
    return result


def read_run(folder: Path, config: PriorTrainConfig) -> dict:
    """Validation curve, final bits per code, training minutes (first to last log line) and size."""
    logs = read_metrics(folder)
    curve = {log["step"]: log["validation/bits_per_code"] for log in logs if "validation/bits_per_code" in log}
    final = json.loads((folder / "pipeline" / PIPELINE_CONFIG).read_text())
    with safe_open(str(folder / "final" / "model.safetensors"), "pt") as weights:
        parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return dict(
        layers=config.model.num_layers, hidden=config.model.hidden_size, batch_size=config.batch_size,
        learning_rate=config.learning_rate, steps=config.max_steps, mixed_precision=config.mixed_precision,
        parameters=parameters,
        minutes=(logs[-1]["time"] - logs[0]["time"]) / 60, bits_per_code=final["validation_bits_per_code"],
        curve=curve, label_dropout=config.label_dropout if config.class_conditional else None,
        wall_minutes=json.loads((folder / WALL).read_text())["seconds"] / 60 if (folder / WALL).is_file() else None,
    )  # fmt: skip


def precision_pairs(results: dict) -> dict:
    """For each bf16 run with an fp32 twin (same everything else), the largest gap between their
    validation curves (bits per code) and the speed-up in minutes."""
    pairs = {}
    for name, run in results.items():
        if run["mixed_precision"] != "bf16":
            continue
        same = ("layers", "hidden", "batch_size", "learning_rate", "steps")
        for other, twin in results.items():
            if twin["mixed_precision"] == "no" and all(twin[key] == run[key] for key in same):
                steps = sorted(set(run["curve"]) & set(twin["curve"]))
                gaps = [run["curve"][step] - twin["curve"][step] for step in steps]
                pairs[name] = dict(fp32=other, steps=steps, largest_gap=max(gaps, key=abs) if gaps else None,
                                   speedup=twin["minutes"] / run["minutes"])  # fmt: skip
    return pairs


def markdown(results: dict, pairs: dict, threads: str) -> str:
    lines = [
        f"CPU, OMP_NUM_THREADS={threads}; minutes = wall time of the training loop (validations included); "
        "wall = the whole prior/train.py process (with the sampling sweep)",
        "",
        "| variant | layers x hidden | batch | lr | steps | precision | minutes | wall | validation bits per code "
        "| class accuracy (worst) | recognisable | sampling | curve |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results.items():
        curve = ", ".join(f"{bits:.3f}" for _, bits in sorted(run["curve"].items()))
        wall = f"{run['wall_minutes']:.1f}" if run["wall_minutes"] is not None else "-"
        judged = run.get("judged")
        if judged is None:
            verdict = "| - | - | - |"
        else:
            accuracy = (
                "-"
                if judged["class_accuracy"] is None
                else f"{judged['class_accuracy']:.1%} ({judged['worst_class']:.0%})"
            )
            sampling = ", ".join(f"{key} {value}" for key, value in judged["sampling"].items()) or "library defaults"
            verdict = f"| {accuracy} | {judged['recognisable']:.1%} | {sampling} |"
        lines.append(
            f"| {name} | {run['layers']} x {run['hidden']} | {run['batch_size']} | {run['learning_rate']:g} | "
            f"{run['steps']} | {run['mixed_precision']} | {run['minutes']:.1f} | {wall} | {run['bits_per_code']:.3f} "
            f"{verdict} {curve} |"
        )
    for name, pair in pairs.items():
        lines.append(
            f"\n{name} against {pair['fp32']}: {pair['speedup']:.2f}x faster; largest validation gap "
            f"{pair['largest_gap']:+.3f} bits per code over steps {pair['steps']}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variant_argument(parser)
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder or Hub id whose codes every prior models")
    parser.add_argument("--out", default="outputs/prior-recipe")
    parser.add_argument("--judge-per-class", type=int, default=0,
                        help="> 0: judge each pipeline with the digit classifier on this many samples a class "
                             "(and ten times as many unconditional ones); 1 x 32 x 32 digit tokenizers only")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variant, [f"tokenizer={args.tokenizer}"], PriorTrainConfig)
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.out)

    # 1. Train every variant that has not finished, one after another.
    for name, (config, overrides) in variants.items():
        train(config, overrides, out / name, args.tokenizer, out / "codes")

    # 2. Read each run back and compare bf16 runs with their fp32 twins.
    results = {}
    for name, (config, overrides) in variants.items():
        run = load_config(PriorTrainConfig, config, [*overrides, *run_overrides(out / name, args.tokenizer)])
        results[name] = read_run(out / name, run)
        if args.judge_per_class:
            results[name]["judged"] = judge(out / name, args.judge_per_class)
    pairs = precision_pairs(results)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    report = dict(tokenizer=args.tokenizer, threads=threads, variants={k: [v[0], *v[1]] for k, v in variants.items()},
                  runs=results, precision_pairs=pairs)  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown(results, pairs, threads)
    (out / "results.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
