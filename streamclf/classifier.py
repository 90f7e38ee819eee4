"""The classifier: encoders, fusion and the person detector, loaded once; windows in, scored windows out.

It keeps nothing about any source. What one source's windows need from the
windows before them (each frame's embedding, computed once for the
overlapping windows that share it; the detector's last run; the last computed
frame that unchanged frames reuse; the smoothing of its fused scores) is a
``Memory``, made by ``Classifier.memory`` and kept by whoever owns the source:
the pipeline's router from the start of a run until the source ends, a
``label`` engine or ``iter_records`` for one file. Dropping it is all the
clean-up there is. So batch jobs, training and calibration run many files
through one classifier without reloading weights, and a file gives the same
records whatever else the classifier saw.

Torch, the encoders and the fusion heads are imported when it is built, not
with this module: those imports are most of the start-up time.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Config
from .detector import COST_SMOOTHING, Detector, Track, detector_for
from .resolve import encoder_names, resolve_config
from .reuse import FrameReuse, Slot, trim_frames
from .stages import Timings
from .types import MODALITIES, Embeddings, Window

if TYPE_CHECKING:
    from .encoders import Encoder
    from .fusion import EMA, ZeroShotFusion
    from .fusion.trained import HeadFusion
    from .fusion.zeroshot import Fused


# Settings that shape how a run goes but not what the classifier computes: a config may differ from the
# classifier's in these alone (``Classifier.check``).
RUN_ONLY: dict[str, Any] = {
    "sources": True,
    "sinks": True,
    "output_dir": True,
    "queue_size": True,
    "batch_windows": True,
    "batch_timeout": True,
    "fusion": {"top_k": True},
    "alerts": {"events_dir": True, "clip": True, "retain_days": True, "max_disk_mb": True},
}


def _settings(config: Config) -> dict[str, Any]:
    """The settings the classifier depends on, flattened to dotted keys."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix.rstrip(".")] = value

    walk("", config.model_dump(exclude=RUN_ONLY))
    return flat


@dataclass
class Scored:
    """One window, its embeddings and its fused scores: what the worker hands the router."""

    window: Window
    embeddings: Embeddings
    fused: Fused


@dataclass
class Memory:
    """What the classifier remembers of one source between batches; the source's owner keeps it and drops it.

    ``frames``: (embedding, scores) per recent frame, shared by the overlapping windows that hold it and by the
    frames that reuse it; ``reuse``: the last computed frame per consumer and the counters of what was reused;
    ``detector``: when it is next due and its recent results; ``smoothing``: the fused scores' moving average.
    """

    source: str
    reuse: FrameReuse
    detector: Track
    smoothing: EMA
    frames: dict[tuple[str, float], Slot] = field(default_factory=dict)


