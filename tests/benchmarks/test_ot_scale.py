"""benchmarks/ot_scale.py on a small size: the record it writes, and the memory bound it shows."""

import json

from benchmarks.ot_scale import main


def test_the_ot_term_holds_what_its_budget_says(tmp_path):
    """8,192 latents x 4,096 codes (a 128 MB fp32 matrix): with the whole matrix the OT term holds
    about two copies (the costs and the solver's work matrix; measured 264 MB, 395 before the
    lookup's distances were built without autograd); within a 32 MB budget (1,024 latents a chunk,
    8 chunks) it holds the budget and a few MB of latents, gradients and candidates (measured 38.7
    MB; before the chunks worked in place, 135.6 MB in 4 chunks of 2,048: four chunk copies)."""
    out = tmp_path / "scale.json"
    main(["--out", str(out), "--codes", "4096", "--grids", "32", "--batch", "8", "--rounds", "1", "--budgets", "whole", "32"])
    record = json.loads(out.read_text())
    assert record["command"].startswith("python -m benchmarks.ot_scale --out")
    whole, chunked = record["rows"]
    assert whole["latents"] == chunked["latents"] == 8 * 32 * 32 and whole["latents_x_codes"] == 8192 * 4096
    assert (whole["budget_mb"], whole["chunks"]) == (None, 1) and (chunked["budget_mb"], chunked["chunks"]) == (32, 8)
    matrix_mb = 8192 * 4096 * 4 / 2**20
    assert matrix_mb <= whole["peak_mb"] <= 2.25 * matrix_mb, whole
    assert chunked["peak_mb"] <= 32 + 12, chunked
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
