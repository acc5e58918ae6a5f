"""Sampling code grids from a trained prior with `transformers` `generate`."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tokenizer.quantizers import is_integer_dtype

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
        return vocabulary.prefix_tokens(None, n)[:, None], None
    if not vocabulary.num_classes:
        raise ValueError("class_labels given but this prior is unconditional; train it with class_conditional=true")
    if isinstance(class_labels, str):
        if class_labels != "each" or n % vocabulary.num_classes:
            raise ValueError(
                f"class_labels={class_labels!r}: the one string allowed is 'each' (n / num_classes samples of every "
                f"class, in class order), and n={n} must then be a multiple of num_classes={vocabulary.num_classes}"
            )
        class_labels = labels_per_class(vocabulary.num_classes, n // vocabulary.num_classes)
    labels = torch.as_tensor(class_labels).reshape(-1)
    if not is_integer_dtype(labels.dtype):
        raise ValueError(f"class_labels must be integer class indices, got {class_labels!r} ({labels.dtype})")
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n or labels.min() < 0 or labels.max() >= vocabulary.num_classes:
        raise ValueError(
            f"class_labels must be one label or {n} labels in [0, {vocabulary.num_classes}); got {labels.tolist()}"
        )
    return vocabulary.prefix_tokens(labels.long()).reshape(n, 1), vocabulary.prefix_tokens(None, n)[:, None]


class PerSampleGumbel(LogitsProcessor):
    """Sampling whose randomness belongs to each sample, not to the batch: row r adds Gumbel noise
    drawn from its own generator (seeded by the call's seed and the sample's index), and greedy
    decoding takes the argmax, an exact draw from softmax(scores) (the Gumbel-max trick). So
    sample i is the same whatever the batch size, chunking or device; transformers' own sampling
    draws one multinomial over the whole batch, which ties every sample to its batch-mates."""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        size = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(size, generator=generator, dtype=torch.float64) for generator in self.generators]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
        return scores + gumbel.to(scores.device, scores.dtype)


def _number(name: str, value, integer: bool = False) -> float:
    """`value` as a finite real number (an integer when asked); anything else is a ValueError."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, guidance_scale: float) -> None:
    """Clear errors for sampling knobs outside their range (or not numbers at all)."""
    if not _number("temperature", temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; lower it towards 0 for less random samples")
    if top_k is not None and _number("top_k", top_k, integer=True) < 0:
        raise ValueError(f"top_k must be >= 1 (or 0/None for no limit), got {top_k}")
    if top_p is not None and not 0 < _number("top_p", top_p) <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if not _number("guidance_scale", guidance_scale) >= 0:
        raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance, > 1 = stronger), got {guidance_scale}")


def sample_seed(generator: torch.Generator | None) -> int:
    """The call's base seed: drawn from `generator` (or the global RNG)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


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
    """Sample `n` code grids (n, h, w) long in [0, codebook_size), `batch_size` at a time (memory
    is bounded by the batch, not by n). The same `generator` seed gives the same codes, and
    sample i does not depend on batch_size; `guidance_scale` > 1 applies classifier-free guidance
    (conditional prior). class_labels: one label for all, n labels, or "each" (n / num_classes
    of every class, in class order)."""
    check_sampling(temperature, top_k, top_p, guidance_scale)
    vocabulary = vocabulary_of(prior)
    device = next(prior.parameters()).device
    prefix, negative = _prefixes(prior, n, class_labels)
    if guidance_scale != 1.0 and negative is None:
        raise ValueError("guidance_scale != 1 needs class_labels and a class-conditional prior")
    seed = sample_seed(generator)
    warpers = []
    if do_sample:  # the order of transformers' sampling: temperature, top-k, top-p
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    prior.eval()
    chunks = []
    for start in tqdm(range(0, n, batch_size), desc="sample codes", disable=not progress, leave=False):
        stop = min(start + batch_size, n)
        ids = prefix[start:stop].to(device)
        options = {}
        if guidance_scale != 1.0:
            options = dict(guidance_scale=guidance_scale, negative_prompt_ids=negative[start:stop].to(device))
        processors = [CodesOnly(vocabulary.codebook_size), *warpers]
        if do_sample:
            generators = [
                torch.Generator().manual_seed((seed + index * 0x9E3779B97F4A7C15) % 2**63)
                for index in range(start, stop)
            ]
            processors.append(PerSampleGumbel(generators))
        generated = prior.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=vocabulary.sequence_length,
            min_new_tokens=vocabulary.sequence_length,
            do_sample=False,  # greedy over Gumbel-perturbed scores = sampling (PerSampleGumbel)
            temperature=None,
            top_k=None,
            top_p=None,
            logits_processor=LogitsProcessorList(processors),
            use_cache=use_cache,
            pad_token_id=vocabulary.begin_token,
            **options,
        )
        chunks.append(generated[:, 1:].cpu())
    return torch.cat(chunks).view(n, vocabulary.grid_height, vocabulary.grid_width)


def labels_per_class(num_classes: int, per_class: int) -> torch.Tensor:
    """[0]*per_class + [1]*per_class + ...: class labels for `per_class` samples of every class."""
    if per_class < 1 or num_classes < 1:
        raise ValueError(f"need per_class >= 1 and num_classes >= 1, got {per_class} and {num_classes}")
    return torch.arange(num_classes).repeat_interleave(per_class)
