"""Decision-level fusion without a trained head: native scores -> shared categories -> weighted average."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Embeddings
from .categories import CategoryMap


class ZeroShotFusion:
    """Maps each modality's native scores onto the category map, then averages.

    A category's score in one modality is the summed probability of its
    members for a softmax label space (mutually exclusive classes) and the
    highest member score for a sigmoid one (independent tags). The fused score
    is the weighted average over the modalities that are present in the
    window *and* can see the category, so a silent or blind modality never
    drags a category down.
    """

    def __init__(self, categories: CategoryMap, spaces: dict[str, tuple[str, int, str]],
                 weights: dict[str, float]) -> None:
        """``spaces[modality] = (label space, number of classes, activation)``."""
        self.names = categories.names
        self.weights = weights
        self._proj = {m: categories.projection(space, n) for m, (space, n, _) in spaces.items()}
        self._reduce = {m: act for m, (_, _, act) in spaces.items()}
        self.sees = {m: p.any(axis=0) for m, p in self._proj.items()}

    def per_modality(self, emb: Embeddings) -> dict[str, np.ndarray]:
        out = {}
        for m, scores in emb.scores.items():
            if m not in self._proj:
                continue
            proj = self._proj[m]
            if self._reduce[m] == "softmax":
                out[m] = np.minimum(scores @ proj, 1.0)
            else:
                out[m] = (scores[:, None] * proj).max(axis=0)
        return out

    def __call__(self, emb: Embeddings) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        per = self.per_modality(emb)
        total = np.zeros(len(self.names), dtype=np.float32)
        norm = np.zeros(len(self.names), dtype=np.float32)
        for m, s in per.items():
            w = self.weights.get(m, 0.0) * self.sees[m]
            total += w * s
            norm += w
        return np.divide(total, norm, out=np.zeros_like(total), where=norm > 0), per

    def fuse(self, embs: list[Embeddings]) -> list[Fused]:
        out = []
        for emb in embs:
            fused, per = self(emb)
            out.append(Fused(fused, per, {}))
        return out


@dataclass
class Fused:
    """One window's fused scores, each modality's scores on the same classes, and modality weights."""

    scores: np.ndarray
    per_modality: dict[str, np.ndarray]
    weights: dict[str, float]
