"""The scale numbers BENCHMARKS.md prints (its scale section), against the results JSON that wrote them:
the OT term's time and peak over K and grid, and the first steps of the 32x32 x 16,384 run."""

from __future__ import annotations

from tests.published.book import README, SUMMARY, appendix, load, section

SECTION = section("Scale")
RULE = appendix("A22")


def spread(values) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x"


def test_the_growth_table_is_its_two_jsons():
    """Each row: the OT term alone, whole and within the budget (ot-scale-cpu-2026-12-04.json), then
    the training steps side by side (ot-scale-steps-cpu-2026-12-04.json), at the same grid and K;
    the prose's and the summary's figures from them, and A25's before and after."""
    record, steps = load("ot-scale-cpu-2026-12-04.json"), load("ot-scale-steps-cpu-2026-12-04.json")
    text = " ".join(SECTION.split())
    assert record["command"] in text and steps["command"] in text and steps["batch"] == 32 and steps["rounds"] == 2
    table = SECTION.split("| grid | K | latents x codes |", 1)[1].splitlines()[2:]
    printed = table[: table.index("")]
    rows = record["rows"]
    assert len(printed) == len(rows) // 2 == len(steps["steps"]) == 9
    for line, whole, chunked, step in zip(printed, rows[::2], rows[1::2], steps["steps"]):
        assert (whole["budget_mb"], chunked["budget_mb"]) == (None, 2048)
        assert (step["grid"], step["codes"]) == (whole["grid"], whole["codes"])
        expected = (f"| {whole['grid']}x{whole['grid']} | {whole['codes']:,} | {whole['latents_x_codes'] / 1e6:.1f}M | "
                    f"{whole['seconds']:.2f} s, {whole['peak_mb']:,.0f} MB | {chunked['chunks']}, "
                    f"{chunked['seconds']:.2f} s, {chunked['peak_mb']:,.0f} MB | {step['vq_vae_seconds']:.2f} s | "
                    f"{step['vq_wae_seconds']:.2f} s | {step['ratio']:.2f}x | {step['ot_share']:.0%} |")  # fmt: skip
        assert line == expected
    quiet = [row["seconds"] for row in steps["rows"] if row["codes"] == 16384]
    assert f"K = 16,384: {quiet[0]:.2f}, {quiet[1]:.2f}, {quiet[2]:.2f} s" in text

    def ratios(rows: list[dict], codes: int) -> str:
        return spread([row["ratio"] for row in rows if row["codes"] == codes])

    assert f"({ratios(steps['steps'], 512)} at K = 512, {ratios(steps['steps'], 16384)} at 16,384," in text
    again = [step for repeat in steps["repeats"] for step in repeat["steps"]]
    assert len(steps["repeats"]) == 2 and f"two more runs that hour: {ratios(again, 512)} and {ratios(again, 16384)}" in text
    whole, chunked, step = rows[-2], rows[-1], steps["steps"][-1]
    assert (whole["grid"], whole["codes"], chunked["chunks"]) == (32, 16384, 2)
    assert (f"halve the peak ({chunked['peak_mb']:,.0f} MB: the budget and {chunked['peak_mb'] - 2048:.0f} MB) for "
            f"{chunked['seconds'] / whole['seconds']:.1f}x the time") in text  # fmt: skip
    summary = " ".join(SUMMARY.split())
    assert (f"peak {whole['peak_mb']:,.0f} MB with the whole matrix (two copies), {chunked['peak_mb']:,.0f} MB within the "
            f"default 2,048 MB budget ({chunked['seconds'] / whole['seconds']:.1f}x slower); training step "
            f"{step['ratio']:.2f}x VQ-VAE's there ({ratios(steps['steps'], 512)} at K = 512") in summary  # fmt: skip
    before = load("ot-scale-cpu.json")["rows"][-2:]
    history = " ".join(appendix("A25").split())
    for label, (old_whole, old_chunked) in (("before, budget 1024", before), ("after, budget 2048", (whole, chunked))):
        assert old_chunked["budget_mb"] == int(label.split()[-1])
        cells = (f"| {old_whole['seconds']:.2f} s, {old_whole['peak_mb']:,.0f} MB | {old_chunked['chunks']}, "
                 f"{old_chunked['seconds']:.2f} s, {old_chunked['peak_mb']:,.0f} MB |")  # fmt: skip
        assert cells in history, label
    assert f"({before[0]['peak_mb']:,.0f} and {before[1]['peak_mb']:,.0f} MB here" in text
    old_steps = load("ot-scale-steps-cpu.json")
    old_term = [row["seconds"] for row in old_steps["rows"] if (row["grid"], row["codes"]) == (32, 16384)][0]
    old_step = old_steps["steps"][-1]
    assert (f"took {old_term:.2f} s before and {quiet[2]:.2f} s after (fewer gigabyte allocations to fault in), VQ-WAE's "
            f"training step {old_step['vq_wae_seconds']:.2f} s and {step['vq_wae_seconds']:.2f} s, and VQ-VAE's "
            f"{old_step['vq_vae_seconds']:.2f} s and {step['vq_vae_seconds']:.2f} s") in history  # fmt: skip
    assert f"the ratio rose from {old_step['ratio']:.2f}x to {step['ratio']:.2f}x" in history