class Classifier:
    """Encoders and fusion (the zero-shot category map or a trained head), and the person detector when on.

    ``config`` goes through ``resolve_config`` (idempotent): ``self.config`` is what it runs with.
    ``live``: some source is live, which turns the person detector on unless the config says otherwise.
    """

    def __init__(self, config: Config, live: bool = False) -> None:
        from .encoders import MODELS, Encoder, pick_device
        from .fusion import CategoryMap, ZeroShotFusion
        from .fusion.calibration import load_calibration
        from .fusion.categories import BUILTIN
        from .fusion.trained import HeadFusion

        self.config = config = resolve_config(config)
        device = pick_device(config.device)
        wanted = encoder_names(config)
        self.encoders = {
            m: Encoder(name, device, config.precision, config.compile, config.engine)
            for m, name in wanted.items()
            if m in MODALITIES
        }
        self.speech: Encoder | None = None
        if "speech" in wanted:
            self.speech = Encoder(wanted["speech"], device, config.precision, config.compile, config.engine)
        for m, enc in [*self.encoders.items(), ("speech", self.speech)]:
            if enc is not None and enc.modality != m:
                raise ValueError(f"{m}.encoder: {enc.name} is a {enc.modality} encoder")
        self.fusion: ZeroShotFusion | HeadFusion
        self.detector: Detector | None = None
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
            entry = MODELS.get(config.detector.encoder)  # (not a detector: Detector says so in one line)
            detector_classes = entry.weights.meta.get("categories", []) if entry else []
            self.detector = detector_for(config, live, set(detector_classes) - set(self.fusion.names))
            if self.detector is not None:
                ids = {"detector": MODELS[config.detector.encoder].weights.id}
                self.fusion.add_detector(self.detector.classes, load_calibration(config.fusion.calibration, ids))
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
            self.detector = detector_for(config, live, driven)
            if self.detector is not None:
                spaces["detector"] = (detector_meta["label_space"], len(self.detector.classes), "sigmoid")
                weights["detector"] = config.detector.weight
            calibration = load_calibration(
                config.fusion.calibration, {m: e.weights.id for m, e in self.encoders.items()}
            )
            self.fusion = ZeroShotFusion(categories, spaces, weights, calibration=calibration)
        self.names: list[str] = self.fusion.names
        # The encoders' output for silence of a given length, (encoder, samples) -> result: a property of
        # the encoder, not of a source, so it is kept here and shared.
        self._silence: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._per_window: float | None = None  # running estimate of a window's seconds apart from the detector

    def check(self, config: Config) -> None:
        """Raise when ``config`` (once resolved) asks for other models or settings than this classifier was built
        with: a pipeline given a classifier must not quietly run with settings its config does not say."""
        ours, theirs = _settings(self.config), _settings(resolve_config(config))
        differ = [k for k in sorted(ours.keys() | theirs.keys()) if ours.get(k) != theirs.get(k)]
        if differ:
            shown = ", ".join(f"{k} {ours.get(k)!r} vs {theirs.get(k)!r}" for k in differ[:3])
            raise ValueError(f"the classifier was built with other settings than the config ({shown})")

    def memory(self, source: str, live: Container[str] = frozenset()) -> Memory:
        """A fresh memory for ``source``; ``live`` holds the sources that count as live (reuse applies to them
        when ``reuse.enabled`` is null; the pipeline shares its set, which the windower keeps up to date)."""
        from .fusion import EMA

        reuse = FrameReuse(self.config.reuse, live)
        return Memory(source, reuse, Track(reuse), EMA(self.config.fusion.smoothing))

    def score(
        self, windows: list[Window], memory: Mapping[str, Memory], timings: Timings | None = None, queued: int = 0
    ) -> list[Scored]:
        """Encode a batch of windows (from any sources; ``memory`` has each one's) and fuse: each frame once,
        and where reuse applies unchanged frames take the last computed frame's result and silent windows the
        result of silence. ``queued``: windows waiting behind this batch (the worker's inbox), whose time a
        deferring detector leaves them."""
        timings = timings or Timings()
        started, detecting = time.monotonic(), 0.0
        results = [Embeddings() for _ in windows]
        if "video" in self.encoders:
            t0 = time.monotonic()
            self._video(windows, memory, results)
            timings.since("encode video", t0)
        if self.detector is not None:
            t0 = time.monotonic()
            tracks = {source: memory[source].detector for source in {w.source for w in windows}}
            ahead = (queued + len(windows)) * (self._per_window or 0.0)
            for res, detection in zip(results, self.detector(windows, tracks, ahead), strict=True):
                res.detection = detection
                if detection is not None:
                    res.scores["detector"] = detection.scores
            detecting = time.monotonic() - t0
            timings.add("detect", detecting)
        audio_windows = [(i, w.source, w.audio) for i, w in enumerate(windows) if w.audio is not None]
        silent = [memory[source].reuse.silent(source, audio) for _, source, audio in audio_windows]
        for (_, source, _), quiet in zip(audio_windows, silent, strict=True):
            if quiet:
                memory[source].reuse.count(source, "audio_windows")
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
        for source in {w.source for w in windows}:
            memory[source].reuse.trim(windows)
        t0 = time.monotonic()
        fused = self.fusion.fuse(results)
        timings.since("fuse", t0)
        per_window, old = (time.monotonic() - started - detecting) / len(windows), self._per_window
        self._per_window = per_window if old is None else old + COST_SMOOTHING * (per_window - old)
        return [Scored(w, emb, f) for w, emb, f in zip(windows, results, fused, strict=True)]

    def _video(self, windows: list[Window], memory: Mapping[str, Memory], results: list[Embeddings]) -> None:
        encoder = self.encoders["video"]
        if encoder.meta.get("clip"):  # one clip per window: its transform picks the frames
            clips = [(i, w) for i, w in enumerate(windows) if w.frames]
            for (i, _), (emb, scores) in zip(
                clips, encoder.embed([np.stack([f.image for f in w.frames]) for _, w in clips]), strict=True
            ):
                results[i].embedding["video"], results[i].scores["video"] = emb[0], scores[0]
            return
        todo: dict[tuple[str, float], np.ndarray] = {}
        reused: set[tuple[str, float]] = set()
        for w in windows:
            mem = memory[w.source]
            for f in sorted(w.frames, key=lambda f: f.pts):  # in time order: each is compared with the last computed
                key = (f.source, f.pts)
                if key in mem.frames:
                    continue
                slot = mem.reuse.last("video", f)
                if slot is None:
                    slot = Slot()
                    todo[key] = f.image
                    mem.reuse.keep("video", f, slot)
                else:
                    reused.add(key)
                mem.frames[key] = slot
        for w in windows:  # windows whose new frames were all reused: no encoder time for them
            keys = [(f.source, f.pts) for f in w.frames]
            if any(k in reused for k in keys) and not any(k in todo for k in keys):
                memory[w.source].reuse.count(w.source, "video_windows")
        if todo:
            by_shape: dict[tuple[int, ...], list[tuple[str, float]]] = {}
            for key, image in todo.items():
                by_shape.setdefault(image.shape, []).append(key)
            groups = list(by_shape.values())
            outs = encoder.embed([np.stack([todo[k] for k in keys]) for keys in groups])
            for keys, (emb, scores) in zip(groups, outs, strict=True):
                for j, key in enumerate(keys):
                    memory[key[0]].frames[key].value = (emb[j], scores[j])
        for w, res in zip(windows, results, strict=True):
            if w.frames:
                cache = memory[w.source].frames
                items = [cache[(f.source, f.pts)].value for f in w.frames]
                self._pool(res, "video", np.stack([e for e, _ in items]), np.stack([s for _, s in items]))
        for source in {w.source for w in windows}:
            trim_frames(memory[source].frames, windows)

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
