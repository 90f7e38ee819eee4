"""streamclf label: a folder of good and bad media, outputs per file, one error line per bad file,
the summary, WebVTT that parses, deterministic records, and resume after SIGKILL."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from streamclf.labeling.common import find_inputs
from streamclf.labeling.outputs import merge_segments, webvtt
from tests.conftest import shared

ROOT = Path(__file__).resolve().parents[1]
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


def _seconds(parts: tuple[str, ...]) -> float:
    h, m, s, ms = map(int, parts)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """A strict little WebVTT reader: header, then cues of id, timing line, payload."""
    blocks = text.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        ident, timing, payload = block.split("\n", 2)
        m = CUE.match(timing)
        assert ident.isdigit() and m, block
        start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
        assert end > start
        cues.append((start, end, payload))
    assert all(a[1] <= b[0] + 1e-6 for a, b in pairwise(cues))  # in order, not overlapping
    return cues


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    grid = sorted(shared("media/grid").glob("*.mpg"))
    root = tmp_path_factory.mktemp("archive")
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(grid[0], root / "a.mpg")
    shutil.copy(grid[1], root / "sub" / "b.mpg")
    shutil.copy(grid[2], root / "sub" / "deeper" / "c.mpg")
    data = grid[3].read_bytes()
    (root / "truncated.mpg").write_bytes(data[: len(data) // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "sub" / "notes.mp4").write_text("meeting notes, not a video\n")
    (root / "readme.txt").write_text("not media, not picked up\n")
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(grid[4]), "-vn", "-c:a", "pcm_s16le", str(root / "voice.wav")], check=True
    )
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(grid[5]), "-an", "-c:v", "copy", str(root / "silent.mpg")], check=True
    )
    return root


GOOD = ["a.mpg", "silent.mpg", "sub/b.mpg", "sub/deeper/c.mpg", "truncated.mpg", "voice.wav"]
BAD = ["empty.mp4", "sub/notes.mp4"]


def _label(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamclf", "label", *args, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "summary.csv", "summary.json")
    }


@pytest.fixture(scope="module")
def reference(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("out")
    return out, _label([str(archive), "--out", str(out), "--plots"])


def test_inputs_mirror_the_tree_and_filter_by_extension(archive: Path) -> None:
    rels = [j.rel for j in find_inputs([str(archive)])]
    assert sorted(rels) == sorted(GOOD + BAD)
    assert [j.rel for j in find_inputs([str(archive)], exclude=["*.wav", "empty*"])] == [
        r for r in rels if r not in ("voice.wav", "empty.mp4")
    ]
    assert [j.rel for j in find_inputs([str(archive / "sub" / "*.mpg")])] == ["b.mpg"]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        find_inputs([str(archive / "nothing-here")])


def test_every_good_file_labeled_every_bad_file_one_line(archive: Path, reference) -> None:
    out, proc = reference
    assert proc.returncode == 1  # not every file succeeded
    errors = [line for line in proc.stderr.splitlines() if line.startswith("streamclf: error:")]
    assert len(errors) == len(BAD)
    for rel in BAD:
        assert sum(str(archive / rel) in line for line in errors) == 1
    for rel in GOOD:
        records = [json.loads(line) for line in (out / f"{rel}.jsonl").read_text().splitlines()]
        assert records and all(r["source"] == rel and r["labels"] for r in records)
        assert (out / f"{rel}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        seg = json.loads((out / f"{rel}.segments.json").read_text())
        cues = parse_vtt((out / f"{rel}.vtt").read_text())
        assert len(cues) == len([s for s in seg["segments"] if s["end"] > s["start"]])
        if rel == "voice.wav":
            assert all(r["video"] is None and r["audio"] for r in records)
        if rel == "silent.mpg":
            assert all(r["audio"] is None and r["video"] for r in records)
    speech = json.loads((out / "a.mpg.segments.json").read_text())["segments"]
    assert speech and speech[0]["label"] == "speech"  # GRID clips are a person speaking
    for rel in BAD:
        assert not list(out.glob(f"{rel}*"))
    assert not (out / ".partial").exists()
    with open(out / "summary.csv", newline="") as f:
        rows = {r["output"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(GOOD + BAD)
    assert all(rows[r]["status"] == "ok" for r in GOOD) and all(rows[r]["status"] == "error" for r in BAD)
    assert "speech" in rows["a.mpg"]["top_labels"] and rows["empty.mp4"]["error"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ok"] == len(GOOD) and manifest["error"] == len(BAD)


def test_resume_after_sigkill_labels_every_file_exactly_once(archive: Path, reference, tmp_path: Path) -> None:
    ref_out, _ = reference
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "streamclf",
        "label",
        str(archive),
        "--out",
        str(out),
        "--plots",
        "--no-progress",
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def done():
        return {p.relative_to(out).as_posix() for p in out.rglob("*.segments.json") if ".partial" not in p.parts}

    deadline = time.monotonic() + 180
    while not done() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done_before = done()
    assert 0 < len(done_before) < len(GOOD), "the kill should land after the first file and before the last"
    again = _label([str(archive), "--out", str(out), "--plots"])
    assert again.returncode == 1
    assert _outputs(out) == _outputs(ref_out)  # same files, byte for byte: nothing partial, nothing twice
    with open(out / "summary.csv", newline="") as f:
        resumed = {r["output"] for r in csv.DictReader(f) if r["resumed"] == "True"}
    assert resumed == {rel.removesuffix(".segments.json") for rel in done_before}
    forced = _label([str(archive / "a.mpg"), "--out", str(tmp_path / "forced"), "--force"])
    assert forced.returncode == 0
    assert (tmp_path / "forced" / "a.mpg.jsonl").read_bytes() == (ref_out / "a.mpg.jsonl").read_bytes()


def test_segments_tile_the_timeline_and_vtt_round_trips() -> None:
    def rec(t, label, score):
        return {"t_start": t, "t_end": t + 2.0, "labels": [{"label": label, "score": score}]}

    records = [
        rec(0.0, "dog", 0.9),
        rec(0.5, "dog", 0.7),
        rec(1.0, "speech", 0.8),
        rec(1.5, "speech", 0.1),
        rec(2.0, "speech", 0.6),
    ]
    segs = merge_segments(records, threshold=0.3, hop=0.5, duration=4.0)
    assert [(s["label"], s["start"], s["end"], s["peak"]) for s in segs] == [
        ("dog", 0.0, 1.75, 0.9),
        ("speech", 1.75, 2.25, 0.8),
        ("speech", 2.75, 4.0, 0.6),
    ]
    assert [c[2] for c in parse_vtt(webvtt(segs))] == ["dog (0.90)", "speech (0.80)", "speech (0.60)"]


def test_clip_mode_iterator_gives_the_batch_records(archive: Path, reference) -> None:
    import streamclf

    out, _ = reference
    expected = [json.loads(line) for line in (out / "a.mpg.jsonl").read_text().splitlines()]
    got = list(streamclf.iter_records(archive / "a.mpg"))
    assert got == [{k: v for k, v in r.items() if k != "id"} for r in expected]
    with pytest.raises(ValueError, match="notes.mp4: cannot open"):
        list(streamclf.iter_records(archive / "sub" / "notes.mp4"))
