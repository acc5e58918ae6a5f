"""Sampling code grids from a trained prior with `transformers` `generate`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
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


# The sampling settings and their values when neither a call nor the prior's saved
# generation_config.json sets them. The first four are transformers' own GenerationConfig fields;
# the last two are ours: how a class-conditional prior samples without class_labels ("null_class":
# its null-class prompt; "classes": a uniformly drawn class per sample, then that class) and the
# guidance for the "classes" way.
SAMPLING_SETTINGS = {
    "temperature": 1.0,
    "top_k": None,  # None or 0: no top-k
    "top_p": None,
    "guidance_scale": 1.0,
    "unconditional": "null_class",
    "unconditional_guidance_scale": 1.0,
}


def setting(config: GenerationConfig, name: str):
    """A sampling setting of `config`, or its value when unset (SAMPLING_SETTINGS)."""
    value = getattr(config, name, None)
    return SAMPLING_SETTINGS[name] if value is None else value


def check_sampling(config: GenerationConfig) -> None:
    """Clear errors for sampling settings outside their range (or not numbers at all)."""
    temperature, top_k, top_p = (setting(config, name) for name in ("temperature", "top_k", "top_p"))
    if not _number("temperature", temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; lower it towards 0 for less random samples")
    if top_k is not None and _number("top_k", top_k, integer=True) < 0:
        raise ValueError(f"top_k must be >= 1 (or 0/None for no limit), got {top_k}")
    if top_p is not None and not 0 < _number("top_p", top_p) <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    for name in ("guidance_scale", "unconditional_guidance_scale"):
        if not _number(name, setting(config, name)) >= 0:
            raise ValueError(f"{name} must be >= 0 (1 = no guidance, > 1 = stronger), got {setting(config, name)}")
    unconditional = setting(config, "unconditional")
    if unconditional not in ("null_class", "classes"):
        raise ValueError(f"unconditional={unconditional!r} is not allowed; choose one of ['null_class', 'classes']")


def sampling_config(base: GenerationConfig | None = None, **settings) -> GenerationConfig:
    """Sampling settings as one transformers `GenerationConfig`: a copy of `base` (a prior's saved
    defaults, `prior.generation_config`; None: plain sampling) with `settings` on top (a None
    value keeps base's), checked. Names: SAMPLING_SETTINGS, plus do_sample (False: greedy) and
    use_cache."""
    unknown = sorted(set(settings) - set(SAMPLING_SETTINGS) - {"do_sample", "use_cache"})
    if unknown:
        raise ValueError(f"unknown sampling setting(s) {unknown}; the settings are {list(SAMPLING_SETTINGS)}")
    # Rebuilt from its dict, not copied: one derived from the model's config.json
    # (`_from_model_config`) would drop our two fields when loaded again.
    config = (
        GenerationConfig(do_sample=True)
        if base is None
        else GenerationConfig.from_dict({**base.to_dict(), "_from_model_config": False})
    )
    config.update(**{name: value for name, value in settings.items() if value is not None}, allow_custom_entries=True)
    check_sampling(config)
    return config


def saved_sampling(config: GenerationConfig) -> dict:
    """The sampling settings `config` sets (the ones a pipeline call takes when given none)."""
    return {name: getattr(config, name) for name in SAMPLING_SETTINGS if getattr(config, name, None) is not None}


@dataclass
class SamplingCall:
    """What one pipeline call samples with: its class labels (drawn here for the "classes" way of
    unconditional sampling) and its settings."""

    class_labels: object
    settings: GenerationConfig


def settings_for_call(prior: PreTrainedModel, n: int, class_labels=None, generator: torch.Generator | None = None,
                      **overrides) -> SamplingCall:  # fmt: skip
    """The prior's saved defaults (`prior.generation_config`) under a call's `overrides` (None:
    keep the default). A call that sets top_p but not top_k drops the saved top-k; top_k=0 asks
    for none. guidance_scale applies to class-conditional calls; a class-conditional prior asked
    for unconditional samples the "classes" way draws one class per sample from `generator`
    (before the codes, so the same seed gives the same classes) and is guided by
    unconditional_guidance_scale unless the call sets guidance_scale."""
    given = {name: value for name, value in overrides.items() if value is not None}
    if "top_p" in given and "top_k" not in given:
        given["top_k"] = 0
    settings = sampling_config(prior.generation_config, **given)
    num_classes = vocabulary_of(prior).num_classes
    if class_labels is None:
        if setting(settings, "unconditional") == "classes" and num_classes:
            class_labels = torch.randint(0, num_classes, (n,), generator=generator)
            guidance = given.get("guidance_scale", setting(settings, "unconditional_guidance_scale"))
        else:  # unguided, unless the call asks (refused by sample_codes: nothing to guide against)
            guidance = given.get("guidance_scale", 1.0)
        settings.guidance_scale = guidance
    return SamplingCall(class_labels, settings)


def sample_seed(generator: torch.Generator | None) -> int:
    """The call's base seed: drawn from `generator` (or the global RNG)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


@torch.no_grad()
def sample_codes(
    prior: PreTrainedModel,
    n: int = 16,
    class_labels=None,
    settings: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Sample `n` code grids (n, h, w) long in [0, codebook_size), `batch_size` at a time (memory
    is bounded by the batch, not by n), with `settings` (`sampling_config(...)`; None: plain
    sampling at temperature 1; the prior's saved defaults apply only through the pipeline or
    settings_for_call). The same `generator` seed gives the same codes, and sample i does not
    depend on batch_size; guidance_scale > 1 applies classifier-free guidance (conditional
    prior). class_labels: one label for all, n labels, or "each" (n / num_classes of every
    class, in class order)."""
    settings = sampling_config() if settings is None else settings  # read, never changed: no copy
    check_sampling(settings)
    temperature, top_k, top_p = (setting(settings, name) for name in ("temperature", "top_k", "top_p"))
    guidance_scale = setting(settings, "guidance_scale")
    do_sample = settings.do_sample is not False  # our sampler samples unless told otherwise
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
    # What generate itself does: the length, the cache, classifier-free guidance. Greedy decoding
    # applies no temperature, top-k or top-p (they are the warpers above); they are set to
    # transformers' own defaults so that generate neither fills in the prior's saved sampling
    # defaults nor logs them as "generation flags not valid" for greedy decoding.
    decoding = GenerationConfig(
        max_new_tokens=vocabulary.sequence_length,
        min_new_tokens=vocabulary.sequence_length,
        do_sample=False,  # greedy over Gumbel-perturbed scores = sampling (PerSampleGumbel)
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        guidance_scale=guidance_scale,
        use_cache=settings.use_cache is not False,
        pad_token_id=vocabulary.begin_token,
    )
    prior.eval()
    chunks = []
    for start in tqdm(range(0, n, batch_size), desc="sample codes", disable=not progress, leave=False):
        stop = min(start + batch_size, n)
        ids = prefix[start:stop].to(device)
        options = {} if guidance_scale == 1.0 else dict(negative_prompt_ids=negative[start:stop].to(device))
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
            generation_config=decoding,
            logits_processor=LogitsProcessorList(processors),
            **options,
        )
        chunks.append(generated[:, 1:].cpu())
    return torch.cat(chunks).view(n, vocabulary.grid_height, vocabulary.grid_width)


def labels_per_class(num_classes: int, per_class: int) -> torch.Tensor:
    """[0]*per_class + [1]*per_class + ...: class labels for `per_class` samples of every class."""
    if per_class < 1 or num_classes < 1:
        raise ValueError(f"need per_class >= 1 and num_classes >= 1, got {per_class} and {num_classes}")
    return torch.arange(num_classes).repeat_interleave(per_class)
