"""Config dataclasses from YAML with `key=value` overrides.

Every stage describes its settings as nested dataclasses; this module turns a YAML file plus
command-line overrides (`learning_rate=3e-4`, dotted for nesting: `model.codebook_size=256`) into
them. Unknown keys and values of the wrong type raise `ValueError` naming what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shlex
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from tqdm import tqdm

from infra.allocator import keep_freed_memory

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """YAML with the 1.2 booleans: only true / false. PyYAML follows YAML 1.1, where no, yes, on and
    off are booleans too, so `mixed_precision=no` would arrive as False and fail as a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str, where: str) -> Any:
    """The YAML value of `text`; unreadable YAML is one line naming `where` it came from."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())[:160]
        raise ValueError(f"{where} is not valid YAML ({problem})") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into `{"a": {"b": 1}, "c": "x"}` (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(
                f"malformed override {item!r}: write key=value, e.g. learning_rate=0.001 or model.codebook_size=256"
            )
        value = _load_yaml(raw, f"the value of override {item!r}") if raw.strip() else ""
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} sets a field inside {part!r}, which is not a section")
        node[leaf] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values of `update` win; nested dicts merge."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Check (and gently convert) one value against a field's type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, name)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{name} is a section; give it keys, not {value!r}")
        return from_dict(annotation, value, prefix=f"{name}.")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return [_coerce(item, item_type, f"{name}[]") for item in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{name} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict; unknown keys raise `ValueError`."""
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    explain = getattr(cls, "old_key_error", None)  # a config whose options moved or were retired
    for key in unknown if explain else ():
        if message := explain(prefix, key):
            raise ValueError(message)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {[prefix + key for key in unknown]}; "
            f"allowed keys here: {sorted(prefix + key for key in fields)}"
        )
    kwargs = {key: _coerce(value, hints[key], prefix + key) for key, value in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (YAML/JSON friendly)."""
    return dataclasses.asdict(config)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load `cls` from a YAML file (optional) and apply `key=value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist; see configs/ for the shipped ones")
        values = _load_yaml(path.read_text(), f"config file {str(path)!r}") or {}
        if not isinstance(values, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of keys to values")
    values = merge(values, parse_overrides(overrides or []))
    return from_dict(cls, values)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise a `ValueError` naming the allowed choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(choices)}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise a `ValueError` when a number that must be positive (and finite) is not."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


class CommandLine(argparse.ArgumentParser):
    """The argument parser of every command: a bad argument is one line (`error: ...`, exit 2)
    instead of argparse's usage block; --help still prints the usage."""

    def __init__(self, description: str | None = None, **kwargs):
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (--help for usage)\n")


def check_arguments(args: argparse.Namespace, at_least: dict[str, int], at_most: dict[str, int] | None = None) -> None:
    """One line for a command's count or size argument out of range, before anything loads or
    runs: `at_least` / `at_most` map argparse destinations (e.g. `reference_n`) to their bounds;
    None (an option left out) passes."""
    for name, bound in at_least.items():
        value = getattr(args, name)
        if value is not None and value < bound:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {bound}, got {value}")
    for name, bound in (at_most or {}).items():
        value = getattr(args, name)
        if value is not None and value > bound:
            raise ValueError(f"--{name.replace('_', '-')} must be <= {bound}, got {value}")


def parse_config(config_class: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """`--config FILE key=value ...` -> a config dataclass; errors exit with the message in one line."""
    parser = CommandLine(description)
    parser.add_argument("--config", help="YAML file in configs/")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, dotted for nesting (model.codebook_size=256)"
    )
    args = parser.parse_args(argv)
    try:
        return load_config(config_class, args.config, args.overrides)
    except ValueError as error:
        parser.error(str(error))


def provenance(module: str, argv: list[str] | None = None) -> dict:
    """The head of a results record: today's date and the command that wrote it, `python -m
    MODULE ARGS` (the arguments `main` was given, else this process's)."""
    return {"date": time.strftime("%Y-%m-%d"), "command": f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)}


def run_cli(main) -> None:
    """Run a command-line `main`; a user error (bad config, data, weights, non-finite loss) prints
    one clear line and exits with status 2 instead of a traceback from deep inside. The process
    first keeps the memory it frees (infra/allocator.py: fewer page faults on the CPU)."""
    keep_freed_memory()
    try:
        main()
    except (ValueError, OSError, FloatingPointError) as error:
        for bar in list(tqdm._instances):  # end open progress bars: the error gets a line of its own
            bar.close()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
