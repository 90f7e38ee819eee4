"""The CLI end to end on real media: full clips, one-modality files, and files that are not media."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import shared

WINDOW_FIELDS = {"source", "t_start", "t_end", "labels", "audio", "video", "modality", "latency_ms"}


def streamclf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamclf", *args], capture_output=True, text=True, timeout=timeout)


def window_records(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if "type" not in r]


def check_labels(entries: list[dict]) -> None:
    assert entries and all(set(e) == {"label", "score"} for e in entries)
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_cli_on_pancake_clip(tmp_path):
    clip = shared("media/flipping_a_pancake.mkv")
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(clip), "--no-dashboard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    status = [r for r in records if r.get("type") == "status"]
    windows = [r for r in records if "type" not in r]
    assert [s["state"] for s in status] == ["connecting", "live", "ended"]
    assert len(windows) >= 16  # a 10 s clip, 2 s windows every 0.5 s
    for r in windows:
        assert WINDOW_FIELDS <= set(r)
        assert r["source"] == clip.name and r["t_end"] - r["t_start"] == pytest.approx(2.0)
        check_labels(r["labels"])
        check_labels(r["audio"])
        check_labels(r["video"])
        assert set(r["modality"]) == {e["label"] for e in r["labels"]}
        assert r["latency_ms"] >= 0


def test_audio_only_file(tmp_path):
    wav = shared("sounds/scratch/Animal/Dog1.wav")
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(wav), "--no-dashboard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    windows = window_records(out)
    assert windows and all(r["video"] is None and r["audio"] for r in windows)
    assert all(v["video"] is None for r in windows for v in r["modality"].values())
    heard = {e["label"] for r in windows for e in r["labels"][:3]}
    assert "dog" in heard, heard


def test_video_only_file(tmp_path, ffmpeg):
    muted = tmp_path / "muted.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(shared("media/flipping_a_pancake.mkv")), "-an", "-c:v", "copy", str(muted)],
        check=True,
        timeout=60,
    )
    out = tmp_path / "out.jsonl"
    proc = streamclf("run", str(muted), "--no-dashboard", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    windows = window_records(out)
    assert windows and all(r["audio"] is None and r["video"] for r in windows)
    assert all(v["audio"] is None for r in windows for v in r["modality"].values())


@pytest.mark.parametrize("content", [b"this is not a video\n" * 50, b""], ids=["text", "empty"])
def test_not_media_exits_nonzero_with_one_line(tmp_path, content):
    bogus = tmp_path / "notes.mp4"
    bogus.write_bytes(content)
    proc = streamclf("run", str(bogus), "--no-dashboard", "--quiet", "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamclf: error: ") and str(bogus) in lines[0]


def test_one_bad_source_does_not_stop_the_others(tmp_path):
    bogus = tmp_path / "bad.mp4"
    bogus.write_bytes(b"garbage" * 100)
    out = tmp_path / "out.jsonl"
    proc = streamclf(
        "run", str(bogus), str(shared("sounds/scratch/Animal/Cat.mp3")), "--no-dashboard", "--out", str(out)
    )
    assert proc.returncode == 1
    assert {r["source"] for r in window_records(out)} == {"Cat.mp3"}
    assert "bad.mp4" in proc.stderr


def test_bad_config_names_file_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window:\n  lenght: 2\n")
    proc = streamclf("run", "--config", str(cfg), "--no-dashboard")
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "window.lenght" in proc.stderr and "did you mean 'length'?" in proc.stderr


# ---------------------------------------------------------------- answering before torch loads

# Runs the CLI in a fresh interpreter and reports its exit code and whether torch (or a model) was imported.
PROBE = """
import json, sys
from streamclf.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "torchvision", "streamclf.encoders", "streamclf.pipeline") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def probe(*args: str, cwd: Path) -> tuple[int, list[str], str]:
    """``cwd``: not the checkout, so the code imported is the one on the path (PYTHONPATH or the install)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], result["heavy"], proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["label", "--help"],
        ["train", "--help"],
        ["compare", "--help"],
        ["models", "--help"],
        ["events", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_does_not_import_torch(tmp_path, args):
    code, heavy, _ = probe(*args, cwd=tmp_path)
    assert code == 0 and heavy == []


def test_run_stream_help_does_not_import_torch(tmp_path):
    script = Path(__file__).resolve().parents[1] / "run_stream.py"
    script = (
        f"import runpy, sys\nsys.argv = ['run_stream.py', '--help']\ntry:\n"
        f"    runpy.run_path({str(script)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "False" and "usage: streamclf run" in proc.stdout


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", "--no-dashbord"], "unrecognized arguments"),
        (["run", "--alert", "dog:2"], "--alert dog:2: expected LABEL, LABEL:SCORE or LABEL:audio=SCORE"),
        (["run", "--alert", "dgo"], "'dgo' is not a fused label; closest: dog,"),
        (
            [
                "run",
                "--head",
                str(Path(__file__).resolve().parents[1] / "models" / "heads" / "avdigits"),
                "--alert",
                "7s",
            ],
            "'7s' is not a fused label; closest: 7",
        ),
        (["run", "ftp://example.org/a.mp4"], "unsupported scheme ftp://"),
        (["run", "--hop", "5"], "window: hop (5.0) must not exceed length (2.0)"),
        (["run", "--device", "gpu"], "device: String should match pattern"),
        (
            ["run", "--webhook", "http://127.0.0.1:9/", "--webhook-secret-env", "STREAMCLF_TEST_UNSET"],
            "environment variable STREAMCLF_TEST_UNSET is not set",
        ),
        (["train", "data", "--out", "h", "--fusion", "gatd"], "invalid choice: 'gatd'"),
        (["train", "data", "--out", "h", "--fusion", "mkl"], "invalid choice: 'mkl'"),
        (["train", "no-such-folder", "--out", "h"], "no-such-folder: no such file or folder"),
        (["compare", "--methods", "gated", "bogus"], "invalid choice: 'bogus'"),
        (["label", "x.mp4", "--out", "o", "--ray-address", "auto"], "--ray-address needs --engine ray"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_usage_and_config_errors_exit_2_before_torch(tmp_path, args, says):
    code, heavy, err = probe(*args, cwd=tmp_path)
    assert code == 2 and heavy == [], err
    lines = err.strip().splitlines()  # argparse puts its usage lines first
    assert says in lines[-1] and sum("error:" in line for line in lines) == 1, err


def test_unknown_alert_label_in_a_config_lists_the_closest_labels(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("alerts:\n  rules:\n    - {label: glas_break}\n")
    code, heavy, err = probe("run", "--config", str(cfg), "--no-dashboard", cwd=tmp_path)
    assert code == 2 and heavy == []
    line = err.strip()
    assert line.startswith(f"streamclf: error: {cfg}: alerts.rules: 'glas_break' is not a fused label; closest: glass")


def test_train_and_compare_help_list_the_fusion_methods():
    from streamclf.catalog import COMPARE_ONLY, FUSION_METHODS, TRAINABLE

    compare_help = " ".join(streamclf("compare", "--help").stdout.split())
    train_help = " ".join(streamclf("train", "--help").stdout.split())
    assert all(m in compare_help for m in FUSION_METHODS)
    assert all(m in train_help for m in TRAINABLE) and not any(f" {m}," in train_help for m in COMPARE_ONLY)


def test_every_flag_that_sets_a_config_field_names_one_and_takes_its_help_from_it():
    """Flags that write the config are declared by their config path: a renamed or removed field fails here,
    and a flag's help is the field's description, so the two cannot say different things."""
    import argparse

    from streamclf.cli import _FromSchema, build_parser
    from streamclf.commands import SETTING, overrides
    from streamclf.config import field_info, load_config

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = [(verb, a) for verb, p in verbs.items() for a in p._actions if a.dest.startswith(SETTING)]
    assert len(flags) > 25 and {verb for verb, _ in flags} == {"run", "label", "eval", "calibrate"}
    for verb, action in flags:
        info = field_info(action.dest[len(SETTING) :])  # KeyError names the flag's missing field
        if isinstance(action.help, _FromSchema):
            assert info.description, f"{verb} {action.option_strings[0]}: its field has no description to show"
    assert "(config: window.fps)" in " ".join(verbs["run"].format_help().split())
    args = parser.parse_args(["run", "--fps", "2", "--top-k", "3", "--no-reuse", "--speech", "--sqlite", "e.db"])
    given = overrides(args)
    assert given == {
        "window.fps": 2.0,
        "fusion.top_k": 3,
        "reuse.enabled": False,
        "speech.enabled": True,
        "sinks.sqlite.path": "e.db",
    }
    config = load_config(**given)
    assert (config.window.fps, config.fusion.top_k, config.reuse.enabled) == (2.0, 3, False)
    assert overrides(parser.parse_args(["label", "x", "--out", "o", "--encoder-engine", "torch"])) == {
        "engine": "torch"
    }
