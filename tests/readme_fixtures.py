"""Files the README snippets refer to, made tiny so the snippets run in seconds offline."""

from pathlib import Path

import torch


def tiny_pipeline(folder: Path, seed: int = 0, codebook_size: int = 32, image_size: int = 16, num_classes: int = 10):
    """A random (untrained) tokenizer + prior pipeline for `image_size` images, saved to `folder`
    (class-conditional unless num_classes=0)."""
    from pipelines import VQWAEPipeline
    from prior.model import CodeVocabulary, PriorModelConfig, build_prior
    from tokenizer import VQWAE, VQWAEConfig

    torch.manual_seed(seed)
    tokenizer = VQWAE(
        VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=codebook_size, image_size=image_size)
    )
    prior = build_prior(
        PriorModelConfig(num_layers=1, num_heads=2, hidden_size=32, dropout=0.0),
        CodeVocabulary(codebook_size, image_size // 4, image_size // 4, num_classes=num_classes),
        tokenizer.identity(),
    )
    pipe = VQWAEPipeline(tokenizer, prior)
    pipe.save_pretrained(folder)
    return pipe


def prepare_readme_files(folder: Path) -> None:
    """The files the snippets name, as a user in the repository root has them: the shipped
    pipeline (models/, linked) and the quickstart's pipeline folder as `make quickstart` leaves it
    (untrained, tiny networks, but the quickstart's sizes: 32 x 32 images, K = 512 codes on an 8 x 8
    grid, 10 classes)."""
    (folder / "models").symlink_to(Path(__file__).resolve().parent.parent / "models", target_is_directory=True)
    tiny_pipeline(folder / "outputs" / "quickstart" / "prior" / "pipeline", codebook_size=512, image_size=32)
