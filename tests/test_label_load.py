"""`label` under load and from a plain script: a slow consumer never cuts a file short (or fails it),
a cut file is "partial" and never "ok", and the README's API example runs as a script without a main guard."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from streamclf.config import SourcesConfig, load_config
from streamclf.sources import Decoder, SourceSpec
from streamclf.stages import Feed
from streamclf.types import AudioChunk, Frame, SourceEnd, SourceError
from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[1]


def _drain(url: str, pause: float) -> list[Any]:
    """Every item a file decoder delivers through a 4-item feed to a consumer that pauses on items 5 and 6."""
    feed = Feed(4, droppable=lambda item: False)
    decoder = Decoder(SourceSpec.parse(url), feed, settings=SourcesConfig(stall_timeout=0.3))
    decoder.start()
    items: list[Any] = []
    while True:
        items.append(feed.get(timeout=30))
        if len(items) in (5, 6):
            time.sleep(pause)  # busy elsewhere for twice the stall timeout: the decoder waits on a full feed
        if isinstance(items[-1], SourceEnd):
            break
    decoder.join(5)
    return items


def _data(items: list[Any]) -> list[tuple[str, float, bytes]]:
    return [
        (type(i).__name__, i.pts, (i.image if isinstance(i, Frame) else i.samples).tobytes())
        for i in items
        if isinstance(i, (Frame, AudioChunk))
    ]


@pytest.fixture
def web_clip() -> Iterator[str]:
    """The clip on a web server on 127.0.0.1 (a file with a duration there: it waits for its consumer too)."""
    clip = shared("media/grid/bbaf2n.mpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("where", ["disk", "web"])
def test_a_file_decoder_waiting_for_a_slow_consumer_is_not_stalled(where: str, request: pytest.FixtureRequest) -> None:
    clip = str(shared("media/grid/bbaf2n.mpg")) if where == "disk" else request.getfixturevalue("web_clip")
    fast, slow = _drain(clip, 0.0), _drain(clip, 0.6)
    assert [i.message for i in slow if isinstance(i, SourceError)] == []
    assert not slow[-1].stats.get("ended_early")
    assert _data(slow) == _data(fast) and len(_data(fast)) > 20


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 20-s audio+video excerpts of the shared Big Buck Bunny clip (stream copies, real media)."""
    ffmpeg = pytest.importorskip("shutil").which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    bbb = shared("media/bbb_360p_60s.mp4")
    root = tmp_path_factory.mktemp("clips")
    for name, start in (("one.mp4", 0), ("two.mp4", 30)):
        subprocess.run(
            [ffmpeg, "-v", "error", "-ss", str(start), "-i", str(bbb), "-t", "20", "-c", "copy", str(root / name)],
            check=True,
        )
    return root


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(out.iterdir())
        if p.is_file() and p.suffix != ".csv" and p.name not in ("manifest.json", "summary.json")
    }


def test_label_output_does_not_depend_on_a_slow_consumer(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main process stalls 8 s on its first chunk (a busy machine): the decoders wait longer than
    stall_timeout to hand over windows, and the other file's decoder waits longer than file_timeout.
    file_timeout is 5 s, not less: a reference run on a loaded 2-core machine must not trip it."""
    from streamclf.classifier import Classifier
    from streamclf.labeling import label_files

    config = load_config(**{"sources.stall_timeout": 1, "sources.file_timeout": 5})
    ref = label_files([str(clips)], tmp_path / "ref", config, workers=2, progress=False)
    assert [r.status for r in ref] == ["ok", "ok"]
    process, calls = Classifier.score, []

    def starved(self: Classifier, windows: list[Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(windows))
        if len(calls) == 1:
            time.sleep(8.0)
        return process(self, windows, *args, **kwargs)

    monkeypatch.setattr(Classifier, "score", starved)
    errors: list[str] = []
    rows = label_files([str(clips)], tmp_path / "slow", config, workers=2, progress=False, on_error=errors.append)
    assert errors == [] and [(r.status, r.windows) for r in rows] == [(r.status, r.windows) for r in ref]
    assert _outputs(tmp_path / "slow") == _outputs(tmp_path / "ref")  # complete and byte for byte
    assert len(calls) > 2


def test_a_cut_file_is_partial_never_ok(tmp_path: Path) -> None:
    """The first half of an MP4 whose index promises 60 s: labeled up to the cut, reported partial, exit 1."""
    data = shared("media/bbb_360p_60s.mp4").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "streamclf", "label", str(tmp_path / "in"), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 1
    assert re.search(r"cut\.mp4: the media ends at 3\d\.\ds of the 60\.1s the file declares", proc.stderr)
    assert "(1 only partly: cut or damaged)" in proc.stderr
    with open(out / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "partial" and "ends at" in row["error"] and int(row["windows"]) > 50
    seg = json.loads((out / "cut.mp4.segments.json").read_text())
    assert seg["status"] == "partial" and seg["segments"]
    assert json.loads((out / "manifest.json").read_text())["partial"] == 1
    again = subprocess.run(
        [sys.executable, "-m", "streamclf", "label", str(tmp_path / "in"), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    assert again.returncode == 1  # resumed, and still not ok
    assert json.loads((out / "summary.json").read_text())[0]["status"] == "partial"


def test_the_readme_api_example_runs_as_a_plain_script(tmp_path: Path) -> None:
    """The API example of docs/batch.md (the README shows the same), saved as it is (no main guard), on two
    real clips in ./archive and ./clip.mp4."""
    grid = sorted(shared("media/grid").glob("*.mpg"))
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "batch.md").read_text(), re.S)
    assert code in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert "__main__" not in code
    (tmp_path / "archive").mkdir()
    for clip in grid[:2]:
        (tmp_path / "archive" / clip.name).write_bytes(clip.read_bytes())
    (tmp_path / "clip.mp4").write_bytes(grid[2].read_bytes())
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr
    assert len(proc.stdout.splitlines()) == 3  # the 3-s clip's windows, one line each
    with open(tmp_path / "labels" / "summary.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok"]
    assert all((tmp_path / "labels" / f"{c.name}.png").exists() for c in grid[:2])


def test_snapshot_pictures_are_kept_once_a_second_not_per_frame() -> None:
    """With alerts on, the decoder keeps the source's full-size picture for snapshots, but on at most one
    frame a second: a copy on every sampled frame would ride through the queues (gigabytes at 1080p)."""
    feed = Feed(10_000, droppable=lambda item: False)
    decoder = Decoder(SourceSpec.parse(str(shared("media/bbb_720p_30s.mp4"))), feed, fps=4.0, full_frames=True)
    decoder.start()
    frames = []
    while not isinstance(item := feed.get(timeout=60), SourceEnd):
        if isinstance(item, Frame):
            frames.append(item)
    kept = [f for f in frames if f.full is not None]
    assert len(frames) >= 100 and 25 <= len(kept) <= 31  # 30 s of video: about one a second
    assert all(b.pts - a.pts >= 1.0 - 1e-6 for a, b in pairwise(kept))
    assert kept[0].full.shape == (720, 1280, 3) and frames[0].image.shape[0] < 720
