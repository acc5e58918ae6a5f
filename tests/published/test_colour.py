"""The colour numbers README.md and BENCHMARKS.md print, against the results JSON the benchmarks
wrote (benchmarks/results/): the embedded photos' 1,500-step side-by-side with its 40 CIFAR images,
the 64 px pair, and the colour prior's gFID."""

from __future__ import annotations

import pytest

from tests.published.book import BENCHMARKS, HISTORY, README, SUMMARY, load, section, spread, table

COLOUR = {"VQ-WAE (ours)": "vq-wae", "FSQ": "fsq", "VQ-VAE (ours, same backbone)": "vq-vae",
          "VQ-EMA (k-means, dead-code expiry)": "vq-ema"}  # fmt: skip


def colour_row(summary: dict, cifar: dict) -> list[str]:
    """PSNR mean (min-max), SSIM, LPIPS, rFID, perplexity, codes used; the CIFAR images' PSNR / LPIPS."""
    return [spread(summary["psnr"]), f"{summary['ssim']['mean']:.3f}", f"{summary['lpips']['mean']:.3f}",
            f"{summary['rfid']['mean']:.2f}", f"{summary['perplexity']['mean']:.1f}",
            f"{summary['codes_used']['mean']:.0f}", f"{cifar['psnr']['mean']:.2f} / {cifar['lpips']['mean']:.3f}"]  # fmt: skip


def test_the_colour_table_is_its_json():
    record = load("compare-photos-1500.json")
    assert record["steps"] == 1500 and record["seeds"] == [0, 1, 2] and record["split"] == "test"
    assert all(run["test"]["rfid_n"] == run["test"]["lpips_n"] == 1000 for runs in record["runs"].values()
               for run in runs.values())  # fmt: skip
    assert all(run["cifar"]["num_images"] == 40 for runs in record["runs"].values() for run in runs.values())
    printed = table("tokenizer, colour photos, 1,500 steps")
    for label, name in COLOUR.items():
        assert printed[label] == colour_row(record["summary"][name], record["cifar_summary"][name]), label


def test_the_colour_summary_row_is_its_json():
    record = load("compare-photos-1500.json")["summary"]
    row = next(line for line in SUMMARY.splitlines() if line.startswith("| colour photos, tokenizer PSNR"))
    for name in COLOUR.values():
        assert f"{record[name]['psnr']['mean']:.2f}" in row, name
        assert f"{record[name]['lpips']['mean']:.3f}" in row, name


@pytest.mark.parametrize("reference", ["test", "train"])
def test_the_colour_prior_gfid_is_its_json(reference):
    record = load(f"gfid-photos-{reference}.json")
    assert record["reference"] == f"photos:{reference}" and record["n"] == record["reference_n"] == 1000
    fid = record["settings"]["unconditional"]["fid"]["1000"]
    assert f"{reference} crops: {fid:.1f}" in README.replace("**", "")
    if reference == "test":
        assert f"gFID {fid:.2f} on 1,000 plain samples against the test crops" in " ".join(BENCHMARKS.split())


def test_the_64px_pair_is_its_json():
    record = load("compare-photos-64px.json")
    assert record["steps"] == 1500 and record["seeds"] == [0] and record["split"] == "test"
    assert all("data.image_size=64" in variant for variant in record["variants"].values())
    section = HISTORY.split("| tokenizer, 64 px", 1)[1]
    printed = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")[1:]]
               for line in section.splitlines()[2:4]}  # fmt: skip
    for label, name in {"VQ-WAE (ours)": "vq-wae", "VQ-VAE (ours, same backbone)": "vq-vae"}.items():
        summary, cifar = record["summary"][name], record["cifar_summary"][name]
        expected = [f"{summary['psnr']['mean']:.2f}", f"{summary['ssim']['mean']:.3f}", f"{summary['lpips']['mean']:.3f}",
                    f"{summary['rfid']['mean']:.2f}", f"{summary['perplexity']['mean']:.1f}",
                    f"{summary['codes_used']['mean']:.0f}", f"{cifar['psnr']['mean']:.2f} / {cifar['lpips']['mean']:.3f}"]  # fmt: skip
        assert printed[label] == expected, label
    wae, vae = record["summary"]["vq-wae"], record["summary"]["vq-vae"]
    assert (f"beats VQ-VAE on every measure ({wae['psnr']['mean']:.2f} against {vae['psnr']['mean']:.2f} dB, LPIPS "
            f"{wae['lpips']['mean']:.3f} against {vae['lpips']['mean']:.3f}) with {wae['codes_used']['mean']:.0f} codes in use"
            ) in " ".join(BENCHMARKS.split())  # fmt: skip


def test_the_colour_relaxation_check_is_its_json():
    record = load("photos-relax16-validation.json")
    assert record["split"] == "validation" and record["seeds"] == [0] and record["steps"] == 1500
    assert record["variants"]["vq-wae-relax16"][-1] == "model.transport.code_relaxation=16"
    section = HISTORY.split("| 32 px, validation", 1)[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")[1:]] for line in section.splitlines()[2:4]]
    for row, name in zip(rows, ["vq-wae", "vq-wae-relax16"]):
        summary, cifar = record["summary"][name], record["cifar_summary"][name]
        assert row == [f"{summary['psnr']['mean']:.2f}", f"{summary['ssim']['mean']:.3f}",
                       f"{summary['perplexity']['mean']:.1f}", f"{summary['codes_used']['mean']:.0f}",
                       f"{cifar['psnr']['mean']:.2f}"], name  # fmt: skip
    one, sixteen = record["summary"]["vq-wae"], record["summary"]["vq-wae-relax16"]
    assert (f"uses all {sixteen['codes_used']['mean']:.0f} codes (perplexity {sixteen['perplexity']['mean']:.1f} against "
            f"{one['perplexity']['mean']:.1f}) for {one['psnr']['mean'] - sixteen['psnr']['mean']:.2f} dB"
            ) in " ".join(BENCHMARKS.split())  # fmt: skip


def test_the_books_colour_table_is_its_json():
    """The colour section's table: every cell mean (min-max) over the three seeds, the step ratio
    side by side, the 40 CIFAR images' PSNR / LPIPS, all from the record."""
    record = load("compare-photos-1500.json")
    lines = section("Colour photos").split("| variant | PSNR dB |", 1)[1].splitlines()[2:6]
    printed = {line.strip("|").split("|")[0].strip(): [cell.strip() for cell in line.strip("|").split("|")[1:]] for line in lines}
    assert list(printed) == ["vq-wae", "fsq", "vq-ema", "vq-vae"]
    for name, cells in printed.items():
        summary, cifar, timing = record["summary"][name], record["cifar_summary"][name], record["step_time"][name]
        expected = [spread(summary["psnr"]), spread(summary["ssim"], digits=3), spread(summary["lpips"], digits=3),
                    spread(summary["rfid"]), spread(summary["perplexity"], digits=1), spread(summary["codes_used"], digits=0),
                    f"{timing['ratio']:.2f}x ({timing['step_ms']:.0f} ms)", f"{spread(cifar['psnr'])} / {spread(cifar['lpips'], digits=3)}"]  # fmt: skip
        assert cells == expected, name
