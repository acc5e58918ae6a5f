"""Every ```python snippet of the README runs, and the tokenizer it builds is the recipe."""

import re

from tests.readme_fixtures import prepare_readme_files
from tokenizer.config import TokenizerTrainConfig


def test_every_readme_snippet_runs(repo_root, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python snippet"
    monkeypatch.chdir(tmp_path)
    prepare_readme_files(tmp_path)
    built = []
    for index, block in enumerate(blocks):
        namespace = {"__name__": "__readme__"}
        exec(compile(block, f"README.md snippet {index}", "exec"), namespace)
        if "tokenizer" in namespace:
            built.append(namespace["tokenizer"])
    # The tokenizer a reader builds from the README (saved and loaded back) trains the recipe that
    # configs/tokenizer/mnist.yaml measures, not an older setup.
    assert built and all(tokenizer.config == TokenizerTrainConfig().model for tokenizer in built)
