"""POST each record to an HTTP endpoint without losing any while the receiver is down.

``write()`` only appends to a durable spool (an SQLite file) and returns; one
background thread delivers the spool strictly in order, retrying with backoff
until the receiver answers. Records survive restarts: a new sink on the same
spool delivers what is left first. Receivers deduplicate on ``Idempotency-Key``
(a record can arrive twice if an answer is lost on the way back).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ..config import WebhookConfig
from ..records import AlertRecord, Record, WindowRecord
from ..retry import backoff
from ..sources import redact
from .sqlite import iso_utc, record_key

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, body BLOB NOT NULL,
                                 status INTEGER, reason TEXT, time TEXT NOT NULL);
"""
_FIRST_DELAY = 0.5  # seconds; doubles per failed attempt up to backoff_max


def _connect(path: str, check_same_thread: bool = True) -> sqlite3.Connection:
    """Autocommit (one transaction per statement), WAL, and fsync on every commit."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _retryable(status: int) -> bool:
    """The receiver may accept this later; anything else non-2xx never will."""
    return status >= 500 or status in (408, 429)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):  # absent, or an HTTP date: use our own backoff
        return None


class WebhookSink:
    """One JSON POST per record (filtered by ``cfg.events``), delivered in order from a spool."""

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        url = httpx.URL(cfg.url)
        # Credentials go in an auth header, never in the URL that httpx logs and we print.
        self.url = redact(cfg.url)
        self._auth = httpx.BasicAuth(url.username, url.password) if url.username else None
        self.spool = str(cfg.spool_path())
        self._key = cfg.signing_key()
        Path(self.spool).parent.mkdir(parents=True, exist_ok=True)
        self._db = _connect(self.spool, check_same_thread=False)  # the router may write from another thread
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._wake = threading.Event()  # something was spooled, or close() was called
        self._closing = threading.Event()  # deliver what is left, then stop
        self._stop = threading.Event()  # stop now (drain_timeout is over)
        self.delivered = self.retries = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def _wants(self, record: Record) -> bool:
        """Whether ``cfg.events`` selects this record (status records go only with "all")."""
        if self.cfg.events == "alerts":
            return isinstance(record, AlertRecord)
        if self.cfg.events == "labels":
            return isinstance(record, WindowRecord)
        return True

    def write(self, record: Record) -> None:
        if not self._wants(record):
            return
        data = record.to_dict()
        with self._lock:
            self._db.execute(
                "INSERT INTO spool (key, body) VALUES (?, ?)",
                (record_key(data), json.dumps(data, ensure_ascii=False).encode()),
            )
        self._wake.set()

    def close(self) -> None:
        """Deliver for up to ``drain_timeout`` seconds; what is left stays spooled for the next start."""
        self._closing.set()
        self._wake.set()
        self._thread.join(self.cfg.drain_timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(4 * self.cfg.timeout)  # a request in flight (connect, write, read, pool)
        with self._lock:
            self._db.close()

    def stats(self) -> dict[str, int]:
        with closing(sqlite3.connect(self.spool)) as db:
            pending = db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        return {"delivered": self.delivered, "retries": self.retries, "pending": pending, "failed": self.failed}

    def _headers(self, key: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if self._key:
            digest = hmac.new(self._key.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Streamclf-Signature"] = f"sha256={digest}"
        return headers

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with jitter so many senders do not retry in lockstep; the receiver's Retry-After wins."""
        if retry_after is not None:
            return min(retry_after, self.cfg.backoff_max)
        return backoff(attempt + 1, _FIRST_DELAY, self.cfg.backoff_max)

    def _run(self) -> None:
        with (
            closing(_connect(self.spool)) as db,
            httpx.Client(timeout=self.cfg.timeout, headers=self.cfg.headers, auth=self._auth) as client,
        ):
            attempt = 0
            while not self._stop.is_set():
                self._wake.clear()  # before looking, so a write after the look still wakes us
                row = db.execute("SELECT seq, key, body FROM spool ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    if self._closing.is_set():
                        return
                    self._wake.wait()
                    continue
                seq, key, body = row
                try:
                    response = client.post(self.url, content=body, headers=self._headers(key, body))
                except httpx.TransportError as e:  # refused, reset, timed out
                    problem, retry_after = type(e).__name__, None
                else:
                    if response.is_success:
                        db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
                        self.delivered += 1
                        if attempt:
                            log.info("webhook: %s is accepting records again", self.url)
                        attempt = 0
                        continue
                    if not _retryable(response.status_code):
                        self._dead_letter(db, seq, key, body, response)
                        continue
                    problem, retry_after = f"HTTP {response.status_code}", _retry_after(response)
                if attempt == 0:
                    log.warning(
                        "webhook: %s unavailable (%s); records stay spooled in %s and are retried",
                        self.url,
                        problem,
                        self.spool,
                    )
                self.retries += 1
                self._stop.wait(self._backoff(attempt, retry_after))
                attempt += 1

    def _dead_letter(self, db: sqlite3.Connection, seq: int, key: str, body: bytes, response: httpx.Response) -> None:
        """A permanent refusal (4xx): keep the record for inspection and move on to the next."""
        with db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO dead (seq, key, body, status, reason, time) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, key, body, response.status_code, response.reason_phrase, iso_utc(datetime.now(UTC))),
            )
            db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
        self.failed += 1
        log.warning(
            "webhook: %s refused record %s with HTTP %s %s; moved to the dead table of %s",
            self.url,
            key,
            response.status_code,
            response.reason_phrase,
            self.spool,
        )
