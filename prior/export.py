"""The pipeline folder: tokenizer/ + prior/ + pipeline_config.json, written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from infra.cards import pipeline_card

PIPELINE_CONFIG = "pipeline_config.json"


def save_pipeline_folder(folder: str | Path, tokenizer, prior, tokenizer_id: str, extra: dict | None = None) -> Path:
    """Write tokenizer (save_pretrained), prior (save_pretrained), the pipeline config and its model
    card (README.md) into `folder`."""
    folder = Path(folder)
    temporary = folder.with_name(f".tmp_{folder.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    tokenizer.save_pretrained(temporary / "tokenizer")
    prior.save_pretrained(temporary / "prior", safe_serialization=True)
    config = {"pipeline": "VQWAEPipeline", "tokenizer_id": tokenizer_id, **(extra or {})}
    (temporary / PIPELINE_CONFIG).write_text(json.dumps(config, indent=2))
    pipeline_card({key: value for key, value in config.items() if key != "tokenizer_id"}).save(temporary / "README.md")
    if folder.exists():
        shutil.rmtree(folder)
    temporary.rename(folder)
    return folder
