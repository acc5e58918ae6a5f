"""Section A5's numbers (the GPU path and the paper's 100-epoch run) and the summary's and
README's rows that come from it, against the results JSON the runs wrote: the H200 suite, the
100-epoch run half-way and finished, and its test split."""

from tests.published.book import BENCHMARKS, HISTORY, README, SUMMARY, load, table


def assert_contiguous(chunks: list[dict]) -> None:
    """Each chunk of a resumed run starts where the one before it ended: no step lost or repeated."""
    assert [c["first_step"] for c in chunks[1:]] == [c["last_step"] for c in chunks[:-1]]


def test_the_h200_suite_is_its_json():
    """The H200 step times (summary row, the 1,500-step section and A5's table) and A5's 100-epoch chunk table,
    from gpu-h200-2026-11-30.json."""
    record = load("gpu-h200-2026-11-30.json")
    ms = {label: f"{value:.2f}" for label, value in record["step_ms"].items() if isinstance(value, float)}
    ratio = {mode: f"{record['step_ms'][f'VQ-WAE, {mode}'] / record['step_ms'][f'VQ-VAE, {mode}']:.2f}x"
             for mode in ("eager", "graph", "bf16")}  # fmt: skip
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert (f"H200: {ratio['eager']} eager, {ratio['graph']} as CUDA graphs (VQ-WAE's graphed step "
            f"{ms['VQ-WAE, graph']} ms, below VQ-VAE's eager {ms['VQ-VAE, eager']})") in summary  # fmt: skip
    text = HISTORY
    section = " ".join(BENCHMARKS.replace("**", "").split())
    assert (f"the same step is {ratio['eager']} eager ({ms['VQ-WAE, eager']} against {ms['VQ-VAE, eager']} ms) and "
            f"{ratio['graph']} with each step replayed as one CUDA graph ({ms['VQ-WAE, graph']} against "
            f"{ms['VQ-VAE, graph']} ms)") in section  # fmt: skip
    a5 = text.split("**2026-11-30, the CUDA-graph step and the 100-epoch run on an H200**")[1].split("\n**2026-12-01")[0]
    for mode, label in (("eager", "eager"), ("graph", "CUDA graph"), ("bf16", "bf16 autocast")):
        line = next(line for line in a5.splitlines() if line.startswith(f"| {label} "))
        row = [cell.strip() for cell in line.strip(" |").split("|")][1:]
        assert row[:2] == [ms[f"VQ-VAE, {mode}"], ms[f"VQ-WAE, {mode}"]] and ratio[mode] in row[2], label
    run = record["run_100ep"]
    rows = {row["step"]: row for row in run["train_metrics_every_5000_steps"]}
    steps = [1, *range(5000, 35001, 5000)]
    table = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ")[1:] for line in a5.splitlines()
             if line.startswith(("| train ", "| codes used"))}  # fmt: skip
    assert [cell.strip() for cell in table["train transport term"]] == [f"{rows[s]['train/transport']:.1e}" for s in steps]
    assert [cell.strip() for cell in table["train perplexity (batch)"]] == [f"{rows[s]['train/perplexity']:.0f}" for s in steps]
    assert [cell.strip() for cell in table["codes used (batch of 2,048 latents)"]] == [f"{rows[s]['train/codes_used']:.0f}" for s in steps]
    assert f"{run['steps_done']:,} of {run['of']:,} steps" in " ".join(a5.replace("**", "").split())
    loop = run["loop_ms_per_step"]
    assert f"a step took {loop['chunk 1']:.1f} and {loop['chunk 2']:.1f} ms" in " ".join(a5.split())


def test_the_100_epoch_progress_is_its_json():
    """A5's steps half-way, the CPU pace, the mid-run validation and the training-terms table, from
    the run's progress record of that day."""
    record = load("run-100ep-progress-2026-12-01.json")
    chunks = record["chunks"]
    assert record["of"] == 156_250 and record["step"] == chunks[-1]["last_step"]
    assert_contiguous(chunks)
    gpu = sum(c["steps"] for c in chunks if c["device"].startswith("H200"))
    text = " ".join(HISTORY.replace("**", "").split("2026-12-01, the 100-epoch run goes on")[1].split())
    assert f"{record['step']:,} of 156,250 steps ({100 * record['step'] // 156_250}%): {record['step'] - gpu:,} on the CPU" in text
    pace = chunks[-1]["loop_ms_per_step"]
    left = 156_250 - record["step"]
    assert f"ran {pace:.2f} ms a step, so the remaining {left:,} steps take about {left * pace / 60e3:.0f} minutes" in text
    [validation] = record["validation"]
    assert (f"(step {validation['step']:,}) the validation split scores {validation['validation/psnr']:.2f} dB, perplexity "
            f"{validation['validation/perplexity']:.1f}, all {validation['validation/codes_used']:.0f} codes") in text  # fmt: skip
    steps = ["40000", "50000", "60000", "70000", "80000"]
    rows = {"train transport term": [f"{record['train'][s]['train/transport']:.1e}" for s in steps],
            "train perplexity (batch)": [f"{record['train'][s]['train/perplexity']:.0f}" for s in steps],
            "codes used (batch of 2,048 latents)": [f"{record['train'][s]['train/codes_used']:.0f}" for s in steps]}  # fmt: skip
    for label, cells in rows.items():
        assert f"| {label} | {' | '.join(cells)} |" in text, label


