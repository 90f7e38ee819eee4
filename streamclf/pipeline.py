"""Wires the stages: decoders -> windower -> worker -> router -> sinks.

Each stage is a thread with one queue in and one out. Source events
(info, errors, end) travel the same queues as the data, so every stage sees
them in order and the router can report them as status records.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from .config import Config, WindowConfig
from .encoders import Encoder, pick_device
from .fusion import EMA, CategoryMap, ZeroShotFusion
from .fusion.trained import HeadFusion
from .fusion.zeroshot import Fused
from .fusion.categories import BUILTIN
from .sources import Decoder, SourceSpec
from .types import MODALITIES, Embeddings, Record, SourceEnd, SourceError, SourceInfo, Window
from .windows import Windower, WindowSpec


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@dataclass
class Scored:
    """What the worker hands the router for one window."""

    window: Window
    embeddings: Embeddings
    fused: Fused


@dataclass
class SourceState:
    name: str
    state: str = "connecting"
    duration: float | None = None
    position: float = 0.0
    windows: int = 0
    errors: list[str] = field(default_factory=list)
    fatal: bool = False
    last: Record | None = None


_STOP = object()


class Models:
    """Encoders and fusion (the zero-shot category map or a trained head), loaded once.

    Kept apart from the worker thread so that batch jobs and training can
    run many pipelines without reloading weights.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        device = pick_device(config.device)
        self.encoders = {m: Encoder(getattr(config, m).encoder, device)
                         for m in MODALITIES if getattr(config, m).enabled}
        for m, enc in self.encoders.items():
            if enc.modality != m:
                raise ValueError(f"{m}.encoder: {enc.name} is a {enc.modality} encoder")
        self.fusion: ZeroShotFusion | HeadFusion
        if config.fusion.head:
            self.fusion = HeadFusion(config.fusion.head)
            missing = [m for m in self.fusion.head.modalities if m not in self.encoders]
            if missing:
                raise ValueError(f"{config.fusion.head}: head needs the {', '.join(missing)} encoder, which is disabled")
            self.fusion.check_encoders({m: e.weights.id for m, e in self.encoders.items()})
        else:
            labels = {enc.meta["label_space"]: enc.meta["categories"] for enc in self.encoders.values()}
            categories = CategoryMap.load(config.fusion.categories or BUILTIN, labels)
            spaces = {m: (e.meta["label_space"], len(e.meta["categories"]), e.meta["activation"])
                      for m, e in self.encoders.items()}
            self.fusion = ZeroShotFusion(categories, spaces, {m: getattr(config, m).weight for m in self.encoders})
        self.names: list[str] = self.fusion.names
        self.config = self.adapt(config)
        self._frame_cache: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}

    def adapt(self, config: Config) -> Config:
        """A trained head dictates the window and pooling it was trained with."""
        if not isinstance(self.fusion, HeadFusion):
            return config
        card = self.fusion.card
        update: dict[str, Any] = {}
        if card.get("window"):
            update["window"] = WindowConfig(**card["window"])
        for m, pool in card.get("pool", {}).items():
            update[m] = getattr(config, m).model_copy(update={"pool": pool})
        return config.model_copy(update=update)

    def forget(self, source: str) -> None:
        for key in [k for k in self._frame_cache if k[0] == source]:
            del self._frame_cache[key]

    def process(self, windows: list[Window]) -> list[Scored]:
        """Encode a batch of windows (frames once each, via a cache) and fuse."""
        results = [Embeddings() for _ in windows]
        if "video" in self.encoders:
            self._video(windows, results)
        if "audio" in self.encoders:
            audio_windows = [(i, w) for i, w in enumerate(windows) if w.audio is not None]
            outs = self.encoders["audio"].embed([w.audio for _, w in audio_windows])
            for (i, _), (emb, scores) in zip(audio_windows, outs):
                self._pool(results[i], "audio", emb, scores)
        return [Scored(w, emb, f) for w, emb, f in zip(windows, results, self.fusion.fuse(results))]

    def _video(self, windows: list[Window], results: list[Embeddings]) -> None:
        cache = self._frame_cache
        todo: dict[tuple[str, float], np.ndarray] = {}
        for w in windows:
            for f in w.frames:
                key = (f.source, f.pts)
                if key not in cache:
                    todo[key] = f.image
        if todo:
            by_shape: dict[tuple[int, ...], list[tuple[str, float]]] = {}
            for key, image in todo.items():
                by_shape.setdefault(image.shape, []).append(key)
            groups = list(by_shape.values())
            outs = self.encoders["video"].embed([np.stack([todo[k] for k in keys]) for keys in groups])
            for keys, (emb, scores) in zip(groups, outs):
                for j, key in enumerate(keys):
                    cache[key] = (emb[j], scores[j])
        for w, res in zip(windows, results):
            if w.frames:
                items = [cache[(f.source, f.pts)] for f in w.frames]
                self._pool(res, "video", np.stack([e for e, _ in items]), np.stack([s for _, s in items]))
        oldest = {}
        for w in windows:
            oldest[w.source] = max(oldest.get(w.source, -np.inf), w.t_start)
        for key in [k for k in cache if k[1] < oldest.get(k[0], -np.inf)]:
            del cache[key]

    def _pool(self, res: Embeddings, modality: str, emb: np.ndarray, scores: np.ndarray) -> None:
        op = np.max if getattr(self.config, modality).pool == "max" else np.mean
        res.embedding[modality] = op(emb, axis=0)
        res.scores[modality] = op(scores, axis=0)



