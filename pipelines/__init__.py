"""The user-facing two-stage generator."""

from .pipeline_vqwae import VQWAEPipeline, VQWAEPipelineOutput

__all__ = ["VQWAEPipeline", "VQWAEPipelineOutput"]
