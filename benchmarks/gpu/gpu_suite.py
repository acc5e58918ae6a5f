"""The prepared device script: everything the GPU path needs measured, in one call of < 9 minutes.

    python -m benchmarks.gpu.gpu_suite --out $OUT [--run-from outputs/run-100ep] [--chunk-minutes 4]
    python -m benchmarks.gpu.gpu_suite --out /tmp/suite --dry-run    # the CPU rehearsal in the tests

Writes OUT/gpu_suite.json and OUT/gpu_suite.md:
1. host syncs: warm VQ-WAE and VQ-VAE training steps under torch.cuda.set_sync_debug_mode("error");
2. the CUDA-graph step (cuda_graph=true) replayed against the same step run eagerly, 20 steps on
   20 different batches, for both models, with cuDNN's deterministic kernels and a second eager
   run as the noise floor: losses within 1e-4, before anything is timed (every run's losses are
   in the JSON, to find where a replay departs);
3. step time side by side, VQ-VAE vs VQ-WAE (the models of configs/tokenizer/mnist-vqvae.yaml
   and mnist.yaml, batch 32): eager, the CUDA graph, torch.compile, and bf16 autocast for the backbone;
4. one resumable chunk of the paper's MNIST budget, 100 epochs = 156,250 steps of batch 32:
   tokenizer/train.py with time_limit_minutes, resumed from --run-from. The latest checkpoint
   (and the final model once finished, scored on the test split) comes back packed as
   OUT/run-100ep.tar, since files from the device come back at most two folders deep. Here:
   `mkdir -p outputs/run-100ep && tar -xf <files_at>/run-100ep.tar -C outputs/run-100ep`, then the
   next call carries outputs/run-100ep and passes --run-from outputs/run-100ep (between calls the
   folder can go on on the CPU: benchmarks/gpu/README.md).

Running it on a GPU machine, with or without network: benchmarks/gpu/README.md. rFID of a finished
run can be scored where the FID weights are: python -m tokenizer.evaluation --tokenizer
outputs/run-100ep/final --rfid.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import torch
import torch._inductor.config

from benchmarks.common import device_name, mnist_batch, time_side_by_side
from benchmarks.run_progress import loop_ms_per_step
from benchmarks.train_step import make_step
from infra.checkpointing import latest_step, list_checkpoints
from infra.config import load_config
from infra.metrics_file import read_metrics
from infra.step_graph import WARMUP_STEPS
from tokenizer.config import TokenizerTrainConfig

ROOT = Path(__file__).resolve().parents[2]
PAPER_STEPS = 156_250  # 100 epochs of 50,000 images at batch 32


def model_configs(dry_run: bool) -> dict:
    """The two models compared: the MNIST configs' (the tiny config's in a dry run)."""
    if dry_run:
        tiny = load_config(TokenizerTrainConfig, ROOT / "configs/tokenizer/tiny.yaml").model
        return {"VQ-VAE": load_config(TokenizerTrainConfig, ROOT / "configs/tokenizer/tiny.yaml",
                                      ["model.quantizer=vq"]).model, "VQ-WAE": tiny}  # fmt: skip
    return {
        "VQ-VAE": load_config(TokenizerTrainConfig, ROOT / "configs/tokenizer/mnist-vqvae.yaml").model,
        "VQ-WAE": load_config(TokenizerTrainConfig, ROOT / "configs/tokenizer/mnist.yaml").model,
    }


def batch_for(config, device: str, offset: int = 0) -> torch.Tensor:
    images = mnist_batch(32, offset)
    if images.shape[-1] != config.image_size:
        images = torch.nn.functional.interpolate(images, size=config.image_size, mode="bilinear", antialias=True)
    return images.to(device)


def host_sync_check(configs: dict, device: str) -> dict:
    """Per model: 'none' when two warm training steps ran under sync debug mode 'error'."""
    if device != "cuda":
        return {
            name: "skipped (no CUDA device; tests/test_gpu_path.py counts host reads on the CPU)" for name in configs
        }
    results = {}
    for name, config in configs.items():
        step = make_step(config, batch_for(config, device), device)
        step(), step()  # the first step draws the codebook and cold-starts Sinkhorn: it may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step(), step()
            results[name] = "none"
        except RuntimeError as error:
            results[name] = f"SYNC: {str(error).splitlines()[0][:300]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return results


GRAPH_STEPS, GRAPH_TOLERANCE = 20, 1e-4


def largest_gap(first: list[float], second: list[float]) -> float:
    """The largest step-by-step difference; NaN where either side has a non-finite loss (Python's
    max() would skip a NaN that is not first, and a check of NaN losses would pass on the rest)."""
    gaps = [abs(x - y) for x, y in zip(first, second)]
    return math.nan if not all(math.isfinite(gap) for gap in gaps) else max(gaps)


def graph_verdict(losses: dict[str, list[float]], tolerance: float = GRAPH_TOLERANCE) -> dict:
    """Replayed against the recorded step run eagerly: ok only when every loss of every run is
    finite and every step's difference is within `tolerance`."""
    eager = losses["recorded step run eagerly"]
    gaps = [abs(x - y) for x, y in zip(losses["replayed"], eager)]
    past = [index + 1 for index, gap in enumerate(gaps) if not gap <= tolerance]  # NaN counts as past
    finite = all(math.isfinite(value) for values in losses.values() for value in values)
    return {
        "steps": len(eager), "max_loss_difference": largest_gap(losses["replayed"], eager),
        "ok": finite and not past, "first_step_past_tolerance": past[0] if past else None,
        "all_losses_finite": finite,
        "eager_run_to_run": largest_gap(losses["recorded step run eagerly, again"], eager),
        "max_difference_to_default_eager": largest_gap(losses["replayed"], losses["default eager"]),
    }  # fmt: skip


