"""Open inputs, demux both tracks in one pass, and put timestamped items on a queue.

One decoder thread per source. Every problem becomes an explicit item
(``SourceError``, ``SourceEnd``) on the queue instead of an exception that
would silently kill the thread.

Over 400 lines, kept whole on purpose: most of it is the one ``Decoder``
thread (open, demux, resample, pace, watchdog, reconnect: one state machine
whose parts share its counters), and the rest is what only it uses (which
URLs may be opened and with which FFmpeg options, the frame scaling).
Splitting the thread would scatter that state machine over modules.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from .retry import backoff
from .stages import Feed, Timings
from .types import SAMPLE_RATE, AudioChunk, Frame, SourceEnd, SourceError, SourceInfo, SourceItem, SourceStatus

if TYPE_CHECKING:
    from .config import SourcesConfig

_MAX_DECODE_ERRORS = 50  # a stream this broken is not worth following
FULL_EVERY = 1.0  # seconds between full-size pictures kept for alert snapshots (one per window, not per frame)
FULL_MAX_SIDE = 1920  # pixels: a snapshot's long side at most (a 4K camera's snapshot is still 1080p)


def audio_resampler() -> av.AudioResampler:
    """The one conversion every audio path uses: float32 mono at SAMPLE_RATE."""
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def read_audio(path: str | Path) -> np.ndarray:
    """A whole file's first audio track as the live decoder would deliver it (float32 mono 16 kHz)."""
    try:
        with av.open(
            f"file:{path}", options={"protocol_whitelist": PROTOCOLS["file"]}, metadata_errors="replace"
        ) as container:
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


PROTOCOLS = {  # what FFmpeg may open for each kind of source, and nothing else
    "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls,http,https",
    "rtsps": "rtsps,rtp,srtp,udp,tcp,tls",
    "rtmp": "rtmp,rtmpt,tcp",
    "rtmps": "rtmps,rtmpts,tcp,tls",
    "http": "http,https,tcp,tls,crypto",
    "https": "https,tcp,tls,crypto",
    "udp": "udp,rtp",
    "tcp": "tcp",
    "srt": "srt",
    "rtp": "rtp,udp",
    "file": "file,crypto",
}
NETWORK_SCHEMES = tuple(s for s in PROTOCOLS if s != "file")


@dataclass
class SourceSpec:
    """Where to read from, what to call it in records, and whether it is live."""

    url: str
    name: str
    format: str | None = None
    live: bool = False

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``clip.mp4``, ``name=clip.mp4``, ``rtsp://...``, ``/dev/video0`` or a camera index."""
        name, sep, url = text.partition("=")
        if not sep or "/" in name or ":" in name:
            name, url = "", text
        fmt = None
        if url.isdigit():
            url, fmt = f"/dev/video{url}", "v4l2"
        elif url.startswith("/dev/video"):
            fmt = "v4l2"
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme and scheme not in PROTOCOLS:
            raise ValueError(
                f"{redact(url)}: unsupported scheme {scheme}://; use a file path, /dev/videoN, "
                f"a camera index or one of {', '.join(s + '://' for s in PROTOCOLS)}"
            )
        live = fmt == "v4l2" or scheme in NETWORK_SCHEMES
        return cls(url=url, name=name or _default_name(url), format=fmt, live=live)

    @property
    def display(self) -> str:
        """The URL or path as it may be shown: credentials removed."""
        return redact(self.url)

    @property
    def target(self) -> str:
        """What FFmpeg opens: a path always as a file (``concat:...`` or ``subfile:...`` are names, not protocols)."""
        if self.format == "v4l2" or "://" in self.url or self.url.startswith("file:"):
            return self.url
        return "file:" + self.url

    def options(self, settings: SourcesConfig) -> dict[str, str]:
        if self.format == "v4l2":
            return {}
        scheme = self.url.partition("://")[0].lower() if "://" in self.url else "file"
        options = {"protocol_whitelist": PROTOCOLS[scheme]}
        if scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = settings.rtsp_transport
        return options


def _default_name(url: str) -> str:
    if "://" in url:
        return redact(url)
    return Path(url).name or url