def test_the_large_codebook_run_is_its_json():
    record = load("scale-32x32-k16384-first-steps.json")
    assert "data.image_size=128 model.codebook_size=16384" in record["command"]
    steps = record["steps"]
    assert [step["step"] for step in steps] == [1, 2, 3]
    losses = ", ".join(f"{step['train/loss']:.4f}" for step in steps)
    perplexities = ", ".join(f"{step['train/perplexity']:.0f}" for step in steps)
    text = " ".join(appendix("A19").split())
    assert f"steps 1-3 at loss {losses}, perplexity {perplexities} of 16,384" in text


COMPILED_ROWS = ["VQ-VAE baseline", "VQ-WAE, the recipe (Sinkhorn, global)", "VQ-WAE, the recipe, compiled solver"]


def step_sentence(record: dict) -> str:
    ms, ratio = ({name: f"{record[key][name]:.{digits}f}" for name in COMPILED_ROWS}
                 for key, digits in (("step_ms", 1), ("ratio_to_vq_vae", 2)))  # fmt: skip
    base, eager, compiled = COMPILED_ROWS
    return (f"VQ-VAE's step {ms[base]} ms, the recipe's {ms[eager]} ms eager ({ratio[eager]}x) and {ms[compiled]} ms "
            f"compiled ({ratio[compiled]}x)")  # fmt: skip


def test_the_compiled_solver_figures_are_their_jsons():
    """The section's step times and ranges from the record of the solver with BLAS products (its run
    and two repeats); A24's before (the record of the generated reductions) and after."""
    _, eager, compiled = COMPILED_ROWS
    text, history = " ".join(SECTION.split()), " ".join(appendix("A24").split())
    now = load("train-step-compiled-solver-blas-cpu.json")
    assert now["command"] in text and now["rounds"] == 30 and step_sentence(now) in text
    runs = [now["ratio_to_vq_vae"]] + [run["ratio_to_vq_vae"] for run in now["repeats"]["f2a780b"]]
    eagers, compileds = [run[eager] for run in runs], [run[compiled] for run in runs]
    assert len(runs) == 3 and f"two more: eager {spread(eagers)}, compiled {spread(compileds)}" in text
    assert f"compiled {spread(compileds)}, eager {spread(eagers)} over three runs" in history
    record = load("train-step-compiled-solver-cpu.json")
    assert record["rounds"] == 30 and step_sentence(record) in history
    ratios = {code: [run["ratio_to_vq_vae"] for run in runs] for code, runs in record["repeats"].items()}
    after, before = ratios["df7bedf"], ratios["97f04ea"]
    assert (f"Three more runs of that command the same day: eager {spread([r[eager] for r in after])}, "
            f"compiled {spread([r[compiled] for r in after])}") in history  # fmt: skip
    assert f"between them: {before[0][eager]:.2f}x and {before[1][eager]:.2f}x" in history
    every = [record["ratio_to_vq_vae"][eager]] + [r[eager] for r in after + before]
    assert f"the eager step is {spread(every)} VQ-VAE's on this day" in history
    before_compiled = [record["ratio_to_vq_vae"][compiled]] + [r[compiled] for r in after]
    assert f"Compiled is now level with eager ({spread(before_compiled)} until" in text