def graph_check(configs: dict, device: str, steps: int = GRAPH_STEPS) -> dict:
    """Per model: the recorded step replayed against the same step (same weights, capturable
    fused Adam) run eagerly, on `steps` different batches, with cuDNN's deterministic kernels so
    that two eager runs agree and a difference is the graph's. Reports every run's losses, the
    largest replay-eager difference and whether it is within GRAPH_TOLERANCE, the first step past
    it, the eager run-to-run difference (the noise floor the tolerance assumes is ~0), and the
    difference to the default eager step (foreach Adam: another optimizer kernel, for information).
    The steps warm up and clip as the training loop does (make_step): without that the recipe's
    lr diverges within a few steps and the check compared NaN (VQ-WAE) or chaotic (VQ-VAE) losses."""
    results = {}
    runs = {
        "replayed": dict(cuda_graph=True),
        "recorded step run eagerly": dict(cuda_graph=True, replay=False),
        "recorded step run eagerly, again": dict(cuda_graph=True, replay=False),
        "default eager": {},
    }
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for name, config in configs.items():
            batches = [batch_for(config, device, offset=32 * index) for index in range(steps)]
            losses = {}
            for label, options in runs.items():  # one after another: each seeds, then draws its codebook
                step = make_step(config, batches[0], device, **options)
                losses[label] = torch.stack([step(batch).clone() for batch in batches]).tolist()
            # graph: False in the CPU rehearsal, which runs the recorded step eagerly.
            results[name] = graph_verdict(losses) | {"graph": device == "cuda", "losses": losses}
    return results


NO_LAYOUT = "compiled, layout_optimization off"
MODES = ("eager", "graph", "compiled", NO_LAYOUT, "bf16")


