"""Alert rules over window records: hold to start, hysteresis to end, cooldown, evidence on disk, retention.

A surveillance user wants one event per dog bark, not one per window: a
label must stay above ``min_score`` for ``min_windows`` windows to start an
event, and below the lower ``end_score`` for ``end_windows`` to end it. A
rule may also watch one modality alone (``audio: 0.5``): a dog barking
off-camera is an event even when the picture has no dog in it. Each
event leaves a JPEG snapshot of its strongest window (at the source's full
resolution when the decoder kept it) and a clip around it in the events
folder, so a person can check it: an MP4 with picture and sound (the
windows' frames, AAC audio) and/or a WAV of the audio. The clip starts
``pre_roll`` before the first window that was already rising towards the
event (the hold and the smoothing make the rule fire a little after the
sound began), from ring buffers of recent audio and frames. Old events are
deleted (``retain_days``, ``max_disk_mb``) at start and every few minutes.
Alerts see records and the window's media (numpy arrays), never tensors.

Event times are window centres: a window stands for the moment in its
middle, so a short bark at 5.0 s gives an event starting near 5.0 s, not at
the start of the first (2 s long) window that heard it.
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
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from .atomic import replacing
from .config import AlertRule, AlertsConfig, SpeechGate
from .types import SAMPLE_RATE, Frame, Window

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CLIP = 120.0  # seconds an event clip may hold (a never-ending event must not fill memory)
RISE = 10.0  # seconds a clip reaches back at most before the window that started the event (a slow rise)
END_RATIO = 0.8  # an event ends below this fraction of the threshold that started it (hysteresis)
SWEEP_EVERY = 300.0  # seconds (wall clock) between retention sweeps of the events folder
EVENT_FILE = re.compile(r"^\d{8}-\d{6}-.+-\d+(\.\d+)?s\.(jpg|wav|mp4)$")  # what _path names; nothing else is deleted


def dbfs(audio: np.ndarray | None) -> float:
    """Loudness of a window's audio in dB relative to full scale (-inf for silence or no audio)."""
    if audio is None or len(audio) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


@dataclass
class _Rule:
    """A rule with one source's overrides applied; ``starts``/``ends``: threshold per condition (fused/audio/video)."""

    label: str
    starts: dict[str, float]
    ends: dict[str, float]
    min_windows: int
    end_windows: int
    cooldown: float
    loudness_dbfs: float | None
    speech: SpeechGate | None
    pre_roll: float
    post_roll: float

    @classmethod
    def resolve(cls, rule: AlertRule, source: str) -> _Rule | None:
        o = rule.sources.get(source)
        if o is not None and not o.enabled:
            return None

        def pick(name: str) -> Any:
            """The source's override of a rule setting, else the rule's own."""
            return getattr(o, name) if o is not None and getattr(o, name) is not None else getattr(rule, name)

        starts = {**rule.thresholds(), **({"fused": o.min_score} if o is not None and o.min_score is not None else {})}
        ends = {k: END_RATIO * v for k, v in starts.items()}
        if rule.end_score is not None and "fused" in starts:
            ends["fused"] = min(rule.end_score, starts["fused"])
        return cls(
            rule.label,
            starts,
            ends,
            pick("min_windows"),
            rule.end_windows,
            pick("cooldown"),
            pick("loudness_dbfs"),
            rule.speech,
            rule.pre_roll,
            rule.post_roll,
        )

    def strength(self, scores: dict[str, float]) -> tuple[float, str]:
        """How far the window is past the start thresholds (>= 1: it counts) and which condition got it furthest."""
        return max((scores.get(k, 0.0) / v if v > 0 else math.inf, k) for k, v in self.starts.items())

    def holds(self, scores: dict[str, float]) -> bool:
        """Any condition still at or above its end threshold: the event goes on."""
        return any(scores.get(k, 0.0) >= v for k, v in self.ends.items())


@dataclass
class _Event:
    source: str
    label: str
    start: float
    onset: float = 0.0  # start of the first window of the run that led to the event: the clip starts pre-roll before
    trigger: str = "fused"  # the condition that raised it: fused, audio or video
    peak: float = 0.0  # fused score of the strongest window
    strength: float = 0.0  # of the strongest window: its score over the threshold, for the best condition
    peak_at: float = 0.0
    driver: str | None = None
    modality: dict[str, float | None] = field(default_factory=dict)
    last_above: float = 0.0
    end: float | None = None
    snapshot: str | None = None
    wall: float = field(default_factory=time.time)


