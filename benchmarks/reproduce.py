"""Reproduce the paper's MNIST rows (K = 512) with the embedded MNIST: VQ-WAE (our defaults) and
the VQ-VAE baseline with the same budget, scored on the 10k test split (MSE, PSNR, SSIM, rFID,
perplexity, codes used); then a prior on the VQ-WAE codes and its generation FID.

    python benchmarks/reproduce.py --budget cpu     # 1500 tokenizer steps, small prior: ~40 min on 2 CPU cores
    python benchmarks/reproduce.py --budget paper   # 100 epochs (156,250 steps): for a GPU
    python benchmarks/reproduce.py --codebook-sizes 64 128 256 512   # the paper's Table 2 (K sweep)

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


def score_tokenizer(folder: Path, fid_n: int) -> dict:
    """Test-split metrics of a trained tokenizer, with rFID on its first `fid_n` test images."""
    return json_of(run("-m", "tokenizer.evaluate", "--tokenizer", str(folder / "final"), "--split", "test", "--rfid",
                       "--rfid-n", str(fid_n)))  # fmt: skip


def row(name: str, metrics: dict) -> str:
    return (f"| {name} | {metrics['mse']:.5f} | {metrics['psnr']:.2f} | {metrics['ssim']:.3f} | "
            f"{metrics['rfid']['fid']:.2f} | {metrics['perplexity']:.1f} | {metrics['codes_used']} |")  # fmt: skip


def codebook_sweep(sizes: list[int], budget: dict, output: Path, fid_n: int) -> None:
    """The paper's Table 2 for MNIST: VQ-WAE (our defaults) at each codebook size K."""
    results = {}
    for size in sizes:
        folder = output / f"vq-wae-k{size}"
        launch("tokenizer/train.py", "configs/tokenizer/mnist.yaml", f"output_dir={folder}",
               f"max_steps={budget['tokenizer']}", f"model.codebook_size={size}", "log_with=none")  # fmt: skip
        results[size] = score_tokenizer(folder, fid_n)
    (output / "codebook_sweep.json").write_text(json.dumps(results, indent=2))
    print("| K | MSE | PSNR | SSIM | rFID | perplexity | codes used |")
    print("|---|---|---|---|---|---|---|")
    for size, metrics in results.items():
        print(row(str(size), metrics))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--output-dir", default="outputs/reproduce")
    parser.add_argument("--fid-n", type=int, default=1000)
    parser.add_argument("--codebook-sizes", type=int, nargs="+", default=None,
                        help="run only the codebook-size sweep (the paper's Table 2), e.g. 64 128 256 512")  # fmt: skip
    args = parser.parse_args()
    budget, output = BUDGETS[args.budget], Path(args.output_dir)
    if args.codebook_sizes:
        return codebook_sweep(args.codebook_sizes, budget, output, args.fid_n)
    results, started = {}, time.time()
    for name, config in (("VQ-WAE", "configs/tokenizer/mnist.yaml"), ("VQ-VAE", "configs/tokenizer/mnist-vqvae.yaml")):
        folder = output / name.lower()
        launch(
            "tokenizer/train.py", config, f"output_dir={folder}", f"max_steps={budget['tokenizer']}", "log_with=none"
        )
        results[name] = score_tokenizer(folder, args.fid_n)
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
        print(row(name, results[name]))
    print(
        f"\ngeneration FID: {results['gFID']['fid']:.2f} ({results['gFID']['n']} samples vs "
        f"{results['gFID']['reference_n']} {results['gFID']['reference']} images, {results['gFID']['extractor']})"
    )
    print(f"total: {results['minutes']:.1f} minutes")


if __name__ == "__main__":
    main()
