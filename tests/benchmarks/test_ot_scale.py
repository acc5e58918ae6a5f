"""benchmarks/ot_scale.py on a small size: the record it writes, and the memory bound it shows."""

import json

from benchmarks.ot_scale import main


def test_the_chunked_term_holds_a_fraction_of_the_whole_matrix(tmp_path):
    """2,048 latents x 4,096 codes (a 32 MB fp32 matrix): with the whole matrix the OT term's peak
    is at least that matrix; within a 1 MB budget (64 latents a chunk, 32 chunks) it is a few
    chunks (the cost rows, their temporaries and the plan): measured 5.4-6.3 MB, under a third of
    one matrix and a ninth of the whole term's peak."""
    out = tmp_path / "scale.json"
    main(["--out", str(out), "--codes", "4096", "--grids", "8", "--rounds", "1", "--budgets", "whole", "1"])
    record = json.loads(out.read_text())
    assert record["command"].startswith("python -m benchmarks.ot_scale --out")
    whole, chunked = record["rows"]
    assert whole["latents"] == chunked["latents"] == 32 * 8 * 8 and whole["latents_x_codes"] == 2048 * 4096
    assert (whole["budget_mb"], whole["chunks"]) == (None, 1) and (chunked["budget_mb"], chunked["chunks"]) == (1, 32)
    matrix_mb = 2048 * 4096 * 4 / 2**20
    assert whole["peak_mb"] >= matrix_mb, whole
    assert chunked["peak_mb"] < matrix_mb / 3 and chunked["peak_mb"] < whole["peak_mb"] / 9, (chunked, whole)
    assert whole["seconds"] > 0 and chunked["seconds"] > 0


def test_the_step_rows_time_both_tokenizers_and_the_ot_share(tmp_path):
    """--steps: per size, VQ-WAE's and VQ-VAE's whole training step and the OT term's share."""
    out = tmp_path / "steps.json"
    record = main(["--out", str(out), "--codes", "64", "--grids", "2", "--batch", "4", "--rounds", "1",
                   "--budgets", "whole", "--steps", "--figures", str(tmp_path)])  # fmt: skip
    assert json.loads(out.read_text()) == record
    (step,) = record["steps"]
    assert (step["grid"], step["codes"], step["budget_mb"]) == (2, 64, None)
    assert step["vq_wae_seconds"] > 0 and step["vq_vae_seconds"] > 0
    assert step["ratio"] == step["vq_wae_seconds"] / step["vq_vae_seconds"]
    assert step["ot_share"] == record["rows"][0]["seconds"] / step["vq_wae_seconds"]
    assert (tmp_path / "ot-scale.png").is_file()
