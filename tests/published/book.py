"""What the published-number tests read: README.md, the results book (BENCHMARKS.md: its summary
and sections), the history of the choices (docs/history.md) and the records the benchmarks wrote
(benchmarks/results/)."""

from __future__ import annotations

import json

from tests.helpers import ROOT

RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text()
BENCHMARKS = (ROOT / "BENCHMARKS.md").read_text()
HISTORY = (ROOT / "docs" / "history.md").read_text()
SUMMARY = BENCHMARKS.split("## Summary", 1)[1].split("\n## ", 1)[0]


def section(title: str) -> str:
    """The results book's section whose title (after its number, which moves when the book is
    reorganised) starts with `title`, heading line included."""
    for part in BENCHMARKS.split("\n## ")[1:]:
        heading = part.split("\n", 1)[0]
        if heading.split(". ", 1)[-1].startswith(title):
            return part
    raise KeyError(f"no BENCHMARKS.md section titled {title!r}")


def appendix(label: str) -> str:
    """docs/history.md's appendix `label` ("A16"), heading line included."""
    return HISTORY.split(f"## {label}. ", 1)[1].split("\n## ", 1)[0]


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def table(header: str) -> dict[str, list[str]]:
    """README table whose header row starts with `header`: {first cell: the other cells}, bold
    marks removed."""
    lines = README[README.index(f"| {header}") :].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("**", "") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def spread(stats: dict, values: list[float] | None = None, digits: int = 2) -> str:
    low, high = (min(values), max(values)) if values else (stats["min"], stats["max"])
    return f"{stats['mean']:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"
