"""Decision-level fusion without a trained head: native scores -> shared categories -> reliability-weighted average."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Embeddings
from .categories import CategoryMap


class ZeroShotFusion:
    """Maps each modality's native scores onto the category map, then averages them by evidence.

    A category's score in one modality is the summed probability of its
    members for a softmax label space (mutually exclusive classes) and the
    highest member score for a sigmoid one (independent tags).

    The fused score is a weighted average over the modalities that are
    present in the window *and* can see the category. A modality's weight is
    its configured weight times its *reliability* in this window: how
    strongly it sees anything at all (its top category score, raised to
    ``sharpness``). Absence of evidence is not evidence of absence: a camera
    that sees nothing in particular while a dog barks off-screen barely
    votes, so the dog keeps about the score the microphone gives it; a camera
    that clearly sees something else votes with full weight and lowers it.
    Being a convex combination, the fused score never leaves the range of
    the modalities' own scores, so a weak modality cannot raise a category.
    """

    def __init__(self, categories: CategoryMap, spaces: dict[str, tuple[str, int, str]],
                 weights: dict[str, float], sharpness: float = 2.0) -> None:
        """``spaces[modality] = (label space, number of classes, activation)``; ``sharpness`` 0 = fixed weights."""
        self.names = categories.names
        self.weights = weights
        self.sharpness = sharpness
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

    def reliability(self, per: dict[str, np.ndarray]) -> dict[str, float]:
        """Each present modality's evidence in this window: its top category score to the power ``sharpness``.

        A tiny floor keeps a window where no modality sees anything an
        ordinary weighted average instead of a division by zero.
        """
        return {m: float(s[self.sees[m]].max(initial=0.0)) ** self.sharpness + 1e-6 for m, s in per.items()}

    def __call__(self, emb: Embeddings) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        per = self.per_modality(emb)
        total = np.zeros(len(self.names), dtype=np.float32)
        norm = np.zeros(len(self.names), dtype=np.float32)
        for m, r in self.reliability(per).items():
            w = self.weights.get(m, 0.0) * r * self.sees[m]
            total += w * per[m]
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
