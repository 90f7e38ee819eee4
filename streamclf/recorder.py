"""Scored windows to window records (``records.WindowRecord``): smoothing, top-k labels, per-modality scores.

``Recorder`` is shared by the live router and every ``label`` engine, so a
file gives the same labels whichever way it is run. It keeps nothing per
source: the smoothing state is in the source's ``classifier.Memory``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .classifier import Classifier, Memory, Scored
from .config import Config, ConfigError
from .records import WindowRecord


def labels_of(scores: np.ndarray, names: list[str], k: int) -> list[dict[str, Any]]:
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"label": names[j], "score": round(float(scores[j]), 4)} for j in top]


def watched_labels(config: Config, index: dict[str, int], sees: dict[str, np.ndarray]) -> list[str]:
    """The labels alert rules watch, in rule order; a modality condition the modality cannot see is an error."""
    for rule in config.alerts.rules:
        for m in ("audio", "video"):
            if getattr(rule, m) is not None and rule.label in index and not (m in sees and sees[m][index[rule.label]]):
                raise ConfigError(
                    f"alerts.rules: {rule.label}: {m}: the {m} encoder cannot see this label "
                    f"(or is disabled); use the fused min_score or the other modality"
                )
    return [c for c in dict.fromkeys(r.label for r in config.alerts.rules) if c in index]


class Recorder:
    """Scored windows to records, with the classifier's label names and the config's top-k and alert rules."""

    def __init__(self, classifier: Classifier, config: Config) -> None:
        self.classifier, self.k = classifier, config.fusion.top_k
        self.index = {c: j for j, c in enumerate(classifier.names)}
        self.watch = watched_labels(config, self.index, classifier.fusion.sees)

    def __call__(self, s: Scored, memory: Memory, latency: float = 0.0) -> WindowRecord:
        """``memory``: the window's source's (its smoothing goes on from the source's last window)."""
        w, k, classifier = s.window, self.k, self.classifier
        scores = memory.smoothing(w.source, s.fused.scores)
        labels = labels_of(scores, classifier.names, k)
        native = {}
        for m, enc in classifier.encoders.items():
            sc = s.embeddings.scores.get(m)
            native[m] = labels_of(sc, enc.meta["categories"], k) if sc is not None else None
        per, sees = s.fused.per_modality, classifier.fusion.sees
        modality = {}
        for label in [*(e["label"] for e in labels), *self.watch]:  # alert rules see their label's modalities
            j = self.index[label]
            modality[label] = {m: (round(float(per[m][j]), 4) if m in per and sees[m][j] else None) for m in sees}
        extra: dict[str, Any] = {"weights": s.fused.weights} if s.fused.weights else {}
        if self.watch:
            extra["watched"] = {c: round(float(scores[self.index[c]]), 4) for c in self.watch}
        if classifier.speech is not None:  # null: the window had no audio
            speech = s.embeddings.features.get("speech")
            extra["speech"] = None if speech is None else round(speech, 4)
        if classifier.detector is not None:  # null: the window had no frames
            extra["detector"] = classifier.detector.record(s.embeddings.detection)
        return WindowRecord(
            w.source,
            w.t_start,
            w.t_end,
            labels,
            native.get("audio"),
            native.get("video"),
            modality,
            latency * 1000.0,
            extra,
        )
