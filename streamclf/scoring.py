"""How ``eval`` turns window records into figures: the decision per clip, accuracy, macro-F1, ECE, gap windows.

Kept apart from ``evaluate`` (which runs the pipeline and renders the
report) because these are pure functions of window scores and events: an
offline re-scoring of saved windows, or another runner, uses them as they are.

Decision rule, the same for all three runs: a clip (event) is named by the
**score-summed top-1** of its windows, i.e. the fused label whose scores,
summed over those windows, is highest (a label outside a window's top 50
counts 0 there). Clip by clip, a clip's windows are all windows of its file;
in a composed stream they are the windows lying mostly inside the event
(more than half of the window's length overlaps it), or, for an event shorter
than half a window, the windows overlapping it most. A clip without windows
(a failed decode, or no track left after stripping) counts as wrong.

Figures: top-1 accuracy per category and overall; the gain of fused over the
better single modality; macro-F1 over the dataset's categories (a label outside
them counts against recall only); ECE of the window top-1 score (10 equal-width
bins over the windows of the events; right when the window's top-1 names the
event's category); with ``compose``, the rate of gap windows (lying entirely in
a gap: nothing but silence and grey, though smoothing still remembers the clip
before) whose top score reaches the threshold, i.e. would pass an alert rule with
the default ``min_score``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .config import AlertRule

DEFAULT_THRESHOLD: float = AlertRule(label="any").min_score or 0.5  # a rule's fused min_score when none is given
BINS = 10
NOTHING = "nothing"  # the explicit outcome of a window no label reaches the threshold in (a silent, blank scene)


@dataclass
class Win:
    """One window record, reduced to what the metrics read."""

    t_start: float
    t_end: float
    scores: dict[str, float]

    @property
    def top(self) -> tuple[str | None, float]:
        if not self.scores:
            return None, 0.0
        label = max(self.scores, key=self.scores.__getitem__)
        return label, self.scores[label]


def outcome(w: Win, threshold: float = DEFAULT_THRESHOLD) -> str:
    """What a window says: its top label when that reaches ``threshold`` (an alert rule's default ``min_score``),
    else ``NOTHING``.

    Records keep their fused top-k as they are (the schema does not change):
    "nothing" is the null label, read as "no label at or above the alert
    threshold"; a silent, blank scene must come out this way.
    """
    label, score = w.top
    return label if label is not None and score >= threshold else NOTHING


def overlap(w: Win, start: float, end: float) -> float:
    """Seconds of window ``w`` inside [start, end]."""
    return max(0.0, min(w.t_end, end) - max(w.t_start, start))


def windows_inside(windows: list[Win], start: float, end: float) -> list[Win]:
    """Windows lying mostly (> half their length) inside [start, end]; else the ones overlapping it most."""
    inside = [w for w in windows if overlap(w, start, end) > 0.5 * (w.t_end - w.t_start)]
    if inside:
        return inside
    best = max((overlap(w, start, end) for w in windows), default=0.0)
    return [w for w in windows if best > 0 and overlap(w, start, end) == best]


def gap_windows(windows: list[Win], events: list[tuple[float, float]], end: float) -> list[Win]:
    """Windows lying entirely inside a gap: within [0, end] and overlapping no event.

    A window that still holds part of a clip may rightly name it; only a
    window of pure silence and grey measures false alarms.
    """
    return [
        w
        for w in windows
        if w.t_start >= -1e-6 and w.t_end <= end + 1e-6 and not any(overlap(w, s, e) > 1e-6 for s, e in events)
    ]


def decide(windows: Iterable[Win]) -> str | None:
    """The score-summed top-1 label of ``windows`` (None without windows)."""
    total: dict[str, float] = {}
    for w in windows:
        for label, score in w.scores.items():
            total[label] = total.get(label, 0.0) + score
    return max(total, key=total.__getitem__) if total else None


def f1_scores(truth: list[str], pred: list[str | None], classes: list[str]) -> dict[str, float]:
    """F1 per class of ``classes`` (a prediction outside them is a miss for the true class only)."""
    out = {}
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, pred, strict=True))
        out[c] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


def ece(confidence: list[float], correct: list[bool], bins: int = BINS) -> float | None:
    """Expected calibration error: sum over equal-width bins of (share of items) x |accuracy - mean confidence|."""
    if not confidence:
        return None
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0.0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidence[i] for i in idx) / len(idx)
            total += len(idx) / len(confidence) * abs(acc - conf)
    return total


def run_metrics(
    truth: list[str], per_event: list[list[Win]], gaps: list[Win] | None, classes: list[str], threshold: float
) -> dict[str, Any]:
    """The figures of one run: events named by ``decide``, scored against ``truth``."""
    pred = [decide(ws) for ws in per_event]
    f1 = f1_scores(truth, pred, classes)
    conf, right = [], []
    for label, ws in zip(truth, per_event, strict=True):
        for w in ws:
            top, score = w.top
            conf.append(score)
            right.append(top == label)
    per_category = {}
    for c in classes:
        hits = [p == t for t, p in zip(truth, pred, strict=True) if t == c]
        per_category[c] = {"clips": len(hits), "accuracy": sum(hits) / len(hits), "f1": f1[c]}
    hot = None if gaps is None else sum(outcome(w, threshold) != NOTHING for w in gaps)
    return {
        "accuracy": sum(p == t for t, p in zip(truth, pred, strict=True)) / len(truth),
        "macro_f1": sum(f1.values()) / len(f1),
        "ece": ece(conf, right),
        "windows": len(conf),
        "gap_windows": None if gaps is None else len(gaps),
        "gap_hot": hot,
        "gap_rate": None if hot is None or not gaps else hot / len(gaps),
        "gap_scores": None if gaps is None else [round(w.top[1], 4) for w in gaps],
        "without_windows": sum(not ws for ws in per_event),
        "per_category": per_category,
        "predicted": pred,
    }