LARGE_K = {"VQ-WAE": "vq-wae", "VQ-VAE": "vq-vae", "VQ-EMA": "vq-ema", "FSQ": "fsq"}


def test_the_large_k_table_is_its_json():
    """Each row of the code-use-at-large-K table from its run's test scores (command, codes, FSQ's
    levels), and the K = 512 figures the prose gives from the 1,500-step table's seed 0."""
    small = {"VQ-WAE": load("compare-mnist-1500-dual-default.json")["runs"]["vq-wae-dual20-c8"]["0"]}
    small |= {label: load("compare-mnist-1500.json")["runs"][name]["0"] for label, name in LARGE_K.items() if label != "VQ-WAE"}
    small_steps = load("compare-mnist-1500-curves.json")["step_time"]
    records = {512: ({label: run["test"] for label, run in small.items()},
                     {label: small_steps[name]["ratio"] for label, name in LARGE_K.items()}, {label: 512 for label in LARGE_K})}  # fmt: skip
    for size, fsq_codes in ((4096, 4375), (16384, 15360)):
        record = load(f"compare-mnist-k{size}.json")
        assert record["split"] == "test" and record["seeds"] == [0] and record["steps"] == 1500
        names = {label: name for label, name in LARGE_K.items() if name in record["runs"]}
        codes = {label: size if name != "fsq" else fsq_codes for label, name in names.items()}
        assert all(record["variants"][name][-1] == f"model.codebook_size={codes[label]}" for label, name in names.items())
        assert all(f"model.codebook_size={codes[label]}" in record["command"] for label in names)
        records[size] = ({label: record["runs"][name]["0"]["test"] for label, name in names.items()},
                         {label: record["step_time"][name]["ratio"] for label, name in names.items()}, codes)  # fmt: skip
    printed = SECTION.split("| K | variant | PSNR dB |", 1)[1].splitlines()[2:]
    expected = []
    for size, (tests, ratios, codes) in records.items():
        if size == 512:
            continue
        for label in tests:
            test = tests[label]
            assert test["num_images"] == 10000
            if size > 512:  # the large-K records keep the test split's code counts: all 640,000 latents, K bins
                counts = test["code_counts"]
                assert sum(counts) == 640000 and len(counts) == codes[label] and sum(c > 0 for c in counts) == test["codes_used"]
            expected.append(f"| {size:,} | {label} | {test['psnr']:.2f} | {test['ssim']:.3f} | {test['perplexity']:,.1f} | "
                            f"{test['codes_used']:,} | {100 * test['codes_used'] / codes[label]:.1f}% | {ratios[label]:.2f}x |")  # fmt: skip
    assert printed[: len(expected)] == expected and printed[len(expected)] == ""
    text = " ".join(SECTION.split())
    small_wae, small_vae = records[512][0]["VQ-WAE"], records[512][0]["VQ-VAE"]
    assert (f"VQ-WAE scores {small_wae['psnr']:.2f} dB with all {small_wae['codes_used']} codes in use, "
            f"VQ-VAE {small_vae['codes_used']} codes") in text  # fmt: skip
    wae, ema = records[4096][0]["VQ-WAE"], records[4096][0]["VQ-EMA"]
    gain = wae["psnr"] - records[512][0]["VQ-WAE"]["psnr"]
    assert f"VQ-WAE uses {100 * wae['codes_used'] / 4096:.1f}% of its codes and gains {gain:.2f} dB over its K = 512 run" in text
    assert f"stays {wae['psnr'] - ema['psnr']:.2f} dB behind" in text
    wae, ema, fsq = (records[16384][0][label] for label in ("VQ-WAE", "VQ-EMA", "FSQ"))
    assert (f"VQ-EMA keeps {100 * ema['codes_used'] / 16384:.1f}% of its codes in use but stays "
            f"{wae['psnr'] - ema['psnr']:.2f} dB behind ({ema['psnr']:.2f} dB") in text  # fmt: skip
    assert f"FSQ at 15,360 codes uses {100 * fsq['codes_used'] / 15360:.1f}% of them at {fsq['psnr']:.2f} dB" in text


