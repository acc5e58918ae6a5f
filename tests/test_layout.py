"""The package layout the house rules promise: dependencies flow one way, no module shadows a
library, no module outgrows 400 lines, and the training scripts run by path with no sys.path edit (the editable install makes
the packages importable)."""

import ast
import importlib.util
import subprocess
import sys

import pytest

from tests.helpers import ROOT, launch_command

# Each room and the rooms it may import. The training scripts are entry points, not modules: the
# prior's writes the pipeline folder, which the pipeline class owns.
MAY_IMPORT = {
    "infra": {"infra"},
    "tokenizer": {"infra", "tokenizer"},
    "prior": {"infra", "tokenizer", "prior"},
    "pipelines": {"infra", "tokenizer", "prior", "pipelines"},
}
SCRIPTS = {"tokenizer/train.py": {"infra", "tokenizer"}, "prior/train.py": {"infra", "tokenizer", "prior", "pipelines"}}
# Libraries of this field a user may have installed even where this environment has not.
KNOWN_LIBRARIES = {"evaluate", "datasets", "transformers", "accelerate", "diffusers", "ot", "lpips", "timm", "einops",
                   "torchmetrics", "wandb", "tensorboard", "gradio", "safetensors", "huggingface_hub", "scipy"}  # fmt: skip


def imported_rooms(path) -> set[str]:
    """The project rooms a file imports (absolute imports; relative ones stay in its room)."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        rooms |= {name.split(".")[0] for name in names if name.split(".")[0] in MAY_IMPORT}
    return rooms


def test_dependencies_flow_one_way():
    crossings = []
    for room, allowed in MAY_IMPORT.items():
        for path in sorted((ROOT / room).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            extra = imported_rooms(path) - SCRIPTS.get(name, allowed)
            if extra:
                crossings.append(f"{name} imports {sorted(extra)}")
    assert not crossings, crossings
    assert imported_rooms(ROOT / "prior" / "model.py") == {"infra"}  # the check can see an import


def test_no_module_is_over_400_lines():
    """Past 400 lines a module holds more than one idea: split it by what it is about."""
    long = {}
    for room in (*MAY_IMPORT, "benchmarks"):
        for path in sorted((ROOT / room).rglob("*.py")):
            if (lines := len(path.read_text().splitlines())) > 400:
                long[path.relative_to(ROOT).as_posix()] = lines
    assert not long, long


def test_no_module_is_named_like_a_library():
    """Run by path, a script's folder comes first on sys.path: a module there named like the
    standard library's or an installed package's would be imported in its place."""
    clashes = []
    for room in MAY_IMPORT:
        for path in sorted((ROOT / room).rglob("*.py")):
            name = path.stem
            if name == "__init__":
                continue
            spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
            installed = spec is not None and spec.origin is not None and not spec.origin.startswith(str(ROOT))
            if name in sys.stdlib_module_names or name in KNOWN_LIBRARIES or installed:
                clashes.append(path.relative_to(ROOT).as_posix())
    assert not clashes, clashes


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_training_scripts_run_by_path_from_the_repo_root(script):
    """`accelerate launch tokenizer/train.py` as the README says it, with only the installed
    package on the path (no PYTHONPATH): every import resolves and --help prints the config."""
    command, env = launch_command([script, "--help"])
    env = {key: value for key, value in env.items() if key != "PYTHONPATH"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--config" in result.stdout and "usage" in result.stdout.lower()
    source = (ROOT / script).read_text()
    assert "sys.path" not in source
