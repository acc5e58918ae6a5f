"""A run's output folder belongs to one run: an OS lock for the run's life, and no new run over an
earlier one unless asked by name.

- `claim_run_folder` takes an exclusive `flock` on `<folder>/.run.lock` (the OS releases it when
  the process ends, however it ends: a `kill -9` leaves no stale lock) and writes the holder's pid
  and command into it, so a second run on the folder stops at once naming the process to wait for.
- A folder that already holds a run (checkpoints, a final model, a pipeline, metrics) is refused
  to a fresh start: `resume=latest` continues it; `start_over=true` first moves it aside to
  `<folder>.previous-N` (never deleted).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

LOCK_FILE = ".run.lock"
# What a run leaves in its folder; any of them means the folder holds a run.
RUN_MARKS = ("checkpoints", "final", "pipeline", "metrics.jsonl", "summary.json")
_HELD: dict[Path, RunFolder] = {}  # this process's claims, by folder


class FolderInUseError(OSError):
    """Another live process holds the run folder."""


class RunFolder:
    """This process's claim on a run folder: `release()` ends it (the OS ends it at exit)."""

    def __init__(self, folder: Path, handle):
        self.folder, self.handle = folder, handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
            _HELD.pop(self.folder, None)


def lock_folder(folder: str | Path) -> RunFolder:
    """Exclusive lock on `folder` (created if missing), or `FolderInUseError` naming the holder."""
    folder = Path(folder).resolve()
    if folder in _HELD:  # an earlier run in this process (one that raised): never a concurrent one
        _HELD[folder].release()
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        try:
            holder = json.loads(holder)
            who = f"process {holder['pid']} ({holder['command']}, since {holder['since']})"
        except (ValueError, KeyError, TypeError):
            who = "another process"
        raise FolderInUseError(
            f"{folder} is in use by {who}; wait for that run to end, or give this one another output_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
    handle.write(json.dumps({"pid": os.getpid(), "command": command, "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    claim = RunFolder(folder, handle)
    _HELD[folder] = claim
    return claim


def holds_run(folder: str | Path) -> list[str]:
    """What in `folder` shows an earlier run (empty: none). An empty checkpoints/ is no run."""
    folder = Path(folder)
    found = []
    for name in RUN_MARKS:
        path = folder / name
        if name == "checkpoints":
            if path.is_dir() and any(path.iterdir()):
                found.append(name + "/")
        elif path.exists():
            found.append(name + ("/" if path.is_dir() else ""))
    return found


def move_aside(folder: str | Path) -> Path:
    """Rename `folder` to the first free `<folder>.previous-N`; returns the new path."""
    folder = Path(folder)
    index = 1
    while (target := folder.with_name(f"{folder.name}.previous-{index}")).exists():
        index += 1
    folder.rename(target)
    return target


def claim_run_folder(folder: str | Path, resume: str | None, start_over: bool, accelerator) -> RunFolder:
    """Lock `folder` for this run (on the main process; the others wait for it); refuse a fresh
    start over an earlier run unless `start_over`, which moves that run aside first."""
    claim = RunFolder(Path(folder), None)  # the other processes hold nothing
    if accelerator.is_main_process:
        claim = _claim(folder, resume, start_over, accelerator.print)
    accelerator.wait_for_everyone()
    return claim


def _claim(folder: str | Path, resume: str | None, start_over: bool, print_fn) -> RunFolder:
    claim = lock_folder(folder)
    earlier = holds_run(folder)
    if not earlier or resume:
        return claim
    if not start_over:
        claim.release()
        raise FileExistsError(
            f"{folder} holds an earlier run ({', '.join(earlier)}); continue it with resume=latest, or set "
            "start_over=true to move it aside (to a .previous-N folder beside it, not deleted) and start afresh"
        )
    moved = move_aside(folder)  # renamed under this run's lock: no other run can enter it meanwhile
    print_fn(f"start_over=true: the earlier run in {folder} moved to {moved}")
    return lock_folder(folder)  # releases the claim that moved with it
