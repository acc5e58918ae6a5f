"""The quickstart's numbers in README.md, BENCHMARKS.md (its summary row and section) and
docs/history.md A16, against the records of its fresh-clone runs (benchmarks/results/quickstart-*)."""

from __future__ import annotations

import json

from tests.published import book
from tests.published.book import README, SUMMARY, appendix, load

QUICKSTART = "quickstart-fresh-clones-fb57b24.json"  # the current quickstart's clones
QUICKSTART_BEFORE = tuple(f"quickstart-fresh-clones-{commit}.json" for commit in ("8a21da6", "f7d23c5", "5417afd", "4166b7a"))


def make_minutes(runs: list[dict]) -> str:
    """The range of `make quickstart`'s wall-clock minutes (what a user waits, imports included)."""
    seconds = sorted(run["make_quickstart_seconds"] for run in runs)
    low, high = f"{seconds[0] / 60:.1f}", f"{seconds[-1] / 60:.1f}"
    return low if low == high else f"{low}-{high}"


def span(runs: list[dict], key: str) -> str:
    """The range of one per-run figure (seconds) over runs, in whole units: "low-high"."""
    values = sorted(run[key] for run in runs)
    return f"{values[0]:.0f}-{values[-1]:.0f}"


def quickstart(name: str = QUICKSTART) -> dict[str, str]:
    """The fresh-clone quickstart runs of one commit: their minutes, the install, and the judged
    figures, which every run shares (the record's runs trained the same weights bit for bit)."""
    record = load(name)
    runs = record["runs"]
    assert len(runs) >= 3 and len({json.dumps(run["weights_sha256"], sort_keys=True) for run in runs}) == 1
    assert len({json.dumps(run["summary"]["digits"], sort_keys=True) for run in runs}) == 1
    assert len({run["summary"]["fid"]["fid"] for run in runs}) == 1
    return quickstart_row(runs[0]) | {
        "minutes": make_minutes(runs),
        "install": f"{max(run['install_seconds'] for run in runs) / 60:.1f}",
        "fid": f"{runs[0]['summary']['fid']['fid']:.1f}",
    }


def quickstart_row(run: dict) -> dict[str, str]:
    """One quickstart run's figures as the quickstart section prints them (minutes by make's clock)."""
    summary, judged = run["summary"], run["summary"]["digits"]
    return {"minutes": f"{run['make_quickstart_seconds'] / 60:.1f}",
            "accuracy": f"{100 * judged['class_conditional']['accuracy']:.1f}%",
            "worst": f"{100 * judged['class_conditional']['worst_class']:.0f}%",
            "recognisable": f"{100 * judged['unconditional']['recognisable']:.1f}%",
            "fid_exact": f"{summary['fid']['fid']:.2f}"}  # fmt: skip


def test_the_quickstart_paragraph_is_its_json():
    numbers = quickstart()
    text = " ".join(README.split())
    assert f"took {numbers['minutes']} minutes after an install of at most {numbers['install']}" in text
    assert f"{numbers['accuracy']} of class-conditional samples are read as the asked digit (worst class {numbers['worst']})" in text.replace("**", "")
    assert f"{numbers['recognisable']} of unconditional samples are recognisable, gFID {numbers['fid']} on 500" in text.replace("**", "")


def test_the_quickstart_table_is_its_json():
    """The quickstart section: each fresh clone's row (minutes by make's clock), the same tokenizer in the
    clones of the four commits before (three each, the same day) and their prior's figures, the seconds
    and the per-class shares."""
    record = load(QUICKSTART)
    section = book.section("The quickstart")

    def cells(numbers: dict) -> str:
        return (f"{numbers['minutes']} | {numbers['accuracy']} ({numbers['worst']}) | {numbers['recognisable']} | "
                f"{numbers['fid_exact']}")  # fmt: skip

    for number, run in enumerate(record["runs"], 1):
        assert f"\n| clone {number} | {cells(quickstart_row(run))} |" in section, number
    text = " ".join(section.split())
    # The same tokenizer, bit for bit, in every clone of the five commits; the same prior in every clone
    # of the four before, another since validation stopped drawing from the training's random numbers.
    now, befores = record["runs"][0]["weights_sha256"], [load(name) for name in QUICKSTART_BEFORE]
    for before in befores:
        assert before["date"] == record["date"] and before["commit"] != record["commit"]
        assert {run["weights_sha256"]["tokenizer"] for run in before["runs"]} == {now["tokenizer"]}
    old_priors = {run["weights_sha256"]["prior"] for before in befores for run in before["runs"]}
    assert len(old_priors) == 1 and now["prior"] not in old_priors
    last = quickstart(QUICKSTART_BEFORE[0])
    assert (f"The clones of 8a21da6 ({span(befores[0]['runs'], 'make_quickstart_seconds')} s) trained the prior before: "
            f"{last['accuracy']} (worst class {last['worst']}), {last['recognisable']} recognisable, gFID "
            f"{last['fid_exact']}") in text  # fmt: skip
    earlier = load("quickstart-fresh-clones-ecc84b6.json")["runs"][0]["weights_sha256"]["tokenizer"]
    assert record["runs"][0]["weights_sha256"]["tokenizer"] == earlier
    seconds = sorted(run["make_quickstart_seconds"] for run in record["runs"])
    tokenizer = sorted(run["tokenizer_training_seconds"] for run in record["runs"])
    prior = sorted(run["prior_training_seconds"] for run in record["runs"])
    assert (f"took {seconds[0]} to {seconds[-1]} seconds from one clone to the next (tokenizer {tokenizer[0]:.0f}-"
            f"{tokenizer[-1]:.0f} s, prior {prior[0]:.0f}-{prior[-1]:.0f} s:") in text  # fmt: skip
    assert f"Met: {make_minutes(record['runs'])} minutes by make's clock, the slowest run {10 - seconds[-1] / 60:.1f} under" in text
    assert seconds[-1] <= 600  # the target, in the slowest clone
    shares = record["runs"][0]["summary"]["digits"]["class_conditional"]["per_class"]
    assert "(per class " + ", ".join(f"{100 * shares[str(digit)]:.0f}" for digit in range(10)) + "%)" in text

    def outside(runs: list[dict]) -> list[int]:  # seconds outside the two trainings
        return sorted(round(run["make_quickstart_seconds"] - run["tokenizer_training_seconds"] - run["prior_training_seconds"])
                      for run in runs)  # fmt: skip

    now = outside(record["runs"])
    assert f"Outside the two trainings {now[0]}-{now[-1]} s remain" in text
    _, f7d23c5, fifth, fourth = (load(name)["runs"] for name in QUICKSTART_BEFORE)
    old, new = outside(fourth), outside(fifth + f7d23c5)
    history = " ".join(appendix("A16").split())
    assert f"the clones of 4166b7a spent {old[0]}-{old[-1]} s, those of 5417afd and f7d23c5 {new[0]}-{new[-1]} s" in history
    before = f7d23c5  # f7d23c5's clones, the last before the memory was kept
    assert (f"Since f7d23c5's clones ({span(before, 'make_quickstart_seconds')} s; tokenizer "
            f"{span(before, 'tokenizer_training_seconds')} s, prior {span(before, 'prior_training_seconds')} s, "
            f"{outside(before)[0]}-{outside(before)[-1]} s outside)") in text  # fmt: skip


