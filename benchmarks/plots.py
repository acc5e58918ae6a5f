"""The figures of README.md and docs/, drawn by the benchmarks that measure their numbers.

Each function takes what a benchmark's results.json holds and writes one PNG; the benchmark calls it
when it writes its tables, so a figure and its numbers always come from the same run. To redraw the
figures of the repository from the results it keeps (no training, no sampling):

    python -m benchmarks.plots --out docs/figures

which reads benchmarks/results/ (the files named in FIGURES) and writes one PNG per figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DPI = 110


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _labelled(axis, xlabel: str, ylabel: str, title: str):
    """Axis labels, a light grid, the legend and the title; returns the axis's figure."""
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    return axis.figure


def _mean_band(axis, label: str, curves: list[dict[int, float]]) -> None:
    """One line per variant: the mean over seeds at every step all seeds logged, and the min-max band."""
    steps = sorted(set.intersection(*(set(curve) for curve in curves)))
    values = [[curve[step] for curve in curves] for step in steps]
    (line,) = axis.plot(steps, [statistics.fmean(v) for v in values], label=label, linewidth=1.6, marker="o", markersize=3)
    if len(curves) > 1:
        axis.fill_between(steps, [min(v) for v in values], [max(v) for v in values], alpha=0.2, color=line.get_color())


