"""The typed records (issue 19, item 3): one class per kind, the JSON-lines shape of docs/records.md written in
one place and read back by ``parse``; consumers dispatch on the class, never on a missing ``type`` key."""

from __future__ import annotations

import pytest

from streamclf.records import AlertRecord, StatusRecord, TimingsRecord, WindowRecord, parse

WINDOW = {
    "source": "cam",
    "t_start": 4.0,
    "t_end": 6.0,
    "labels": [{"label": "music", "score": 0.61}],
    "audio": [{"label": "Music", "score": 0.93}],
    "video": None,
    "modality": {"music": {"audio": 0.93, "video": None}},
    "latency_ms": 41.2,
    "speech": None,
    "id": "run-0000001",
    "time": "2026-11-30T01:00:00.000Z",
}
STATUS = {"type": "status", "source": "cam", "state": "live", "message": "back", "stats": {"reconnects": 1}, "id": "s"}
ALERT = {
    "type": "alert",
    "source": "cam",
    "label": "dog",
    "state": "ended",
    "event": "cam:dog:5.00",
    "start": 5.0,
    "end": 7.5,
    "peak": 0.9,
    "peak_at": 6.0,
    "trigger": "audio",
    "driver": "audio",
    "modality": {"audio": 0.9, "video": None},
    "snapshot": "events/cam/a.jpg",
    "clip": "events/cam/a.mp4",
    "clip_start": 3.0,
    "clip_end": 9.5,
}
TIMINGS = {"type": "timings", "stages": {"fuse": {"p50_ms": 1.0, "p95_ms": 2.0, "n": 3}}, "reused": {"video_frames": 0}}


@pytest.mark.parametrize(
    "data, kind",
    [(WINDOW, WindowRecord), (STATUS, StatusRecord), (ALERT, AlertRecord), (TIMINGS, TimingsRecord)],
)
def test_each_kind_reads_back_as_its_class_and_writes_the_same_json(data: dict, kind: type) -> None:
    record = parse(data)
    assert type(record) is kind
    assert record.to_dict() == data and list(record.to_dict()) == list(data)  # same keys, same order


def test_a_window_record_has_no_type_and_the_stamps_come_last() -> None:
    record = parse({k: v for k, v in WINDOW.items() if k not in ("id", "time")})
    assert "type" not in record.to_dict() and "id" not in record.to_dict()
    record.id, record.time = "x", "now"
    assert list(record.to_dict())[-2:] == ["id", "time"]
    assert record.extra == {"speech": None}  # optional fields stay in the order they came


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown record type 'heartbeat'"):
        parse({"type": "heartbeat", "source": "cam"})


def test_a_record_reads_like_its_json_object_for_sinks_written_for_dicts() -> None:
    """Before records were typed, sinks received dicts; such a sink keeps working."""
    for data in (WINDOW, STATUS, TIMINGS):
        record = parse(data)
        assert dict(record) == record.to_dict() and len(record) == len(data)
        assert ("type" in record) == ("type" in data) and record.get("type") == data.get("type")
        assert all(record[k] == record.to_dict()[k] for k in data)
