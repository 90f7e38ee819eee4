"""The CLI end to end on real media: full clips, one-modality files, and files that are not media."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import shared

WINDOW_FIELDS = {"source", "t_start", "t_end", "labels", "audio", "video", "modality", "latency_ms"}


def streamclf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamclf", *args], capture_output=True, text=True,
                          timeout=timeout)


def window_records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if "type" not in r]


def check_labels(entries: list[dict]) -> None:
    assert entries and all(set(e) == {"label", "score"} for e in entries)
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_cli_on_pancake_clip(tmp_path):
    clip = shared("media/flipping_a_pancake.mkv")
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(clip), "--no-dashboard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    status = [r for r in records if r.get("type") == "status"]
    windows = [r for r in records if "type" not in r]
    assert [s["state"] for s in status] == ["connecting", "live", "ended"]
    assert len(windows) >= 16  # a 10 s clip, 2 s windows every 0.5 s
    for r in windows:
        assert WINDOW_FIELDS <= set(r)
        assert r["source"] == clip.name and r["t_end"] - r["t_start"] == pytest.approx(2.0)
        check_labels(r["labels"])
        check_labels(r["audio"])
        check_labels(r["video"])
        assert set(r["modality"]) == {e["label"] for e in r["labels"]}
        assert r["latency_ms"] >= 0


def test_audio_only_file(tmp_path):
    wav = shared("sounds/scratch/Animal/Dog1.wav")
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(wav), "--no-dashboard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    windows = window_records(out)
    assert windows and all(r["video"] is None and r["audio"] for r in windows)
    assert all(v["video"] is None for r in windows for v in r["modality"].values())
    heard = {e["label"] for r in windows for e in r["labels"][:3]}
    assert "dog" in heard, heard


def test_video_only_file(tmp_path, ffmpeg):
    muted = tmp_path / "muted.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(shared("media/flipping_a_pancake.mkv")), "-an",
                    "-c:v", "copy", str(muted)], check=True, timeout=60)
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(muted), "--no-dashboard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    windows = window_records(out)
    assert windows and all(r["audio"] is None and r["video"] for r in windows)
    assert all(v["audio"] is None for r in windows for v in r["modality"].values())


@pytest.mark.parametrize("content", [b"this is not a video\n" * 50, b""], ids=["text", "empty"])
def test_not_media_exits_nonzero_with_one_line(tmp_path, content):
    bogus = tmp_path / "notes.mp4"
    bogus.write_bytes(content)
    proc = streamclf("run", str(bogus), "--no-dashboard", "--quiet", "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamclf: error: ") and str(bogus) in lines[0]


def test_one_bad_source_does_not_stop_the_others(tmp_path):
    bogus = tmp_path / "bad.mp4"
    bogus.write_bytes(b"garbage" * 100)
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(bogus), str(shared("sounds/scratch/Animal/Cat.mp3")), "--no-dashboard",
                     "--out", str(out))
    assert proc.returncode == 1
    assert {r["source"] for r in window_records(out)} == {"Cat.mp3"}
    assert "bad.mp4" in proc.stderr


def test_bad_config_names_file_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window:\n  lenght: 2\n")
    proc = streamclf("run", "--config", str(cfg), "--no-dashboard")
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "window.lenght" in proc.stderr
