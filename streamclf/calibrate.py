"""`streamclf calibrate`: fit the zero-shot fusion's per-modality calibration on the user's own labeled clips.

The clips are read as ``train`` and ``eval`` read them (a folder per category
or a CSV of path,label; every label must be a category of the map). Each
clip's windows go through the real encoders; each modality's raw category
scores (``ZeroShotFusion.raw``) are then Platt-scaled against the clip's
label (``fusion.calibration.fit_modality``). A label's parent counts as
present too (a guitar clip is music).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .config import Config, load_config
from .evaluate import check_labels
from .fusion.calibration import Calibration, Card, fit_modality
from .train import labeled_clips

if TYPE_CHECKING:
    from .pipeline import Models


def clip_scores(clips: list[tuple[Path, str]], models: Models, progress: Callable[[str], None]
                ) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Raw category scores per modality, one row per window, and each window's label."""
    from .batch import file_windows

    raw: dict[str, list[np.ndarray]] = {m: [] for m in models.encoders}
    labels: list[str] = []
    last = time.monotonic()
    for i, (path, label) in enumerate(clips):
        for windows, _, _, _ in file_windows(path, path.name, models.config):
            for scored in models.process(windows):
                per = models.fusion.raw(scored.embeddings)
                if set(per) != set(raw):  # a window without one track says nothing about that track's scale
                    continue
                for m, s in per.items():
                    raw[m].append(s)
                labels.append(label)
        models.forget(path.name)
        if time.monotonic() - last > 5 or i == len(clips) - 1:
            last = time.monotonic()
            progress(f"calibrate: {i + 1}/{len(clips)} clips embedded, {len(labels)} windows")
    return raw, labels


def calibrate(data: str | Path, out: str | Path, config: Config | None = None, *, note: str = "",
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Fit a calibration on the labeled clips in ``data`` and write it to ``out`` (see the module docstring).

    Raises ValueError (one line, before any model loads) for unusable input:
    fewer than two categories, a label the category map does not have, a
    trained head in the config (a head is calibrated by its own training).
    """
    config = config or load_config()
    if config.fusion.head:
        raise ValueError(f"{config.fusion.head}: calibrate fits the category map's zero-shot fusion, not a trained head")
    clips = labeled_clips(data)
    check_labels(data, (label for _, label in clips), config)
    say = progress or (lambda msg: None)
    from .pipeline import Models

    config = config.model_copy(update={"fusion": config.fusion.model_copy(update={"calibration": "none"})})
    models = Models(config)
    fusion = models.fusion
    raw, labels = clip_scores(clips, models, say)
    if not labels:
        raise ValueError(f"{data}: no clip has both an audio and a video window to calibrate on")
    names = fusion.names
    parents = fusion.parent_of
    target = np.zeros((len(labels), len(names)))
    for i, label in enumerate(labels):
        target[i, names.index(label)] = 1.0
        if label in parents:
            target[i, names.index(parents[label])] = 1.0
    counts = {c: sum(label == c for _, label in clips) for c in {label for _, label in clips}}
    fits, measured = {}, {}
    for m, rows in raw.items():
        fits[m], measured[m] = fit_modality(np.stack(rows), target, fusion.sees_raw[m], names, counts)
    card = Card(data=[str(data)], clips=len(clips), windows=len(labels), categories=sorted(counts),
                measured=measured, note=note)
    cal = Calibration(encoders={m: e.weights.id for m, e in models.encoders.items()}, modalities=fits, card=card)
    cal.save(out)
    return cal


def report(cal: Calibration) -> str:
    """What a user reads after fitting: per modality, the fit and log-loss / ECE before -> after."""
    lines = [f"{cal.card.clips} clips, {cal.card.windows} windows, {len(cal.card.categories)} categories"]
    for m, fit in cal.modalities.items():
        got = cal.card.measured[m]
        own = f"; own bias for {', '.join(fit.category_bias)}" if fit.category_bias else ""
        lines.append(f"{m}: slope {fit.slope:g}, bias {fit.bias:+g}{own}; log-loss {got['log_loss_before']:.4f} -> "
                     f"{got['log_loss_after']:.4f}, ECE {got['ece_before']:.4f} -> {got['ece_after']:.4f}")
    return "\n".join(lines)
