"""Alert rules over window records: hold to start, hysteresis to end, cooldown, evidence on disk, retention.

A surveillance user wants one event per dog bark, not one per window: a
label must stay above ``min_score`` for ``min_windows`` windows to start an
event, and below the lower ``end_score`` for ``end_windows`` to end it. A
rule may also watch one modality alone (``audio: 0.5``): a dog barking
off-camera is an event even when the picture has no dog in it. Each
event leaves a snapshot and a clip in the events folder (``event_files.py``);
the clip starts ``pre_roll`` before the first window that was already rising
towards the event (the hold and the smoothing make the rule fire a little
after the sound began).
Alerts see window records (``records.WindowRecord``) and the window's media
(numpy arrays), never tensors, and give ``records.AlertRecord``.

Event times are window centres: a window stands for the moment in its
middle, so a short bark at 5.0 s gives an event starting near 5.0 s, not at
the start of the first (2 s long) window that heard it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import AlertRule, AlertsConfig, SpeechGate
from .event_files import EventFiles
from .records import AlertRecord, WindowRecord
from .types import Window

RISE = 10.0  # seconds a clip reaches back at most before the window that started the event (a slow rise)
END_RATIO = 0.8  # an event ends below this fraction of the threshold that started it (hysteresis)


def dbfs(audio: np.ndarray | None) -> float:
    """Loudness of a window's audio in dB relative to full scale (-inf for silence or no audio)."""
    if audio is None or len(audio) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


@dataclass
class _Rule:
    """A rule with one source's overrides applied; ``starts``/``ends``: threshold per condition (fused/audio/video)."""

    label: str
    starts: dict[str, float]
    ends: dict[str, float]
    min_windows: int
    end_windows: int
    cooldown: float
    loudness_dbfs: float | None
    speech: SpeechGate | None
    pre_roll: float
    post_roll: float

    @classmethod
    def resolve(cls, rule: AlertRule, source: str) -> _Rule | None:
        o = rule.sources.get(source)
        if o is not None and not o.enabled:
            return None

        def pick(name: str) -> Any:
            """The source's override of a rule setting, else the rule's own."""
            return getattr(o, name) if o is not None and getattr(o, name) is not None else getattr(rule, name)

        starts = {**rule.thresholds(), **({"fused": o.min_score} if o is not None and o.min_score is not None else {})}
        ends = {k: END_RATIO * v for k, v in starts.items()}
        if rule.end_score is not None and "fused" in starts:
            ends["fused"] = min(rule.end_score, starts["fused"])
        return cls(
            rule.label,
            starts,
            ends,
            pick("min_windows"),
            rule.end_windows,
            pick("cooldown"),
            pick("loudness_dbfs"),
            rule.speech,
            rule.pre_roll,
            rule.post_roll,
        )

    def strength(self, scores: dict[str, float]) -> tuple[float, str]:
        """How far the window is past the start thresholds (>= 1: it counts) and which condition got it furthest."""
        return max((scores.get(k, 0.0) / v if v > 0 else math.inf, k) for k, v in self.starts.items())

    def holds(self, scores: dict[str, float]) -> bool:
        """Any condition still at or above its end threshold: the event goes on."""
        return any(scores.get(k, 0.0) >= v for k, v in self.ends.items())


@dataclass
class _Event:
    source: str
    label: str
    start: float
    onset: float = 0.0  # start of the first window of the run that led to the event: the clip starts pre-roll before
    trigger: str = "fused"  # the condition that raised it: fused, audio or video
    peak: float = 0.0  # fused score of the strongest window
    strength: float = 0.0  # of the strongest window: its score over the threshold, for the best condition
    peak_at: float = 0.0
    driver: str | None = None
    modality: dict[str, float | None] = field(default_factory=dict)
    last_above: float = 0.0
    end: float | None = None
    snapshot: str | None = None
    wall: float = field(default_factory=time.time)


@dataclass
class _Track:
    """One rule on one source."""

    rule: _Rule
    above: int = 0
    below: int = 0
    first_above: float = 0.0
    rising: float | None = None  # t_start of the first window of the current run that holds (above end thresholds)
    cooldown_until: float = -math.inf
    event: _Event | None = None


