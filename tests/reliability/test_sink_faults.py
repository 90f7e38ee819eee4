"""Sinks under faults: a full disk and a slow webhook receiver lose nothing and keep the order."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from streamclf.records import Record, parse
from streamclf.sinks.jsonl import JsonlSink
from streamclf.sinks.webhook import WebhookSink
from tests.test_sinks import Receiver, free_port, serve, stop, webhook_config, window


def _records(n: int, start: int = 0) -> list[dict]:
    return [window(i, label="x" * 150) for i in range(start, start + n)]


def _lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a half-written line was left behind"
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 64 KiB tmpfs (needs root: CI runs as root); skips where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (not root); the simulated ENOSPC test still runs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_jsonl_on_a_full_disk_keeps_records_and_writes_them_once_space_is_back(small_disk: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamclf")  # "writing again" is news, not a warning
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last page
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    sink = JsonlSink(small_disk / "records.jsonl")
    records = _records(40)
    for r in records[:20]:
        sink.write(parse(r))
    assert len(sink._pending) == 20 and _lines(small_disk / "records.jsonl") == []
    filler.unlink()  # the operator frees space
    for r in records[20:]:
        sink.write(parse(r))
    sink.close()
    assert _lines(small_disk / "records.jsonl") == records
    err = caplog.text
    assert "No space left on device" in err and "writing again" in err


def test_jsonl_simulated_enospc_and_short_writes_leave_whole_lines_only(tmp_path: Path, monkeypatch, caplog) -> None:
    real_write = os.write
    faults = iter(["short", "enospc", "enospc", "short"])

    def flaky(fd: int, data: bytes) -> int:
        fault = next(faults, None)
        if fault == "short":
            return real_write(fd, data[: len(data) // 2])  # the disk filled up mid-line
        if fault == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("streamclf.sinks.jsonl.os.write", flaky)
    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path)
    records = _records(10)
    for r in records:
        sink.write(parse(r))
        assert _lines(path) == records[: sink.written]  # whole lines, in order, at every moment
    sink.close()
    assert _lines(path) == records
    assert caplog.text.count("cannot write") == 1


def test_jsonl_cuts_a_line_a_crash_left_half_written(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(window(0)) + "\n" + json.dumps(window(1))[:30])
    sink = JsonlSink(path)
    sink.write(parse(window(2)))
    sink.close()
    assert _lines(path) == [window(0), window(2)]


class SlowReceiver(Receiver):
    """Takes ``delay`` seconds over each of its first ``slow`` requests (longer than the sink waits)."""

    def __init__(self, slow: int, delay: float) -> None:
        super().__init__()
        self.slow, self.delay = slow, delay

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        status = super().answer(headers, body)
        with self.lock:
            n = len(self.requests)
        if n <= self.slow:
            time.sleep(self.delay)
        return status


@pytest.mark.timeout(90)
def test_webhook_slow_receiver_gets_everything_in_order_duplicates_only_under_one_key(tmp_path: Path) -> None:
    rec, port = SlowReceiver(slow=3, delay=1.5), free_port()
    server = serve(rec, port)
    try:
        sink = WebhookSink(webhook_config(tmp_path, port, timeout=0.5))
        records = _records(12)
        for r in records:
            sink.write(parse(r))
        sink.close()
    finally:
        stop(server)
    seen: dict[str, bytes] = {}
    for headers, body in rec.accepted():
        key = headers["Idempotency-Key"]
        assert seen.setdefault(key, body) == body, "a duplicate must be the same record under the same key"
    assert [json.loads(b)["id"] for b in seen.values()] == [r["id"] for r in records]  # all, in order
    assert len(rec.accepted()) > len(records)  # the timed-out requests did arrive: duplicates happened
    assert sink.stats()["pending"] == 0 and sink.stats()["retries"] >= 3


class _Broken:
    def write(self, record: Record) -> None:
        raise OSError(errno.ENOSPC, "database or disk is full")

    def close(self) -> None:
        raise OSError(errno.ENOSPC, "database or disk is full")


class _Collect:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: Record) -> None:
        self.records.append(record.to_dict())

    def close(self) -> None:
        pass


def test_a_failing_sink_does_not_stop_the_run_or_the_other_sinks(caplog) -> None:
    from streamclf.config import load_config
    from streamclf.pipeline import Pipeline
    from streamclf.sources import SourceSpec
    from tests.conftest import shared

    good = _Collect()
    pipeline = Pipeline(load_config(), [_Broken(), good])
    states = pipeline.run([SourceSpec.parse(str(shared("media/grid/bbaf2n.mpg")))])
    assert not any(st.fatal for st in states.values())
    assert [r for r in good.records if "type" not in r] and good.records[-1]["type"] == "timings"
    assert pipeline.sink_failures == {"_Broken": len(good.records) + 1}  # every record, and the close
    lines = [r.getMessage() for r in caplog.records if "_Broken" in r.getMessage()]
    assert len(lines) == 1 and "database or disk is full" in lines[0]
