"""Train a fusion head for real use, from labeled clips or from AV-digits.

Clip embeddings come from the live pipeline itself (same decoder, windows,
encoders and pooling), so a head never meets features at run time that it
did not see in training; the card records the window and pooling settings
and the encoder weights so ``run --head`` can enforce them.

This module lists the clips, fits, saves and prints the report; the windows
the head learns from (clip caches, composed and degraded streams) are in
``trainset`` and the held-out folds and their stream figures in ``heldout``.
"""

from __future__ import annotations

import csv
import datetime
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .audio_features import AUDIO_SHAPE
from .audio_features import check as check_features
from .catalog import COMPARE_ONLY, FUSION_FAMILIES, FUSION_METHODS, TRAINABLE, closest
from .config import Config, load_config
from .heldout import REPORT_FOLDS, accuracy_by_presence, group_folds, held_out_report
from .media import MEDIA_EXTENSIONS
from .trainset import clip_embeddings, read_backgrounds, stream_windows, training_set

if TYPE_CHECKING:  # torch: loaded only once the arguments and the data have been checked
    from .fusion.heads import Head


def check_fusion(fusion: str) -> None:
    """Refuse a method that does not exist or cannot be saved as a head, before any clip is embedded."""
    if fusion in COMPARE_ONLY:
        raise ValueError(
            f"fusion method {fusion!r} keeps its training set and cannot be saved as a head "
            f"(compare runs it); use one of: {', '.join(TRAINABLE)}"
        )
    if fusion not in FUSION_METHODS:
        raise ValueError(
            f"unknown fusion method {fusion!r}; closest: {', '.join(closest(fusion, TRAINABLE))} "
            f"(all: {', '.join(TRAINABLE)})"
        )


FOLDER_GROUP = ""  # ``--group`` without a column: the first sub-folder level under each class


def labeled_clips(data: str | Path) -> list[tuple[Path, str]]:
    """``(path, label)`` from a folder with one sub-folder per class, or a CSV of ``path,label``.

    Every problem names the row, class or folder at fault, before anything is embedded.
    """
    return [(p, label) for p, label, _ in grouped_clips(data)]


def grouped_clips(data: str | Path, group: str | None = None) -> list[tuple[Path, str, str]]:
    """``(path, label, group)``; ``group`` is a CSV column, or ``FOLDER_GROUP`` for ``class/group/clip`` folders.

    Without ``group`` every clip is its own group. Groups (speakers, cameras,
    days) are what validation holds out whole, so a figure measured on them
    says what a new speaker or camera will get.
    """
    data = Path(data)
    if data.is_file():
        out = _csv_clips(data, group)
    elif data.is_dir():
        if group:
            raise ValueError(
                f"{data}: --group {group!r} names a CSV column, but the data is a folder; "
                "use --group without a value for class/group/clip folders"
            )
        out = []
        for d in sorted(x for x in data.iterdir() if x.is_dir()):
            clips = [p for p in sorted(d.rglob("*")) if p.suffix.lower() in MEDIA_EXTENSIONS]
            if not clips:
                raise ValueError(
                    f"{d}: class folder {d.name!r} has no media files "
                    f"({', '.join(sorted(MEDIA_EXTENSIONS))}); add clips or remove the folder"
                )
            for p in clips:
                parts = p.relative_to(d).parts
                if group is not None and len(parts) < 2:
                    raise ValueError(
                        f"{p}: --group needs class/group/clip folders, but this clip sits directly "
                        f"in class folder {d.name!r}"
                    )
                out.append((p, d.name, parts[0] if group is not None else str(p)))
    else:
        raise ValueError(f"{data}: no such file or folder")
    classes = sorted({label for _, label, _ in out})
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no class"
        raise ValueError(
            f"{data}: need labeled clips of at least two classes, found {found} "
            f"({len(out)} clip(s)); a folder needs one sub-folder per class"
        )
    return out


def _csv_clips(data: Path, group: str | None) -> list[tuple[Path, str, str]]:
    out: list[tuple[Path, str, str]] = []
    col = None
    with data.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            header = n == 1 and row[:2] == ["path", "label"]
            if n == 1 and group:
                if group not in (row if header else []):
                    columns = ", ".join(row) if header else "none: the first row is not a path,label,... header"
                    raise ValueError(f"{data}: --group {group!r}: no such column (columns: {columns})")
                col = row.index(group)
            if not row or row[0].startswith("#") or header:
                continue
            if len(row) < 2 or not row[1]:
                raise ValueError(f"{data}:{n}: expected 'path,label'")
            p = Path(row[0])
            p = p if p.is_absolute() else data.parent / p
            if not p.is_file():
                raise ValueError(f"{data}:{n}: class {row[1]!r}: {p}: no such file")
            if col is not None and (len(row) <= col or not row[col]):
                raise ValueError(f"{data}:{n}: empty {group!r} (every clip needs a group)")
            out.append((p, row[1], row[col] if col is not None else str(p)))
    return out