class Worker(threading.Thread):
    """Batches windows across sources through the models (one forward pass per encoder)."""

    def __init__(self, models: Models, config: Config, inbox: queue.Queue, outbox: queue.Queue) -> None:
        super().__init__(name="worker", daemon=True)
        self.models, self.config, self.inbox, self.outbox = models, config, inbox, outbox
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # surface to the router instead of dying silently
            self.error = e
            self.outbox.put(_STOP)

    def _loop(self) -> None:
        while True:
            item = self.inbox.get()
            if item is _STOP:
                self.outbox.put(_STOP)
                return
            if not isinstance(item, Window):
                self._pass(item)
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
            for scored in self.models.process(batch):
                self.outbox.put(scored)
            for p in passthrough:
                if p is _STOP:
                    self.outbox.put(_STOP)
                    return
                self._pass(p)

    def _pass(self, item: object) -> None:
        if isinstance(item, SourceEnd):
            self.models.forget(item.source)
        self.outbox.put(item)


class Windowing(threading.Thread):
    """One thread windows every source (cheap bookkeeping, no decoding)."""

    def __init__(self, spec: WindowSpec, inbox: queue.Queue, outbox: queue.Queue, sources: int) -> None:
        super().__init__(name="windower", daemon=True)
        self.spec, self.inbox, self.outbox, self.remaining = spec, inbox, outbox, sources
        self.windowers: dict[str, Windower] = {}

    def run(self) -> None:
        while self.remaining:
            item = self.inbox.get()
            if item is _STOP:
                break
            w = self.windowers.setdefault(item.source, Windower(item.source, self.spec))
            if isinstance(item, (SourceInfo, SourceError)):
                self.outbox.put(item)
            for window in w.push(item):
                self.outbox.put(window)
            if isinstance(item, SourceEnd):
                self.windowers.pop(item.source, None)
                self.outbox.put(item)
                self.remaining -= 1
        self.outbox.put(_STOP)


def labels_of(scores: np.ndarray, names: list[str], k: int) -> list[dict[str, Any]]:
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"label": names[j], "score": round(float(scores[j]), 4)} for j in top]


