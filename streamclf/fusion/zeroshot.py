"""Decision-level fusion without a trained head.

Native scores -> shared categories -> calibrated, reliability-weighted pooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..types import Embeddings
from .calibration import logit, sigmoid
from .categories import CategoryMap

if TYPE_CHECKING:
    from .calibration import Calibration


SENSE = {"detector": "video"}  # a modality that is part of another's evidence: the detector reads the camera


class ZeroShotFusion:
    """Maps each modality's native scores onto the category map, calibrates them, then pools them by evidence.

    A category's raw score in one modality is the summed probability of its
    members for a softmax label space (mutually exclusive classes) and the
    highest member score for a sigmoid one (independent tags). Those two
    scales are not comparable, so a ``Calibration`` (fitted on labeled clips,
    ``streamclf calibrate``) maps each modality's raw score to the probability
    that the category is really there.

    A parent category (``music``) is also seen through its children in each
    modality: a guitar in the picture is music. After pooling, the parent
    keeps only what its best child leaves unexplained, so a recognised
    instrument beats the generic tag that fires on every instrument.

    The fused score pools the modalities that are present in the window *and*
    can see the category. A modality's weight is its configured weight times
    its *reliability* in this window: how strongly it sees anything at all
    (its top category score, raised to ``sharpness``). Absence of evidence is
    not evidence of absence: a camera that sees nothing in particular while a
    dog barks off-screen barely votes, so the dog keeps about the score the
    microphone gives it; a camera that clearly sees something else votes with
    full weight and lowers it. Pooling is a weighted average of the
    probabilities (``average``) or of their log-odds (``loglinear``, a
    normalised product of experts); both are convex, so the fused score never
    leaves the range of the modalities' own scores and a weak modality cannot
    raise a category.

    A category whose evidence is *independent* (``evidence: independent`` in
    the map: ``person``) is not pooled but joined by noisy-OR over the senses
    that see it, ``1 - prod(1 - p_sense)``: a person seen and a voice heard are
    stronger together than either, and neither a camera that shows no one (the
    speaker is off camera) nor a silent microphone lowers it. The detector
    counts as the camera's evidence (``SENSE``): the camera's score is the
    stronger of the detector and the classifier, which look at the same
    pixels and are not independent of each other. A modality's evidence is
    first multiplied by its ``link`` strength (map, or the calibration's
    ``links``): a voice says someone is about, not that they are in view.
    """

    def __init__(
        self,
        categories: CategoryMap,
        spaces: dict[str, tuple[str, int, str]],
        weights: dict[str, float],
        sharpness: float | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """``spaces[modality] = (label space, number of classes, activation)``; ``sharpness`` 0 = fixed weights.

        ``sharpness`` and the pooling rule come from ``calibration`` when one
        is given (the settings it was fitted and measured with), else 2 and
        ``average``.
        """
        self.names = categories.names
        self.weights = weights
        self.calibration = calibration
        self.pooling = calibration.pooling if calibration else "average"
        default = calibration.sharpness if calibration else 2.0
        self.sharpness = default if sharpness is None else sharpness
        self._proj = {m: categories.projection(space, n) for m, (space, n, _) in spaces.items()}
        self._reduce = {m: act for m, (_, _, act) in spaces.items()}
        self._children = categories.children()
        self.parent_of = dict(categories.parents)
        self.sees_raw = {m: np.asarray(p.any(axis=0)) for m, p in self._proj.items()}  # through its own members
        self.sees = {m: self._lift(s) for m, s in self.sees_raw.items()}  # ... or through a child's
        self._scale = {m: calibration.vectors(m, self.names) for m in spaces} if calibration else {}
        self.independent = np.array([c in categories.independent for c in self.names])
        self.link = {m: categories.strengths(space) for m, (space, _, _) in spaces.items()}
        for cat, strengths in (calibration.links if calibration else {}).items():
            for m, strength in strengths.items():
                if m in self.link and cat in self.names:
                    self.link[m][self.names.index(cat)] = strength

    def _lift(self, scores: np.ndarray) -> np.ndarray:
        """Each parent at least as high as its best child (a guitar is music); works for bool masks too."""
        out = scores.copy()
        for parent, kids in self._children.items():
            out[parent] = max(out[parent], out[kids].max())
        return out

    def raw(self, emb: Embeddings) -> dict[str, np.ndarray]:
        """Each modality's uncalibrated category scores (what ``calibrate`` fits on)."""
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

    def per_modality(self, emb: Embeddings) -> dict[str, np.ndarray]:
        """Each present modality's calibrated category scores, parents lifted to their best child, times its links."""
        out = {}
        for m, s in self.raw(emb).items():
            if m in self._scale:
                slope, bias = self._scale[m]
                s = np.where(self.sees_raw[m], sigmoid(slope * logit(s) + bias), 0.0).astype(np.float32)
            out[m] = (self._lift(s) * self.link[m]).astype(np.float32)
        return out

    def noisy_or(self, per: dict[str, np.ndarray]) -> np.ndarray:
        """``1 - prod over senses (1 - p)``: each sense's score the stronger of its modalities that see the category.

        An absent modality is not in ``per`` and one with no weight does not
        count: either leaves the product unchanged.
        """
        senses: dict[str, np.ndarray] = {}
        for m, s in per.items():
            if self.weights.get(m, 0.0) > 0:
                sense = SENSE.get(m, m)
                senses[sense] = np.maximum(senses.get(sense, 0.0), np.where(self.sees[m], s, 0.0))
        missed = np.ones(len(self.names))
        for p in senses.values():
            missed *= 1.0 - p
        return 1.0 - missed

    def reliability(self, per: dict[str, np.ndarray]) -> dict[str, float]:
        """Each present modality's evidence in this window: its top category score to the power ``sharpness``.

        A tiny floor keeps a window where no modality sees anything an
        ordinary weighted average instead of a division by zero.
        """
        return {m: float(s[self.sees[m]].max(initial=0.0)) ** self.sharpness + 1e-6 for m, s in per.items()}

    def __call__(self, emb: Embeddings) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        per = self.per_modality(emb)
        total = np.zeros(len(self.names), dtype=np.float64)
        norm = np.zeros(len(self.names), dtype=np.float64)
        for m, r in self.reliability(per).items():
            w = self.weights.get(m, 0.0) * r * self.sees[m]
            total += w * (logit(per[m]) if self.pooling == "loglinear" else per[m])
            norm += w
        fused = np.divide(total, norm, out=np.zeros_like(total), where=norm > 0)
        if self.pooling == "loglinear":
            fused = np.where(norm > 0, sigmoid(fused), 0.0)
        if self.independent.any():
            fused = np.where(self.independent, self.noisy_or(per), fused)
        for parent, kids in self._children.items():  # what the best child explains is not the generic parent
            fused[parent] *= 1.0 - fused[kids].max()
        return fused.astype(np.float32), per

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
