"""Live terminal view of records and source states (rich); plain lines when not a terminal."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .records import AlertRecord, Record, StatusRecord, TimingsRecord, WindowRecord


def _bars(entries: list[dict[str, Any]] | None, n: int = 3, width: int = 10) -> Text:
    if entries is None:
        return Text("absent", style="dim")
    out = Text()
    for e in entries[:n]:
        filled = round(e["score"] * width)
        out.append("█" * filled + "░" * (width - filled), style="green")
        out.append(f" {e['score']:.2f} {e['label'][:28]}\n")
    return out


def _mix(record: WindowRecord) -> Text:
    """Which modality drove each fused label: per-modality scores side by side."""
    out = Text()
    for per in list(record.modality.values())[:3]:
        parts = [f"{m[0].upper()}:{v:.2f}" if v is not None else f"{m[0].upper()}:-" for m, v in per.items()]
        out.append(" ".join(parts) + "\n", style="cyan")
    return out


def _span(seconds: float) -> str:
    """12s, 4m05s, 3h02m: an uptime at a glance."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def _health(st: Any, now: float) -> Text:
    """State, input rate, processed rate, drops, reconnects, and latency (feeds) or throughput (files)."""
    elapsed = max(now - st.started, 1e-6)
    frames = st.stats.get("frames", 0)
    dropped = sum(st.dropped.values())
    lines = [
        f"{'reading' if st.state == 'live' and not st.feed else st.state}",
        f"in {frames / elapsed:4.1f} fps  out {st.windows / elapsed:4.1f} win/s",
        f"dropped {dropped}  reconnects {st.stats.get('reconnects', 0)}",
    ]
    if st.feed:
        p50, p95 = st.latency_ms(50), st.latency_ms(95)
        if p50 is not None:
            lines.append(f"latency {p50:.0f}/{p95:.0f} ms")
    elif (speed := st.speed(now)) is not None:  # how long a window waited says little when a file waits for us
        lines.append(f"{speed:.1f}x real time")
    if st.stats.get("av_offset_ms") is not None:
        lines.append(f"a/v offset {st.stats['av_offset_ms']:+.0f} ms")
    style = {"live": "green", "ended": "dim", "error": "red"}.get(st.state, "yellow")
    return Text("\n".join(lines), style=style)


def _progress(st: Any, now: float) -> RenderableType:
    """A file: a bar, percent and ETA. A feed: uptime (or how long it has been down); it has no end."""
    fraction = st.fraction
    if fraction is not None:
        if st.state in ("ended", "error"):
            return Text(st.state)
        speed = st.speed(now)
        eta = f"  ETA {_span((1.0 - fraction) * st.duration / speed)}" if speed else ""
        return Group(ProgressBar(total=1.0, completed=fraction, width=16), Text(f"{fraction:.0%}{eta}"))
    if st.feed or st.stream:
        if st.state == "live":
            return Text(f"up {_span(now - st.since)}", style="green")
        if st.ups and st.state not in ("ended", "error"):
            return Text(f"down {_span(now - st.since)}  {st.state}", style="yellow")
        return Text(st.state)
    return Text(f"{st.position:.1f}s  {st.state}")


class Dashboard:
    """Call with each record/status dict; renders one row per source and recent alerts."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self.states: dict[str, Any] = {}
        self.started = time.monotonic()
        self.alerts: deque[AlertRecord] = deque(maxlen=8)
        self.notice = ""

    def note(self, text: str) -> None:
        """Show what the run is doing before any source has news (e.g. which models load)."""
        self.notice = text
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print(text, markup=False, highlight=False)

    def __enter__(self) -> Dashboard:
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(None, None, None)

    def __call__(self, record: Record, states: dict[str, Any]) -> None:
        self.states, self.notice = states, ""
        if isinstance(record, AlertRecord):
            self.alerts.append(record)
        if isinstance(record, TimingsRecord):
            return
        if self.live is not None:
            self.live.update(self._render())
        else:
            self._line(record)

    def _line(self, record: Record) -> None:
        if isinstance(record, StatusRecord):
            msg = record.extra.get("message", "")
            self.console.print(f"[{record.source}] {record.state} {msg}".rstrip(), markup=False)
            return
        if isinstance(record, AlertRecord):
            self.console.print(_alert_line(record), markup=False, highlight=False)
            return
        assert isinstance(record, WindowRecord)
        top = ", ".join(f"{e['label']} {e['score']:.2f}" for e in record.labels[:3])
        self.console.print(
            f"[{record.source}] {record.t_start:7.2f}-{record.t_end:7.2f}s  {top}",
            markup=False,
            highlight=False,
        )

    def _render(self) -> Group:
        now = time.monotonic()
        title = f"streamclf  ·  {now - self.started:5.1f}s" + (f"  ·  {self.notice}" if self.notice else "")
        table = Table(expand=True, title=title)
        for col in ("source", "health", "progress", "fused", "mix (A/V)", "audio", "video"):
            table.add_column(col)
        for st in self.states.values():
            rec: WindowRecord | None = st.last
            if rec is None:
                table.add_row(st.name, _health(st, now), _progress(st, now), "", "", "", "")
            else:
                table.add_row(
                    st.name,
                    _health(st, now),
                    _progress(st, now),
                    _bars(rec.labels),
                    _mix(rec),
                    _bars(rec.audio),
                    _bars(rec.video),
                )
        if not self.alerts:
            return Group(table)
        recent = Text("\n".join(_alert_line(a) for a in self.alerts), style="bold red")
        return Group(table, Panel(recent, title="recent alerts"))


def _alert_line(a: AlertRecord) -> str:
    end = f"{a.end:.1f}" if a.end is not None else "…"
    return f"ALERT [{a.source}] {a.label} {a.state} {a.start:.1f}-{end}s peak {a.peak:.2f} ({a.driver or '?'})"
