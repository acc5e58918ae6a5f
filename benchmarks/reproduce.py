"""Reproduce the paper's MNIST rows (K = 512) with the embedded MNIST: VQ-WAE (our defaults) and
the VQ-VAE baseline with the same budget, scored on the 10k test split (MSE, PSNR, SSIM, rFID,
perplexity, codes used); then a prior on the VQ-WAE codes and its generation FID.

    python benchmarks/reproduce.py --budget cpu     # 1500 tokenizer steps, small prior: ~40 min on 2 CPU cores
    python benchmarks/reproduce.py --budget paper   # 100 epochs (156,250 steps): for a GPU

FID settings (stated with every figure): torch-fidelity inception-v3-compat, TF 2015-12-05
weights, `--fid-n` images against the first `--fid-n` images of mnist:test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CPU budget trains the quickstart's small prior (4 layers x 128, batch 32): the full
# configs/prior/mnist.yaml prior (6 x 256, batch 64) runs at ~1.5 s a step on 2 CPU cores.
SMALL_PRIOR = ["model.num_layers=4", "model.hidden_size=128", "model.num_heads=4", "batch_size=32"]
BUDGETS = {
    "cpu": {"tokenizer": 1500, "prior": 3000, "prior_overrides": SMALL_PRIOR},
    "paper": {"tokenizer": 156_250, "prior": 50_000, "prior_overrides": []},
}


def run(*command: str) -> str:
    print("$", " ".join(command), flush=True)
    return subprocess.run([sys.executable, *command], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def launch(script: str, config: str, *overrides: str) -> None:
    run("-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(os.cpu_count() or 1), script, "--config", config, *overrides)  # fmt: skip


def json_of(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{\n") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--output-dir", default="outputs/reproduce")
    parser.add_argument("--fid-n", type=int, default=1000)
    args = parser.parse_args()
    budget, output = BUDGETS[args.budget], Path(args.output_dir)
    results, started = {}, time.time()
    for name, config in (("VQ-WAE", "configs/tokenizer/mnist.yaml"), ("VQ-VAE", "configs/tokenizer/mnist-vqvae.yaml")):
        folder = output / name.lower()
        launch(
            "tokenizer/train.py", config, f"output_dir={folder}", f"max_steps={budget['tokenizer']}", "log_with=none"
        )
        test = json_of(run("-m", "tokenizer.evaluate", "--tokenizer", str(folder / "final"), "--split", "test"))
        rfid = json_of(run("-m", "tokenizer.evaluate", "--tokenizer", str(folder / "final"), "--split", "test", "--rfid",
                           "--max-batches", str(max(1, args.fid_n // 256)), "--batch-size", "256"))["rfid"]  # fmt: skip
        results[name] = {**test, "rfid": rfid}
    launch("prior/train.py", "configs/prior/mnist.yaml", f"output_dir={output / 'prior'}",
           f"tokenizer={output / 'vq-wae' / 'final'}", f"max_steps={budget['prior']}", "log_with=none",
           *budget["prior_overrides"])  # fmt: skip
    results["gFID"] = json_of(run("-m", "pipelines.fid", "--pipeline", str(output / "prior" / "pipeline"), "--n",
                                  str(args.fid_n), "--reference", "mnist:test", "--reference-n", str(args.fid_n)))  # fmt: skip
    results["minutes"] = (time.time() - started) / 60
    (output / "results.json").write_text(json.dumps(results, indent=2))
    print("| model | MSE | PSNR | SSIM | rFID | perplexity | codes used |")
    print("|---|---|---|---|---|---|---|")
    for name in ("VQ-VAE", "VQ-WAE"):
        row = results[name]
        print(f"| {name} | {row['mse']:.5f} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['rfid']['fid']:.2f} | "
              f"{row['perplexity']:.1f} | {row['codes_used']} |")  # fmt: skip
    print(
        f"\ngeneration FID: {results['gFID']['fid']:.2f} ({results['gFID']['n']} samples vs "
        f"{results['gFID']['reference_n']} {results['gFID']['reference']} images, {results['gFID']['extractor']})"
    )
    print(f"total: {results['minutes']:.1f} minutes")


if __name__ == "__main__":
    main()
