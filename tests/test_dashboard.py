"""The dashboard as a user reads it, rendered by rich into a string: a live feed shows uptime and latency
(never a progress bar, even when its server announces a duration and after a reconnect runs past it);
a file shows percent, ETA and throughput; what loads shows before any source has news."""

from __future__ import annotations

import io
import time

from rich.console import Console

from streamclf.dashboard import Dashboard
from streamclf.status import SourceState
from streamclf.types import SourceInfo, SourceStatus

BAR = "━"  # what rich draws a progress bar with


def render(states: dict[str, SourceState], notice: str = "") -> str:
    """The dashboard's table as text: its title and the rows of the sources (not the header's rules)."""
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    view = Dashboard(console)
    view.states, view.notice = states, notice
    console.print(view._render())
    lines = console.export_text().splitlines()
    return "\n".join(line for line in lines if "│" in line or "streamclf" in line)


def windows(st: SourceState, until: float, latency: float = 0.12) -> None:
    """What the router does for each window of the source up to ``until`` on its timeline."""
    while st.position < until:
        st.position += 0.5
        st.windows += 1
        st.latencies.append(latency)


def test_a_live_camera_shows_uptime_not_a_finished_file_after_a_reconnect() -> None:
    t = time.monotonic() - 80.0  # the source started 80 s before the render
    cam = SourceState("cam", live=True, stream=True, url="rtsp://127.0.0.1:8554/stream", started=t, since=t)
    cam.apply(SourceInfo("cam", 0.0, 60.0, True, True, live=True), now=t + 1)  # the server relays a 60-s file
    windows(cam, 58.0)
    cam.apply(SourceStatus("cam", "reconnecting", "stream ended; retrying in 0.4s"), now=t + 59)
    cam.apply(SourceStatus("cam", "connecting"), now=t + 59.4)
    down = render({"cam": cam})
    cam.apply(SourceInfo("cam", 62.0, 60.0, True, True, live=True), now=t + 62)
    windows(cam, 75.0)
    text = render({"cam": cam})
    assert BAR not in text and "%" not in text and "ETA" not in text and "/60.0" not in text
    assert "up 18s" in text and "latency 120/120 ms" in text and "real time" not in text
    assert "down 21s" in down and "connecting" in down and BAR not in down


def test_a_file_shows_percent_eta_and_throughput_not_latency() -> None:
    now = time.monotonic()
    clip = SourceState("clip.mp4", url="clip.mp4", started=now - 10, since=now - 10)
    clip.apply(SourceInfo("clip.mp4", 0.0, 60.0, True, True, live=False), now=now - 10)
    windows(clip, 20.0, latency=3.0)  # 20 s of media in 10 s: 2x real time, 40 s left: ETA 20 s
    text = render({"clip.mp4": clip})
    assert BAR in text and "33%" in text and "2.0x real time" in text
    assert "ETA 20s" in text or "ETA 19s" in text
    assert "latency" not in text and "reading" in text


def test_a_realtime_file_and_a_file_on_a_web_server_have_progress() -> None:
    """Only a feed (a stream that may drop) has uptime: a paced file and a file over HTTP read like one have an end."""
    paced = SourceState("a", live=True, stream=False)
    paced.apply(SourceInfo("a", 0.0, 10.0, True, True, live=True))
    served = SourceState("b", live=True, stream=True)
    served.apply(SourceInfo("b", 0.0, 10.0, True, True, live=False))  # the decoder reads it like a file
    for st in (paced, served):
        windows(st, 5.0)
        assert st.fraction == 0.5 and not st.feed


def test_the_dashboard_says_what_loads_before_any_source_has_news() -> None:
    assert "loading yamnet, efficientnet_lite0 ..." in render({}, notice="loading yamnet, efficientnet_lite0 ...")
