"""Work not done twice: frames that did not change and windows of silence reuse an earlier result.

Most surveillance video is a still scene most of the time, so (as Frigate
detects only on motion) a sampled frame is compared with the last frame of
its source that was computed: a small grey copy of each (area-averaged, so
compression noise washes out), and the share of its pixels that moved by
more than a few grey levels. Below ``reuse.motion`` the frame takes the
earlier frame's result. One measure serves every consumer (the video encoder
and the person detector): each frame's grey copy is made once, and each
consumer keeps its own last computed frame per source, because they run at
different rates. Comparing with the last *computed* frame, not the previous
one, means a slow change adds up until it counts; ``reuse.max_age`` bounds
how long a result may stand even when nothing seems to move (each source
gets a period between half and all of it, so that cameras started together
do not all compute again at once).

Whether reuse applies is per source: ``reuse.enabled`` null means live
sources only (cameras, streams, files paced at real time); batch labelling
reads every frame unless asked.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ReuseConfig
from .types import Frame, Window

THUMB_WIDTH = 64  # pixels across the grey copy that frames are compared by
PIXEL_CHANGE = 12  # grey levels a grey-copy pixel must move by to count as changed (compression noise stays below)
KINDS = ("video_frames", "video_windows", "detector_frames", "detector_deferred", "audio_windows")
"""The counters, as records name them; ``detector_deferred``: frames the detector was due to read but left to a
later batch for a live window's deadline (detector.py), which took the last detection meanwhile."""


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A small grey copy of an RGB frame: area-averaged, so noise and small jitter wash out."""
    import cv2

    h, w = image.shape[:2]
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB_WIDTH, max(1, round(THUMB_WIDTH * h / w))), interpolation=cv2.INTER_AREA)


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Share of grey-copy pixels that moved by more than ``PIXEL_CHANGE`` grey levels (1 when sizes differ)."""
    if a.shape != b.shape:
        return 1.0
    return float(np.mean(np.abs(a.astype(np.int16) - b) > PIXEL_CHANGE))


def trim_frames(per_frame: dict[tuple[str, float], Any], windows: list[Window]) -> None:
    """Drop ``(source, pts)`` entries older than the newest start of the source's windows in this batch:
    windows come in order, so no later window can hold those frames."""
    newest: dict[str, float] = {}
    for w in windows:
        newest[w.source] = max(newest.get(w.source, -math.inf), w.t_start)
    for key in [k for k in per_frame if k[1] < newest.get(k[0], -math.inf)]:
        del per_frame[key]


@dataclass
class Slot:
    """One computed result, shared by every frame that reuses it; ``value`` is filled once its batch has run."""

    value: Any = None


@dataclass
class _Anchor:
    """A consumer's last computed frame of one source."""

    pts: float
    thumb: np.ndarray
    slot: Slot


class FrameReuse:
    """The change measure and, per consumer and source, the last computed frame; counters of what was reused.

    ``live`` holds the sources that count as live (the pipeline shares its set); with
    ``reuse.enabled`` null only they reuse. Each source's owner keeps one (``classifier.Memory``)
    and drops it with the source, so nothing here is forgotten by hand.
    """

    def __init__(self, config: ReuseConfig, live: Container[str] = frozenset()) -> None:
        self.config = config
        self.live = live
        self.counts: Counter[tuple[str, str]] = Counter()  # (source, kind) -> count
        self._thumbs: dict[tuple[str, float], np.ndarray] = {}
        self._anchors: dict[tuple[str, str], _Anchor] = {}  # (source, consumer) -> last computed frame

    def applies(self, source: str) -> bool:
        """Whether this source's frames and windows may reuse results."""
        on = self.config.enabled
        return source in self.live if on is None else on

    def silent(self, source: str, audio: np.ndarray | None) -> bool:
        """A window's audio is below the silence gate (and reuse applies): the silence result stands for it."""
        from .alerts import dbfs

        return audio is not None and self.applies(source) and dbfs(audio) < self.config.silence_dbfs

    def last(self, consumer: str, frame: Frame) -> Slot | None:
        """The consumer's result for the source's last computed frame when ``frame`` has not changed since it
        (counted as a reused frame of ``consumer``); None when it must be computed."""
        if not self.applies(frame.source) or self.config.motion <= 0:
            return None
        anchor = self._anchors.get((frame.source, consumer))
        if anchor is None:
            return None
        age = frame.pts - anchor.pts
        if age < 0 or age > self._max_age(frame.source):
            return None  # the timeline went back (a reconnect), or the result is too old to trust
        if changed(self._thumb(frame), anchor.thumb) >= self.config.motion:
            return None
        self.counts[(frame.source, f"{consumer}_frames")] += 1
        return anchor.slot

    def _max_age(self, source: str) -> float:
        """How long a result may stand for this source: between half and all of ``reuse.max_age``, fixed per
        source name, so that cameras started together do not all compute again in the same second."""
        if self.config.max_age is None:
            return math.inf
        return self.config.max_age * (0.5 + 0.5 * zlib.crc32(source.encode()) / 2**32)

    def keep(self, consumer: str, frame: Frame, slot: Slot) -> None:
        """``frame`` is being computed into ``slot``: later frames of its source are compared with it."""
        if self.applies(frame.source) and self.config.motion > 0:
            self._anchors[(frame.source, consumer)] = _Anchor(frame.pts, self._thumb(frame), slot)

    def count(self, source: str, kind: str, n: int = 1) -> None:
        self.counts[(source, kind)] += n

    def reused(self, source: str) -> dict[str, int]:
        """One source's counters, as status records carry them."""
        return {k: self.counts[(source, k)] for k in KINDS}

    def trim(self, windows: list[Window]) -> None:
        """Forget grey copies of frames older than the newest window's start of each source."""
        trim_frames(self._thumbs, windows)

    def _thumb(self, frame: Frame) -> np.ndarray:
        """The frame's grey copy, made once whichever consumer asks first."""
        key = (frame.source, frame.pts)
        thumb = self._thumbs.get(key)
        if thumb is None:
            thumb = self._thumbs[key] = thumbnail(frame.image)
        return thumb