def train(
    data: str | Path,
    fusion: str,
    out: str | Path,
    config: Config | None = None,
    seed: int = 0,
    folds: int = REPORT_FOLDS,
    progress: Callable[[str], None] | None = None,
    group: str | None = None,
    augment: bool = True,
    audio_features: str | None = AUDIO_SHAPE,
    noise: list[str | Path] | None = None,
    **hyper: Any,
) -> dict[str, Any]:
    """Train ``fusion`` on labeled clips, report held-out figures, save the head fitted on all clips.

    Validation (``folds`` > 0) holds out whole groups in turn (``group``: see
    ``grouped_clips``; else single clips; ``group_folds``) and reports
    per-window accuracy and, closer to what a user gets, what ``eval
    --compose`` would say on a stream of the held-out clips (``held_out_report``).
    ``augment`` adds the training windows of ``stream_windows`` (gains,
    degraded copies with ``noise``: background sound files or folders, else
    generated noise) and ``with_blanks``.
    ``audio_features`` (default: the time-structured ``streamclf.audio_features``
    recipe; None = the pooled audio embedding alone) go into the card, and
    the pipeline computes them for this head at run time.
    """
    check_fusion(fusion)
    check_features(audio_features)
    config = config or load_config()
    config = config.model_copy(update={"fusion": config.fusion.model_copy(update={"head": None})})
    clips = grouped_clips(data, group)
    groups = [g for _, _, g in clips]
    held: list[list[str]] = []
    if folds > 0 and (group is not None or len(clips) >= 5):
        held = group_folds(groups, folds, seed)
    backgrounds = read_backgrounds(noise) if noise and augment else None
    noise_key = [[str(Path(p).resolve()), Path(p).stat().st_mtime_ns] for p in noise or []]
    pairs = [(p, label) for p, label, _ in clips]
    from .fusion import build_head, save_head

    emb = clip_embeddings(pairs, config, progress=progress, audio_features=audio_features)
    models, modalities = emb["models"], tuple(emb["dims"])
    encoders = {m: models.encoders[m].weights.id for m in modalities}

    group_code = np.unique(groups, return_inverse=True)[1]  # per clip
    if FUSION_FAMILIES.get(fusion) == "feature" and len(modalities) > 1:
        hyper = {"fallback": True, **hyper}  # one modality alone answers as its own unimodal head (NeuralHead)

    def fit(use: np.ndarray) -> Head:
        # rows carry their clip's group, so heads that validate internally (weighted_average, stacking,
        # hybrid) judge each modality on unseen speakers/cameras, not on unseen clips of known ones
        x, present, y, clip = training_set(emb, aug, use, seed)
        return build_head(fusion, modalities, emb["labels"], emb["dims"], seed, **hyper).fit(
            x, present, y, group_code[clip]
        )

    metrics: dict[str, Any] = {}
    usable = sorted(set(emb["group"].tolist()))  # clips that gave windows
    with tempfile.TemporaryDirectory(prefix="streamclf-train-") as tmp:
        aug = (
            stream_windows(
                pairs, usable, emb["labels"], emb["dims"], models, Path(tmp), seed, progress, backgrounds, noise_key
            )
            if augment
            else None
        )
        if held:
            metrics = {
                **(
                    {"group": group or "sub-folder", "held_out_groups": sorted(set(groups))}
                    if group is not None
                    else {}
                ),
                "folds": len(held),
                **held_out_report(fit, emb, pairs, groups, held, Path(tmp), seed, progress),
            }
        head = fit(np.ones(len(clips), bool))
    data_card = {
        "source": str(data),
        "clips": len(clips),
        "windows": int(len(emb["y"])),
        "skipped": emb["errors"],
        "augmented": augment,
    }
    card = _card(models.config, encoders, data_card, metrics, audio_features)
    save_head(head, out, card)
    return card