def test_the_quickstarts_history_is_its_json():
    """docs/history.md A16: the clones of 4166b7a, 5417afd and f7d23c5 by make's seconds and the
    quickstart's own minutes, and the code before 4166b7a's (f9af628) in its clone."""
    text = " ".join(appendix("A16").split())

    def listed(values: list) -> str:
        return ", ".join(str(value) for value in values[:-1]) + f" and {values[-1]}"

    for name in QUICKSTART_BEFORE:
        runs = load(name)["runs"]
        seconds = listed([run["make_quickstart_seconds"] for run in runs])
        minutes = listed([run["summary"]["minutes"] for run in runs])
        assert f"took {seconds} seconds" in text and f"{minutes} minutes" in text, name
    before = load("quickstart-fresh-clones-4166b7a.json")["before"]
    row = quickstart_row(before)
    assert (f"{before['make_quickstart_seconds']} seconds ({before['summary']['minutes']} minutes), {row['accuracy']} "
            f"(worst class {row['worst']}), {row['recognisable']} recognisable, gFID {row['fid_exact']}") in text  # fmt: skip
    assert f"its classifier trained for {before['digit_classifier_seconds']:.0f} s" in text
    assert f"its prior {before['prior_training_seconds']:.0f} s for 1500 steps" in text
    # The last prior before validation drew nothing from the training's random numbers, and the first after.
    now, last = quickstart(), quickstart(QUICKSTART_BEFORE[0])
    assert (f"{now['accuracy']} of class samples the asked digit (worst class {now['worst']}), {now['recognisable']} "
            f"recognisable, gFID {now['fid_exact']}, against {last['accuracy']} ({last['worst']}), "
            f"{last['recognisable']} and {last['fid_exact']} before") in text  # fmt: skip
    runs, runs_before = load(QUICKSTART)["runs"], load(QUICKSTART_BEFORE[0])["runs"]
    assert (f"They took {span(runs, 'make_quickstart_seconds')} s, the prior {span(runs, 'prior_training_seconds')} s "
            f"against {span(runs_before, 'prior_training_seconds')} s in 8a21da6's clones") in text  # fmt: skip


def test_the_summary_row_is_the_quickstarts_json():
    text = " ".join(SUMMARY.replace("**", "").split())
    quick = quickstart()
    for number in (f"{quick['minutes']} minutes", quick["accuracy"], f"worst class {quick['worst']}",
                   quick["recognisable"], f"gFID {quick['fid']} on 500"):  # fmt: skip
        assert number in text, number


def test_the_kept_memory_figures_are_their_json():
    """docs/guide.md's figures for keeping freed memory and the quickstart section's speed-ups, from
    the record of benchmarks/kept_memory.py (medians of fresh processes, both settings)."""
    record = load("kept-memory-cpu.json")
    rows = {row["workload"]: row for row in record["rows"]}
    assert record["repeats"] == 3 and all(len(runs) == 3 for row in rows.values() for runs in row["runs"].values())
    tokenizer, prior, inception = (rows[name] for name in ("tokenizer update", "prior update", "Inception features of 64 images"))
    guide = " ".join((book.ROOT / "docs" / "guide.md").read_text().split())
    assert record["command"] in guide
    assert (f"the tokenizer's training update {tokenizer['defaults_ms']:.1f} ms against {tokenizer['kept_ms']:.1f} "
            f"({tokenizer['defaults_faults']:,.0f} page faults a step against {tokenizer['kept_faults']:,.0f}), the quickstart "
            f"prior's {prior['defaults_ms']:.1f} against {prior['kept_ms']:.1f} ms, Inception's features of 64 images "
            f"{inception['defaults_ms'] / 1e3:.2f} against {inception['kept_ms'] / 1e3:.2f} s ({inception['speedup']:.2f}x)") in guide  # fmt: skip
    section = " ".join(book.section("The quickstart").split())
    assert (f"the tokenizer's update runs {tokenizer['speedup']:.2f}x, the prior's {prior['speedup']:.2f}x and Inception "
            f"{inception['speedup']:.2f}x as fast") in section  # fmt: skip
