"""Checkpoints that survive a kill, resume that refuses a mismatched run, and final-model saving.

Shared by both training stages. Every write goes to a temporary folder first and is renamed into
place, so `resume=latest` never finds a half-written checkpoint. The state file, written last,
records the size and SHA-256 of every file beside it, so a checkpoint damaged after it was written
(a full disk, a killed copy, a truncated transfer) is found before anything loads it: `resume=latest`
says which file and what is wrong, sets the damaged checkpoint aside (never deletes it) and resumes
from the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError

from .files import cleaned_on_failure, replace_with, written_atomically

# Fields that may change between a run and its resumption (a top-level name covers its whole
# section); everything else must match.
RESUMABLE_FIELDS = {
    "max_steps",
    "resume",
    "checkpoint_every",
    "checkpoints_to_keep",
    "log_every",
    "validate_every",
    "validation_batches",
    "push_to_hub",
    "hub_repo_id",
    "log_with",
    "output_dir",
    "compile",  # compiled in place: checkpoints hold the eager model's keys either way
    "compile_mode",
    "cuda_graph",  # a graphed step trains the same weights; the optimizer is matched on resume
    "time_limit_minutes",
    "data.num_workers",  # loader processes: the sampler, in the main process, sets the batch order
    "start_over",  # how the run began, not what it trains
}

STATE_FILE = "trainer_state.json"
# What to do when a run's final save fails: its last checkpoint is the finished state.
RESUME_TO_SAVE = "the run's checkpoints are intact: free space, then run the same command with resume=latest"
CONFIG_FILE = "train_config.json"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those with a state file), oldest first."""
    root = checkpoint_root(output_dir)
    found = [path for path in root.glob("step_*") if (path / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda path: int(path.name.split("_")[1]))


def file_record(path: Path) -> dict:
    """Size and SHA-256 of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def manifest(folder: Path) -> dict:
    """{relative path: size and SHA-256} of every file in a checkpoint folder but its state file."""
    return {str(path.relative_to(folder)): file_record(path)
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != STATE_FILE}  # fmt: skip


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint, in a few words, or None if every file it recorded is there
    with its size and checksum. Checkpoints written before the record existed are taken as they are."""
    try:
        state = read_state(checkpoint)
    except (OSError, ValueError) as error:
        return f"{STATE_FILE} is unreadable ({type(error).__name__})"
    if not isinstance(state, dict) or "step" not in state:
        return f"{STATE_FILE} holds no step"
    for name, expected in state.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, the checkpoint recorded {expected['size']}"
        if file_record(path)["sha256"] != expected["sha256"]:
            return f"{name} does not match its recorded SHA-256 (same size, changed content)"
    return None


def set_aside(checkpoint: Path) -> Path:
    """Move a damaged checkpoint out of the step_* sequence (kept for inspection, never deleted)."""
    target = checkpoint.with_name(f"damaged-{checkpoint.name}")
    index = 1
    while target.exists():
        target, index = checkpoint.with_name(f"damaged-{checkpoint.name}-{index}"), index + 1
    checkpoint.rename(target)
    return target


@dataclass
class ResumePoint:
    """The checkpoint to resume from (None: start fresh) and the damaged ones newer than it."""

    checkpoint: Path | None
    damaged: list[tuple[Path, str]]


def find_resume_point(resume: str | None, output_dir: str | Path) -> ResumePoint:
    """`latest` -> the newest intact checkpoint (None if there is none); a path -> it, if intact."""
    if not resume:
        return ResumePoint(None, [])
    if resume == "latest":
        damaged = []
        for checkpoint in reversed(list_checkpoints(output_dir)):
            problem = checkpoint_damage(checkpoint)
            if problem is None:
                return ResumePoint(checkpoint, damaged)
            damaged.append((checkpoint, problem))
        if damaged:
            details = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
            raise ValueError(
                f"resume=latest: no intact checkpoint in {checkpoint_root(output_dir)} ({details}); "
                "restore one, or start afresh in a new output_dir"
            )
        return ResumePoint(None, [])
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"resume={resume!r} is not a checkpoint folder (no {STATE_FILE}); use resume=latest or a step_* folder"
        )
    problem = checkpoint_damage(path)
    if problem is not None:
        raise ValueError(f"resume={resume!r}: the checkpoint is damaged ({problem}); use resume=latest or an intact step_* folder")
    return ResumePoint(path, [])


