"""Open inputs, demux both tracks in one pass, and put timestamped items on a queue.

One decoder thread per source. Every problem becomes an explicit item
(``SourceError``, ``SourceEnd``) on the queue instead of an exception that
would silently kill the thread.
"""
from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .types import AudioChunk, Frame, SourceEnd, SourceError, SourceInfo, SourceItem

SAMPLE_RATE = 16000
_MAX_DECODE_ERRORS = 50  # a stream this broken is not worth following


def audio_resampler() -> av.AudioResampler:
    """The one conversion every audio path uses: float32 mono at SAMPLE_RATE."""
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def read_audio(path: str | Path) -> np.ndarray:
    """A whole file's first audio track as the live decoder would deliver it (float32 mono 16 kHz)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream")
            resampler = audio_resampler()
            parts = []
            for frame in container.decode(audio=0):
                parts += [c.to_ndarray().reshape(-1) for c in resampler.resample(frame)]
            parts += [c.to_ndarray().reshape(-1) for c in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: cannot decode audio: {_describe(e)}") from e
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


@dataclass
class SourceSpec:
    """Where to read from and what to call it in records."""

    url: str
    name: str
    format: str | None = None

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        """``clip.mp4``, ``name=clip.mp4``, ``rtsp://...``, ``/dev/video0`` or a camera index."""
        name, sep, url = text.partition("=")
        if not sep or "/" in name or ":" in name:
            name, url = "", text
        fmt = None
        if url.isdigit():
            url, fmt = f"/dev/video{url}", "v4l2"
        elif url.startswith("/dev/video"):
            fmt = "v4l2"
        return cls(url=url, name=name or _default_name(url), format=fmt)

    @property
    def display(self) -> str:
        """The URL or path as it may be shown: credentials removed."""
        return redact(self.url)


def _default_name(url: str) -> str:
    if "://" in url:
        return redact(url)
    return Path(url).name or url


def redact(url: str) -> str:
    """Drop credentials from a URL so it can be logged."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://{rest.split('@', 1)[1]}"


def _scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class Decoder(threading.Thread):
    """Demuxes one source: RGB frames sampled at ``fps`` by PTS, 16 kHz mono audio.

    Items go to ``out`` in decode order; a full queue blocks this thread, so
    a file source never loses anything.
    """

    def __init__(self, spec: SourceSpec, out: queue.Queue[SourceItem], fps: float = 4.0,
                 max_side: int = 640) -> None:
        super().__init__(name=f"decoder:{spec.name}", daemon=True)
        self.spec, self.out, self.fps, self.max_side = spec, out, fps, max_side
        self._stop_event = threading.Event()
        self.decode_errors = 0

    def stop(self) -> None:
        self._stop_event.set()

    def _put(self, item: SourceItem) -> None:
        while not self._stop_event.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        name, where = self.spec.name, self.spec.display
        try:
            container = av.open(self.spec.url, format=self.spec.format, timeout=(10.0, 10.0))
        except Exception as e:  # FFmpeg raises many kinds; all mean "cannot open"
            self._put(SourceError(name, f"{where}: cannot open: {_describe(e)}", fatal=True))
            self._put(SourceEnd(name))
            return
        try:
            self._demux(container)
        except Exception as e:  # keep the contract: the consumer always hears why
            self._put(SourceError(name, f"{where}: {_describe(e)}", fatal=True))
        finally:
            container.close()
            self._put(SourceEnd(name))

    def _demux(self, container: av.container.InputContainer) -> None:
        name = self.spec.name
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is None and audio is None:
            self._put(SourceError(name, f"{self.spec.display}: no audio or video stream", fatal=True))
            return
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        duration = container.duration / av.time_base if container.duration else None
        self._put(SourceInfo(name, start, duration, audio is not None, video is not None))
        streams = [s for s in (video, audio) if s is not None]
        resampler = audio_resampler() if audio else None
        last_slot = -math.inf
        size = None
        for packet in container.demux(streams):
            if self._stop_event.is_set():
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                self._decode_error(e)
                continue
            for frame in decoded:
                if isinstance(frame, av.AudioFrame):
                    self._audio(resampler.resample(frame), frame)
                    continue
                t = frame.time
                if t is None:
                    continue
                slot = math.floor(t * self.fps + 1e-6)
                if slot <= last_slot:
                    continue
                last_slot = slot
                if size is None:
                    size = _scaled_size(frame.width, frame.height, self.max_side)
                image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                self._put(Frame(name, t, image))
        if resampler is not None:
            self._audio(resampler.resample(None), None)

    def _audio(self, chunks: list[av.AudioFrame], source_frame: av.AudioFrame | None) -> None:
        for chunk in chunks:
            if chunk.pts is not None:
                t = chunk.pts / SAMPLE_RATE
            elif source_frame is not None and source_frame.time is not None:
                t = source_frame.time
            else:
                continue
            self._put(AudioChunk(self.spec.name, t, chunk.to_ndarray().reshape(-1).astype(np.float32)))

    def _decode_error(self, e: Exception) -> None:
        self.decode_errors += 1
        if self.decode_errors <= 3:
            self._put(SourceError(self.spec.name, f"{self.spec.display}: decode error: {_describe(e)}", fatal=False))
        if self.decode_errors >= _MAX_DECODE_ERRORS:
            raise RuntimeError(f"gave up after {self.decode_errors} decode errors")


def _describe(e: Exception) -> str:
    """One line naming the problem, without file paths or URLs FFmpeg may echo."""
    if isinstance(e, av.error.FFmpegError):
        return e.strerror or type(e).__name__
    return str(e).splitlines()[0] if str(e) else type(e).__name__
