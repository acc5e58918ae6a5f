"""The numbers README.md and BENCHMARKS.md's summary print, against the results JSON the
benchmarks wrote (benchmarks/results/): a stale or mistyped figure fails here. The few older
numbers whose run left no JSON record stay out of README and the summary and carry a dagger (†)
in BENCHMARKS.md's sections, saying so."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import ROOT
from tests.published import book
from tests.published.book import BENCHMARKS, HISTORY, README, SUMMARY, load, spread, table

# Numbers without a JSON record, as printed: absent from README and the summary, daggered in the sections.
UNRECORDED = ["3.94", "30 minutes", "30 min", "2.19x"]


STEPS_1500 = {"VQ-WAE (ours)": "vq-wae-dual20-c8", "FSQ": "fsq", "VQ-VAE (ours, same backbone)": "vq-vae",
              "VQ-EMA (k-means, dead-code expiry)": "vq-ema"}  # fmt: skip
CURVES = {"vq-wae-dual20-c8": "vq-wae", "fsq": "fsq", "vq-vae": "vq-vae", "vq-ema": "vq-ema"}


def cells(stats: dict, psnr_by_seed: list[float] | None = None) -> list[str]:
    """A tokenizer's row as the README prints it: PSNR mean (min-max), SSIM, rFID, perplexity, codes used."""
    return [spread(stats["psnr"], psnr_by_seed), f"{stats['ssim']['mean']:.3f}", f"{stats['rfid']['mean']:.2f}",
            f"{stats['perplexity']['mean']:.1f}", f"{stats['codes_used']['mean']:.0f}"]  # fmt: skip


def expected_1500() -> dict[str, list[str]]:
    summary = load("compare-mnist-1500-dual-default.json")["summary"]
    timing = load("compare-mnist-1500-curves.json")["step_time"]  # the four side by side in one run
    return {label: [*cells(summary[name]), f"{timing[CURVES[name]]['ratio']:.2f}x"] for label, name in STEPS_1500.items()}


def expected_10_epochs() -> dict[str, list[str]]:
    summary = load("compare-mnist-10ep-dual-default.json")["summary"]
    return {label: cells(summary[name], summary[name]["psnr"]["by_seed"])
            for label, name in (("VQ-WAE (ours)", "vq-wae (default now)"), ("FSQ", "fsq"))}  # fmt: skip


def floor() -> dict[str, dict[str, str]]:
    """The 10-epoch seed-0 tokenizers scored on all 10k test images: PSNR and rFID as printed."""
    record = load("tokenizer-floor-mnist-10ep-seed0.json")
    assert record["summary"]["vq-wae"]["rfid"]["min"] == record["summary"]["vq-wae"]["rfid"]["max"]  # one seed
    assert all(run["0"]["test"]["rfid_n"] == run["0"]["test"]["num_images"] == 10000 for run in record["runs"].values())
    return {name: dict(psnr=f"{run['0']['test']['psnr']:.2f}", rfid=f"{run['0']['test']['rfid']:.2f}")
            for name, run in record["runs"].items()}  # fmt: skip


def test_the_tokenizer_floor_is_its_json():
    """README's floor sentence, the summary row and the 10-epoch section's table, from the 10k record."""
    numbers = floor()
    wae, fsq = numbers["vq-wae"], numbers["fsq"]
    readme = " ".join(README.split())
    assert f"scores rFID {wae['rfid']} at {wae['psnr']} dB (FSQ {fsq['rfid']} at {fsq['psnr']} dB" in readme
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert f"VQ-WAE {wae['rfid']} ({wae['psnr']} dB), FSQ {fsq['rfid']} ({fsq['psnr']} dB)" in summary
    assert f"gFID 3.96 (the 10-epoch tokenizer's own floor, rFID {wae['rfid']}, is above it;" in summary
    section = BENCHMARKS.replace("**", "").split("| test split, all 10,000 images |")[1]
    for label, name in (("VQ-WAE (ours), 10 epochs, seed 0", "vq-wae"), ("FSQ, 10 epochs, seed 0", "fsq")):
        row = section.split(f"\n| {label} | ", 1)[1].split("\n", 1)[0].split(" | ")
        assert [row[0], row[2]] == [numbers[name]["psnr"], numbers[name]["rfid"]], label
    # FSQ's rerun is the 10-epoch table's seed 0 to the last digit (same code, seed and CPU).
    table = load("compare-mnist-10ep-dual-default.json")["summary"]["fsq"]["psnr"]["by_seed"][0]
    assert load("tokenizer-floor-mnist-10ep-seed0.json")["runs"]["fsq"]["0"]["test"]["psnr"] == table


