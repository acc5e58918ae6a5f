"""The docs a newcomer reads: every relative link and #anchor in README.md, BENCHMARKS.md and
docs/*.md resolves (GitHub's heading slugs), the README stays short and the benchmark summary on
one screen, and nothing points at what a reader of the repository cannot see."""

import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_slug_matches_github():
    assert slug("## 1. Tokenizers against the baselines, 1500 steps, 3 seeds".lstrip("#")) == (
        "1-tokenizers-against-the-baselines-1500-steps-3-seeds"
    )
    assert slug(" A4. Reproduction of the paper's MNIST rows (K = 512)") == "a4-reproduction-of-the-papers-mnist-rows-k--512"
    assert slug(" 5. The GPU prior on one H100 (torch 2.11.0+cu130)") == "5-the-gpu-prior-on-one-h100-torch-2110cu130"


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.name)
def test_a_numbered_link_names_the_number_of_its_section(path):
    """`[3](#3-...)`, `[section 3](BENCHMARKS.md#3-...)`: when the book is renumbered, the words of a
    link must move with its anchor, or the reader is sent to one section by the number of another."""
    links = re.findall(r"\[(?:section )?(\d+)\]\((?:[^)#\s]*)#(\d+)-", path.read_text())
    wrong = [f"[{label}] -> #{number}-" for label, number in links if label != number]
    assert not wrong, f"{path.name}: " + "; ".join(wrong)


@pytest.mark.parametrize("path", DOCS, ids=lambda path: path.name)
def test_no_references_a_reader_cannot_follow(path):
    text = path.read_text()
    for pattern in (r"\bissue \d+", r"PAPER\.md", r"\bthis session\b", r"\btoday\b"):
        found = re.findall(rf".{{0,40}}{pattern}.{{0,40}}", text, flags=re.I)
        assert not found, f"{path.name} mentions {pattern!r}: {found[:3]}"


def test_readme_is_short_and_benchmarks_open_with_a_summary():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    assert len(benchmarks.splitlines()) <= 440  # the current results; the history of the choices is docs/history.md
    summary = benchmarks.split("\n## Summary\n", 1)[1].split("\n## ", 1)[0]
    assert 5 <= len(summary.strip().splitlines()) <= 40
    # Every summary row names a command and links to the section that measured it.
    rows = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| result")]
    assert rows and all("`" in row and "](#" in row for row in rows)
