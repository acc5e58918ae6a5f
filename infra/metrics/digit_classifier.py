"""A small MNIST digit classifier: the judge of generated digits.

Classification accuracy of class-conditional samples (the share a classifier trained on real
digits assigns to the asked class) and the share of unconditional samples it classifies with
confidence >= 0.9 say what a person sees in a grid, where FID alone does not. The classifier is a
three-block CNN on the pipeline's 32x32 images, trained once on the MNIST training split (about a
minute on 2 CPU cores) and cached with its test accuracy under $VQWAE_CACHE/digit-classifier;
the default one (2 epochs, seed 0) is also shipped in models/digit-classifier-mnist, so a fresh
clone judges with it at once and every machine without a cache judges with the same weights.
Its 128-d penultimate features also give a fast FID in a digit feature space (`feature_fid`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..data import DataConfig, load_images, to_unit_range
from ..files import written_atomically
from .fid_score import cache_dir, fid_statistics, frechet_distance

VERSION = "v1"  # bump when the architecture or the training changes: the cache is keyed by it
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "digit-classifier-mnist"


class DigitClassifier(nn.Module):
    """images (B, 1, 32, 32) in [0, 1] -> logits (B, 10); `features` gives the 128-d layer before."""

    def __init__(self):
        super().__init__()
        blocks = []
        for channels_in, channels_out in ((1, 32), (32, 64), (64, 128)):
            blocks += [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 4 * 4, 128), nn.ReLU())  # (B, 128)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, 10))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, 32, 32):
            raise ValueError(f"the digit classifier takes images (B, 1, 32, 32) in [0, 1], got {tuple(images.shape)}")
        return self.body(images.float() * 2 - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@dataclass
class ClassifierInfo:
    """How the cached classifier was made and how good it is (test split of MNIST)."""

    version: str
    epochs: int
    seed: int
    test_accuracy: float
    train_images: int = 50_000


@dataclass
class Judgement:
    """What the classifier says of N images: predicted digit (N,), its probability (N,) and the
    128-d features (N, 128)."""

    predictions: torch.Tensor
    confidence: torch.Tensor
    features: torch.Tensor

    def accuracy(self, labels: torch.Tensor) -> dict:
        """Share of images judged the asked digit, overall and per class (classes present only)."""
        labels = labels.to(self.predictions.device)
        correct = (self.predictions == labels).float()
        per_class = {int(c): correct[labels == c].mean().item() for c in labels.unique()}
        return {"accuracy": correct.mean().item(), "per_class": per_class, "worst_class": min(per_class.values())}

    def recognisable(self, threshold: float = 0.9) -> float:
        """Share of images classified with confidence >= threshold."""
        return (self.confidence >= threshold).float().mean().item()


def _train(epochs: int, seed: int, progress: bool, train_images: int | None) -> tuple[DigitClassifier, float]:
    """Train on the MNIST training split (small random shifts, so slightly off-centre generated
    digits are read as people read them); return the model and its test accuracy."""
    torch.manual_seed(seed)
    splits = load_images(DataConfig(), 1, seed=seed)
    train = splits["train"][: train_images or len(splits["train"])]
    images, labels = to_unit_range(train["pixel_values"]), train["label"]  # (N, 1, 32, 32), (N,)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * (len(images) // 128)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    model.train()
    bar = tqdm(total=steps, desc="digit classifier", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images) - 127, 128):
            index = order[start : start + 128]
            shift = torch.randint(-2, 3, (2,))
            batch = torch.roll(images[index], shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
    bar.close()
    model.eval()
    test = splits["test"][:]
    judgement = judge(model, to_unit_range(test["pixel_values"]))
    return model, judgement.accuracy(test["label"])["accuracy"]


def _read(folder: Path) -> tuple[DigitClassifier, ClassifierInfo] | None:
    """The classifier saved in `folder`; None when there is none or it is damaged (with a warning)."""
    weights, info_file = folder / "model.safetensors", folder / "info.json"
    if not (weights.is_file() and info_file.is_file()):
        return None
    try:
        model = DigitClassifier()
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), ClassifierInfo(**json.loads(info_file.read_text()))
    except Exception as error:  # noqa: BLE001 - any damage: rebuild what can be rebuilt
        warnings.warn(f"digit classifier {folder} is damaged ({error}); not using it", stacklevel=3)
        return None


def load_classifier(folder: str | Path | None = None, epochs: int = 2, seed: int = 0, progress: bool = True,
                    train_images: int | None = None) -> tuple[DigitClassifier, ClassifierInfo]:  # fmt: skip
    """The cached classifier; without a cache, the shipped one (`SHIPPED`) when it was made the way
    asked, else one trained now and cached (a damaged cache is rebuilt with a warning).
    train_images: the first N training images only (tests); the default cache holds all 50,000."""
    cached = folder is None
    folder = Path(folder) if folder is not None else cache_dir() / "digit-classifier" / f"{VERSION}-e{epochs}-s{seed}"
    if (found := _read(folder)) is not None:
        return found
    if cached and (shipped := _read(SHIPPED)) is not None:
        if shipped[1] == ClassifierInfo(VERSION, epochs, seed, shipped[1].test_accuracy, train_images or 50_000):
            return shipped
    model, accuracy = _train(epochs, seed, progress, train_images)
    info = ClassifierInfo(VERSION, epochs, seed, accuracy, train_images or 50_000)
    with written_atomically(folder, f"the digit classifier {folder}", "free space and run the command again") as temporary:
        temporary.mkdir(parents=True)
        save_file(model.state_dict(), str(temporary / "model.safetensors"))
        (temporary / "info.json").write_text(json.dumps(asdict(info)))
    return model, info


@torch.no_grad()
def judge(model: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> Judgement:
    """Classify images (N, 1, 32, 32) in [0, 1]."""
    model.eval()
    predictions, confidence, features = [], [], []
    for chunk in images.split(batch_size):
        chunk_features = model.features(chunk)
        probabilities = model.head(chunk_features).softmax(-1)
        best = probabilities.max(-1)
        predictions.append(best.indices)
        confidence.append(best.values)
        features.append(chunk_features)
    return Judgement(torch.cat(predictions), torch.cat(confidence), torch.cat(features))


def feature_fid(samples: Judgement, reference: Judgement) -> float:
    """Frechet distance between two sets of images in the classifier's 128-d feature space: a fast
    FID for digits (not comparable with Inception FID figures)."""
    return frechet_distance(fid_statistics(samples.features.double()), fid_statistics(reference.features.double()))
