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
from streamclf.event_files import EventFiles
from streamclf.records import WindowRecord, parse
from streamclf.sources import read_audio
from streamclf.types import Frame, Window
from tests.conftest import bark_clip, shared

SR = 16000


def _window(t: float, loud: float = 0.1) -> Window:
    """A 2-s window of a 440 Hz tone and one frame (48x64 for the model, 96x128 full size) at its centre."""
    audio = (loud * np.sin(np.arange(2 * SR) * 2 * np.pi * 440 / SR)).astype(np.float32)
    shade = int(t * 10) % 255
    frame = Frame("cam", t + 1.0, np.full((48, 64, 3), shade, np.uint8), full=np.full((96, 128, 3), shade, np.uint8))
    return Window("cam", int(t * 2), t, t + 2.0, [frame], audio)


def _probe(path: str) -> dict:
    """What an MP4 holds: codecs, picture size, frame count, seconds of sound."""
    import av

    with av.open(path) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(path) as c:
        sound = sum(f.samples for f in c.decode(audio=0)) / a.sample_rate
    return {
        "video": v.codec_context.name,
        "audio": a.codec_context.name,
        "size": (v.width, v.height),
        "frames": frames,
        "seconds": sound,
    }


def _record(**fields: object) -> WindowRecord:
    """A window record with what the alerts read; the encoders' own labels and the latency do not matter here."""
    record = parse({"audio": None, "video": None, "modality": {}, "latency_ms": 0.0, **fields})
    assert isinstance(record, WindowRecord)
    return record


def _feed(
    alerts: Alerts,
    scores: list[float],
    label: str = "dog",
    loud: float = 0.1,
    speech: float | None = None,
    audio: list[float] | None = None,
) -> list[dict]:
    """Window records with ``scores`` fused (and as the audio score unless ``audio`` is given); video 0.1."""
    out = []
    for i, s in enumerate(scores):
        t = i * 0.5
        w = _window(t, loud)
        record = _record(
            source="cam",
            t_start=t,
            t_end=t + 2.0,
            speech=speech,
            labels=[{"label": label, "score": s}],
            modality={label: {"audio": s if audio is None else audio[i], "video": 0.1}},
        )
        out += alerts.update(record, w)
    return [a.to_dict() for a in out + alerts.close()]


def _rules(tmp_path: Path, clip: str = "mp4", **rule: object) -> Alerts:
    return Alerts(AlertsConfig(rules=[AlertRule(label="dog", **rule)], events_dir=str(tmp_path), clip=clip))


def test_hold_then_hysteresis_gives_one_event(tmp_path: Path) -> None:
    # one window above is not enough (min_windows=2); a dip to 0.45 stays inside the event (end_score 0.4)
    scores = [0.1, 0.9, 0.1, 0.7, 0.8, 0.45, 0.9, 0.3, 0.2, 0.1, 0.1]
    rules = _rules(tmp_path, "both", min_score=0.6, min_windows=2, end_score=0.4, end_windows=2, cooldown=0)
    events = _feed(rules, scores)
    assert [e["state"] for e in events] == ["started", "ended"]
    started, ended = events
    assert started["start"] == pytest.approx(1.5 + 1.0)  # centre of the first of the two windows above
    assert ended["end"] == pytest.approx(3.0 + 1.0)  # centre of the last window above end_score
    assert ended["peak"] == 0.9 and ended["driver"] == "audio"
    image = cv2.imread(ended["snapshot"])
    assert image is not None and image.shape == (96, 128, 3)  # the full-size picture, not the model's
    # the clip: pre-roll before the first window of the rise (t_start 1.5; the audio begins at 0), post-roll after
    assert (ended["clip_start"], ended["clip_end"]) == (0.0, 4.0 + 2.0)
    with wave.open(ended["wav"]) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(6.0, abs=0.01)
    mp4 = _probe(ended["clip"])
    assert ended["clip"].endswith(".mp4") and mp4["audio"] == "aac" and mp4["video"] in ("h264", "mpeg4")
    assert mp4["size"] == (64, 48) and mp4["frames"] == 9  # the windows' frames in time: 1.0, 1.5 ... 5.0 s
    assert mp4["seconds"] == pytest.approx(6.0, abs=0.1)


def test_the_clip_starts_before_the_rise_that_led_to_the_event(tmp_path: Path) -> None:
    """A sound that builds up (or smoothing that lags) crosses the threshold late: the clip's pre-roll counts
    from the first window already at the level that would keep an event going, not from the crossing."""
    scores = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.45, 0.48, 0.55, 0.6, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0]
    ended = _feed(_rules(tmp_path, min_score=0.5, min_windows=2), scores)[-1]
    assert ended["start"] == pytest.approx(4.0 + 1.0)  # centre of the first window above 0.5
    assert ended["clip_start"] == pytest.approx(3.0 - 2.0)  # window 6 (t_start 3.0) was already above 0.4


