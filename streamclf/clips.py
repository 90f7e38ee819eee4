"""Media clips for evaluation: compose clips into one stream, strip a track, make clips from image+sound.

``eval`` judges fusion on media a user could have recorded, so every input it
runs is a real file decoded by the real pipeline: a single-modality run is the
same file with the other track removed (``strip``, a remux: the kept track is
not re-encoded), and a stream is clips back to back with gaps of silence and
mid-grey frames (``compose``), so windows straddle boundaries as they do live.
``pair_clip`` turns a still image and a recording of the thing into a short MP4,
the form of the ``avpairs`` data. Audio is written as the pipeline reads it
(float32 mono at ``types.SAMPLE_RATE``), so composing never changes what the
audio encoder hears.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .atomic import beside, replacing
from .sources import read_audio
from .types import SAMPLE_RATE

GREY = 128  # blank frames: mid-grey, the colour an empty scene carries least information in
MAX_SIDE = 640  # composed frames: the pipeline scales frames down to its own max_side (640) anyway


@dataclass
class Event:
    """One clip's place in a composed stream (seconds from the stream's start)."""

    label: str
    start: float
    end: float
    path: str


def tracks(path: str | Path) -> set[str]:
    """Which of ``audio`` / ``video`` a file holds (a cover picture counts as no video)."""
    try:
        with av.open(str(path)) as c:
            found: set[str] = {s.type for s in c.streams if s.type in ("audio", "video")}
            if "video" in found and all(_is_picture(s) for s in c.streams.video):
                found.discard("video")
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: not readable media ({e.strerror})") from None
    return found


def _is_picture(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def strip(src: str | Path, dst: str | Path, keep: str) -> Path:
    """Copy only the ``keep`` track (``audio`` or ``video``) of ``src`` into ``dst``.

    A remux, not a re-encode: the kept track is bit for bit what the full
    file holds, so a single-modality run differs from the fused one only by
    the missing track. Give ``dst`` the suffix of ``src``: another container
    can lose the edit list that trims an encoder's priming samples (AAC in
    MP4 into Matroska starts 64 ms late).
    """
    dst = Path(dst)
    with av.open(str(src)) as inp:
        streams = [s for s in inp.streams if s.type == keep and not _is_picture(s)]
        if not streams:
            raise ValueError(f"{src}: no {keep} track to keep")
        with replacing(dst) as tmp, av.open(str(tmp), "w") as out:
            ost = out.add_stream_from_template(streams[0])
            for packet in inp.demux(streams[0]):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = ost
                out.mux(packet)
    return dst


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def _fit(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` (w, h) with its aspect kept, centred on mid-grey."""
    w, h = size
    scale = min(w / frame.width, h / frame.height)
    fw, fh = _even(frame.width * scale), _even(frame.height * scale)
    canvas = np.full((h, w, 3), GREY, np.uint8)
    top, left = (h - fh) // 2, (w - fw) // 2
    canvas[top : top + fh, left : left + fw] = frame.reformat(fw, fh, format="rgb24").to_ndarray()
    return canvas


