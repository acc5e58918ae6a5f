"""Checkpoints that verify themselves: the state file records every file's size and SHA-256; a
damaged newest checkpoint is named in one line, set aside (never deleted) and the run resumes from
the newest intact one; with none intact, or resume=PATH to a damaged one, a clear error."""

import hashlib
import json

import pytest

from infra.checkpointing import STATE_FILE, checkpoint_damage, list_checkpoints, read_state, resolve_resume


def test_the_state_file_records_every_file(train, tmp_path):
    train(f"output_dir={tmp_path}", "max_steps=3", "checkpoint_every=3")
    checkpoint = list_checkpoints(tmp_path)[-1]
    recorded = read_state(checkpoint)["files"]
    on_disk = sorted(str(path.relative_to(checkpoint)) for path in checkpoint.rglob("*")
                     if path.is_file() and path.name != STATE_FILE)  # fmt: skip
    assert sorted(recorded) == on_disk and "model.safetensors" in recorded
    for name, record in recorded.items():
        data = (checkpoint / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert checkpoint_damage(checkpoint) is None


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_goes_on(train, tmp_path, capsys):
    train(f"output_dir={tmp_path}", "max_steps=6", "checkpoint_every=3")
    newest = tmp_path / "checkpoints" / "step_00000006"
    weights = newest / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])  # a truncated copy, as a full disk leaves it
    capsys.readouterr()
    train(f"output_dir={tmp_path}", "max_steps=9", "checkpoint_every=3", "resume=latest")
    out = capsys.readouterr().out
    assert f"checkpoint {newest} is damaged: model.safetensors has {size // 2} bytes, the checkpoint recorded {size}" in out
    assert "resumed from" in out and "step_00000003 at step 3" in out
    aside = tmp_path / "checkpoints" / "damaged-step_00000006"
    assert (aside / "model.safetensors").stat().st_size == size // 2  # kept as it was, for inspection
    assert [path.name for path in list_checkpoints(tmp_path)][-1] == "step_00000009"
    assert all(checkpoint_damage(path) is None for path in list_checkpoints(tmp_path))


def fake_checkpoint(root, step, payload=b"weights"):
    folder = root / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload)
    record = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    (folder / STATE_FILE).write_text(json.dumps({"step": step, "batches_seen": step, "files": {"model.safetensors": record}}))
    return folder


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda folder: (folder / "model.safetensors").write_bytes(b"WEIGHTS"), "does not match its recorded SHA-256"),
        (lambda folder: (folder / "model.safetensors").write_bytes(b"w"), "has 1 bytes, the checkpoint recorded 7"),
        (lambda folder: (folder / STATE_FILE).write_text('{"step": 4, "batc'), f"{STATE_FILE} is unreadable"),
    ],
)
def test_each_kind_of_damage_is_named(tmp_path, damage, message):
    fake_checkpoint(tmp_path, 2)
    damage(fake_checkpoint(tmp_path, 4))
    point = resolve_resume("latest", tmp_path, print_fn=lambda line: None)
    assert point.checkpoint.name == "step_00000002"
    [(path, problem)] = point.damaged
    assert path.name == "step_00000004" and message in problem
    with pytest.raises(ValueError, match=rf"resume='{path}': the checkpoint is damaged \("):
        resolve_resume(str(path), tmp_path)


def test_no_intact_checkpoint_is_a_clear_error_and_touches_nothing(tmp_path):
    for step in (2, 4):
        (fake_checkpoint(tmp_path, step) / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no intact checkpoint in .*step_00000004: .*step_00000002: .*new output_dir"):
        resolve_resume("latest", tmp_path)
    assert [path.name for path in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000004"]


def test_checkpoints_from_before_the_record_still_resume(tmp_path):
    folder = tmp_path / "checkpoints" / "step_00000004"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text('{"step": 4, "batches_seen": 4}')
    assert resolve_resume("latest", tmp_path).checkpoint == folder
