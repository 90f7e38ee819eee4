"""The detector stage: which frames the person detector reads, and what each window gets from it.

A detector costs several times the classifier per frame, and a box must
carry many cameras, so (as Frigate does) it reads few frames: per source at
most ``detector.fps`` frames a second, the frames in between reusing the
last result, and, where frame reuse applies (live sources by default), none
while the picture stays the same: the change measure of ``reuse.py``, shared
with the video encoder, so a still camera costs next to nothing. The frames
due in a batch of windows, from every source, go through the network in one
pass. A window gets the best score per class over its frames, the number of
boxes over the threshold (in the frame that has the most) and the boxes of
its best frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, DetectorConfig
from .reuse import FrameReuse, Slot, trim_frames
from .types import Detection, Window

DUE_SLACK = 0.25  # of the detector's interval: a frame sampled a little early (frame times jitter) is still due


@dataclass
class Track:
    """Per source (the source's owner keeps it, ``classifier.Memory``): when the detector is next due, the result
    of its last run, each recent frame's result, and ``reuse``: which frames may take the last detection because
    the picture did not change (the change measure it shares with the video encoder)."""

    reuse: FrameReuse
    next_due: float = -math.inf
    result: Slot | None = None
    frames: dict[tuple[str, float], Slot] = field(default_factory=dict)


def detector_for(config: Config, live: bool, driven: set[str]) -> Detector | None:
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
    """The detector model; call it with a batch of windows and their sources' ``Track``."""

    def __init__(self, config: DetectorConfig, threads: int | None = None, engine: str = "auto") -> None:
        from .encoders import MODELS, SSDDetector

        entry = MODELS.get(config.encoder)
        if entry is None or entry.weights.meta["modality"] != "detector":
            detectors = [n for n, e in MODELS.items() if e.weights.meta["modality"] == "detector"]
            raise ValueError(
                f"detector.encoder: {config.encoder!r} is not a detector; choose from {', '.join(detectors)}"
            )
        self.config = config
        self.meta = entry.weights.meta
        self.classes: list[str] = self.meta["categories"]
        model = entry.builder(weights=entry.weights, threads=threads, engine=engine)
        assert isinstance(model, SSDDetector)  # the one detector kind MODELS builds
        self.model = model
        self.name = config.encoder

    def __call__(self, windows: list[Window], tracks: Mapping[str, Track]) -> list[Detection | None]:
        """Each window's detection (None without frames), running the network once for all the frames due."""
        pending: list[tuple[np.ndarray, Slot]] = []
        counts = []
        for w in windows:
            ran = still = 0
            for f in sorted(w.frames, key=lambda f: f.pts):
                key, track = (f.source, f.pts), tracks[f.source]
                if key in track.frames:
                    continue
                if f.pts < track.next_due - DUE_SLACK / self.config.fps and track.result is not None:
                    track.frames[key] = track.result  # between runs: the last result stands
                    continue
                track.next_due = f.pts + 1.0 / self.config.fps
                slot = track.reuse.last("detector", f)
                if slot is not None:  # nothing moved since the last run
                    track.frames[key] = slot
                    still += 1
                    continue
                slot = Slot()
                pending.append((f.image, slot))
                track.reuse.keep("detector", f, slot)
                track.result = track.frames[key] = slot
                ran += 1
            counts.append((ran, still))
        if pending:
            for (_, slot), rows in zip(pending, self.model.detect([image for image, _ in pending]), strict=True):
                slot.value = rows
        out = [self._summary(w, tracks[w.source], ran, still) for w, (ran, still) in zip(windows, counts, strict=True)]
        for source in {w.source for w in windows}:
            trim_frames(tracks[source].frames, windows)
        return out

    def _summary(self, w: Window, track: Track, ran: int, still: int) -> Detection | None:
        if not w.frames:
            return None
        per_frame = [(f.pts, track.frames[(f.source, f.pts)].value) for f in w.frames]
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

    def record(self, d: Detection | None) -> dict[str, Any] | None:
        """The record's ``detector`` field: best score (and per class), count, the best frame's boxes and time."""
        if d is None:
            return None
        return {
            "score": round(float(d.scores.max(initial=0.0)), 4),
            "scores": {c: round(float(s), 4) for c, s in zip(self.classes, d.scores, strict=True)},
            "count": d.count,
            "boxes": [
                {
                    "label": self.classes[int(r[0])],
                    "score": round(float(r[1]), 4),
                    "box": [round(float(v), 4) for v in r[2:6]],
                }
                for r in d.boxes
            ],
            "frame": round(d.frame, 3),
            "ran": d.ran,
            "still": d.still,
        }
