"""benchmarks/compare_tokenizers.py on the tiny config: trains every (variant, seed), writes its
tables, skips finished runs on a rerun, and refuses bad variants with one clear line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, assert_figure, read_metrics

MODULE = "benchmarks.compare_tokenizers"


def compare(out, *variants, extra=()):
    command = [sys.executable, "-m", MODULE, "--out", str(out), "--seeds", "0", "1", "--steps", "2", "--rfid-n", "0"]
    command += ["--max-batches", "1", "--timing-rounds", "1", "--parallel", "2", *extra]
    for variant in variants:
        command += ["--variant", *variant]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_two_variants_two_seeds_table_and_rerun(tmp_path):
    # Validating every step gives the curves of the figure two points a run.
    variants = [("wae", "configs/tokenizer/tiny.yaml", "validate_every=1"),
                ("vae", "configs/tokenizer/tiny.yaml", "model.quantizer=vq", "validate_every=1")]  # fmt: skip
    first = compare(tmp_path, *variants)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["runs"]) == {"wae", "vae"} and report["reference"] == "vae"
    for name in ("wae", "vae"):
        psnrs = [report["runs"][name][seed]["test"]["psnr"] for seed in ("0", "1")]
        stats = report["summary"][name]["psnr"]
        assert stats["mean"] == pytest.approx(sum(psnrs) / 2)
        assert stats["min"] == pytest.approx(min(psnrs)) and stats["spread"] == pytest.approx(max(psnrs) - min(psnrs))
        assert "validation" in report["runs"][name]["0"]
    timing = report["step_time"]  # each ratio is its step time over the reference's, both reported
    assert timing["wae"]["ratio"] == pytest.approx(timing["wae"]["step_ms"] / timing["vae"]["step_ms"])
    assert timing["wae"]["step_ms"] > 0 and f"{timing['wae']['ratio']:.2f}x" in (tmp_path / "results.md").read_text()
    # Two seeds really are two runs: different initial weights, different results.
    assert report["runs"]["wae"]["0"]["test"]["psnr"] != report["runs"]["wae"]["1"]["test"]["psnr"]
    table = (tmp_path / "results.md").read_text()
    assert "| wae |" in table and "| vae |" in table and "step vs vae" in table
    # The figures' data: each run's validation curves as its metrics.jsonl logged them, and the
    # code histogram of the scored split, which gives back its codes used and perplexity.
    for name in ("wae", "vae"):
        for seed in ("0", "1"):
            run = report["runs"][name][seed]
            logged = {str(row["step"]): row["validation/psnr"] for row in read_metrics(tmp_path / name / f"seed-{seed}")
                      if "validation/psnr" in row}  # fmt: skip
            assert run["curves"]["psnr"] == logged and set(logged) == {"1", "2"}
            counts = torch.tensor(run["test"]["code_counts"], dtype=torch.float64)
            assert counts.sum() == run["test"]["num_images"] * 16  # a 4 x 4 grid of codes per 16 x 16 image
            assert (counts > 0).sum() == run["test"]["codes_used"]
            shares = counts[counts > 0] / counts.sum()
            assert float(torch.exp(-(shares * shares.log()).sum())) == pytest.approx(run["test"]["perplexity"], rel=1e-4)
    for figure in ("tokenizer-curves.png", "code-use.png", "step-time.png"):
        assert_figure(tmp_path / "figures" / figure)

    finals = {path: path.stat().st_mtime for path in tmp_path.glob("*/seed-*/final/model.safetensors")}
    assert len(finals) == 4
    again = compare(tmp_path, *variants)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 of 4 runs already trained; training 0" in again.stdout
    assert {path: path.stat().st_mtime for path in finals} == finals


@pytest.mark.parametrize(
    "variant, message",
    [
        (("bad", "configs/tokenizer/tiny.yaml", "model.nope=1"), "unknown config key(s) ['model.nope']"),
        (("bad", "configs/tokenizer/tiny.yaml", "model.quantizer=vqq"), "choose one of"),
        (("bad/name", "configs/tokenizer/tiny.yaml"), "variant name 'bad/name'"),
        (("bad", "configs/tokenizer/missing.yaml"), "does not exist"),
    ],
)
def test_bad_variant_is_one_clear_line(tmp_path, variant, message):
    result = compare(tmp_path, variant)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and message in result.stderr.strip().splitlines()[-1]
    assert not any(tmp_path.iterdir())  # nothing trained


def test_runs_keep_the_callers_python_path(monkeypatch, tmp_path):
    # A device machine's wheels live on PYTHONPATH: the training runs must still find them.
    from benchmarks import compare_tokenizers

    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = compare_tokenizers.run_environment(parallel=2)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(tmp_path)]
    assert int(env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)
    monkeypatch.delenv("PYTHONPATH")
    assert compare_tokenizers.run_environment(parallel=1)["PYTHONPATH"] == str(ROOT)


def test_colour_runs_are_scored_with_lpips_and_on_the_forty_cifar_images(tmp_path, monkeypatch):
    """On the embedded photos a run's score has LPIPS (the first rfid_n images of the split, the
    same as rFID's) equal to LPIPS computed here on the same reconstructions, and PSNR, SSIM and
    LPIPS on the 40 real CIFAR images, which the tables show in a second table."""
    from argparse import Namespace

    from benchmarks import compare_tokenizers
    from infra import data, photos
    from infra.metrics.lpips_score import lpips_distance
    from tokenizer import VQWAE, VQWAEConfig
    from tokenizer.evaluation import reconstruct

    monkeypatch.setattr(data, "load_photos", lambda size: photos.load_photos(size, {"train": 19, "validation": 6, "test": 10}))
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(in_channels=3, hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32))
    model.save_pretrained(tmp_path / "final")
    config = compare_tokenizers.run_config("configs/tokenizer/photos.yaml", [], 0, 2, tmp_path)
    result = compare_tokenizers.evaluate_run(config, "test", rfid_n=8, max_batches=None)
    splits = data.load_images(config.data, 3)
    for name in ("test", "cifar"):
        originals = splits[name][:8]["pixel_values"].to(torch.uint8)
        expected = lpips_distance(reconstruct(model, originals), originals.float() / 255).mean().item()
        assert result[name]["lpips"] == pytest.approx(expected, rel=1e-5) and result[name]["lpips_n"] == 8
    assert result["cifar"]["num_images"] == 40 and result["test"]["num_images"] == 10
    assert "rfid" in result["test"] and "rfid" not in result["cifar"] and "lpips" not in result["validation"]
    results = {"vq-wae": {0: result}}
    cifar = compare_tokenizers.summarise(results, "cifar")
    args = Namespace(steps=2, seeds=[0], split="test", reference=None)
    table = compare_tokenizers.markdown(compare_tokenizers.summarise(results, "test"), results, {}, args, cifar)
    assert f"| {result['test']['lpips']:.3f} (" in table.split("The 40 CIFAR")[0]
    assert f"| {result['cifar']['lpips']:.3f} (" in table.split("The 40 CIFAR")[1]
