"""What the dashboard, the status log lines and the final summary know about each source.

``SourceState`` follows one source through its events (connecting, live,
stalled, reconnecting, ended) and counts its windows, drops and latencies;
``status_line`` turns a status record into the one log line a person reads.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .records import StatusRecord, WindowRecord
from .types import MODALITIES, SourceEnd, SourceError, SourceInfo, SourceStatus


@dataclass
class SourceState:
    """What the dashboard and the final summary know about one source."""

    name: str
    state: str = "connecting"
    live: bool = False  # it may drop: a live feed, or a file paced at real time
    stream: bool = False  # a camera or network stream (it may reconnect)
    url: str = ""  # where it reads from, as it may be shown (credentials removed)
    duration: float | None = None
    start: float | None = None  # timeline position when it first opened
    position: float = 0.0
    windows: int = 0
    errors: list[str] = field(default_factory=list)
    fatal: bool = False
    last: WindowRecord | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # decoder counters: reconnects, stalls, av_offset_ms ...
    dropped: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    opened: float | None = None  # time.monotonic() when it first opened
    since: float = field(default_factory=time.monotonic)  # when it last went live, or last stopped being live
    ups: int = 0  # how many times it went live (more than once: it reconnected)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1000))  # seconds, recent windows

    def latency_ms(self, q: float) -> float | None:
        return round(float(np.percentile(self.latencies, q)) * 1000.0, 1) if self.latencies else None

    @property
    def feed(self) -> bool:
        """A live feed: it has uptime and latency, not progress.

        A camera or an RTSP server relaying a file may announce a duration, but a feed runs past it
        after a reconnect (the timeline keeps the outage). A file, a file paced at real time, or a
        file on a web server read like one has progress and throughput.
        """
        return self.stream and self.live

    @property
    def fraction(self) -> float | None:
        """How much of a source with a known end is done (0-1); None for feeds and unknown lengths."""
        if self.feed or not self.duration or self.start is None:
            return None
        return min(max((self.position - self.start) / self.duration, 0.0), 1.0)

    def apply(self, item: SourceInfo | SourceError | SourceStatus | SourceEnd, now: float | None = None) -> float:
        """Take the state a source event says; returns how long the source had been live, or down, before it."""
        now = time.monotonic() if now is None else now
        before = self.state
        if isinstance(item, SourceInfo):
            self.state, self.duration, self.live = "live", item.duration, item.live
            self.ups += 1
            if self.opened is None:
                self.opened, self.start = now, item.start
        elif isinstance(item, SourceStatus):
            self.state = item.state
        elif isinstance(item, SourceError):
            self.errors.append(item.message)
            self.fatal |= item.fatal
            if item.fatal:
                self.state = "error"
        else:
            self.state = "error" if self.fatal else "ended"
        lasted = now - self.since
        if (before == "live") != (self.state == "live"):
            self.since = now
        return lasted

    def speed(self, now: float | None = None) -> float | None:
        """Media seconds classified per wall-clock second since it opened (x real time)."""
        if self.opened is None or self.start is None or not self.windows:
            return None
        return max(self.position - self.start, 0.0) / max((now or time.monotonic()) - self.opened, 1e-6)


def status_line(record: StatusRecord, state: SourceState, before: str, lasted: float) -> str | None:
    """A status record as one log line, or None when nothing changed (a heartbeat, the next try of a reconnect).

    ``before`` is the source's state before this record; ``lasted`` how long it had been live, or down.
    """
    name, now, told = record.source, record.state, record.extra
    message = told.get("message", "")
    if "fatal" in told:  # the message names the source by its URL or path
        return f"error: {message}" if told["fatal"] else f"[{name}] warning: {message}"
    if now == "connecting":
        if before == "reconnecting":
            return None
        return f"[{name}] {'connecting to' if state.stream else 'opening'} {state.url}"
    if now == "live":
        if "duration" not in told:  # a heartbeat with counters
            return None
        tracks = "+".join(m for m in MODALITIES if told[f"has_{m}"]) or "nothing"
        if not state.feed:
            length = f"{told['duration']:.1f} s of " if told["duration"] else ""
            return f"[{name}] reading {length}{tracks}"
        again = f" again after {lasted:.1f} s down" if state.ups > 1 else ""
        return f"[{name}] live{again} ({tracks})"
    if now in ("stalled", "reconnecting"):
        return f"[{name}] {now}: {message}" if message else f"[{name}] {now}"
    if now == "ended":
        stats = told.get("stats", {})
        counts = [f"{stats.get('windows', 0)} windows"]
        counts += [f"{stats[k]} {k}" for k in ("reconnects", "stalls") if stats.get(k)]
        dropped = sum(stats.get("dropped", {}).values())
        counts += [f"{dropped} dropped"] if dropped else []
        reused = {k: n for k, n in stats.get("reused", {}).items() if n}
        counts += [f"reused: {', '.join(f'{n} {k}'.replace('_', ' ') for k, n in reused.items())}"] if reused else []
        return f"[{name}] ended: {', '.join(counts)}"
    return None  # "error" at the end: its error line came first
