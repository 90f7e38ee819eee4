"""Sliding windows over a source's shared audio/video timeline.

A window ``[t_start, t_end)`` holds exactly the frames and audio samples whose
PTS fall inside it. A window is complete when every track that has not ended
has delivered data past ``t_end``. A modality with no data in a window is
reported absent (``audio is None`` / no frames), never padded and then
classified as if it were real.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .types import AudioChunk, Frame, SourceEnd, SourceInfo, SourceItem, Window


@dataclass
class WindowSpec:
    length: float = 2.0
    hop: float = 0.5
    min_audio: float = 0.48  # seconds of audio below which a window has no audio ...
    # ... unless the track itself covers less of the window (a short clip): then half of that.
    sample_rate: int = 16000


class Windower:
    """Turns one source's items into complete windows, in order."""

    def __init__(self, source: str, spec: WindowSpec) -> None:
        self.source, self.spec = source, spec
        self.info: SourceInfo | None = None
        self.origin: float | None = None
        self.next_index = 0
        self.frames: list[Frame] = []
        self.chunks: list[AudioChunk] = []
        self.watermark = {"audio": -math.inf, "video": -math.inf}
        self.expect = {"audio": True, "video": True}
        self.data_end = -math.inf
        self.audio_start: float | None = None
        self.ended = False

    def push(self, item: SourceItem) -> list[Window]:
        if isinstance(item, SourceInfo):
            if self.info is None:  # a reconnect continues the timeline it started
                self.origin = item.start
            self.info = item
            self.expect = {"audio": item.has_audio, "video": item.has_video}
            return []
        if isinstance(item, SourceEnd):
            self.ended = True
            return self._emit()
        if isinstance(item, Frame):
            self.frames.append(item)
            self.watermark["video"] = max(self.watermark["video"], item.pts)
            self.data_end = max(self.data_end, item.pts)
        elif isinstance(item, AudioChunk):
            self.chunks.append(item)
            if self.audio_start is None:
                self.audio_start = item.pts
            end = item.pts + len(item.samples) / self.spec.sample_rate
            self.watermark["audio"] = max(self.watermark["audio"], end)
            self.data_end = max(self.data_end, end)
        else:
            return []
        if self.origin is None:
            self.origin = item.pts
        return self._emit()

    def bounds(self, index: int) -> tuple[float, float]:
        t0 = (self.origin or 0.0) + index * self.spec.hop
        return t0, t0 + self.spec.length

    def _complete(self, t_end: float) -> bool:
        if self.ended:
            return True
        return all(self.watermark[m] >= t_end for m, on in self.expect.items() if on)

    def _emit(self) -> list[Window]:
        out = []
        while self.origin is not None:
            t_start, t_end = self.bounds(self.next_index)
            if t_start >= self.data_end:
                break  # nothing of this window has arrived (or ever will)
            if self.next_index > 0 and self.bounds(self.next_index - 1)[1] >= self.data_end and self.ended:
                break  # the previous window already reached the end of the data
            if not self._complete(t_end):
                break
            window = self._window(t_start, t_end)
            if window.frames or window.audio is not None:  # an outage gives no window, not an empty one
                out.append(window)
            self.next_index += 1
            self._prune(self.bounds(self.next_index)[0])
        return out

    def _window(self, t_start: float, t_end: float) -> Window:
        frames = [f for f in self.frames if t_start <= f.pts < t_end]
        sr = self.spec.sample_rate
        parts = []
        for c in self.chunks:
            i0 = max(0, math.ceil((t_start - c.pts) * sr - 1e-6))
            i1 = min(len(c.samples), math.ceil((t_end - c.pts) * sr - 1e-6))
            if i1 > i0:
                parts.append(c.samples[i0:i1])
        audio = np.concatenate(parts) if parts else None
        if audio is not None:
            assert self.audio_start is not None  # set by the first chunk, and audio came from chunks
            covered = min(t_end, self.watermark["audio"]) - max(t_start, self.audio_start)
            if len(audio) < min(self.spec.min_audio, covered / 2) * sr:
                audio = None
        duration = self.info.duration if self.info else None
        return Window(
            self.source, self.next_index, t_start, t_end, frames, audio, ready_at=time.monotonic(), duration=duration
        )

    def _prune(self, keep_from: float) -> None:
        self.frames = [f for f in self.frames if f.pts >= keep_from]
        sr = self.spec.sample_rate
        self.chunks = [c for c in self.chunks if c.pts + len(c.samples) / sr > keep_from]
