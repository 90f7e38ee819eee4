"""Sinks against the real thing on 127.0.0.1: an HTTP receiver, a mosquitto broker, SQLite files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from streamclf.config import MqttConfig, SqliteConfig, WebhookConfig
from streamclf.records import parse
from streamclf.sinks import MqttSink, SqliteSink, WebhookSink, format_events, query_events, record_key
from streamclf.sinks.mqtt import topic_safe

SECRET = "s3cret-key"


def wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def window(i: int, source: str = "cam1", label: str = "dog", score: float = 0.91, **extra) -> dict:
    return {
        "id": f"run-{i:07d}",
        "time": f"2026-11-28T05:{i // 60:02d}:{i % 60:02d}.000Z",
        "source": source,
        "t_start": i * 0.5,
        "t_end": i * 0.5 + 2.0,
        "labels": [{"label": label, "score": score}],
        "audio": None,
        "video": None,
        "modality": {},
        "latency_ms": 0.0,
        **extra,
    }


def alert(i: int, source: str = "cam1", label: str = "dog", time_: str | None = None) -> dict:
    """An alert record; its state is neither started nor ended (so no ON/OFF), unless a test sets it."""
    return {
        "type": "alert",
        "id": f"alert-{i}",
        "time": time_ or f"2026-11-28T06:00:{i:02d}.000Z",
        "source": source,
        "label": label,
        "state": "",
        "event": f"{source}:{label}:{12.0 + i:.2f}",
        "start": 12.0 + i,
        "end": 16.5 + i,
        "peak": 0.93,
        "peak_at": 14.0 + i,
        "trigger": "fused",
        "driver": "audio",
        "modality": {"audio": 0.93, "video": None},
        "snapshot": f"events/{i}.jpg",
        "clip": f"events/{i}.wav",
    }


def status(i: int, source: str = "cam1", state: str = "live", **extra) -> dict:
    return {
        "type": "status",
        "id": f"status-{i}",
        "time": f"2026-11-28T04:00:{i:02d}.000Z",
        "source": source,
        "state": state,
        **extra,
    }


# ---------------------------------------------------------------- webhook


class Receiver:
    """What a webhook endpoint saw; ``answers`` are status codes to give before answering 200."""

    def __init__(self, answers: tuple[int, ...] = ()) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            status = self.answers.pop(0) if self.answers else 200
            self.requests.append((status, headers, body))
            return status

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for status, h, b in self.requests if status == 200]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.server.receiver.answer(dict(self.headers), body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def serve(receiver: Receiver, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)  # allow_reuse_address: restart on the same port
    server.receiver = receiver
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def webhook_config(tmp_path: Path, port: int, **kw) -> WebhookConfig:
    kw = {"spool": str(tmp_path / "spool.db"), "backoff_max": 0.2, "drain_timeout": 20.0, **kw}
    return WebhookConfig(url=f"http://127.0.0.1:{port}/hook", **kw)


@pytest.fixture
def receiver():
    """A running receiver on a free port; yields (receiver, port)."""
    rec, port = Receiver(), free_port()
    server = serve(rec, port)
    yield rec, port
    stop(server)


@pytest.mark.timeout(60)
def test_webhook_delivers_everything_in_order_across_a_receiver_restart(tmp_path, caplog):
    rec, port = Receiver(), free_port()
    server = serve(rec, port)
    cfg = WebhookConfig(
        url=f"http://hookuser:hookpass@127.0.0.1:{port}/hook",
        secret=SECRET,
        spool=str(tmp_path / "spool.db"),
        backoff_max=0.3,
        drain_timeout=20.0,
        headers={"X-Env": "test"},
    )
    sink = WebhookSink(cfg)
    records = [window(i) for i in range(30)]
    try:
        for r in records[:10]:
            sink.write(parse(r))
        wait_until(lambda: len(rec.accepted()) >= 5, "the first deliveries")
        stop(server)
        for r in records[10:20]:
            sink.write(parse(r))
        wait_until(lambda: sink.stats()["retries"] > 0, "a failed attempt while the receiver is down")
        assert sink.stats()["pending"] >= 10
        server = serve(rec, port)
        for r in records[20:]:
            sink.write(parse(r))
    finally:
        sink.close()
        stop(server)

    accepted = rec.accepted()
    keys = [h["Idempotency-Key"] for h, _ in accepted]
    assert list(dict.fromkeys(keys)) == [r["id"] for r in records]  # all, in order
    first_body = {}
    for headers, body in accepted:
        assert json.loads(body) == next(r for r in records if r["id"] == headers["Idempotency-Key"])
        assert first_body.setdefault(headers["Idempotency-Key"], body) == body  # a repeat is the same record
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Streamclf-Signature"], f"sha256={expected}")
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Env"] == "test"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"hookuser:hookpass").decode()
    stats = sink.stats()
    assert (stats["delivered"], stats["pending"], stats["failed"]) == (30, 0, 0)
    assert stats["retries"] > 0
    err = caplog.text  # the sink's lines go to the streamclf logger
    assert f"http://127.0.0.1:{port}/hook unavailable" in err
    assert "hookpass" not in err and "hookuser" not in err and SECRET not in err


@pytest.mark.timeout(60)
def test_webhook_retries_server_errors_until_accepted(tmp_path, receiver):
    rec, port = receiver
    rec.answers = [500, 503, 429, 408]
    sink = WebhookSink(webhook_config(tmp_path, port))
    records = [alert(i) for i in range(3)]
    for r in records:
        sink.write(parse(r))
    sink.close()
    assert [json.loads(b)["id"] for _, _, b in rec.requests] == ["alert-0"] * 5 + ["alert-1", "alert-2"]
    assert [s for s, _, _ in rec.requests] == [500, 503, 429, 408, 200, 200, 200]
    assert sink.stats() == {"delivered": 3, "retries": 4, "pending": 0, "failed": 0}


@pytest.mark.timeout(60)
def test_webhook_rejected_record_goes_to_dead_letters_and_the_rest_flows(tmp_path, receiver, caplog):
    rec, port = receiver
    rec.answers = [200, 400]
    cfg = webhook_config(tmp_path, port)
    sink = WebhookSink(cfg)
    for i in range(4):
        sink.write(parse(window(i)))
    sink.close()
    assert [h["Idempotency-Key"] for h, _ in rec.accepted()] == ["run-0000000", "run-0000002", "run-0000003"]
    assert sink.stats() == {"delivered": 3, "retries": 0, "pending": 0, "failed": 1}
    with sqlite3.connect(cfg.spool) as db:
        dead = db.execute("SELECT key, status, body FROM dead").fetchall()
    assert [(k, s) for k, s, _ in dead] == [("run-0000001", 400)]
    assert json.loads(dead[0][2]) == window(1)
    err = [r.getMessage() for r in caplog.records if r.name.startswith("streamclf")]
    assert len(err) == 1 and "run-0000001" in err[0] and "HTTP 400" in err[0]


@pytest.mark.timeout(60)
def test_webhook_spool_survives_close_and_resumes_in_order(tmp_path):
    port = free_port()  # nobody listens yet
    cfg = webhook_config(tmp_path, port, drain_timeout=0.5)
    first = WebhookSink(cfg)
    for i in range(5):
        first.write(parse(window(i)))
    t0 = time.monotonic()
    first.close()
    assert time.monotonic() - t0 < 3.0  # drain_timeout bounds close()
    assert first.stats()["pending"] == 5 and first.stats()["delivered"] == 0

    rec = Receiver()
    server = serve(rec, port)
    try:
        second = WebhookSink(cfg)
        for i in range(5, 8):
            second.write(parse(window(i)))
        second.close()
    finally:
        stop(server)
    assert [json.loads(b)["id"] for _, b in rec.accepted()] == [window(i)["id"] for i in range(8)]
    assert second.stats() == {"delivered": 8, "retries": 0, "pending": 0, "failed": 0}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "events, expected",
    [("all", ["run-0000000", "alert-0", "status-0"]), ("alerts", ["alert-0"]), ("labels", ["run-0000000"])],
)
def test_webhook_sends_only_the_chosen_events(tmp_path, receiver, events, expected):
    rec, port = receiver
    sink = WebhookSink(webhook_config(tmp_path, port, events=events))
    for r in (window(0), alert(0), status(0)):
        sink.write(parse(r))
    sink.close()
    assert [h["Idempotency-Key"] for h, _ in rec.accepted()] == expected
    assert "X-Streamclf-Signature" not in rec.accepted()[0][0]  # no secret, no signature


@pytest.mark.timeout(60)
def test_webhook_signs_with_the_key_from_the_environment_and_spools_in_the_state_folder(
    tmp_path, receiver, monkeypatch
):
    rec, port = receiver
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # platformdirs' user_state_dir on Linux
    monkeypatch.setenv("STREAMCLF_TEST_HOOK_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    cfg = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", secret_env="STREAMCLF_TEST_HOOK_KEY", drain_timeout=20.0)
    sink = WebhookSink(cfg)
    sink.write(parse(alert(0)))
    sink.close()
    ((headers, body),) = rec.accepted()
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Streamclf-Signature"] == f"sha256={expected}"
    spools = list((tmp_path / "state").rglob("*.db"))
    assert spools == [cfg.spool_path()] and not list(tmp_path.glob("*.db"))  # not in the current folder


def test_record_key_falls_back_to_a_content_hash():
    record = {"source": "cam1", "t_start": 0.0, "labels": []}
    assert record_key({**record, "id": "abc"}) == "abc"
    assert (
        record_key(record)
        == record_key(dict(reversed(record.items())))
        == hashlib.sha256(b'{"labels":[],"source":"cam1","t_start":0.0}').hexdigest()
    )
    assert record_key(record) != record_key({**record, "t_start": 0.5})


# ---------------------------------------------------------------- mqtt


class Broker:
    """mosquitto on a fixed port, stoppable and restartable; logs go to a file."""

    def __init__(self, exe: str, folder: Path, persistent: bool = False) -> None:
        self.exe, self.port, self.proc = exe, free_port(), None
        self.conf, self.log = folder / "mosquitto.conf", folder / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "user root",
            f"persistence {'true' if persistent else 'false'}",
            f"persistence_location {folder}/",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def mosquitto() -> str:
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return exe


@pytest.fixture
def broker(mosquitto, tmp_path):
    b = Broker(mosquitto, tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """Records every message under ``topic``; a ``client_id`` makes its session survive a broker restart."""

    def __init__(self, port: int, topic: str, client_id: str | None = None) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=client_id is None
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=2)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def retained(self, topic: str) -> list[str]:
        with self.lock:
            return [payload for t, payload, retain in self.messages if t == topic and retain]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_topic_safe_names():
    assert topic_safe("front door/cam#1+x") == "front_door_cam_1_x"
    assert topic_safe("cam1") == "cam1"


@pytest.mark.timeout(60)
def test_mqtt_topics_payloads_and_availability(broker):
    prefix = "home/streamclf"
    watcher = Subscriber(broker.port, f"{prefix}/#")
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port, prefix=prefix, qos=1, discovery=False))
    late = None
    try:
        wait_until(lambda: sink.connected, "the sink to connect")
        src = "front door/cam#1"
        records = [window(0, source=src), alert(0, source=src), status(0, source=src, state="reconnecting")]
        for r in records:
            sink.write(parse(r))
        base = f"{prefix}/front_door_cam_1"
        wait_until(lambda: watcher.on(f"{base}/status"), "the status message")
        assert [json.loads(p) for p in watcher.on(f"{base}/labels")] == [records[0]]
        assert [json.loads(p) for p in watcher.on(f"{base}/alerts")] == [records[1]]
        assert [json.loads(p) for p in watcher.on(f"{base}/status")] == [records[2]]
        assert watcher.on(f"{prefix}/availability") == ["online"]

        late = Subscriber(broker.port, f"{prefix}/#")  # sees only what the broker retained
        wait_until(lambda: late.retained(f"{base}/status"), "the retained status")
        assert late.retained(f"{prefix}/availability") == ["online"]
        assert json.loads(late.retained(f"{base}/status")[0]) == records[2]
        assert late.on(f"{base}/labels") == [] and late.on(f"{base}/alerts") == []
    finally:
        sink.close()
        if late is not None:
            late.close()
    wait_until(lambda: watcher.on(f"{prefix}/availability") == ["online", "offline"], "offline on close")
    assert watcher.on(f"{base}/alerts/dog") == ["OFF"]  # the label's state topic, set up with its first alert
    # online, window, alert, alerts/dog, status, the status marked offline on close, offline
    assert sink.stats() == {"delivered": 7, "retries": 0, "pending": 0, "failed": 0}
    after = Subscriber(broker.port, f"{prefix}/availability")
    try:
        wait_until(lambda: after.retained(f"{prefix}/availability"), "the retained availability")
        assert after.retained(f"{prefix}/availability") == ["offline"]
    finally:
        after.close()
        watcher.close()


@pytest.fixture
def restartable(mosquitto, tmp_path):
    """A broker to stop and start, and a subscriber to ``t/#`` whose session the broker keeps meanwhile.

    Persistence on and a fixed client id: whatever the sink publishes after a
    restart reaches the subscriber, whichever of the two reconnects first.
    """
    broker = Broker(mosquitto, tmp_path, persistent=True)
    broker.start()
    watcher = None
    try:
        watcher = Subscriber(broker.port, "t/#", client_id="test-watcher")
        yield broker, watcher
    finally:
        if watcher is not None:
            watcher.close()
        broker.stop()


@pytest.mark.timeout(60)
def test_mqtt_reconnects_after_a_broker_restart_and_sends_what_was_queued(restartable):
    broker, watcher = restartable
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port, prefix="t", qos=1, discovery=False))
    try:
        records = [window(i) for i in range(260)]  # more than paho's 20 in flight wait while the broker is away
        for r in records[:5]:
            sink.write(parse(r))
        wait_until(lambda: len(watcher.on("t/cam1/labels")) == 5, "the records before the restart")

        broker.stop()
        wait_until(lambda: not sink.connected, "the sink to notice the broker is gone")
        for r in records[5:-5]:
            sink.write(parse(r))  # queued by paho
        assert sink.stats()["pending"] >= 250
        broker.start()
        wait_until(lambda: sink.connected, "the sink to reconnect", timeout=20)
        for r in records[-5:]:
            sink.write(parse(r))
        wait_until(lambda: len(set(watcher.on("t/cam1/labels"))) == len(records), "all records", timeout=20)
        received = [json.loads(p)["id"] for p in watcher.on("t/cam1/labels")]
        assert list(dict.fromkeys(received)) == [r["id"] for r in records]  # QoS 1: a repeat is allowed
        wait_until(lambda: sink.stats()["pending"] == 0, "the broker to acknowledge everything")
        assert sink.stats() == {"delivered": len(records) + 2, "retries": 1, "pending": 0, "failed": 0}  # 2 x online
        fresh = Subscriber(broker.port, "t/availability")
        try:
            wait_until(lambda: fresh.retained("t/availability"), "the retained availability")
            assert fresh.retained("t/availability") == ["online"]
        finally:
            fresh.close()
    finally:
        sink.close()
    wait_until(lambda: watcher.on("t/availability")[-1:] == ["offline"], "offline on close")


@pytest.mark.timeout(60)
def test_mqtt_broker_down_at_start_is_connected_later_in_order(restartable):
    broker, watcher = restartable
    broker.stop()
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port, prefix="t", qos=2, discovery=False))
    states = [status(i, state=f"state-{i}") for i in range(30)]
    try:
        for r in states[:3]:
            sink.write(parse(r))
        assert not sink.connected and sink.stats()["pending"] == 3
        broker.start()
        for r in states[3:]:  # keep writing while the sink reconnects: nothing may overtake the backlog
            sink.write(parse(r))
            time.sleep(0.1)
        wait_until(lambda: len(watcher.on("t/cam1/status")) == len(states), "all status records")
        assert [json.loads(p) for p in watcher.on("t/cam1/status")] == states  # QoS 2: once each, in order
        fresh = Subscriber(broker.port, "t/cam1/status")
        try:
            wait_until(lambda: fresh.retained("t/cam1/status"), "the retained status")
            assert [json.loads(p) for p in fresh.retained("t/cam1/status")] == states[-1:]
        finally:
            fresh.close()
    finally:
        sink.close()
    assert sink.stats() == {"delivered": len(states) + 3, "retries": 0, "pending": 0, "failed": 0}  # + offline status


@pytest.mark.timeout(60)
def test_mqtt_home_assistant_discovery_and_states(broker):
    """Each source becomes a Home Assistant device: retained discovery configs, then states on their topics."""
    from jinja2 import Environment

    ha = Subscriber(broker.port, "homeassistant/#")
    watcher = Subscriber(broker.port, "streamclf/#")
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port), labels=["dog", "glass"])
    src, base = "front door", "streamclf/front_door"
    labels = window(1, source=src, label="dog", score=0.91)
    try:
        for r in [
            status(0, src, "connecting"),
            labels,
            {**alert(1, src, "dog"), "state": "started"},
            {**alert(1, src, "dog"), "id": "alert-1b", "state": "ended"},
            status(1, src, "live"),
        ]:
            sink.write(parse(r))
        wait_until(
            lambda: watcher.on(f"{base}/status")[-1:] and "live" in watcher.on(f"{base}/status")[-1], "the live status"
        )
    finally:
        sink.close()
    wait_until(lambda: watcher.on("streamclf/availability")[-1:] == ["offline"], "offline on close")
    assert watcher.on(f"{base}/alerts/dog") == ["OFF", "ON", "OFF"] and watcher.on(f"{base}/alerts/glass") == ["OFF"]

    late = Subscriber(broker.port, "homeassistant/#")  # what Home Assistant finds when it starts later
    try:
        wait_until(
            lambda: len(late.retained("homeassistant/binary_sensor/streamclf/front_door_glass/config")),
            "the retained discovery configs",
        )
        configs = {t: json.loads(p) for t, p, retain in late.messages if retain}
    finally:
        late.close()
        ha.close()
    assert sorted(configs) == [
        "homeassistant/binary_sensor/streamclf/front_door_dog/config",
        "homeassistant/binary_sensor/streamclf/front_door_glass/config",
        "homeassistant/sensor/streamclf/front_door_label/config",
        "homeassistant/sensor/streamclf/front_door_status/config",
    ]
    assert len({c["unique_id"] for c in configs.values()}) == 4
    for c in configs.values():
        assert c["availability_topic"] == "streamclf/availability" and c["payload_not_available"] == "offline"
        assert c["device"]["identifiers"] == ["streamclf_front_door"] and c["device"]["name"] == src
    dog = configs["homeassistant/binary_sensor/streamclf/front_door_dog/config"]
    assert (dog["state_topic"], dog["payload_on"], dog["payload_off"]) == (f"{base}/alerts/dog", "ON", "OFF")
    label = configs["homeassistant/sensor/streamclf/front_door_label/config"]
    state = configs["homeassistant/sensor/streamclf/front_door_status/config"]
    assert label["state_topic"] == f"{base}/labels" and state["state_topic"] == f"{base}/status"
    jinja = Environment()  # Home Assistant's templates are Jinja: they must read our records
    assert jinja.from_string(label["value_template"]).render(value_json=labels) == "dog"
    assert json.loads(jinja.from_string(label["json_attributes_template"]).render(value_json=labels))["score"] == 0.91
    assert jinja.from_string(state["value_template"]).render(value_json=status(1, src, "live")) == "live"

    after = Subscriber(broker.port, "streamclf/#")  # the next run's subscriber must not see a live camera
    try:
        wait_until(lambda: after.retained(f"{base}/status"), "the retained status")
        last = json.loads(after.retained(f"{base}/status")[0])
        assert last["state"] == "offline" and last["time"] >= labels["time"]
        assert after.retained("streamclf/availability") == ["offline"]
        assert after.retained(f"{base}/alerts/dog") == ["OFF"]
    finally:
        after.close()
        watcher.close()


@pytest.mark.timeout(60)
def test_mqtt_unclean_exit_leaves_offline_and_a_dated_status(broker, tmp_path):
    """Killed mid-run: the broker's last will says offline, and the retained status carries its time."""
    script = tmp_path / "publisher.py"
    script.write_text(f"""
import os, time
from streamclf.config import MqttConfig
from streamclf.records import parse
from streamclf.sinks import MqttSink
sink = MqttSink(MqttConfig(host="127.0.0.1", port={broker.port}))
sink.write(parse({{"type": "status", "source": "cam", "state": "live"}}))
while sink.stats()["pending"]:
    time.sleep(0.05)
os._exit(9)  # no close(): as if the process were killed
""")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        timeout=30,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert run.returncode == 9, run.stderr
    after = Subscriber(broker.port, "streamclf/#")
    try:
        wait_until(lambda: after.retained("streamclf/availability") == ["offline"], "the last will")
        wait_until(lambda: after.retained("streamclf/cam/status"), "the retained status")
        last = json.loads(after.retained("streamclf/cam/status")[0])
        assert last["state"] == "live" and last["time"] <= _iso(datetime.now(UTC))
    finally:
        after.close()


