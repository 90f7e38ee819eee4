"""Config: typed, validated at start, unknown keys rejected with the file and key named."""
from __future__ import annotations

from pathlib import Path

import pytest

from streamclf.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_documented_defaults_are_the_defaults():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_unknown_key_is_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fusion:\n  topk: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: fusion\.topk: Extra inputs are not permitted"):
        load_config(cfg)


def test_invalid_values_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="hop .* must not exceed length"):
        load_config(**{"window.hop": 3.0})
    with pytest.raises(ConfigError, match="audio.pool"):
        load_config(**{"audio.pool": "median"})


def test_overrides_apply_on_top_of_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window:\n  fps: 2\n")
    c = load_config(cfg, **{"window.hop": 1.0})
    assert (c.window.fps, c.window.hop, c.window.length) == (2.0, 1.0, 2.0)


def test_surveillance_example_is_valid() -> None:
    config = load_config(ROOT / "configs" / "surveillance.yaml")
    assert {r.label for r in config.alerts.rules} == {"dog", "glass", "alarm"}
    assert config.sinks.webhook is not None and config.sinks.webhook.events == "alerts"


def test_webhook_url_scheme_is_checked(tmp_path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("sinks:\n  webhook:\n    url: file:///etc/passwd\n")
    with pytest.raises(ConfigError, match=r"c.yaml: sinks.webhook.*http"):
        load_config(bad)
