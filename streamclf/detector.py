"""The detector stage: which frames the person detector reads, and what each window gets from it.

A detector costs several times the classifier per frame, and a box must
carry many cameras, so (as Frigate does) it reads few frames: per source at
most ``detector.fps`` frames a second, the frames in between reusing the
last result, and none while the picture stays the same (a small grey copy of
the frame against the one last detected: a still camera costs next to
nothing). The frames due in a batch of windows, from every source, go through
the network in one pass. A window gets the best score per class over its
frames, the number of boxes over the threshold (in the frame that has the
most) and the boxes of its best frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, DetectorConfig
from .types import Detection, Window

THUMB_WIDTH = 64  # pixels across the grey copy the motion check compares
DUE_SLACK = 0.25  # of the detector's interval: a frame sampled a little early (frame times jitter) is still due
PIXEL_CHANGE = 12  # grey levels a thumbnail pixel must move by to count as changed (compression noise stays below)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A small grey copy of an RGB frame: area-averaged, so noise and small jitter wash out."""
    import cv2

    h, w = image.shape[:2]
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB_WIDTH, max(1, round(THUMB_WIDTH * h / w))), interpolation=cv2.INTER_AREA)


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Share of thumbnail pixels that moved by more than ``PIXEL_CHANGE`` grey levels (1 when sizes differ)."""
    if a.shape != b.shape:
        return 1.0
    return float(np.mean(np.abs(a.astype(np.int16) - b) > PIXEL_CHANGE))


@dataclass
class _Result:
    """One detection, shared by every frame that reuses it; ``rows`` is filled once the batch has run."""

    rows: np.ndarray | None = None


@dataclass
class _Track:
    """Per source: when the detector is next due, and the picture and result of its last run."""

    next_due: float = -math.inf
    thumb: np.ndarray | None = None
    result: _Result | None = None


@dataclass
class _Pending:
    image: np.ndarray
    result: _Result = field(default_factory=_Result)


def detector_for(config: Config, live: bool, driven: set[str]) -> "Detector | None":
    """The detector when it is wanted, sharing the worker's threads; else None.

    As configured; else (auto) for live sources (files played with
    ``sources.realtime`` count) and for alert rules on the categories it
    drives (``driven``), so ``--alert person`` works on a file.
    """
    on = config.detector.enabled
    if on is None:
        on = live or config.sources.realtime or any(r.label in driven for r in config.alerts.rules)
    if not on:
        return None
    import torch

    return Detector(config.detector, threads=torch.get_num_threads(), engine=config.engine)


class Detector:
    """The detector model and its per-source state; call it with a batch of windows."""

    def __init__(self, config: DetectorConfig, threads: int | None = None, engine: str = "auto") -> None:
        from .encoders import MODELS

        entry = MODELS.get(config.encoder)
        if entry is None or entry.weights.meta["modality"] != "detector":
            detectors = [n for n, e in MODELS.items() if e.weights.meta["modality"] == "detector"]
            raise ValueError(f"detector.encoder: {config.encoder!r} is not a detector; choose from {', '.join(detectors)}")
        self.config = config
        self.meta = entry.weights.meta
        self.classes: list[str] = self.meta["categories"]
        self.model = entry.builder(weights=entry.weights, threads=threads, engine=engine)
        self.name = config.encoder
        self._tracks: dict[str, _Track] = {}
        self._frames: dict[tuple[str, float], _Result] = {}

    def __call__(self, windows: list[Window]) -> list[Detection | None]:
        """Each window's detection (None without frames), running the network once for all the frames due."""
        pending: list[_Pending] = []
        counts = []
        for w in windows:
            ran = still = 0
            for f in sorted(w.frames, key=lambda f: f.pts):
                key = (f.source, f.pts)
                if key in self._frames:
                    continue
                track = self._tracks.setdefault(f.source, _Track())
                if f.pts < track.next_due - DUE_SLACK / self.config.fps and track.result is not None:
                    self._frames[key] = track.result  # between runs: the last result stands
                    continue
                track.next_due = f.pts + 1.0 / self.config.fps
                thumb = thumbnail(f.image)
                if (track.result is not None and track.thumb is not None
                        and changed(thumb, track.thumb) < self.config.motion):
                    self._frames[key] = track.result  # nothing moved since the last run
                    still += 1
                    continue
                job = _Pending(f.image)
                pending.append(job)
                track.thumb, track.result = thumb, job.result
                self._frames[key] = job.result
                ran += 1
            counts.append((ran, still))
        if pending:
            for job, rows in zip(pending, self.model.detect([p.image for p in pending])):
                job.result.rows = rows
        out = [self._summary(w, ran, still) for w, (ran, still) in zip(windows, counts)]
        self._trim(windows)
        return out

    def _summary(self, w: Window, ran: int, still: int) -> Detection | None:
        if not w.frames:
            return None
        per_frame = [(f.pts, self._frames[(f.source, f.pts)].rows) for f in w.frames]
        scores = np.zeros(len(self.classes), dtype=np.float32)
        best_pts, best_rows, best, count = per_frame[0][0], per_frame[0][1], -1.0, 0
        for pts, rows in per_frame:
            if len(rows):
                np.maximum.at(scores, rows[:, 0].astype(int), rows[:, 1])
            top = float(rows[0, 1]) if len(rows) else 0.0
            count = max(count, int(np.sum(rows[:, 1] >= self.config.threshold)))
            if top > best:
                best, best_pts, best_rows = top, pts, rows
        boxes = best_rows[best_rows[:, 1] >= self.config.threshold]
        return Detection(scores, count, boxes, best_pts, ran, still)

    def _trim(self, windows: list[Window]) -> None:
        """Forget frames older than the newest window's start of each source (later windows cannot hold them)."""
        newest: dict[str, float] = {}
        for w in windows:
            newest[w.source] = max(newest.get(w.source, -math.inf), w.t_start)
        for key in [k for k in self._frames if k[1] < newest.get(k[0], -math.inf)]:
            del self._frames[key]

    def forget(self, source: str) -> None:
        self._tracks.pop(source, None)
        for key in [k for k in self._frames if k[0] == source]:
            del self._frames[key]

    def record(self, d: Detection | None) -> dict[str, Any] | None:
        """The record's ``detector`` field: best score (and per class), count, the best frame's boxes and time."""
        if d is None:
            return None
        return {"score": round(float(d.scores.max(initial=0.0)), 4),
                "scores": {c: round(float(s), 4) for c, s in zip(self.classes, d.scores)},
                "count": d.count,
                "boxes": [{"label": self.classes[int(r[0])], "score": round(float(r[1]), 4),
                           "box": [round(float(v), 4) for v in r[2:6]]} for r in d.boxes],
                "frame": round(d.frame, 3), "ran": d.ran, "still": d.still}
