"""The shipped pipeline's numbers in README.md, the summary and its BENCHMARKS.md section, against its records
(tokenizer.evaluation's and pipelines.evaluation's on models/vqwae-mnist) and its own files."""

from __future__ import annotations

import json

from pipelines.ship import SHIPPED, folder_megabytes
from tests.published.book import README, SUMMARY, load, section, table

SECTION = section("The shipped pipeline")


def numbers() -> dict[str, str]:
    tokenizer, samples = load("shipped-mnist-tokenizer-test.json"), load("shipped-mnist-samples.json")
    assert tokenizer["tokenizer"] == "models/vqwae-mnist/tokenizer" and tokenizer["split"] == "test"
    assert tokenizer["num_images"] == 10000 and tokenizer["rfid"]["n"] == 1000
    assert samples["pipeline"] == "models/vqwae-mnist" and samples["sampling_overrides"] == {}
    judged = samples["class_conditional"]
    worst_digit = min(judged["per_class"], key=judged["per_class"].get)
    return {"size": f"{folder_megabytes(SHIPPED):.1f} MB", "psnr": f"{tokenizer['psnr']:.2f}",
            "ssim": f"{tokenizer['ssim']:.3f}", "perplexity": f"{tokenizer['perplexity']:.1f}",
            "codes": str(tokenizer["codes_used"]), "rfid": f"{tokenizer['rfid']['fid']:.2f}",
            "accuracy": f"{judged['accuracy']:.1%}", "worst": f"{judged['worst_class']:.0%}", "worst_digit": worst_digit,
            "class_samples": f"{judged['samples']:,}", "recognisable": f"{samples['unconditional']['recognisable']:.1%}",
            "unconditional_samples": f"{samples['unconditional']['samples']:,}"}  # fmt: skip


def test_readme_and_the_summary_print_the_records():
    n = numbers()
    readme = " ".join(README.split())
    assert f"`models/vqwae-mnist` ({n['size']}: the recipe's tokenizer at 10 epochs, {n['psnr']} dB and SSIM {n['ssim']}" in readme
    assert (f"reads {n['accuracy']} of its class-conditional samples as the asked digit (worst class {n['worst']}), "
            f"{n['recognisable']} of unconditional ones as recognisable") in readme  # fmt: skip
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert (f"`models/vqwae-mnist` ({n['size']}) | tokenizer (10 epochs) {n['psnr']} dB, SSIM {n['ssim']}, rFID {n['rfid']} "
            f"on 1,000, {n['codes']} codes; at its sampling defaults {n['accuracy']} of class-conditional samples the asked "
            f"digit (worst class {n['worst']}), {n['recognisable']} of unconditional ones recognisable") in summary  # fmt: skip


def test_its_section_prints_the_records_and_the_folder():
    n = numbers()
    text = " ".join(SECTION.split())
    assert f"{n['size']} in all" in text
    sizes = {part: (SHIPPED / part / "model.safetensors").stat().st_size / 1e6 for part in ("tokenizer", "prior")}
    assert f"the tokenizer in fp32 ({sizes['tokenizer']:.1f} MB), the prior's weights stored in fp16 ({sizes['prior']:.1f} MB" in text
    assert (f"| PSNR {n['psnr']} dB, SSIM {n['ssim']}, perplexity {n['perplexity']}, {n['codes']} codes used; "
            f"rFID {n['rfid']} on the first 1,000 |") in text  # fmt: skip
    assert (f"| {n['accuracy']} of {n['class_samples']} class-conditional samples the asked digit (worst class {n['worst']}, "
            f"digit {n['worst_digit']}); {n['recognisable']} of {n['unconditional_samples']} unconditional ones recognisable |") in text  # fmt: skip
    config = json.loads((SHIPPED / "pipeline_config.json").read_text())
    floor = load("gfid-mnist-10ep-floor-cpu-2026-11-30.json")["prior"]["runs"]["cpu-recipe"]["bits_per_code"]
    assert f"| {config['validation_bits_per_code']:.3f} bits per code (the same recipe on section 3's current tokenizer: {floor:.3f}) |" in text
    defaults = json.loads((SHIPPED / "prior" / "generation_config.json").read_text())
    assert (defaults["temperature"], defaults["top_k"], defaults["guidance_scale"], defaults["unconditional"]) == (1.0, 64, 1.0, "classes")
    assert "(temperature 1, top-k 64, no guidance; unconditional through classes)" in text
    guided = next(row for row in config["sampling_sweep"] if row["kind"] == "class-conditional" and row["guidance_scale"] == 1.5)
    assert f"at guidance 1.5: {guided['accuracy']:.1%} of class-conditional samples the asked digit, worst class {guided['worst_class']:.0%}" in text
    for command in config["made_by"]:
        assert command.split("  #")[0] in SECTION.replace("\n", " ") or command.split("  #")[0] in SECTION


def test_the_gfid_sentences_are_their_records():
    """Both gFID settings of the shipped pipeline (10k plain samples, the same seed and reference) in
    its section, the summary and README's generation table (the generation section's table checks its row)."""
    fids = {}
    for name, setting in (("unconditional", "unconditional"), ("class-conditional", "class-conditional g=1.5")):
        record = load(f"shipped-mnist-gfid-{name}.json")
        assert record["pipeline"] == "models/vqwae-mnist" and record["n"] == record["reference_n"] == 10000
        assert record["sampling"]["mode"] == "plain" and "python -m benchmarks.generation_fid" in record["command"]
        assert record["seed"] == 0 and record["reference"] == "mnist:test"
        fids[name] = {count: f"{value:.2f}" for count, value in record["settings"][setting]["fid"].items()}
    assert load("shipped-mnist-gfid-class-conditional.json")["settings"]["class-conditional g=1.5"]["guidance_scale"] == 1.5
    text = " ".join(SECTION.replace("**", "").split())
    generation = " ".join(section("Generation").replace("**", "").split())
    uncond, cond = fids["unconditional"], fids["class-conditional"]
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert f"gFID on 10k plain samples: unconditional {uncond['10000']}, class-conditional {cond['10000']} (guidance 1.5)" in summary
    defaults = load("shipped-mnist-gfid-defaults.json")
    shipped = json.loads((SHIPPED / "prior" / "generation_config.json").read_text())
    assert defaults["sampling"]["mode"] == "pipeline" and defaults["n"] == defaults["reference_n"] == 10000
    assert (defaults["sampling"]["top_k"], defaults["sampling"]["unconditional"]) == (shipped["top_k"], shipped["unconditional"])
    at_defaults = {name: f"{setting['fid']['10000']:.2f}" for name, setting in defaults["settings"].items()}
    assert (f"unconditional {at_defaults['unconditional']}, class-conditional {at_defaults['class-conditional g=1']}. "
            "Not comparable with the paper's figures") in generation  # fmt: skip
    assert (f"gFID on 10,000 plain samples: unconditional {uncond['10000']}, class-conditional {cond['10000']} at guidance "
            f"1.5; at its own defaults {at_defaults['unconditional']} and {at_defaults['class-conditional g=1']}") in text  # fmt: skip
    row = next(cells for label, cells in table("generation, gFID").items() if "`models/vqwae-mnist`" in label)
    tokenizer = load("shipped-mnist-tokenizer-test.json")
    assert row == [f"the current recipe, trained again, {tokenizer['psnr']:.2f} dB", uncond["10000"],
                   f"{cond['10000']} (guidance 1.5)"]  # fmt: skip
