"""The pipeline folder: tokenizer/ + prior/ + pipeline_config.json, written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from infra.cards import pipeline_card
from infra.files import cleaned_on_failure, replace_with

PIPELINE_CONFIG = "pipeline_config.json"


def save_pipeline_folder(folder: str | Path, tokenizer, prior, tokenizer_id: str, extra: dict | None = None,
                         recovery: str = "free space and save it again") -> Path:  # fmt: skip
    """Write tokenizer (save_pretrained), prior (save_pretrained), the pipeline config and its model
    card (README.md) into `folder`; a failed write (a full disk) leaves the earlier folder as it was
    and is one line naming the file and `recovery`."""
    folder = Path(folder)
    temporary = folder.with_name(f".tmp_{folder.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    with cleaned_on_failure(temporary, f"the pipeline {folder}", recovery):
        tokenizer.save_pretrained(temporary / "tokenizer")
        prior.save_pretrained(temporary / "prior", safe_serialization=True)
        config = {"pipeline": "VQWAEPipeline", "tokenizer_id": tokenizer_id, **(extra or {})}
        (temporary / PIPELINE_CONFIG).write_text(json.dumps(config, indent=2))
        card = pipeline_card({key: value for key, value in config.items() if key != "tokenizer_id"})
        card.save(temporary / "README.md")
    return replace_with(temporary, folder)