def test_retention_deletes_old_events_then_the_oldest_over_the_size_limit(tmp_path: Path, monkeypatch) -> None:
    """At start and then periodically: events past retain_days go, then the oldest while over max_disk_mb;
    an event's files go together, and files the alerts did not name are never touched."""
    import os
    import time

    import streamclf.event_files

    cam = tmp_path / "cam"
    cam.mkdir()
    day = 86400

    def event(name: str, age_days: float, mb: float) -> list[Path]:
        files = [cam / f"{name}.jpg", cam / f"{name}.mp4"]
        for f in files:
            f.write_bytes(b"\0" * int(mb * 1e6 / 2))
            os.utime(f, (time.time() - age_days * day,) * 2)
        return files

    old = event("20261001-120000-dog-5.0s", 40, 0.2)
    middle = event("20261127-120000-dog-12.5s", 2, 1.5)
    new = event("20261129-120000-glass-3.0s", 0, 1.0)
    mine = [tmp_path / "notes.txt", cam / "holiday.jpg"]
    for f in mine:
        f.write_text("keep me")
        os.utime(f, (time.time() - 100 * day,) * 2)
    alerts = Alerts(
        AlertsConfig(rules=[AlertRule(label="dog")], events_dir=str(tmp_path), retain_days=30, max_disk_mb=2)
    )
    assert not any(f.exists() for f in old + middle)  # too old; then 1.5 + 1.0 MB > 2 MB: the older goes
    assert all(f.exists() for f in new + mine)

    later = event("20261002-120000-dog-1.0s", 35, 0.1)  # appears while running
    record = {"source": "cam", "t_start": 0.0, "t_end": 2.0, "labels": [{"label": "dog", "score": 0.0}]}
    alerts.update(_record(**record), _window(0.0))
    assert all(f.exists() for f in later)  # not yet: sweeps are minutes apart
    monkeypatch.setattr(streamclf.event_files, "SWEEP_EVERY", 0.0)
    alerts.update(_record(**{**record, "t_start": 0.5, "t_end": 2.5}), _window(0.5))
    assert not any(f.exists() for f in later) and all(f.exists() for f in new + mine)


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


def test_a_modality_condition_fires_when_the_fused_score_stays_low(tmp_path: Path) -> None:
    """``{label: dog, audio: 0.5}``: the microphone alone hears the dog; the fused score never reaches 0.5."""
    fused = [0.1, 0.35, 0.38, 0.36, 0.2, 0.1, 0.1, 0.1]
    audio = [0.0, 0.70, 0.69, 0.65, 0.3, 0.0, 0.0, 0.0]
    assert _feed(_rules(tmp_path, min_score=0.4), fused, audio=audio) == []
    events = _feed(_rules(tmp_path, audio=0.5), fused, audio=audio)
    assert [e["state"] for e in events] == ["started", "ended"]
    assert events[0]["trigger"] == "audio" and events[0]["start"] == pytest.approx(0.5 + 1.0)
    assert events[1]["peak"] == 0.38 and events[1]["modality"] == {"audio": 0.69, "video": 0.1}  # window 2 started it
    assert AlertRule(label="dog", audio=0.5).thresholds() == {"audio": 0.5}  # no fused condition unless asked
    assert AlertRule(label="dog").thresholds() == {"fused": 0.5}


def test_a_rule_sees_its_label_outside_the_fused_top_k(tmp_path: Path) -> None:
    """The recorder adds the labels rules watch (``watched``, ``modality``) when they are not in the top-k."""
    alerts = _rules(tmp_path, audio=0.5, min_windows=1)
    out = []
    for i in range(6):
        t = i * 0.5
        record = _record(
            source="cam",
            t_start=t,
            t_end=t + 2.0,
            labels=[{"label": "cat", "score": 0.8}],
            watched={"dog": 0.2},
            modality={"cat": {"audio": 0.0, "video": 0.8}, "dog": {"audio": 0.9 if i < 2 else 0.0, "video": 0.0}},
        )
        out += alerts.update(record, _window(t))
    events = [e.to_dict() for e in out + alerts.close()]
    assert [e["state"] for e in events] == ["started", "ended"] and events[0]["peak"] == 0.2


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
    audio = read_audio(ended["clip"])  # the MP4's sound, as the decoder reads it
    peak_at = np.argmax(np.abs(audio)) / SR + ended["clip_start"]
    assert abs(peak_at - 5.08) < 0.5  # the loudest sample of the clip is the bark
    assert ended["clip_start"] <= 5.0 - 2.0  # the whole pre-roll before the bark is in


def _run(clip: Path, tmp_path: Path, rules: list[AlertRule], **overrides: object) -> list[dict]:
    """Records of one run of ``clip`` with these alert rules and config overrides."""
    import streamclf

    out = tmp_path / f"records-{len(list(tmp_path.glob('records-*')))}.jsonl"
    config = load_config(**overrides)
    config.alerts = AlertsConfig(rules=rules, events_dir=str(tmp_path / "events"))
    streamclf.run([str(clip)], out=out, config=config)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _fused(records: list[dict], label: str) -> list[float]:
    return [next((e["score"] for e in r["labels"] if e["label"] == label), 0.0) for r in records if "labels" in r]


