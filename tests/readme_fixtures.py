"""Files the README snippets refer to, made tiny so the snippets run in seconds offline."""

from pathlib import Path


def prepare_readme_files(folder: Path) -> None:
    """Nothing is needed yet: the tokenizer snippet builds its own model."""
    return None
