"""The stage-two prior: a `transformers` causal LM over code sequences, and its vocabulary.

Vocabulary: codes 0..K-1, then begin-of-image, then (class-conditional) one token per class and
a null class for classifier-free guidance. A sequence is [prefix] + the h*w codes in raster
order; the prefix is begin-of-image, or the class token (the null class when the label is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from infra.config import check_choice, check_positive


@dataclass
class PriorModelConfig:
    """Size of the transformer. architecture: gpt2 (GPT2LMHeadModel) | llama (LlamaForCausalLM)."""

    architecture: str = "gpt2"
    num_layers: int = 6
    num_heads: int = 8
    hidden_size: int = 256
    dropout: float = 0.1

    def __post_init__(self):
        check_choice("model.architecture", self.architecture, ("gpt2", "llama"))
        for name in ("num_layers", "num_heads", "hidden_size"):
            check_positive(f"model.{name}", getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} must be divisible by model.num_heads={self.num_heads}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class CodeVocabulary:
    """Token ids of a prior over `codebook_size` codes on a `grid_height` x `grid_width` grid."""

    codebook_size: int
    grid_height: int
    grid_width: int
    num_classes: int = 0  # 0 = unconditional

    @property
    def begin_token(self) -> int:
        return self.codebook_size

    @property
    def null_class_token(self) -> int:
        return self.codebook_size + 1 + self.num_classes

    def class_token(self, label: int) -> int:
        return self.codebook_size + 1 + label

    def prefix_tokens(self, labels: torch.Tensor | None, count: int | None = None) -> torch.Tensor:
        """The token each sequence starts with, (B,): class tokens of `labels` for a conditional
        prior; begin-of-image for an unconditional one, or the null class (the unconditional
        prompt of a conditional prior) when `labels` is None (`count` sequences). The one place
        training (prior/train.py) and sampling (prior/sampling.py) turn labels into tokens."""
        if labels is None:
            token = self.null_class_token if self.num_classes else self.begin_token
            return torch.full((count,), token, dtype=torch.long)
        if not self.num_classes:
            return torch.full_like(labels, self.begin_token)
        return self.codebook_size + 1 + labels

    @property
    def size(self) -> int:
        return self.codebook_size + 1 + (self.num_classes + 1 if self.num_classes else 0)

    @property
    def sequence_length(self) -> int:
        return self.grid_height * self.grid_width


def build_prior(config: PriorModelConfig, vocabulary: CodeVocabulary, tokenizer_id: str) -> PreTrainedModel:
    """A fresh causal LM sized for the vocabulary; our metadata rides in its config.json."""
    common = dict(
        vocab_size=vocabulary.size,
        bos_token_id=vocabulary.begin_token,
        eos_token_id=vocabulary.begin_token,  # never produced: masked at sampling time
        pad_token_id=vocabulary.begin_token,
    )
    if config.architecture == "gpt2":
        model_config = GPT2Config(
            n_positions=vocabulary.sequence_length + 1, n_embd=config.hidden_size, n_layer=config.num_layers,
            n_head=config.num_heads, resid_pdrop=config.dropout, embd_pdrop=config.dropout,
            attn_pdrop=config.dropout, **common,
            # GPT-2's own tanh GELU (gelu_new) as one fused kernel: the same function to 6e-7 in the
            # logits, and the 4 x 128 prior's CPU step 12% shorter (gelu_new is five elementwise ops).
            activation_function="gelu_pytorch_tanh",
        )  # fmt: skip
        model_class = GPT2LMHeadModel
    else:
        model_config = LlamaConfig(
            hidden_size=config.hidden_size, intermediate_size=4 * config.hidden_size,
            num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
            max_position_embeddings=vocabulary.sequence_length + 1, attention_dropout=config.dropout, **common,
        )  # fmt: skip
        model_class = LlamaForCausalLM
    model_config.vqwae = {
        "codebook_size": vocabulary.codebook_size,
        "grid_height": vocabulary.grid_height,
        "grid_width": vocabulary.grid_width,
        "num_classes": vocabulary.num_classes,
        "tokenizer_id": tokenizer_id,
    }
    return model_class(model_config)


def vocabulary_of(prior: PreTrainedModel) -> CodeVocabulary:
    """The code vocabulary a trained prior was built for (from its config)."""
    meta = getattr(prior.config, "vqwae", None)
    if not meta:
        raise ValueError("this model has no vqwae metadata in its config: it was not trained by prior/train.py")
    return CodeVocabulary(meta["codebook_size"], meta["grid_height"], meta["grid_width"], meta["num_classes"])


def check_matches_tokenizer(prior: PreTrainedModel, tokenizer, tokenizer_id: str | None = None) -> None:
    """Refuse a prior whose vocabulary, grid or tokenizer identity does not match `tokenizer`."""
    vocabulary = vocabulary_of(prior)
    grid = tokenizer.config.grid_size
    if vocabulary.codebook_size != tokenizer.config.codebook_size:
        raise ValueError(
            f"the prior's vocabulary has {vocabulary.codebook_size} codes but the tokenizer's codebook has "
            f"{tokenizer.config.codebook_size}; train the prior on this tokenizer's codes (prior/train.py tokenizer=...)"
        )
    if (vocabulary.grid_height, vocabulary.grid_width) != (grid, grid):
        raise ValueError(
            f"the prior generates {vocabulary.grid_height}x{vocabulary.grid_width} code grids but the tokenizer "
            f"makes {grid}x{grid}; train the prior on this tokenizer's codes"
        )
    trained_on = prior.config.vqwae.get("tokenizer_id")
    if not trained_on:
        raise ValueError(
            "the prior records no tokenizer identity (config.json vqwae.tokenizer_id), so nothing shows it was "
            "trained on this tokenizer's codes; train or export it with prior/train.py, which records it"
        )
    if tokenizer_id is not None and not tokenizer.has_identity(trained_on, tokenizer_id):
        raise ValueError(
            f"the prior was trained on the codes of tokenizer {trained_on[:12]} but this tokenizer is "
            f"{tokenizer_id[:12]}; its codes mean something else. Train the prior on this tokenizer's codes"
        )
