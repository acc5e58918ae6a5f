"""Stage one: training, checkpoints, resume, 2 processes, Hub push, evaluation CLI."""

import json
import time

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from tests.helpers import read_metrics, run_script
from tokenizer import VQWAE

TINY = "configs/tokenizer/tiny.yaml"


def test_tiny_run_lowers_loss_and_writes_checkpoints(train, tmp_path):
    metrics = train(f"output_dir={tmp_path}", "max_steps=40", "checkpoint_every=20", "validate_every=20")
    logs = [row for row in read_metrics(tmp_path) if "train/reconstruction" in row]
    first = sum(row["train/reconstruction"] for row in logs[:5]) / 5
    last = sum(row["train/reconstruction"] for row in logs[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["step_00000020", "step_00000040"]
    assert (tmp_path / "samples" / "reconstruction_00000020.png").is_file()
    final = VQWAE.from_pretrained(tmp_path / "final")
    assert final.config.codebook_size == 32
    card = ModelCard.load(tmp_path / "final" / "README.md")
    assert card.data.library_name == "vqwae" and card.data.datasets == ["ylecun/mnist"]
    assert {result.metric_type for result in card.data.eval_results} == {"psnr", "ssim", "perplexity"}
    assert "codebook_size: 32" in card.text
    assert metrics["num_images"] > 0 and 0 < metrics["perplexity"] <= 32


@pytest.mark.parametrize("resumed_with", [[], ["data.num_workers=1"]], ids=["same", "loader-workers"])
def test_resume_continues_exactly(train, tmp_path, resumed_with):
    # Loader workers only change who reads the batches (a GPU run with 4 resumes on a CPU with 0).
    # A constant schedule, so that stopping early (max_steps=3) does not change the learning rate.
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(f"output_dir={straight}", "max_steps=6", "lr_scheduler=constant")
    train(f"output_dir={split}", "max_steps=3", "lr_scheduler=constant")
    train(f"output_dir={split}", "max_steps=6", "resume=latest", "lr_scheduler=constant", *resumed_with)
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(split / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)
    resumed = [row["train/loss"] for row in read_metrics(split) if "train/loss" in row and row["step"] > 3]
    reference = [row["train/loss"] for row in read_metrics(straight) if "train/loss" in row and row["step"] > 3]
    assert resumed == pytest.approx(reference, rel=1e-5)


def test_resume_latest_without_checkpoint_starts_fresh(train, tmp_path, capsys):
    train(f"output_dir={tmp_path}", "max_steps=2", "resume=latest")
    assert "no checkpoint" in capsys.readouterr().out


def test_resume_refuses_a_different_config(train, tmp_path):
    train(f"output_dir={tmp_path}", "max_steps=3")
    with pytest.raises(ValueError, match=r"different config \(model.codebook_size: 32 -> 16"):
        train(f"output_dir={tmp_path}", "max_steps=6", "resume=latest", "model.codebook_size=16")


def test_two_processes_solve_ot_on_the_global_batch(tmp_path):
    """A real 2-process CPU (gloo) run: its step-1 OT loss equals 1 process on the same global batch."""
    common = ["tokenizer/train.py", "--config", TINY, "max_steps=2", "batch_size=8", "checkpoint_every=2"]
    two = run_script([*common, f"output_dir={tmp_path / 'two'}"], processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_script([*common, f"output_dir={tmp_path / 'one'}"], processes=1)
    assert one.returncode == 0, one.stderr[-3000:]
    first_two = next(row for row in read_metrics(tmp_path / "two") if row["step"] == 1)
    first_one = next(row for row in read_metrics(tmp_path / "one") if row["step"] == 1)
    assert first_two["train/transport"] == pytest.approx(first_one["train/transport"], rel=1e-4)
    assert first_two["train/reconstruction"] == pytest.approx(first_one["train/reconstruction"], rel=1e-4)
    assert (tmp_path / "two" / "checkpoints" / "step_00000002" / "random_states_1.pkl").is_file()


def test_push_to_hub_uploads_a_loadable_folder(train, tmp_path, fake_hub):
    train(f"output_dir={tmp_path / 'run'}", "max_steps=2", "push_to_hub=true", "hub_repo_id=me/tiny")
    assert fake_hub.created == ["me/tiny"]
    loaded = VQWAE.from_pretrained(fake_hub.folder / "me/tiny")
    assert loaded.config.codebook_size == 32


def test_push_without_token_or_network_is_a_clear_error(tmp_path, monkeypatch):
    from infra.checkpointing import push_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PermissionError, match="cannot push to 'me/x': no Hugging Face token.*saved locally"):
        push_folder(tmp_path, "me/x")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(ConnectionError, match="cannot push to 'me/x'.*check the network.*saved locally"):
        push_folder(tmp_path, "me/x")


def test_evaluate_cli_prints_metrics(train, tmp_path, capsys):
    train(f"output_dir={tmp_path}", "max_steps=2")
    capsys.readouterr()
    from tokenizer import evaluation

    evaluation.main(["--tokenizer", str(tmp_path / "final"), "--split", "test", "--max-batches", "1"])
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{\n") :])
    assert set(result) >= {"mse", "psnr", "ssim", "perplexity", "codes_used"}
    assert result["num_images"] == 256 and result["psnr"] > 0


def test_evaluate_writes_a_record_and_never_overwrites_one(train, tmp_path, capsys):
    """--out writes what it prints plus the date and the command; an existing file is refused
    before any work (a finished 40-minute rFID must not replace an earlier record)."""
    train(f"output_dir={tmp_path}", "max_steps=2")
    from tokenizer import evaluation

    argv = ["--tokenizer", str(tmp_path / "final"), "--max-batches", "1", "--out", str(tmp_path / "record.json")]
    capsys.readouterr()
    printed = evaluation.main(argv)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record.pop("command") == "python -m tokenizer.evaluation " + " ".join(argv)
    assert record.pop("date") == time.strftime("%Y-%m-%d")
    assert record == printed
    (tmp_path / "record.json").write_text("kept")
    with pytest.raises(FileExistsError, match="exists: give another path"):
        evaluation.main(argv)
    assert (tmp_path / "record.json").read_text() == "kept"


@pytest.mark.parametrize("relaxation", [0, 1])
def test_ot_check_logs_the_gap_to_exact_ot(train, tmp_path, relaxation):
    """Balanced: against POT's emd2. Semi-relaxed: against the certified exact semi-relaxed optimum,
    whose bounds are tight (exact_bound_gap)."""
    train(f"output_dir={tmp_path}", "max_steps=4", "ot_check_every=2", f"model.transport.code_relaxation={relaxation}")
    checks = [row for row in read_metrics(tmp_path) if "ot_check/relative_gap" in row]
    assert [row["step"] for row in checks] == [2, 4]
    for row in checks:
        assert row["ot_check/exact_cost"] > 0 and row["ot_check/marginal_error"] >= 0
        gap = row["ot_check/solver_cost"] / row["ot_check/exact_cost"] - 1
        assert row["ot_check/relative_gap"] == pytest.approx(gap, rel=1e-4, abs=1e-6)
        assert row["ot_check/exact_bound_gap"] == 0 if not relaxation else 0 <= row["ot_check/exact_bound_gap"] < 1e-3


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_ot_check_needs_an_ot_term(train, tmp_path, quantizer):
    extra = ["model.codebook_size=27", "model.fsq.levels=[3,3,3]"] if quantizer == "fsq" else []
    with pytest.raises(SystemExit):
        train(f"output_dir={tmp_path}", f"model.quantizer={quantizer}", "ot_check_every=2", *extra)


@pytest.mark.parametrize("quantizer", ["vq_ema", "fsq"])
def test_baselines_train_through_the_trainer(train, tmp_path, quantizer):
    extra = ["model.codebook_size=27", "model.fsq.levels=[3,3,3]"] if quantizer == "fsq" else []
    metrics = train(f"output_dir={tmp_path}", f"model.quantizer={quantizer}", *extra)
    assert VQWAE.from_pretrained(tmp_path / "final").config.quantizer == quantizer
    assert metrics["num_images"] > 0 and metrics["codes_used"] >= 1


def test_any_installed_accelerate_tracker_and_clear_errors(train, tmp_path, monkeypatch):
    """log_with takes Accelerate's tracker names (comma-separated); TensorBoard (a test extra)
    really writes its event files; unknown or uninstalled trackers are one clear error."""
    from accelerate.utils import LoggerType

    from infra.config import load_config
    from tokenizer.config import TokenizerTrainConfig

    pytest.importorskip("tensorboard", reason="tensorboard is in the [test] extra: pip install -e .[test]")
    train(f"output_dir={tmp_path}", "max_steps=2", "log_with=tensorboard")
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="'tensorbord' is not an Accelerate tracker"):
        load_config(TokenizerTrainConfig, TINY, ["log_with=tensorbord"])
    # A tracker Accelerate knows but this machine lacks (made so: only tensorboard installed).
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [LoggerType.TENSORBOARD])
    with pytest.raises(ValueError, match="the wandb tracker is not installed.*installed: \\['tensorboard'\\]"):
        load_config(TokenizerTrainConfig, TINY, ["log_with=tensorboard,wandb"])


def test_a_run_saves_the_resolved_relaxation_and_resumes_a_checkpoint_from_before_the_rule(train, tmp_path):
    """The relaxation left unset is saved as the number the rule gives (1 at the tiny config's 32
    codes), so a checkpoint written before the rule existed (code_relaxation 1.0 in its config)
    resumes under today's defaults, and one with another value is refused."""
    train(f"output_dir={tmp_path}", "max_steps=2", "checkpoint_every=2", "lr_scheduler=constant")
    checkpoint = tmp_path / "checkpoints" / "step_00000002"
    saved = json.loads((checkpoint / "train_config.json").read_text())
    assert saved["model"]["transport"]["code_relaxation"] == 1.0
    assert json.loads((tmp_path / "final" / "config.json").read_text())["transport"]["code_relaxation"] == 1.0
    train(f"output_dir={tmp_path}", "max_steps=3", "resume=latest", "lr_scheduler=constant")  # resumes, not refused
    assert [row["step"] for row in read_metrics(tmp_path) if "train/reconstruction" in row][-1] == 3
    with pytest.raises(ValueError, match="code_relaxation"):
        train(f"output_dir={tmp_path}", "max_steps=4", "resume=latest", "lr_scheduler=constant",
              "model.transport.code_relaxation=2")  # fmt: skip

