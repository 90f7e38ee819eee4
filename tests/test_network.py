"""Network sources against real local servers: RTSP with a server crash and restart, HTTP MPEG-TS,
a server that accepts and says nothing, one that sends garbage, a refused connection and a name
that cannot resolve. All on 127.0.0.1 (the name fails in the resolver itself), all bounded."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamclf.config import load_config
from streamclf.pipeline import Pipeline
from streamclf.records import Record
from streamclf.sources import SourceSpec
from tests.conftest import shared
from tests.servers import HttpServer, RtspServer, black_hole_server, free_port, garbage_server, make_ts
from tests.test_dashboard import render

pytestmark = pytest.mark.timeout(120)


class Watch:
    """Collects a pipeline's records from its thread and lets the test wait for conditions."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, record: Record, states: object) -> None:
        with self.cond:
            self.records.append({**record.to_dict(), "_at": time.monotonic()})
            self.cond.notify_all()

    def until(self, pred: Any, timeout: float) -> bool:
        """Whether ``pred(records)`` came true within ``timeout`` seconds."""
        with self.cond:
            return self.cond.wait_for(lambda: pred(self.records), timeout)

    def wait(self, what: str, pred: Any, timeout: float) -> list[dict[str, Any]]:
        if not self.until(pred, timeout):
            states = [f"{r['state']} {r.get('message', '')}".strip() for r in self.records if r.get("type") == "status"]
            pytest.fail(f"timed out waiting for {what}; status so far: {states}")
        with self.cond:
            return list(self.records)


def _start(config: Any, specs: list[SourceSpec], watch: Watch) -> tuple[Pipeline, threading.Thread]:
    pipeline = Pipeline(config, on_event=watch)
    thread = threading.Thread(target=pipeline.run, args=(specs,), daemon=True)
    thread.start()
    return pipeline, thread


def _windows(records: list[dict[str, Any]], both: bool = False) -> list[dict[str, Any]]:
    out = [r for r in records if "type" not in r]
    return [r for r in out if r["audio"] is not None and r["video"] is not None] if both else out


LIVE = {"window.fps": 2.0, "window.hop": 1.0, "sources.stall_timeout": 3.0, "sources.open_timeout": 3.0}


def test_rtsp_survives_a_server_crash(capsys: pytest.CaptureFixture[str]) -> None:
    media = shared("media/bbb_360p_60s.mp4")
    with RtspServer(media) as server:
        watch = Watch()
        pipeline, thread = _start(load_config(**LIVE), [SourceSpec.parse(f"cam={server.url}")], watch)
        try:
            watch.wait("3 windows with both modalities", lambda rs: len(_windows(rs, both=True)) >= 3, 60)
            before = _windows(watch.records)[-1]["t_end"]
            server.kill()
            watch.wait("the watchdog to notice", lambda rs: any(r.get("state") == "reconnecting" for r in rs), 30)
            server.restart()
            restarted = time.monotonic()

            def lives(rs):
                return [r for r in rs if r.get("state") == "live"]

            records = watch.wait("live again", lambda rs: len(lives(rs)) >= 2, 30)
            recovered = lives(records)[1]["_at"] - restarted
            records = watch.wait(
                "2 windows after the reconnect",
                lambda rs: len([w for w in _windows(rs, both=True) if w["t_start"] >= before]) >= 2,
                60,
            )
            view = render({"cam": pipeline.states["cam"]})  # the server announces 60 s: still a feed, not a file
            assert "up " in view and "latency" in view and "%" not in view and "ETA" not in view
        finally:
            pipeline.stop()
            thread.join(30)
        assert not thread.is_alive(), "the pipeline did not drain after stop()"
    states = [r["state"] for r in watch.records if r.get("type") == "status"]
    assert states[:2] == ["connecting", "live"] and states[-1] == "ended"
    assert "reconnecting" in states and states.count("live") >= 2
    starts = [w["t_start"] for w in _windows(watch.records)]
    assert starts == sorted(starts), "the timeline must keep going across the reconnect"
    end = [r for r in watch.records if r.get("state") == "ended"][-1]
    assert end["stats"]["reconnects"] >= 1 and end["stats"]["connects"] >= 2
    with capsys.disabled():
        print(f"\nRTSP reconnect: live again {recovered:.2f}s after the server came back (default backoff)")


