"""benchmarks/gpu/gpu_compare.py rehearsed on the CPU (tiny config): runs that finish come back as
their final model and scores, runs stopped at the deadline as their newest checkpoint, and a tar
unpacked here is all that compare_tokenizers.py needs to resume a run or skip a finished one."""

import json
import tarfile

from benchmarks.gpu import gpu_compare

TINY = "configs/tokenizer/tiny.yaml"


def rehearse(tmp_path, steps, deadline, work="work"):
    arguments = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / work), "--deadline-minutes", str(deadline)]
    arguments += ["--", "--steps", str(steps), "--seeds", "0", "--parallel", "2", "--max-batches", "1"]
    arguments += ["--variant", "wae", TINY, "--variant", "vae", TINY, "model.quantizer=vq"]
    return gpu_compare.main(arguments)


def unpack(out, work):
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as archive:
            archive.extractall(work, filter="data")


def test_finished_runs_come_back_scored_and_are_skipped_here(tmp_path):
    summary = rehearse(tmp_path, steps=6, deadline=10)
    assert "error" not in summary and summary["unfinished"] == []
    assert summary["runs"] == {
        "vae/seed-0": {"tar": "vae-seed-0.tar", "finished": True, "newest_checkpoint_step": 6},
        "wae/seed-0": {"tar": "wae-seed-0.tar", "finished": True, "newest_checkpoint_step": 6},
    }
    device_scores = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    with tarfile.open(tmp_path / "out" / "wae-seed-0.tar") as archive:
        names = archive.getnames()
    assert "wae/seed-0/final/model.safetensors" in names and not any("checkpoints" in name for name in names)
    # Here: the runs are not trained again, and they score as they did there.
    unpack(tmp_path / "out", tmp_path / "here")
    report = gpu_compare.compare_tokenizers.main(
        ["--out", str(tmp_path / "here"), "--steps", "6", "--seeds", "0", "--rfid-n", "0", "--max-batches", "1",
         "--timing-rounds", "0", "--variant", "wae", TINY, "--variant", "vae", TINY, "model.quantizer=vq"]
    )  # fmt: skip
    assert not any((tmp_path / "here").glob("*/seed-0/checkpoints"))  # nothing trained here
    for name in ("wae", "vae"):
        assert report["runs"][name][0]["test"]["psnr"] == device_scores[name]["0"]["test"]["psnr"]


def test_runs_stopped_at_the_deadline_come_back_as_checkpoints_that_resume(tmp_path):
    summary = rehearse(tmp_path, steps=100_000, deadline=0.15)
    assert "error" not in summary and len(summary["unfinished"]) == 2
    assert not (tmp_path / "out" / "results.json").exists()  # no table over unfinished runs
    for run in summary["runs"].values():
        assert not run["finished"] and 0 < run["newest_checkpoint_step"] < 100_000
    with tarfile.open(tmp_path / "out" / "wae-seed-0.tar") as archive:
        names = archive.getnames()
    step = summary["runs"]["wae/seed-0"]["newest_checkpoint_step"]
    assert f"wae/seed-0/checkpoints/step_{step:08d}/model.safetensors" in names
    assert not any("/final/" in name for name in names)
    # Unpacked into a fresh folder, a rerun resumes each run from the step it reached there.
    unpack(tmp_path / "out", tmp_path / "here")
    again = rehearse(tmp_path, steps=100_000, deadline=0.15, work="here")
    for name, run in summary["runs"].items():
        log = (tmp_path / "here" / name / "train.log").read_text()
        assert f"at step {run['newest_checkpoint_step']}" in log
        assert again["runs"][name]["newest_checkpoint_step"] > run["newest_checkpoint_step"]


def test_missing_comparison_arguments_are_one_clear_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        gpu_compare.main(["--out", str(tmp_path)])
    assert "give compare_tokenizers.py's arguments after `--`" in capsys.readouterr().err
