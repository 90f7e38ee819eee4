"""Untrusted inputs: checkpoints, heads, configs, source URLs; secrets kept out of every output."""

from __future__ import annotations

import ast
import io
import pickle
import sqlite3
from pathlib import Path

import pytest
import yaml

from streamclf.records import Record
from tests.conftest import bark_clip
from tests.test_sinks import free_port

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    import torch

    from streamclf.encoders import WeightsUnavailable, load_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    with evil.open("wb") as f:
        pickle.dump({"conv.weight": _Payload(marker)}, f, protocol=2)
    with pytest.raises(WeightsUnavailable, match=r"weights\.pt: refused: not a plain weights file"):
        load_checkpoint(evil)
    assert not marker.exists()
    disguised = tmp_path / "weights.safetensors"
    disguised.write_bytes(evil.read_bytes())
    with pytest.raises(WeightsUnavailable, match="refused"):
        load_checkpoint(disguised)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_checkpoint(good)["w"], torch.ones(2))


def test_a_malicious_head_is_refused(tmp_path: Path) -> None:
    from streamclf.fusion.methods import load_head

    marker = tmp_path / "pwned"
    head = tmp_path / "head"
    head.mkdir()
    spec = {"method": "concat", "modalities": ["audio"], "classes": ["a", "b"], "dims": {"audio": 2}}
    (head / "card.yaml").write_text(yaml.safe_dump({"head": spec}))
    with (head / "head.safetensors").open("wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(ValueError, match="unreadable head weights"):
        load_head(head)
    (head / "card.yaml").write_text(f"head: !!python/object/apply:pathlib.Path.touch [{str(marker)!r}]\n")
    with pytest.raises(ValueError, match="unreadable head card"):
        load_head(head)
    assert not marker.exists()


@pytest.mark.parametrize("path", ["../escape.jsonl", "/etc/streamclf.jsonl", "sub/../../escape.jsonl"])
def test_config_output_paths_cannot_leave_the_output_folder(tmp_path: Path, path: str, monkeypatch) -> None:
    from streamclf.config import ConfigError, load_config

    monkeypatch.chdir(tmp_path)
    for key, text in {
        "sinks.jsonl": f"sinks:\n  jsonl: {path}\n",
        "sinks.sqlite.path": f"sinks:\n  sqlite:\n    path: {path}\n",
        "sinks.webhook.spool": f"sinks:\n  webhook:\n    url: http://127.0.0.1:9/\n    spool: {path}\n",
        "alerts.events_dir": f"alerts:\n  events_dir: {path}\n",
    }.items():
        cfg = tmp_path / "c.yaml"
        cfg.write_text("output_dir: out\n" + text)
        with pytest.raises(ConfigError, match=rf"c\.yaml: {key}: .* is outside the output folder"):
            load_config(cfg)
    for outside in ("/etc", "..", "out/../.."):  # nor may the config's own output_dir leave the current folder
        cfg.write_text(f"output_dir: {outside}\nsinks:\n  jsonl: .bashrc\n")
        with pytest.raises(ConfigError, match="c.yaml: output_dir: .* is outside the current folder"):
            load_config(cfg)
    assert load_config(cfg, output_dir=str(tmp_path.parent)).output_dir == str(tmp_path.parent)  # the user's own
    for bad, why in (
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 5000, "nested too deeply|not valid YAML"),
        (b'sinks:\n  jsonl: "a\\0b"\n', "output paths: embedded null byte"),
    ):
        cfg.write_bytes(bad)
        with pytest.raises(ConfigError, match=why):
            load_config(cfg)


def test_config_output_paths_land_in_the_output_folder(tmp_path: Path, monkeypatch) -> None:
    from streamclf.config import load_config

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: out\nsinks:\n  jsonl: a/records.jsonl\n  sqlite:\n    path: ev.db\n")
    config = load_config(cfg, **{"alerts.events_dir": "/tmp/typed-by-the-user"})
    assert Path(config.sinks.jsonl) == Path("out") / "a" / "records.jsonl"
    assert Path(config.sinks.sqlite.path) == Path("out") / "ev.db"
    assert config.alerts.events_dir == "/tmp/typed-by-the-user"  # the command line is the user's own


def test_unknown_keys_and_schemes_are_refused(tmp_path: Path) -> None:
    from streamclf.config import ConfigError, load_config
    from streamclf.sources import SourceSpec

    cfg = tmp_path / "c.yaml"
    cfg.write_text("sinks:\n  jsonl: x.jsonl\n  exec: rm -rf /\n")
    with pytest.raises(ConfigError, match="sinks.exec: unknown key"):
        load_config(cfg)
    cfg.write_text("sinks:\n  webhook:\n    url: file:///etc/passwd\n")
    with pytest.raises(ConfigError, match="must start with http:// or https://"):
        load_config(cfg)
    for url in ("gopher://127.0.0.1/x", "ftp://user:topsecret@127.0.0.1/a.mp4", "data://text/plain,hi"):
        with pytest.raises(ValueError, match="unsupported scheme") as e:
            SourceSpec.parse(url)
        assert "topsecret" not in str(e.value)
    # FFmpeg protocol syntax in a path is a file name, never a protocol
    spec = SourceSpec.parse("concat:/etc/hostname|/etc/hostname")
    assert spec.target == "file:concat:/etc/hostname|/etc/hostname" and not spec.live
    options = SourceSpec.parse("rtsp://127.0.0.1/x").options(load_config().sources)
    assert options["protocol_whitelist"].startswith("rtsp,")