def test_http_mpegts_stream(tmp_path: Path) -> None:
    ts = make_ts(shared("media/grid/bbaf2n.mpg"), tmp_path / "clip.ts")
    with HttpServer(tmp_path) as http:
        watch = Watch()
        url = http.url("clip.ts")
        pipeline, thread = _start(load_config(), [SourceSpec.parse(url)], watch)
        thread.join(60)
    assert not thread.is_alive()
    states = [r["state"] for r in watch.records if r.get("type") == "status"]
    assert states == ["connecting", "live", "ended"]  # the stream has a known duration: its end is the end
    windows = _windows(watch.records, both=True)
    assert windows and windows[-1]["t_end"] >= 2.5
    assert not pipeline.states[url].live  # a file on a web server is read like a file: nothing dropped
    assert ts.stat().st_size > 0


def test_silent_server_and_refused_connection_give_up_with_one_line() -> None:
    config = load_config(
        **{
            **LIVE,
            "sources.max_reconnects": 1,
            "sources.stall_timeout": 1.0,
            "sources.open_timeout": 1.0,
            "sources.backoff_initial": 0.1,
        }
    )
    with black_hole_server() as port:
        watch = Watch()
        specs = [
            SourceSpec.parse(f"silent=rtsp://user:secret@127.0.0.1:{port}/x"),
            SourceSpec.parse(f"refused=rtsp://127.0.0.1:{free_port()}/x"),
        ]
        t0 = time.monotonic()
        pipeline, thread = _start(config, specs, watch)
        thread.join(30)
        elapsed = time.monotonic() - t0
    assert not thread.is_alive() and elapsed < 20
    for name in ("silent", "refused"):
        st = pipeline.states[name]
        assert st.fatal and st.state == "error"
        assert "gave up after 1 reconnects" in st.errors[-1] and "\n" not in st.errors[-1]
    text = repr(watch.records)
    assert "secret" not in text  # credentials never reach records


UNRESOLVABLE = "a" * 64 + ".example"  # a DNS label over 63 characters: the resolver refuses it without a query


def test_garbage_and_unresolvable_sources_leave_the_others_alone() -> None:
    clip = shared("media/grid/bbaf2n.mpg")
    config = load_config(
        **{**LIVE, "sources.max_reconnects": 2, "sources.backoff_initial": 0.1, "sources.realtime": True}
    )
    with garbage_server() as port:
        watch = Watch()
        specs = [
            SourceSpec.parse(f"good={clip}"),
            SourceSpec.parse(f"garbage=http://127.0.0.1:{port}/live.ts"),
            SourceSpec.parse(f"nodns=rtsp://user:secret@{UNRESOLVABLE}:554/x"),
        ]
        pipeline, thread = _start(config, specs, watch)
        thread.join(60)
    assert not thread.is_alive()
    for name in ("garbage", "nodns"):
        st = pipeline.states[name]
        assert st.fatal and "gave up after 2 reconnects" in st.errors[-1] and "\n" not in st.errors[-1]
    good = pipeline.states["good"]
    assert not good.fatal and sum(good.dropped.values()) == 0
    windows = [r for r in _windows(watch.records) if r["source"] == "good"]
    assert windows and windows[-1]["t_end"] >= 2.5  # the whole 3 s clip, at real time, beside the failures
    assert "secret" not in repr(watch.records)


def announced_wait(message: str) -> float:
    """The wait a "reconnecting" status announces ("...; retrying in 2.9s")."""
    return float(message.rpartition("retrying in ")[2].rstrip("s"))


