"""Zero-shot fusion: the category map, per-modality projection, weighting and masking."""

from __future__ import annotations

import numpy as np
import pytest

from streamclf.encoders import EfficientNet_Lite0_Weights, SSDLite_Person_Weights, Torchvision_Weights, YAMNet_Weights
from streamclf.fusion import EMA, CategoryMap, ZeroShotFusion
from streamclf.fusion.categories import BUILTIN
from streamclf.types import Embeddings

LABELS = {
    "imagenet-1k": EfficientNet_Lite0_Weights.DEFAULT.meta["categories"],
    "audioset": YAMNet_Weights.DEFAULT.meta["categories"],
}
DETECTOR = {"detector": SSDLite_Person_Weights.DEFAULT.meta["categories"]}


def test_builtin_map_is_broad_and_valid():
    cats = CategoryMap.load(
        BUILTIN, {**LABELS, **DETECTOR, "kinetics-400": Torchvision_Weights.R2PLUS1D_18.meta["categories"]}
    )
    assert 30 <= len(cats.names) <= 80
    assert len(cats.members["kinetics-400"]) >= 30, "a Kinetics clip model should see most everyday categories"
    for must in ("dog", "cat", "speech", "siren", "car"):
        assert any(must in name for name in cats.names), must
    both = [c for c in cats.names if all(c in cats.members[s] for s in LABELS)]
    assert len(both) >= 20, "most categories should be seen by both modalities"


@pytest.fixture
def small_map(tmp_path):
    path = tmp_path / "cats.yaml"
    path.write_text(
        'categories:\n  dog:\n    imagenet-1k: ["151-268"]\n    audioset: ["Dog", "Bark"]\n'
        '  speech:\n    audioset: ["Speech"]\n  car:\n    imagenet-1k: [817]\n'
    )
    return CategoryMap.load(path, LABELS)