def test_a_path_that_looks_like_a_protocol_is_read_as_a_file(tmp_path: Path) -> None:
    from streamclf.config import load_config
    from streamclf.pipeline import Pipeline
    from streamclf.sources import SourceSpec

    records: list[dict] = []
    spec = SourceSpec.parse("x=subfile:,start,0,end,9,:/etc/hostname")
    states = Pipeline(load_config(), [_Collect(records)]).run([spec])
    assert states["x"].fatal
    assert states["x"].errors[-1].startswith("subfile:,start,0,end,9,:/etc/hostname: cannot open")
    assert records and not [r for r in records if "type" not in r]


class _Collect:
    def __init__(self, into: list[dict]) -> None:
        self.into = into

    def write(self, record: Record) -> None:
        self.into.append(record.to_dict())

    def close(self) -> None:
        pass


SECRETS = ["camPASSW0RD", "camuser", "hookPASSW0RD", "hmacKEY123", "Bearer-T0KEN", "mqttPASSW0RD"]


def test_secrets_never_reach_logs_records_dashboard_or_errors(
    tmp_path: Path, ffmpeg: str, monkeypatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A run with credentials everywhere, every service down so every error path speaks; then grep it all."""
    import logging

    caplog.set_level(logging.DEBUG, logger="streamclf")  # every line the logger says, not just the warnings
    from rich.console import Console

    from streamclf.config import load_config
    from streamclf.dashboard import Dashboard
    from streamclf.pipeline import Pipeline, open_sinks
    from streamclf.sources import SourceSpec

    monkeypatch.chdir(tmp_path)
    clip = bark_clip(ffmpeg, tmp_path / "bark.mp4", seconds=6)
    dead = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "output_dir": "out",
                "sources": {"max_reconnects": 1, "backoff_initial": 0.2, "backoff_max": 0.2, "open_timeout": 2},
                "sinks": {
                    "jsonl": "records.jsonl",
                    "sqlite": {"path": "events.db", "labels": True},
                    "webhook": {
                        "url": f"http://hookuser:hookPASSW0RD@127.0.0.1:{dead}/hook",
                        "secret": "hmacKEY123",
                        "headers": {"Authorization": "Bearer-T0KEN"},
                        "spool": "spool.db",
                        "drain_timeout": 1,
                        "backoff_max": 0.5,
                    },
                    "mqtt": {"host": "127.0.0.1", "port": dead, "username": "mqttuser", "password": "mqttPASSW0RD"},
                },
                "alerts": {"events_dir": "events", "rules": [{"label": "dog", "min_score": 0.1, "min_windows": 1}]},
            }
        )
    )
    config = load_config(cfg)
    screen = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    with Dashboard(console=screen) as view:
        pipeline = Pipeline(config, open_sinks(config), on_event=view)
        states = pipeline.run(
            [SourceSpec.parse(str(clip)), SourceSpec.parse(f"rtsp://camuser:camPASSW0RD@127.0.0.1:{dead}/stream")]
        )
    out, err = capfd.readouterr()
    assert any(st.fatal for st in states.values()) and any(not st.fatal for st in states.values())
    texts = {
        "stdout": out,
        "stderr": err,
        "log": caplog.text,
        "dashboard": screen.export_text(),
        "errors": "\n".join(e for st in states.values() for e in st.errors),
    }
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    with sqlite3.connect(tmp_path / "out" / "spool.db") as db:  # what the receiver would get later
        texts["spool"] = "\n".join(str(row) for row in db.execute("SELECT * FROM spool"))
    # the error paths did speak (the live view shows what was printed to stderr meanwhile)
    assert f"127.0.0.1:{dead}/stream" in texts["errors"]
    assert f"webhook: http://127.0.0.1:{dead}/hook unavailable" in texts["log"]  # the streamclf logger
    assert len(texts) > 6
    leaks = {name: s for name, text in texts.items() for s in SECRETS if s in text}
    assert not leaks, leaks


def _shell_calls(tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            bad.append(name)
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                bad.append(f"{name}(shell=...)")
    return bad


def test_no_subprocess_goes_through_a_shell() -> None:
    files = [p for d in ("streamclf", "benchmarks", "tests") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 30
    found = {str(p.relative_to(ROOT)): bad for p in files if (bad := _shell_calls(ast.parse(p.read_text())))}
    assert not found, found
    assert _shell_calls(ast.parse("import subprocess\nsubprocess.run('ls', shell=True)"))  # the check itself works
    assert not _shell_calls(ast.parse("subprocess.run(['ls'], shell=False)"))
