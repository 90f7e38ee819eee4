"""Publish records to an MQTT broker under topics home-automation tools (Home Assistant, Node-RED) expect.

Topics: ``PREFIX/<source>/labels`` (window records), ``PREFIX/<source>/alerts``,
``PREFIX/<source>/alerts/<label>`` ("ON" while an event of that label is open,
else "OFF"; retained), ``PREFIX/<source>/status`` (retained, so a new
subscriber sees the current state; it carries its time, and a clean exit
replaces a state that is not final with "offline") and ``PREFIX/availability``:
"online" on every connect, "offline" on close or, through the broker's last
will, when streamclf vanishes.

Home Assistant discovery (``discovery: true``): before a source's first
record, retained configs under ``DISCOVERY_PREFIX/<component>/<node>/<object>/config``
make the source a device with a "label" sensor (the top fused label), a
"status" sensor and a binary sensor per alert label, all tied to the
availability topic, so a camera shows up in Home Assistant without YAML.

paho's network thread connects in the background and reconnects on its own.
Records wait in an unbounded backlog while the broker is away and go out in
order after the reconnect: a small thread hands them to paho only once the
messages paho still held from before the outage are acknowledged (paho resends
those after the reconnect, so anything handed over earlier would overtake them
and, say, a stale status would end up retained).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from .. import __version__
from ..config import MqttConfig
from ..records import AlertRecord, Record, StatusRecord, TimingsRecord, WindowRecord

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds close() waits for messages still queued or in flight
_TOPIC_UNSAFE = re.compile(r"[+#/\s\x00]+")  # wildcards, level separator, whitespace


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # Home Assistant's node and object ids
TOPICS: dict[type, str] = {WindowRecord: "labels", AlertRecord: "alerts", StatusRecord: "status"}  # PREFIX/<source>/...
FINAL_STATES = ("ended", "error")  # a retained status in one of these stays true after streamclf exits


def topic_safe(name: str) -> str:
    """A source name usable as one topic level ("front door/cam#1" -> "front_door_cam_1")."""
    return _TOPIC_UNSAFE.sub("_", name) or "_"


def ha_id(name: str) -> str:
    """A name usable as a Home Assistant node or object id ("front door/cam#1" -> "front_door_cam_1")."""
    return _ID_UNSAFE.sub("_", name).strip("_") or "_"


def _ha_common(cfg: MqttConfig, source: str) -> tuple[str, str, dict[str, Any]]:
    """(node id, object id prefix, the fields every entity of this source shares: availability and device)."""
    prefix = cfg.prefix.rstrip("/")
    node, obj = ha_id(prefix), ha_id(source)
    return (
        node,
        obj,
        {
            "availability_topic": f"{prefix}/availability",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [f"{node}_{obj}"],
                "name": source,
                "manufacturer": "streamclf",
                "model": "audio-visual classifier",
                "sw_version": __version__,
            },
        },
    )


def device_discovery(cfg: MqttConfig, source: str) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery (topic, config) for a source's device: a "label" and a "status" sensor."""
    node, obj, common = _ha_common(cfg, source)
    base = f"{cfg.prefix.rstrip('/')}/{topic_safe(source)}"
    return [
        (
            f"{cfg.discovery_prefix}/sensor/{node}/{obj}_label/config",
            {
                "name": "Label",
                "unique_id": f"{node}_{obj}_label",
                "state_topic": f"{base}/labels",
                "value_template": "{{ value_json.labels[0].label }}",
                "json_attributes_topic": f"{base}/labels",
                "json_attributes_template": "{{ {'score': value_json.labels[0].score, 'labels': value_json.labels}"
                " | tojson }}",
                "icon": "mdi:label",
                **common,
            },
        ),
        (
            f"{cfg.discovery_prefix}/sensor/{node}/{obj}_status/config",
            {
                "name": "Status",
                "unique_id": f"{node}_{obj}_status",
                "state_topic": f"{base}/status",
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": f"{base}/status",
                "entity_category": "diagnostic",
                "icon": "mdi:cctv",
                **common,
            },
        ),
    ]


