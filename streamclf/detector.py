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

On moving pictures that is still a detection per camera per ``1/fps``, and
past a few cameras the worker cannot keep up: windows would wait, then the
live feeds would drop them. Instead the detector gives way (``detector.defer``,
see ``Detector``): a batch reads the due frames that fit before its live
windows' deadline, the cameras it looked at longest ago first, and the rest
take their camera's last detection. So more cameras mean older detections
(``age`` and ``deferred`` in the record, ``detector_deferred`` in the
counters), not late or lost windows; and no camera goes longer than
``detector.max_age`` without a look. A camera's first look takes its turn
the same way (until then its windows have no boxes and ``age`` null): many
cameras started together would otherwise all be read in the first batch, a
backlog that cost live windows at the start (40 still cameras: 10-13 dropped).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, DetectorConfig
from .reuse import FrameReuse, Slot, trim_frames
from .types import Detection, Window

DUE_SLACK = 0.25  # of the detector's interval: a frame sampled a little early (frame times jitter) is still due
DEADLINE = 0.5  # of the hop: how long past its completion the detector may keep a live window waiting
COST_SMOOTHING = 0.3  # weight of the latest batch in the running estimate of the detector's seconds per frame
BUSY = 0.75  # share of the process's cores in use above which live cameras get only their max_age looks
BUSY_PERIOD = 0.5  # seconds: the CPU share is measured over at least this long
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
NOT_LOOKED = Slot(np.zeros((0, 6), np.float32))  # what a live camera's frames hold until its first look: no boxes


