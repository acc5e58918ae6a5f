"""The whole job on the embedded MNIST with a small budget (`make quickstart`):

1. train the tokenizer (configs/tokenizer/mnist.yaml, the recipe, 1500 steps),
2. train a small prior on its codes (configs/prior/mnist.yaml at 4 layers x 128, no dropout, 2000 steps); at
   its end a sweep on the validation split chooses the pipeline's default sampling settings,
3. sample 16 unconditional images into a PNG grid, and a 10 x 10 class grid (one row per digit),
   with those settings,
4. judge samples with a digit classifier (the share of class-conditional samples read as the
   asked digit, the share of unconditional ones recognisable) and score FID of the judged
   unconditional samples against the MNIST test split (a modest count, stated),
then print where everything is. Everything lands in outputs/quickstart/ (`--output-dir`); an
earlier quickstart there is first moved to outputs/quickstart.previous-N (nothing is deleted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from infra.config import CommandLine, check_arguments, run_cli
from infra.files import write_record
from infra.metrics_file import read_metrics
from infra.run_folder import lock_folder, move_aside
from pipelines import sample
from pipelines.evaluation import evaluate_samples
from pipelines.pipeline_vqwae import VQWAEPipeline

ROOT = Path(__file__).resolve().parent.parent


# A small prior so the whole job takes about 10 minutes on 2 CPU cores, chosen with
# `python -m benchmarks.prior_recipe --judge-per-class 50` on the quickstart tokenizer's codes
# (docs/history.md, "How the quickstart's prior and sampling defaults were chosen"): 4 layers x 128,
# batch 32, lr 1e-3, fp32 gave 97.8% class accuracy (worst class 92%) against 92.2% (76%) at lr 6e-4;
# 6 x 192 in bf16 (500 steps in the same minutes) 78.2%; bf16 is no faster at this size (0.91x).
# Without dropout (about one pass over the codes: little to overfit) 1500 steps took 3.0 minutes against
# 5.3 (drawing dropout's masks is slow on the CPU), so 2000 steps take less time than 1500 with
# dropout did and read as well (docs/history.md, "The quickstart's prior without dropout":
# 4.539 bits per code against 4.849; 97.6% against 97.8% of class samples the asked digit, 100 a class,
# worst class 95% against 93%).
# Its validations read 8 batches (2,048 sequences, as the tokenizer's), not all 10,000: 0.8 s each
# instead of 3.6, with the same trained weights (how many batches a validation reads draws nothing
# from the training's random numbers: one sha256 after 60 steps with 2 batches and with all).
PRIOR_OVERRIDES = ("model.num_layers=4", "model.hidden_size=128", "model.num_heads=4", "batch_size=32",
                   "learning_rate=0.001", "mixed_precision=no", "model.dropout=0.0", "validation_batches=8")  # fmt: skip


def launch(script: str, config: str, *overrides: str) -> None:
    """`accelerate launch SCRIPT --config CONFIG overrides...`, as a user would type it."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(os.cpu_count() or 1), script, "--config", config, *overrides]  # fmt: skip
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--tokenizer-steps", type=int, default=1500)
    parser.add_argument("--prior-steps", type=int, default=2000)
    parser.add_argument("--fid-samples", type=int, default=500)
    parser.add_argument("--judge-per-class", type=int, default=50, help="class-conditional samples a digit, judged")
    parser.add_argument("--judge-unconditional", type=int, default=500, help="unconditional samples judged")
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"tokenizer_steps": 1, "prior_steps": 1, "fid_samples": 0, "judge_per_class": 0,
                                    "judge_unconditional": 0})  # fmt: skip
    output = Path(args.output_dir)
    started = time.time()
    # The folder is this quickstart's alone; an earlier quickstart there is moved aside, not deleted.
    claim = lock_folder(output)
    if earlier := [name for name in ("tokenizer", "prior", "summary.json") if (output / name).exists()]:
        moved = move_aside(output)  # under the lock
        claim = lock_folder(output)
        print(f"{output} held an earlier quickstart ({', '.join(earlier)}): moved to {moved}; starting afresh")

    # 1. Stage one: the tokenizer.
    launch("tokenizer/train.py", "configs/tokenizer/mnist.yaml", f"output_dir={output / 'tokenizer'}",
           f"max_steps={args.tokenizer_steps}", "validation_batches=8", "log_with=none")  # fmt: skip
    # 2. Stage two: the prior, which also writes the pipeline folder.
    launch("prior/train.py", "configs/prior/mnist.yaml", f"output_dir={output / 'prior'}",
           f"tokenizer={output / 'tokenizer' / 'final'}", f"max_steps={args.prior_steps}", "log_with=none",
           *PRIOR_OVERRIDES)  # fmt: skip
    pipeline_dir = output / "prior" / "pipeline"

    # 3. Sample 16 images into a grid.
    #    Both with the sampling settings the prior's validation sweep chose (the pipeline's defaults).
    grid = sample.main(["--pipeline", str(pipeline_dir), "--n", "16", "--out", str(output / "samples.png")])
    class_grid = sample.main(["--pipeline", str(pipeline_dir), "--per-class", "10",
                              "--out", str(output / "class_grid.png")])  # fmt: skip
    # 4. What a person would see: a digit classifier's verdict (class accuracy, recognisable share),
    #    and FID of the judged unconditional samples against the MNIST test split.
    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    digits = evaluate_samples(pipe, per_class=args.judge_per_class, num_unconditional=args.judge_unconditional,
                              fid_n=args.fid_samples)  # fmt: skip
    score = digits.pop("gfid", None)

    tokenizer_metrics = read_metrics(output / "tokenizer")
    final_validation = [row for row in tokenizer_metrics if "validation/psnr" in row][-1]
    summary = {
        "tokenizer": str(output / "tokenizer" / "final"),
        "tokenizer_validation": {key.split("/")[1]: value for key, value in final_validation.items() if "/" in key},
        "pipeline": str(pipeline_dir),
        "samples": grid,
        "class_grid": {"path": class_grid, "per_class": 10},
        "sampling_defaults": pipe.sampling_defaults,
        "digits": digits,
        "fid": score,
        "minutes": round((time.time() - started) / 60, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    write_record(output / "summary.json", summary, "the quickstart's summary")
    print("\n" + json.dumps(summary, indent=2))
    if score:
        print(f"\ngFID {score['fid']:.2f} on {score['n']} unconditional samples vs {score['reference_n']} "
              f"{score['reference']} images (small-sample FID runs high: compare only at equal counts)")  # fmt: skip
    if "class_conditional" in digits:
        judged = digits["class_conditional"]
        print(f"class-conditional: {judged['accuracy']:.1%} of {judged['samples']} samples judged the asked digit "
              f"(worst class {judged['worst_class']:.1%})", end="; ")  # fmt: skip
    print(f"unconditional: {digits['unconditional']['recognisable']:.1%} recognisable (confidence >= 0.9) by a "
          f"digit classifier with {digits['classifier_test_accuracy']:.2%} test accuracy; sampling "
          f"{pipe.sampling_defaults or 'temperature 1, no top-k, no guidance'}")  # fmt: skip
    print(f"Load it: VQWAEPipeline.from_pretrained({str(pipeline_dir)!r})(n=16).images")
    claim.release()
    return summary


if __name__ == "__main__":
    run_cli(main)