def resolve_resume(resume: str | None, output_dir: str | Path, print_fn=print) -> ResumePoint:
    """`latest` -> the newest intact checkpoint or None (start fresh, and say so); a path -> it.
    Damaged checkpoints are reported, not touched (`resume_training` sets them aside)."""
    point = find_resume_point(resume, output_dir)
    for path, problem in point.damaged:
        print_fn(f"checkpoint {path} is damaged: {problem}")
    if resume == "latest" and point.checkpoint is None:
        print_fn(f"resume=latest: no checkpoint in {checkpoint_root(output_dir)} yet, starting fresh")
    return point


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_run(checkpoint: Path, config: dict) -> None:
    """Refuse to resume from a checkpoint written under a different config, naming the fields."""
    saved_file = checkpoint / CONFIG_FILE
    if not saved_file.is_file():
        return
    saved, current = _flatten(json.loads(saved_file.read_text())), _flatten(config)
    differing = sorted(
        key
        for key in set(saved) | set(current)
        if key not in RESUMABLE_FIELDS and key.split(".")[0] not in RESUMABLE_FIELDS
        and saved.get(key) != current.get(key)
    )
    if differing:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in differing)
        raise ValueError(
            f"checkpoint {checkpoint} was written by a different config ({details}); "
            "resume with the same settings or start a new output_dir"
        )


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())


def latest_step(output_dir: str | Path) -> int:
    """The step of the newest complete checkpoint in a run folder (0 when there is none)."""
    checkpoints = list_checkpoints(output_dir)
    return read_state(checkpoints[-1])["step"] if checkpoints else 0


@dataclass
class TrainingPosition:
    """Where a run stands: optimizer steps taken and (micro-)batches consumed."""

    step: int = 0
    batches_seen: int = 0


def resume_training(accelerator, resume: str | None, output_dir: str | Path, config: dict) -> TrainingPosition:
    """Restore weights, optimizer, scheduler and RNG from the checkpoint `resume` names (after
    checking it was written under the same config) and return its position; a fresh start is step 0."""
    point = resolve_resume(resume, output_dir, accelerator.print)
    checkpoint = point.checkpoint
    # Damaged checkpoints newer than the one resumed leave the step_* sequence (moved, not deleted),
    # so neither a later save nor pruning overwrites them.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for path, _ in point.damaged:
            accelerator.print(f"set aside as {set_aside(path)}; resuming from {checkpoint}")
    accelerator.wait_for_everyone()
    if checkpoint is None:
        return TrainingPosition()
    check_same_run(checkpoint, config)
    accelerator.load_state(str(checkpoint))
    state = read_state(checkpoint)
    accelerator.print(f"resumed from {checkpoint} at step {state['step']}")
    return TrainingPosition(state["step"], state["batches_seen"])


def how_to_resume(output_dir: str | Path) -> str:
    """After a failed write during a run: the checkpoint it can go on from, and the command."""
    intact = list_checkpoints(output_dir)
    where = f"the last intact checkpoint is {intact[-1]}" if intact else "no checkpoint was written yet"
    return f"{where}; free space, then run the same command with resume=latest"


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, config: dict, keep: int) -> Path:
    """accelerator.save_state into a temporary folder, then rename to checkpoints/step_N; prune to
    `keep`. A failed write (a full disk) removes the temporary folder and is one line naming the
    file, the error and the checkpoint to resume from."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{step:08d}"
    temporary = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    with cleaned_on_failure(temporary, f"checkpoint step {step}", how_to_resume(output_dir)):
        accelerator.save_state(str(temporary), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (temporary / CONFIG_FILE).write_text(json.dumps(config, indent=2))
            # Written last, it marks the checkpoint complete and records every file's size and checksum.
            (temporary / STATE_FILE).write_text(json.dumps({"step": step, **state, "files": manifest(temporary)}))
    if accelerator.is_main_process:
        replace_with(temporary, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_final(model, folder: str | Path, card: str | None = None, **save_options) -> Path:
    """save_pretrained (and the model card, README.md) written atomically (`written_atomically`): a
    failed write leaves the earlier folder (if any) as it was and names the file."""
    with written_atomically(folder, f"the model {folder}", RESUME_TO_SAVE) as temporary:
        model.save_pretrained(temporary, **save_options)
        if card is not None:
            (temporary / "README.md").write_text(card)
    return Path(folder)


def push_folder(folder: str | Path, repo_id: str, commit_message: str = "Upload from vqwae") -> str:
    """Create (if needed) the Hub repo `repo_id` and upload `folder`; clear errors offline or unauthenticated."""
    if huggingface_hub.get_token() is None:
        raise PermissionError(
            f"cannot push to {repo_id!r}: no Hugging Face token; run `hf auth login` or set HF_TOKEN. "
            f"The model is saved locally in {folder}"
        )
    api = huggingface_hub.HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    except (HfHubHTTPError, OSError) as error:
        raise ConnectionError(
            f"cannot push to {repo_id!r} ({type(error).__name__}: {error}); check the network and your token. "
            f"The model is saved locally in {folder}"
        ) from error
    return str(getattr(info, "commit_url", repo_id))
