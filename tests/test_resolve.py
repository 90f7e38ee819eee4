"""resolve_config settles what the models dictate before anything is built; a pipeline never runs a classifier
built with other settings than its config (issue 19, item 1). No weights load here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamclf.classifier import Classifier
from streamclf.config import load_config
from streamclf.resolve import resolve_config


def test_the_video_encoder_sets_the_short_side_unless_given() -> None:
    assert resolve_config(load_config()).window.short_side == 256  # EfficientNet-Lite0 reads 256 px
    assert resolve_config(load_config(**{"window.short_side": 320})).window.short_side == 320
    assert resolve_config(load_config(**{"video.enabled": False})).window.short_side is None


def test_a_clip_encoder_sets_the_window_to_its_clip_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(**{"video.encoder": "r2plus1d_18"})
    resolved = resolve_config(config)
    assert (resolved.window.fps, resolved.window.length, resolved.window.short_side) == (15.0, 1.067, 128)
    assert "16 frames at 15 fps" in caplog.text
    caplog.clear()
    assert resolve_config(resolved) == resolved and not caplog.text  # idempotent, and silent the second time
    kept = resolve_config(load_config(**{"video.encoder": "r2plus1d_18", "window.adapt": False}))
    assert (kept.window.fps, kept.window.length) == (config.window.fps, config.window.length)


def test_a_head_card_sets_its_window_and_pooling(tmp_path: Path) -> None:
    window = {"length": 1.0, "hop": 0.25, "fps": 2.0}
    dims = {"audio": 4, "video": 4}
    head = {"method": "concat", "modalities": ["audio", "video"], "classes": ["a", "b"], "dims": dims}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump({"head": head, "window": window, "pool": {"audio": "mean"}}))
    resolved = resolve_config(load_config(**{"fusion.head": str(tmp_path)}))
    assert (resolved.window.length, resolved.window.hop, resolved.window.fps) == (1.0, 0.25, 2.0)
    assert resolved.audio.pool == "mean" and resolved.window.short_side == 256
    assert resolve_config(load_config(**{"fusion.head": str(tmp_path / "missing")})).window.length == 2.0


def test_a_pipeline_refuses_a_classifier_built_with_other_settings() -> None:
    from streamclf.pipeline import Pipeline

    classifier = Classifier.__new__(Classifier)  # its settings only: nothing loads
    classifier.config = resolve_config(load_config())
    classifier.check(load_config(**{"queue_size": 3, "fusion.top_k": 3}))  # how the run goes: fine
    with pytest.raises(ValueError, match=r"video\.pool 'mean' vs 'max'"):
        Pipeline(load_config(**{"video.pool": "max"}), classifier=classifier)
    with pytest.raises(ValueError, match=r"window\.fps"):
        Pipeline(load_config(**{"window.fps": 2.0}), classifier=classifier)
