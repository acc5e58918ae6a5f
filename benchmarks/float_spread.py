"""How far each float check of the suite moves across CPU kernels and threads, side by side.

    python -m benchmarks.float_spread --out benchmarks/results/float-spread-2026-12-03.json

Runs the float checks (`pytest -m cpu_kernels`, tests/cpu_kernels.py) once for every kernel
setting (VQWAE_CPU_KERNELS: native, generic, avx2, avx512) at 1 and 2 threads, each check writing
what it compared. Reports, per check, the largest deviation of the same computation over all
settings (what a tolerance must hold), the deviation of the change the check guards (what it must
stay below), and the tolerance the test states now; a tolerance under 3x the spread, or not under
the guarded change, is flagged. The machine (CPU model, vector extensions, torch) is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from infra.config import provenance
from infra.files import write_record
from tests.cpu_kernels import KERNELS, RECORD, SWITCH, machine

ROOT = Path(__file__).resolve().parent.parent
MARGIN = 3.0  # a tolerance holds at least this multiple of the spread measured here (other CPUs)


def run_checks(setting: str, threads: int, select: list[str]) -> tuple[list[dict], int]:
    """The float checks under one kernel setting and thread count: (their records, pytest's code)."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, SWITCH: setting, "OMP_NUM_THREADS": str(threads), RECORD: folder}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cpu_kernels", *select]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        records = [json.loads(path.read_text()) for path in sorted(Path(folder).glob("*.json"))]
    print(f"{setting:8s} {threads} thread(s): {len(records)} comparisons, pytest exit {result.returncode}")
    return records, result.returncode


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per check: the spread over settings, the guarded change's smallest deviation, the verdict."""
    checks = defaultdict(lambda: {"deviations": {}})
    for run, records in runs.items():
        for record in records:
            check = checks[f"{record['test']}::{record['name']}"]
            check.update(kind=record["kind"], tolerance=record["tolerance"])
            check["deviations"][run] = record["deviation"]
    for check in checks.values():
        worst = max(check["deviations"].values())
        if check["kind"] == "same computation":
            check["spread"] = worst
            check["ok"] = worst * MARGIN <= check["tolerance"]
        else:
            check["smallest"] = min(check["deviations"].values())
            check["ok"] = check["smallest"] > check["tolerance"]
    return dict(sorted(checks.items()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--select", nargs="*", default=["tests"], help="pytest paths or node ids (default: tests)")
    parser.add_argument("--out", type=Path, help="write the record here (refused if it exists)")
    args = parser.parse_args(argv)
    if args.out and args.out.exists():
        raise SystemExit(f"error: {args.out} exists; choose another --out (records are never overwritten)")
    runs, exits = {}, {}
    for setting in args.settings:
        for threads in args.threads:
            name = f"{setting}, {threads} thread{'s' if threads > 1 else ''}"
            runs[name], exits[name] = run_checks(setting, threads, args.select)
    checks = summarise(runs)
    for name, check in checks.items():
        measured = f"spread {check['spread']:.2g}" if "spread" in check else f"guarded change {check['smallest']:.2g}"
        flag = "" if check["ok"] else "   <-- tolerance not justified"
        print(f"{name}\n    {measured}, tolerance {check['tolerance']:.2g}{flag}")
    record = {**provenance("benchmarks.float_spread", argv), "machine": machine(), "margin": MARGIN,
              "settings": {name: {**KERNELS[name.split(",")[0]]} for name in runs}, "pytest_exit": exits,
              "checks": checks}  # fmt: skip
    if args.out:
        write_record(args.out, record)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
