"""Live behaviour without a network: drop-oldest feeds, real-time pacing, several sources with one broken."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from streamclf.config import load_config
from streamclf.sources import SourceSpec
from streamclf.stages import Feed
from streamclf.types import Frame, SourceEnd
from tests.conftest import shared


def _frame(source: str, t: float) -> Frame:
    return Frame(source, t, np.zeros((2, 2, 3), np.uint8))


def test_feed_drops_oldest_live_item_and_counts_it() -> None:
    feed = Feed(3, droppable=lambda it: isinstance(it, Frame) and it.source == "cam")
    feed.put(SourceEnd("file"))  # control items are never dropped
    feed.put_latest(_frame("cam", 0.0))
    feed.put_latest(_frame("cam", 1.0))
    feed.put_latest(_frame("cam", 2.0))  # full: drops the frame at 0.0
    feed.put_latest(_frame("cam", 3.0))  # drops 1.0
    items = [feed.get_nowait() for _ in range(feed.qsize())]
    assert isinstance(items[0], SourceEnd)
    assert [i.pts for i in items[1:]] == [2.0, 3.0]
    assert feed.dropped[("cam", "frame")] == 2


def test_feed_drops_the_new_item_when_nothing_queued_may_go() -> None:
    feed = Feed(1, droppable=lambda it: False)
    feed.put(SourceEnd("file"))
    feed.put_latest(_frame("cam", 0.0))  # must not block
    assert feed.qsize() == 1 and feed.dropped[("cam", "frame")] == 1


def test_the_windows_a_live_source_flushes_at_its_end_wait_instead_of_dropping() -> None:
    """Stopping many cameras at once flushes every source's last windows together: that is the drain."""
    from streamclf.stages import STOP, Windowing
    from streamclf.types import AudioChunk, SourceInfo, Window
    from streamclf.windows import Windower, WindowSpec

    spec = WindowSpec(length=1.0, hop=0.25)
    items: list = [SourceInfo("cam", 0.0, None, has_audio=True, has_video=True, live=True)]
    for q in range(12):  # the sound lags the picture by a second, so the last windows wait for the end
        items.append(_frame("cam", q / 4))
        if q >= 4:
            items.append(AudioChunk("cam", q / 4 - 1.0, np.zeros(4000, np.float32)))
    reference = Windower("cam", spec)
    regular = [w for it in items for w in reference.push(it)]
    tail = [(w.t_start, w.t_end) for w in reference.push(SourceEnd("cam"))]
    assert regular and len(tail) >= 2
    inbox: Feed = Feed(0, droppable=lambda it: False)
    for it in [*items, SourceEnd("cam")]:
        inbox.put(it)
    outbox = Feed(1, droppable=lambda it: isinstance(it, Window))
    windowing = Windowing(spec, inbox, outbox, sources=1)
    windowing.start()
    got = []
    while (item := outbox.get()) is not STOP:  # a worker slower than the windower: the feed is full throughout
        got.append(item)
        time.sleep(0.02)
    windowing.join(10)
    arrived = [(w.t_start, w.t_end) for w in got if isinstance(w, Window)]
    assert all(w in arrived for w in tail), (tail, arrived)
    assert 0 < outbox.dropped[("cam", "window")] <= len(regular)  # live windows did drop, the drained ones did not


@pytest.mark.parametrize(
    "text, url, live",
    [
        ("clip.mp4", "clip.mp4", False),
        ("cam1=rtsp://user:pw@10.0.0.5/stream", "rtsp://user:pw@10.0.0.5/stream", True),
        ("http://127.0.0.1:8000/live.ts", "http://127.0.0.1:8000/live.ts", True),
        ("/dev/video0", "/dev/video0", True),
        ("0", "/dev/video0", True),
    ],
)
def test_source_grammar(text: str, url: str, live: bool) -> None:
    spec = SourceSpec.parse(text)
    assert spec.url == url and spec.live is live
    assert "pw" not in spec.display and "pw" not in spec.name


def test_realtime_paces_a_file_like_a_live_feed(tmp_path: Path) -> None:
    import streamclf

    clip = shared("media/grid/bbaf2n.mpg")
    config = load_config(**{"sources.realtime": True})
    out = tmp_path / "r.jsonl"
    t0 = time.monotonic()
    states = streamclf.run([str(clip)], out=out, config=config)
    elapsed = time.monotonic() - t0
    assert elapsed >= 2.7  # a 3 s clip cannot finish before 3 s of media time has passed
    assert states["bbaf2n.mpg"].live and states["bbaf2n.mpg"].windows > 0


def test_several_sources_one_broken(tmp_path: Path) -> None:
    import streamclf

    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    grid = sorted(shared("media/grid").glob("*.mpg"))[:2]
    out = tmp_path / "r.jsonl"
    states = streamclf.run([str(grid[0]), f"bad={bad}", f"two={grid[1]}"], out=out)
    assert states["bad"].fatal and "cannot open" in states["bad"].errors[-1]
    assert not states[grid[0].name].fatal and not states["two"].fatal
    records = [json.loads(line) for line in out.read_text().splitlines()]
    windows = [r for r in records if "type" not in r]
    assert {r["source"] for r in windows} == {grid[0].name, "two"}
    ends = {
        r["source"]: r
        for r in records
        if r.get("type") == "status" and r["state"] in ("ended", "error") and "stats" in r
    }
    assert set(ends) == {grid[0].name, "two", "bad"}
    assert ends["two"]["stats"]["windows"] == states["two"].windows > 0
    assert len({r["id"] for r in records}) == len(records)  # every record has its own id


