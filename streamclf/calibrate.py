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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import Config, load_config
from .evaluate import check_labels
from .fusion.calibration import Calibration, Card, fit_modality
from .fusion.zeroshot import ZeroShotFusion
from .train import labeled_clips

if TYPE_CHECKING:
    from .classifier import Classifier


def clip_scores(
    clips: list[tuple[Path, str]], models: Classifier, progress: Callable[[str], None]
) -> tuple[dict[str, list[tuple[np.ndarray, str]]], int]:
    """Per modality, the raw category scores and label of every window that has that track; and the window count.

    A clip without a video track still calibrates the audio, and the other way round.
    """
    from .labeling.common import file_windows

    fusion = _zero_shot(models)
    rows: dict[str, list[tuple[np.ndarray, str]]] = {m: [] for m in fusion.sees}  # the detector too, when on
    count = 0
    last = time.monotonic()
    for i, (path, label) in enumerate(clips):
        memory = {path.name: models.memory(path.name)}
        for windows, _ in file_windows(path, path.name, models.config):
            for scored in models.score(windows, memory):
                for m, s in fusion.raw(scored.embeddings).items():
                    rows[m].append((s, label))
                count += 1
        if time.monotonic() - last > 5 or i == len(clips) - 1:
            last = time.monotonic()
            progress(f"calibrate: {i + 1}/{len(clips)} clips embedded, {count} windows")
    return rows, count


def _zero_shot(models: Classifier) -> ZeroShotFusion:
    """The fusion calibrate fits: a trained head has no raw category scores to scale (it is calibrated by training)."""
    if not isinstance(models.fusion, ZeroShotFusion):
        raise ValueError("calibrate fits the category map's zero-shot fusion, not a trained head")
    return models.fusion


def calibrate(
    data: str | Path,
    out: str | Path,
    config: Config | None = None,
    *,
    note: str = "",
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Fit a calibration on the labeled clips in ``data`` and write it to ``out`` (see the module docstring).

    Raises ValueError (one line, before any model loads) for unusable input:
    fewer than two categories, a label the category map does not have, a
    trained head in the config (a head is calibrated by its own training).
    """
    config = config or load_config()
    if config.fusion.head:
        raise ValueError(
            f"{config.fusion.head}: calibrate fits the category map's zero-shot fusion, not a trained head"
        )
    clips = labeled_clips(data)
    check_labels(data, (label for _, label in clips), config)
    say = progress or (lambda msg: None)
    from .classifier import Classifier

    config = config.model_copy(update={"fusion": config.fusion.model_copy(update={"calibration": "none"})})
    models = Classifier(config)
    fusion = _zero_shot(models)
    rows, count = clip_scores(clips, models, say)
    if not any(rows.values()):
        raise ValueError(f"{data}: no clip gave a window with audio or video to calibrate on")
    counts = {c: sum(label == c for _, label in clips) for c in {label for _, label in clips}}
    fits, measured = {}, {}
    for m, got in rows.items():
        if got:  # a modality without windows keeps its raw scores (no entry: identity)
            target = targets([label for _, label in got], fusion.names, fusion.parent_of)
            fits[m], measured[m] = fit_modality(
                np.stack([s for s, _ in got]), target, fusion.sees_raw[m], fusion.names, counts
            )
    card = Card(
        data=[str(data)], clips=len(clips), windows=count, categories=sorted(counts), measured=measured, note=note
    )
    ids = {m: e.weights.id for m, e in models.encoders.items()}
    if models.detector is not None:
        from .encoders import MODELS

        ids["detector"] = MODELS[models.detector.name].weights.id
    cal = Calibration(encoders=ids, modalities=fits, card=card)
    cal.save(out)
    return cal


def targets(labels: list[str], names: list[str], parent_of: dict[str, str]) -> np.ndarray:
    """1 where a window's category is there: its label, and the label's parent (a guitar clip is music)."""
    out = np.zeros((len(labels), len(names)))
    for i, label in enumerate(labels):
        out[i, names.index(label)] = 1.0
        if label in parent_of:
            out[i, names.index(parent_of[label])] = 1.0
    return out


def report(cal: Calibration) -> str:
    """What a user reads after fitting: per modality, the fit and log-loss / ECE before -> after."""
    lines = [f"{cal.card.clips} clips, {cal.card.windows} windows, {len(cal.card.categories)} categories"]
    for m, fit in cal.modalities.items():
        got = cal.card.measured[m]
        own = f"; own bias for {', '.join(fit.category_bias)}" if fit.category_bias else ""
        lines.append(
            f"{m}: slope {fit.slope:g}, bias {fit.bias:+g}{own}; log-loss {got['log_loss_before']:.4f} -> "
            f"{got['log_loss_after']:.4f}, ECE {got['ece_before']:.4f} -> {got['ece_after']:.4f}"
        )
    return "\n".join(lines)
