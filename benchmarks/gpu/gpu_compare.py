"""The prepared device script for tokenizer comparisons: benchmarks/compare_tokenizers.py on a lent
GPU within a deadline, every run brought back in one tar the device can return.

    python -m benchmarks.gpu.gpu_compare --out $OUT --deadline-minutes 7 -- \\
        --steps 15625 --seeds 0 --parallel 4 \\
        --variant vq-wae configs/tokenizer/mnist.yaml data.num_workers=2 \\
        --variant fsq configs/tokenizer/mnist-fsq.yaml data.num_workers=2

Everything after `--` goes to compare_tokenizers.py, which trains into --work (default
outputs/gpu-compare), stops every run at the deadline with a checkpoint, and scores the finished
ones there (no rFID: the FID weights stay here). Then each run folder is packed as
OUT/<variant>-seed-<s>.tar (files come back from the device at most two folders deep and 16 MiB
a file): a finished run's final model, metrics and scores; an unfinished run's newest checkpoint
and metrics, which is all a resume needs. OUT/gpu_compare.json says which is which.

Here, after the call: unpack every tar into the same --work folder and run compare_tokenizers.py
with the same variants and --out: it skips the finished runs (training), resumes the unfinished
ones on this machine, and scores all of them with rFID:
    for t in <files_at>/*.tar; do tar -xf $t -C outputs/gpu-compare; done
Running it on a GPU machine, with or without network: benchmarks/gpu/README.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
import traceback
from pathlib import Path

from benchmarks import compare_tokenizers
from benchmarks.common import device_name
from infra.checkpointing import latest_step, list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
TAR_LIMIT = 16 * 2**20  # bytes a file coming back from the device may have


def pack_run(run: Path, work: Path, out: Path) -> dict:
    """Pack what a run needs here (final model, or newest checkpoint) as OUT/<variant>-seed-<s>.tar,
    paths relative to `work` so that unpacking into the same folder puts it back."""
    finished = compare_tokenizers.is_trained(run)
    checkpoints = list_checkpoints(run)
    keep = [run / "final"] if finished else checkpoints[-1:]
    keep += [path for path in [run / "metrics.jsonl", *run.glob("result-*.json")] if path.is_file()]
    tar_path = out / f"{run.parent.name}-{run.name}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path in keep:
            tar.add(path, arcname=str(path.relative_to(work)))
        log = run / "train.log"
        if log.is_file():  # tqdm's carriage returns make the log long; its end says how the run ended
            data = log.read_bytes()[-20_000:]
            info = tarfile.TarInfo(str(log.relative_to(work)))
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    if tar_path.stat().st_size > TAR_LIMIT:
        raise RuntimeError(f"{tar_path} is {tar_path.stat().st_size} bytes, over what the device returns")
    return {"tar": tar_path.name, "finished": finished, "newest_checkpoint_step": latest_step(run)}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    ours, theirs = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for the tars and gpu_compare.json ($OUT)")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs/gpu-compare", help="compare_tokenizers' --out")
    parser.add_argument("--deadline-minutes", type=float, default=7.0, help="training stops here, with checkpoints")
    args = parser.parse_args(ours)
    if not theirs:
        parser.error("give compare_tokenizers.py's arguments after `--` (--variant ..., --steps ..., --seeds ...)")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    compare_args = [*theirs, "--out", str(args.work), "--deadline-minutes", str(args.deadline_minutes)]
    compare_args += ["--rfid-n", "0", "--timing-rounds", "0"]
    summary = {"device": device_name(), "compare_args": theirs, "deadline_minutes": args.deadline_minutes}
    try:  # whatever happens to the comparison, every run that has something to bring back is packed
        report = compare_tokenizers.main(compare_args)
        summary["unfinished"] = report.get("unfinished", [])
    except BaseException:  # noqa: BLE001 - SystemExit of a bad argument included: report it, pack the rest
        summary["error"] = traceback.format_exc()[-4000:]
    summary["seconds"] = round(time.monotonic() - started, 1)
    runs = sorted(path.parent for path in args.work.glob("*/seed-*/metrics.jsonl"))
    summary["runs"] = {f"{run.parent.name}/{run.name}": pack_run(run, args.work, args.out) for run in runs}
    if (args.work / "results.json").is_file():
        (args.out / "results.json").write_text((args.work / "results.json").read_text())
    (args.out / "gpu_compare.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({key: value for key, value in summary.items() if key != "error"}, indent=2))
    if "error" in summary:
        print(summary["error"], file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
