"""`streamclf train`'s checks before any clip is embedded, and what it reports after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamclf import train as train_module
from streamclf import trainset
from streamclf.heldout import group_folds
from streamclf.train import (
    FOLDER_GROUP,
    check_fusion,
    fusion_warnings,
    grouped_clips,
    labeled_clips,
    report,
)
from streamclf.trainset import gains_db, window_events, with_blanks

from .conftest import DATA, shared


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i}.wav").write_bytes(b"")
    return root


@pytest.mark.parametrize(
    "fusion, message",
    [
        ("gatd", "unknown fusion method 'gatd'; closest: gated"),
        ("mkl", "'mkl' keeps its training set and cannot be saved as a head"),
        ("cca", "'cca' keeps its training set and cannot be saved as a head"),
    ],
)
def test_bad_fusion_fails_before_any_clip_is_embedded(tmp_path, monkeypatch, fusion, message):
    data = _folder(tmp_path / "data", {"a": 1, "b": 1})

    def embed(*args, **kw):
        raise AssertionError("embedded clips before checking --fusion")

    monkeypatch.setattr(train_module, "clip_embeddings", embed)
    with pytest.raises(ValueError, match=message):
        train_module.train(data, fusion, tmp_path / "head")
    with pytest.raises(ValueError, match=message):
        check_fusion(fusion)
    check_fusion("gated")


def test_dataset_errors_name_the_class_or_row_at_fault(tmp_path):
    data = _folder(tmp_path / "data", {"cat": 2, "dog": 0})
    with pytest.raises(ValueError, match=r"data/dog: class folder 'dog' has no media files"):
        labeled_clips(data)
    one = _folder(tmp_path / "one", {"cat": 2})
    with pytest.raises(ValueError, match=r"found only class 'cat' \(2 clip\(s\)\); a folder needs one sub-folder"):
        labeled_clips(one)
    csv = tmp_path / "clips.csv"
    (tmp_path / "a.wav").write_bytes(b"")
    csv.write_text("path,label\na.wav,cat\nmissing.wav,dog\n")
    with pytest.raises(ValueError, match=r"clips.csv:3: class 'dog': .*missing.wav: no such file"):
        labeled_clips(csv)
    assert labeled_clips(_folder(tmp_path / "ok", {"cat": 1, "dog": 2})) == [
        (tmp_path / "ok" / "cat" / "0.wav", "cat"),
        (tmp_path / "ok" / "dog" / "0.wav", "dog"),
        (tmp_path / "ok" / "dog" / "1.wav", "dog"),
    ]


def test_report_is_a_table_and_warns_when_fusion_is_worse_than_one_modality():
    metrics = {"held_out_clips": 3, "accuracy": {"all": 0.77, "audio only": 0.5, "video only": 1.0}}
    card = {"metrics": metrics, "warnings": fusion_warnings(metrics)}
    assert report(card).splitlines() == [
        "held out clips: 3",
        "modalities  held-out accuracy",
        "all         0.770",
        "audio only  0.500",
        "video only  1.000",
        "warning: the head validates worse with all modalities (0.770) than with video only (1.000); "
        "the other modality hurts: try --fusion video, more clips, or another method",
    ]
    assert fusion_warnings({"accuracy": {"all": 1.0, "audio only": 0.6, "video only": 1.0}}) == []
    assert report({"metrics": {}}) == "no held-out metrics (fewer than 5 clips)"


def test_groups_come_from_a_csv_column_or_the_first_sub_folder(tmp_path):
    for rel in ("dog/cam1/a.mp4", "dog/cam2/b.mp4", "cat/cam1/deep/c.mp4", "cat/cam2/d.mp4"):
        (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / rel).write_bytes(b"")
    assert [(p.name, label, g) for p, label, g in grouped_clips(tmp_path / "data", FOLDER_GROUP)] == [
        ("c.mp4", "cat", "cam1"),
        ("d.mp4", "cat", "cam2"),
        ("a.mp4", "dog", "cam1"),
        ("b.mp4", "dog", "cam2"),
    ]
    csv = tmp_path / "clips.csv"
    csv.write_text("path,label,speaker\ndata/dog/cam1/a.mp4,dog,ann\ndata/cat/cam2/d.mp4,cat,bob\n")
    assert [g for *_, g in grouped_clips(csv, "speaker")] == ["ann", "bob"]


@pytest.mark.parametrize(
    "layout, group, message",
    [
        ("csv", "day", r"clips.csv: --group 'day': no such column \(columns: path, label, speaker\)"),
        ("csv-no-header", "day", r"no such column \(columns: none: the first row is not a path,label,... header\)"),
        ("flat", FOLDER_GROUP, r"cat/a.mp4: --group needs class/group/clip folders, but this clip sits directly in"),
        ("flat", "speaker", r"--group 'speaker' names a CSV column, but the data is a folder"),
    ],
)
def test_bad_group_input_is_one_clear_line_and_exit_2(tmp_path, capsys, layout, group, message):
    from streamclf.cli import main

    for name in ("dog", "cat"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "a.mp4").write_bytes(b"")
    data = tmp_path / "data"
    if layout.startswith("csv"):
        data = tmp_path / "clips.csv"
        header = "path,label,speaker\n" if layout == "csv" else ""
        data.write_text(header + "data/dog/a.mp4,dog,ann\ndata/cat/a.mp4,cat,bob\n")
    with pytest.raises(ValueError, match=message):
        grouped_clips(data, group)
    argv = ["train", str(data), "--out", str(tmp_path / "head"), "--group", *([group] if group else [])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamclf: error: ")


def test_one_class_dataset_with_group_exits_2(tmp_path, capsys):
    from streamclf.cli import main

    (tmp_path / "data" / "dog" / "cam1").mkdir(parents=True)
    (tmp_path / "data" / "dog" / "cam1" / "a.mp4").write_bytes(b"")
    assert main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "head"), "--group"]) == 2
    assert "found only class 'dog'" in capsys.readouterr().err


def test_folds_hold_out_every_group_once_never_on_both_sides():
    groups = [f"speaker{i % 7}" for i in range(70)]
    for seed in range(20):
        folds = group_folds(groups, 5, seed)
        assert len(folds) == 5 and all(folds)
        held = [g for f in folds for g in f]
        assert sorted(held) == sorted(set(groups))  # each group held out exactly once
    assert sorted(map(len, group_folds(["a", "b", "c"], 5, 0))) == [1, 1, 1]  # fewer groups than folds: one each
    with pytest.raises(ValueError, match=r"--group needs at least two groups to hold one out, found 1 \(a\)"):
        group_folds(["a", "a"], 5, 0)


def test_gain_augmentation_spans_quiet_to_loud():
    g = gains_db(2000, np.random.default_rng(0))
    assert g.min() >= -30 and g.max() <= 6 and g.min() < -25 and g.max() > 0


def test_blank_copies_replace_one_modality_with_a_silent_or_blank_window_and_keep_the_label():
    rng = np.random.default_rng(0)
    x = {"audio": np.ones((40, 3), np.float32), "video": 2 * np.ones((40, 4), np.float32)}
    present = {"audio": np.ones(40, bool), "video": np.arange(40) < 30}  # 10 rows have no video
    y, groups = np.arange(40) % 5, np.arange(40)
    blank = {"audio": np.full((2, 3), -1, np.float32), "video": np.full((1, 4), -2, np.float32)}
    x2, p2, y2, g2 = with_blanks(x, present, y, groups, blank, rng, share=0.5)
    new = slice(40, None)
    assert 5 < len(y2) - 40 < 25 and (g2[new] < 30).all()  # only two-modality rows are copied
    assert (y2[new] == y[g2[new]]).all()
    silent = (x2["audio"][new] == -1).all(1)
    blanked = (x2["video"][new] == -2).all(1)
    assert (silent ^ blanked).all() and silent.any() and blanked.any()  # exactly one modality replaced
    assert (x2["audio"][new][blanked] == 1).all() and p2["audio"][new].all() and p2["video"][new].all()
    assert with_blanks(x, present, y, groups, {}, rng)[2] is y


def test_composed_windows_take_the_event_they_mostly_cover():
    events = [(0.5, 2.0), (2.5, 3.5)]
    spans = [(0.0, 1.0), (0.5, 1.5), (1.5, 2.5), (2.0, 3.0), (2.5, 3.5), (3.5, 4.5)]
    inside, touched = window_events(spans, events)
    assert inside.tolist() == [-1, 0, -1, -1, 1, -1]  # (0,1) and (2,3) are only half inside: context, not label
    assert touched == [{0}, {0}, {0}, {1}, {1}, set()]


@pytest.mark.slow
def test_train_group_end_to_end_holds_out_a_speaker_and_names_it(tmp_path, capsys):
    """Real spoken digits + handwritten digits, speakers as groups: the report names the held-out speaker."""
    from streamclf.avdigits import write_clips
    from streamclf.cli import main

    shared("fsdd")
    write_clips(tmp_path / "data", ["george", "jackson", "nicolas"], 2, data_dir=DATA, digits=range(2))
    config = tmp_path / "c.yaml"
    config.write_text("window: {length: 1.0, hop: 0.5}\n")
    head = tmp_path / "head"
    assert (
        main(
            ["train", str(tmp_path / "data"), "--group", "--out", str(head), "--config", str(config), "--epochs", "20"]
        )
        == 0
    )
    import yaml

    metrics = yaml.safe_load((head / "card.yaml").read_text())["metrics"]
    assert metrics["held_out_groups"] == ["george", "jackson", "nicolas"] and metrics["folds"] == 3
    assert metrics["held_out_clips"] == 12  # every clip judged once, by the head that never heard its speaker
    assert set(metrics["stream"]) >= {"fused", "audio only", "video only", "gain"}
    assert sorted(g for f in metrics["stream"]["folds"] for g in f["groups"]) == ["george", "jackson", "nicolas"]
    out = capsys.readouterr().out
    assert "held out groups: george, jackson, nicolas" in out and "held-out stream" in out
    assert "held out george: fused" in out


def _tone(wav: Path) -> Path:
    """A 1 s, 440 Hz tone at amplitude 0.5 as a WAV file."""
    import av

    from streamclf.types import SAMPLE_RATE

    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=SAMPLE_RATE)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return wav


def test_composed_training_stream_applies_each_clips_gain(tmp_path):
    """A -20 dB clip in a training stream plays at a tenth of its amplitude: the quiet-microphone case."""
    from streamclf.clips import compose
    from streamclf.sources import read_audio
    from streamclf.types import SAMPLE_RATE

    wav = _tone(tmp_path / "tone.wav")
    events = compose([(wav, "a"), (wav, "a")], tmp_path / "s.mkv", gap=0.5, gains=[0.0, -20.0])
    audio = read_audio(tmp_path / "s.mkv")
    peak = [np.abs(audio[int(e.start * SAMPLE_RATE) : int(e.end * SAMPLE_RATE)]).max() for e in events]
    assert peak[0] == pytest.approx(0.5, rel=0.02) and peak[1] == pytest.approx(0.05, rel=0.05)


def test_heads_get_the_clip_groups_so_internal_validation_is_across_speakers(tmp_path, monkeypatch):
    """`fit` sees one group per speaker (not per clip): stacking/hybrid then weigh audio on unseen speakers."""
    from types import SimpleNamespace

    import streamclf.fusion as fusion
    from streamclf.config import load_config

    for speaker in ("ann", "bob"):
        for label in ("cat", "dog"):
            for i in range(2):
                (tmp_path / "data" / label / speaker).mkdir(parents=True, exist_ok=True)
                (tmp_path / "data" / label / speaker / f"{i}.mp4").write_bytes(b"")
    clip = np.repeat(np.arange(8), 2)  # two windows per clip, clips in grouped_clips order
    models = SimpleNamespace(config=load_config(), encoders={"audio": SimpleNamespace(weights=SimpleNamespace(id="w"))})
    monkeypatch.setattr(
        train_module,
        "clip_embeddings",
        lambda *a, **k: {
            "x": {"audio": np.zeros((16, 2), np.float32)},
            "present": {"audio": np.ones(16, bool)},
            "y": clip // 4,
            "group": clip,
            "labels": ["cat", "dog"],
            "dims": {"audio": 2},
            "errors": [],
            "models": models,
        },
    )
    seen = {}

    class Recorder:
        def fit(self, x, present, y, groups):
            seen["groups"] = groups
            return self

    monkeypatch.setattr(fusion, "build_head", lambda *a, **k: Recorder())
    monkeypatch.setattr(fusion, "save_head", lambda *a, **k: None)
    train_module.train(tmp_path / "data", "stacking", tmp_path / "head", folds=0, group=FOLDER_GROUP, augment=False)
    # clips: cat/ann 0,1  cat/bob 2,3  dog/ann 4,5  dog/bob 6,7 -> ann = 0, bob = 1
    assert seen["groups"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]


def test_clip_windows_are_cached_so_training_again_embeds_only_new_clips(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from streamclf.config import load_config

    monkeypatch.setenv("STREAMCLF_CACHE", str(tmp_path / "cache"))
    clips = []
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.mp4").write_bytes(label.encode())
        clips.append((tmp_path / label / "a.mp4", label))
    models = SimpleNamespace(
        config=load_config(), encoders={m: SimpleNamespace(weights=SimpleNamespace(id=m)) for m in ("audio", "video")}
    )
    embedded = []

    def scored(paths, *args):
        embedded.extend(paths)
        rows = []
        for k, p in enumerate(paths):  # cat: two windows, the second without video; dog: one window
            n = 2 if "cat" in str(p) else 1
            for w in range(n):
                emb = {"audio": np.full(3, k + w, np.float32), **({"video": np.ones(2, np.float32)} if w == 0 else {})}
                rows.append((k, SimpleNamespace(embeddings=SimpleNamespace(embedding=emb))))
        return rows, []

    monkeypatch.setattr(trainset, "_scored", scored)
    first = trainset.clip_embeddings(clips, models.config, models)
    assert embedded == [p for p, _ in clips]
    second = trainset.clip_embeddings(clips, models.config, models)
    assert embedded == [p for p, _ in clips]  # nothing embedded again
    for key in ("y", "group"):
        assert (first[key] == second[key]).all()
    for m in ("audio", "video"):
        assert (first["x"][m] == second["x"][m]).all() and (first["present"][m] == second["present"][m]).all()
    assert second["present"]["video"].tolist() == [True, False, True]
    clips[1][0].write_bytes(b"changed dog")  # a changed file is embedded again
    trainset.clip_embeddings(clips, models.config, models)
    assert embedded[-1] == clips[1][0] and len(embedded) == 3
    # windows with the extra audio features are other windows: both clips again, then cached too
    trainset.clip_embeddings(clips, models.config, models, audio_features="mfcc-shape-v1")
    trainset.clip_embeddings(clips, models.config, models, audio_features="mfcc-shape-v1")
    assert len(embedded) == 5 and models.audio_features == "mfcc-shape-v1"


@pytest.mark.parametrize("flag, features", [([], "mfcc-shape-v1"), (["--no-audio-features"], None)])
def test_train_adds_the_audio_features_unless_told_not_to(tmp_path, monkeypatch, flag, features):
    from streamclf.cli import main

    seen = {}

    def fake_train(*args, **kw):
        seen.update(kw)
        return {"metrics": {}}

    monkeypatch.setattr(train_module, "train", fake_train)
    data = _folder(tmp_path / "data", {"a": 1, "b": 1})
    assert main(["train", str(data), "--out", str(tmp_path / "head"), *flag]) == 0
    assert seen.get("audio_features", "mfcc-shape-v1") == features


def test_noise_copies_put_background_under_the_sound_at_the_asked_snr():
    from streamclf.trainset import active_power, add_noise

    rng = np.random.default_rng(0)
    sound = np.zeros(16000, np.float32)
    sound[4000:12000] = 0.3 * np.sin(np.arange(8000) / 5.0)  # the sound, silence around it
    for snr in (-10.0, 0.0, 20.0):
        for backgrounds in (None, [rng.standard_normal(3000).astype(np.float32)]):  # generated, or a short file
            noisy = add_noise(sound, snr, np.random.default_rng(1), backgrounds)
            noise = noisy - sound
            assert len(noisy) == len(sound) and np.abs(noise[:4000]).max() > 0  # under the silence too
            measured = 10 * np.log10(active_power(sound) / np.mean(noise.astype(np.float64) ** 2))
            assert measured == pytest.approx(snr, abs=0.01)


def test_degraded_copies_damage_one_modality_per_clip_and_keep_the_other():
    from streamclf.trainset import degrader

    audio = (0.3 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    frame = np.full((32, 32, 3), 200, np.uint8)
    frame[8:24, 8:24] = 20
    degrade = degrader(40, np.random.default_rng(0), None)
    kinds = []
    for i in range(40):
        a, frames = degrade(i, audio, [frame, frame])
        frames = list(frames)
        noisy, damaged = not np.array_equal(a, audio), any(not np.array_equal(f, frame) for f in frames)
        assert noisy != damaged and len(frames) == 2  # exactly one modality is damaged
        kinds.append(noisy)
    assert 10 < sum(kinds) < 30
    again = degrader(40, np.random.default_rng(0), None)
    # the same seed degrades the same clip the same way: a cached stream is the stream it stands for
    assert all(np.array_equal(degrade(i, audio, [])[0], again(i, audio, [])[0]) for i in range(5))


def test_compose_passes_each_clip_through_the_degrade_hook(tmp_path):
    from streamclf.clips import compose
    from streamclf.sources import read_audio
    from streamclf.types import SAMPLE_RATE

    wav = _tone(tmp_path / "tone.wav")
    seen = []

    def degrade(i, audio, frames):
        seen.append(i)
        return (audio * 0 if i == 1 else audio), frames

    events = compose([(wav, "a"), (wav, "a")], tmp_path / "s.mkv", gap=0.5, degrade=degrade)
    audio = read_audio(tmp_path / "s.mkv")
    peak = [np.abs(audio[int(e.start * SAMPLE_RATE) : int(e.end * SAMPLE_RATE)]).max() for e in events]
    assert seen == [0, 1] and peak[0] == pytest.approx(0.5, rel=0.02) and peak[1] < 1e-3


def test_held_out_stream_is_named_per_event_with_the_other_modality_removed():
    """`stream_runs` decides events as `eval --compose` does; audio only = the video absent from every window."""
    from streamclf.heldout import stream_runs

    class Head:  # the audio says class 0, the video class 1, both together: the video
        classes, modalities, dims = ["a", "b"], ("audio", "video"), {"audio": 1, "video": 1}

        def predict_proba(self, x, present):
            p = np.full((len(x["audio"]), 2), 0.5)
            p[present["audio"]] = [0.8, 0.2]
            p[present["video"]] = [0.1, 0.9]
            return p

    spans = [(t, t + 1.0) for t in np.arange(0, 6, 0.5)]
    windows = [{"audio": np.zeros(1, np.float32), "video": np.zeros(1, np.float32)} for _ in spans]
    windows[-1] = {}  # the end of the stream: nothing present
    runs = stream_runs(Head(), windows, spans, [(0.5, 2.0), (3.0, 4.5)], smoothing=0.5)
    assert runs == {"fused": ["b", "b"], "audio only": ["a", "a"], "video only": ["b", "b"]}