class Alerts:
    """Feed it every window record (with its window); it returns alert records to emit.

    An event gives two records: ``state: started`` when it is raised (with
    a snapshot) and ``state: ended`` once the post-roll audio is in (with
    end, peak, the modality that drove it, snapshot and clip).
    """

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.files = EventFiles(config)
        self.tracks: dict[str, list[_Track]] = {}
        self.pending: list[_Event] = []  # ended, waiting for post-roll audio
        self.max_pre = max((r.pre_roll for r in config.rules), default=0.0)

    def _tracks(self, source: str) -> list[_Track]:
        if source not in self.tracks:
            rules = (_Rule.resolve(r, source) for r in self.config.rules)
            self.tracks[source] = [_Track(r) for r in rules if r is not None]
        return self.tracks[source]

    def update(self, record: WindowRecord, window: Window) -> list[AlertRecord]:
        source = record.source
        audio_end = self.files.add(window)
        loudness = dbfs(window.audio)
        out: list[AlertRecord] = []
        for track in self._tracks(source):
            out += self._step(track, record, window, label_scores(record, track.rule.label), loudness)
        out += self._flush(source, audio_end)
        # the ring buffers hold what a clip may still need: the pre-roll of every rise, open and waiting event
        rising = [t.rising for t in self.tracks[source] if t.rising is not None]
        active = [t.event.onset for t in self.tracks[source] if t.event is not None]
        waiting = [e.onset for e in self.pending if e.source == source]
        self.files.trim(source, min([window.t_start, *rising, *active, *waiting]) - self.max_pre, window.t_end)
        self.files.sweep()
        return out

    def _step(
        self, track: _Track, record: WindowRecord, window: Window, scores: dict[str, float], loudness: float
    ) -> list[AlertRecord]:
        rule, centre = track.rule, (record.t_start + record.t_end) / 2
        admitted = (rule.loudness_dbfs is None or loudness >= rule.loudness_dbfs) and (
            rule.speech is None or rule.speech.admits(record.extra.get("speech"))
        )
        strength, trigger = rule.strength(scores)
        ev = track.event
        if ev is None:
            t0 = record.t_start
            track.rising = max(t0 if track.rising is None else track.rising, t0 - RISE) if rule.holds(scores) else None
            if strength >= 1.0 and admitted:
                if track.above == 0:
                    track.first_above = centre
                track.above += 1
            else:
                track.above = 0
            if track.above >= rule.min_windows and track.first_above >= track.cooldown_until:
                onset = t0 if track.rising is None else track.rising
                track.event = ev = _Event(
                    record.source, rule.label, track.first_above, onset=onset, trigger=trigger, last_above=centre
                )
                track.below = 0
                self._peak(ev, record, scores, strength, window)
                return [self._record(ev, "started")]
            return []
        if rule.holds(scores):
            track.below = 0
            ev.last_above = centre
            if strength > ev.strength:
                self._peak(ev, record, scores, strength, window)
            return []
        track.below += 1
        if track.below < rule.end_windows:
            return []
        ev.end = ev.last_above
        track.event, track.above, track.rising = None, 0, None
        track.cooldown_until = ev.end + rule.cooldown
        self.pending.append(ev)
        return []

    def _peak(
        self, ev: _Event, record: WindowRecord, scores: dict[str, float], strength: float, window: Window
    ) -> None:
        ev.peak, ev.strength, ev.peak_at = scores["fused"], strength, (record.t_start + record.t_end) / 2
        per = record.modality.get(ev.label, {})
        ev.modality = dict(per)
        present = {m: v for m, v in per.items() if v is not None}
        ev.driver = max(present, key=present.__getitem__) if present else None
        ev.snapshot = self.files.snapshot(ev, window, record, per)

    def _flush(self, source: str | None, audio_end: float | None) -> list[AlertRecord]:
        """End records for events whose post-roll audio has arrived (all of them when ``audio_end`` is None)."""
        out, keep = [], []
        for ev in self.pending:
            rule = next(t.rule for t in self.tracks[ev.source] if t.rule.label == ev.label)
            ready = audio_end is None or (ev.end or 0.0) + rule.post_roll <= audio_end
            if (source is None or ev.source == source) and ready:
                span = ev.onset - rule.pre_roll, (ev.end or ev.start) + rule.post_roll
                out.append(self._record(ev, "ended", self.files.clip(ev, *span)))
            else:
                keep.append(ev)
        self.pending = keep
        return out

    def end_source(self, source: str) -> list[AlertRecord]:
        """The source ended: close its open events with what audio there is."""
        for track in self.tracks.get(source, []):
            if track.event is not None:
                track.event.end = track.event.last_above
                self.pending.append(track.event)
                track.event = None
        return self._flush(source, None)

    def close(self) -> list[AlertRecord]:
        out: list[AlertRecord] = []
        for source in list(self.tracks):
            out += self.end_source(source)
        return out

    @staticmethod
    def _record(ev: _Event, state: str, clips: dict[str, Any] | None = None) -> AlertRecord:
        """``clips``: what ``_write_clips`` wrote (``clip``, and ``wav``, ``clip_start``, ``clip_end``)."""
        extra = dict(clips or {})
        return AlertRecord(
            ev.source,
            ev.label,
            state,
            f"{ev.source}:{ev.label}:{ev.start:.2f}",
            round(ev.start, 3),
            None if ev.end is None else round(ev.end, 3),
            round(ev.peak, 4),
            round(ev.peak_at, 3),
            ev.trigger,
            ev.driver,
            ev.modality,
            ev.snapshot,
            extra.pop("clip", None),
            extra,
        )


def label_scores(record: WindowRecord, label: str) -> dict[str, float]:
    """A label's scores in a window record: ``fused`` and each modality that sees it.

    A label outside the fused top-k is still found: the recorder adds the
    labels that alert rules watch to ``watched`` (fused) and ``modality``.
    """
    fused = next((e["score"] for e in record.labels if e["label"] == label), None)
    if fused is None:
        fused = record.extra.get("watched", {}).get(label, 0.0)
    per = record.modality.get(label, {})
    return {"fused": fused, **{m: v for m, v in per.items() if v is not None}}
