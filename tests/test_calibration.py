"""Calibrated zero-shot fusion.

The calibration file, the category hierarchy, reliability, silence, the calibrate verb.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamclf.cli import main
from streamclf.encoders import EfficientNet_Lite0_Weights, YAMNet_Weights
from streamclf.fusion import CategoryMap, ZeroShotFusion
from streamclf.fusion.calibration import BUILTIN, Calibration, Card, ModalityFit, fit_modality, load_calibration
from streamclf.scoring import NOTHING, Win, outcome
from streamclf.types import Embeddings

from .conftest import shared

LABELS = {
    "imagenet-1k": EfficientNet_Lite0_Weights.DEFAULT.meta["categories"],
    "audioset": YAMNet_Weights.DEFAULT.meta["categories"],
}
SPACES = {"audio": ("audioset", 521, "sigmoid"), "video": ("imagenet-1k", 1000, "softmax")}
IDS = {"audio": YAMNet_Weights.DEFAULT.id, "video": EfficientNet_Lite0_Weights.DEFAULT.id}


@pytest.fixture
def music_map(tmp_path: Path) -> CategoryMap:
    path = tmp_path / "cats.yaml"
    path.write_text(
        'categories:\n  music:\n    audioset: ["Music"]\n'
        '  guitar:\n    parent: music\n    imagenet-1k: [402]\n    audioset: ["Guitar"]\n'
        '  dog:\n    imagenet-1k: ["151-268"]\n    audioset: ["Dog", "Bark"]\n'
        '  speech:\n    audioset: ["Speech"]\n'
    )
    return CategoryMap.load(path, LABELS)


def _audio(**scores: float) -> np.ndarray:
    out = np.zeros(521, np.float32)
    for name, score in scores.items():
        out[LABELS["audioset"].index(name)] = score
    return out


def _video(index: int | None = None, score: float = 0.0) -> np.ndarray:
    out = np.full(1000, (1 - score) / 1000, np.float32)
    if index is not None:
        out[index] += score
    return out


def _calibration(**fits: ModalityFit) -> Calibration:
    card = Card(data=["test"], clips=4, windows=8, categories=["dog", "guitar"], measured={})
    return Calibration(encoders=IDS, modalities=fits, card=card)


def test_a_recognised_instrument_explains_the_generic_music_tag_away(music_map: CategoryMap) -> None:
    """AudioSet's Music fires near 1 on any instrument; the guitar the camera sees (and the ear hears) wins."""
    fusion = ZeroShotFusion(music_map, SPACES, {"audio": 0.5, "video": 0.5})
    music, guitar = music_map.names.index("music"), music_map.names.index("guitar")
    fused, per = fusion(Embeddings(scores={"audio": _audio(Music=0.97, Guitar=0.39), "video": _video(402, 0.9)}))
    assert per["video"][music] == pytest.approx(per["video"][guitar])  # a guitar in the picture is music
    assert fused[guitar] > fused[music]
    fused, _ = fusion(Embeddings(scores={"audio": _audio(Music=0.97, Guitar=0.05), "video": _video()}))
    assert fused[music] > 0.8 > 0.1 > fused[guitar]  # no instrument recognised: music it is


def test_parent_must_be_another_category_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('categories:\n  guitar:\n    parent: music\n    audioset: ["Guitar"]\n')
    with pytest.raises(ValueError, match=r"bad\.yaml: category 'guitar': parent 'music' must be another category"):
        CategoryMap.load(path, LABELS)


def test_fit_moves_a_miscalibrated_scale_and_says_what_it_measured() -> None:
    """Raw scores that are always twice too confident: the fit lowers them and the card shows the log-loss drop."""
    rng = np.random.default_rng(0)
    truth = rng.random((400, 2)) < 0.3
    raw = np.where(truth, rng.uniform(0.6, 1.0, truth.shape), rng.uniform(0.3, 0.9, truth.shape))
    fit, measured = fit_modality(raw, truth.astype(float), np.ones(2, bool), ["dog", "cat"], {"dog": 5, "cat": 1})
    assert set(fit.category_bias) == {"dog"}  # only a category with enough clips gets its own bias
    assert measured["log_loss_after"] < measured["log_loss_before"]
    assert measured["ece_after"] < measured["ece_before"]


def test_calibration_round_trips_with_its_card_and_refuses_other_encoders(tmp_path: Path) -> None:
    cal = _calibration(audio=ModalityFit(slope=0.9, bias=0.1, category_bias={"dog": 0.5}))
    path = cal.save(tmp_path / "cal.yaml")
    back = Calibration.load(path)
    assert back.modalities == cal.modalities and back.card == cal.card and back.encoders == IDS
    assert load_calibration(str(path), IDS).modalities == cal.modalities
    with pytest.raises(ValueError, match=r"cal\.yaml: fitted for audio encoder weights .* but the config uses 'other'"):
        load_calibration(str(path), {**IDS, "audio": "other"})
    (tmp_path / "junk.yaml").write_text("format: something-else\n")
    with pytest.raises(ValueError, match=r"junk\.yaml: not a streamclf calibration"):
        Calibration.load(tmp_path / "junk.yaml")


