"""What sinks, alerts and the dashboard receive: one typed record per event, serialised in one place.

Four kinds (``Record``): a window's labels (``WindowRecord``), a source's
state (``StatusRecord``), an alert (``AlertRecord``) and the stage timings
at the end of a run (``TimingsRecord``). Consumers dispatch on the class;
``to_dict`` gives the JSON-lines shape of docs/records.md (a window record has
no ``type`` field; the others say theirs), and ``parse`` reads that shape back
(the one place that knows a dict without ``type`` is a window). Every record
gets ``id`` (the sinks' idempotency key) and, live, ``time`` (UTC) when it is
emitted. Fields a kind carries only sometimes (a window's ``speech`` and
``detector``, a status record's ``stats`` ...) are in ``extra``, in the order
they were added, so a record's JSON never gains or loses a key.

A record also reads like its JSON object (``record["labels"]``, ``"type" in
record``, ``record.get("detector")``, ``dict(record)``): sinks written for the
plain dicts records used to be keep working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

STAMPS = ("id", "time")  # set when a record is emitted, last in its JSON


@dataclass(kw_only=True)
class _Stamped(Mapping[str, Any]):
    id: str | None = None  # idempotency key: deterministic per file in label, run id + sequence live
    time: str | None = None  # UTC, ISO 8601 with milliseconds: when a live run emitted it

    def _stamps(self) -> dict[str, Any]:
        return {k: v for k, v in (("id", self.id), ("time", self.time)) if v is not None}

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass
class WindowRecord(_Stamped):
    """A window's labels: fused top-k, each encoder's own top-k (None without that track), per-modality scores."""

    source: str
    t_start: float
    t_end: float
    labels: list[dict[str, Any]]
    audio: list[dict[str, Any]] | None
    video: list[dict[str, Any]] | None
    modality: dict[str, dict[str, float | None]]
    latency_ms: float
    extra: dict[str, Any] = field(default_factory=dict)  # weights, watched, speech, detector: when they apply

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "labels": self.labels,
            "audio": self.audio,
            "video": self.video,
            "modality": self.modality,
            "latency_ms": round(self.latency_ms, 1),
            **self.extra,
            **self._stamps(),
        }


@dataclass
class StatusRecord(_Stamped):
    """A source's state: connecting, live, stalled, reconnecting, ended, error; ``extra``: message, stats ..."""

    type: ClassVar[str] = "status"
    source: str
    state: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "source": self.source, "state": self.state, **self.extra, **self._stamps()}


@dataclass
class AlertRecord(_Stamped):
    """An event started or ended; ``extra``: the clip's span and the WAV beside an MP4, once it is written."""

    type: ClassVar[str] = "alert"
    source: str
    label: str
    state: str  # started, ended
    event: str
    start: float
    end: float | None
    peak: float
    peak_at: float
    trigger: str
    driver: str | None
    modality: dict[str, float | None]
    snapshot: str | None
    clip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "source": self.source,
            "label": self.label,
            "state": self.state,
            "event": self.event,
            "start": self.start,
            "end": self.end,
            "peak": self.peak,
            "peak_at": self.peak_at,
            "trigger": self.trigger,
            "driver": self.driver,
            "modality": self.modality,
            "snapshot": self.snapshot,
            "clip": self.clip,
            **self.extra,
            **self._stamps(),
        }


@dataclass
class TimingsRecord(_Stamped):
    """Once at the end of a run: p50/p95 per stage, and what every source reused."""

    type: ClassVar[str] = "timings"
    stages: dict[str, dict[str, float]]
    reused: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "stages": self.stages, "reused": self.reused, **self._stamps()}


Record = WindowRecord | StatusRecord | AlertRecord | TimingsRecord


def parse(data: dict[str, Any]) -> Record:
    """A record from its JSON shape (a JSON line, a webhook body, a row of the event store)."""
    rest = {k: v for k, v in data.items() if k not in STAMPS and k != "type"}
    stamps = {k: data[k] for k in STAMPS if k in data}
    kind = data.get("type")
    if kind == StatusRecord.type:
        return StatusRecord(rest.pop("source"), rest.pop("state"), rest, **stamps)
    if kind == AlertRecord.type:
        named = [k for k in AlertRecord.__dataclass_fields__ if k not in ("extra", *STAMPS)]
        return AlertRecord(**{k: rest.pop(k) for k in named if k in rest}, extra=rest, **stamps)
    if kind == TimingsRecord.type:
        return TimingsRecord(rest.pop("stages"), rest.pop("reused", {}), **stamps)
    if kind is not None:
        raise ValueError(f"unknown record type {kind!r}")
    window = [k for k in WindowRecord.__dataclass_fields__ if k not in ("extra", *STAMPS)]
    return WindowRecord(**{k: rest.pop(k) for k in window}, extra=rest, **stamps)
