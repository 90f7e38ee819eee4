"""`streamclf eval`: the metrics on hand-made numbers, the three runs on a real composed stream, the avpairs split."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from streamclf.clips import compose, pair_clip, strip, tracks
from streamclf.evaluate import evaluate, prepare_media, summary_lines, table_rows
from streamclf.scoring import NOTHING, Win, decide, ece, f1_scores, gap_windows, outcome, run_metrics, windows_inside
from streamclf.sources import read_audio

from .conftest import shared
from .test_cli import probe

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- metrics on hand-made numbers


def test_decide_is_the_score_summed_top1():
    # "dog" wins 2 windows of 3 on top-1, but "cat" has the larger sum
    ws = [Win(0, 2, {"dog": 0.4, "cat": 0.35}), Win(0.5, 2.5, {"dog": 0.4, "cat": 0.38}), Win(1, 3, {"cat": 0.9})]
    assert decide(ws) == "cat"
    assert decide([]) is None


def test_ece_by_hand():
    # bin (0.8, 0.9]: two windows at 0.9, one right -> |0.5 - 0.9| x 2/4; bin (0.1, 0.2]: two wrong at 0.2 -> 0.2 x 2/4
    assert ece([0.9, 0.9, 0.2, 0.2], [True, False, False, False]) == pytest.approx(0.3)
    assert ece([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert ece([], []) is None


def test_f1_counts_predictions_outside_the_classes_as_misses():
    f1 = f1_scores(["a", "a", "b", "b"], ["a", "b", "b", "music"], ["a", "b"])
    assert f1 == {"a": pytest.approx(2 / 3), "b": pytest.approx(0.5)}


def test_a_window_without_a_label_at_the_threshold_is_the_nothing_outcome():
    assert outcome(Win(0, 2, {"dog": 0.49, "cat": 0.1}), 0.5) == NOTHING
    assert outcome(Win(0, 2, {"dog": 0.5}), 0.5) == "dog"
    assert outcome(Win(0, 2, {}), 0.5) == NOTHING
    gaps = [Win(0, 2, {"dog": 0.49}), Win(1, 3, {"dog": 0.7})]
    got = run_metrics(["dog"], [[Win(4, 6, {"dog": 0.9})]], gaps, ["dog"], 0.5)
    assert got["gap_hot"] == 1 and got["gap_rate"] == 0.5


def test_runs_must_be_some_of_the_three(tmp_path):
    for c in ("dog", "cat"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "a.mp4").touch()
    with pytest.raises(ValueError, match="choose from fused, audio only, video only"):
        evaluate(tmp_path, runs=["both"])


def test_windows_inside_and_gap_windows():
    ws = [Win(t, t + 2, {"x": 0.1}) for t in np.arange(0, 10, 0.5)]
    event = (3.0, 6.0)
    # mostly inside: more than 1 s of the 2 s window overlaps [3, 6]
    assert [w.t_start for w in windows_inside(ws, *event)] == [2.5, 3.0, 3.5, 4.0, 4.5]
    # an event shorter than half a window: the windows overlapping it most
    assert [w.t_start for w in windows_inside(ws, 4.0, 4.5)] == [2.5, 3.0, 3.5, 4.0]
    # gaps [0, 3] and [6, 9.5]: only windows entirely inside them count
    assert [w.t_start for w in gap_windows(ws, [event], 9.5)] == [0.0, 0.5, 1.0, 6.0, 6.5, 7.0, 7.5]


def test_run_metrics_gap_rate_and_accuracy():
    truth = ["dog", "cat"]
    per_event = [[Win(2, 4, {"dog": 0.9})], [Win(7, 9, {"dog": 0.6, "cat": 0.3})]]
    gaps = [Win(0, 2, {"dog": 0.6}), Win(4.5, 6.5, {"cat": 0.2}), Win(10, 12, {"dog": 0.5}), Win(12, 14, {})]
    m = run_metrics(truth, per_event, gaps, ["cat", "dog"], threshold=0.5)
    assert m["accuracy"] == 0.5 and m["predicted"] == ["dog", "dog"]
    assert (m["gap_hot"], m["gap_windows"], m["gap_rate"]) == (2, 4, 0.5)  # >= threshold counts
    assert m["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)
    assert m["per_category"]["cat"] == {"clips": 1, "accuracy": 0.0, "f1": 0.0}
    assert m["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)


# ---------------------------------------------------------------- media: composing, stripping


@pytest.fixture(scope="module")
def animals(tmp_path_factory) -> Path:
    """Three short real clips, a folder per category: a photo shown while the animal's own sound plays."""
    root = tmp_path_factory.mktemp("animals")
    for name, label in [("farm_dog_photo", "dog"), ("farm_cat_photo", "cat"), ("farm_cow_photo", "cattle")]:
        (root / label).mkdir()
        pair_clip(
            shared(f"avpairs/{name}.png"), shared(f"avpairs/{name}.ogg"), root / label / f"{name}.mp4", max_seconds=3.0
        )
    return root


