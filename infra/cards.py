"""Hub model cards for tokenizers and pipelines, built with huggingface_hub's ModelCard API so the
Hub reads their metadata (library, tags, datasets, metrics as model-index eval results)."""

from __future__ import annotations

import json

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

PAPER = "Vector Quantized Wasserstein Auto-Encoder (Vuong et al., ICML 2023)"
# The embedded MNIST is the Hub's MNIST; other sources are named only when they are Hub ids.
HUB_DATASETS = {"mnist": "ylecun/mnist"}


def hub_dataset(source: str) -> str | None:
    """The Hub id of a data.source (None for a local folder)."""
    if source in HUB_DATASETS:
        return HUB_DATASETS[source]
    parts = source.split("/")
    return source if len(parts) == 2 and all(parts) and not source.startswith((".", "/")) else None


def _results(task: str, dataset: str | None, split: str, metrics: dict[str, float]) -> list[EvalResult]:
    if dataset is None:
        return []
    return [
        EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, dataset_split=split,
                   metric_type=name, metric_name=name, metric_value=round(float(value), 4))
        for name, value in metrics.items()
    ]  # fmt: skip


def tokenizer_card(config: dict, metrics: dict, name: str = "vq-wae-tokenizer", split: str = "validation",
                   results: list[dict] = (), made_by: list[str] = ()) -> ModelCard:  # fmt: skip
    """Card of a trained tokenizer: config is the run's (to_dict; a shipped tokenizer's card may
    give only data.source), metrics its scores on `split`; results and made_by as in a pipeline's
    card (records with their commands, the training commands)."""
    source = config["data"]["source"]
    dataset = hub_dataset(source)
    data = ModelCardData(
        library_name="vqwae", model_name=name, license="apache-2.0",
        tags=["vq-wae", "image-tokenizer", "vector-quantization", "optimal-transport"],
        datasets=[dataset] if dataset else None, metrics=["psnr", "ssim", "perplexity"],
        eval_results=_results("image-to-image", dataset, split,
                              {key: metrics[key] for key in ("psnr", "ssim", "perplexity") if key in metrics}),
    )  # fmt: skip
    steps = f" for {config['max_steps']} steps" if "max_steps" in config else ""
    body = (
        f"# {name}\n\nA VQ-WAE image tokenizer: {PAPER}. Trained on `{source}`{steps}.\n\n"
        "```python\nfrom tokenizer import VQWAE\n\n"
        "tokenizer = VQWAE.from_pretrained(PATH_OR_REPO_ID)\ncodes = tokenizer.encode(images)  # images (B, C, H, W) "
        "in [0, 1]\nreconstruction = tokenizer.decode(codes)\n```\n\n"
        f"## {split.capitalize()} metrics\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n\n"
        + _measured(results, made_by)
        + (f"## Training config\n\n```yaml\n{yaml.safe_dump(config, sort_keys=False)}```\n" if steps else "")
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _measured(results: list[dict], made_by: list[str]) -> str:
    """A card's Results (a row per record) and Made by (the commands) sections, where given."""
    return ((f"## Results\n\n{results_table(results)}\n" if results else "")
            + (f"## Made by\n\n```bash\n{chr(10).join(made_by)}\n```\n\n" if made_by else ""))  # fmt: skip


def pipeline_card(extra: dict, name: str = "vq-wae-pipeline") -> ModelCard:
    """Card of a pipeline folder (tokenizer + prior); extra: the pipeline config's fields."""
    dataset = hub_dataset(extra.get("data_source", ""))
    conditional = bool(extra.get("class_conditional"))
    metrics = {key: extra[key] for key in ("validation_bits_per_code", "fid") if key in extra}
    data = ModelCardData(
        library_name="vqwae", model_name=name, license="apache-2.0",
        pipeline_tag="unconditional-image-generation",
        tags=["vq-wae", "image-generation", "class-conditional" if conditional else "unconditional"],
        datasets=[dataset] if dataset else None,
        eval_results=_results("unconditional-image-generation", dataset, "validation", metrics),
    )  # fmt: skip
    labels = ", class_labels=3, guidance_scale=2.0" if conditional else ""
    settings = {key: value for key, value in extra.items() if key not in ("results", "made_by")}
    body = (
        f"# {name}\n\nTwo-stage image generation with a VQ-WAE tokenizer ({PAPER}) and a `transformers` "
        "causal LM prior over its codes.\n\n```python\nimport torch\nfrom pipelines import VQWAEPipeline\n\n"
        "pipe = VQWAEPipeline.from_pretrained(PATH_OR_REPO_ID)\n"
        f"images = pipe(n=16{labels}, generator=torch.Generator().manual_seed(0)).images\n```\n\n"
        + _measured(extra.get("results", []), extra.get("made_by", []))
        + f"## Pipeline config\n\n```json\n{json.dumps(settings, indent=2)}\n```\n"
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def results_table(results: list[dict]) -> str:
    """A card's measured results as Markdown: a row per results record (what, its numbers, the
    command that measured them)."""
    rows = ["| measured | numbers | command |", "|---|---|---|"]
    for result in results:
        numbers = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in result["values"].items())  # fmt: skip
        rows.append(f"| {result['what']} ({result.get('date') or 'undated'}) | {numbers} | `{result['command']}` |")
    return "\n".join(rows) + "\n"