def test_the_cpu_prior_pace_is_its_json():
    """The CPU recipe's minutes at the recorded pace (300 steps, scaled to the recipe's 2,500) in
    README, the summary and the generation section; the old commit's side-by-side seconds in A14."""
    record = load("prior-cpu-pace-2026-11-30.json")
    run = record["runs"]["pace-300"]
    assert (run["layers"], run["hidden"], run["batch_size"], run["mixed_precision"]) == (6, 256, 64, "bf16")
    minutes = f"{run['minutes'] / run['steps'] * 2500:.0f}"
    readme = " ".join(README.split())
    assert f"trained again (2 cores, about {minutes} minutes at the pace of 2026-11-30)" in readme
    assert f"2,500 steps on 2 cores take about {minutes} minutes at the pace of 2026-11-30" in readme
    assert f"CPU prior (about {minutes} minutes at the pace of 2026-11-30)" in " ".join(SUMMARY.split())
    pace = f"{run['minutes'] * 60 / run['steps']:.2f}"
    section = " ".join(BENCHMARKS.replace("**", "").split())
    assert f"{pace} s a step (validation included), so 2,500 steps take about {minutes} minutes" in section
    comment = " ".join(line.lstrip("# ") for line in (ROOT / "configs/prior/mnist.yaml").read_text().splitlines())
    assert f"2500 steps take about {minutes} minutes on 2 CPU cores at the recorded pace of 2026-11-30 ({pace} s a step" in comment
    old = record["same_pace_at_e2e3e49"]["seconds_to_step"]
    assert f"took {old['50']:.1f} s to step 50 and {old['100']:.1f} s to step 100" in " ".join(HISTORY.split())


def generation() -> dict[str, str]:
    gpu = load("gpu-prior-h100-2026-11-27.json")
    cpu = load("gfid-mnist-10ep-cpu.json")["settings"]
    again = load("gfid-mnist-10ep-floor-cpu-2026-11-30.json")["gfid"]["settings"]  # the current recipe's tokenizer
    gpu_fid = gpu["gfid_of_call_2"]["settings"]
    return {
        "gpu_unconditional": f"{gpu_fid['unconditional']['fid']['10000']:.2f}",
        "gpu_conditional": f"{gpu_fid['class-conditional g=1']['fid']['10000']:.2f}",
        "gpu_minutes": f"{gpu['call_2']['train_minutes']:.1f}",
        "cpu_unconditional": f"{cpu['unconditional']['fid']['10000']:.2f}",
        "cpu_conditional": f"{cpu['class-conditional g=1.5']['fid']['10000']:.2f}",
        "again_unconditional": f"{again['unconditional']['fid']['10000']:.2f}",
        "again_conditional": f"{again['class-conditional g=1.5']['fid']['10000']:.2f}",
    }


def ot_gaps() -> dict[str, list[float]]:
    """Per seed: the mean and largest in-training OT gap of the checks after step 500, and the
    mean code-marginal L1 error and its one-hot floor."""
    runs = load("ot-gap-mnist-1500-3seeds.json")["runs"]["vq-wae"]
    result = {"mean": [], "max": [], "marginal": [], "floor": []}
    for seed in sorted(runs):
        curves = runs[seed]["curves"]
        late = {name: [v for step, v in curves[name].items() if int(step) > 500]
                for name in ("ot_gap", "ot_marginal", "ot_marginal_floor")}  # fmt: skip
        assert len(late["ot_gap"]) == 20
        result["mean"].append(sum(late["ot_gap"]) / 20)
        result["max"].append(max(late["ot_gap"]))
        result["marginal"].append(sum(late["ot_marginal"]) / 20)
        result["floor"].append(sum(late["ot_marginal_floor"]) / 20)
    return result


