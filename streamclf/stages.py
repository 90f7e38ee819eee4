"""The stage threads between the decoders and the router (windowing, the worker), and their plumbing:
bounded feeds that never block a live source, and timings.

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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .types import SourceEnd, SourceError, SourceInfo, SourceStatus, Window
from .windows import Windower, WindowSpec

if TYPE_CHECKING:  # sources.py (and so every decode process) imports this module: no pydantic or torch here
    from .classifier import Classifier, Memory
    from .config import Config

STOP = object()  # the end of a stage's input: every source ended, or the worker failed


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


class Worker(threading.Thread):
    """Batches windows across sources through the classifier (one forward pass per encoder).

    ``memory`` holds each source's ``classifier.Memory``; its owner (the pipeline's router) adds and drops them.
    """

    def __init__(
        self,
        classifier: Classifier,
        memory: Mapping[str, Memory],
        config: Config,
        inbox: queue.Queue,
        outbox: queue.Queue,
        timings: Timings | None = None,
    ) -> None:
        super().__init__(name="worker", daemon=True)
        self.classifier, self.memory, self.config, self.inbox, self.outbox = classifier, memory, config, inbox, outbox
        self.timings = timings or Timings()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # surface to the router instead of dying silently
            self.error = e
            self.outbox.put(STOP)

    def _loop(self) -> None:
        while True:
            item = self.inbox.get()
            if item is STOP:
                self.outbox.put(STOP)
                return
            if not isinstance(item, Window):
                self.outbox.put(item)
                continue
            batch = [item]
            deadline = time.monotonic() + self.config.batch_timeout
            passthrough = []
            while len(batch) < self.config.batch_windows:
                try:
                    nxt = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(nxt, Window):
                    batch.append(nxt)
                else:
                    passthrough.append(nxt)
                    break
            picked = time.monotonic()
            for w in batch:
                self.timings.add("queue wait", picked - w.ready_at)
            for scored in self.classifier.score(batch, self.memory, self.timings, queued=self.inbox.qsize()):
                self.outbox.put(scored)
            for p in passthrough:
                if p is STOP:
                    self.outbox.put(STOP)
                    return
                self.outbox.put(p)


class Windowing(threading.Thread):
    """One thread windows every source (cheap bookkeeping, no decoding)."""

    def __init__(
        self, spec: WindowSpec, inbox: queue.Queue, outbox: Feed, sources: int, live: set[str] | None = None
    ) -> None:
        super().__init__(name="windower", daemon=True)
        self.spec, self.inbox, self.outbox, self.remaining = spec, inbox, outbox, sources
        self.live = live if live is not None else set()  # shared with the pipeline: feeds read it
        self.windowers: dict[str, Windower] = {}

    def run(self) -> None:
        while self.remaining:
            item = self.inbox.get()
            if item is STOP:
                break
            w = self.windowers.setdefault(item.source, Windower(item.source, self.spec))
            if isinstance(item, SourceInfo):  # the decoder knows best whether this source may drop
                (self.live.add if item.live else self.live.discard)(item.source)
            if isinstance(item, (SourceInfo, SourceError, SourceStatus)):
                self.outbox.put(item)
            for window in w.push(item):
                # the windows a source's end flushes are its drain (``Pipeline.stop``): they wait, never drop
                if item.source in self.live and not isinstance(item, SourceEnd):
                    self.outbox.put_latest(window)
                else:
                    self.outbox.put(window)
            if isinstance(item, SourceEnd):
                self.windowers.pop(item.source, None)
                self.outbox.put(item)
                self.remaining -= 1
        self.outbox.put(STOP)