# ---------------------------------------------------------------- sqlite


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def store(tmp_path) -> Path:
    """An event store with alerts from two cameras, status records and (ignored) window records."""
    path = tmp_path / "events.db"
    sink = SqliteSink(SqliteConfig(path=str(path)))
    sink.write(parse(alert(1, "cam1", "dog")))
    sink.write(parse(alert(2, "cam2", "Glass")))
    sink.write(parse(alert(3, "cam1", "siren")))
    sink.write(parse(alert(4, "cam1", "dog")))
    sink.write(parse(status(1, "cam1", "live")))
    sink.write(parse(status(2, "cam2", "reconnecting", message="cannot open: Connection refused; retrying in 2.1s")))
    for i in range(3):
        sink.write(parse(window(i)))
    sink.write(parse(alert(1, "cam1", "dog")))  # the same id again
    sink.close()
    assert sink.stats() == {"stored": 6, "duplicates": 1}
    return path


def test_sqlite_queries_by_kind_source_and_label(store):
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(query_events(store)) == ["alert-1", "alert-2", "alert-3", "alert-4"]
    assert ids(query_events(store, source="cam1")) == ["alert-1", "alert-3", "alert-4"]
    assert ids(query_events(store, label="DOG")) == ["alert-1", "alert-4"]
    assert ids(query_events(store, source="cam2", label="glass")) == ["alert-2"]
    assert ids(query_events(store, kind="status")) == ["status-1", "status-2"]
    assert query_events(store, kind="labels") == []  # labels: false
    assert ids(query_events(store, limit=2)) == ["alert-3", "alert-4"]  # the newest two, oldest first
    assert query_events(store, source="cam1")[0] == alert(1, "cam1", "dog")  # the whole record comes back
    with pytest.raises(ValueError, match="'alerts' is not one of alert, status, labels"):
        query_events(store, kind="alerts")