def test_map_errors_name_the_file_and_the_member(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('categories:\n  dog:\n    audioset: ["Woof"]\n')
    with pytest.raises(ValueError, match=r"bad\.yaml: category 'dog': audioset: 'Woof'"):
        CategoryMap.load(path, LABELS)
    path.write_text("categories:\n  dog:\n    imagenet-1k: [1000]\n")
    with pytest.raises(ValueError, match="out of range"):
        CategoryMap.load(path, LABELS)
    path.write_text('categories:\n  dog:\n    audioset: ["Dog"]\n    link: {imagenet-1k: 0.5}\n')
    with pytest.raises(ValueError, match=r"bad\.yaml: category 'dog': link must map its own label spaces"):
        CategoryMap.load(path, LABELS)
    path.write_text('categories:\n  dog:\n    audioset: ["Dog"]\n    evidence: any\n')
    with pytest.raises(ValueError, match=r"bad\.yaml: category 'dog': evidence must be pooled or independent"):
        CategoryMap.load(path, LABELS)


SPACES = {"audio": ("audioset", 521, "sigmoid"), "video": ("imagenet-1k", 1000, "softmax")}


def _audio(**scores: float) -> np.ndarray:
    out = np.zeros(521, np.float32)
    for name, score in scores.items():
        out[LABELS["audioset"].index(name)] = score
    return out


def test_fusion_weights_present_modalities_that_can_see(small_map):
    fusion = ZeroShotFusion(small_map, SPACES, {"audio": 0.5, "video": 0.5})
    audio = _audio(Bark=0.8, Speech=0.6)
    video = np.zeros(1000, np.float32)
    video[[151, 200]] = 0.2  # two dog breeds: summed softmax mass
    fused, per = fusion(Embeddings(scores={"audio": audio, "video": video}))
    assert per["video"][0] == pytest.approx(0.4) and per["audio"][0] == pytest.approx(0.8)
    # each votes with its evidence (top category score squared): (0.64 * 0.8 + 0.16 * 0.4) / 0.8
    assert fused[0] == pytest.approx(0.72, abs=1e-4)
    assert fused[1] == pytest.approx(0.6)  # speech: video cannot see it, so audio alone
    fused, per = fusion(Embeddings(scores={"video": video}))  # no audio in this window
    assert set(per) == {"video"}
    assert fused[0] == pytest.approx(0.4) and fused[1] == 0.0
    fixed = ZeroShotFusion(small_map, SPACES, {"audio": 0.5, "video": 0.5}, sharpness=0)
    assert fixed(Embeddings(scores={"audio": audio, "video": video}))[0][0] == pytest.approx(0.6)  # plain average


def test_a_modality_that_sees_nothing_in_particular_barely_votes(small_map):
    """A dog barks off-camera: the camera's picture holds nothing it knows well, so the bark carries the dog."""
    fusion = ZeroShotFusion(small_map, SPACES, {"audio": 0.5, "video": 0.5})
    diffuse = np.full(1000, 1 / 1000, np.float32)  # softmax mass spread over everything: 0.118 on the dog breeds
    fused, per = fusion(Embeddings(scores={"audio": _audio(Dog=0.69), "video": diffuse}))
    assert per["video"][0] == pytest.approx(0.118)
    assert fused[0] >= 0.9 * 0.69  # the plain average gave 0.40


def test_a_modality_that_clearly_sees_something_else_lowers_a_category(small_map):
    """A confident picture of something else outvotes a weak sound, and a weak sound never raises anything."""
    fusion = ZeroShotFusion(small_map, SPACES, {"audio": 0.5, "video": 0.5})
    car = np.zeros(1000, np.float32)
    car[817] = 0.8  # sports car
    fused, _ = fusion(Embeddings(scores={"audio": _audio(Bark=0.2, Speech=0.1), "video": car}))
    assert fused[0] < 0.2 * 0.5  # the dog is pulled down by a camera that clearly sees a car
    assert fused[1] == pytest.approx(0.1)  # speech: video cannot see it, so audio alone
    assert fused[2] == pytest.approx(0.8)  # the car: a microphone that hears it not (it cannot) leaves it
    confident_dog = np.zeros(1000, np.float32)
    confident_dog[[151, 152]] = 0.4
    fused, _ = fusion(Embeddings(scores={"audio": _audio(Bark=0.2), "video": confident_dog}))
    assert 0.2 < fused[0] <= 0.8  # between the two: never above what the more confident one says


def test_ema_smooths_per_source():
    ema = EMA(0.5)
    assert ema("a", np.array([1.0]))[0] == 1.0
    assert ema("a", np.array([0.0]))[0] == 0.5
    assert ema("b", np.array([0.0]))[0] == 0.0
    with pytest.raises(ValueError):
        EMA(0.0)


def _person_fusion(detector: bool = True, links: dict | None = None) -> tuple[ZeroShotFusion, int]:
    """The built-in map and calibration (with ``links`` added) as ``run`` builds them, the detector on or off."""
    from streamclf.fusion.calibration import load_calibration

    cats = CategoryMap.load(BUILTIN, {**LABELS, **DETECTOR}, {"kinetics-400", "detector"})
    cal = load_calibration(None, {"audio": YAMNet_Weights.DEFAULT.id, "video": EfficientNet_Lite0_Weights.DEFAULT.id})
    assert cal is not None
    cal.links = links or {}
    spaces, weights = dict(SPACES), {"audio": 0.5, "video": 0.5}
    if detector:
        spaces["detector"], weights["detector"] = ("detector", 1, "sigmoid"), 0.5
    return ZeroShotFusion(cats, spaces, weights, calibration=cal), cats.names.index("person")


def _seen(score: float) -> np.ndarray:
    return np.array([score], np.float32)


DIFFUSE = np.full(1000, 1 / 1000, np.float32)  # a picture with nothing the classifier knows


def test_a_person_seen_and_heard_is_stronger_evidence_than_either():
    fusion, person = _person_fusion()
    speech = _audio(Speech=0.9)
    seen, per = fusion(Embeddings(scores={"video": DIFFUSE, "detector": _seen(0.8), "audio": _audio()}))
    seen = seen[person]
    heard = fusion(Embeddings(scores={"video": DIFFUSE, "detector": _seen(0.0), "audio": speech}))[0][person]
    both = fusion(Embeddings(scores={"video": DIFFUSE, "detector": _seen(0.8), "audio": speech}))[0][person]
    assert seen == pytest.approx(per["detector"][person], abs=0.01)  # silence adds next to nothing
    assert both > max(seen, heard)
    assert both == pytest.approx(1 - (1 - seen) * (1 - heard), abs=0.01)  # independent evidence: noisy-OR


def test_a_voice_alone_stays_below_the_alert_threshold_unless_the_calibration_links_it():
    """The rule: a voice counts towards person times its link, 0.4 in the map: someone is about, not in view."""
    from streamclf.evaluate import DEFAULT_THRESHOLD

    fusion, person = _person_fusion()
    loud = _audio(Speech=0.99, Shout=0.99)
    for scores in (
        {"video": DIFFUSE, "detector": _seen(0.01), "audio": loud},  # an empty picture
        {"audio": loud},  # no picture at all
    ):
        fused, per = fusion(Embeddings(scores=scores))
        assert 0.3 < fused[person] < DEFAULT_THRESHOLD and per["audio"][person] <= 0.4
    linked, _ = _person_fusion(links={"person": {"audio": 1.0}})  # a calibration that says a voice is a person
    assert linked(Embeddings(scores={"audio": loud}))[0][person] > DEFAULT_THRESHOLD


def test_without_the_detector_or_its_frames_nothing_changes():
    """Detector off, or on but the window has no frames: every fused score is what the two encoders alone give."""
    on, person = _person_fusion(detector=True)
    off, _ = _person_fusion(detector=False)
    for scores in ({"audio": _audio(Speech=0.8, Bark=0.5)}, {"audio": _audio(Speech=0.8), "video": DIFFUSE}):
        np.testing.assert_allclose(on(Embeddings(scores=scores))[0], off(Embeddings(scores=scores))[0])
    both = {"audio": _audio(Speech=0.8, Dog=0.7), "video": DIFFUSE}
    with_detection, _ = on(Embeddings(scores={**both, "detector": _seen(0.9)}))
    without, _ = off(Embeddings(scores=both))
    others = np.arange(len(without)) != person
    np.testing.assert_allclose(with_detection[others], without[others])  # a person seen lowers no other category
    assert with_detection[person] > without[person]