@dataclass
class Track:
    """Per source (the source's owner keeps it, ``classifier.Memory``): when the detector is next due, the result
    of its last run, each recent frame's result, and when it last looked.

    ``reuse``: which frames may take the last detection because the picture did not change (the change measure
    it shares with the video encoder) and whether the source is live (its windows have a deadline);
    ``looked``: pts of the newest frame the detector read or found unchanged (the age of what the source's
    windows know), and ``seen`` the same per recent frame; ``start``/``hop``: its last window's start and the
    spacing of its windows.
    """

    reuse: FrameReuse
    next_due: float = -math.inf
    result: Slot | None = None
    looked: float = -math.inf
    start: float | None = None
    hop: float | None = None
    frames: dict[tuple[str, float], Slot] = field(default_factory=dict)
    seen: dict[tuple[str, float], float] = field(default_factory=dict)


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
    """The detector model; call it with a batch of windows and their sources' ``Track``.

    On live sources it gives way to the windows' deadline instead of letting them queue up (and the live
    feeds drop them): a batch reads only as many due frames as its estimated seconds per frame fit before
    ``DEADLINE`` of a hop past the completion of its oldest live window, once the other work due by then
    (the batch's encoders, the windows queued behind it) is counted, and none while the process keeps
    more than ``BUSY`` of its cores busy (the decoders need them too), the sources whose detection is
    oldest first, each its newest due frame first. A frame left out (``deferred``, counted) takes its
    source's last detection, and stays due, so the next batch reads it or a later frame. A source is
    never left without a look for longer than ``detector.max_age``: such a frame is read whatever the
    deadline; and those looks are made as they accrue (a live window's hop / max_age of one), the sources
    seen longest ago first, rather than all at once when cameras that started together fall due together.
    A camera's first look is one of those, not read whatever the deadline (a batch with no measure of a look's
    cost yet reads one, or the floor's looks if more).
    """

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
        self.cost: float | None = None  # running estimate of seconds per frame (None before the first batch)
        self.owed = 0.0  # looks the max_age floor has accrued and no batch has made yet
        self.busy: float | None = None  # share of the cores this process kept busy lately (decoders included)
        self._clock = (time.monotonic(), time.process_time())

    def __call__(
        self, windows: list[Window], tracks: Mapping[str, Track], ahead: float = 0.0
    ) -> list[Detection | None]:
        """Each window's detection (None without frames), running the network once for all the frames it reads.

        ``ahead``: seconds of other work due before the deadline (this batch's encoders, the windows queued
        behind it), which deferring leaves them."""
        self._measure_busy()
        new = self._new_frames(windows, tracks)
        quota = self._quota(windows, tracks, new, ahead)
        pending: list[tuple[np.ndarray, Slot]] = []
        counts = []
        for w in windows:
            ran = still = deferred = 0
            track = tracks[w.source]
            for f in sorted(w.frames, key=lambda f: f.pts):
                key = (f.source, f.pts)
                if key in track.frames:
                    continue
                new[w.source] -= 1  # frames of the source still to come in this batch after this one
                if f.pts < track.next_due - DUE_SLACK / self.config.fps and track.result is not None:
                    track.frames[key] = track.result  # between runs: the last result stands
                    track.seen[key] = track.looked
                    continue
                slot = track.reuse.last("detector", f)
                if slot is not None:  # nothing moved since the last run
                    track.next_due = f.pts + 1.0 / self.config.fps
                    track.looked = f.pts
                    track.frames[key], track.seen[key] = slot, f.pts
                    still += 1
                    continue
                # a camera's first look takes its turn like the floor's: cameras started together are not all
                # read in one batch (on a box near its edge that backlog outlasts the first windows)
                overdue = track.result is not None and f.pts - track.looked >= self.config.max_age
                if w.source in quota and new[w.source] >= quota[w.source] and not overdue:  # newest ones first
                    track.frames[key] = track.result if track.result is not None else NOT_LOOKED
                    track.seen[key] = track.looked
                    track.reuse.count(w.source, "detector_deferred")  # in status and timings records
                    deferred += 1
                    continue
                if w.source in quota:
                    quota[w.source] = max(0, quota[w.source] - 1)
                track.next_due = f.pts + 1.0 / self.config.fps
                track.looked = f.pts
                slot = Slot()
                pending.append((f.image, slot))
                track.reuse.keep("detector", f, slot)
                track.result = track.frames[key] = slot
                track.seen[key] = f.pts
                ran += 1
            counts.append((ran, still, deferred))
        self.owed = max(0.0, self.owed - sum(ran for ran, _, _ in counts))
        if pending:
            t0 = time.monotonic()
            for (_, slot), rows in zip(pending, self.model.detect([image for image, _ in pending]), strict=True):
                slot.value = rows
            per_frame = (time.monotonic() - t0) / len(pending)
            self.cost = per_frame if self.cost is None else self.cost + COST_SMOOTHING * (per_frame - self.cost)
        out = [self._summary(w, tracks[w.source], *n) for w, n in zip(windows, counts, strict=True)]
        for source in {w.source for w in windows}:
            trim_frames(tracks[source].frames, windows)
            trim_frames(tracks[source].seen, windows)
        return out

    def _measure_busy(self) -> None:
        """The process's CPU seconds per wall second and core since the last sample (at most every BUSY_PERIOD):
        decoding shares the cores with the worker, so a worker with time to spare is not a box with time to spare."""
        wall, cpu = time.monotonic(), time.process_time()
        if wall - self._clock[0] >= BUSY_PERIOD:
            share = (cpu - self._clock[1]) / ((wall - self._clock[0]) * CORES)
            self.busy = share if self.busy is None else self.busy + 0.5 * (share - self.busy)
            self._clock = (wall, cpu)

    def _new_frames(self, windows: list[Window], tracks: Mapping[str, Track]) -> dict[str, int]:
        """Per source, the frames of the batch the detector has not handled yet."""
        keys = {
            (f.source, f.pts) for w in windows for f in w.frames if (f.source, f.pts) not in tracks[f.source].frames
        }
        return Counter(source for source, _ in keys)

    def _quota(
        self, windows: list[Window], tracks: Mapping[str, Track], new: dict[str, int], ahead: float
    ) -> dict[str, int]:
        """Per live source of the batch, how many due frames it may read (sources absent: no limit).

        The frames that fit before the deadline (``DEADLINE`` of a hop past the completion of the oldest live
        window), less the ``ahead`` seconds of other work, at the running cost per frame (none while the
        process keeps more than ``BUSY`` of its cores busy), and at least the
        looks the ``max_age`` floor has accrued, dealt one at a time to the sources in order of how long ago
        the detector last looked at them (between equals: most deferred so far), for as many rounds as they
        have new frames.
        """
        live = [w for w in windows if self.config.defer and w.source in tracks[w.source].reuse.live]
        for w in windows:  # the spacing of each source's windows: when its next window will be waiting
            track = tracks[w.source]
            if track.start is not None and w.t_start > track.start:
                track.hop = w.t_start - track.start
            track.start = w.t_start
        if not live:
            return {}
        if self.cost is None:  # one look measures what a look costs
            budget = 1
        else:
            deadline = min(w.ready_at + DEADLINE * (tracks[w.source].hop or w.t_end - w.t_start) for w in live)
            budget = max(0, int((deadline - time.monotonic() - ahead) / self.cost))
        if self.busy is not None and self.busy > BUSY:  # the cores are taken (decoding, other cameras' encoders)
            budget = 0
        # The max_age floor, spread out: each live window accrues its hop / max_age of a look, paid to the
        # cameras seen longest ago as it accrues, so cameras started together do not all fall due at once.
        accrued = sum((tracks[w.source].hop or w.t_end - w.t_start) / self.config.max_age for w in live)
        self.owed = min(self.owed + accrued, len(live))
        budget = max(budget, int(self.owed))
        frames = {w.source: new.get(w.source, 0) for w in live}
        newest: dict[str, float] = {}
        for w in live:
            newest[w.source] = max([newest.get(w.source, -math.inf), *(f.pts for f in w.frames)])
        # longest without a look first; between equals, the one that had the most frames deferred so far
        deferred = {s: tracks[s].reuse.counts[(s, "detector_deferred")] for s in frames}
        order = sorted(frames, key=lambda s: (tracks[s].looked - newest[s], -deferred[s]))
        quota = dict.fromkeys(order, 0)
        while budget > 0 and any(quota[s] < frames[s] for s in order):
            for s in order:
                if budget > 0 and quota[s] < frames[s]:
                    quota[s] += 1
                    budget -= 1
        return quota

    def _summary(self, w: Window, track: Track, ran: int, still: int, deferred: int) -> Detection | None:
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
        last = max(f.pts for f in w.frames)
        age = last - track.seen[(w.source, last)]
        return Detection(scores, count, boxes, best_pts, ran, still, deferred, age)

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
            "deferred": d.deferred,
            "age": round(d.age, 3) if math.isfinite(d.age) else None,
        }
