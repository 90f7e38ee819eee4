"""Fusion heads over per-modality embeddings/scores, the category map, and smoothing."""
from .categories import CategoryMap
from .smoothing import EMA
from .zeroshot import ZeroShotFusion

__all__ = ["CategoryMap", "EMA", "ZeroShotFusion"]
