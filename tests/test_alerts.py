"""Alert rules: hold, hysteresis, cooldown, loudness gate, overrides; and one real bark in a clip."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamclf.alerts import Alerts, dbfs
from streamclf.config import AlertRule, AlertsConfig, load_config
from streamclf.types import Frame, Window
from tests.conftest import bark_clip

SR = 16000


def _window(t: float, loud: float = 0.1) -> Window:
    audio = (loud * np.sin(np.arange(2 * SR) * 2 * np.pi * 440 / SR)).astype(np.float32)
    frame = Frame("cam", t + 1.0, np.full((48, 64, 3), int(t * 10) % 255, np.uint8))
    return Window("cam", int(t * 2), t, t + 2.0, [frame], audio)


def _feed(alerts: Alerts, scores: list[float], label: str = "dog", loud: float = 0.1,
          speech: float | None = None) -> list[dict]:
    out = []
    for i, s in enumerate(scores):
        t = i * 0.5
        w = _window(t, loud)
        record = {"source": "cam", "t_start": t, "t_end": t + 2.0, "speech": speech,
                  "labels": [{"label": label, "score": s}], "modality": {label: {"audio": s, "video": 0.1}}}
        out += alerts.update(record, w)
    return out + alerts.close()


def _rules(tmp_path: Path, **rule: object) -> Alerts:
    return Alerts(AlertsConfig(rules=[AlertRule(label="dog", **rule)], events_dir=str(tmp_path)))


def test_hold_then_hysteresis_gives_one_event(tmp_path: Path) -> None:
    # one window above is not enough (min_windows=2); a dip to 0.45 stays inside the event (end_score 0.4)
    scores = [0.1, 0.9, 0.1, 0.7, 0.8, 0.45, 0.9, 0.3, 0.2, 0.1, 0.1]
    events = _feed(_rules(tmp_path, min_score=0.6, min_windows=2, end_score=0.4, end_windows=2, cooldown=0), scores)
    assert [e["state"] for e in events] == ["started", "ended"]
    started, ended = events
    assert started["start"] == pytest.approx(1.5 + 1.0)  # centre of the first of the two windows above
    assert ended["end"] == pytest.approx(3.0 + 1.0)  # centre of the last window above end_score
    assert ended["peak"] == 0.9 and ended["driver"] == "audio"
    image = cv2.imread(ended["snapshot"])
    assert image is not None and image.shape == (48, 64, 3)
    with wave.open(ended["clip"]) as w:
        seconds = w.getnframes() / w.getframerate()
    assert seconds == pytest.approx((4.0 - 2.5) + 2.0 + 2.0, abs=0.1)  # event + pre-roll + post-roll


def test_cooldown_suppresses_a_second_event(tmp_path: Path) -> None:
    burst = [0.9, 0.9, 0.1, 0.1]
    many = _feed(_rules(tmp_path, min_windows=2, end_windows=2, cooldown=0), burst * 3)
    few = _feed(_rules(tmp_path / "b", min_windows=2, end_windows=2, cooldown=60), burst * 3)
    assert sum(e["state"] == "started" for e in many) == 3
    assert sum(e["state"] == "started" for e in few) == 1


def test_loudness_gate_and_source_override(tmp_path: Path) -> None:
    scores = [0.9] * 4 + [0.0] * 4
    quiet = 0.001  # -60 dBFS
    assert dbfs(np.full(100, quiet, np.float32)) == pytest.approx(-60.0, abs=0.1)
    assert _feed(_rules(tmp_path, loudness_dbfs=-40), scores, loud=quiet) == []
    assert len(_feed(_rules(tmp_path, loudness_dbfs=-40), scores, loud=0.5)) == 2
    assert _feed(_rules(tmp_path, sources={"cam": {"enabled": False}}), scores) == []
    assert _feed(_rules(tmp_path, sources={"cam": {"min_score": 0.95}}), scores) == []
    assert _feed(_rules(tmp_path, sources={"other": {"min_score": 0.95}}), scores) != []


def test_speech_gate(tmp_path: Path) -> None:
    """A rule with ``speech: {max: 0.5}`` ignores windows where someone talks; ``min`` wants them."""
    scores = [0.9] * 4 + [0.0] * 4
    assert _feed(_rules(tmp_path, speech={"max": 0.5}), scores, speech=0.97) == []
    assert len(_feed(_rules(tmp_path, speech={"max": 0.5}), scores, speech=0.02)) == 2
    assert len(_feed(_rules(tmp_path, speech={"max": 0.5}), scores)) == 2  # no audio: no speech
    assert _feed(_rules(tmp_path, speech={"min": 0.5}), scores) == []


def test_a_real_bark_raises_one_dog_alert(tmp_path: Path, ffmpeg: str) -> None:
    """A dog bark from the shared sounds mixed into a 12 s clip at 5 s: one alert near 5 s, with evidence."""
    import streamclf

    clip = bark_clip(ffmpeg, tmp_path / "yard.mp4")
    config = load_config(**{"alerts.events_dir": str(tmp_path / "events")})
    # The grey picture shows no dog, so the fused score is audio-driven: about 0.4 at the bark, 0.06 elsewhere.
    config.alerts = AlertsConfig(rules=[AlertRule(label="dog", min_score=0.3)], events_dir=str(tmp_path / "events"))
    out = tmp_path / "records.jsonl"
    states = streamclf.run([str(clip)], out=out, config=config)
    assert not states["yard.mp4"].fatal
    records = [json.loads(line) for line in out.read_text().splitlines()]
    alerts = [r for r in records if r.get("type") == "alert"]
    assert [a["state"] for a in alerts] == ["started", "ended"]
    ended = alerts[-1]
    assert ended["label"] == "dog" and ended["driver"] == "audio"
    assert abs(ended["start"] - 5.0) <= 1.0
    assert cv2.imread(ended["snapshot"]) is not None
    with wave.open(ended["clip"]) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        assert w.getframerate() == SR
    peak_at = np.argmax(np.abs(audio)) / SR + ended["start"] - 2.0  # clip starts pre_roll before the event
    assert abs(peak_at - 5.08) < 0.5  # the loudest sample of the clip is the bark


def test_bad_alert_flags_give_one_line() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    bad = subprocess.run([sys.executable, "-m", "streamclf", "run", "x.mp4", "--alert", "dog:7"],
                         capture_output=True, text=True, cwd=root, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "streamclf: error: --alert dog:7: expected LABEL or LABEL:SCORE with SCORE in [0, 1]"]