def redact(url: str) -> str:
    """Drop credentials from a URL so it can be logged."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if not sep or "@" not in host:
        return url
    return f"{scheme}://{host.rsplit('@', 1)[1]}{slash}{path}"  # the last @: a password may hold one


def _scaled_size(width: int, height: int, max_side: int, short_side: int | None = None) -> tuple[int, int]:
    """Even sides, long side at most ``max_side``, short side at most ``short_side``; never upscaled."""
    scale = min(1.0, max_side / max(width, height), (short_side or math.inf) / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class _Stalled(Exception):
    """No data for longer than the stall timeout."""


class Decoder(threading.Thread):
    """Demuxes one source: RGB frames sampled at ``fps`` by PTS, 16 kHz mono audio.

    It is also the source's watchdog: a live source that stalls, errors or
    ends early is reopened with exponential backoff and jitter, and the
    timeline keeps going across reconnects (the gap is the outage). A file
    source waits for the consumer and loses nothing; a live one (or a file
    paced with ``realtime``) never waits: the feed drops the oldest items.
    """

    def __init__(
        self,
        spec: SourceSpec,
        out: Feed,
        fps: float = 4.0,
        max_side: int = 640,
        settings: SourcesConfig | None = None,
        timings: Timings | None = None,
        short_side: int | None = None,
        full_frames: bool = False,
    ) -> None:
        """``full_frames``: frames also carry the source's full-size picture (for alert snapshots)."""
        super().__init__(name=f"decoder:{spec.name}", daemon=True)
        from .config import SourcesConfig

        self.spec, self.out, self.fps, self.max_side, self.short_side = spec, out, fps, max_side, short_side
        self.full_frames = full_frames
        self.settings = settings or SourcesConfig()
        self.timings = timings or Timings()
        self.realtime = self.settings.realtime and not spec.live
        self.drops = spec.live or self.realtime
        self._stop_event = threading.Event()
        self.stats: dict[str, Any] = {
            "connects": 0,
            "reconnects": 0,
            "stalls": 0,
            "frames": 0,
            "audio_s": 0.0,
            "decode_errors": 0,
            "av_offset_ms": None,
        }
        self._offsets: deque[float] = deque(maxlen=256)
        self._shift = 0.0  # added to container PTS so the timeline survives reconnects
        self._last_t: float | None = None
        self._last_wall = 0.0
        self._progress = 0.0  # when data last came out of FFmpeg or went to the consumer: the stall clock
        self._pace: tuple[float, float] | None = None
        self._last_full = -math.inf  # when the last snapshot-sized picture was kept

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def _send(self, item: SourceItem) -> None:
        """Control items always go through (the consumer must hear every state)."""
        self.out.put(item)

    def _data(self, item: Frame | AudioChunk) -> None:
        self._last_t, self._last_wall = item.pts, time.monotonic()
        try:
            self._deliver(item)
        finally:  # time spent pacing or waiting for a slow consumer is not a stall: the source is fine
            self._progress = time.monotonic()

    def _deliver(self, item: Frame | AudioChunk) -> None:
        if self.realtime:
            self._pace_to(item.pts)
        if self.drops:
            self.out.put_latest(item)
            return
        while not self._stop_event.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _pace_to(self, t: float) -> None:
        if self._pace is None:
            self._pace = (time.monotonic(), t)
        delay = self._pace[0] + (t - self._pace[1]) - time.monotonic()
        if delay > 0:
            self._stop_event.wait(delay)

    def run(self) -> None:
        try:
            self._watch()
        except Exception as e:  # keep the contract: the consumer always hears why
            self._send(SourceError(self.spec.name, f"{self.spec.display}: {_describe(e)}", fatal=True))
        finally:
            self._send(SourceEnd(self.spec.name, self._stats()))

    def _stats(self) -> dict[str, Any]:
        if self._offsets:
            self.stats["av_offset_ms"] = round(float(np.median(self._offsets)) * 1000.0, 1)
        self.stats["audio_s"] = round(self.stats["audio_s"], 3)
        return dict(self.stats)

    def _watch(self) -> None:
        s, name, where = self.settings, self.spec.name, self.spec.display
        failures = 0
        while not self._stop_event.is_set():
            self._send(SourceStatus(name, "connecting", "", self._stats()))
            frames_before = self.stats["frames"] + self.stats["audio_s"]
            outcome, message = self._session()
            if outcome == "ended" or not self.spec.live or self._stop_event.is_set():
                return
            if self.stats["frames"] + self.stats["audio_s"] > frames_before:
                failures = 0  # it worked for a while: start over
            failures += 1
            if s.max_reconnects is not None and failures > s.max_reconnects:
                self._send(
                    SourceError(name, f"{where}: gave up after {failures - 1} reconnects: {message}", fatal=True)
                )
                return
            if outcome == "stalled":
                self.stats["stalls"] += 1
                self._send(SourceStatus(name, "stalled", message, self._stats()))
            wait = backoff(failures, s.backoff_initial, s.backoff_max)
            self.stats["reconnects"] += 1
            self._send(SourceStatus(name, "reconnecting", f"{message}; retrying in {wait:.1f}s", self._stats()))
            if self._stop_event.wait(wait):
                return

    def _session(self) -> tuple[str, str]:
        """One connection: ("ended" | "stalled" | "failed", why)."""
        s, name, where = self.settings, self.spec.name, self.spec.display
        try:
            container = av.open(
                self.spec.target,
                format=self.spec.format,
                options=self.spec.options(s),
                timeout=(s.open_timeout, s.stall_timeout),
                metadata_errors="replace",
            )
        except Exception as e:  # FFmpeg raises many kinds; all mean "cannot open"
            message = f"cannot open: {_describe(e)}"
            if not self.spec.live:
                self._send(SourceError(name, f"{where}: {message}", fatal=True))
            return ("stalled" if _is_timeout(e) else "failed"), message
        self.stats["connects"] += 1
        try:
            outcome = self._demux(container)
        except Exception as e:
            message = "no data" if isinstance(e, _Stalled) else _describe(e)
            if not self.spec.live:  # a damaged file keeps what was decoded before the damage
                decoded = self._decoded()
                self.stats["ended_early"] = True  # the file did not reach its end: the batch labeler says so
                stop = f" (stopped at {self._last_t:.1f}s)" if decoded and self._last_t is not None else ""
                self._send(SourceError(name, f"{where}: {message}{stop}", fatal=not decoded))
            return ("stalled" if isinstance(e, _Stalled) or _is_timeout(e) else "failed"), message
        finally:
            container.close()
        if not self.spec.live and not self._decoded() and not self.stopping:
            why = outcome[1] if outcome[0] == "failed" else "no audio or video could be decoded"
            self._send(SourceError(name, f"{where}: {why}", fatal=True))
        return outcome

    def _decoded(self) -> bool:
        return self.stats["frames"] > 0 or self.stats["audio_s"] > 0

    def _demux(self, container: av.container.InputContainer) -> tuple[str, str]:
        name = self.spec.name
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is None and audio is None:
            return "failed", "no audio or video stream"
        if video is not None and float(video.average_rate or 0) >= 2 * self.fps:
            video.codec_context.skip_frame = "NONREF"  # frames nothing refers to would mostly be dropped unseen
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        duration = container.duration / av.time_base if container.duration else None
        if duration and self.spec.url.lower().startswith(("http://", "https://")) and not self.settings.realtime:
            self.drops = False  # a file on a web server (it has a duration): read it like a file, lose nothing
        if self._last_t is not None:  # a reconnect: continue the timeline after the outage
            self._shift = self._last_t + (time.monotonic() - self._last_wall) - start
        self._send(
            SourceInfo(name, start + self._shift, duration, audio is not None, video is not None, live=self.drops)
        )
        streams = [s for s in (video, audio) if s is not None]
        resampler = audio_resampler() if audio else None
        last_slot, size = -math.inf, None
        last_video = -math.inf
        audio_end = -math.inf
        self._progress = heartbeat = time.monotonic()
        # A local file's data is its content: judged by decode errors, never by the clock (a busy machine
        # would cut it short). Stalls are for feeds, and for files on a web server, whose network can stall.
        stall = self.settings.stall_timeout if self.spec.live else math.inf
        for packet in container.demux(streams):
            if self._stop_event.is_set():
                return "ended", "stopped"
            now = time.monotonic()
            if self.spec.live and now - heartbeat >= self.settings.status_interval:
                heartbeat = now
                self._send(SourceStatus(name, "live", "", self._stats()))
            if packet.size == 0 and packet.pts is None:
                continue
            t0 = time.monotonic()
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                self._decode_error(e)
                if time.monotonic() - self._progress > stall:
                    raise _Stalled() from e
                continue
            for frame in decoded:
                self._progress = time.monotonic()
                if isinstance(frame, av.AudioFrame):
                    assert resampler is not None  # made with the audio stream, the only source of audio frames
                    audio_end = max(audio_end, self._audio(resampler.resample(frame), frame))
                    continue
                assert isinstance(frame, av.VideoFrame)  # only the video and audio streams are demuxed
                t = frame.time
                if t is None:
                    continue
                t += self._shift
                last_video = t
                if audio_end > -math.inf:
                    self._offsets.append(audio_end - t)
                slot = math.floor(t * self.fps + 1e-6)
                if slot <= last_slot:
                    continue
                last_slot = slot
                if size is None:
                    size = _scaled_size(frame.width, frame.height, self.max_side, self.short_side)
                image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                full = self._full(frame, t, size)
                self.timings.since("decode", t0)
                self.stats["frames"] += 1
                self._data(Frame(name, t, image, full))
            if time.monotonic() - self._progress > stall:
                raise _Stalled()
        if resampler is not None:
            self._audio(resampler.resample(None), None)
        end = max(last_video, audio_end)
        if self.spec.live and not (duration and end - self._shift >= start + duration - 1.0):
            return "failed", "stream ended"
        return "ended", "end of stream"

    def _full(self, frame: av.VideoFrame, t: float, size: tuple[int, int]) -> np.ndarray | None:
        """A snapshot-sized picture, at most one per ``FULL_EVERY`` seconds: a copy of every sampled frame at
        source size would ride through the queues (hundreds of frames in flight, gigabytes at 1080p)."""
        if not self.full_frames or t - self._last_full < FULL_EVERY:
            return None
        full_size = _scaled_size(frame.width, frame.height, FULL_MAX_SIDE)
        if full_size == size:  # the scaled picture is already the source's own
            return None
        self._last_full = t
        return frame.to_ndarray(format="rgb24", width=full_size[0], height=full_size[1])

    def _audio(self, chunks: list[av.AudioFrame], source_frame: av.AudioFrame | None) -> float:
        """Send resampled audio; returns where it ends on the timeline."""
        end = -math.inf
        for chunk in chunks:
            if chunk.pts is not None:
                t = chunk.pts / SAMPLE_RATE
            elif source_frame is not None and source_frame.time is not None:
                t = source_frame.time
            else:
                continue
            samples = chunk.to_ndarray().reshape(-1).astype(np.float32)
            t += self._shift
            end = t + len(samples) / SAMPLE_RATE
            self.stats["audio_s"] += len(samples) / SAMPLE_RATE
            self._data(AudioChunk(self.spec.name, t, samples))
        return end

    def _decode_error(self, e: Exception) -> None:
        self.stats["decode_errors"] += 1
        n = self.stats["decode_errors"]
        if n <= 3:
            self._send(SourceError(self.spec.name, f"{self.spec.display}: decode error: {_describe(e)}", fatal=False))
        if n >= _MAX_DECODE_ERRORS and not self.spec.live:
            raise RuntimeError(f"gave up after {n} decode errors")


def _is_timeout(e: Exception) -> bool:
    return isinstance(e, (av.error.ExitError, av.error.TimeoutError, TimeoutError))


def _describe(e: Exception) -> str:
    """One line naming the problem, without file paths or URLs FFmpeg may echo."""
    if isinstance(e, av.error.FFmpegError):
        return e.strerror or type(e).__name__
    return str(e).splitlines()[0] if str(e) else type(e).__name__