@pytest.mark.parametrize(
    "edit,where",
    [
        (lambda d: d.update(temperature=2.0), "temperature: Extra inputs are not permitted"),
        (lambda d: d["card"].update(author="me"), "card.author: Extra inputs are not permitted"),
        (lambda d: d["modalities"]["audio"].update(slope="steep"), "modalities.audio.slope: Input should be"),
        (lambda d: d.update(links={"person": {"audio": 2}}), "links.person.audio: Input should be less than"),
    ],
)
def test_a_card_with_an_unknown_key_or_a_bad_value_is_refused_in_one_line(tmp_path: Path, edit, where: str) -> None:
    """The calibration file is a strict pydantic model: a typo is an error naming the file, never ignored."""
    import yaml

    doc = yaml.safe_load(BUILTIN.read_text())
    edit(doc)
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError) as err:
        Calibration.load(path)
    assert str(err.value).startswith(f"{path}: not a streamclf calibration: {where}") and "\n" not in str(err.value)


def test_the_builtin_calibration_has_a_card_and_is_skipped_for_other_encoders() -> None:
    cal = Calibration.load(BUILTIN)
    assert cal.encoders.items() >= IDS.items() and cal.card.clips > 0 and "tune" in " ".join(cal.card.data)
    assert load_calibration(None, IDS) is not None
    assert load_calibration(None, {**IDS, "video": "mobilenet"}) is None  # raw scores rather than a wrong scale
    assert load_calibration("none", IDS) is None


@pytest.mark.parametrize("calibrated,pooling", [(False, "average"), (True, "average"), (True, "loglinear")])
def test_an_absent_or_silent_modality_cannot_raise_or_lower_what_it_cannot_see(
    music_map: CategoryMap, calibrated: bool, pooling: str
) -> None:
    cal = _calibration(audio=ModalityFit(slope=0.9, bias=0.2), video=ModalityFit(slope=1.1, bias=-0.3))
    cal.pooling = pooling
    fusion = ZeroShotFusion(music_map, SPACES, {"audio": 0.5, "video": 0.5}, calibration=cal if calibrated else None)
    speech, dog = music_map.names.index("speech"), music_map.names.index("dog")
    audio = _audio(Speech=0.7)
    alone, per = fusion(Embeddings(scores={"audio": audio}))
    for video in (_video(), _video(160, 0.9), np.zeros(1000, np.float32)):  # diffuse, a clear dog, a blank
        fused, _ = fusion(Embeddings(scores={"audio": audio, "video": video}))
        assert fused[speech] == pytest.approx(alone[speech])  # the camera cannot see speech
    dog_seen, per = fusion(Embeddings(scores={"video": _video(160, 0.9)}))
    fused, _ = fusion(Embeddings(scores={"audio": np.zeros(521, np.float32), "video": _video(160, 0.9)}))
    assert fused[dog] == pytest.approx(dog_seen[dog], rel=0.01)  # a silent microphone does not lower the seen dog
    bark, _ = fusion(Embeddings(scores={"audio": _audio(Dog=0.69), "video": _video()}))
    heard, _ = fusion(Embeddings(scores={"audio": _audio(Dog=0.69)}))
    assert bark[dog] >= 0.9 * heard[dog]  # a diffuse picture barely votes: the bark off camera carries the dog
    both, per = fusion(Embeddings(scores={"audio": _audio(Dog=0.3), "video": _video(160, 0.9)}))
    assert min(per["audio"][dog], per["video"][dog]) <= both[dog] <= max(per["audio"][dog], per["video"][dog])


def _silent_grey(ffmpeg: str, out: Path, seconds: float = 6.0) -> Path:
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c=gray:s=320x240:r=10:d={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"anullsrc=r=16000:cl=mono:d={seconds}",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        ],
        check=True,
    )
    return out


def test_silence_and_blank_frames_come_out_as_nothing(tmp_path: Path, ffmpeg: str) -> None:
    """The real encoders on silence over grey: no category reaches the default alert score."""
    from streamclf.config import load_config
    from streamclf.evaluate import DEFAULT_THRESHOLD
    from streamclf.labeling import iter_records

    records = list(iter_records(_silent_grey(ffmpeg, tmp_path / "nothing.mp4"), load_config()))
    assert records
    assert max(r["labels"][0]["score"] for r in records) < DEFAULT_THRESHOLD
    windows = [Win(r["t_start"], r["t_end"], {x["label"]: x["score"] for x in r["labels"]}) for r in records]
    assert {outcome(w) for w in windows} == {NOTHING}


