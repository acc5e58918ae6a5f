"""Encode a data set into code sequences once, cached on disk with the tokenizer's identity."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from infra.data import to_unit_range
from infra.files import warn_rebuilding, written_atomically
from tokenizer.model import VQWAE


@torch.no_grad()
def encode_split(tokenizer: VQWAE, split, batch_size: int = 64, accelerator=None, desc: str = "encode") -> dict:
    """Codes (N, h*w) long in raster order and labels (N,) of a split of `pixel_values`.
    With an accelerator, the split is sharded over processes and gathered back in order."""
    device = accelerator.device if accelerator else next(tokenizer.parameters()).device
    tokenizer = tokenizer.to(device).eval()
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader, device_placement=True)
    codes, labels = [], []
    disable = accelerator is not None and not accelerator.is_main_process
    for batch in tqdm(loader, desc=desc, disable=disable):
        batch_codes = tokenizer.encode(to_unit_range(batch["pixel_values"]).to(device)).flatten(1)
        batch_labels = batch["label"].to(device)
        if accelerator is not None:  # gather_for_metrics drops the padding of the last batch
            batch_codes, batch_labels = accelerator.gather_for_metrics((batch_codes, batch_labels))
        codes.append(batch_codes.cpu())
        labels.append(batch_labels.cpu())
    return {"codes": torch.cat(codes), "labels": torch.cat(labels)}


def _read_cache(path: Path) -> tuple[dict, dict] | None:
    """(metadata, tensors) of a code cache; None when there is none, or when it is damaged
    (truncated, empty, not safetensors, lacking codes or labels): then it is encoded again."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:  # one read: the metadata and the tensors
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if set(tensors) != {"codes", "labels"} or len(tensors["codes"]) != len(tensors["labels"]):
            raise ValueError(f"holds {sorted(tensors)} instead of codes and labels of one length")
    except (SafetensorError, OSError, ValueError) as error:
        warn_rebuilding(path, error, "code cache")
        return None
    return meta, tensors


def load_or_encode(cache_dir: str | Path, split_name: str, tokenizer: VQWAE, split, batch_size: int = 64,
                   accelerator=None) -> dict:  # fmt: skip
    """Codes of `split` from `<cache_dir>/<split_name>.safetensors`, encoding and writing it first if
    absent. A cache written for another tokenizer or split is refused, never reused."""
    path = Path(cache_dir) / f"{split_name}.safetensors"
    identity = tokenizer.identity()
    cached = _read_cache(path)
    if cached is not None:
        meta, codes = cached
        if not tokenizer.has_identity(meta.get("tokenizer", "")) or meta.get("split") != split_name:
            raise ValueError(
                f"code cache {path} was made by another tokenizer ({meta.get('tokenizer', '?')[:12]}, split "
                f"{meta.get('split')!r}); this tokenizer is {identity[:12]}. Delete {path.parent} or use a new output_dir"
            )
        return codes
    encoded = encode_split(tokenizer, split, batch_size, accelerator, desc=f"encode {split_name}")
    if accelerator is None or accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(
            path, f"the code cache {path}", "free space and run the same command again"
        ) as temporary:
            save_file(encoded, str(temporary), metadata={"tokenizer": identity, "split": split_name})
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return encoded