def test_a_bark_off_camera_keeps_its_audio_score_and_alerts(tmp_path: Path, ffmpeg: str) -> None:
    """A bark over Big Buck Bunny (no dog in the picture) fuses to what the audio alone gives it; dog:0.4 fires.

    Before reliability weighting the diffuse picture dragged the dog down to 0.38 (audio alone: 0.68).
    """
    clip = bark_clip(ffmpeg, tmp_path / "bbb.mp4", picture=shared("media/bbb_360p_60s.mp4"))
    fused = _run(clip, tmp_path, [AlertRule(label="dog", min_score=0.4)], **{"fusion.top_k": 50})
    heard = _run(clip, tmp_path, [], **{"fusion.top_k": 50, "video.enabled": False})
    assert max(_fused(fused, "dog")) >= 0.9 * max(_fused(heard, "dog"))
    alerts = [a for a in fused if a.get("type") == "alert"]
    assert [a["state"] for a in alerts] == ["started", "ended"]
    assert cv2.imread(alerts[-1]["snapshot"]).shape == (360, 640, 3)  # the source's picture, not the model's 456x256
    clip = _probe(alerts[-1]["clip"])
    assert clip["size"] == (456, 256) and clip["frames"] >= 4 * 4 and clip["seconds"] >= 5.0  # picture and sound


def test_a_confident_picture_of_something_else_is_not_outvoted_by_a_faint_sound(tmp_path: Path, ffmpeg: str) -> None:
    """A cat photo with a faint bark: the weak sound does not raise the dog, and the silent microphone
    does not drag the clearly seen cat down (the plain average halved it: 0.33 for a 0.67 cat)."""
    clip = bark_clip(ffmpeg, tmp_path / "cat.mp4", picture=shared("avpairs/farm_cat_photo.png"), volume=0.01)
    windows = [
        r
        for r in _run(clip, tmp_path, [AlertRule(label="dog", min_score=0.4)], **{"fusion.top_k": 50})
        if "labels" in r
    ]
    heard = [r["modality"]["dog"]["audio"] for r in windows]
    assert 0.2 < max(heard) < 0.5  # faint, but heard
    assert max(_fused(windows, "dog")) < 0.2
    cat = [
        (f, r["modality"]["cat"]["video"])
        for r, f in zip(windows, _fused(windows, "cat"), strict=True)
        if r["t_start"] < 2
    ]
    assert all(f >= 0.95 * video for f, video in cat) and min(video for _, video in cat) > 0.5


def test_bad_alert_flags_give_one_line() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for flag in ("dog:7", "dog:sound=0.5"):
        bad = subprocess.run(
            [sys.executable, "-m", "streamclf", "run", "x.mp4", "--alert", flag],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=60,
        )
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            f"streamclf: error: --alert {flag}: expected LABEL, LABEL:SCORE or LABEL:audio=SCORE,video=SCORE "
            "with scores in [0, 1]"
        ]


def test_event_media_that_cannot_be_saved_costs_the_file_not_the_run(tmp_path: Path, monkeypatch) -> None:
    """A full disk (or a codec failure) while writing the snapshot or clip: the alert records still come,
    without the media, and nothing raises into the router that serves every camera."""
    rules = _rules(tmp_path, min_score=0.6, min_windows=1)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EventFiles, "_write_jpeg", full_disk)
    monkeypatch.setattr(EventFiles, "_write_mp4", full_disk)
    events = _feed(rules, [0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert [e["state"] for e in events] == ["started", "ended"]
    assert events[-1]["snapshot"] is None and events[-1]["clip"] is None


def test_retention_goes_on_past_a_file_it_may_not_delete(tmp_path: Path, monkeypatch) -> None:
    """Old events left by another user's run: that file stays, the others still go, and nothing raises."""
    import os
    import time

    from streamclf.event_files import sweep

    cam = tmp_path / "cam"
    cam.mkdir()
    names = ["20261001-120000-dog-5.0s.jpg", "20261002-120000-dog-6.0s.jpg"]
    for name in names:
        (cam / name).write_bytes(b"x")
        os.utime(cam / name, (time.time() - 40 * 86400,) * 2)
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self.name == names[0]:
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    gone = sweep(tmp_path, retain_days=30, max_disk_mb=None)
    assert [p.name for p in gone] == [names[1]] and (cam / names[0]).exists()


@pytest.mark.parametrize("name", ["..", ".", "../..", "///"])
def test_a_source_named_dots_stays_inside_the_events_folder(tmp_path: Path, name: str) -> None:
    from streamclf.event_files import _slug

    slug = _slug(name)
    assert slug.strip(".") and (tmp_path / slug).resolve().parent == tmp_path.resolve()
