"""Config: typed, validated at start, unknown keys rejected with the file and key named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from streamclf.config import Config, ConfigError, field_info, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_documented_defaults_are_the_defaults():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def _schema_keys(model: BaseModel, prefix: str = "") -> list[str]:
    keys = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        keys += [prefix + name, *(_schema_keys(value, f"{prefix}{name}.") if isinstance(value, BaseModel) else [])]
    return keys


def _yaml_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys += [prefix + key, *(_yaml_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [])]
    return keys


def test_default_yaml_lists_and_documents_every_setting():
    """default.yaml is where a user reads the settings: a field added to the schema but not there (or there
    without a word on what it does) fails here, not in a user's head."""
    text = (ROOT / "configs" / "default.yaml").read_text()
    listed = set(_yaml_keys(yaml.safe_load(text)))
    missing = [k for k in _schema_keys(Config()) if k not in listed]
    assert not missing, f"configs/default.yaml lacks {missing}"
    lines = text.splitlines()
    undocumented = [
        line.strip()
        for i, line in enumerate(lines)
        if re.match(r"^\s*\w+:\s*[^#\s]", line) and "#" not in line and not lines[i - 1].lstrip().startswith("#")
    ]
    assert not undocumented, f"configs/default.yaml: settings without a comment: {undocumented}"


def test_unknown_key_is_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("fusion:\n  topk: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: fusion\.topk: unknown key; did you mean 'top_k'\?$"):
        load_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"window.lenght": 2}, "window.lenght: unknown key; did you mean 'length'?"),
        (
            {"sinks.webhook": {"url": "http://127.0.0.1:9/", "secrte": "x"}},
            "sinks.webhook.secrte: unknown key; did you mean 'secret'?",
        ),
        (
            {"alerts.rules": [{"label": "dog", "min_scor": 0.4}]},
            "alerts.rules.0.min_scor: unknown key; did you mean 'min_score'?",
        ),
        (
            {"alerts.rules": [{"label": "dog", "sources": {"cam1": {"cooldwn": 5}}}]},
            "alerts.rules.0.sources.cam1.cooldwn: unknown key; did you mean 'cooldown'?",
        ),
        ({"fusion.zzz": 1}, "fusion.zzz: unknown key (allowed here: categories, head, calibration, top_k, smoothing)"),
    ],
)
def test_unknown_key_suggests_the_closest_or_lists_the_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(**overrides)
    assert str(err.value) == f"config: {message}"


# ---------------------------------------------------------------- webhook secret and spool

HOOK = "http://127.0.0.1:9/hook"


def test_webhook_secret_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("STREAMCLF_TEST_HOOK_KEY", "k3y")
    hook = load_config(**{"sinks.webhook": {"url": HOOK, "secret_env": "STREAMCLF_TEST_HOOK_KEY"}}).sinks.webhook
    assert hook.signing_key() == "k3y" and hook.secret is None
    monkeypatch.delenv("STREAMCLF_TEST_HOOK_KEY")
    with pytest.raises(
        ConfigError,
        match="sinks.webhook: secret_env: environment variable STREAMCLF_TEST_HOOK_KEY is not set or empty$",
    ):
        load_config(**{"sinks.webhook": {"url": HOOK, "secret_env": "STREAMCLF_TEST_HOOK_KEY"}})
    with pytest.raises(ConfigError, match="give secret or secret_env, not both"):
        load_config(**{"sinks.webhook": {"url": HOOK, "secret": "a", "secret_env": "HOME"}})


def test_webhook_spool_defaults_to_the_state_folder_one_per_url(tmp_path, monkeypatch):
    from platformdirs import user_state_dir

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: out\nsinks:\n  webhook:\n    url: {HOOK}\n")
    hook = load_config(cfg).sinks.webhook  # the default spool is outside output_dir and still allowed
    spool = hook.spool_path()
    assert spool.parent == Path(user_state_dir("streamclf")) / "webhook" and spool.suffix == ".db"
    other = load_config(**{"sinks.webhook.url": HOOK + "2"}).sinks.webhook.spool_path()
    assert other != spool and other.parent == spool.parent  # two receivers never share a spool
    assert not any(tmp_path.rglob("*.db"))


def test_webhook_spool_in_a_config_stays_contained_but_the_command_line_may_place_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sinks:\n  webhook:\n    url: {HOOK}\n    spool: ../../spool.db\n")
    with pytest.raises(ConfigError, match="sinks.webhook.spool: '../../spool.db' is outside the output folder"):
        load_config(cfg)
    elsewhere = tmp_path.parent / "spool.db"
    hook = load_config(cfg, **{"sinks.webhook.spool": str(elsewhere)}).sinks.webhook
    assert hook.spool_path() == elsewhere


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
    assert {r.label for r in config.alerts.rules} == {"person", "dog", "glass", "alarm"}
    assert config.detector.enabled
    assert config.sinks.webhook is not None and config.sinks.webhook.events == "alerts"


def test_webhook_url_scheme_is_checked(tmp_path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("sinks:\n  webhook:\n    url: file:///etc/passwd\n")
    with pytest.raises(ConfigError, match=r"c.yaml: sinks.webhook.*http"):
        load_config(bad)


def _resolves(path: str) -> bool:
    """Whether ``path`` names a field, through optional sections (``sinks.mqtt`` is None until configured)."""
    try:
        field_info(path)
    except KeyError:
        return False
    return True


def test_every_setting_the_cli_overrides_is_in_the_schema():
    """The command line writes settings by their config path ("window.hop"); a renamed field must fail here,
    not as an 'unknown key' in front of a user who typed a valid flag."""
    trees = [ast.parse((ROOT / "streamclf" / name).read_text()) for name in ("cli.py", "commands.py")]
    top = set(Config.model_fields)
    strings = [
        n.value for tree in trees for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    paths = {s for s in strings if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", s) and s.split(".")[0] in top}
    assert len(paths) > 15, "the CLI's overrides were not found"
    assert not [p for p in sorted(paths) if not _resolves(p)]