def training_curves(
    curves: dict[str, dict[str, dict[str, dict[int, float]]]], path: str | Path, title: str,
    xlabel: str = "training step", x_per_step: dict[str, float] | None = None,
) -> Path:  # fmt: skip
    """Validation PSNR and perplexity against training steps, one line per variant (mean over seeds,
    min-max band), and the OT term's gap to the exact optimum where a run logged it.
    `curves[variant][seed][metric] = {step: value}` with metrics `psnr`, `perplexity`, `ot_gap`;
    `x_per_step[variant]` puts another x under a variant's steps (epochs: its batch / epoch size)."""
    panels = [("psnr", "validation PSNR (dB)"), ("perplexity", "validation perplexity (of K codes)")]
    if any("ot_gap" in run and run["ot_gap"] for runs in curves.values() for run in runs.values()):
        panels.append(("ot_gap", "OT term: gap to the exact optimum (%)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8))
    for axis, (metric, label) in zip(axes, panels):
        for variant, runs in curves.items():
            scale = (x_per_step or {}).get(variant, 1)
            series = [
                {int(step) * scale: value * (100 if metric == "ot_gap" else 1) for step, value in run[metric].items()}
                for run in runs.values()
                if run.get(metric)
            ]
            if series:
                _mean_band(axis, variant, series)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def code_use(counts: dict[str, list[int]], path: str | Path, title: str) -> Path:
    """How often each code is used, codes sorted from most to least used, one line per variant:
    a flat line at 1/K is a perfectly used codebook, a cliff is a collapsed one."""
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    for variant, histogram in counts.items():
        total = sum(histogram)
        shares = sorted((count / total for count in histogram), reverse=True)
        axis.plot(range(1, len(shares) + 1), shares, label=f"{variant} ({sum(c > 0 for c in histogram)} used)")
    size = max(len(histogram) for histogram in counts.values())
    axis.axhline(1 / size, color="grey", linestyle=":", linewidth=1, label=f"uniform (1/{size})")
    axis.set_yscale("log")
    return _save(_labelled(axis, "code rank (most used first)", "share of latents", title), path)


def gfid_vs_samples(settings: dict[str, dict[int, float]], path: str | Path, title: str) -> Path:
    """gFID against the number of samples scored, one line per sampling setting: small-sample FID
    reads high, and this is how much."""
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    for name, by_count in settings.items():
        counts = sorted(int(count) for count in by_count)
        axis.plot(counts, [by_count[count] if count in by_count else by_count[str(count)] for count in counts],
                  marker="o", label=name)  # fmt: skip
    axis.set_xscale("log")
    ticks = sorted({int(count) for by_count in settings.values() for count in by_count})
    axis.set_xticks(ticks, [f"{tick:,}" for tick in ticks])
    axis.minorticks_off()
    return _save(_labelled(axis, "samples (and reference images)", "gFID", title), path)


def step_ratios(ratios: dict[str, float], path: str | Path, title: str) -> Path:
    """Training-step time of each variant relative to the plain VQ-VAE step, as bars."""
    figure, axis = plt.subplots(figsize=(6.4, 0.5 + 0.45 * len(ratios)))
    names = list(ratios)
    axis.barh(names, [ratios[name] for name in names], color="tab:blue")
    axis.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    for index, name in enumerate(names):
        axis.text(ratios[name], index, f" {ratios[name]:.2f}x", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("training step time / VQ-VAE step time")
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


def compare_figures(report: dict, folder: str | Path, title: str) -> list[Path]:
    """The figures of one `benchmarks.compare_tokenizers` report (its results.json)."""
    folder = Path(folder)
    paths = []
    curves = {name: {seed: run["curves"] for seed, run in runs.items() if "curves" in run}
              for name, runs in report["runs"].items()}  # fmt: skip
    if all(curves.values()):
        paths.append(training_curves(curves, folder / "tokenizer-curves.png", title))
    split = report["split"]
    counts = {}
    for name, runs in report["runs"].items():
        first = next(iter(runs.values()))
        if "code_counts" in first[split]:
            counts[name] = first[split]["code_counts"]
    if counts:
        seed = next(iter(next(iter(report["runs"].values()))))
        paths.append(code_use(counts, folder / "code-use.png", f"code use on the {split} split, seed {seed}; {title}"))
    if report.get("step_time"):
        ratios = {name: timing["ratio"] for name, timing in report["step_time"].items()}
        paths.append(step_ratios(ratios, folder / "step-time.png", f"training step, side by side ({report['device']})"))
    return paths


def generation_figures(report: dict, folder: str | Path, title: str, name: str = "gfid-vs-samples.png") -> list[Path]:
    """The figure of one `benchmarks.generation_fid` report (its results.json)."""
    settings = {name: setting["fid"] for name, setting in report["settings"].items()}
    return [gfid_vs_samples(settings, Path(folder) / name, title)]


def gpu_prior_figures(record: dict, folder: str | Path, title: str) -> list[Path]:
    """The gFID figure of the GPU prior's record (`benchmarks.gpu.gpu_prior`'s codes, scored on the
    CPU by `benchmarks.generation_fid --codes`; kept under `gfid_of_call_2`)."""
    return generation_figures(record["gfid_of_call_2"], folder, title, "gfid-vs-samples-gpu-prior.png")


def batch_size_figures(record: dict, folder: str | Path, title: str) -> list[Path]:
    """Validation PSNR and perplexity against epochs, one line per batch size
    (`benchmarks/results/batch-size-*.json`)."""
    names = {size: f"batch {size}, lr {run['learning_rate']:.2g}" for size, run in record["runs"].items()}
    curves = {names[size]: {0: run["curves"]} for size, run in record["runs"].items()}
    per_step = {names[size]: int(size) / record["epoch_images"] for size in record["runs"]}
    return [training_curves(curves, Path(folder) / "batch-size-curves.png", title, "epochs (50,000 images)", per_step)]


def machine_spans(chunks: list[dict]) -> list[tuple[str, int, int]]:
    """(machine, first step, last step) of a chunked run, neighbouring chunks on the same kind of
    machine ("GPU" for a device named H100 / H200 / GPU..., else "CPU") merged into one span."""
    spans = []
    for chunk in chunks:
        machine = "GPU" if (chunk["device"] or "").startswith(("H100", "H200", "GPU")) else "CPU"
        if spans and spans[-1][0] == machine and spans[-1][2] == chunk["first_step"]:
            spans[-1] = (machine, spans[-1][1], chunk["last_step"])
        else:
            spans.append((machine, chunk["first_step"], chunk["last_step"]))
    return spans


def run_progress_figures(record: dict, folder: str | Path, title: str) -> list[Path]:
    """A chunked run (`benchmarks.run_progress`'s record): the training reconstruction term, the
    validation PSNR and the perplexity against steps, each chunk shaded by the machine it ran on."""
    steps = sorted(int(step) for step in record["train"])
    train = [record["train"][str(step)] for step in steps]
    validation = record["validation"]
    panels = [("train reconstruction (MSE)", [("train", steps, [row["train/reconstruction"] for row in train])]),
              ("validation PSNR (dB)", [("validation", [row["step"] for row in validation],
                                         [row["validation/psnr"] for row in validation])]),
              ("perplexity (of K codes)", [("train batch", steps, [row["train/perplexity"] for row in train]),
                                           ("validation split", [row["step"] for row in validation],
                                            [row["validation/perplexity"] for row in validation])])]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8))
    for axis, (label, lines) in zip(axes, panels):
        shaded = set()
        for machine, first, last in machine_spans(record["chunks"]):
            axis.axvspan(first, last, color="tab:orange" if machine == "GPU" else "tab:grey", alpha=0.12,
                         label=None if machine in shaded else f"on the {machine}")  # fmt: skip
            shaded.add(machine)
        for name, xs, ys in lines:
            axis.plot(xs, ys, label=name, marker="o", markersize=3 if len(xs) > 8 else 6, linewidth=1.4)
        if label.startswith("train reconstruction"):
            axis.set_yscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:.0f}k" if x else "0"))
        _labelled(axis, "training step", label, "")
    figure.suptitle(title, fontsize=10)
    return [_save(figure, Path(folder) / "run-100ep-curves.png")]