@dataclass
class _Track:
    """One rule on one source."""

    rule: _Rule
    above: int = 0
    below: int = 0
    first_above: float = 0.0
    rising: float | None = None  # t_start of the first window of the current run that holds (above end thresholds)
    cooldown_until: float = -math.inf
    event: _Event | None = None


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


class Alerts:
    """Feed it every window record (with its window); it returns alert records to emit.

    An event gives two records: ``state: started`` when it is raised (with
    a snapshot) and ``state: ended`` once the post-roll audio is in (with
    end, peak, the modality that drove it, snapshot and clip).
    """

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.dir = Path(config.events_dir)
        self.tracks: dict[str, list[_Track]] = {}
        self.trails: dict[str, _AudioTrail] = {}
        self.frames: dict[str, _FrameTrail] = {}
        self.pending: list[_Event] = []  # ended, waiting for post-roll audio
        self.max_pre = max((r.pre_roll for r in config.rules), default=0.0)
        self.swept_at = -math.inf
        self._sweep()

    def _tracks(self, source: str) -> list[_Track]:
        if source not in self.tracks:
            rules = (_Rule.resolve(r, source) for r in self.config.rules)
            self.tracks[source] = [_Track(r) for r in rules if r is not None]
        return self.tracks[source]

    def update(self, record: dict[str, Any], window: Window) -> list[dict[str, Any]]:
        source = record["source"]
        trail = self.trails.setdefault(source, _AudioTrail())
        trail.add(window.t_start, window.audio)
        frames = self.frames.setdefault(source, _FrameTrail())
        if self.config.clip in ("mp4", "both"):
            frames.add(window.frames)
        loudness = dbfs(window.audio)
        out: list[dict[str, Any]] = []
        for track in self._tracks(source):
            out += self._step(track, record, window, label_scores(record, track.rule.label), loudness)
        out += self._flush(source, trail.end)
        # the ring buffers hold what a clip may still need: the pre-roll of every rise, open and waiting event
        rising = [t.rising for t in self.tracks[source] if t.rising is not None]
        active = [t.event.onset for t in self.tracks[source] if t.event is not None]
        waiting = [e.onset for e in self.pending if e.source == source]
        keep = min([window.t_start, *rising, *active, *waiting]) - self.max_pre
        trail.trim(max(keep, trail.end - MAX_CLIP))
        frames.trim(max(keep, window.t_end - MAX_CLIP))
        self._sweep()
        return out

    def _step(
        self, track: _Track, record: dict[str, Any], window: Window, scores: dict[str, float], loudness: float
    ) -> list[dict[str, Any]]:
        rule, centre = track.rule, (record["t_start"] + record["t_end"]) / 2
        admitted = (rule.loudness_dbfs is None or loudness >= rule.loudness_dbfs) and (
            rule.speech is None or rule.speech.admits(record.get("speech"))
        )
        strength, trigger = rule.strength(scores)
        ev = track.event
        if ev is None:
            t0 = record["t_start"]
            track.rising = max(t0 if track.rising is None else track.rising, t0 - RISE) if rule.holds(scores) else None
            if strength >= 1.0 and admitted:
                if track.above == 0:
                    track.first_above = centre
                track.above += 1
            else:
                track.above = 0
            if track.above >= rule.min_windows and track.first_above >= track.cooldown_until:
                onset = t0 if track.rising is None else track.rising
                track.event = ev = _Event(
                    record["source"], rule.label, track.first_above, onset=onset, trigger=trigger, last_above=centre
                )
                track.below = 0
                self._peak(ev, record, scores, strength, window)
                return [self._record(ev, "started")]
            return []
        if rule.holds(scores):
            track.below = 0
            ev.last_above = centre
            if strength > ev.strength:
                self._peak(ev, record, scores, strength, window)
            return []
        track.below += 1
        if track.below < rule.end_windows:
            return []
        ev.end = ev.last_above
        track.event, track.above, track.rising = None, 0, None
        track.cooldown_until = ev.end + rule.cooldown
        self.pending.append(ev)
        return []

    def _peak(
        self, ev: _Event, record: dict[str, Any], scores: dict[str, float], strength: float, window: Window
    ) -> None:
        ev.peak, ev.strength, ev.peak_at = scores["fused"], strength, (record["t_start"] + record["t_end"]) / 2
        per = record.get("modality", {}).get(ev.label, {})
        ev.modality = dict(per)
        present = {m: v for m, v in per.items() if v is not None}
        ev.driver = max(present, key=present.__getitem__) if present else None
        frame = _snapshot(window, record, per)
        if frame is not None:
            ev.snapshot = _saved(lambda: self._write_jpeg(ev, frame), "snapshot")

    def _flush(self, source: str | None, audio_end: float | None) -> list[dict[str, Any]]:
        """End records for events whose post-roll audio has arrived (all of them when ``audio_end`` is None)."""
        out, keep = [], []
        for ev in self.pending:
            rule = next(t.rule for t in self.tracks[ev.source] if t.rule.label == ev.label)
            ready = audio_end is None or (ev.end or 0.0) + rule.post_roll <= audio_end
            if (source is None or ev.source == source) and ready:
                out.append(
                    self._record(ev, "ended", _saved(partial(self._write_clips, ev, rule), "clip") or {"clip": None})
                )
            else:
                keep.append(ev)
        self.pending = keep
        return out

    def end_source(self, source: str) -> list[dict[str, Any]]:
        """The source ended: close its open events with what audio there is."""
        for track in self.tracks.get(source, []):
            if track.event is not None:
                track.event.end = track.event.last_above
                self.pending.append(track.event)
                track.event = None
        return self._flush(source, None)

    def close(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for source in list(self.tracks):
            out += self.end_source(source)
        return out

    def _sweep(self) -> None:
        """Retention, at start and then every ``SWEEP_EVERY`` seconds."""
        if time.monotonic() - self.swept_at < SWEEP_EVERY:
            return
        self.swept_at = time.monotonic()
        try:
            sweep(self.dir, self.config.retain_days, self.config.max_disk_mb)
        except OSError as e:  # retention must never stop the cameras; the next sweep tries again
            log.warning("alerts: retention sweep of %s failed: %s", self.dir, e)

    def _path(self, ev: _Event, ext: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(ev.wall))
        path = self.dir / _slug(ev.source) / f"{stamp}-{_slug(ev.label)}-{ev.start:.1f}s{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _write_jpeg(self, ev: _Event, rgb: np.ndarray) -> str:
        import cv2

        path = self._path(ev, ".jpg")
        with replacing(path) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{path}: cannot write snapshot")
        return str(path)

    def _write_clips(self, ev: _Event, rule: _Rule) -> dict[str, Any]:
        """The event's clip(s) as the config asks: ``clip`` (MP4, else WAV), ``wav`` (with both) and their span."""
        t0, t1 = ev.onset - rule.pre_roll, (ev.end or ev.start) + rule.post_roll
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

    def _write_wav(self, ev: _Event, audio: np.ndarray) -> str:
        path = self._path(ev, ".wav")
        with replacing(path) as tmp, wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(_pcm16(audio).tobytes())
        return str(path)

    def _write_mp4(self, ev: _Event, frames: list[tuple[float, np.ndarray]], audio: np.ndarray, t0: float) -> str:
        path = self._path(ev, ".mp4")
        with replacing(path) as tmp:
            write_mp4(tmp, frames, audio, t0)
        return str(path)

    @staticmethod
    def _record(ev: _Event, state: str, clips: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "type": "alert",
            "source": ev.source,
            "label": ev.label,
            "state": state,
            "event": f"{ev.source}:{ev.label}:{ev.start:.2f}",
            "start": round(ev.start, 3),
            "end": None if ev.end is None else round(ev.end, 3),
            "peak": round(ev.peak, 4),
            "peak_at": round(ev.peak_at, 3),
            "trigger": ev.trigger,
            "driver": ev.driver,
            "modality": ev.modality,
            "snapshot": ev.snapshot,
            "clip": None,
            **(clips or {}),
        }


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


def label_scores(record: dict[str, Any], label: str) -> dict[str, float]:
    """A label's scores in a window record: ``fused`` and each modality that sees it.

    A label outside the fused top-k is still found: the recorder adds the
    labels that alert rules watch to ``watched`` (fused) and ``modality``.
    """
    fused = next((e["score"] for e in record["labels"] if e["label"] == label), None)
    if fused is None:
        fused = record.get("watched", {}).get(label, 0.0)
    per = record.get("modality", {}).get(label, {})
    return {"fused": fused, **{m: v for m, v in per.items() if v is not None}}


def _snapshot(window: Window, record: dict[str, Any], per: dict[str, float | None]) -> np.ndarray | None:
    """What an event's JPEG shows: the middle frame; for a label the detector sees, its best frame with the boxes."""
    det = record.get("detector")
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