def frames_at(path: str | Path, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The video track sampled at ``fps``: frame n shows the picture on screen at n/fps, fitted to ``size``."""
    with av.open(str(path)) as c:
        streams = [s for s in c.streams.video if not _is_picture(s)]
        if not streams:
            return
        stream = streams[0]
        stream.thread_type = "AUTO"
        start = (
            float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        )
        n, last, last_t = 0, None, 0.0
        for frame in c.decode(stream):
            t = (frame.time - start) if frame.time is not None else last_t
            while last is not None and n / fps < t:
                yield _fit(last, size)
                n += 1
            last, last_t = frame, t
        if last is None:
            return
        rate = float(stream.average_rate or 0) or fps
        end = last_t + 1.0 / rate  # the last picture stays on screen for one frame of its own rate
        while n / fps < end - 1e-9 or n == 0:
            yield _fit(last, size)
            n += 1


class MediaWriter:
    """An H.264 + audio file written frame by frame, audio interleaved per video frame."""

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, audio_codec: str = "pcm_s16le") -> None:
        self.path = Path(path)
        self.tmp = beside(self.path)
        self.out = av.open(str(self.tmp), "w")
        self.fps = Fraction(fps).limit_denominator(1000)
        self.video = self.out.add_stream("libx264", rate=self.fps)
        self.video.width, self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": "20", "preset": "veryfast"}
        audio = self.out.add_stream(audio_codec, rate=SAMPLE_RATE)
        assert isinstance(audio, av.AudioStream), f"{audio_codec} is not an audio codec"
        self.audio = audio
        self.audio.layout = "mono"
        self.frames = 0
        self.samples = 0
        self.pending = np.zeros(0, np.float32)

    def write(self, image: np.ndarray, audio: np.ndarray) -> None:
        """One video frame and the audio that plays while it shows (any length; chunked for the codec)."""
        vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        vf.pts, vf.time_base = self.frames, 1 / self.fps
        self.out.mux(self.video.encode(vf))
        self.frames += 1
        self.pending = np.concatenate([self.pending, audio.astype(np.float32)])
        step = self.audio.codec_context.frame_size or 1024
        while len(self.pending) >= step:
            self._audio(self.pending[:step])
            self.pending = self.pending[step:]

    def _audio(self, samples: np.ndarray) -> None:
        fmt = self.audio.codec_context.format.name
        data = (np.clip(samples, -1, 1) * 32767).astype(np.int16) if fmt == "s16" else samples
        af = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
        af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, self.samples, Fraction(1, SAMPLE_RATE)
        self.out.mux(self.audio.encode(af))
        self.samples += len(samples)

    def __enter__(self) -> MediaWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        """Flush and move into place; after an error, leave no file behind (a half file would look done)."""
        if exc_type is None:
            if len(self.pending):
                self._audio(self.pending)
            self.out.mux(self.video.encode(None))
            self.out.mux(self.audio.encode(None))
        self.out.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _write_segment(
    writer: MediaWriter, frames: Iterable[np.ndarray], audio: np.ndarray, size: tuple[int, int], min_frames: int = 0
) -> int:
    """``frames``, then grey until ``audio`` has played; silence under frames past its end. Returns the frames.

    Every frame carries exactly its share of samples, so the tracks never drift apart.
    """
    fps = float(writer.fps)
    grey = np.full((size[1], size[0], 3), GREY, np.uint8)

    def share(k: int) -> np.ndarray:
        a, b = round(k * SAMPLE_RATE / fps), round((k + 1) * SAMPLE_RATE / fps)
        part = audio[a:b]
        return np.pad(part, (0, b - a - len(part))) if len(part) < b - a else part

    n = 0
    for n, image in enumerate(frames, 1):
        writer.write(image, share(n - 1))
    total = max(n, min_frames, math.ceil(len(audio) * fps / SAMPLE_RATE - 1e-9))
    for k in range(n, total):
        writer.write(grey, share(k))
    return total


def canvas_size(paths: list[str | Path], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """A frame size that holds every clip's video (largest width and height, long side at most ``max_side``)."""
    w = h = 0
    for p in paths:
        with av.open(str(p)) as c:
            for s in c.streams.video:
                if not _is_picture(s):
                    w, h = max(w, s.codec_context.width), max(h, s.codec_context.height)
    if not w:
        return 320, 240
    scale = min(1.0, max_side / max(w, h))
    return _even(w * scale), _even(h * scale)


def compose(
    clips: Sequence[tuple[str | Path, str]],
    out: str | Path,
    gap: float = 2.0,
    fps: float = 8.0,
    size: tuple[int, int] | None = None,
    progress: Callable[[str], None] | None = None,
    gains: list[float] | None = None,
    degrade: Callable[[int, np.ndarray, Iterable[np.ndarray]], tuple[np.ndarray, Iterable[np.ndarray]]] | None = None,
) -> list[Event]:
    """One stream of ``clips`` (path, label) back to back, a gap of silence and grey before each and at the end.

    Each clip lasts as long as the longer of its tracks (rounded up to a
    frame); a missing or shorter track is filled with grey or silence, so
    the tracks stay in step. ``gains`` (dB per clip) scale each clip's audio,
    as a nearer or farther microphone would (training augmentation);
    ``degrade(i, audio, frames)`` returns clip i's audio and frames as they go
    in (training copies with noise or damaged pictures). Returns where each
    clip lies in the stream.
    """
    size = size or canvas_size([p for p, _ in clips])
    gap_frames = round(gap * fps)
    events: list[Event] = []
    silence = np.zeros(0, np.float32)
    with MediaWriter(out, size, fps) as writer:
        frame = _write_segment(writer, (), silence, size, gap_frames)
        for i, (path, label) in enumerate(clips):
            audio = read_audio(path) if "audio" in tracks(path) else silence
            if gains is not None:
                audio = audio * np.float32(10 ** (gains[i] / 20))
            frames: Iterable[np.ndarray] = frames_at(path, fps, size)
            if degrade is not None:
                audio, frames = degrade(i, audio, frames)
            try:
                n = _write_segment(writer, frames, audio, size, 1)
            except av.error.FFmpegError as e:
                raise ValueError(f"{path}: cannot decode its video ({e.strerror})") from None
            events.append(Event(label, frame / fps, (frame + n) / fps, str(path)))
            frame += n + _write_segment(writer, (), silence, size, gap_frames)
            if progress is not None:
                progress(f"composed {i + 1}/{len(clips)} clips, {frame / fps:.0f} s")
    return events


def pair_clip(
    image: str | Path,
    sound: str | Path,
    out: str | Path,
    fps: float = 4.0,
    max_seconds: float = 10.0,
    min_seconds: float = 2.0,
) -> Path:
    """An MP4 showing ``image`` while ``sound`` plays: as long as the sound, cut at ``max_seconds``.

    A sound shorter than ``min_seconds`` (one default window) is followed by
    silence with the picture still up, so the clip fills at least one window
    and its audio counts as present.
    """
    with av.open(str(image)) as c:
        picture = next(c.decode(video=0))
    size = (_even(picture.width), _even(picture.height))
    audio = read_audio(sound)[: int(max_seconds * SAMPLE_RATE)]
    n = max(math.ceil(len(audio) * fps / SAMPLE_RATE - 1e-9), math.ceil(min_seconds * fps))
    still = _fit(picture, size)
    with MediaWriter(out, size, fps, audio_codec="aac") as writer:
        _write_segment(writer, [still] * n, audio, size, n)
    return Path(out)


def pair_clips(
    pairs: Iterable[tuple[str, str | Path, str | Path]],
    out_dir: str | Path,
    progress: Callable[[str], None] | None = None,
    **settings: float,
) -> list[Path]:
    """``pair_clip`` for each (name, image, sound) into ``out_dir``/name.mp4; a clip newer than its inputs is kept.

    ``settings`` go to ``pair_clip`` (fps, max_seconds, min_seconds); a
    different setting needs another ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    pairs = list(pairs)
    for i, (name, image, sound) in enumerate(pairs, 1):
        out = out_dir / f"{name}.mp4"
        newest = max(Path(image).stat().st_mtime, Path(sound).stat().st_mtime)
        if not out.exists() or out.stat().st_mtime < newest:
            pair_clip(image, sound, out, **settings)
            if progress is not None:
                progress(f"made {out.name} ({i}/{len(pairs)})")
        paths.append(out)
    return paths