def ot_scale_figures(record: dict, folder: str | Path, title: str) -> list[Path]:
    """The OT term's time and peak memory against latents x codes (`benchmarks.ot_scale`'s record):
    one line per memory budget, the whole matrix's and each budget's, log-log."""
    budgets = sorted({row["budget_mb"] or 0 for row in record["rows"]})
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in ((axes[0], "seconds", "seconds (forward + backward)"), (axes[1], "peak_mb", "peak MB")):
        for budget in budgets:
            rows = sorted((row for row in record["rows"] if (row["budget_mb"] or 0) == budget and row[key] > 0),
                          key=lambda row: row["latents_x_codes"])  # fmt: skip (a peak below the page size reads 0)
            name = f"OT term, within {budget:g} MB" if budget else "OT term, whole matrix"
            axis.plot([row["latents_x_codes"] for row in rows], [row[key] for row in rows], label=name,
                      marker="o" if budget else "s", linestyle="--" if budget else "-", linewidth=1.4)  # fmt: skip
        if key == "seconds":  # the whole training steps, where the record has them
            for name, field in (("VQ-WAE training step", "vq_wae_seconds"), ("VQ-VAE training step", "vq_vae_seconds")):
                steps = sorted(record.get("steps", []), key=lambda step: step["grid"] ** 2 * step["codes"])
                pairs = [record["batch"] * step["grid"] ** 2 * step["codes"] for step in steps]
                if steps:
                    axis.plot(pairs, [step[field] for step in steps], label=name, marker="^", linestyle=":", linewidth=1.2)
        if any(len(line.get_ydata()) for line in axis.lines):  # tiny test sizes can leave a panel empty
            axis.set_xscale("log")
            axis.set_yscale("log")
        _labelled(axis, "latents x codes (batch x grid x K)", label, "")
    figure.suptitle(title, fontsize=10)
    return [_save(figure, Path(folder) / "ot-scale.png")]


# The repository's figures: results file (under benchmarks/results/), how to draw it, its title.
FIGURES = {
    "compare-mnist-1500-curves.json": (compare_figures, "MNIST, K=512, 1500 steps, seed 0, 2-core CPU"),
    "gfid-mnist-10ep-cpu.json": (generation_figures, "gFID against MNIST test, 10-epoch tokenizer, CPU prior (6 x 256)"),
    "gpu-prior-h100-2026-11-27.json": (gpu_prior_figures, "gFID against MNIST test, 10-epoch tokenizer, GPU prior (12 x 512)"),
    "batch-size-mnist-10ep-2026-12-01.json": (batch_size_figures, "MNIST VQ-WAE, 10 epochs, seed 0, lr 2e-3 x sqrt(batch / 32), 2-core CPU"),
    "ot-scale-steps-cpu-2026-12-04.json": (ot_scale_figures, "VQ-WAE's OT term and training step at batch 32, K 512-16,384, grids 8x8-32x32, 2-core CPU"),
    "run-100ep-2026-12-01.json": (run_progress_figures, "MNIST VQ-WAE, the paper's 100 epochs (156,250 steps of batch 32), seed 0"),
}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    parser.add_argument("--results", default=str(RESULTS), help="folder holding the results files of FIGURES")
    args = parser.parse_args(argv)
    written = []
    for name, (draw, title) in FIGURES.items():
        source = Path(args.results) / name
        if not source.is_file():
            print(f"skipped {name}: not in {args.results} (the benchmark that measures it writes it)")
            continue
        written += draw(json.loads(source.read_text()), args.out, title)
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
