"""Sampling code grids from a trained prior with `transformers` `generate`."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from .model import vocabulary_of


class CodesOnly(LogitsProcessor):
    """After the prefix only code tokens may be produced: special tokens get -inf."""

    def __init__(self, codebook_size: int):
        self.codebook_size = codebook_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.codebook_size :] = -float("inf")
        return scores


def _prefixes(prior: PreTrainedModel, n: int, class_labels) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prefix tokens (n, 1): begin-of-image, or class tokens with the null class as negative prompt."""
    vocabulary = vocabulary_of(prior)
    if class_labels is None:
        if vocabulary.num_classes:
            return torch.full((n, 1), vocabulary.null_class_token), None
        return torch.full((n, 1), vocabulary.begin_token), None
    if not vocabulary.num_classes:
        raise ValueError("class_labels given but this prior is unconditional; train it with class_conditional=true")
    labels = torch.as_tensor(class_labels).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n or labels.min() < 0 or labels.max() >= vocabulary.num_classes:
        raise ValueError(
            f"class_labels must be one label or {n} labels in [0, {vocabulary.num_classes}); got {labels.tolist()}"
        )
    prefix = (vocabulary.codebook_size + 1 + labels).reshape(n, 1)
    return prefix, torch.full((n, 1), vocabulary.null_class_token)


@torch.no_grad()
def sample_codes(
    prior: PreTrainedModel,
    n: int = 16,
    class_labels=None,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    do_sample: bool = True,
    use_cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Sample `n` code grids (n, h, w) long in [0, codebook_size). The same `generator` seed gives
    the same codes; `guidance_scale` > 1 applies classifier-free guidance (conditional prior)."""
    vocabulary = vocabulary_of(prior)
    device = next(prior.parameters()).device
    prefix, negative = _prefixes(prior, n, class_labels)
    if generator is not None:  # generate draws from the global RNG: seed it from the generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    else:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    prior.eval()
    chunks = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in tqdm(range(0, n, batch_size), desc="sample codes", disable=not progress, leave=False):
            ids = prefix[start : start + batch_size].to(device)
            options = {}
            if guidance_scale != 1.0:
                if negative is None:
                    raise ValueError("guidance_scale != 1 needs class_labels and a class-conditional prior")
                options = dict(
                    guidance_scale=guidance_scale, negative_prompt_ids=negative[start : start + batch_size].to(device)
                )
            generated = prior.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=vocabulary.sequence_length,
                min_new_tokens=vocabulary.sequence_length,
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_k=top_k if (do_sample and top_k) else 0 if do_sample else None,
                top_p=top_p if (do_sample and top_p) else 1.0 if do_sample else None,
                logits_processor=LogitsProcessorList([CodesOnly(vocabulary.codebook_size)]),
                use_cache=use_cache,
                pad_token_id=vocabulary.begin_token,
                **options,
            )
            chunks.append(generated[:, 1:].cpu())
    return torch.cat(chunks).view(n, vocabulary.grid_height, vocabulary.grid_width)
