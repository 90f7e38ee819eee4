"""What an alert leaves on disk for a person to check, and how long it stays.

Each event leaves a JPEG snapshot of its strongest window (at the source's
full resolution when the decoder kept it; with the detector's boxes for a
label the detector sees) and a clip around it: an MP4 with picture and
sound (the windows' frames, AAC audio) and/or a WAV of the audio. The clip
reaches back ``pre_roll`` before the event's onset, so the recent audio and
frames of every source are kept in ring buffers (``EventFiles.add`` /
``trim``). Old events are deleted (``retain_days``, ``max_disk_mb``) at
start and every few minutes; only files named as events are named here are
ever touched. A file that cannot be written costs that file (one warning),
never the run.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import wave
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from .atomic import replacing
from .config import AlertsConfig
from .records import WindowRecord
from .types import SAMPLE_RATE, Frame, Window

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CLIP = 120.0  # seconds an event clip may hold (a never-ending event must not fill memory)
SWEEP_EVERY = 300.0  # seconds (wall clock) between retention sweeps of the events folder
EVENT_FILE = re.compile(r"^\d{8}-\d{6}-.+-\d+(\.\d+)?s\.(jpg|wav|mp4)$")  # what _path names; nothing else is deleted


class Event(Protocol):
    """What names an event's files: its source, label, start on the source's timeline and wall-clock time."""

    source: str
    label: str
    start: float
    wall: float


class _AudioTrail:
    """The recent audio of one source, stitched from overlapping windows."""

    def __init__(self) -> None:
        self.start = 0.0
        self.samples = np.zeros(0, np.float32)

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / SAMPLE_RATE

    def add(self, t_start: float, audio: np.ndarray | None) -> None:
        if audio is None:
            return
        if len(self.samples) == 0 or t_start > self.end + 0.5:  # first audio, or after a gap
            self.start, self.samples = t_start, audio.astype(np.float32)
            return
        skip = max(0, int(round((self.end - t_start) * SAMPLE_RATE)))
        if skip < len(audio):
            self.samples = np.concatenate([self.samples, audio[skip:]])

    def trim(self, keep_from: float) -> None:
        cut = int((keep_from - self.start) * SAMPLE_RATE)
        if cut > 0:
            self.samples = self.samples[cut:]
            self.start += cut / SAMPLE_RATE

    def between(self, t0: float, t1: float) -> np.ndarray:
        i0 = max(0, int((t0 - self.start) * SAMPLE_RATE))
        i1 = max(i0, int((t1 - self.start) * SAMPLE_RATE))
        return self.samples[i0:i1]


class _FrameTrail:
    """The recent frames of one source (the windows' frames, once each), for the pre-roll of a video clip."""

    def __init__(self) -> None:
        self.frames: deque[tuple[float, np.ndarray]] = deque()

    def add(self, frames: list[Frame]) -> None:
        last = self.frames[-1][0] if self.frames else -math.inf
        self.frames.extend((f.pts, f.image) for f in frames if f.pts > last)

    def trim(self, keep_from: float) -> None:
        while self.frames and self.frames[0][0] < keep_from:
            self.frames.popleft()

    def between(self, t0: float, t1: float) -> list[tuple[float, np.ndarray]]:
        return [(t, image) for t, image in self.frames if t0 <= t < t1]


def _slug(text: str) -> str:
    """A file or folder name: never empty, ``.`` or ``..`` (a source named so must stay inside the events folder)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
    return slug if slug.strip(".") else "source"


class EventFiles:
    """The recent media of every source, and the files of each event: its snapshot and its clip."""

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.dir = Path(config.events_dir)
        self.trails: dict[str, _AudioTrail] = {}
        self.frames: dict[str, _FrameTrail] = {}
        self.swept_at = -math.inf
        self.sweep()

    def add(self, window: Window) -> float:
        """Keep the window's media; returns where the source's audio ends (an event's post-roll waits for it)."""
        trail = self.trails.setdefault(window.source, _AudioTrail())
        trail.add(window.t_start, window.audio)
        frames = self.frames.setdefault(window.source, _FrameTrail())
        if self.config.clip in ("mp4", "both"):
            frames.add(window.frames)
        return trail.end

    def trim(self, source: str, keep_from: float, now: float) -> None:
        """Forget the source's media before ``keep_from``, and what lies more than ``MAX_CLIP`` before the end of
        its audio, or before ``now`` (the end of its last window) for its frames."""
        trail = self.trails[source]
        trail.trim(max(keep_from, trail.end - MAX_CLIP))
        self.frames[source].trim(max(keep_from, now - MAX_CLIP))

    def sweep(self) -> None:
        """Retention, at start and then every ``SWEEP_EVERY`` seconds."""
        if time.monotonic() - self.swept_at < SWEEP_EVERY:
            return
        self.swept_at = time.monotonic()
        try:
            sweep(self.dir, self.config.retain_days, self.config.max_disk_mb)
        except OSError as e:  # retention must never stop the cameras; the next sweep tries again
            log.warning("alerts: retention sweep of %s failed: %s", self.dir, e)

    def _path(self, ev: Event, ext: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(ev.wall))
        path = self.dir / _slug(ev.source) / f"{stamp}-{_slug(ev.label)}-{ev.start:.1f}s{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def snapshot(self, ev: Event, window: Window, record: WindowRecord, per: dict[str, float | None]) -> str | None:
        """The event's JPEG (see ``_snapshot``), or None when the window has no picture or it cannot be written."""
        rgb = _snapshot(window, record, per)
        return None if rgb is None else _saved(lambda: self._write_jpeg(ev, rgb), "snapshot")

    def clip(self, ev: Event, t0: float, t1: float) -> dict[str, Any]:
        """The event's clip(s) from ``t0`` to ``t1``: ``clip`` (None when none could be written) and, when there
        is one, ``wav`` (with ``clip: both``), ``clip_start`` and ``clip_end``."""
        return _saved(lambda: self._write_clips(ev, t0, t1), "clip") or {"clip": None}

    def _write_jpeg(self, ev: Event, rgb: np.ndarray) -> str:
        import cv2

        path = self._path(ev, ".jpg")
        with replacing(path) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{path}: cannot write snapshot")
        return str(path)

    def _write_clips(self, ev: Event, t0: float, t1: float) -> dict[str, Any]:
        """The event's clip(s) as the config asks: ``clip`` (MP4, else WAV), ``wav`` (with both) and their span."""
        audio = self.trails[ev.source].between(t0, t1)
        trail = self.trails[ev.source]
        t0 = max(t0, trail.start) if len(audio) else t0  # what the audio trail still holds
        frames = self.frames[ev.source].between(t0, t1)
        out: dict[str, Any] = {"clip": None}
        if self.config.clip in ("wav", "both") and len(audio):
            out["wav" if self.config.clip == "both" else "clip"] = self._write_wav(ev, audio)
        if self.config.clip in ("mp4", "both") and (len(audio) or frames):
            out["clip"] = self._write_mp4(ev, frames, audio, t0)
        if out["clip"] is not None:  # the span the clip covers on the source's timeline
            end = t0 + len(audio) / SAMPLE_RATE if len(audio) else frames[-1][0]
            out.update(clip_start=round(t0, 3), clip_end=round(end, 3))
        return out

    def _write_wav(self, ev: Event, audio: np.ndarray) -> str:
        path = self._path(ev, ".wav")
        with replacing(path) as tmp, wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(_pcm16(audio).tobytes())
        return str(path)

    def _write_mp4(self, ev: Event, frames: list[tuple[float, np.ndarray]], audio: np.ndarray, t0: float) -> str:
        path = self._path(ev, ".mp4")
        with replacing(path) as tmp:
            write_mp4(tmp, frames, audio, t0)
        return str(path)


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


def video_codec() -> Literal["libx264", "mpeg4"]:
    """H.264 when this PyAV build has libx264 (the PyPI wheels do), else MPEG-4 part 2, which every build has."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except av.codec.codec.UnknownCodecError:
        return "mpeg4"


def write_mp4(path: Path, frames: list[tuple[float, np.ndarray]], audio: np.ndarray, t0: float) -> None:
    """An MP4 of ``frames`` ((pts, RGB image), placed by their time since ``t0``) and 16 kHz mono ``audio`` (AAC).

    Frames keep their own timing (the windows' sampled rate, with any gap a
    live source had), so picture and sound stay in step.
    """
    import av

    ms = Fraction(1, 1000)
    with av.open(str(path), "w", format="mp4") as out:
        video: av.VideoStream | None = None
        sound: av.AudioStream | None = None
        if frames:
            height, width = (side - side % 2 for side in frames[0][1].shape[:2])  # yuv420p wants even sides
            video = out.add_stream(video_codec(), rate=1000)  # millisecond timestamps: variable frame rate
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if len(audio):
            sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        if video is not None:
            last = -1
            for t, image in frames:
                pts = int(round((t - t0) * 1000))
                if pts <= last or pts < 0:
                    continue
                if image.shape[:2] != (video.height, video.width):  # a reconnect may change the size
                    import cv2

                    image = cv2.resize(image, (video.width, video.height))
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(image[: video.height, : video.width]), format="rgb24"
                )
                frame.pts, frame.time_base, last = pts, ms, pts
                out.mux(video.encode(frame))
            out.mux(video.encode())
        if sound is not None:
            pcm = _pcm16(audio)
            for i in range(0, len(pcm), 1024):
                chunk = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="s16", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = SAMPLE_RATE, i, Fraction(1, SAMPLE_RATE)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())


def _saved(write: Callable[[], T], what: str) -> T | None:
    """Event media is a bonus: a full disk or a codec that fails costs the file (one warning), never the run."""
    import av

    try:
        return write()
    except (OSError, av.error.FFmpegError) as e:
        log.warning("alerts: cannot save the %s: %s", what, e)
        return None


def sweep(folder: Path, retain_days: float | None, max_disk_mb: float | None, now: float | None = None) -> list[Path]:
    """Delete old events under ``folder`` (all files of one event together, oldest first); returns what went.

    Events older than ``retain_days`` go; then, while the event files
    together exceed ``max_disk_mb``, the oldest events go. Only files named
    as the alerts name them are touched (a user's own files never are).
    """
    events: dict[Path, list[Path]] = {}
    for path in folder.glob("*/*"):
        if EVENT_FILE.match(path.name):
            events.setdefault(path.with_suffix(""), []).append(path)
    now = time.time() if now is None else now
    stats: dict[Path, list[tuple[Path, os.stat_result]]] = {}
    for key, files in events.items():
        for path in files:
            try:
                stats.setdefault(key, []).append((path, path.stat()))
            except OSError:  # gone meanwhile (another run's sweep): nothing to keep or delete
                continue
    ordered = sorted(stats, key=lambda k: max(st.st_mtime for _, st in stats[k]))
    total = sum(st.st_size for files in stats.values() for _, st in files)
    gone: list[Path] = []
    for key in ordered:
        age_days = (now - max(st.st_mtime for _, st in stats[key])) / 86400
        too_old = retain_days is not None and age_days > retain_days
        too_big = max_disk_mb is not None and total > max_disk_mb * 1e6
        if not (too_old or too_big):
            break  # the rest are younger, and the total already fits
        for path, st in stats[key]:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:  # not ours to delete (another user's run): leave it, go on with the rest
                log.warning("alerts: cannot delete %s: %s", path, e)
                continue
            total -= st.st_size
            gone.append(path)
    return gone


def _snapshot(window: Window, record: WindowRecord, per: dict[str, float | None]) -> np.ndarray | None:
    """What an event's JPEG shows: the middle frame; for a label the detector sees, its best frame with the boxes."""
    det = record.extra.get("detector")
    if not (det and det["boxes"] and window.frames and per.get("detector") is not None):
        return _middle_frame(window)
    frame = min(window.frames, key=lambda f: abs(f.pts - det["frame"]))
    return draw_boxes(frame.sharpest, det["boxes"])


def draw_boxes(rgb: np.ndarray, boxes: list[dict[str, Any]]) -> np.ndarray:
    """A copy of the picture with each box (normalised ``box``, ``label``, ``score``) drawn in red."""
    import cv2

    out = np.ascontiguousarray(rgb).copy()
    h, w = out.shape[:2]
    thick = max(2, round(min(h, w) / 200))
    for b in boxes:
        x0, y0, x1, y1 = (round(v * s) for v, s in zip(b["box"], (w, h, w, h), strict=True))
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 0, 0), thick)
        cv2.putText(
            out,
            f"{b['label']} {b['score']:.2f}",
            (x0 + thick, max(y0 - thick, 12 * thick)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (255, 0, 0),
            thick,
        )
    return out


def _middle_frame(window: Window) -> np.ndarray | None:
    """The window's middle frame as sharp as we have it: the source's full resolution when the decoder kept it."""
    if not window.frames:
        return None
    middle = len(window.frames) // 2
    kept = [i for i, f in enumerate(window.frames) if f.full is not None]  # the decoder keeps one a second
    return window.frames[min(kept, key=lambda i: abs(i - middle)) if kept else middle].sharpest
