"""Publish records to an MQTT broker under topics home-automation tools (Home Assistant, Node-RED) expect.

Topics: ``PREFIX/<source>/labels`` (window records), ``PREFIX/<source>/alerts``,
``PREFIX/<source>/status`` (retained, so a new subscriber sees the current
state) and ``PREFIX/availability``: "online" on every connect, "offline" on
close or, through the broker's last will, when streamclf vanishes.

paho's network thread connects in the background and reconnects on its own.
Records wait in an unbounded backlog while the broker is away and go out in
order after the reconnect: a small thread hands them to paho only once the
messages paho still held from before the outage are acknowledged (paho resends
those after the reconnect, so anything handed over earlier would overtake them
and, say, a stale status would end up retained).
"""
from __future__ import annotations

import json
import re
import sys
import threading
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..config import MqttConfig

CLOSE_TIMEOUT = 5.0  # seconds close() waits for messages still queued or in flight
_TOPIC_UNSAFE = re.compile(r"[+#/\s\x00]+")  # wildcards, level separator, whitespace


def topic_safe(name: str) -> str:
    """A source name usable as one topic level ("front door/cam#1" -> "front_door_cam_1")."""
    return _TOPIC_UNSAFE.sub("_", name) or "_"


class MqttSink:
    """One message per record, JSON payload, QoS ``cfg.qos``."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix.rstrip("/")
        self.availability = f"{self.prefix}/availability"
        self._cond = threading.Condition()  # guards everything below; never held while calling paho
        self._backlog: deque[tuple[str, str, bool]] = deque()  # (topic, payload, retain), not yet handed to paho
        self._synced = False  # connected, and nothing from before a reconnect is still unacknowledged
        self._closing = self._stopped = self._connected_before = False
        self.sent = self.delivered = self.failed = self.reconnects = 0
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id or "")
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set()  # the system's CA certificates
        client.will_set(self.availability, "offline", qos=cfg.qos, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._pump = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._pump.start()
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        client.loop_start()  # first connect (retried until the broker is up) and reconnects happen there

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def write(self, record: dict[str, Any]) -> None:
        sub = {"alert": "alerts", "status": "status", None: "labels"}.get(record.get("type"))
        if sub is not None:
            topic = f"{self.prefix}/{topic_safe(str(record.get('source', '')))}/{sub}"
            self._enqueue(topic, json.dumps(record, ensure_ascii=False), retain=sub == "status")

    def close(self) -> None:
        """Say "offline" after everything else, wait (bounded) for it, and disconnect cleanly (no last will)."""
        if self._closing:
            return
        self._closing = True
        self._enqueue(self.availability, "offline", retain=True)
        with self._cond:
            self._cond.wait_for(lambda: not self._backlog and self.delivered >= self.sent, timeout=CLOSE_TIMEOUT)
            self._stopped = True
            self._cond.notify_all()
        self._pump.join()
        self._client.disconnect()
        self._client.loop_stop()

    def stats(self) -> dict[str, int]:
        """delivered = acknowledged by the broker; pending = waiting or unacknowledged; retries = reconnects."""
        with self._cond:
            return {"delivered": self.delivered, "retries": self.reconnects,
                    "pending": len(self._backlog) + self.sent - self.delivered, "failed": self.failed}

    def _enqueue(self, topic: str, payload: str, retain: bool) -> None:
        with self._cond:
            self._backlog.append((topic, payload, retain))
            self._cond.notify_all()

    def _ready(self) -> bool:
        if not self._synced:  # QoS 0 is never acknowledged: only the connection counts
            self._synced = self._client.is_connected() and (self.cfg.qos == 0 or self.delivered >= self.sent)
        return self._synced

    def _run(self) -> None:
        """The only thread that hands records to paho, so they keep their order."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or (self._backlog and self._ready()))
                if self._stopped:
                    return
                topic, payload, retain = self._backlog.popleft()
                self.sent += 1
            self._publish(topic, payload, retain)

    def _publish(self, topic: str, payload: str, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (self.cfg.qos and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
            return  # sent, or (the connection just dropped) kept by paho and resent after the reconnect
        with self._cond:
            self.sent -= 1
            self.failed += 1

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            print(f"mqtt: {self.cfg.host}:{self.cfg.port} refused the connection ({reason}); retrying",
                  file=sys.stderr)
            return
        with self._cond:
            self.reconnects += self._connected_before
            self._connected_before = True
            self.sent += 1
            self._cond.notify_all()
        self._publish(self.availability, "online", retain=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            self._synced = False
        if not self._closing:
            print(f"mqtt: lost {self.cfg.host}:{self.cfg.port} ({reason}); reconnecting, "
                  f"records are kept until then", file=sys.stderr)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            self.delivered += 1
            self._cond.notify_all()