def test_the_large_k_summary_row_is_its_json():
    def share(record, name, codes):
        test = record["runs"][name]["0"]["test"]
        return f"{100 * test['codes_used'] / codes:.1f}%", f"{test['psnr']:.2f}", test["codes_used"]

    k4096, k16384 = load("compare-mnist-k4096.json"), load("compare-mnist-k16384.json")
    wae, vae, ema, fsq = (share(k4096, name, codes) for name, codes in
                          (("vq-wae", 4096), ("vq-vae", 4096), ("vq-ema", 4096), ("fsq", 4375)))  # fmt: skip
    big, big_vae, big_ema, big_fsq = (share(k16384, name, codes) for name, codes in
                                      (("vq-wae", 16384), ("vq-vae", 16384), ("vq-ema", 16384), ("fsq", 15360)))  # fmt: skip
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert (f"K = 4,096: VQ-WAE {wae[0]} of its codes at {wae[1]} dB (VQ-VAE {vae[2]} codes, VQ-EMA {ema[0]} at "
            f"{ema[1]} dB, FSQ {fsq[0]} at {fsq[1]} dB); K = 16,384: {big[0]} at {big[1]} dB (VQ-VAE {big_vae[2]} codes, "
            f"VQ-EMA {big_ema[0]} at {big_ema[1]} dB, FSQ {big_fsq[0]} at {big_fsq[1]} dB)") in summary  # fmt: skip
    ruled = load("k16384-relax16-test.json")
    assert (f"with the relaxation's rule (16 there, now the default): {100 * ruled['codes_used'] / 16384:.1f}% at "
            f"{ruled['psnr']:.2f} dB") in summary  # fmt: skip
    readme = " ".join(README.split())
    assert f"16 at K = 16,384 keeps {100 * ruled['codes_used'] / 16384:.1f}% of the codes in use" in readme


def test_the_relaxation_rule_table_is_its_json():
    """The relaxation table and the unused codes' distances (history A22), from their records: the
    relaxation-1 rows from the large-K records' validation scores, the levers from their run, the
    test row from tokenizer.evaluation's record; the scale section keeps the test row's headline."""
    levers = load("k16384-levers-validation.json")
    assert levers["split"] == "validation" and levers["steps"] == 1500 and levers["seeds"] == [0]
    assert levers["variants"]["vq-wae-relax16"][-1] == "model.transport.code_relaxation=16"
    assert levers["variants"]["vq-wae-cand32"][-1] == "model.transport.dual_candidates=32"
    test = load("k16384-relax16-test.json")
    assert test["split"] == "test" and test["num_images"] == 10000 and "vq-wae-relax16" in test["tokenizer"]
    k4096 = load("k4096-relax4-validation.json")
    assert k4096["split"] == "validation" and k4096["steps"] == 1500 and k4096["seeds"] == [0]
    assert k4096["variants"]["vq-wae-relax4"][-2:] == ["model.codebook_size=4096", "model.transport.code_relaxation=4"]
    rows = [(4096, "relaxation 1", "validation", load("compare-mnist-k4096.json")["runs"]["vq-wae"]["0"]["validation"]),
            (4096, "relaxation 4", "validation", k4096["runs"]["vq-wae-relax4"]["0"]["validation"]),
            (16384, "relaxation 1", "validation", load("compare-mnist-k16384.json")["runs"]["vq-wae"]["0"]["validation"]),
            (16384, "relaxation 1, 32 dual candidates", "validation", levers["runs"]["vq-wae-cand32"]["0"]["validation"]),
            (16384, "relaxation 16", "validation", levers["runs"]["vq-wae-relax16"]["0"]["validation"]),
            (16384, "relaxation 16", "test", test)]  # fmt: skip
    printed = RULE.split("| K | setting | split |", 1)[1].splitlines()[2:]
    expected = [f"| {size:,} | {setting} | {split} | {run['psnr']:.2f} | {run['perplexity']:,.1f} | {run['codes_used']:,} | "
                f"{100 * run['codes_used'] / size:.1f}% |" for size, setting, split, run in rows]  # fmt: skip
    assert printed[: len(expected)] == expected and printed[len(expected)] == ""
    headline = f"Relaxation 16 puts {100 * test['codes_used'] / 16384:.1f}% of the 16,384 codes to use on the test split at {test['psnr']:.2f} dB"
    text = " ".join(RULE.split())
    assert headline in " ".join(SECTION.split()) and headline in text
    for size in (16384, 4096):
        record = load(f"unused-codes-mnist-k{size}.json")
        assert record["codebook_size"] == size and record["split"] == "validation" and record["images"] == 2000
        assert record["used"]["codes"] + record["unused"]["codes"] == size and record["code_relaxation"] == 1.0
        assert f"{record['unused']['codes']:,} unused" in text and f"{record['unused']['in_scales']['median']:.2f}" in text
    relax4 = k4096["runs"]["vq-wae-relax4"]["0"]["validation"]
    assert f"4 at 4,096 ({relax4['codes_used']:,} of 4,096 codes in use at {relax4['psnr']:.2f} dB on validation" in text
    k16384 = load("unused-codes-mnist-k16384.json")
    assert f"the used ones {k16384['used']['in_scales']['median']:.2f}" in text
    assert f"at tau = 1 scale, {k16384['unused_target_share']:.1e} of pi" in text


