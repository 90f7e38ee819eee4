"""Fusion: trainable heads over embeddings + presence, zero-shot category fusion, smoothing."""

from .categories import CategoryMap
from .heads import Head
from .methods import METHODS, build_head, load_head, save_head
from .smoothing import EMA
from .zeroshot import ZeroShotFusion

__all__ = ["CategoryMap", "EMA", "Head", "METHODS", "ZeroShotFusion", "build_head", "load_head", "save_head"]