def test_sqlite_since_accepts_iso_and_relative_ages(tmp_path, store):
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(query_events(store, since="2026-11-28T06:00:03")) == ["alert-3", "alert-4"]  # naive = UTC
    assert ids(query_events(store, since="2026-11-28T07:00:02+01:00")) == ["alert-2", "alert-3", "alert-4"]
    assert ids(query_events(store, since="2026-11-29")) == []

    path = tmp_path / "recent.db"
    sink = SqliteSink(SqliteConfig(path=str(path)))
    now = datetime.now(UTC)
    for i, age in enumerate([timedelta(days=3), timedelta(hours=3), timedelta(minutes=10)]):
        sink.write(parse(alert(i, time_=_iso(now - age))))
    sink.close()
    assert ids(query_events(path, since="30m")) == ["alert-2"]
    assert ids(query_events(path, since="2h")) == ["alert-2"]
    assert ids(query_events(path, since="4h")) == ["alert-1", "alert-2"]
    assert ids(query_events(path, since="7d")) == ["alert-0", "alert-1", "alert-2"]
    with pytest.raises(ValueError, match="'yesterday' is neither an ISO date/time"):
        query_events(path, since="yesterday")


def test_sqlite_stores_window_records_only_when_asked(tmp_path):
    path = tmp_path / "labels.db"
    sink = SqliteSink(SqliteConfig(path=str(path), labels=True))
    sink.write(parse(window(0, label="dog")))
    sink.write(parse(window(1, label="cat", source="cam2")))
    sink.write(parse(window(1, label="cat", source="cam2")))
    no_id = {k: v for k, v in window(2).items() if k != "id"}
    sink.write(parse(no_id))
    sink.write(parse(dict(no_id)))  # identical content, no id: the same event
    sink.close()
    assert sink.stats() == {"stored": 3, "duplicates": 2}
    assert [r["labels"][0]["label"] for r in query_events(path, kind="labels")] == ["dog", "cat", "dog"]
    assert query_events(path, kind="labels", label="cat", source="cam2") == [window(1, label="cat", source="cam2")]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id FROM events WHERE id = ?", (record_key(no_id),)).fetchone()


