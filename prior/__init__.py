"""Stage two of vqwae: a `transformers` causal LM prior over the tokenizer's code sequences."""

from .model import CodeVocabulary, PriorModelConfig, build_prior, check_matches_tokenizer, vocabulary_of
from .sampling import sample_codes, sampling_config

__all__ = [
    "CodeVocabulary",
    "PriorModelConfig",
    "build_prior",
    "check_matches_tokenizer",
    "vocabulary_of",
    "sample_codes",
    "sampling_config",
]
