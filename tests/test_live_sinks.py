"""A whole live run into every sink at once: webhook down mid-run, SQLite queried with `streamclf events`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamclf.config import AlertRule, AlertsConfig, SqliteConfig, WebhookConfig, load_config
from tests.conftest import bark_clip, shared
from tests.test_sinks import Receiver, Subscriber, broker, free_port, mosquitto, serve, stop  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_run_loses_nothing_across_a_webhook_outage(
    tmp_path: Path, ffmpeg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import streamclf

    clip = bark_clip(ffmpeg, tmp_path / "yard.mp4")
    receiver, port = Receiver(), free_port()
    server = serve(receiver, port)
    config = load_config(**{"sources.realtime": True})
    config.sinks = config.sinks.model_copy(
        update={
            "webhook": WebhookConfig(
                url=f"http://127.0.0.1:{port}/hook",
                secret="s3cret",
                backoff_max=0.5,
                spool=str(tmp_path / "spool.db"),
                drain_timeout=30,
            ),
            "sqlite": SqliteConfig(path=str(tmp_path / "events.db")),
        }
    )
    config.alerts = AlertsConfig(rules=[AlertRule(label="dog", min_score=0.3)], events_dir=str(tmp_path / "events"))
    outage: dict[str, object] = {}

    def down() -> None:
        stop(server)
        outage["during"] = len(receiver.accepted())

    def up() -> None:
        outage["server"] = serve(receiver, port)

    timers = [threading.Timer(3.0, down), threading.Timer(8.0, up)]
    for t in timers:
        t.start()
    try:
        out = tmp_path / "records.jsonl"
        streamclf.run([str(clip)], out=out, config=config)
    finally:
        for t in timers:
            t.cancel()
        if "server" in outage:
            stop(outage["server"])  # type: ignore[arg-type]
    produced = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    delivered = [json.loads(body)["id"] for _, body in receiver.accepted()]
    assert "during" in outage and "server" in outage, "the outage did not happen inside the run"
    assert delivered == produced  # all of them, in order, once each (no answer was lost on the way)
    with capsys.disabled():
        print(
            f"\nwebhook outage 3-8 s of a 12 s real-time run: produced {len(produced)}, "
            f"delivered {len(delivered)}, lost {len(set(produced) - set(delivered))}"
        )

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamclf",
            "events",
            "--db",
            str(tmp_path / "events.db"),
            "--label",
            "dog",
            "--since",
            "1h",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    lines = [line for line in cli.stdout.splitlines() if "dog" in line]
    assert len(lines) == 2 and "yard.mp4" in lines[0]  # started and ended


@pytest.mark.timeout(120)
def test_cli_publishes_to_mqtt(broker, tmp_path: Path) -> None:  # noqa: F811 (pytest fixture from test_sinks)
    """`streamclf run --mqtt` against a real mosquitto: labels, status and availability topics."""
    watcher = Subscriber(broker.port, "streamclf/#")
    try:
        clip = shared("media/grid/bbaf2n.mpg")
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamclf",
                "run",
                f"talk={clip}",
                "--no-dashboard",
                "--mqtt",
                f"127.0.0.1:{broker.port}",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=90,
        )
        assert cli.returncode == 0, cli.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "offline" not in watcher.on("streamclf/availability"):
            time.sleep(0.1)
        labels = [json.loads(m) for m in watcher.on("streamclf/talk/labels")]
        states = [json.loads(m)["state"] for m in watcher.on("streamclf/talk/status")]
        assert labels and all(r["source"] == "talk" for r in labels)
        assert states[0] == "connecting" and states[-1] == "ended"
        assert watcher.on("streamclf/availability")[-1] == "offline"
    finally:
        watcher.close()