def test_sqlite_missing_database_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(ValueError, match="nope.db"):
        query_events(missing)
    assert not missing.exists()  # querying never creates a database


def test_format_events_is_one_aligned_line_per_event(store):
    text = format_events(query_events(store, source="cam1"))
    lines = text.splitlines()
    assert len(lines) == 3
    # the evidence a person opens next: the snapshot and the clip
    assert lines[0].split() == [
        "2026-11-28",
        "06:00:01Z",
        "cam1",
        "dog",
        "13.0-17.5s",
        "0.93",
        "events/1.jpg",
        "events/1.wav",
    ]
    assert (
        len({line.index(span) for line, span in zip(lines, ["13.0-17.5s", "15.0-19.5s", "16.0-20.5s"], strict=True)})
        == 1
    )
    status_lines = format_events(query_events(store, kind="status")).splitlines()
    assert status_lines[0].split() == ["2026-11-28", "04:00:01Z", "cam1", "live", "-", "-"]
    assert status_lines[1].endswith("reconnecting  -  -  cannot open: Connection refused; retrying in 2.1s")
    assert format_events([]) == "no events"


def test_events_verb_prints_json(store):
    """`streamclf events --json`: the whole stored records, oldest first, for scripts."""
    cli = subprocess.run(
        [sys.executable, "-m", "streamclf", "events", "--db", str(store), "--source", "cam1", "--json"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == [alert(1, "cam1", "dog"), alert(3, "cam1", "siren"), alert(4, "cam1", "dog")]
