"""What flows between the stages: plain dataclasses named after the thing.

Timestamps are seconds on the container's clock (PTS), never counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 16000  # Hz: every audio path runs at the rate YAMNet and silero-vad were trained at

MODALITIES = ("audio", "video")


@dataclass
class Frame:
    source: str
    pts: float
    image: np.ndarray  # RGB uint8, H x W x 3, scaled for the video encoder
    full: np.ndarray | None = None  # the source's full-size picture, kept only for alert snapshots

    @property
    def sharpest(self) -> np.ndarray:
        """The full-size picture when the decoder kept one, else the scaled one."""
        return self.full if self.full is not None else self.image


@dataclass
class AudioChunk:
    source: str
    pts: float
    samples: np.ndarray  # float32 mono at SAMPLE_RATE


@dataclass
class SourceInfo:
    """First item of every source: what the container holds."""

    source: str
    start: float
    duration: float | None
    has_audio: bool
    has_video: bool
    live: bool = False


@dataclass
class SourceError:
    """A decode or open problem; ``fatal`` ones end the source."""

    source: str
    message: str
    fatal: bool


@dataclass
class SourceStatus:
    """A watchdog state change: connecting, stalled, reconnecting (``live`` comes as SourceInfo)."""

    source: str
    state: str
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceEnd:
    source: str
    stats: dict[str, Any] = field(default_factory=dict)


SourceItem = Frame | AudioChunk | SourceInfo | SourceError | SourceStatus | SourceEnd


@dataclass
class Window:
    source: str
    index: int
    t_start: float
    t_end: float
    frames: list[Frame]
    audio: np.ndarray | None  # None when the window has (too little) audio
    ready_at: float = 0.0  # time.monotonic() when the window became complete
    duration: float | None = None  # of the whole source, for progress

    @property
    def present(self) -> dict[str, bool]:
        return {"audio": self.audio is not None, "video": bool(self.frames)}


@dataclass
class Detection:
    """The detector's result for one window: best score per class, boxes over threshold, the best frame's boxes.

    ``boxes`` rows are (class index, score, x0, y0, x1, y1), normalised to the frame at ``frame`` (its pts);
    ``ran``/``still``: frames of this window the detector read, and skipped because the picture had not changed;
    ``deferred``: frames it was due to read but left for a later batch (a live window's deadline came first);
    ``age``: media seconds from the window's last frame back to the frame the detector last looked at (inf: a live
    camera the detector has not looked at yet, whose first look waits its turn).
    """

    scores: np.ndarray
    count: int
    boxes: np.ndarray
    frame: float
    ran: int = 0
    still: int = 0
    deferred: int = 0
    age: float = 0.0


@dataclass
class Embeddings:
    """Per modality: pooled embedding and native class scores; absent ones missing.

    ``features`` are per-window scalars beside the modalities (``speech``: the speech gate's probability).
    """

    embedding: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    detection: Detection | None = None  # the person detector's, when it runs

    @property
    def present(self) -> dict[str, bool]:
        return {m: m in self.scores for m in MODALITIES}