def test_pair_clip_holds_the_picture_and_the_whole_short_sound(animals):
    clip = animals / "dog" / "farm_dog_photo.mp4"
    assert tracks(clip) == {"audio", "video"}
    sound = read_audio(shared("avpairs/farm_dog_photo.ogg"))  # 0.9 s: padded to one 2 s window
    audio = read_audio(clip)
    assert 2.0 <= len(audio) / 16000 < 2.2
    assert np.abs(audio[: len(sound)]).max() > 0.1 and np.abs(audio[len(sound) + 4000 :]).max() < 0.01


def test_compose_places_clips_between_grey_silent_gaps(animals, tmp_path):
    clips = [(animals / "dog" / "farm_dog_photo.mp4", "dog"), (animals / "cat" / "farm_cat_photo.mp4", "cat")]
    events = compose(clips, tmp_path / "s.mkv", gap=1.0)
    assert [(e.label, e.start) for e in events] == [("dog", 1.0), ("cat", events[0].end + 1.0)]
    audio = read_audio(tmp_path / "s.mkv")
    assert len(audio) / 16000 == pytest.approx(events[-1].end + 1.0, abs=0.01)
    assert np.abs(audio[: 16000 - 100]).max() == 0  # the first gap is silent
    assert np.abs(audio[int(events[0].start * 16000) : int(events[0].end * 16000)]).max() > 0.1
    import av

    with av.open(str(tmp_path / "s.mkv")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - 128).max() <= 2  # ... and grey


def test_strip_keeps_one_track_bit_for_bit(animals, tmp_path):
    src = animals / "cat" / "farm_cat_photo.mp4"
    a, v = strip(src, tmp_path / "a.mp4", "audio"), strip(src, tmp_path / "v.mp4", "video")
    assert tracks(a) == {"audio"} and tracks(v) == {"video"}
    np.testing.assert_array_equal(read_audio(a), read_audio(src))
    with pytest.raises(ValueError, match="no video track"):
        strip(a, tmp_path / "x.mkv", "video")


# ---------------------------------------------------------------- eval end to end (real pipeline)


def test_eval_on_a_composed_stream_runs_fused_audio_only_and_video_only(animals, tmp_path):
    work = tmp_path / "work"
    clips = sorted((p, p.parent.name) for p in animals.rglob("*.mp4"))
    media, events = prepare_media(clips, work, compose=True, gap=3.0)
    assert [tracks(p) for run in ("fused", "audio only", "video only") for p in media[run]] == [
        {"audio", "video"},
        {"audio"},
        {"video"},
    ]
    assert [e.label for e in events] == ["cat", "cattle", "dog"]
    result = evaluate(animals, compose=True, gap=3.0, work_dir=work)  # reuses the media made above
    assert set(result["runs"]) == {"fused", "audio only", "video only"}
    got = {e["label"]: (e["fused"], e["audio only"], e["video only"]) for e in result["events"]}
    # known answers: each animal's own sound and photo name it (the cow photo is not an ImageNet ox)
    assert got["dog"] == ("dog", "dog", "dog") and got["cat"] == ("cat", "cat", "cat")
    assert got["cattle"][:2] == ("cattle", "cattle")
    fused = result["runs"]["fused"]
    assert fused["gap_windows"] >= 2 * len(events) and fused["gap_rate"] is not None
    assert result["gain"] == pytest.approx(
        fused["accuracy"] - max(result["runs"]["audio only"]["accuracy"], result["runs"]["video only"]["accuracy"])
    )
    assert table_rows(result)[-1][0] == "all"
    # the figures name the calibration they were measured with, and what its card says it was fitted on
    assert result["calibration"]["builtin"] and result["calibration"]["data"]
    assert (
        summary_lines(result)[1].startswith("calibration: built-in ")
        and "fitted on avpairs tune" in summary_lines(result)[1]
    )
    # a system with only the microphone's encoder names the video-less stream as the fused system does
    from streamclf.config import load_config

    deaf = load_config(None, **{"video.enabled": False})
    alone = evaluate(animals, deaf, compose=True, gap=3.0, work_dir=work, runs=["audio only"])
    assert set(alone["runs"]) == {"audio only"} and alone["gain"] is None
    assert [e["audio only"] for e in alone["events"]] == [e["audio only"] for e in result["events"]]


