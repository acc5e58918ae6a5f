"""Every ```python snippet of the README runs, prints what its comments say, and the tokenizer
it builds is the recipe."""

import ast
import contextlib
import io
import re

import torch

from tests.readme_fixtures import prepare_readme_files
from tokenizer.config import TokenizerTrainConfig

TUPLE = re.compile(r"\((\d+(?:, \d+)+)\)")  # (4, 8, 8) in a comment
RANGE = re.compile(r"in \[(\d+), (\d+)([\])])")  # in [0, 512) or in [0, 1]


def promised(block: str) -> tuple[dict, dict, list]:
    """What the snippet's comments promise: shapes and value ranges of names assigned once
    (`codes = ...  # (4, 8, 8) long, in [0, 512)`), and the shapes its print lines print, in order."""
    shapes, ranges, printed = {}, {}, []
    assigned = [line.split("=")[0].strip() for line in block.splitlines() if re.match(r"^\w+ = ", line)]
    for line in block.splitlines():
        code, _, comment = line.partition("#")
        tuples = [tuple(int(x) for x in match.split(", ")) for match in TUPLE.findall(comment)]
        if code.startswith("print("):
            printed += tuples
            continue
        name = code.split("=")[0].strip() if re.match(r"^\w+ = ", code) else None
        if name is None or assigned.count(name) != 1:
            continue
        if tuples:
            shapes[name] = tuples[0]
        if match := RANGE.search(comment):
            ranges[name] = (int(match[1]), int(match[2]), match[3] == "]")
    return shapes, ranges, printed


def test_every_readme_snippet_runs_and_prints_what_it_says(repo_root, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python snippet"
    monkeypatch.chdir(tmp_path)
    prepare_readme_files(tmp_path)
    built, checked = [], 0
    for index, block in enumerate(blocks):
        namespace = {"__name__": "__readme__"}
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            exec(compile(block, f"README.md snippet {index}", "exec"), namespace)
        shapes, ranges, printed = promised(block)
        for name, shape in shapes.items():
            assert tuple(namespace[name].shape) == shape, (index, name)
        for name, (low, high, closed) in ranges.items():
            values = torch.as_tensor(namespace[name])
            assert values.min() >= low and (values.max() <= high if closed else values.max() < high), (index, name)
        sizes = [tuple(ast.literal_eval(size)) for size in re.findall(r"torch\.Size\((\[[\d, ]*\])\)", stdout.getvalue())]
        assert sizes == printed, (index, stdout.getvalue(), printed)
        checked += len(shapes) + len(ranges) + len(printed)
        if "tokenizer" in namespace:
            built.append(namespace["tokenizer"])
    assert checked >= 8  # the snippets' promises were found, not skipped
    # The tokenizer a reader builds from the README (saved and loaded back) trains the recipe that
    # configs/tokenizer/mnist.yaml measures, not an older setup.
    assert built and all(tokenizer.config == TokenizerTrainConfig().model for tokenizer in built)
