"""JSON lines, one record per line, flushed per record so a crash loses nothing."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any


class JsonlSink:
    """Appends to ``path`` (``-`` is stdout); every line is flushed and fsync'd."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = str(path)
        if self.path == "-":
            self._f: IO[str] = sys.stdout
            self.fsync = False
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
            self.fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not sys.stdout:
            self._f.close()