def test_a_broken_clip_is_counted_wrong_and_reported_while_the_others_run(animals, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(animals, data)
    (data / "dog" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    result = evaluate(data, work_dir=tmp_path / "work")
    assert len(result["failed"]) == 1 and "broken.mp4" in result["failed"][0]
    broken = next(e for e in result["events"] if e["path"].endswith("broken.mp4"))
    assert broken["fused"] is broken["audio only"] is broken["video only"] is None
    assert result["runs"]["fused"]["without_windows"] == 1
    assert next(e for e in result["events"] if e["path"].endswith("farm_dog_photo.mp4"))["fused"] == "dog"


# ---------------------------------------------------------------- bad input: one line, exit 2, before torch


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda d: d / "missing", "missing: no such file or folder"),
        (
            lambda d: (d / "one" / "dog").mkdir(parents=True) or (d / "one" / "dog" / "a.mp4").touch() or d / "one",
            "need labeled clips of at least two classes, found only class 'dog'",
        ),
        (
            lambda d: (
                [(d / "two" / c).mkdir(parents=True) or (d / "two" / c / "a.mp4").touch() for c in ("dog", "dgo")]
                and d / "two"
            ),
            "category 'dgo' is not a label of the category map; closest: dog",
        ),
    ],
    ids=["missing path", "one class", "unknown category"],
)
def test_bad_data_is_one_line_and_exit_2(tmp_path, make, says):
    code, heavy, err = probe("eval", str(make(tmp_path)), cwd=tmp_path)
    assert code == 2 and heavy == [], err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_gap_without_compose_and_help(tmp_path):
    code, heavy, err = probe("eval", str(tmp_path), "--gap", "2", cwd=tmp_path)
    assert code == 2 and "--gap needs --compose" in err and len(err.strip().splitlines()) == 1
    code, heavy, _ = probe("eval", "--help", cwd=tmp_path)
    assert code == 0 and heavy == []


# ---------------------------------------------------------------- the avpairs split


def _fusion_real():
    spec = importlib.util.spec_from_file_location("fusion_real", ROOT / "benchmarks" / "fusion_real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_keeps_a_recording_on_one_side_and_is_deterministic(tmp_path):
    fr = _fusion_real()
    rows = [
        ("farm_dog_photo", "dog", b"bark"),
        ("farm_dog_drawing", "dog", b"bark"),  # one recording, two rows
        *((f"instr_{i}", "trumpet", f"toot{i}".encode()) for i in range(4)),
        *((f"x_{c}", c, c.encode()) for c in ("cat", "pig", "horse")),
    ]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "image", "sound", "category"])
        for name, cat, sound in rows:
            (tmp_path / f"{name}.ogg").write_bytes(sound)
            w.writerow([name, f"{name}.png", f"{name}.ogg", cat])
    split = fr.make_split(tmp_path)
    assert split == fr.make_split(tmp_path)
    side = {r["name"]: r["split"] for r in split}
    assert side["farm_dog_photo"] == side["farm_dog_drawing"]
    assert sorted(side[f"instr_{i}"] for i in range(4)) == ["report", "report", "tune", "tune"]  # stratified
    singles = [side[n] for n in ("farm_dog_photo", "x_cat", "x_pig", "x_horse")]
    assert sorted(singles) == ["report", "report", "tune", "tune"]


def test_committed_split_is_the_rule_applied_to_avpairs():
    fr = _fusion_real()
    data = shared("avpairs")
    rows = fr.read_split()
    assert rows == fr.make_split(data)
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(r["recording"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())  # no recording on both sides
    by_category: dict[str, set[str]] = {}
    for r in rows:
        by_category.setdefault(r["category"], set()).add(r["recording"])
    for cat, recs in by_category.items():
        if len(recs) > 1:
            assert {r["split"] for r in rows if r["category"] == cat} == {"report", "tune"}, cat
    results = ROOT / "benchmarks" / "results" / "fusion_real.json"
    if results.exists():  # the published figures say which part they come from
        assert set(json.loads(results.read_text())["splits"]) <= {"report", "tune"}
