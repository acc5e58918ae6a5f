"""Reading the files the project saved: a damaged, truncated, empty or wrong-kind file is one
`DamagedFileError` line naming the file and what to do, never a traceback from deep inside a
loader. Caches that can be rebuilt use `warn_rebuilding` and rebuild."""

from __future__ import annotations

import json
import warnings
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
