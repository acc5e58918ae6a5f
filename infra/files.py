"""Reading and writing the files the project saves.

Reading: a damaged, truncated, empty or wrong-kind file is one `DamagedFileError` line naming the
file and what to do, never a traceback from deep inside a loader. Caches that can be rebuilt use
`warn_rebuilding` and rebuild.

Writing: everything is written to a temporary name and renamed into place (`written_atomically`), so a
reader never takes a half-written file for a complete one. A write that fails (a full disk, a
quota, any OS error) removes what it had written and is one `WriteFailedError` line naming the
file, the error, the free space and how to go on (`cleaned_on_failure`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError, safe_open


class DamagedFileError(ValueError):
    """A file the project wrote (weights, a config, a cache) cannot be read as what it should be."""


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def read_json(path: str | Path, fix: str) -> dict:
    """The JSON object in `path`; a missing, empty, non-JSON or non-object file is one line."""
    path = Path(path)
    if not path.is_file():
        raise DamagedFileError(f"{path} is missing; {fix}")
    try:
        values = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = "empty" if path.stat().st_size == 0 else f"not valid JSON ({_first_line(error)})"
        raise DamagedFileError(f"{path} is damaged: {problem}; {fix}") from None
    if not isinstance(values, dict):
        raise DamagedFileError(f"{path} is damaged: it holds a JSON {type(values).__name__}, not an object; {fix}")
    return values


def check_safetensors(path: str | Path, fix: str) -> None:
    """Refuse a missing, empty, truncated or non-safetensors weights file (the header and the
    data length it declares are read; no tensor is loaded)."""
    path = Path(path)
    if not path.is_file():
        raise DamagedFileError(f"{path} is missing; {fix}")
    if path.stat().st_size == 0:
        raise DamagedFileError(f"{path} is damaged: empty; {fix}")
    try:
        with safe_open(str(path), "pt"):
            pass
    except SafetensorError as error:
        raise DamagedFileError(f"{path} is damaged: not a complete safetensors file ({_first_line(error)}); {fix}") from None


def check_saved_model(folder: str | Path, what: str, fix: str) -> None:
    """A `save_pretrained` folder (config.json + model.safetensors) that loads: check both files
    before the loader meets them. `what` names the folder's role in the message."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DamagedFileError(f"{what} folder {folder} is missing; {fix}")
    read_json(folder / "config.json", fix)
    check_safetensors(folder / "model.safetensors", fix)


def warn_rebuilding(path: str | Path, error: Exception, what: str) -> None:
    """Say that a damaged cache is being rebuilt (the caller then rebuilds it)."""
    warnings.warn(f"{what} {path} is damaged ({_first_line(error)}); rebuilding it", stacklevel=3)


class WriteFailedError(OSError):
    """Writing a file failed; nothing half-written was left in its place."""


# What a failed write raises: OS errors, safetensors' writer, torch.save's ("file write failed").
WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)


def _newest_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    files = [item for item in path.rglob("*") if item.is_file()] if path.is_dir() else []
    return max(files, key=lambda item: item.stat().st_mtime_ns) if files else None


def _free_space(path: Path) -> str:
    """How much room the disk holding `path` has left, said for a person."""
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    size = next(f"{free / 1024**power:.1f} {unit}" for power, unit in ((3, "GB"), (2, "MB"), (1, "KB"), (0, "bytes"))
                if free >= 1024**power or unit == "bytes")  # fmt: skip
    return f"the disk is full: {free} bytes free there" if free < 1024**2 else f"{size} free there"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def cleaned_on_failure(temporary: str | Path, what: str, recovery: str) -> Iterator[Path]:
    """Write `what` into `temporary` (a file or folder) inside the block. If writing fails, the
    temporary is removed and one `WriteFailedError` line names the file being written, the error,
    the free space and `recovery` (how to go on). Any other error (a refusal, an interrupt) also
    removes the temporary, and goes on as it was."""
    temporary = Path(temporary)
    try:
        yield temporary
    except WRITE_ERRORS as error:
        filename = getattr(error, "filename", None)
        failure = write_failed(Path(filename) if filename else _newest_file(temporary) or temporary, error, what, recovery)
        _remove(temporary)
        raise failure from None
    except BaseException:
        _remove(temporary)
        raise


def write_failed(file: Path, error: Exception, what: str, recovery: str) -> WriteFailedError:
    """The one line for a failed write: what, the file, the error, the space left, how to go on."""
    reason = getattr(error, "strerror", None) or _first_line(error)
    return WriteFailedError(f"could not write {what}: {file}: {reason} ({_free_space(Path(file))}); {recovery}")


def replace_with(temporary: Path, target: Path) -> Path:
    """Put a completely written `temporary` (file or folder) in `target`'s place."""
    if target.is_dir():
        shutil.rmtree(target)
    temporary.replace(target)
    return target


@contextmanager
def written_atomically(target: str | Path, what: str, recovery: str) -> Iterator[Path]:
    """The one way the project saves a file or folder: the block writes into the yielded temporary
    sibling (`.tmp_<name>`, cleared first), which then takes `target`'s place. A failed write
    leaves an earlier `target` as it was and is one `WriteFailedError` line (`cleaned_on_failure`)."""
    target = Path(target)
    temporary = target.with_name(f".tmp_{target.name}")
    _remove(temporary)
    with cleaned_on_failure(temporary, what, recovery):
        yield temporary
    replace_with(temporary, target)


def folder_megabytes(folder: str | Path) -> float:
    """The size of every file under `folder`, in MB (10^6 bytes)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file()) / 1e6


def write_record(path: str | Path, values: dict, what: str = "the results record") -> Path:
    """Write a JSON results record atomically."""
    with written_atomically(path, f"{what} {path}", "free space and run the command again") as temporary:
        temporary.write_text(json.dumps(values, indent=1) + "\n")
    return Path(path)