class Pipeline:
    """Run sources through the stages and hand records to sinks.

    ``on_event`` (e.g. the dashboard) sees every record and status dict as it
    is written; the sinks get the same dicts.
    """

    def __init__(self, config: Config, sinks: Iterable[Sink] = (),
                 on_event: Callable[[dict[str, Any], dict[str, SourceState]], None] | None = None,
                 models: Models | None = None, on_scored: Callable[[Scored], None] | None = None) -> None:
        self.models = models or Models(config)
        self.config = config = self.models.config
        self.sinks = list(sinks)
        self.on_event, self.on_scored = on_event, on_scored
        self.results: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._worker_inbox: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self.worker = Worker(self.models, config, self._worker_inbox, self.results)
        self.smoothing = EMA(config.fusion.smoothing)
        self.states: dict[str, SourceState] = {}

    def run(self, specs: list[SourceSpec]) -> dict[str, SourceState]:
        """Process every source to its end (or until interrupted)."""
        if not specs:
            raise ValueError("no sources given")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}; name them as NAME=URL")
        items: queue.Queue = queue.Queue(maxsize=self.config.queue_size)
        w = self.config.window
        decoders = [Decoder(s, items, fps=w.fps, max_side=w.max_side) for s in specs]
        windowing = Windowing(WindowSpec(w.length, w.hop, w.min_audio), items, self._worker_inbox, len(specs))
        self.states = {s.name: SourceState(s.name) for s in specs}
        self.worker.start()
        windowing.start()
        for d in decoders:
            d.start()
        try:
            self._route()
        finally:
            for d in decoders:
                d.stop()
            for sink in self.sinks:
                sink.close()
        if self.worker.error is not None:
            raise self.worker.error
        return self.states

    def _route(self) -> None:
        categories = self.models.names
        k = self.config.fusion.top_k
        while True:
            item = self.results.get()
            if item is _STOP:
                return
            if isinstance(item, Scored):
                if self.on_scored is not None:
                    self.on_scored(item)
                self._emit(self._record(item, categories, k).to_dict(), item.window.source)
            else:
                self._status(item)

    def _record(self, s: Scored, categories: list[str], k: int) -> Record:
        w = s.window
        fused = self.smoothing(w.source, s.fused.scores)
        labels = labels_of(fused, categories, k)
        index = {c: j for j, c in enumerate(categories)}
        native = {}
        for m, enc in self.models.encoders.items():
            sc = s.embeddings.scores.get(m)
            native[m] = labels_of(sc, enc.meta["categories"], k) if sc is not None else None
        per, sees = s.fused.per_modality, self.models.fusion.sees
        modality = {}
        for entry in labels:
            j = index[entry["label"]]
            modality[entry["label"]] = {
                m: (round(float(per[m][j]), 4) if m in per and sees[m][j] else None) for m in sees}
        state = self.states[w.source]
        state.windows += 1
        state.position = w.t_end
        extra = {"weights": s.fused.weights} if s.fused.weights else {}
        record = Record(w.source, w.t_start, w.t_end, labels, native.get("audio"), native.get("video"),
                        modality, (time.monotonic() - w.ready_at) * 1000.0, extra)
        state.last = record
        return record

    def _status(self, item: SourceInfo | SourceError | SourceEnd) -> None:
        state = self.states[item.source]
        extra: dict[str, Any] = {}
        if isinstance(item, SourceInfo):
            state.state, state.duration = "live", item.duration
            extra = {"duration": item.duration, "has_audio": item.has_audio, "has_video": item.has_video}
        elif isinstance(item, SourceError):
            state.errors.append(item.message)
            state.fatal |= item.fatal
            extra = {"message": item.message, "fatal": item.fatal}
            if item.fatal:
                state.state = "error"
        else:
            state.state = "error" if state.fatal else "ended"
            self.smoothing.reset(item.source)
        self._emit({"type": "status", "source": item.source,
                    "state": "error" if isinstance(item, SourceError) else state.state, **extra}, item.source)

    def _emit(self, record: dict[str, Any], source: str) -> None:
        for sink in self.sinks:
            sink.write(record)
        if self.on_event is not None:
            self.on_event(record, self.states)


SAMPLE = Path(__file__).with_name("data") / "sample.mp4"


def run(sources: list[str], out: str | Path | None = None, config: Config | None = None,
        dashboard: bool = False) -> dict[str, SourceState]:
    """Classify ``sources`` (paths, URLs, cameras) and write records to ``out``.

    Returns the final state of every source; a source that failed has
    ``fatal`` set and its one-line reasons in ``errors``.
    """
    from .config import load_config
    from .dashboard import Dashboard
    from .sinks import JsonlSink

    config = config or load_config()
    specs = [SourceSpec.parse(s) for s in (sources or [str(SAMPLE)])]
    sinks: list[Sink] = [JsonlSink(out)] if out else []
    if not dashboard:
        return Pipeline(config, sinks).run(specs)
    with Dashboard() as view:
        return Pipeline(config, sinks, on_event=view).run(specs)
