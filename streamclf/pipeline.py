"""Wires the stages: decoders -> windower -> worker -> router -> sinks.

Each stage is a thread with one queue in and one out. Source events
(info, errors, end) travel the same queues as the data, so every stage sees
them in order and the router can report them as status records.

Torch, the encoders and the fusion heads are imported when the models load,
not with this module: those imports are most of the start-up time, and
``run`` says what it is loading before it waits for them.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .alerts import Alerts
from .catalog import check_alert_labels
from .config import Config, WindowConfig
from .detector import Detector, detector_for
from .reuse import FrameReuse, Slot, forget_source, trim_frames
from .sources import Decoder, SourceSpec
from .stages import Feed, Timings
from .types import (
    MODALITIES,
    AudioChunk,
    Embeddings,
    Frame,
    Record,
    SourceEnd,
    SourceError,
    SourceInfo,
    SourceStatus,
    Window,
)
from .windows import Windower, WindowSpec

if TYPE_CHECKING:
    from .dashboard import Dashboard
    from .encoders import Encoder
    from .fusion import ZeroShotFusion
    from .fusion.trained import HeadFusion
    from .fusion.zeroshot import Fused

log = logging.getLogger(__name__)
status_log = logging.getLogger(f"{__name__}.status")  # the sources' state lines: the dashboard shows them


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
    """What the dashboard and the final summary know about one source."""

    name: str
    state: str = "connecting"
    live: bool = False  # it may drop: a live feed, or a file paced at real time
    stream: bool = False  # a camera or network stream (it may reconnect)
    url: str = ""  # where it reads from, as it may be shown (credentials removed)
    duration: float | None = None
    start: float | None = None  # timeline position when it first opened
    position: float = 0.0
    windows: int = 0
    errors: list[str] = field(default_factory=list)
    fatal: bool = False
    last: Record | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # decoder counters: reconnects, stalls, av_offset_ms ...
    dropped: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    opened: float | None = None  # time.monotonic() when it first opened
    since: float = field(default_factory=time.monotonic)  # when it last went live, or last stopped being live
    ups: int = 0  # how many times it went live (more than once: it reconnected)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1000))  # seconds, recent windows

    def latency_ms(self, q: float) -> float | None:
        return round(float(np.percentile(self.latencies, q)) * 1000.0, 1) if self.latencies else None

    @property
    def feed(self) -> bool:
        """A live feed: it has uptime and latency, not progress.

        A camera or an RTSP server relaying a file may announce a duration, but a feed runs past it
        after a reconnect (the timeline keeps the outage). A file, a file paced at real time, or a
        file on a web server read like one has progress and throughput.
        """
        return self.stream and self.live

    @property
    def fraction(self) -> float | None:
        """How much of a source with a known end is done (0-1); None for feeds and unknown lengths."""
        if self.feed or not self.duration or self.start is None:
            return None
        return min(max((self.position - self.start) / self.duration, 0.0), 1.0)

    def apply(self, item: SourceInfo | SourceError | SourceStatus | SourceEnd, now: float | None = None) -> float:
        """Take the state a source event says; returns how long the source had been live, or down, before it."""
        now = time.monotonic() if now is None else now
        before = self.state
        if isinstance(item, SourceInfo):
            self.state, self.duration, self.live = "live", item.duration, item.live
            self.ups += 1
            if self.opened is None:
                self.opened, self.start = now, item.start
        elif isinstance(item, SourceStatus):
            self.state = item.state
        elif isinstance(item, SourceError):
            self.errors.append(item.message)
            self.fatal |= item.fatal
            if item.fatal:
                self.state = "error"
        else:
            self.state = "error" if self.fatal else "ended"
        lasted = now - self.since
        if (before == "live") != (self.state == "live"):
            self.since = now
        return lasted

    def speed(self, now: float | None = None) -> float | None:
        """Media seconds classified per wall-clock second since it opened (x real time)."""
        if self.opened is None or self.start is None or not self.windows:
            return None
        return max(self.position - self.start, 0.0) / max((now or time.monotonic()) - self.opened, 1e-6)


_STOP = object()


class Models:
    """Encoders and fusion (the zero-shot category map or a trained head), loaded once.

    Kept apart from the worker thread so that batch jobs and training can
    run many pipelines without reloading weights.
    """

    def __init__(self, config: Config, live: bool = False) -> None:
        """``live``: some source is live, which turns the person detector on unless the config says otherwise."""
        from .encoders import MODELS, Encoder, pick_device
        from .fusion import CategoryMap, ZeroShotFusion
        from .fusion.calibration import load_calibration
        from .fusion.categories import BUILTIN
        from .fusion.trained import HeadFusion

        self.config = config
        device = pick_device(config.device)
        wanted = encoder_names(config)
        self.encoders = {
            m: Encoder(name, device, config.precision, config.compile) for m, name in wanted.items() if m in MODALITIES
        }
        self.speech: Encoder | None = None
        if "speech" in wanted:
            self.speech = Encoder(wanted["speech"], device, config.precision, config.compile)
        for m, enc in [*self.encoders.items(), ("speech", self.speech)]:
            if enc is not None and enc.modality != m:
                raise ValueError(f"{m}.encoder: {enc.name} is a {enc.modality} encoder")
        self.fusion: ZeroShotFusion | HeadFusion
        self.detector: Detector | None = None
        self.reuse = FrameReuse(config.reuse)  # the pipeline hands it its set of live sources
        self.audio_features: str | None = None  # a head's extra audio features (audio_features.py), set from its card
        if config.fusion.head:
            self.fusion = HeadFusion(config.fusion.head)
            self.audio_features = self.fusion.audio_features
            missing = [m for m in self.fusion.head.modalities if m not in self.encoders]
            if missing:
                raise ValueError(
                    f"{config.fusion.head}: head needs the {', '.join(missing)} encoder, which is disabled"
                )
            self.fusion.check_encoders({m: e.weights.id for m, e in self.encoders.items()})
            self.detector = detector_for(config, live, set(), self.reuse)
        else:
            labels = {enc.meta["label_space"]: enc.meta["categories"] for enc in self.encoders.values()}
            detector_meta = MODELS[config.detector.encoder].weights.meta if config.detector.encoder in MODELS else {}
            if detector_meta:  # the map is checked against the detector's classes even while it is off
                labels[detector_meta["label_space"]] = detector_meta["categories"]
            known = {entry.weights.meta["label_space"] for entry in MODELS.values()}
            categories = CategoryMap.load(config.fusion.categories or BUILTIN, labels, known)
            driven = set(categories.members.get(detector_meta.get("label_space", ""), {}))
            spaces = {
                m: (e.meta["label_space"], len(e.meta["categories"]), e.meta["activation"])
                for m, e in self.encoders.items()
            }
            weights = {m: getattr(config, m).weight for m in self.encoders}
            self.detector = detector_for(config, live, driven, self.reuse)
            if self.detector is not None:
                spaces["detector"] = (detector_meta["label_space"], len(self.detector.classes), "sigmoid")
                weights["detector"] = config.detector.weight
            calibration = load_calibration(
                config.fusion.calibration, {m: e.weights.id for m, e in self.encoders.items()}
            )
            self.fusion = ZeroShotFusion(categories, spaces, weights, calibration=calibration)
        self.names: list[str] = self.fusion.names
        self.config = self.fit_clip(self.adapt(config))
        side = self.encoders["video"].meta.get("resize") if "video" in self.encoders else None
        if self.config.window.short_side is None and side:  # FFmpeg's scaler in the decoder thread does the resize
            window = self.config.window.model_copy(update={"short_side": side})
            self.config = self.config.model_copy(update={"window": window})
        self._frame_cache: dict[tuple[str, float], Slot] = {}  # (embedding, scores) per frame, shared when reused
        self._silence: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}  # (encoder, samples) -> its result

    def adapt(self, config: Config) -> Config:
        """A trained head dictates the window and pooling it was trained with."""
        if not config.fusion.head:
            return config
        from .fusion.trained import HeadFusion

        assert isinstance(self.fusion, HeadFusion)  # a head in the config built one (__init__)
        card = self.fusion.card
        update: dict[str, Any] = {}
        if card.get("window"):
            update["window"] = WindowConfig(**card["window"])
        for m, pool in card.get("pool", {}).items():
            update[m] = getattr(config, m).model_copy(update={"pool": pool})
        return config.model_copy(update=update)

    def fit_clip(self, config: Config) -> Config:
        """A clip video encoder reads T frames at its own rate: the window becomes that clip, and says so."""
        clip = self.encoders["video"].meta.get("clip") if "video" in self.encoders else None
        w = config.window
        if clip is None or not w.adapt:
            return config
        length = round(clip["frames"] / clip["fps"], 3)
        update = {
            k: v
            for k, v in {"fps": clip["fps"], "length": length, "hop": min(w.hop, length)}.items()
            if getattr(w, k) != v
        }
        if not update:
            return config
        changes = ", ".join(f"{k} {getattr(w, k):g} -> {v:g}" for k, v in update.items())
        log.warning(
            "%s reads clips of %s frames at %g fps: window %s (window.adapt: false keeps yours)",
            self.encoders["video"].name,
            clip["frames"],
            clip["fps"],
            changes,
        )
        return config.model_copy(update={"window": w.model_copy(update=update)})

    def forget(self, source: str) -> None:
        if self.detector is not None:
            self.detector.forget(source)
        self.reuse.forget(source)
        forget_source(self._frame_cache, source)

    def process(self, windows: list[Window], timings: Timings | None = None) -> list[Scored]:
        """Encode a batch of windows and fuse: each frame once (a cache), and where reuse applies unchanged frames
        take the last computed frame's result and silent windows the result of silence (``self.reuse``)."""
        timings = timings or Timings()
        results = [Embeddings() for _ in windows]
        if "video" in self.encoders:
            t0 = time.monotonic()
            self._video(windows, results)
            timings.since("encode video", t0)
        if self.detector is not None:
            t0 = time.monotonic()
            for res, detection in zip(results, self.detector(windows), strict=True):
                res.detection = detection
                if detection is not None:
                    res.scores["detector"] = detection.scores
            timings.since("detect", t0)
        audio_windows = [(i, w.source, w.audio) for i, w in enumerate(windows) if w.audio is not None]
        silent = [self.reuse.silent(source, audio) for _, source, audio in audio_windows]
        for (_, source, _), quiet in zip(audio_windows, silent, strict=True):
            if quiet:
                self.reuse.count(source, "audio_windows")
        audio = [a for _, _, a in audio_windows]
        if "audio" in self.encoders:
            t0 = time.monotonic()
            for (i, _, wav), (emb, scores) in zip(
                audio_windows, self._embed_audio("audio", audio, silent), strict=True
            ):
                self._pool(results[i], "audio", emb, scores)
                if self.audio_features:
                    from .audio_features import compute as compute_features

                    extra = compute_features(self.audio_features, wav)
                    results[i].embedding["audio"] = np.concatenate([results[i].embedding["audio"], extra])
            timings.since("encode audio", t0)
        if self.speech is not None:
            t0 = time.monotonic()
            for (i, _, _), (_, prob) in zip(audio_windows, self._embed_audio("speech", audio, silent), strict=True):
                results[i].features["speech"] = float(prob[0, 0])
            timings.since("speech", t0)
        self.reuse.trim(windows)
        t0 = time.monotonic()
        fused = self.fusion.fuse(results)
        timings.since("fuse", t0)
        return [Scored(w, emb, f) for w, emb, f in zip(windows, results, fused, strict=True)]

    def _video(self, windows: list[Window], results: list[Embeddings]) -> None:
        encoder = self.encoders["video"]
        if encoder.meta.get("clip"):  # one clip per window: its transform picks the frames
            clips = [(i, w) for i, w in enumerate(windows) if w.frames]
            for (i, _), (emb, scores) in zip(
                clips, encoder.embed([np.stack([f.image for f in w.frames]) for _, w in clips]), strict=True
            ):
                results[i].embedding["video"], results[i].scores["video"] = emb[0], scores[0]
            return
        cache = self._frame_cache
        todo: dict[tuple[str, float], np.ndarray] = {}
        reused: set[tuple[str, float]] = set()
        for w in windows:
            for f in sorted(w.frames, key=lambda f: f.pts):  # in time order: each is compared with the last computed
                key = (f.source, f.pts)
                if key in cache:
                    continue
                slot = self.reuse.last("video", f)
                if slot is None:
                    slot = Slot()
                    todo[key] = f.image
                    self.reuse.keep("video", f, slot)
                else:
                    reused.add(key)
                cache[key] = slot
        for w in windows:  # windows whose new frames were all reused: no encoder time for them
            keys = [(f.source, f.pts) for f in w.frames]
            if any(k in reused for k in keys) and not any(k in todo for k in keys):
                self.reuse.count(w.source, "video_windows")
        if todo:
            by_shape: dict[tuple[int, ...], list[tuple[str, float]]] = {}
            for key, image in todo.items():
                by_shape.setdefault(image.shape, []).append(key)
            groups = list(by_shape.values())
            outs = encoder.embed([np.stack([todo[k] for k in keys]) for keys in groups])
            for keys, (emb, scores) in zip(groups, outs, strict=True):
                for j, key in enumerate(keys):
                    cache[key].value = (emb[j], scores[j])
        for w, res in zip(windows, results, strict=True):
            if w.frames:
                items = [cache[(f.source, f.pts)].value for f in w.frames]
                self._pool(res, "video", np.stack([e for e, _ in items]), np.stack([s for _, s in items]))
        trim_frames(cache, windows)

    def _embed_audio(
        self, name: str, audio: list[np.ndarray], silent: list[bool]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``name`` encoder's output per window ("audio" or "speech"): silent windows take the result of
        silence of their length (computed once), the others go through the encoder in one call."""
        encoder = self.encoders["audio"] if name == "audio" else self.speech
        assert encoder is not None
        loud = iter(encoder.embed([a for a, quiet in zip(audio, silent, strict=True) if not quiet]))
        out = []
        for a, quiet in zip(audio, silent, strict=True):
            if not quiet:
                out.append(next(loud))
                continue
            key = (name, len(a))
            if key not in self._silence:
                self._silence[key] = encoder.embed([np.zeros(len(a), np.float32)])[0]
            out.append(self._silence[key])
        return out

    def _pool(self, res: Embeddings, modality: str, emb: np.ndarray, scores: np.ndarray) -> None:
        op = np.max if getattr(self.config, modality).pool == "max" else np.mean
        res.embedding[modality] = op(emb, axis=0)
        res.scores[modality] = op(scores, axis=0)


def encoder_names(config: Config) -> dict[str, str]:
    """The encoder of each enabled modality, and of the speech gate when it is on (by itself for speech rules)."""
    wanted = {m: getattr(config, m).encoder for m in MODALITIES if getattr(config, m).enabled}
    if config.speech.enabled or any(r.speech for r in config.alerts.rules):
        wanted["speech"] = config.speech.encoder
    return wanted


class Worker(threading.Thread):
    """Batches windows across sources through the models (one forward pass per encoder)."""

    def __init__(
        self, models: Models, config: Config, inbox: queue.Queue, outbox: queue.Queue, timings: Timings | None = None
    ) -> None:
        super().__init__(name="worker", daemon=True)
        self.models, self.config, self.inbox, self.outbox = models, config, inbox, outbox
        self.timings = timings or Timings()
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
            picked = time.monotonic()
            for w in batch:
                self.timings.add("queue wait", picked - w.ready_at)
            for scored in self.models.process(batch, self.timings):
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
            if item is _STOP:
                break
            w = self.windowers.setdefault(item.source, Windower(item.source, self.spec))
            if isinstance(item, SourceInfo):  # the decoder knows best whether this source may drop
                (self.live.add if item.live else self.live.discard)(item.source)
            if isinstance(item, (SourceInfo, SourceError, SourceStatus)):
                self.outbox.put(item)
            for window in w.push(item):
                if item.source in self.live:
                    self.outbox.put_latest(window)
                else:
                    self.outbox.put(window)
            if isinstance(item, SourceEnd):
                self.windowers.pop(item.source, None)
                self.outbox.put(item)
                self.remaining -= 1
        self.outbox.put(_STOP)


def labels_of(scores: np.ndarray, names: list[str], k: int) -> list[dict[str, Any]]:
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"label": names[j], "score": round(float(scores[j]), 4)} for j in top]


def watched_labels(config: Config, index: dict[str, int], sees: dict[str, np.ndarray]) -> list[str]:
    """The labels alert rules watch, in rule order; a modality condition the modality cannot see is an error."""
    from .config import ConfigError

    for rule in config.alerts.rules:
        for m in ("audio", "video"):
            if getattr(rule, m) is not None and rule.label in index and not (m in sees and sees[m][index[rule.label]]):
                raise ConfigError(
                    f"alerts.rules: {rule.label}: {m}: the {m} encoder cannot see this label "
                    f"(or is disabled); use the fused min_score or the other modality"
                )
    return [c for c in dict.fromkeys(r.label for r in config.alerts.rules) if c in index]


class Recorder:
    """Scored windows to records: smoothing across windows, top-k labels, per-modality scores.

    Shared by the live router and the batch labeler, so a file gives the
    same labels whichever way it is run.
    """

    def __init__(self, models: Models, config: Config) -> None:
        from .fusion import EMA

        self.models, self.k = models, config.fusion.top_k
        self.smoothing = EMA(config.fusion.smoothing)
        self.index = {c: j for j, c in enumerate(models.names)}
        self.watch = watched_labels(config, self.index, models.fusion.sees)

    def __call__(self, s: Scored, latency: float = 0.0) -> Record:
        w, k = s.window, self.k
        scores = self.smoothing(w.source, s.fused.scores)
        labels = labels_of(scores, self.models.names, k)
        native = {}
        for m, enc in self.models.encoders.items():
            sc = s.embeddings.scores.get(m)
            native[m] = labels_of(sc, enc.meta["categories"], k) if sc is not None else None
        per, sees = s.fused.per_modality, self.models.fusion.sees
        modality = {}
        for label in [*(e["label"] for e in labels), *self.watch]:  # alert rules see their label's modalities
            j = self.index[label]
            modality[label] = {m: (round(float(per[m][j]), 4) if m in per and sees[m][j] else None) for m in sees}
        extra: dict[str, Any] = {"weights": s.fused.weights} if s.fused.weights else {}
        if self.watch:
            extra["watched"] = {c: round(float(scores[self.index[c]]), 4) for c in self.watch}
        if self.models.speech is not None:  # null: the window had no audio
            speech = s.embeddings.features.get("speech")
            extra["speech"] = None if speech is None else round(speech, 4)
        if self.models.detector is not None:  # null: the window had no frames
            extra["detector"] = self.models.detector.record(s.embeddings.detection)
        return Record(
            w.source,
            w.t_start,
            w.t_end,
            labels,
            native.get("audio"),
            native.get("video"),
            modality,
            latency * 1000.0,
            extra,
        )

    def reset(self, source: str) -> None:
        self.smoothing.reset(source)


class Pipeline:
    """Run sources through the stages and hand records to sinks.

    ``on_event`` (e.g. the dashboard) sees every record and status dict as it
    is written; the sinks get the same dicts.
    """

    def __init__(
        self,
        config: Config,
        sinks: Iterable[Sink] = (),
        on_event: Callable[[dict[str, Any], dict[str, SourceState]], None] | None = None,
        models: Models | None = None,
        on_scored: Callable[[Scored], None] | None = None,
    ) -> None:
        self.models = models or Models(config)
        self.config = config = self.models.config
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
        self.worker = Worker(self.models, config, self._worker_inbox, self.results, self.timings)
        self.recorder = Recorder(self.models, config)
        check_alert_labels((r.label for r in config.alerts.rules), self.models.names)
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
        self._live = {s.name for s in specs if s.live or c.sources.realtime}
        self.models.reuse.live = self._live  # the windower updates it as sources say whether they are live
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
            self._emit({"type": "timings", "stages": self.timings.summary(), "reused": self.models.reuse.totals()})
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
            if item is _STOP:
                return
            if isinstance(item, Scored):
                if self.on_scored is not None:
                    self.on_scored(item)
                record = self._record(item).to_dict()
                self._emit(record)
                if self.alerts is not None:
                    for alert in self.alerts.update(record, item.window):
                        self._emit(alert)
            else:
                self._status(item)

    def _record(self, s: Scored) -> Record:
        w = s.window
        state = self.states[w.source]
        state.windows += 1
        state.position = w.t_end
        latency = time.monotonic() - w.ready_at
        self.timings.add("latency", latency)
        state.latencies.append(latency)
        state.dropped = self.dropped(w.source)
        state.last = record = self.recorder(s, latency)
        return record

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
                "reused": self.models.reuse.reused(item.source),
            }
        elif isinstance(item, SourceError):
            extra = {"message": item.message, "fatal": item.fatal}
        else:
            self.recorder.reset(item.source)
            if self.alerts is not None:
                for alert in self.alerts.end_source(item.source):
                    self._emit(alert)
            state.dropped = self.dropped(item.source)
            extra = {
                "stats": {
                    **item.stats,
                    "dropped": state.dropped,
                    "reused": self.models.reuse.reused(item.source),
                    "windows": state.windows,
                    "latency_p50_ms": state.latency_ms(50),
                    "latency_p95_ms": state.latency_ms(95),
                }
            }
        record = {
            "type": "status",
            "source": item.source,
            "state": "error" if isinstance(item, SourceError) else state.state,
            **extra,
        }
        self._emit(record)
        line = status_line(record, state, before, lasted)
        if line is not None:
            status_log.log(
                logging.ERROR if record.get("fatal") else logging.WARNING if "fatal" in record else logging.INFO, line
            )

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

    def _emit(self, record: dict[str, Any]) -> None:
        """Every record gets an id (the sinks' idempotency key) and the wall-clock time."""
        t0 = time.monotonic()
        self._seq += 1
        record["id"] = f"{self.run_id}-{self._seq:07d}"
        record["time"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception as e:  # one broken sink (a full disk under SQLite ...) must not stop the others
                self._sink_failed(sink, e)
        if self.on_event is not None:
            self.on_event(record, self.states)
        self.timings.since("sink", t0)


def status_line(record: dict[str, Any], state: SourceState, before: str, lasted: float) -> str | None:
    """A status record as one log line, or None when nothing changed (a heartbeat, the next try of a reconnect).

    ``before`` is the source's state before this record; ``lasted`` how long it had been live, or down.
    """
    name, now, message = record["source"], record["state"], record.get("message", "")
    if "fatal" in record:  # the message names the source by its URL or path
        return f"error: {message}" if record["fatal"] else f"[{name}] warning: {message}"
    if now == "connecting":
        if before == "reconnecting":
            return None
        return f"[{name}] {'connecting to' if state.stream else 'opening'} {state.url}"
    if now == "live":
        if "duration" not in record:  # a heartbeat with counters
            return None
        tracks = "+".join(m for m in MODALITIES if record[f"has_{m}"]) or "nothing"
        if not state.feed:
            length = f"{record['duration']:.1f} s of " if record["duration"] else ""
            return f"[{name}] reading {length}{tracks}"
        again = f" again after {lasted:.1f} s down" if state.ups > 1 else ""
        return f"[{name}] live{again} ({tracks})"
    if now in ("stalled", "reconnecting"):
        return f"[{name}] {now}: {message}" if message else f"[{name}] {now}"
    if now == "ended":
        stats = record.get("stats", {})
        counts = [f"{stats.get('windows', 0)} windows"]
        counts += [f"{stats[k]} {k}" for k in ("reconnects", "stalls") if stats.get(k)]
        dropped = sum(stats.get("dropped", {}).values())
        counts += [f"{dropped} dropped"] if dropped else []
        reused = {k: n for k, n in stats.get("reused", {}).items() if n}
        counts += [f"reused: {', '.join(f'{n} {k}'.replace('_', ' ') for k, n in reused.items())}"] if reused else []
        return f"[{name}] ended: {', '.join(counts)}"
    return None  # "error" at the end: its error line came first


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
        models = load_models(config, view, live=any(s.live for s in specs))
        pipeline = Pipeline(config, open_sinks(models.config, out), on_event=view, models=models)
        with _signals(pipeline):
            states = pipeline.run(specs)
    if report is not None:
        report(pipeline.timings.table())
    return states


def load_models(config: Config, view: Dashboard | None = None, live: bool = False) -> Models:
    """Load the models, saying what loads and how long it took (importing torch and reading weights
    are most of the time to the first record); ``view`` (the dashboard) shows it too; ``live``: see Models."""
    what = f"loading {', '.join(encoder_names(config).values())} ..."
    log.info(what)
    if view is not None:
        view.note(what)
    t0 = time.monotonic()
    models = Models(config, live=live)
    log.info("ready in %.1fs", time.monotonic() - t0)
    return models
