"""AV-digits building blocks on real data, and the streaming check of the shipped heads."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from sklearn.datasets import load_digits

from streamclf.audio_features import AUDIO_SHAPE, size
from streamclf.avdigits import (
    compose_stream,
    gaussian_noise,
    image_folds,
    mix_at_snr,
    occlude,
    render_digit,
    segment_accuracy,
    slot_audio,
)
from streamclf.sources import read_audio
from streamclf.types import SAMPLE_RATE

from .conftest import DATA, shared

HEADS = Path(__file__).resolve().parents[1] / "models" / "heads"


def test_render_digit_is_a_deterministic_rgb_frame() -> None:
    img = load_digits().images[0]
    a, b = render_digit(img), render_digit(img)
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a[0, 0].tolist() == [255, 255, 255]  # paper margin
    assert a.min() < 80  # ink


def test_slot_audio_centres_and_cuts() -> None:
    out = slot_audio(np.ones(8000, np.float32))
    assert len(out) == SAMPLE_RATE and out[4000:12000].all() and not out[:4000].any()
    long = slot_audio(np.arange(20000, dtype=np.float32))
    assert len(long) == SAMPLE_RATE and long[0] == 2000


def test_mix_at_snr_hits_the_requested_ratio() -> None:
    speech = read_audio(shared("fsdd/7_jackson_3.wav"))
    noise = read_audio(shared("sounds/scratch/Effects/CarPassing.wav"))
    for snr in (10.0, 0.0, -5.0):
        mixed = mix_at_snr(speech, noise, snr, np.random.default_rng(0))
        bg = mixed - slot_audio(speech)
        measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(bg.astype(np.float64) ** 2))
        assert abs(measured - snr) < 0.1


def test_image_noise_is_seeded() -> None:
    f = render_digit(load_digits().images[5])
    g1, g2 = gaussian_noise(f, 80, np.random.default_rng(1)), gaussian_noise(f, 80, np.random.default_rng(1))
    assert np.array_equal(g1, g2) and not np.array_equal(g1, f)
    o = occlude(f, 0.4, np.random.default_rng(2))
    assert 0.35 < (o == 128).all(axis=2).mean() < 0.45


def test_image_folds_are_disjoint_and_stratified() -> None:
    y = load_digits().target
    folds = image_folds(y)
    assert set(folds) == {0, 1, 2, 3}
    for k in range(4):
        counts = np.bincount(y[folds == k], minlength=10)
        assert counts.min() >= 40


def test_compose_stream_has_true_timestamps(tmp_path: Path) -> None:
    shared("fsdd")
    timeline = compose_stream(tmp_path / "s.mp4", [3, 1, 4], "george", DATA)
    assert [s["label"] for s in timeline["segments"]] == ["3", "1", "4"]
    assert json.loads((tmp_path / "s.json").read_text()) == timeline
    with av.open(str(tmp_path / "s.mp4")) as c:
        assert c.streams.video and c.streams.audio
        assert abs(c.duration / av.time_base - 3.0) < 0.1
        times = [f.time for f in c.decode(video=0)]
    assert abs(times[0]) < 1e-6 and abs(times[10] - 1.0) < 1e-6
    wave = read_audio(tmp_path / "s.mp4")
    for k in range(3):  # every slot carries its own utterance, silence at its edges
        slot = wave[k * SAMPLE_RATE : (k + 1) * SAMPLE_RATE]
        centre = np.sum(np.arange(len(slot)) * slot**2) / np.sum(slot**2) / len(slot)
        assert 0.3 < centre < 0.7


def _run_head(stream: Path, head: Path, out: Path) -> list[dict]:
    from streamclf import load_config, run

    config = load_config(**{"fusion.head": str(head), "fusion.smoothing": 1.0})
    run([str(stream)], out=out, config=config)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_shipped_head_on_a_held_out_stream(tmp_path: Path) -> None:
    """A composed stream of an unseen speaker and unseen images: fused >= the better single modality."""
    import yaml

    shared("fsdd")
    card = yaml.safe_load((HEADS / "avdigits" / "card.yaml").read_text())
    speaker, fold = card["metrics"]["held_out_speaker"], card["metrics"]["held_out_image_fold"]
    pool = np.flatnonzero(image_folds(load_digits().target) == fold)
    digits = [int(d) for d in np.random.default_rng(11).permutation(np.tile(np.arange(10), 2))]
    timeline = compose_stream(tmp_path / "s.mp4", digits, speaker, DATA, image_pool=pool, seed=1)
    acc = {}
    for name in ("avdigits", "avdigits-audio", "avdigits-video"):
        records = _run_head(tmp_path / "s.mp4", HEADS / name, tmp_path / f"{name}.jsonl")
        acc[name] = segment_accuracy(records, timeline)["accuracy"]
        if name == "avdigits":
            window = next(r for r in records if "labels" in r and "type" not in r)
            assert set(window["weights"]) >= {"audio", "video"} or window["modality"]
    assert acc["avdigits"] >= max(acc["avdigits-audio"], acc["avdigits-video"]), acc
    assert acc["avdigits"] > 0.5, acc


def test_train_from_labeled_clips_then_run_with_the_head(tmp_path: Path) -> None:
    """`streamclf train` on a folder per class of real A/V clips, then `run --head` labels a new clip."""
    from streamclf.cli import main

    shared("fsdd")
    for label, digit in (("three", 3), ("seven", 7)):
        for seed in range(3):
            compose_stream(tmp_path / "clips" / label / f"{seed}.mp4", [digit] * 2, "jackson", DATA, seed=seed)
    (tmp_path / "clips" / "seven" / "broken.mp4").write_bytes(b"not a video")
    config = tmp_path / "c.yaml"
    config.write_text("window: {length: 1.0, hop: 0.5}\n")
    head = tmp_path / "head"
    # gated, the default: with five training clips an attention head's video branch can be confidently
    # wrong on the new clip's unseen images whatever its audio says (seen with the audio features on)
    assert (
        main(
            [
                "train",
                str(tmp_path / "clips"),
                "--fusion",
                "gated",
                "--out",
                str(head),
                "--config",
                str(config),
                "--epochs",
                "30",
            ]
        )
        == 0
    )
    import yaml

    card = yaml.safe_load((head / "card.yaml").read_text())
    assert card["head"]["classes"] == ["seven", "three"] and card["window"]["length"] == 1.0
    # train adds the time-structured audio features by default; the pipeline appends them for this head
    assert card["audio_features"] == AUDIO_SHAPE and card["head"]["dims"]["audio"] == 1024 + size(AUDIO_SHAPE)
    assert any("broken.mp4" in e for e in card["data"]["skipped"])
    compose_stream(tmp_path / "new.mp4", [7, 7], "jackson", DATA, seed=9)
    out = tmp_path / "out.jsonl"
    assert main(["run", str(tmp_path / "new.mp4"), "--head", str(head), "--no-dashboard", "--out", str(out)]) == 0
    windows = [json.loads(line) for line in out.read_text().splitlines() if '"type"' not in line]
    assert windows and all(w["labels"][0]["label"] == "seven" for w in windows)
    assert set(windows[0]["weights"]) == {"audio", "video"}


def test_noisy_clips_are_the_clean_clips_with_a_real_sound_underneath(tmp_path: Path) -> None:
    """Same speaker, digit, image and length as the clean clip; the silence after the word is no longer silent."""
    from streamclf.avdigits import write_clips

    shared("fsdd")
    shared("sounds")
    clean = write_clips(tmp_path / "clean", ["george"], 1, data_dir=DATA, digits=range(1))
    noisy = write_clips(tmp_path / "noisy", ["george"], 1, data_dir=DATA, digits=range(1), snr_db=0.0)
    assert [p.relative_to(tmp_path / "clean") for p in clean] == [p.relative_to(tmp_path / "noisy") for p in noisy]
    a, b = read_audio(clean[0]), read_audio(noisy[0])
    assert abs(len(a) - len(b)) < SAMPLE_RATE // 10
    tail = slice(-SAMPLE_RATE // 4, None)  # the last quarter second: after the word
    assert np.sqrt(np.mean(a[tail] ** 2)) < 1e-3 < np.sqrt(np.mean(b[tail] ** 2))
