"""Every ```python snippet of the README runs."""

import re

from tests.readme_fixtures import prepare_readme_files


def test_every_readme_snippet_runs(repo_root, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (repo_root / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python snippet"
    monkeypatch.chdir(tmp_path)
    prepare_readme_files(tmp_path)
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md snippet {index}", "exec"), {"__name__": "__readme__"})