def test_default_backoff_retries_a_down_camera_at_least_every_5s() -> None:
    """A camera that is down is retried often enough that it is back within seconds of its server.

    The defaults, against a refused port for 16 s: every announced wait is at most 5 s (it grew to
    8-16 s, then 30 s, when backoff_max was 30), and the tries do not stop."""
    from streamclf.config import SourcesConfig
    from streamclf.sources import Decoder
    from streamclf.stages import Feed
    from streamclf.types import SourceStatus

    feed = Feed(1000, droppable=lambda item: False)
    decoder = Decoder(SourceSpec.parse(f"cam=rtsp://127.0.0.1:{free_port()}/x"), feed, settings=SourcesConfig())
    decoder.start()
    time.sleep(16.0)
    decoder.stop()
    decoder.join(10)
    waits = [
        announced_wait(item.message)
        for item in list(feed.queue)
        if isinstance(item, SourceStatus) and item.state == "reconnecting"
    ]
    assert len(waits) >= 5 and max(waits) <= 5.0, waits


class HttpFeed:
    """A live MPEG-TS feed over HTTP at real-time pace, as a camera serves one: FFmpeg's own HTTP server
    (one client, no length), killed for an outage and restarted on the same port."""

    def __init__(self, media: Path, ffmpeg: str) -> None:
        self.media, self.ffmpeg, self.port = media, ffmpeg, free_port()
        self.url = f"http://127.0.0.1:{self.port}/live.ts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.ffmpeg,
                "-v",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(self.media),
                "-c",
                "copy",
                "-f",
                "mpegts",
                "-listen",
                "1",
                self.url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    restart = start


def outage(config: Any, server: Any, url: str, down: float = 10.0) -> dict[str, float]:
    """Take a live feed's server down for ``down`` seconds; how long after it is back the source is live
    again (``live_s``) and gives its first window (``window_s``), and the longest announced retry wait."""
    watch = Watch()
    pipeline, thread = _start(config, [SourceSpec.parse(f"cam={url}")], watch)
    lives = lambda rs: [r for r in rs if r.get("state") == "live" and "duration" in r]  # noqa: E731
    try:
        watch.wait("2 windows", lambda rs: len(_windows(rs)) >= 2, 60)
        server.kill()
        killed = time.monotonic()
        watch.wait("the watchdog to notice", lambda rs: any(r.get("state") == "reconnecting" for r in rs), 30)
        time.sleep(max(0.0, killed + down - time.monotonic()))
        server.restart()
        back = time.monotonic()
        records = watch.wait("live again", lambda rs: len(lives(rs)) >= 2, 60)
        live = lives(records)[1]["_at"] - back
        records = watch.wait("a window after the outage", lambda rs: any(r["_at"] > back for r in _windows(rs)), 60)
        window = next(r for r in _windows(records) if r["_at"] > back)["_at"] - back
    finally:
        pipeline.stop()
        thread.join(30)
    waits = [announced_wait(r["message"]) for r in watch.records if r.get("state") == "reconnecting"]
    return {"live_s": round(live, 2), "window_s": round(window, 2), "max_wait_s": max(waits)}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["rtsp", "http"])
def test_a_10s_outage_costs_seconds_not_tens_with_the_defaults(
    kind: str, ffmpeg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's reconnect figures: a feed whose server is down for 10 s, with the default backoff."""
    media = shared("media/bbb_360p_60s.mp4")
    config = load_config(**{"window.fps": 2.0, "window.hop": 1.0})  # the sources settings are the defaults
    runs = []
    for _ in range(3):
        if kind == "rtsp":
            with RtspServer(media, loop=True) as server:
                runs.append(outage(config, server, server.url))
        else:
            feed = HttpFeed(media, ffmpeg)
            feed.start()
            try:
                runs.append(outage(config, feed, feed.url))
            finally:
                feed.kill()
    with capsys.disabled():
        print(
            f"\n{kind} 10 s outage, defaults (backoff {config.sources.backoff_initial:g}-"
            f"{config.sources.backoff_max:g} s): live again after "
            + ", ".join(f"{r['live_s']:.1f}" for r in runs)
            + " s; first window after "
            + ", ".join(f"{r['window_s']:.1f}" for r in runs)
            + f" s; longest wait {max(r['max_wait_s'] for r in runs):.1f} s"
        )
    assert max(r["live_s"] for r in runs) <= 8.0  # a camera user expects seconds (it took up to 30 s + 1 s to open)
