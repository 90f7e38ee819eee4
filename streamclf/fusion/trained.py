"""A trained head in the live worker: embeddings of a batch of windows -> the head's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio_features import check as check_features
from ..types import Embeddings
from .calibration import Calibration, logit, sigmoid
from .methods import load_head
from .zeroshot import Fused


class HeadFusion:
    """Runs a saved head over a batch; per-modality scores come from the same head with one modality shown.

    Every head handles a missing modality through its mask, so "what would
    the head say from the audio alone" is a real answer, not a guess; that
    is what the record's ``modality`` field shows beside the fused score.
    """

    def __init__(self, path: str | Path) -> None:
        self.head, self.card = load_head(path)
        self.path = str(path)
        try:  # computed by the pipeline from each window's audio and appended to the audio embedding
            self.audio_features = check_features(self.card.audio_features)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        self.names = list(self.head.classes)
        self.sees = {m: np.ones(len(self.names), bool) for m in self.head.modalities}
        self._detector: tuple[np.ndarray, float, np.ndarray] | None = None  # (its classes used, slope, bias)

    def add_detector(self, classes: list[str], calibration: Calibration | None) -> None:
        """The person detector beside a head: each of its classes the head does not name becomes a label of its
        own, scored as the zero-shot map scores detector-only evidence (calibrated when ``calibration`` covers
        the detector), so ``person`` records and alerts work whatever the head was trained on. A head that
        names the class keeps its own score."""
        new = [j for j, c in enumerate(classes) if c not in self.head.classes]
        if not new:
            return
        added = [classes[j] for j in new]
        slope, bias = calibration.vectors("detector", added) if calibration else (1.0, np.zeros(len(added)))
        self._detector = (np.array(new), slope, bias)
        head = len(self.names)
        self.names = [*self.names, *added]
        self.sees = {m: np.arange(len(self.names)) < head for m in self.sees}
        self.sees["detector"] = np.arange(len(self.names)) >= head

    def check_encoders(self, weights_ids: dict[str, str]) -> None:
        """The head only makes sense on the embeddings it was trained on."""
        for m, wid in self.card.encoders.items():
            if m in self.head.modalities and weights_ids.get(m) != wid:
                raise ValueError(
                    f"{self.path}: head was trained on {m} encoder weights {wid!r}, "
                    f"but the config uses {weights_ids.get(m)!r}"
                )

    def fuse(self, embs: list[Embeddings]) -> list[Fused]:
        n = len(embs)
        x: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for m, d in self.head.dims.items():
            present[m] = np.array([m in e.embedding for e in embs])
            x[m] = np.stack([e.embedding[m] if m in e.embedding else np.zeros(d, np.float32) for e in embs])
        fused = self.head.predict_proba(x, present)
        weights = self.head.explain(x, present)
        per: dict[str, np.ndarray] = {}
        for m in self.head.modalities:
            alone = {k: (v if k == m else np.zeros(n, bool)) for k, v in present.items()}
            per[m] = self.head.predict_proba(x, alone)
        out = []
        for i in range(n):
            scores, alone = fused[i], {m: p[i] for m, p in per.items() if present[m][i]}
            if self._detector is not None:  # the detector's own labels after the head's: 0 without a look
                cols, slope, bias = self._detector
                seen = embs[i].scores.get("detector")
                extra = np.zeros(len(cols)) if seen is None else sigmoid(slope * logit(seen[cols]) + bias)
                scores = np.concatenate([scores, extra]).astype(np.float32)
                alone = {m: np.concatenate([p, np.zeros(len(cols))]) for m, p in alone.items()}
                if seen is not None:
                    alone["detector"] = np.concatenate([np.zeros(len(fused[i])), extra])
            out.append(Fused(scores, alone, {m: round(float(w[i]), 4) for m, w in weights.items()}))
        return out