def step_times(configs: dict, device: str, rounds: int) -> dict:
    """Median ms per training step of every model x mode, measured in interleaved rounds."""
    modes = {mode: {"compile": True} if mode.startswith("compiled") else {} for mode in MODES}
    modes["bf16"] = {"autocast": torch.bfloat16}
    modes["graph"] = {"cuda_graph": True}
    steps = {
        f"{name}, {mode}": make_step(config, batch_for(config, device), device, **options)
        for name, config in configs.items()
        for mode, options in modes.items()
    }
    # The recipe with its OT solver compiled alone (model.transport.compile_solver), eager and graphed.
    solver = dataclasses.replace(configs["VQ-WAE"].transport, compile_solver=True)
    compiled_solver = dataclasses.replace(configs["VQ-WAE"], transport=solver)
    for mode in ("eager", "graph"):
        options = modes.get(mode, {})
        steps[f"VQ-WAE compiled solver, {mode}"] = make_step(compiled_solver, batch_for(compiled_solver, device), device, **options)
    failed = {}
    for label, step in list(steps.items()):
        # Inductor may turn convolutions channels-last, and on torch 2.11 CUDA the backward's fake
        # strides then mismatch (pytorch/pytorch#171622): one compiled mode runs without that.
        no_layout = label.endswith(NO_LAYOUT)
        context = torch._inductor.config.patch(layout_optimization=False) if no_layout else contextlib.nullcontext()
        try:  # a mode that fails here (a compiler error, say) is reported, the others still timed
            with context:
                for _ in range(WARMUP_STEPS + 1 if label.endswith("graph") else 1):
                    step()  # the first call compiles; a graph records after its warm-up calls
        except Exception as error:  # noqa: BLE001
            first_line = (str(error).splitlines() or [""])[0]
            failed[label] = f"failed: {type(error).__name__}: {first_line[:300]}"
            del steps[label]
    seconds = time_side_by_side(steps, rounds=rounds, device=device)
    return {label: 1e3 * value for label, value in seconds.items()} | failed


