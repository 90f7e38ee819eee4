"""The embedded event store: alerts and status changes (and optionally every window) in one SQLite file.

Each record is kept whole as JSON next to the few columns that queries
filter on. ``query_events`` and ``format_events`` are what ``streamclf events``
calls. Times are the router's wall clock, UTC, ISO 8601 ("...T05:12:00.123Z").
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import SqliteConfig
from ..records import AlertRecord, Record, StatusRecord, WindowRecord

KINDS = ("alert", "status", "labels")  # the store's type column; "labels" = window records
MEDIA = ("snapshot", "clip", "wav")  # an alert record's evidence files, in the order `streamclf events` shows them

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    source TEXT,
    label TEXT COLLATE NOCASE,  -- alert: its label; window: top fused label; status: NULL
    state TEXT,                 -- status: its state
    time TEXT NOT NULL,
    t_start,                    -- alert: start; window: t_start (as given, usually stream seconds)
    t_end,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_type_time ON events (type, time);
CREATE INDEX IF NOT EXISTS events_source_time ON events (source, time);
CREATE INDEX IF NOT EXISTS events_label_time ON events (label, time);
"""
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def record_key(record: dict[str, Any]) -> str:
    """The record's idempotency key: the router's ``id``, else a hash of its canonical JSON."""
    if record.get("id"):
        return str(record["id"])
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def iso_utc(moment: datetime) -> str:
    """The one time format stored, so that comparing strings compares times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_since(value: str) -> str:
    """An ISO date/time (naive means UTC) or an age like "30m", "2h", "7d" -> stored time format."""
    age = _AGE.fullmatch(value.strip())
    if age:
        return iso_utc(datetime.now(UTC) - timedelta(**{_UNIT[age[2]]: float(age[1])}))
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"since: {value!r} is neither an ISO date/time (2026-11-28T05:00) nor an age like 30m, 2h, 7d"
        ) from None
    return iso_utc(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _columns(record: Record) -> tuple[Any, ...] | None:
    """(type, label, state, t_start, t_end) of a record, or None for a kind the store does not keep."""
    if isinstance(record, AlertRecord):
        return "alert", record.label, None, record.start, record.end
    if isinstance(record, StatusRecord):
        return "status", None, record.state, None, None
    if isinstance(record, WindowRecord):
        top = record.labels or [{}]
        return "labels", top[0].get("label"), None, round(record.t_start, 3), round(record.t_end, 3)
    return None


class SqliteSink:
    """Keeps alerts and status records, and window records when ``cfg.labels``; a repeated id is ignored."""

    def __init__(self, cfg: SqliteConfig) -> None:
        self.cfg = cfg
        Path(cfg.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every record is its own transaction. WAL: `streamclf events` can read meanwhile.
        self._db = sqlite3.connect(cfg.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.stored = self.duplicates = 0

    def write(self, record: Record) -> None:
        columns = _columns(record)
        if columns is None or (columns[0] == "labels" and not self.cfg.labels):
            return
        kind, label, state, t_start, t_end = columns
        data = record.to_dict()
        time = record.time or iso_utc(datetime.now(UTC))
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (id, type, source, label, state, time, t_start, t_end, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record_key(data),
                    kind,
                    data["source"],
                    label,
                    state,
                    time,
                    t_start,
                    t_end,
                    json.dumps(data, ensure_ascii=False),
                ),
            )
        if cursor.rowcount:
            self.stored += 1
        else:
            self.duplicates += 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def stats(self) -> dict[str, int]:
        return {"stored": self.stored, "duplicates": self.duplicates}


def query_events(
    path: str | Path,
    source: str | None = None,
    since: str | None = None,
    label: str | None = None,
    kind: str = "alert",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored records of one kind, oldest first; with ``limit``, the newest ``limit`` of them.

    ``label`` matches an alert's label or a window's top label, ignoring case.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not Path(path).is_file():
        raise ValueError(f"{path}: no event database here (the sqlite sink creates it)")
    where = ["type = ?"]
    args: list[str | int] = [kind]
    if source is not None:
        where.append("source = ?")
        args.append(source)
    if label is not None:
        where.append("label = ?")  # the column compares without case
        args.append(label)
    if since is not None:
        where.append("time >= ?")
        args.append(parse_since(since))
    sql = f"SELECT record FROM events WHERE {' AND '.join(where)} ORDER BY time DESC, rowid DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    try:
        with closing(sqlite3.connect(path)) as db:
            rows = db.execute(sql, args).fetchall()
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{path}: not a streamclf event database ({e})") from None
    return [json.loads(record) for (record,) in reversed(rows)]


def _span(start: Any, end: Any) -> str:
    if start is None and end is None:
        return "-"
    return f"{_seconds(start)}-{_seconds(end)}s"


def _seconds(t: Any) -> str:
    return f"{t:.1f}" if isinstance(t, (int, float)) else "…"  # an open event has no end yet


def format_events(rows: list[dict[str, Any]]) -> str:
    """One aligned line per record: time (UTC), source, label (or state), start-end, peak score, details.

    The details say what a person needs next: a status row's message (why a
    camera is reconnecting), an alert's snapshot and clip paths.
    """
    if not rows:
        return "no events"
    lines = []
    for r in rows:
        kind = r.get("type", "labels")
        details: list[Any] = []
        if kind == "status":
            what, start, end, peak = r.get("state"), None, None, None
            details = [r.get("message")]
        elif kind == "alert":
            what = f"{r.get('label')} {r.get('state') or ''}".strip()
            start, end, peak = r.get("start"), r.get("end"), r.get("peak")
            details = [r.get(key) for key in MEDIA]
        else:
            top = (r.get("labels") or [{}])[0]
            what, start, end, peak = top.get("label"), r.get("t_start"), r.get("t_end"), top.get("score")
        time = str(r["time"])[:19].replace("T", " ") + "Z"  # to the second
        lines.append(
            (
                time,
                str(r.get("source", "-")),
                str(what or "-"),
                _span(start, end),
                "-" if peak is None else f"{peak:.2f}",
                "  ".join(str(d) for d in details if d),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join([*(col.ljust(w) for col, w in zip(line[:5], widths, strict=True)), line[5]]).rstrip()
        for line in lines
    )