def _start_cli(tmp_path: Path, out: Path) -> subprocess.Popen[str]:
    clip = shared("media/bbb_360p_60s.mp4")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamclf",
            "run",
            f"cam={clip}",
            "--realtime",
            "--no-dashboard",
            "--out",
            str(out),
            "--fps",
            "2",
            "--hop",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def _wait_for_windows(out: Path, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and sum('"type"' not in line for line in out.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"no {n} windows within {timeout}s")


@pytest.mark.timeout(150)
def test_sigterm_drains_and_flushes_a_second_one_exits_at_once(tmp_path: Path) -> None:
    import signal

    out = tmp_path / "r.jsonl"
    proc = _start_cli(tmp_path, out)
    _wait_for_windows(out, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopping" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line is whole
    assert records[-1]["type"] == "timings"
    assert [r["state"] for r in records if r.get("type") == "status"][-1] == "ended"

    out2 = tmp_path / "r2.jsonl"
    proc = _start_cli(tmp_path, out2)
    _wait_for_windows(out2, 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and "stopping" not in line:  # wait until the first one was handled: drain has begun
        line = proc.stderr.readline()
    assert line, "the process ended without starting to drain"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM


def test_a_live_feed_drops_oldest_windows_when_the_worker_falls_behind() -> None:
    from streamclf.classifier import Classifier
    from streamclf.pipeline import Pipeline

    class SlowClassifier(Classifier):
        def score(self, windows, memory, timings=None, queued=0):  # a worker slower than the feed
            time.sleep(0.4)
            return super().score(windows, memory, timings, queued)

    config = load_config(
        **{"sources.realtime": True, "queue_size": 3, "batch_windows": 1, "window.length": 1.0, "window.hop": 0.25}
    )
    pipeline = Pipeline(config, classifier=SlowClassifier(config))
    t0 = time.monotonic()
    states = pipeline.run([SourceSpec.parse(str(shared("media/grid/bbaf2n.mpg")))])
    elapsed = time.monotonic() - t0
    st = states["bbaf2n.mpg"]
    assert st.dropped["windows"] > 0 and st.windows > 0
    assert st.windows + st.dropped["windows"] >= 9  # ~3 s / 0.25 s hop windows existed; each was used or counted
    # The decoder never waited for the worker: the run lasts the clip plus what was still queued.
    assert elapsed < 3.0 + (config.queue_size + 2) * 0.4 + 3.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamclf", "run", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )


@pytest.mark.timeout(240)
def test_without_dashboard_a_down_camera_says_each_state_change_and_quiet_silences_them(tmp_path: Path) -> None:
    """A camera that is down is not silent: what loads, then connecting, each reconnect, giving up; one line each,
    no credentials. --quiet leaves only the error."""
    from tests.servers import free_port

    config = tmp_path / "c.yaml"
    config.write_text("sources: {max_reconnects: 2, backoff_initial: 0.1}\n")
    url = f"rtsp://user:secret@127.0.0.1:{free_port()}/stream"
    done = _cli(f"cam={url}", "--no-dashboard", "--config", str(config))
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[0] == "streamclf: loading yamnet, efficientnet_lite0 ..."
    assert lines[1].startswith("streamclf: ready in ") and lines[1].endswith("s")
    assert lines[2].startswith("streamclf: [cam] connecting to rtsp://127.0.0.1:")
    assert all(line.startswith("streamclf: [cam] reconnecting: cannot open: ") for line in lines[3:5])
    assert "retrying in" in lines[3]
    assert lines[5].startswith("streamclf: error: rtsp://127.0.0.1:") and "gave up after 2 reconnects" in lines[5]
    assert len(lines) == 6 and "secret" not in done.stderr and done.stdout == ""  # the error once, when it happened

    quiet = _cli(f"cam={url}", "--no-dashboard", "--quiet", "--config", str(config))
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [lines[5]]  # the error and nothing else


def test_status_lines_of_a_file_go_to_the_streamclf_logger(caplog: pytest.LogCaptureFixture) -> None:
    """Opening, reading, the end (with counts), through the logger only the CLI configures."""
    import logging

    import streamclf

    clip = shared("media/grid/bbaf2n.mpg")
    with caplog.at_level(logging.INFO, logger="streamclf"):
        states = streamclf.run([str(clip)])
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streamclf")]
    n = states["bbaf2n.mpg"].windows
    assert lines[0] == "loading yamnet, efficientnet_lite0 ..." and lines[1].startswith("ready in ")
    assert lines[2:] == [
        f"[bbaf2n.mpg] opening {clip}",
        "[bbaf2n.mpg] reading 3.0 s of audio+video",
        f"[bbaf2n.mpg] ended: {n} windows",
    ]