def run_chunk(out: Path, run_from: Path | None, minutes: float, dry_run: bool, train_args: list[str]) -> dict:
    """Advance the 100-epoch run by `minutes`, pack what the next call needs into run-100ep.tar."""
    folder = out / "run-100ep"
    if run_from is not None:
        if not run_from.is_dir():
            raise FileNotFoundError(f"--run-from {run_from}: no such folder (unpack run-100ep.tar there first)")
        shutil.copytree(run_from, folder)
    config, steps = ("configs/tokenizer/tiny.yaml", 12) if dry_run else ("configs/tokenizer/mnist.yaml", PAPER_STEPS)
    settings = [f"max_steps={steps}", f"output_dir={folder}", "resume=latest", f"time_limit_minutes={minutes}",
                "checkpoints_to_keep=1", "log_with=none"]  # fmt: skip
    if not dry_run:
        settings += ["checkpoint_every=10000", "validate_every=50000", "log_every=500"]
    start_step = latest_step(folder)  # read now: checkpoints_to_keep=1 deletes it during the chunk
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "tokenizer/train.py"), "--config", config, *settings, *train_args],
        capture_output=True, text=True, cwd=ROOT, timeout=60 * minutes + 180,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        return {"error": result.stderr[-3000:]}
    checkpoints, step = list_checkpoints(folder), latest_step(folder)
    summary = {"config": config, "settings": settings + train_args, "start_step": start_step, "step": step,
               "of": steps, "chunk_seconds": round(elapsed, 1), "finished": (folder / "final").is_dir(),
               "loop_ms_per_step": loop_ms_per_step(read_metrics(folder), start_step or 0)}  # fmt: skip
    if summary["finished"] and not dry_run:
        evaluation = subprocess.run(
            [sys.executable, "-m", "tokenizer.evaluation", "--tokenizer", str(folder / "final"), "--split", "test"],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        summary["test_metrics"] = evaluation.stdout if evaluation.returncode == 0 else evaluation.stderr[-2000:]
    with tarfile.open(out / "run-100ep.tar", "w") as tar:
        for path in [*checkpoints[-1:], folder / "metrics.jsonl", folder / "final"]:
            if path.exists():
                tar.add(path, arcname=str(path.relative_to(folder)))
    shutil.rmtree(folder)  # deeper than what comes back from the device; the tar holds it
    return summary


def chunk_mode(step_ms, graph_checked=None) -> list[str]:
    """The long run's step: cuda_graph=true when the replayed VQ-WAE step matched eager (graph
    check) and measured >= 10% faster; else compile=true when the compiled step did."""
    step_ms = step_ms if isinstance(step_ms, dict) else {}  # the section's error dict has no times
    graph_ok = isinstance(graph_checked, dict) and graph_checked.get("VQ-WAE", {}).get("ok") is True
    eager = step_ms.get("VQ-WAE, eager")
    for mode, setting, allowed in (("graph", "cuda_graph=true", graph_ok), ("compiled", "compile=true", True)):
        candidate = step_ms.get(f"VQ-WAE, {mode}")  # a string when it failed
        if allowed and isinstance(eager, float) and isinstance(candidate, float) and candidate < 0.9 * eager:
            return [setting]
    return []


def markdown(results: dict) -> str:
    lines = [f"# gpu_suite on {results['device']} (torch {results['torch']})", "", "## Host syncs in a warm step", ""]
    lines += [f"- {name}: {value}" for name, value in results.get("host_syncs", {}).items()]
    lines += ["", f"## CUDA graph replay against eager ({GRAPH_STEPS} steps, tolerance {GRAPH_TOLERANCE})", ""]
    for name, value in results.get("graph_check", {}).items():  # the loss lists stay in the JSON
        lines.append(f"- {name}: {value if isinstance(value, str) else {k: v for k, v in value.items() if k != 'losses'}}")
    times = results.get("step_ms", {})
    if "error" in times:
        lines += ["", "## Training step: failed", "", "```", times["error"], "```"]
    elif times:
        lines += ["", "## Training step, batch 32, side by side", "", "| model, mode | ms | ratio to VQ-VAE eager |",
                  "|---|---|---|"]  # fmt: skip
        base = times.get("VQ-VAE, eager")
        for label, value in times.items():
            ratio = f"{value / base:.2f}x" if isinstance(value, float) and isinstance(base, float) else ""
            lines.append(f"| {label} | {value if isinstance(value, str) else f'{value:.2f}'} | {ratio} |")
        for mode in MODES:
            ours, theirs = times.get(f"VQ-WAE, {mode}"), times.get(f"VQ-VAE, {mode}")
            if isinstance(ours, float) and isinstance(theirs, float):
                lines.append(f"\nVQ-WAE / VQ-VAE, {mode}: {ours / theirs:.2f}x")
    lines += ["", "## 100-epoch run chunk", ""]
    lines += ["```json", json.dumps(results.get("run_100ep", {}), indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_suite.json / .md and run-100ep.tar ($OUT)")
    parser.add_argument("--run-from", type=Path, default=None, help="unpacked run-100ep.tar of the last call")
    parser.add_argument("--chunk-minutes", type=float, default=5.0, help="most training time of the 100-epoch chunk")
    parser.add_argument("--deadline-minutes", type=float, default=8.3,
                        help="the whole suite's time: the chunk gets what the sections before it left")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--skip", nargs="*", default=[], choices=["syncs", "graph", "timing", "run"])
    parser.add_argument("--dry-run", action="store_true", help="tiny config, few rounds: a rehearsal on the CPU")
    parser.add_argument("--train-arg", action="append", default=[], help="extra key=value for the 100-epoch run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = model_configs(args.dry_run)
    rounds = 2 if args.dry_run else args.rounds
    results = {"device": device_name(), "torch": torch.__version__, "dry_run": args.dry_run, "host_syncs": {}}

    def section(key: str, compute) -> None:
        """One section: its result, or its error, is written out at once, so that a later
        failure or the call's time limit loses nothing measured before it."""
        try:
            results[key] = compute()
        except Exception:  # noqa: BLE001 - a device run must report every section it can
            results[key] = {"error": traceback.format_exc()[-3000:]}
        results.setdefault("section_seconds", {})[key] = round(time.monotonic() - started, 1)
        (out / "gpu_suite.json").write_text(json.dumps(results, indent=2))
        (out / "gpu_suite.md").write_text(markdown(results))

    if "syncs" not in args.skip:
        section("host_syncs", lambda: host_sync_check(configs, device))
    if "graph" not in args.skip:
        section("graph_check", lambda: graph_check(configs, device, 3 if args.dry_run else GRAPH_STEPS))
    if "timing" not in args.skip:
        section("step_ms", lambda: step_times(configs, device, rounds))
    if "run" not in args.skip:
        left = args.deadline_minutes - (time.monotonic() - started) / 60 - 1.5  # start-up, checkpoint, tar
        minutes = 1e-9 if args.dry_run else max(0.5, min(args.chunk_minutes, left))  # dry run: first log step
        train_args = list(args.train_arg)
        if not args.dry_run:
            mode = chunk_mode(results.get("step_ms"), results.get("graph_check"))
            train_args = ["data.num_workers=4", *mode, *train_args]
        section("run_100ep", lambda: run_chunk(out, args.run_from, minutes, args.dry_run, train_args))
    print(markdown(results))


if __name__ == "__main__":
    main()
