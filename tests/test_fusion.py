"""Zero-shot fusion: the category map, per-modality projection, weighting and masking."""
from __future__ import annotations

import numpy as np
import pytest

from streamclf.encoders import EfficientNet_Lite0_Weights, Torchvision_Weights, YAMNet_Weights
from streamclf.fusion import EMA, CategoryMap, ZeroShotFusion
from streamclf.fusion.categories import BUILTIN
from streamclf.types import Embeddings

LABELS = {"imagenet-1k": EfficientNet_Lite0_Weights.DEFAULT.meta["categories"],
          "audioset": YAMNet_Weights.DEFAULT.meta["categories"]}


def test_builtin_map_is_broad_and_valid():
    cats = CategoryMap.load(BUILTIN, {**LABELS, "kinetics-400": Torchvision_Weights.R2PLUS1D_18.meta["categories"]})
    assert 30 <= len(cats.names) <= 70
    assert len(cats.members["kinetics-400"]) >= 30, "a Kinetics clip model should see most everyday categories"
    for must in ("dog", "cat", "speech", "siren", "car"):
        assert any(must in name for name in cats.names), must
    both = [c for c in cats.names if all(c in cats.members[s] for s in LABELS)]
    assert len(both) >= 20, "most categories should be seen by both modalities"


@pytest.fixture
def small_map(tmp_path):
    path = tmp_path / "cats.yaml"
    path.write_text('categories:\n  dog:\n    imagenet-1k: ["151-268"]\n    audioset: ["Dog", "Bark"]\n'
                    '  speech:\n    audioset: ["Speech"]\n')
    return CategoryMap.load(path, LABELS)


def test_map_errors_name_the_file_and_the_member(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('categories:\n  dog:\n    audioset: ["Woof"]\n')
    with pytest.raises(ValueError, match=r"bad\.yaml: category 'dog': audioset: 'Woof'"):
        CategoryMap.load(path, LABELS)
    path.write_text('categories:\n  dog:\n    imagenet-1k: [1000]\n')
    with pytest.raises(ValueError, match="out of range"):
        CategoryMap.load(path, LABELS)


def test_fusion_weights_present_modalities_that_can_see(small_map):
    spaces = {"audio": ("audioset", 521, "sigmoid"), "video": ("imagenet-1k", 1000, "softmax")}
    fusion = ZeroShotFusion(small_map, spaces, {"audio": 0.5, "video": 0.5})
    audio = np.zeros(521, np.float32)
    audio[LABELS["audioset"].index("Bark")] = 0.8
    audio[LABELS["audioset"].index("Speech")] = 0.6
    video = np.zeros(1000, np.float32)
    video[[151, 200]] = 0.2  # two dog breeds: summed softmax mass
    fused, per = fusion(Embeddings(scores={"audio": audio, "video": video}))
    assert per["video"][0] == pytest.approx(0.4) and per["audio"][0] == pytest.approx(0.8)
    assert fused[0] == pytest.approx(0.6)  # (0.8 + 0.4) / 2
    assert fused[1] == pytest.approx(0.6)  # speech: video cannot see it, so audio alone
    fused, per = fusion(Embeddings(scores={"video": video}))  # no audio in this window
    assert set(per) == {"video"}
    assert fused[0] == pytest.approx(0.4) and fused[1] == 0.0


def test_ema_smooths_per_source():
    ema = EMA(0.5)
    assert ema("a", np.array([1.0]))[0] == 1.0
    assert ema("a", np.array([0.0]))[0] == 0.5
    assert ema("b", np.array([0.0]))[0] == 0.0
    with pytest.raises(ValueError):
        EMA(0.0)
