"""benchmarks/plots.py: every figure is drawn from a results report (not blank, a sensible size),
the OT-gap panel appears only when a run logged the gap, and the repository's figures redraw from
the results files it keeps."""

from PIL import Image

from benchmarks import plots
from tests.helpers import assert_figure


def curves(offset: float, with_gap: bool) -> dict:
    steps = [100, 200, 300]
    run = {"psnr": {step: 20 + offset + step / 100 for step in steps},
           "perplexity": {step: 100 + offset * 10 + step / 10 for step in steps}}  # fmt: skip
    run["ot_gap"] = {step: 0.02 - step / 1e5 for step in steps} if with_gap else {}
    return run


def test_training_curves_show_an_ot_gap_panel_only_when_logged(tmp_path):
    without = plots.training_curves({"a": {0: curves(0, False), 1: curves(1, False)}, "b": {0: curves(2, False)}},
                                    tmp_path / "two.png", "two panels")  # fmt: skip
    with_gap = plots.training_curves({"a": {0: curves(0, True), 1: curves(1, True)}, "b": {0: curves(2, False)}},
                                     tmp_path / "three.png", "three panels")  # fmt: skip
    assert_figure(without)
    assert_figure(with_gap)
    with Image.open(without) as two, Image.open(with_gap) as three:
        assert three.width > 1.4 * two.width  # a third panel of the same size


def test_code_use_and_gfid_and_step_time(tmp_path):
    counts = {"flat": [10] * 64, "collapsed": [600] + [1] * 40 + [0] * 23}
    assert_figure(plots.code_use(counts, tmp_path / "codes.png", "code use"))
    settings = {"unconditional": {"1000": 21.8, "10000": 15.3}, "g=2": {1000: 13.8, 10000: 8.4}}
    assert_figure(plots.gfid_vs_samples(settings, tmp_path / "gfid.png", "gFID"))
    assert_figure(plots.step_ratios({"vq-vae": 1.0, "vq-wae": 1.15}, tmp_path / "step.png", "steps"))


def test_batch_size_curves_are_drawn_against_epochs(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plots, "_mean_band", lambda axis, label, series: drawn.setdefault(label, sorted(series[0])))
    record = {"epoch_images": 1000, "runs": {
        "32": {"learning_rate": 0.002, "curves": {"psnr": {"500": 30.0, "1000": 31.0}, "perplexity": {"500": 400.0, "1000": 410.0}}},
        "128": {"learning_rate": 0.004, "curves": {"psnr": {"500": 29.0}, "perplexity": {"500": 420.0}}}}}  # fmt: skip
    [path] = plots.batch_size_figures(record, tmp_path, "batches")
    assert path.name == "batch-size-curves.png" and path.is_file()
    # 500 steps of 32 images are 16 epochs of 1,000; of 128 images, 64.
    assert drawn == {"batch 32, lr 0.002": [16.0, 32.0], "batch 128, lr 0.004": [64.0]}


def test_a_chunked_run_is_drawn_with_its_machines():
    """Neighbouring chunks on one kind of machine are one shaded span; the figure draws from the
    record run_progress writes."""
    chunks = [{"first_step": 0, "last_step": 20, "device": "H200 (call 1)"},
              {"first_step": 20, "last_step": 35, "device": "H200 (call 2)"},
              {"first_step": 35, "last_step": 41, "device": "CPU, 2 cores"},
              {"first_step": 41, "last_step": 60, "device": None},
              {"first_step": 60, "last_step": 70, "device": "GPU"}]  # fmt: skip
    assert plots.machine_spans(chunks) == [("GPU", 0, 35), ("CPU", 35, 60), ("GPU", 60, 70)]


def test_the_run_progress_figure_is_drawn(tmp_path):
    record = {"chunks": [{"first_step": 0, "last_step": 10, "device": "H200"}, {"first_step": 10, "last_step": 20, "device": "CPU"}],
              "train": {str(step): {"train/reconstruction": 1e-3 / step, "train/perplexity": 300.0 + step} for step in (1, 5, 10, 15, 20)},
              "validation": [{"step": 10, "validation/psnr": 35.0, "validation/perplexity": 420.0}]}  # fmt: skip
    [path] = plots.run_progress_figures(record, tmp_path, "a run")
    assert path.name == "run-100ep-curves.png"
    assert_figure(path)


def test_repository_figures_redraw_from_kept_results(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    kept = plots.RESULTS / "gfid-mnist-10ep-cpu.json"
    (results / kept.name).write_text(kept.read_text())
    written = plots.main(["--out", str(tmp_path / "figures"), "--results", str(results)])
    assert [path.name for path in written] == ["gfid-vs-samples.png"]
    assert_figure(written[0])
    # A results file that is not there is skipped with a line naming it, never an empty figure.
    printed = capsys.readouterr().out
    missing = [name for name in plots.FIGURES if name != kept.name]
    assert missing and all(f"skipped {name}: not in {results}" in printed for name in missing)


def test_benchmarks_run_without_matplotlib(monkeypatch, capsys, tmp_path):
    # A bare device machine may lack matplotlib: the benchmark keeps its numbers and says why no figure.
    import builtins
    import sys

    from benchmarks.common import draw_figures

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib") or (name == "benchmarks" and args[2] and "plots" in args[2]):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "benchmarks.plots", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert draw_figures("code_use", {"a": [1, 2]}, tmp_path / "x.png", "t") == []
    assert "figures skipped: No module named 'matplotlib'" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()