def test_silence_and_a_blank_frame_are_the_nothing_outcome_of_the_builtin_fusion() -> None:
    """The default map and calibration on what the encoders give for silence and a featureless frame."""
    from streamclf.fusion.categories import BUILTIN as MAP

    known = {"kinetics-400", "coco", "detector"}
    fusion = ZeroShotFusion(
        CategoryMap.load(MAP, LABELS, known),
        SPACES,
        {"audio": 0.5, "video": 0.5},
        calibration=load_calibration(None, IDS),
    )
    assert fusion.calibration is not None and fusion.calibration.source()["builtin"]
    silence, blank = _audio(Silence=0.95), _video()  # YAMNet on digital silence; a near-uniform softmax
    for scores in ({"audio": silence, "video": blank}, {"audio": silence}, {"video": blank}):
        fused, _ = fusion(Embeddings(scores=scores))
        assert outcome(Win(0.0, 2.0, dict(zip(fusion.names, map(float, fused), strict=True)))) == NOTHING, scores.keys()
    heard, _ = fusion(Embeddings(scores={"audio": _audio(Dog=0.9, Bark=0.9), "video": blank}))
    assert (
        outcome(Win(0.0, 2.0, dict(zip(fusion.names, map(float, heard), strict=True)))) == "dog"
    )  # not always nothing


def _pairs(tmp_path: Path, names: list[str]) -> Path:
    """A folder per category of real image+sound clips (avpairs)."""
    from streamclf.clips import pair_clip

    data = shared("avpairs")
    root = tmp_path / "clips"
    for name in names:
        category = name.split("_")[1]
        (root / category).mkdir(parents=True, exist_ok=True)
        pair_clip(data / f"{name}.png", data / f"{name}.ogg", root / category / f"{name}.mp4", max_seconds=3.0)
    return root


@pytest.mark.slow
def test_calibrate_fits_a_file_that_run_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _pairs(tmp_path, ["farm_dog_photo", "farm_dog_drawing", "farm_cat_photo", "farm_cat_drawing"])
    out = tmp_path / "mine.yaml"
    assert main(["calibrate", str(root), "--out", str(out), "--note", "two dogs, two cats"]) == 0
    cal = Calibration.load(out)
    assert cal.card.clips == 4 and cal.card.categories == ["cat", "dog"] and cal.card.note == "two dogs, two cats"
    assert set(cal.modalities) == {"audio", "video"} and cal.encoders == IDS
    assert "log-loss" in capsys.readouterr().out
    assert (
        main(
            ["label", str(root / "dog"), "--out", str(tmp_path / "labels"), "--calibration", str(out), "--no-progress"]
        )
        == 0
    )


def test_one_class_or_another_encoders_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.mp4").write_bytes(b"")
    assert main(["calibrate", str(tmp_path), "--out", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamclf: error:") and "\n" not in err
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "b.mp4").write_bytes(b"")
    other = _calibration(audio=ModalityFit(slope=1.0, bias=0.0))
    other.encoders = {"audio": "some-other-audio-weights"}
    path = other.save(tmp_path / "other.yaml")
    assert main(["eval", str(tmp_path), "--calibration", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("streamclf: error:") and "fitted for audio encoder weights 'some-other" in err[-1]


def test_calibrate_reads_the_detectors_scores_when_it_is_on() -> None:
    """With the person detector on, its raw scores are fitted like a modality's (they raised KeyError before)."""
    from types import SimpleNamespace

    from streamclf.calibrate import clip_scores
    from streamclf.config import load_config
    from streamclf.fusion.categories import BUILTIN as MAP

    detector_labels = {**LABELS, "detector": ["person"]}
    fusion = ZeroShotFusion(
        CategoryMap.load(MAP, detector_labels, {"kinetics-400"}),
        {**SPACES, "detector": ("detector", 1, "sigmoid")},
        {"audio": 0.5, "video": 0.5, "detector": 0.5},
    )

    def score(windows: list, memory: dict) -> list:
        scores = {"audio": _audio(Speech=0.8), "video": _video(), "detector": np.array([0.9], np.float32)}
        return [SimpleNamespace(embeddings=Embeddings(scores=scores)) for _ in windows]

    models = SimpleNamespace(
        fusion=fusion,
        encoders={"audio": None, "video": None},
        config=load_config(),
        score=score,
        memory=lambda source: None,
    )
    sample = Path(__file__).resolve().parents[1] / "streamclf" / "data" / "sample.mp4"
    rows, count = clip_scores([(sample, "person")], models, lambda msg: None)  # type: ignore[arg-type]
    assert count > 0 and len(rows["detector"]) == count
    person = fusion.names.index("person")
    assert rows["detector"][0][0][person] == pytest.approx(0.9) and rows["detector"][0][1] == "person"