def test_the_colour_large_k_table_is_its_json():
    """The scale section's colour rows: each variant's test-crop scores and its code use on 10,240 train
    crops, from the colour large-K records (the recipe's default relaxation rule, FSQ at its
    paper's levels), beside the colour section's K = 512 seed 0 of the same recipe."""
    printed = SECTION.split("| K | variant, colour photos |", 1)[1].splitlines()[2:]
    expected = []
    for size, fsq_codes in ((4096, 4375), (16384, 15360)):
        record = load(f"compare-photos-k{size}.json")
        assert record["split"] == "test" and record["seeds"] == [0] and record["steps"] == 1500
        assert record["command"] in " ".join(SECTION.split())
        for label, name in LARGE_K.items():
            if name not in record["runs"]:
                continue
            codes = fsq_codes if name == "fsq" else size
            variant = record["variants"][name]
            assert variant[-1] == f"model.codebook_size={codes}" and "photos" in " ".join(variant)
            test, train = record["runs"][name]["0"]["test"], record["runs"][name]["0"]["train_40_batches"]
            assert test["num_images"] == 2000 and train["num_images"] == 10240
            expected.append(f"| {size:,} | {label} | {test['psnr']:.2f} | {test['ssim']:.3f} | {test['perplexity']:,.1f} | "
                            f"{test['codes_used']:,} ({100 * test['codes_used'] / codes:.1f}%) | "
                            f"{train['codes_used']:,} ({100 * train['codes_used'] / codes:.1f}%) |")  # fmt: skip
    assert printed[: len(expected)] == expected and printed[len(expected)] == ""
    text = " ".join(SECTION.replace("**", "").split())
    small = load("compare-photos-1500.json")["runs"]["vq-wae"]["0"]["test"]
    wae = load("compare-photos-k4096.json")["runs"]["vq-wae"]["0"]
    assert (f"{100 * wae['test']['codes_used'] / 4096:.1f}% of its codes on the test crops "
            f"({100 * wae['train_40_batches']['codes_used'] / 4096:.1f}% on the train crops) at {wae['test']['psnr']:.2f} dB, "
            f"{wae['test']['psnr'] - small['psnr']:.2f} dB above its K = 512 seed 0 ({small['psnr']:.2f} dB") in text  # fmt: skip
    big = load("compare-photos-k16384.json")["runs"]["vq-wae"]["0"]
    assert (f"K = 16,384: {100 * big['train_40_batches']['codes_used'] / 16384:.1f}% of the codes in use on the train crops "
            f"({big['train_40_batches']['codes_used']:,}, perplexity {big['train_40_batches']['perplexity']:,.1f}) at "
            f"{big['test']['psnr']:.2f} dB on the test crops, {big['test']['psnr'] - small['psnr']:.2f} dB above K = 512") in text  # fmt: skip
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert f"K = 4,096: VQ-WAE {100 * wae['test']['codes_used'] / 4096:.1f}% of its codes on the test crops at {wae['test']['psnr']:.2f} dB" in summary
    assert f"K = 16,384: {100 * big['train_40_batches']['codes_used'] / 16384:.1f}% on 10,240 train crops at {big['test']['psnr']:.2f} dB" in summary
    runs = load("compare-photos-k16384.json")["runs"]
    vae, ema, fsq = (runs[name]["0"]["test"] for name in ("vq-vae", "vq-ema", "fsq"))
    share = {name: f"{100 * test['codes_used'] / codes:.1f}%" for name, test, codes in
             (("vq-wae", big["test"], 16384), ("vq-ema", ema, 16384), ("fsq", fsq, 15360))}  # fmt: skip
    assert (f"({share['vq-wae']} on test; VQ-VAE {vae['codes_used']} codes, VQ-EMA {share['vq-ema']} at {ema['psnr']:.2f} dB, "
            f"FSQ {share['fsq']} at {fsq['psnr']:.2f} dB)") in summary  # fmt: skip
    assert (f"VQ-WAE leads every baseline in PSNR (FSQ {fsq['psnr']:.2f}, VQ-EMA {ema['psnr']:.2f}, VQ-VAE {vae['psnr']:.2f} dB) "
            f"and in test-crop code use (VQ-EMA {share['vq-ema']}, FSQ {share['fsq']}, VQ-VAE {vae['codes_used']} codes)") in text  # fmt: skip
    assert all(runs[name]["0"]["test"]["psnr"] < big["test"]["psnr"] for name in ("vq-vae", "vq-ema", "fsq"))


