"""Plumbing shared by the stages: bounded feeds that never block a live source, and timings.

A file source may wait for the worker (it loses nothing); a live source must
not, or its camera buffer overflows and latency grows without bound. So a
feed has two puts: ``put`` waits, ``put_latest`` drops the oldest droppable
item instead and counts it against that item's source.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np


class Feed(queue.Queue):
    """A bounded stage queue with drop-oldest for live items.

    ``droppable(item)`` says which queued items may be dropped (data of live
    sources); control items (source info, errors, ends) never are.
    """

    def __init__(self, maxsize: int, droppable: Callable[[Any], bool]) -> None:
        super().__init__(maxsize)
        self.droppable = droppable
        self.dropped: Counter[tuple[str, str]] = Counter()  # (source, kind) -> count

    def put_latest(self, item: Any) -> None:
        with self.mutex:
            victim = None
            if 0 < self.maxsize <= self._qsize():
                victim = next((old for old in self.queue if self.droppable(old)), item)
                if victim is not item:
                    self.queue.remove(victim)
            if victim is not item:
                self._put(item)
                self.unfinished_tasks += 1
                self.not_empty.notify()
            if victim is not None:  # counted under the lock: several decoders share a feed
                self.dropped[(victim.source, type(victim).__name__.lower())] += 1


class Timings:
    """Recent durations per stage (and per source), reported as p50/p95 in milliseconds."""

    def __init__(self, keep: int = 2000) -> None:
        self.keep = keep
        self._data: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._data.setdefault(stage, deque(maxlen=self.keep)).append(seconds)

    def since(self, stage: str, start: float) -> None:
        """Record the time from ``start`` (``time.monotonic()``) to now."""
        self.add(stage, time.monotonic() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        with self._lock:
            data = {k: np.array(v) for k, v in self._data.items() if v}
        return {
            k: {
                "p50_ms": round(float(np.percentile(v, 50)) * 1000, 1),
                "p95_ms": round(float(np.percentile(v, 95)) * 1000, 1),
                "n": int(len(v)),
            }
            for k, v in sorted(data.items())
        }

    def table(self) -> str:
        rows = [f"{'stage':<24} {'p50 ms':>9} {'p95 ms':>9} {'n':>7}"]
        rows += [f"{k:<24} {v['p50_ms']:>9.1f} {v['p95_ms']:>9.1f} {v['n']:>7}" for k, v in self.summary().items()]
        return "\n".join(rows)
