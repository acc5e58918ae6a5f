"""benchmarks/gpu/gpu_prior.py rehearsed on the CPU (tiny prior), and generation_fid.py --codes: the
code grids it samples, decoded and scored here, give the FID that generation_fid.py gets by
sampling the same pipeline itself with the same seed."""


import pytest
import torch

from benchmarks import generation_fid
from benchmarks.gpu import gpu_prior
from tests.readme_fixtures import tiny_pipeline


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-prior")
    tiny_pipeline(folder / "tiny")
    results = gpu_prior.main(["--tokenizer", str(folder / "tiny" / "tokenizer"), "--out", str(folder / "out"),
                              "--work", str(folder / "work"), "--dry-run", "--n", "20", "--guidance-scales", "2"])  # fmt: skip
    return folder, results


def test_rehearsal_trains_and_samples_every_setting(rehearsal):
    folder, results = rehearsal
    assert results["max_steps"] == 6 and [row["step"] for row in results["curve"]] == [3, 6]
    assert results["curve"][-1]["bits_per_code"] == pytest.approx(results["final_bits_per_code"])
    assert set(results["sampling"]) == {"unconditional", "class-conditional-g2"}
    payload = torch.load(folder / "out" / "codes-class-conditional-g2.pt")
    assert payload["codes"].shape == (20, 4, 4) and payload["codes"].dtype == torch.int16
    assert payload["guidance_scale"] == 2 and payload["num_classes"] == 10 and payload["n"] == 20
    assert int(payload["codes"].max()) < 32 and int(payload["codes"].min()) >= 0


def test_codes_score_as_the_pipeline_sampling_itself(rehearsal, tmp_path):
    folder, _ = rehearsal
    common = ["--pipeline", str(folder / "work" / "pipeline"), "--n", "20", "--counts", "10",
              "--guidance-scales", "2", "--batch-size", "8"]  # fmt: skip
    sampled = generation_fid.main([*common, "--out", str(tmp_path / "sampled")])
    decoded = generation_fid.main([*common, "--out", str(tmp_path / "decoded"), "--codes", str(folder / "out")])
    for name in ("unconditional", "class-conditional g=2"):
        assert decoded["settings"][name]["fid"] == pytest.approx(sampled["settings"][name]["fid"], rel=1e-6)
    assert decoded["codes_from"]["prior"]["max_steps"] == 6
    # Its sampling minutes are those of the device that sampled the codes, not of the decoding here.
    sampled_there = decoded["codes_from"]["prior"]["sampling"]["class-conditional-g2"]["minutes"]
    assert decoded["settings"]["class-conditional g=2"]["sampling_minutes"] == sampled_there
    assert "code grids sampled on CPU" in (tmp_path / "decoded" / "results.md").read_text()


def test_codes_are_refused_for_another_tokenizer_or_setting(rehearsal, tmp_path):
    folder, _ = rehearsal
    other = tmp_path / "other"
    tiny_pipeline(other, seed=1)
    with pytest.raises(ValueError, match="another tokenizer"):
        generation_fid.main(["--pipeline", str(other), "--out", str(tmp_path / "a"), "--n", "20", "--counts", "10",
                             "--guidance-scales", "--codes", str(folder / "out")])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no codes-class-conditional-g3.pt"):
        generation_fid.main(["--pipeline", str(folder / "work" / "pipeline"), "--out", str(tmp_path / "b"), "--n",
                             "20", "--counts", "10", "--no-unconditional", "--guidance-scales", "3", "--codes",
                             str(folder / "out")])  # fmt: skip
    with pytest.raises(ValueError, match="pass the --n it was sampled with"):
        generation_fid.main(["--pipeline", str(folder / "work" / "pipeline"), "--out", str(tmp_path / "c"), "--n",
                             "10", "--counts", "10", "--guidance-scales", "--codes", str(folder / "out")])  # fmt: skip


def test_steps_fit_the_minutes_and_never_pass_the_recipe():
    # 10 ms a step, 1.3x loop overhead: 5 minutes hold 23,076 steps -> capped at the recipe's 20,000
    assert gpu_prior.steps_that_fit(0.010, 5.0, 20000, 500, 500) == 20000
    assert gpu_prior.steps_that_fit(0.030, 5.0, 20000, 500, 500) == 7500  # 7692 rounded down
    assert gpu_prior.steps_that_fit(10.0, 1.0, 20000, 500, 500) == 1000  # never below warm-up + one block


def test_a_second_call_on_a_warm_machine_starts_a_fresh_run(rehearsal, tmp_path):
    folder, _ = rehearsal  # the same --work folder again, as on a device machine kept warm between calls
    again = gpu_prior.main(["--tokenizer", str(folder / "tiny" / "tokenizer"), "--out", str(tmp_path),
                            "--work", str(folder / "work"), "--dry-run", "--n", "20", "--no-unconditional",
                            "--guidance-scales", "1"])  # fmt: skip
    assert [row["step"] for row in again["curve"]] == [3, 6]  # not the first run's rows as well
    assert set(again["sampling"]) == {"class-conditional-g1"}