def test_the_ot_gap_paragraph_is_its_json():
    """The 1,500-step section's in-training OT check, and the rerun's test PSNR equal to the 3-seed table's."""
    gaps = ot_gaps()
    text = " ".join(BENCHMARKS.split())
    seeds = ", +".join(f"{100 * gap:.2f}%" for gap in gaps["mean"][:2])
    assert f"gap: +{seeds} and +{100 * gaps['mean'][2]:.2f}% on seeds 0-2" in text
    assert f"largest single check +{100 * max(gaps['max']):.2f}%" in text
    assert f"code marginal L1 {min(gaps['marginal']):.3f}-{max(gaps['marginal']):.3f}" in text
    assert f"floor of {min(gaps['floor']):.3f}-{max(gaps['floor']):.3f}" in text
    rerun = load("ot-gap-mnist-1500-3seeds.json")["runs"]["vq-wae"]
    table = load("compare-mnist-1500-dual-default.json")["runs"]["vq-wae-dual20-c8"]
    assert [rerun[seed]["test"]["psnr"] for seed in "012"] == [table[seed]["test"]["psnr"] for seed in "012"]


def test_the_1500_step_table_is_its_json():
    assert table("tokenizer, 1,500 steps") == expected_1500()
    vqvae_ms = load("compare-mnist-1500-curves.json")["step_time"]["vq-vae"]["step_ms"]
    assert f"(VQ-VAE {vqvae_ms:.0f} ms)" in README


def test_the_10_epoch_table_is_its_json():
    rows = table("tokenizer, 10 epochs")
    expected = expected_10_epochs()
    assert {label: rows[label] for label in expected} == expected
    seeds = load("compare-mnist-10ep-dual-default.json")["summary"]
    assert f"seed 0 reaches the paper's 100-epoch PSNR ({seeds['vq-wae (default now)']['psnr']['by_seed'][0]:.2f} dB)" in (
        " ".join(README.split())
    )
    before = seeds["vq-wae-before (25 Sinkhorn iterations, no dual steps)"]["psnr"]["by_seed"][0]
    assert f"the recipe before the dual steps, {before:.2f} dB" in README
    low = seeds["vq-wae (default now)"]["perplexity"]["mean"]
    high = load("compare-mnist-1500-dual-default.json")["summary"]["vq-wae-dual20-c8"]["perplexity"]["mean"]
    assert f"our perplexity ({low:.0f}-{high:.0f})" in " ".join(README.split())


def test_the_generation_table_is_its_json():
    rows = table("generation, gFID")
    numbers = generation()
    gpu, cpu, again = (next(cells for label, cells in rows.items() if label.startswith(start))
                       for start in ("GPU prior", "CPU prior (", "CPU prior, the same recipe trained again"))  # fmt: skip
    assert gpu[1] == numbers["gpu_unconditional"] and gpu[2].startswith(numbers["gpu_conditional"] + " ")
    assert cpu[1] == numbers["cpu_unconditional"] and cpu[2] == f"{numbers['cpu_conditional']} (guidance 1.5)"
    assert again[1] == numbers["again_unconditional"] and again[2] == f"{numbers['again_conditional']} (guidance 1.5)"
    record = load("gfid-mnist-10ep-floor-cpu-2026-11-30.json")
    floor = record["tokenizer_floor"]  # the tokenizer the prior was trained on: the floor record's
    tokenizer = load("tokenizer-floor-mnist-10ep-seed0.json")["runs"]["vq-wae"]["0"]["test"]
    assert floor == {key: tokenizer[key] for key in floor}
    assert again[0] == f"the current recipe, {floor['psnr']:.2f} dB, rFID floor {floor['rfid']:.2f}"
    assert f"{numbers['gpu_minutes']} minutes on one H100" in README


