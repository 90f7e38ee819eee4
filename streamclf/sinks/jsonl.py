"""JSON lines, one record per line, flushed per record so a crash loses nothing."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path

from ..records import Record

log = logging.getLogger(__name__)

MAX_PENDING = 100_000  # records held in memory while the disk is full (about 100 MB)


class JsonlSink:
    """Appends to ``path`` (``-`` is stdout); every line is written whole and fsync'd.

    When the disk is full (or the write fails otherwise) the records wait in
    memory, in order, and go out with the next record once space is back;
    a half-written line is cut off again, so the file only ever holds whole
    lines (a line a crash left half-written is cut at open).
    """

    def __init__(self, path: str | Path, fsync: bool = True, drain_timeout: float = 5.0) -> None:
        self.path, self.fsync, self.drain_timeout = str(path), fsync, drain_timeout
        self._pending: deque[bytes] = deque()
        self.written = self.lost = 0
        self._failing: str | None = None
        self._fd: int | None = None
        self._stdout = self.path == "-"
        if self._stdout:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._whole_lines(self._fd)

    def _whole_lines(self, fd: int) -> None:
        """Cut a half line a crash left at the end; refuse a file that is not JSON lines."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        tail = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail) or not tail[cut + 1 :].lstrip().startswith(b"{"):
            os.close(fd)
            raise ValueError(
                f"{self.path}: not a JSON-lines file (it ends in something else); choose another output file"
            )
        os.ftruncate(fd, size - len(tail) + cut + 1)

    def write(self, record: Record) -> None:
        line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
        if self._stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        if self._fd is None:
            raise ValueError(f"{self.path}: written after close")
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.lost += 1
        self._pending.append(line.encode())
        self._drain(self._fd)

    def _drain(self, fd: int) -> bool:
        """Write what waits to the open file ``fd``, in order; False (and the rest kept) at the first failure."""
        while self._pending:
            line = self._pending[0]
            end = os.fstat(fd).st_size  # where this line starts (another writer may append too)
            try:
                done = os.write(fd, line)
                if done != len(line):
                    raise OSError(28, "short write")
                if self.fsync:
                    os.fsync(fd)
            except OSError as e:
                os.ftruncate(fd, end)  # never leave half a line behind
                if self._failing is None:
                    log.warning(
                        "jsonl: %s: cannot write (%s); keeping records in memory and retrying with the next one",
                        self.path,
                        e.strerror or e,
                    )
                self._failing = e.strerror or str(e)
                return False
            self._pending.popleft()
            self.written += 1
            if self._failing is not None:
                log.info("jsonl: %s: writing again", self.path)
                self._failing = None
        return True

    def close(self) -> None:
        if self._fd is None:  # stdout, or closed already
            return
        deadline = time.monotonic() + self.drain_timeout
        while not self._drain(self._fd) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._pending or self.lost:
            log.error(
                "jsonl: %s: %d records could not be written (%s)",
                self.path,
                len(self._pending) + self.lost,
                self._failing or "too many waiting",
            )
        os.close(self._fd)
        self._fd = None
