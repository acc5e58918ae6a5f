"""benchmarks/kept_memory.py on the smallest setting: a record of both settings per workload."""

import json
import sys

import pytest

from benchmarks import kept_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_both_settings_run_in_fresh_processes_and_the_record_holds_them(tmp_path):
    out = tmp_path / "kept.json"
    kept_memory.main(["--repeats", "1", "--steps", "2", "--workloads", "tokenizer update", "--out", str(out)])
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    assert row["workload"] == "tokenizer update" and row["steps"] == 2
    assert [[run["kept"] for run in runs] for runs in row["runs"].values()] == [[False], [True]]
    assert row["speedup"] == pytest.approx(row["defaults_ms"] / row["kept_ms"])
    assert row["kept_faults"] == row["runs"]["kept"][0]["faults"] >= 0
    # No fault counts compared: whether glibc's defaults fault in two steps depends on how its
    # adaptive thresholds settle (they need not); tests/infra/test_allocator.py checks the setting.
