"""Live behaviour without a network: drop-oldest feeds, real-time pacing, several sources with one broken."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streamclf.config import load_config
from streamclf.sources import SourceSpec
from streamclf.stages import Feed
from streamclf.types import Frame, SourceEnd
from tests.conftest import shared

import numpy as np


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


@pytest.mark.parametrize("text, url, live", [
    ("clip.mp4", "clip.mp4", False),
    ("cam1=rtsp://user:pw@10.0.0.5/stream", "rtsp://user:pw@10.0.0.5/stream", True),
    ("http://127.0.0.1:8000/live.ts", "http://127.0.0.1:8000/live.ts", True),
    ("/dev/video0", "/dev/video0", True),
    ("0", "/dev/video0", True),
])
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
    ends = {r["source"]: r for r in records if r.get("type") == "status" and r["state"] in ("ended", "error")
            and "stats" in r}
    assert set(ends) == {grid[0].name, "two", "bad"}
    assert ends["two"]["stats"]["windows"] == states["two"].windows > 0
    assert len({r["id"] for r in records}) == len(records)  # every record has its own id
