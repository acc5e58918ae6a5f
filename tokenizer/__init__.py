"""Stage one of vqwae: the VQ-WAE image tokenizer."""

from .model import VQWAE, VQWAEConfig, VQWAEOutput
from .quantizers import QuantizerOutput, VectorQuantizer, WassersteinQuantizer

__all__ = ["VQWAE", "VQWAEConfig", "VQWAEOutput", "QuantizerOutput", "VectorQuantizer", "WassersteinQuantizer"]
