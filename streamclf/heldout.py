"""What ``train`` reports: every group held out in turn, judged on a composed stream as ``eval`` would.

Split from ``train`` (which fits and saves the head) because this is the
validation half: which groups each fold holds out, and what the head
trained without them says on a stream of their clips. A single held-out
speaker or camera is a noisy estimate of the next one (one group can be the
easiest or the hardest); judging every clip once, by the head that never saw
its group, is the figure a user can trust. The stream is composed at the
clips' natural loudness with the gaps ``eval --compose`` uses and embedded
once (cached); the audio-only and video-only runs see the other modality
absent from every window, as after ``eval`` strips a track.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .trainset import STREAM_GAP, _cache_file, _stack, scored_streams

if TYPE_CHECKING:
    from .clips import Event
    from .fusion.heads import Head

REPORT_FOLDS = 5  # validation folds at most: every group is held out once, by a head that never saw it


def group_folds(groups: list[str], folds: int, seed: int) -> list[list[str]]:
    """The groups dealt at random into ``min(folds, groups)`` folds: each held out once, never on both sides.

    Every clip is then judged once by a head that never saw its group, so the
    report is the mean over all groups, not the luck of one held-out speaker.
    """
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(
            f"--group needs at least two groups to hold one out, found {len(names)} ({', '.join(names) or 'none'})"
        )
    order = [str(g) for g in np.random.default_rng(seed).permutation(names)]
    k = min(folds, len(names))
    return [sorted(order[i::k]) for i in range(k)]


def accuracy_by_presence(
    head: Head, x: dict[str, np.ndarray], present: dict[str, np.ndarray], y: np.ndarray
) -> dict[str, float]:
    """Accuracy with every modality the data has, then with each one alone."""
    out = {"all": float((head.predict_proba(x, present).argmax(1) == y).mean())}
    for m in head.modalities:
        alone = {k: (v if k == m else np.zeros_like(v)) for k, v in present.items()}
        keep = present[m]
        if keep.any():
            probs = head.predict_proba({k: v[keep] for k, v in x.items()}, {k: v[keep] for k, v in alone.items()})
            out[f"{m} only"] = float((probs.argmax(1) == y[keep]).mean())
    return out


def stream_runs(
    head: Head,
    windows: list[dict[str, np.ndarray]],
    spans: list[tuple[float, float]],
    events: list[tuple[float, float]],
    smoothing: float,
) -> dict[str, list[str | None]]:
    """What ``eval --compose`` names each event of a stream, per run (fused, audio only, video only).

    The single-modality runs see the stream as ``eval`` does after removing
    the other track: that modality absent from every window. Scores are
    smoothed across windows as the pipeline does (``fusion.smoothing``), and
    events are decided by ``evaluate``'s own rule.
    """
    from .evaluate import RUNS
    from .fusion.smoothing import EMA
    from .scoring import Win, decide, windows_inside

    x, present = _stack(windows, head.dims)
    names: dict[str, list[str | None]] = {}
    for run, keep in RUNS.items():
        if keep is not None and keep not in head.modalities:
            continue
        shown = {m: v if keep in (None, m) else np.zeros_like(v) for m, v in present.items()}
        probs, ema = head.predict_proba(x, shown), EMA(smoothing)
        wins = [
            Win(t0, t1, dict(zip(head.classes, map(float, ema("s", p)), strict=True)))
            for (t0, t1), p, on in zip(spans, probs, np.any(list(shown.values()), axis=0), strict=True)
            if on
        ]
        names[run] = [decide(windows_inside(wins, s, e)) for s, e in events]
    return names


def _hits(said: list[str | None], truth: list[str]) -> float:
    return round(float(np.mean([a == b for a, b in zip(said, truth, strict=True)])), 4)


def held_out_report(
    fit: Callable[[np.ndarray], Head],
    emb: dict[str, Any],
    pairs: list[tuple[Path, str]],
    groups: list[str],
    folds: list[list[str]],
    work: Path,
    seed: int,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Each fold's groups held out in turn: per-window accuracy and the composed-stream figures of ``stream_runs``.

    Each fold's usable clips are composed into one stream at their natural
    loudness with ``STREAM_GAP`` gaps (as ``eval --compose`` would play them)
    and embedded once (cached); the head trained without that fold names its
    events. Figures pool every held-out clip, and per fold.
    """
    from .clips import compose

    models = emb["models"]
    rng = np.random.default_rng(seed)
    usable = sorted(set(emb["group"].tolist()))
    played = []
    for fold in folds:
        ids = [i for i in usable if groups[i] in fold]
        played.append([ids[j] for j in rng.permutation(len(ids))])
    names = [_cache_file(p, models.config, models).name for p, _ in pairs]

    def composer(ids: list[int]) -> Callable[[Path], list[Event]]:
        return lambda out: compose([pairs[i] for i in ids], out, gap=STREAM_GAP)

    streams = scored_streams(
        {
            f"held-out-{k}": (
                composer(ids),
                ["held-out", STREAM_GAP, [names[i] for i in ids]],
            )
            for k, ids in enumerate(played)
            if ids
        },
        models,
        work,
        progress,
    )
    truth: list[str] = []
    said: dict[str, list[str | None]] = {}
    per_fold: list[dict[str, Any]] = []
    window_hits: list[tuple[int, dict[str, float]]] = []
    for k, (fold, ids) in enumerate(zip(folds, played, strict=True)):
        if not ids:  # every clip of the fold failed to decode: nothing to judge
            continue
        val = np.array([g in fold for g in groups])
        head = fit(~val)
        w = val[emb["group"]]
        acc = accuracy_by_presence(
            head, {m: v[w] for m, v in emb["x"].items()}, {m: v[w] for m, v in emb["present"].items()}, emb["y"][w]
        )
        window_hits.append((int(w.sum()), acc))
        spans, windows, events = streams[f"held-out-{k}"]
        runs = stream_runs(head, windows, spans, events, models.config.fusion.smoothing)
        fold_truth = [pairs[i][1] for i in ids]
        truth += fold_truth
        for run, got in runs.items():
            said.setdefault(run, []).extend(got)
        per_fold.append({"groups": fold, "clips": len(ids)} | {r: _hits(got, fold_truth) for r, got in runs.items()})
        if progress:
            progress(f"held out {', '.join(fold)}: " + ", ".join(f"{r} {per_fold[-1][r]:.3f}" for r in runs))
    metrics: dict[str, Any] = {
        "held_out_clips": int(sum(len(ids) for ids in played)),
        "accuracy": {  # every fold's windows, pooled
            key: round(float(np.average([a[key] for _, a in window_hits], weights=[n for n, _ in window_hits])), 4)
            for key in (window_hits[0][1] if window_hits else {})
            if all(key in a for _, a in window_hits)
        },
    }
    if truth and len(set(truth)) >= 2:
        figures = {run: _hits(got, truth) for run, got in said.items()}
        singles = [v for r, v in figures.items() if r != "fused"]
        metrics["stream"] = {
            "gap": STREAM_GAP,
            **figures,
            "gain": round(figures["fused"] - max(singles), 4) if singles else None,
            "folds": per_fold,
        }
    return metrics
