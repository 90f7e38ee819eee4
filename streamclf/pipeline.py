"""Wires the stages: decoders -> windower -> worker -> router -> sinks.

Each stage is a thread with one queue in and one out (the stage threads are
in ``stages.py``, the decoders in ``sources.py``). Source events (info,
errors, end) travel the same queues as the data, so every stage sees them in
order and the router can report them as status records. The router owns each
source's ``classifier.Memory``: made when the run starts, dropped when the
source ends, so nothing is forgotten by hand.

Torch, the encoders and the fusion heads are imported when the classifier
loads, not with this module: those imports are most of the start-up time,
and ``run`` says what it is loading before it waits for them.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .alerts import Alerts
from .catalog import check_alert_labels
from .classifier import Classifier, Memory, Scored
from .config import Config
from .recorder import Recorder
from .records import Record, StatusRecord, TimingsRecord, WindowRecord
from .resolve import encoder_names, resolve_config
from .reuse import KINDS
from .sources import Decoder, SourceSpec
from .stages import STOP, Feed, Timings, Windowing, Worker
from .status import SourceState, status_line
from .types import AudioChunk, Frame, SourceEnd, SourceError, SourceInfo, SourceStatus, Window
from .windows import WindowSpec

if TYPE_CHECKING:
    from .dashboard import Dashboard

log = logging.getLogger(__name__)
status_log = logging.getLogger(f"{__name__}.status")  # the sources' state lines: the dashboard shows them


class Sink(Protocol):
    def write(self, record: Record) -> None: ...
    def close(self) -> None: ...


class Pipeline:
    """Run sources through the stages and hand records to sinks.

    ``on_event`` (e.g. the dashboard) sees every record (``records.Record``) as it
    is written; the sinks get the same records. ``config`` is resolved
    (``resolve_config``); a ``classifier`` given (batch jobs and training run
    many pipelines on one) must have been built with the same settings.
    """

    def __init__(
        self,
        config: Config,
        sinks: Iterable[Sink] = (),
        on_event: Callable[[Record, dict[str, SourceState]], None] | None = None,
        classifier: Classifier | None = None,
        on_scored: Callable[[Scored], None] | None = None,
    ) -> None:
        self.config = config = resolve_config(config)
        if classifier is not None:
            classifier.check(config)
        self.classifier = classifier or Classifier(config)
        self.sinks = list(sinks)
        self.sink_failures: dict[str, int] = {}
        self.on_event, self.on_scored = on_event, on_scored
        self.timings = Timings()
        self._live: set[str] = set()
        self.results: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._worker_inbox = Feed(config.queue_size, lambda it: isinstance(it, Window) and it.source in self._live)
        self._items = Feed(
            config.queue_size, lambda it: isinstance(it, (Frame, AudioChunk)) and it.source in self._live
        )
        self.memory: dict[str, Memory] = {}  # per running source; its SourceEnd drops it
        self._reused: Counter[str] = Counter()  # what the sources that ended reused
        self.worker = Worker(self.classifier, self.memory, config, self._worker_inbox, self.results, self.timings)
        self.recorder = Recorder(self.classifier, config)
        check_alert_labels((r.label for r in config.alerts.rules), self.classifier.names)
        self.alerts = Alerts(config.alerts) if config.alerts.rules else None
        self.states: dict[str, SourceState] = {}
        self.run_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self._decoders: list[Decoder] = []

    def stop(self) -> None:
        """Drain: sources stop reading, what is queued is still classified and written."""
        for d in self._decoders:
            d.stop()

    def run(self, specs: list[SourceSpec]) -> dict[str, SourceState]:
        """Process every source to its end (or until stopped)."""
        if not specs:
            raise ValueError("no sources given")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}; name them as NAME=URL")
        c, w = self.config, self.config.window
        self._live.update(s.name for s in specs if s.live or c.sources.realtime)  # the windower keeps it up to date
        self.memory.update({s.name: self.classifier.memory(s.name, self._live) for s in specs})
        self._decoders = [
            Decoder(
                s,
                self._items,
                fps=w.fps,
                max_side=w.max_side,
                settings=c.sources,
                timings=self.timings,
                short_side=w.short_side,
                full_frames=self.alerts is not None,
            )
            for s in specs
        ]
        windowing = Windowing(
            WindowSpec(w.length, w.hop, w.min_audio), self._items, self._worker_inbox, len(specs), self._live
        )
        self.states = {
            d.spec.name: SourceState(
                d.spec.name, live=d.spec.name in self._live, stream=d.spec.live, url=d.spec.display, stats=d.stats
            )
            for d in self._decoders
        }
        self.worker.start()
        windowing.start()
        for d in self._decoders:
            d.start()
        try:
            self._route()
            if self.alerts is not None:
                for alert in self.alerts.close():
                    self._emit(alert)
            self._emit(TimingsRecord(self.timings.summary(), self._reused_totals()))
        finally:
            self.stop()
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as e:
                    self._sink_failed(sink, e)
        if self.worker.error is not None:
            raise self.worker.error
        return self.states

    def _route(self) -> None:
        while True:
            item = self.results.get()
            if item is STOP:
                return
            if isinstance(item, Scored):
                if self.on_scored is not None:
                    self.on_scored(item)
                record = self._record(item)
                self._emit(record)
                if self.alerts is not None:
                    for alert in self.alerts.update(record, item.window):
                        self._emit(alert)
            else:
                self._status(item)

    def _record(self, s: Scored) -> WindowRecord:
        w = s.window
        state = self.states[w.source]
        state.windows += 1
        state.position = w.t_end
        latency = time.monotonic() - w.ready_at
        self.timings.add("latency", latency)
        state.latencies.append(latency)
        state.dropped = self.dropped(w.source)
        state.last = record = self.recorder(s, self.memory[w.source], latency)
        return record

    def _reused_totals(self) -> dict[str, int]:
        """What every source reused, added up (the timings record)."""
        totals = self._reused.copy()
        for source, memory in self.memory.items():
            totals.update(memory.reuse.reused(source))
        return {k: totals[k] for k in KINDS}

    def dropped(self, source: str) -> dict[str, int]:
        items = self._items.dropped
        return {
            "frames": items[(source, "frame")],
            "audio_chunks": items[(source, "audiochunk")],
            "windows": self._worker_inbox.dropped[(source, "window")],
        }

    def _status(self, item: SourceInfo | SourceError | SourceStatus | SourceEnd) -> None:
        state = self.states[item.source]
        before = state.state
        lasted = state.apply(item)
        extra: dict[str, Any] = {}
        if isinstance(item, SourceInfo):
            extra = {"duration": item.duration, "has_audio": item.has_audio, "has_video": item.has_video}
        elif isinstance(item, SourceStatus):
            extra = {"message": item.message} if item.message else {}
            extra["stats"] = {
                **item.stats,
                "dropped": self.dropped(item.source),
                "reused": self.memory[item.source].reuse.reused(item.source),
            }
        elif isinstance(item, SourceError):
            extra = {"message": item.message, "fatal": item.fatal}
        else:
            reused = self.memory.pop(item.source).reuse.reused(item.source)  # the source's memory goes with it
            self._reused.update(reused)
            if self.alerts is not None:
                for alert in self.alerts.end_source(item.source):
                    self._emit(alert)
            state.dropped = self.dropped(item.source)
            extra = {
                "stats": {
                    **item.stats,
                    "dropped": state.dropped,
                    "reused": reused,
                    "windows": state.windows,
                    "latency_p50_ms": state.latency_ms(50),
                    "latency_p95_ms": state.latency_ms(95),
                }
            }
        record = StatusRecord(item.source, "error" if isinstance(item, SourceError) else state.state, extra)
        self._emit(record)
        line = status_line(record, state, before, lasted)
        if line is not None:
            fatal = extra.get("fatal")
            status_log.log(logging.ERROR if fatal else logging.WARNING if fatal is not None else logging.INFO, line)

    def _sink_failed(self, sink: Sink, e: Exception) -> None:
        name = type(sink).__name__
        n = self.sink_failures[name] = self.sink_failures.get(name, 0) + 1
        if n == 1 or n % 1000 == 0:
            log.error(
                "error: %s: %s; %d record(s) it could not take so far (the other sinks go on)",
                name,
                str(e).splitlines()[0] if str(e) else type(e).__name__,
                n,
            )

    def _emit(self, record: Record) -> None:
        """Every record gets an id (the sinks' idempotency key) and the wall-clock time."""
        t0 = time.monotonic()
        self._seq += 1
        record.id = f"{self.run_id}-{self._seq:07d}"
        record.time = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception as e:  # one broken sink (a full disk under SQLite ...) must not stop the others
                self._sink_failed(sink, e)
        if self.on_event is not None:
            self.on_event(record, self.states)
        self.timings.since("sink", t0)


SAMPLE = Path(__file__).with_name("data") / "sample.mp4"


def open_sinks(config: Config, out: str | Path | None = None) -> list[Sink]:
    """The sinks the config asks for (plus ``out`` as JSON lines)."""
    from . import sinks

    c = config.sinks
    opened: list[Sink] = []
    for path in dict.fromkeys(p for p in (str(out) if out else None, c.jsonl) if p):
        opened.append(sinks.JsonlSink(path))
    if c.sqlite is not None:
        opened.append(sinks.SqliteSink(c.sqlite))
    if c.webhook is not None:
        opened.append(sinks.WebhookSink(c.webhook))
    if c.mqtt is not None:
        opened.append(sinks.MqttSink(c.mqtt, labels=[r.label for r in config.alerts.rules]))
    return opened


@contextmanager
def _signals(pipeline: Pipeline) -> Iterator[None]:
    """First SIGINT/SIGTERM drains and flushes; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal count
        count += 1
        if count > 1:
            os._exit(128 + signum)
        log.warning("stopping: finishing queued windows and flushing sinks (again to quit now)")
        pipeline.stop()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def run(
    sources: list[str],
    out: str | Path | None = None,
    config: Config | None = None,
    dashboard: bool = False,
    report: Callable[[str], None] | None = None,
) -> dict[str, SourceState]:
    """Classify ``sources`` (paths, URLs, cameras) and write records to ``out`` and the configured sinks.

    Returns the final state of every source; a source that failed has
    ``fatal`` set and its one-line reasons in ``errors``. ``report`` gets
    the per-stage timing table at the end. What loads and every source's
    state changes go to the ``streamclf`` logger (and to the dashboard).
    """
    from .config import load_config
    from .dashboard import Dashboard

    config = config or load_config()
    specs = [SourceSpec.parse(s) for s in (sources or [str(SAMPLE)])]
    with Dashboard() if dashboard else nullcontext() as view:
        config = resolve_config(config)
        classifier = load_classifier(config, view, live=any(s.live for s in specs))
        pipeline = Pipeline(config, open_sinks(config, out), on_event=view, classifier=classifier)
        with _signals(pipeline):
            states = pipeline.run(specs)
    if report is not None:
        report(pipeline.timings.table())
    return states


def load_classifier(config: Config, view: Dashboard | None = None, live: bool = False) -> Classifier:
    """Load the classifier, saying what loads and how long it took (importing torch and reading weights
    are most of the time to the first record); ``view`` (the dashboard) shows it too; ``live``: see Classifier."""
    what = f"loading {', '.join(encoder_names(config).values())} ..."
    log.info(what)
    if view is not None:
        view.note(what)
    t0 = time.monotonic()
    classifier = Classifier(config, live=live)
    log.info("ready in %.1fs", time.monotonic() - t0)
    return classifier
