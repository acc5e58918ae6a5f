"""Files saved before the OT settings were typed (`model.transport.*`): their flat `config.json`
still loads, and the tokenizer identity they recorded (in pipelines, priors, code caches) still
matches. Also the error a user gets for an old option name in a YAML file or an override."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

# The flat VQWAEConfig of main 356dcdd, field by field with its default (what a saved file that
# lacks a field was built with).
FLAT_DEFAULTS: dict[str, Any] = {
    "in_channels": 1, "image_size": 32, "hidden_channels": 128, "num_res_blocks": 2, "downsample": 4,
    "embedding_dim": 64, "codebook_size": 512, "quantizer": "wasserstein", "codebook_init": "encoder",
    "init_noise": 0.1, "ot_scope": "global", "ot_solver": "sinkhorn", "learn_code_weights": False,
    "sinkhorn_epsilon": 0.1, "sinkhorn_epsilon_scale": "nearest", "sinkhorn_iterations": 50,
    "sinkhorn_tolerance": 1e-3, "sinkhorn_check_every": 50, "sinkhorn_warm_start": True,
    "sinkhorn_plan": "assignment", "sinkhorn_step_bound": 0.0, "sinkhorn_code_relaxation": 0.0,
    "sinkhorn_dual_steps": 0, "sinkhorn_dual_candidates": 0, "ot_encoder_target": "cell",
    "exact_max_iterations": 500_000, "ema_decay": 0.99, "dead_code_threshold": 2.0, "code_dim": 0,
    "cosine_similarity": False, "fsq_levels": [8, 8, 8],
}  # fmt: skip

# Old flat name -> its place under model.
MOVED: dict[str, str] = {
    "ot_scope": "transport.scope",
    "ot_solver": "transport.solver",
    "learn_code_weights": "transport.learn_code_weights",
    "sinkhorn_epsilon": "transport.epsilon",
    "sinkhorn_iterations": "transport.iterations",
    "sinkhorn_code_relaxation": "transport.code_relaxation",
    "sinkhorn_dual_steps": "transport.dual_steps",
    "sinkhorn_dual_candidates": "transport.dual_candidates",
    "ot_encoder_target": "transport.encoder_target",
    "ema_decay": "vq_ema.decay",
    "dead_code_threshold": "vq_ema.dead_code_threshold",
    "code_dim": "vq_ema.code_dim",
    "cosine_similarity": "vq_ema.cosine_similarity",
    "fsq_levels": "fsq.levels",
}

# Old options that are gone, and why (they shaped training only: a saved model without them
# encodes and decodes exactly as before).
RETIRED: dict[str, str] = {
    "sinkhorn_epsilon_scale": "epsilon is always relative to the mean nearest-code cost (`mean` collapsed "
    "the codebook once codes sat among the latents; docs/history.md)",
    "sinkhorn_plan": "the plan is always the Laguerre cells of the Sinkhorn potential (the entropic plan "
    "spreads codes over many latents and pulls them together; docs/history.md)",
    "sinkhorn_step_bound": "semi-relaxed OT (model.transport.code_relaxation) keeps the carried potential "
    "bounded; the step bound did not stop the drift (docs/history.md)",
    "sinkhorn_check_every": "folded into model.transport.iterations: a warm-started step runs them as one block",
    "sinkhorn_tolerance": "a warm-started step is a fixed budget (model.transport.iterations); no tolerance",
    "sinkhorn_warm_start": "training always warm-starts from the last step's potential",
    "exact_max_iterations": "POT's iteration cap is an internal constant (never reached at our sizes)",
}

# Fields the identity of a 356dcdd-era file leaves out while at these values (added after the
# first identities were written).
_LEFT_OUT_AT = {"sinkhorn_dual_steps": 0, "sinkhorn_dual_candidates": 0}


def is_flat(values: dict) -> bool:
    """True for a config.json written before model.transport existed."""
    return "transport" not in values and any(key in values for key in (*MOVED, *RETIRED))


def upgrade(values: dict) -> dict:
    """A flat saved config -> the nested layout, fields the file lacks taking the defaults it was
    built with (balanced OT, 50 iterations, no dual steps, the `cell` target: not today's recipe)."""
    unknown = sorted(set(values) - set(FLAT_DEFAULTS))
    if unknown:
        raise ValueError(f"saved tokenizer config has unknown key(s) {unknown}; was it written by vqwae?")
    flat = {**FLAT_DEFAULTS, **values}
    nested: dict[str, Any] = {"transport": {}, "vq_ema": {}, "fsq": {}}
    for key, value in flat.items():
        if key in RETIRED:
            continue
        if key in MOVED:
            section, name = MOVED[key].split(".")
            nested[section][name] = value
        else:
            nested[key] = value
    return nested


def moved_error(prefix: str, key: str) -> str | None:
    """The error for an old option name in a YAML file or override, or None when `key` is not one."""
    if key in MOVED:
        return f"{prefix}{key} moved to {prefix}{MOVED[key]}; write {prefix}{MOVED[key]}=..."
    if key in RETIRED:
        return f"{prefix}{key} was retired: {RETIRED[key]}. Remove it"
    return None


def legacy_identity(values: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """The tokenizer identity main 356dcdd computed: sha256 of the flat config (every field, less
    the ones added later while at their default) and of every tensor of the state dict."""
    flat = {**FLAT_DEFAULTS, **values}
    for key, default in _LEFT_OUT_AT.items():
        if flat[key] == default:
            del flat[key]
    return config_and_weights_digest(flat, state_dict)


def config_and_weights_digest(config: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a config (JSON, sorted keys) and of every tensor of a state dict, by name: the
    hash both today's tokenizer identity and the earlier one are made of."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
