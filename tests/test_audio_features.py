"""The time-structured audio features a head can add to the pooled audio embedding."""

from __future__ import annotations

import numpy as np
import pytest

from streamclf.audio_features import AUDIO_SHAPE, audio_shape, check, compute, size
from streamclf.types import SAMPLE_RATE


def _chirp(f0: float, f1: float, seconds: float = 0.4, at: float = 0.3) -> np.ndarray:
    """A rising (or falling) tone placed ``at`` seconds into a 1 s window of silence."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    out = np.zeros(SAMPLE_RATE, np.float32)
    start = int(at * SAMPLE_RATE)
    out[start : start + len(tone)] = tone * np.hanning(len(tone))
    return out


def test_features_ignore_loudness_and_where_the_sound_sits_but_keep_its_order():
    rising = audio_shape(_chirp(300, 3000))
    assert rising.shape == (size(AUDIO_SHAPE),) and np.isfinite(rising).all()
    shape = slice(0, -1)  # everything but the level feature
    quiet = audio_shape(0.03 * _chirp(300, 3000))  # -30 dB: a far microphone
    later = audio_shape(_chirp(300, 3000, at=0.55))
    assert np.allclose(quiet[shape], rising[shape], atol=0.05)
    assert quiet[-1] == pytest.approx(rising[-1] - 0.3, abs=0.01)
    assert np.allclose(later, rising, atol=0.05)
    falling = audio_shape(_chirp(3000, 300))
    # the same sounds in the other order: a mean over the window cannot tell them apart, the segments can
    assert np.abs(falling[shape] - rising[shape]).max() > 1.0


def test_silence_and_short_windows_give_finite_features():
    for samples in (np.zeros(SAMPLE_RATE, np.float32), np.zeros(100, np.float32), _chirp(500, 500)[:7000]):
        assert np.isfinite(audio_shape(samples)).all()
    assert audio_shape(np.zeros(SAMPLE_RATE))[-1] == pytest.approx(-1.0)  # the floor: a silent window says so


def test_unknown_recipe_is_refused_and_none_adds_nothing():
    assert check(None) is None and size(None) == 0 and compute(None, np.zeros(10)).shape == (0,)
    with pytest.raises(ValueError, match=r"unknown audio features 'mfcc-shape-v9' \(this version knows mfcc-shape-v1"):
        check("mfcc-shape-v9")


def test_a_head_card_names_its_audio_features_and_an_unknown_recipe_is_refused(tmp_path):
    """Old heads (no key) run on the plain embedding; a head from a newer recipe says so in one line."""
    from streamclf.fusion import build_head, save_head
    from streamclf.fusion.trained import HeadFusion

    head = build_head("gated", ("audio", "video"), ["a", "b"], {"audio": 4, "video": 3}, epochs=1)
    assert HeadFusion(save_head(head, tmp_path / "old", {})).audio_features is None
    assert HeadFusion(save_head(head, tmp_path / "new", {"audio_features": AUDIO_SHAPE})).audio_features == AUDIO_SHAPE
    save_head(head, tmp_path / "newer", {"audio_features": "mfcc-shape-v9"})
    with pytest.raises(ValueError, match=r"newer: unknown audio features 'mfcc-shape-v9'"):
        HeadFusion(tmp_path / "newer")