def label_discovery(cfg: MqttConfig, source: str, label: str) -> tuple[str, dict[str, Any]]:
    """Home Assistant discovery (topic, config) for one alert label of a source: a binary sensor, on during events."""
    node, obj, common = _ha_common(cfg, source)
    return (
        f"{cfg.discovery_prefix}/binary_sensor/{node}/{obj}_{ha_id(label)}/config",
        {
            "name": label,
            "unique_id": f"{node}_{obj}_{ha_id(label)}",
            "state_topic": alert_topic(cfg, source, label),
            "payload_on": "ON",
            "payload_off": "OFF",
            **common,
        },
    )


def alert_topic(cfg: MqttConfig, source: str, label: str) -> str:
    """Where a source's alert label says "ON" (an event is open) or "OFF" (retained)."""
    return f"{cfg.prefix.rstrip('/')}/{topic_safe(source)}/alerts/{topic_safe(label)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MqttSink:
    """One message per record, JSON payload, QoS ``cfg.qos``; ``labels``: the alert labels to announce per source."""

    def __init__(self, cfg: MqttConfig, labels: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.labels = list(dict.fromkeys(labels))
        self._announced: dict[str, set[str]] = {}  # source -> alert labels whose state topic it has set up
        self._last_state: dict[str, str | None] = {}  # source -> state of its last status record
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

    def write(self, record: Record) -> None:
        sub = TOPICS.get(type(record))
        if sub is None or isinstance(record, TimingsRecord):  # (the second test only tells the type checker)
            return
        source = record.source
        alert = record if isinstance(record, AlertRecord) and record.label else None
        self._announce(source, [alert.label] if alert is not None else [])
        data = record.to_dict()
        if isinstance(record, StatusRecord):
            self._last_state[source] = record.state
            data.setdefault("time", _now())  # a retained state says when
        topic = f"{self.prefix}/{topic_safe(source)}/{sub}"
        self._enqueue(topic, json.dumps(data, ensure_ascii=False), retain=sub == "status")
        if alert is not None and alert.state in ("started", "ended"):
            state = "ON" if alert.state == "started" else "OFF"
            self._enqueue(alert_topic(self.cfg, source, alert.label), state, retain=True)

    def _announce(self, source: str, labels: list[str]) -> None:
        """A new source (or alert label): discovery configs, and its alert labels "OFF" until an event says more."""
        first = source not in self._announced
        known = self._announced.setdefault(source, set())
        new = [label for label in dict.fromkeys([*(self.labels if first else []), *labels]) if label not in known]
        configs = device_discovery(self.cfg, source) if first else []
        configs += [label_discovery(self.cfg, source, label) for label in new]
        for topic, payload in configs if self.cfg.discovery else []:
            self._enqueue(topic, json.dumps(payload), retain=True)
        for label in new:  # a fresh run: no event is open, whatever a previous run left retained
            self._enqueue(alert_topic(self.cfg, source, label), "OFF", retain=True)
        known.update(new)

    def close(self) -> None:
        """Mark retained states offline, say "offline" after everything else, wait (bounded), disconnect cleanly.

        A clean disconnect sends no last will, so the retained status of a
        source that was live would look current to the next subscriber: it is
        replaced by an "offline" status with the time (ended/error ones are
        true as they are).
        """
        if self._closing:
            return
        self._closing = True
        for source, state in self._last_state.items():
            if state not in FINAL_STATES:
                self._enqueue(
                    f"{self.prefix}/{topic_safe(source)}/status",
                    json.dumps(
                        {
                            "type": "status",
                            "source": source,
                            "state": "offline",
                            "message": "streamclf stopped",
                            "time": _now(),
                        }
                    ),
                    retain=True,
                )
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
            return {
                "delivered": self.delivered,
                "retries": self.reconnects,
                "pending": len(self._backlog) + self.sent - self.delivered,
                "failed": self.failed,
            }

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
            log.warning("mqtt: %s:%s refused the connection (%s); retrying", self.cfg.host, self.cfg.port, reason)
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
            log.warning(
                "mqtt: lost %s:%s (%s); reconnecting, records are kept until then",
                self.cfg.host,
                self.cfg.port,
                reason,
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            self.delivered += 1
            self._cond.notify_all()