def _card(
    config: Config,
    encoders: dict[str, str],
    data: dict[str, Any],
    metrics: dict[str, Any],
    audio_features: str | None = None,
) -> dict[str, Any]:
    return {
        "encoders": encoders,
        "window": config.window.model_dump(),
        "pool": {m: getattr(config, m).pool for m in encoders},
        **({"audio_features": audio_features} if audio_features and "audio" in encoders else {}),
        "data": data,
        "metrics": metrics,
        "warnings": fusion_warnings(metrics),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def fusion_warnings(metrics: dict[str, Any]) -> list[str]:
    """A fused head that validates worse than one of its modalities alone is hurt by the other: say so.

    The held-out stream, when measured, is the figure that counts (it is what a user gets).
    """
    if metrics.get("stream"):
        figures, where = metrics["stream"], " on the held-out stream"
        fused = figures["fused"]
    else:
        figures, where = metrics.get("accuracy") or {}, ""
        fused = figures.get("all")
    return [
        f"the head validates worse{where} with all modalities ({fused:.3f}) than with {name} ({score:.3f}); "
        f"the other modality hurts: try --fusion {name.removesuffix(' only')}, more clips, or another method"
        for name, score in figures.items()
        if name.endswith(" only") and fused is not None and score > fused
    ]


def report(card: dict[str, Any]) -> str:
    """The card's held-out figures as a small table, then its warnings (what `streamclf train` prints)."""
    metrics = dict(card.get("metrics") or {})
    if not metrics:
        return "no held-out metrics (fewer than 5 clips)"
    acc = metrics.pop("accuracy", {})
    stream = metrics.pop("stream", None)
    lines = [f"{k.replace('_', ' ')}: {', '.join(v) if isinstance(v, list) else v}" for k, v in metrics.items()]
    width = max(len("modalities"), *map(len, acc))
    if stream is None:
        lines += [f"{'modalities':<{width}}  held-out accuracy", *(f"{k:<{width}}  {v:.3f}" for k, v in acc.items())]
    else:
        lines += [f"{'modalities':<{width}}  held-out windows  held-out stream"]
        lines += [
            f"{k:<{width}}  {v:<16.3f}  {stream.get('fused' if k == 'all' else k, float('nan')):.3f}"
            for k, v in acc.items()
        ]
        gain = (
            ""
            if stream.get("gain") is None
            else f"; fused minus the better single modality {100 * stream['gain']:+.1f} pts"
        )
        lines.append(
            f"stream: each fold's held-out clips composed with {stream['gap']:g} s gaps, named as eval --compose "
            f"would by the head trained without them{gain}"
        )
        lines += [
            f"  held out {', '.join(f['groups']) if len(f['groups']) <= 3 else str(len(f['groups'])) + ' groups'}: "
            + ", ".join(f"{r} {f[r]:.3f}" for r in ("fused", "audio only", "video only") if r in f)
            for f in stream.get("folds", [])
        ]
    lines += [f"warning: {w}" for w in card.get("warnings", [])]
    return "\n".join(lines)


# Window settings the AV-digits streams are made for: one digit per 1 s slot, one YAMNet patch per window.
AVDIGITS_WINDOW = {"length": 1.0, "hop": 0.5, "fps": 4.0, "min_audio": 0.48, "max_side": 640}


def train_avdigits(
    fusion: str,
    out: str | Path,
    hold_out: str = "yweweler",
    seed: int = 0,
    data_dir: str | Path | None = None,
    **hyper: Any,
) -> dict[str, Any]:
    """Train a digit head on AV-digits, keeping one speaker and one image fold unseen for streaming checks."""
    from .avdigits import load_avdigits
    from .compare import CLASSES, pair
    from .fusion import build_head, save_head

    check_fusion(fusion)

    data = load_avdigits(Path(data_dir) if data_dir else None)
    if hold_out not in data.speakers:
        raise ValueError(f"unknown speaker {hold_out!r}; AV-digits has {', '.join(data.speakers)}")
    k = data.speakers.index(hold_out)
    train_a = np.flatnonzero(data.audio_speaker != hold_out)
    train_i = np.flatnonzero(data.image_fold != k)
    ii = pair(train_a, data.audio_label, train_i, data.image_label, np.random.default_rng(seed))
    x = {"audio": data.audio["clean"][train_a], "video": data.image["clean"][ii]}
    present = {m: np.ones(len(train_a), bool) for m in x}
    y = data.audio_label[train_a]
    dims = {m: v.shape[1] for m, v in x.items()}
    modalities = ("audio", "video") if fusion not in ("audio", "video") else (fusion,)
    head = build_head(fusion, modalities, CLASSES, dims, seed, **hyper).fit(x, present, y, data.audio_speaker[train_a])
    test_a = np.flatnonzero(data.audio_speaker == hold_out)
    ti = pair(
        test_a,
        data.audio_label,
        np.flatnonzero(data.image_fold == k),
        data.image_label,
        np.random.default_rng(seed + 1),
    )
    xt = {"audio": data.audio["clean"][test_a], "video": data.image["clean"][ti]}
    metrics = {
        "held_out_speaker": hold_out,
        "held_out_image_fold": k,
        "accuracy": accuracy_by_presence(
            head, xt, {m: np.ones(len(test_a), bool) for m in xt}, data.audio_label[test_a]
        ),
    }
    config = load_config(window=AVDIGITS_WINDOW, **{"audio.pool": "mean", "video.pool": "mean"})
    from .encoders import MODELS

    encoders = {m: MODELS[getattr(config, m).encoder].weights.id for m in modalities}
    card = _card(config, encoders, {"source": "AV-digits (FSDD + scikit-learn digits)", "pairs": int(len(y))}, metrics)
    save_head(head, out, card)
    return card