def test_the_step_breakdown_is_its_json():
    """The section's and A24's account of the recipe's extra step time, and the summary's missed
    ratio, from step-breakdown-cpu.json (and the eager runs of the compiled-solver record)."""
    record = load("step-breakdown-cpu.json")
    text, history = " ".join(SECTION.split()), " ".join(appendix("A24").split())
    base, recipe = record["step_ms"]["VQ-VAE"], record["step_ms"]["VQ-WAE"]
    profiled = record["profiled"]
    solver, alone, allowed = profiled["solver_ms"], record["solver_alone_ms"], 0.05 * base
    assert record["kept_memory"] and (record["rounds"], record["profiled_rounds"]) == (30, 10)
    assert record["command"] in text and record["command"] in history
    assert (f"it allows {allowed:.1f} ms over VQ-VAE's {base:.1f} ms step, and the solver takes {solver:.1f} ms of "
            f"the recipe's under the profiler ({alone:.1f} ms alone)") in text  # fmt: skip
    assert (f"VQ-VAE's step {base:.1f} ms, the recipe's {recipe:.1f} ms ({recipe / base:.2f}x); 1.05x would be "
            f"{1.05 * base:.1f} ms") in history  # fmt: skip
    steps = profiled["step_ms"]
    assert f"(which adds its own cost: {steps['VQ-VAE']:.1f} and {steps['VQ-WAE']:.1f} ms) the solver takes {solver:.1f} ms" in history
    operators = {row["operator"]: row for row in profiled["operators"]}
    named = [("aten::mm", "{calls} matrix-vector products {ms} ms"), ("aten::topk", "top-8 candidates {ms} ms (one"),
             ("aten::sub", "{calls} subtractions {ms} ms"), ("aten::gather", "{calls} gathers {ms} ms"),
             ("aten::exp_", "exp {ms} ms"), ("aten::min", "{calls} minima (the dual steps' cells) {ms} ms")]  # fmt: skip
    for operator, phrase in named:
        row = operators[operator]
        assert phrase.format(calls=f"{row['calls_per_step']:.0f}", ms=f"{row['ms']:.2f}") in history, operator
    assert [row["operator"] for row in profiled["operators"][:6]] == [operator for operator, _ in sorted(
        named, key=lambda item: -operators[item[0]]["ms"])]  # the six largest, every one named  # fmt: skip
    core = operators["aten::mm"]["ms"] + operators["aten::topk"]["ms"]
    assert f"alone take {core:.1f} ms under the profiler, about all that 1.05x allows ({allowed:.1f} ms)" in history
    assert abs(core - allowed) < 0.1 * allowed
    eager = COMPILED_ROWS[1]
    blas = load("train-step-compiled-solver-blas-cpu.json")
    eagers = [run["ratio_to_vq_vae"][eager] for run in [blas, *blas["repeats"]["f2a780b"]]] + [record["ratio"]]
    assert f"the recipe's CPU step stays {spread(eagers)} VQ-VAE's, not 1.05x" in " ".join(SUMMARY.split())
