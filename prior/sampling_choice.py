"""The pipeline's default sampling settings, chosen on the validation split at the end of prior
training, so that `pipe(n=16)` samples the way that suits the prior it loads.

A small sweep, every setting from the same seed, scored by a digit classifier and by FID in that
classifier's feature space against validation images:
1. unconditional samples from the null-class prompt at a few temperatures and top-k values: the
   share the classifier recognises (confidence >= 0.9);
2. for a class-conditional prior, class-conditional samples (an equal number of every class) at a
   few guidance scales with the chosen temperature and top-k: the share judged the asked class;
3. unconditional samples drawn the other way: a uniformly drawn class per sample, then that class
   (the model's p(x) = sum_y p(y) p(x | y) through its conditionals; the null class sees only the
   label_dropout share of the training data, and its samples are the weaker), without guidance
   and with the chosen one; they compete with the null class's rows for the unconditional default.
In each choice the winner is the best classifier score among the settings whose FID is within
FID_SLACK of the best FID among them (legible, but not at the price of collapsing onto a few
prototypes), ties to the lower FID. Nothing here reads the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from infra.metrics.digit_classifier import DigitClassifier, Judgement, feature_fid, judge

from .sampling import sample_codes, sampling_config

UNCONDITIONAL = [(1.0, None), (0.9, None), (0.8, None), (1.0, 64), (0.9, 64), (0.8, 32)]  # (temperature, top_k)
GUIDANCE = [1.0, 1.5, 2.0, 3.0]
FID_SLACK = 1.5  # a setting may be chosen if its feature FID is at most this x the sweep's best


@dataclass
class SamplingChoice:
    """settings: the chosen temperature, top_k and (class-conditional priors) guidance_scale; rows:
    every tried setting with its scores, in the order tried."""

    settings: dict
    rows: list[dict] = field(default_factory=list)


def _choose(rows: list[dict], score: str) -> dict:
    best_fid = min(row["feature_fid"] for row in rows)
    eligible = [row for row in rows if row["feature_fid"] <= FID_SLACK * best_fid]
    return max(eligible, key=lambda row: (row[score], -row["feature_fid"]))


@torch.no_grad()
def choose_sampling(prior, tokenizer, reference: torch.Tensor, classifier: DigitClassifier, n: int = 200,
                    seed: int = 0, batch_size: int = 64) -> SamplingChoice:  # fmt: skip
    """Sweep the settings above for `prior` decoded by `tokenizer`, against `reference` validation
    images (N, 1, 32, 32) in [0, 1]; n samples a setting (rounded down to a multiple of the
    classes for the class-conditional sweep)."""
    if n < 10:
        raise ValueError(f"the sampling sweep needs n >= 10 samples a setting, got {n}")
    device = next(tokenizer.parameters()).device
    reference_judgement = judge(classifier, reference)
    num_classes = prior.config.vqwae["num_classes"]

    def sample(labels, guidance: float, temperature: float, top_k: int | None) -> Judgement:
        count = n if labels is None else len(labels)
        settings = sampling_config(temperature=temperature, top_k=top_k, guidance_scale=guidance)
        codes = sample_codes(prior, count, labels, settings, torch.Generator().manual_seed(seed), batch_size)
        images = torch.cat([tokenizer.decode(chunk.to(device)).clamp(0, 1).cpu() for chunk in codes.split(batch_size)])
        return judge(classifier, images)

    def unconditional_row(mode: str, guidance: float, temperature: float, top_k: int | None) -> dict:
        judged = sample(drawn_classes if mode == "classes" else None, guidance, temperature, top_k)
        return dict(kind=f"unconditional ({mode})", unconditional=mode, temperature=temperature, top_k=top_k,
                    guidance_scale=guidance, recognisable=judged.recognisable(),
                    feature_fid=feature_fid(judged, reference_judgement))  # fmt: skip

    drawn_classes = torch.randint(0, max(num_classes, 1), (n,), generator=torch.Generator().manual_seed(seed))
    unconditional = [unconditional_row("null_class", 1.0, *setting) for setting in UNCONDITIONAL]
    chosen = _choose(unconditional, "recognisable")
    settings = {"temperature": chosen["temperature"], "top_k": chosen["top_k"], "unconditional": "null_class"}
    rows = list(unconditional)
    if num_classes:
        labels = torch.arange(num_classes).repeat_interleave(max(1, n // num_classes))
        conditional = []
        for guidance in GUIDANCE:
            judged = sample(labels, guidance, settings["temperature"], settings["top_k"])
            scores = judged.accuracy(labels)
            conditional.append(dict(kind="class-conditional", temperature=settings["temperature"],
                                    top_k=settings["top_k"], guidance_scale=guidance,
                                    accuracy=scores["accuracy"], worst_class=scores["worst_class"],
                                    feature_fid=feature_fid(judged, reference_judgement)))  # fmt: skip
        settings["guidance_scale"] = _choose(conditional, "accuracy")["guidance_scale"]
        rows += conditional
        # The classes way of drawing unconditional samples, at the chosen temperature and top-k,
        # without guidance and with the chosen one, against the null class's best.
        for guidance in dict.fromkeys([1.0, settings["guidance_scale"]]):
            unconditional.append(unconditional_row("classes", guidance, settings["temperature"], settings["top_k"]))
            rows.append(unconditional[-1])
        chosen = _choose(unconditional, "recognisable")
        settings["unconditional"] = chosen["unconditional"]
        settings["unconditional_guidance_scale"] = chosen["guidance_scale"]
    return SamplingChoice(settings, rows)


def choice_table(choice: SamplingChoice) -> str:
    """The sweep as a markdown table, the chosen settings last."""
    lines = ["| samples | temperature | top-k | guidance | recognisable | class accuracy (worst) | feature FID |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in choice.rows:
        accuracy = f"{row['accuracy']:.1%} ({row['worst_class']:.0%})" if "accuracy" in row else "-"
        recognisable = f"{row['recognisable']:.1%}" if "recognisable" in row else "-"
        lines.append(f"| {row['kind']} | {row['temperature']} | {row['top_k'] or '-'} | {row['guidance_scale']} | "
                     f"{recognisable} | {accuracy} | {row['feature_fid']:.2f} |")  # fmt: skip
    return "\n".join(lines) + f"\n\nchosen: {choice.settings}"