def test_the_generation_sections_table_is_its_records():
    """BENCHMARKS.md's generation table: every prior's gFID at 10,000 samples (at 1,000 in
    brackets) from its record, with the prior's validation bits and its tokenizer's floor."""
    section = book.section("Generation").replace("**", "")
    rows = {}
    for line in section[section.index("| tokenizer, 10 epochs") :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells[2:5]

    def cells(settings: dict, names: tuple) -> list[str]:
        return [f"{settings[name]['fid']['10000']:.2f} ({settings[name]['fid']['1000']:.2f})" if name else "" for name in names]

    gpu = load("gpu-prior-h100-2026-11-27.json")
    floor = load("gfid-mnist-10ep-floor-cpu-2026-11-30.json")
    shipped = {**load("shipped-mnist-gfid-unconditional.json")["settings"], **load("shipped-mnist-gfid-class-conditional.json")["settings"]}
    tokenizer = load("shipped-mnist-tokenizer-test.json")
    bits = json.loads((ROOT / "models" / "vqwae-mnist" / "pipeline_config.json").read_text())["validation_bits_per_code"]
    before = "the recipe before the dual steps, 35.52 dB (3.94†)"
    all_three, guided = ("unconditional", "class-conditional g=1", "class-conditional g=1.5"), ("unconditional", None, "class-conditional g=1.5")
    expected = {
        (before, f"GPU ({gpu['call_2']['final_bits_per_code']:.3f})"): cells(gpu["gfid_of_call_2"]["settings"], all_three),
        (before, "CPU (5.996†)"): cells(load("gfid-mnist-10ep-cpu.json")["settings"], all_three),
        (f"the current recipe, {floor['tokenizer_floor']['psnr']:.2f} dB ({floor['tokenizer_floor']['rfid']:.2f})",
         f"CPU ({floor['prior']['runs']['cpu-recipe']['bits_per_code']:.3f})"): cells(floor["gfid"]["settings"], guided),
        (f"the shipped pipeline's, {tokenizer['psnr']:.2f} dB ({tokenizer['rfid']['fid']:.2f} on 1,000)", f"CPU ({bits:.3f})"):
            cells(shipped, guided),
        ("the paper, 100 epochs (2.4)", "PixelCNN"): ["8.17", "3.96", ""],
    }  # fmt: skip
    assert rows == expected
    assert all(f"\n{command}\n" in section for command in floor["commands"].values())  # the current recipe's row


def test_the_benchmarks_summary_is_its_json():
    text = " ".join(SUMMARY.replace("**", "").split())
    rows = expected_1500()
    wae, fsq, vae, ema = (rows[label] for label in STEPS_1500)
    for number in (wae[0].split()[0], fsq[0].split()[0], vae[0].split()[0], ema[0].split()[0],  # PSNR
                   wae[3], fsq[3], vae[3], ema[3], wae[4], f"({vae[4]} codes)",  # code use
                   wae[2], fsq[2], vae[2], ema[2]):  # rFID  # fmt: skip
        assert number in text, number
    ten = expected_10_epochs()
    assert f"VQ-WAE {ten['VQ-WAE (ours)'][0].split()[0]} dB / rFID {ten['VQ-WAE (ours)'][2]}" in text
    assert f"FSQ {ten['FSQ'][0].split()[0]} / {ten['FSQ'][2]}" in text
    numbers = generation()
    assert f"unconditional {numbers['gpu_unconditional']} (paper 8.17); class-conditional {numbers['gpu_conditional']}" in text
    assert f"unconditional {numbers['cpu_unconditional']}; class-conditional {numbers['cpu_conditional']}" in text
    assert f"unconditional {numbers['again_unconditional']}; class-conditional {numbers['again_conditional']}" in text
    gaps = ot_gaps()
    assert f"within +{100 * min(gaps['mean']):.1f} to +{100 * max(gaps['mean']):.1f}% (mean per seed)" in text
    ratios = load("step-ratio-cpu-dual-candidates.json")  # the recipe's CPU step ratio, run after run
    measured = [ratios[run]["vq-wae-10it-dual20-c8"]["ratio"] for run in ("run_1_60_rounds", "run_2_100_rounds")]
    measured.append(load("compare-mnist-1500-curves.json")["step_time"]["vq-wae"]["ratio"])
    assert f"{min(measured):.2f}-{max(measured):.2f}x (CPU, {len(measured)} runs)" in text


def unrecorded(text: str) -> list[re.Match]:
    """Where the figures without a JSON record appear in `text`."""
    return [match for number in UNRECORDED
            for match in re.finditer(r"(?<![\d.])" + re.escape(number) + r"(?![\w.])", text)]  # fmt: skip


@pytest.mark.parametrize("where", ["README.md", "summary"])
def test_readme_and_summary_print_only_recorded_numbers(where):
    """The front pages print no figure whose run left no JSON record: no dagger, none of them."""
    text = (README if where == "README.md" else SUMMARY).replace("**", "")
    assert "†" not in text, f"{where}: a daggered (unrecorded) number; print a recorded one or move it to a section"
    found = [text[match.start() - 40 : match.end() + 20] for match in unrecorded(text)]
    assert not found, f"{where}: numbers without a JSON record: {found}"


def test_unrecorded_numbers_in_the_sections_carry_the_dagger():
    text = BENCHMARKS.replace("**", "").replace(SUMMARY.replace("**", ""), "")
    for match in unrecorded(text):
        assert text[match.end()] == "†", f"no JSON record and no dagger: ...{text[match.start() - 40 : match.end() + 20]}"


def test_appendix_commits_are_the_ones_git_records():
    """Each results file the appendix annotates "(added in `X`)" was added by commit X, and each
    "First recorded in commit `X`" is a commit whose BENCHMARKS.md first held the section's first
    table row (git log -S): the commit that reruns the section's commands as printed."""
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.skip("no git history here")

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()

    appendix = HISTORY
    added = re.findall(r"`(?:benchmarks/results/)?([\w.-]+\.json)` \(added in `([0-9a-f]{7})`\)", appendix)
    assert len(added) >= 10
    for name, commit in added:
        assert git("log", "--diff-filter=A", "--format=%h", "--", f"benchmarks/results/{name}") == [commit], name
    sections = re.split(r"(?m)^## (?=A\d+\.)", appendix)[1:]
    recorded = 0
    for section in sections:
        match = re.search(r"First recorded in commit `([0-9a-f]{7})`", section)
        if not match:
            continue
        row = next(line for line in section.splitlines() if line.startswith("| ") and re.search(r"\d", line)
                   and not set(line) <= set("|- "))  # fmt: skip
        first = git("log", "--reverse", "--format=%h", "-S", row[:60], "--", "BENCHMARKS.md", "docs/history.md")[0]
        assert first == match[1], section.splitlines()[0]
        recorded += 1
    assert recorded >= 10


def test_the_batch_size_probe_is_its_json():
    """The 10-epoch section's batch-size table, its differences and the seed spread, and the summary row, from
    the record; its batch-32 row is the 10k floor record's run and the steps are 10 epochs."""
    record = load("batch-size-mnist-10ep-2026-12-01.json")
    runs = record["runs"]
    assert runs["32"]["test"] == {key: value for key, value in load("tokenizer-floor-mnist-10ep-seed0.json")["runs"]
                                  ["vq-wae"]["0"]["test"].items() if key != "code_counts"}  # fmt: skip
    section = HISTORY.replace("**", "").split("| 10 epochs, seed 0, test split | learning rate")[1]
    for size, run in runs.items():
        assert run["steps"] == 10 * record["epoch_images"] // int(size)
        test = run["test"]
        label = "batch 32 (the recipe)" if size == "32" else f"batch {size}"
        cells = [f"{run['learning_rate']:.2g}", f"{run['steps']:,}", f"{test['psnr']:.2f}", f"{test['ssim']:.3f}",
                 f"{test['perplexity']:.1f}", str(test["codes_used"])]  # fmt: skip
        assert f"\n| {label} | {' | '.join(cells)} |" in section, label
    psnr = {size: run["test"]["psnr"] for size, run in runs.items()}
    text = " ".join(section.split())
    assert f"(-{psnr['32'] - psnr['64']:.2f} and -{psnr['32'] - psnr['128']:.2f} dB against batch 32" in text
    spread = record["batch_32_seed_spread"]["psnr"]
    assert spread == load("compare-mnist-10ep-dual-default.json")["summary"]["vq-wae (default now)"]["psnr"]["by_seed"]
    assert f"seed spread ({min(spread):.2f}-{max(spread):.2f} dB, 3 seeds)" in text
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert (f"batch 64: {psnr['64']:.2f} dB, batch 128: {psnr['128']:.2f} dB, against {psnr['32']:.2f} at batch 32"
            in summary)  # fmt: skip
    section_2 = " ".join(book.section("Ten epochs").split())
    assert f"score {psnr['64']:.2f} and {psnr['128']:.2f} dB against batch 32's {psnr['32']:.2f}" in section_2