def test_the_papers_row_at_its_budget_is_its_json():
    """The finished 100-epoch run: README's row and sentence, the summary's row and A5's last part
    (its chunk table, the test-split table, the validations) from its two records: where it ran
    (benchmarks.run_progress) and the test split with rFID on all 10k images (tokenizer.evaluation)."""
    run, test = load("run-100ep-2026-12-01.json"), load("run-100ep-test-2026-12-01.json")
    assert run["finished"] and run["step"] == run["of"] == 156_250 and run["batch_size"] == 32
    assert_contiguous(run["chunks"])
    assert test["split"] == "test" and test["tokenizer"] == "outputs/run-100ep/final"
    assert test["num_images"] == test["rfid"]["n"] == test["rfid"]["reference_n"] == 10_000
    psnr, ssim, rfid, perplexity = (f"{test['psnr']:.2f}", f"{test['ssim']:.3f}", f"{test['rfid']['fid']:.2f}",
                                    f"{test['perplexity']:.1f}")  # fmt: skip
    row = [psnr, ssim, f"{rfid} (10k images)", perplexity, str(test["codes_used"])]
    assert table("tokenizer, 10 epochs")["VQ-WAE (ours), 100 epochs, seed 0"] == row
    readme = " ".join(README.replace("**", "").split())
    assert f"the recipe scores {psnr} dB, rFID {rfid} on all 10k test images and perplexity {perplexity}" in readme
    summary = " ".join(SUMMARY.replace("**", "").split())
    assert f"the 100-epoch one's, {rfid}, is below" in summary
    assert f"VQ-WAE {psnr} dB, SSIM {ssim}, rFID {rfid} (10k), perplexity {perplexity}, {test['codes_used']} codes" in summary
    part = HISTORY.replace("**", "").split("2026-12-01, the paper's 100 epochs, finished")[1]
    part = part.split("\n## ", 1)[0] + BENCHMARKS.replace("**", "").split("At the paper's budget: 100 epochs")[1]
    for number, chunk in enumerate(run["chunks"], 1):
        pace = "-" if chunk["loop_ms_per_step"] is None else f"{chunk['loop_ms_per_step']:.2f}"  # one log row: no pace
        cells = [str(number), chunk["device"], f"{chunk['first_step']:,}-{chunk['last_step']:,}", f"{chunk['minutes']:.1f}", pace]
        assert f"\n| {' | '.join(cells)} |" in part, number
    assert f"\n| VQ-WAE (ours), 100 epochs, seed 0 | {' | '.join(row[:2])} | {rfid} | {' | '.join(row[3:])} |" in part
    floor = load("tokenizer-floor-mnist-10ep-seed0.json")["runs"]["vq-wae"]["0"]["test"]
    cells = [f"{floor['psnr']:.2f}", f"{floor['ssim']:.3f}", f"{floor['rfid']:.2f}", f"{floor['perplexity']:.1f}", str(floor["codes_used"])]
    assert f"\n| VQ-WAE (ours), 10 epochs, seed 0 | {' | '.join(cells)} |" in part
    text = " ".join(part.split())
    assert f"scores {psnr} dB (the paper: 35.61, so +{test['psnr'] - 35.61:.2f} dB) and rFID {rfid} on all 10k" in text
    assert f"+{test['psnr'] - floor['psnr']:.2f} dB over its own 10 epochs and rFID {floor['rfid']:.2f} -> {rfid}" in text
    assert f"Its perplexity, {perplexity}, stays below the paper's 507.7" in text
    late = [row for step, row in run["train"].items() if int(step) > 83_000]
    transport, codes = [row["train/transport"] for row in late], [row["train/codes_used"] for row in late]
    assert (f"transport term stays within {min(transport):.1e}-{max(transport):.1e} and a batch uses "
            f"{min(codes):.0f}-{max(codes):.0f} codes") in text  # fmt: skip
    for validation in run["validation"]:
        step, value = validation["step"], validation["validation/psnr"]
        assert f"step {step:,}: {value:.2f} dB, perplexity {validation['validation/perplexity']:.1f}" in text, step
