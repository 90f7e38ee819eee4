"""Train a fusion head for real use, from labeled clips or from AV-digits.

Clip embeddings come from the live pipeline itself (same decoder, windows,
encoders and pooling), so a head never meets features at run time that it
did not see in training; the card records the window and pooling settings
and the encoder weights so ``run --head`` can enforce them.
"""
from __future__ import annotations

import csv
import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .catalog import COMPARE_ONLY, FUSION_METHODS, TRAINABLE, closest
from .config import Config, load_config

if TYPE_CHECKING:  # torch: loaded only once the arguments and the data have been checked
    from .fusion.heads import Head
    from .pipeline import Models

MEDIA = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".m4v", ".flv",
         ".wav", ".mp3", ".ogg", ".flac", ".m4a", ".aac", ".opus"}


def check_fusion(fusion: str) -> None:
    """Refuse a method that does not exist or cannot be saved as a head, before any clip is embedded."""
    if fusion in COMPARE_ONLY:
        raise ValueError(f"fusion method {fusion!r} keeps its training set and cannot be saved as a head "
                         f"(compare runs it); use one of: {', '.join(TRAINABLE)}")
    if fusion not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {fusion!r}; closest: {', '.join(closest(fusion, TRAINABLE))} "
                         f"(all: {', '.join(TRAINABLE)})")


def labeled_clips(data: str | Path) -> list[tuple[Path, str]]:
    """``(path, label)`` from a folder with one sub-folder per class, or a CSV of ``path,label``.

    Every problem names the row, class or folder at fault, before anything is embedded.
    """
    data = Path(data)
    if data.is_file():
        base, out = data.parent, []
        with data.open(newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or row[0].startswith("#") or (n == 1 and row[:2] == ["path", "label"]):
                    continue
                if len(row) < 2 or not row[1].strip():
                    raise ValueError(f"{data}:{n}: expected 'path,label'")
                p = Path(row[0].strip())
                p = p if p.is_absolute() else base / p
                if not p.is_file():
                    raise ValueError(f"{data}:{n}: class {row[1].strip()!r}: {p}: no such file")
                out.append((p, row[1].strip()))
    elif data.is_dir():
        out = []
        for d in sorted(x for x in data.iterdir() if x.is_dir()):
            clips = [(p, d.name) for p in sorted(d.rglob("*")) if p.suffix.lower() in MEDIA]
            if not clips:
                raise ValueError(f"{d}: class folder {d.name!r} has no media files "
                                 f"({', '.join(sorted(MEDIA))}); add clips or remove the folder")
            out += clips
    else:
        raise ValueError(f"{data}: no such file or folder")
    classes = sorted({label for _, label in out})
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no class"
        raise ValueError(f"{data}: need labeled clips of at least two classes, found {found} "
                         f"({len(out)} clip(s)); a folder needs one sub-folder per class")
    return out


def clip_embeddings(clips: list[tuple[Path, str]], config: Config, models: Models | None = None,
                    progress: Callable[[str], None] | None = None, parallel: int = 4) -> dict[str, Any]:
    """Window embeddings of every clip through the live pipeline; bad clips are reported and skipped."""
    from .pipeline import Models, Pipeline, Scored
    from .sources import SourceSpec

    models = models or Models(config)
    modalities = list(models.encoders)
    rows: list[tuple[int, Scored]] = []
    errors: list[str] = []
    for start in range(0, len(clips), parallel):
        chunk = list(enumerate(clips))[start:start + parallel]
        specs = [SourceSpec.parse(f"clip{i}={path}") for i, (path, _) in chunk]
        states = Pipeline(models.config, models=models,
                          on_scored=lambda s: rows.append((int(s.window.source[4:]), s))).run(specs)
        for i, (path, _) in chunk:
            st = states[f"clip{i}"]
            if st.fatal:
                errors.append(f"{path}: {st.errors[-1].split(': ', 1)[-1]}")
                if progress:
                    progress(f"skipped {errors[-1]}")
        if progress:
            progress(f"embedded {min(start + parallel, len(clips))}/{len(clips)} clips, {len(rows)} windows")
    if not rows:
        raise ValueError("no windows came out of the clips (all failed or too short)")
    labels = sorted({label for _, label in clips})
    empty = sorted(set(labels) - {clips[i][1] for i, _ in rows})
    if empty:
        raise ValueError(f"class {empty[0]!r}: no windows came out of its clips (all failed or too short)")
    dims = {m: len(next(s.embeddings.embedding[m] for _, s in rows if m in s.embeddings.embedding))
            for m in modalities if any(m in s.embeddings.embedding for _, s in rows)}
    x = {m: np.stack([s.embeddings.embedding.get(m, np.zeros(d, np.float32)) for _, s in rows])
         for m, d in dims.items()}
    present = {m: np.array([m in s.embeddings.embedding for _, s in rows]) for m in dims}
    y = np.array([labels.index(clips[i][1]) for i, _ in rows])
    return {"x": x, "present": present, "y": y, "group": np.array([i for i, _ in rows]), "labels": labels,
            "dims": dims, "errors": errors, "models": models}


def accuracy_by_presence(head: Head, x: dict[str, np.ndarray], present: dict[str, np.ndarray],
                         y: np.ndarray) -> dict[str, float]:
    """Accuracy with every modality the data has, then with each one alone."""
    out = {"all": float((head.predict_proba(x, present).argmax(1) == y).mean())}
    for m in head.modalities:
        alone = {k: (v if k == m else np.zeros_like(v)) for k, v in present.items()}
        keep = present[m]
        if keep.any():
            probs = head.predict_proba({k: v[keep] for k, v in x.items()}, {k: v[keep] for k, v in alone.items()})
            out[f"{m} only"] = float((probs.argmax(1) == y[keep]).mean())
    return out


def train(data: str | Path, fusion: str, out: str | Path, config: Config | None = None, seed: int = 0,
          val_fraction: float = 0.2, progress: Callable[[str], None] | None = None, **hyper: Any) -> dict[str, Any]:
    """Train ``fusion`` on labeled clips, report held-out-clip accuracy, save the head fitted on all clips."""
    check_fusion(fusion)
    config = config or load_config()
    config = config.model_copy(update={"fusion": config.fusion.model_copy(update={"head": None})})
    clips = labeled_clips(data)
    from sklearn.model_selection import GroupShuffleSplit

    from .fusion import build_head, save_head

    emb = clip_embeddings(clips, config, progress=progress)
    x, present, y, group = emb["x"], emb["present"], emb["y"], emb["group"]
    modalities = tuple(emb["dims"])
    metrics: dict[str, Any] = {}
    if len(set(group)) >= 5 and val_fraction > 0:
        tr, va = next(GroupShuffleSplit(1, test_size=val_fraction, random_state=seed).split(y, y, group))
        head = build_head(fusion, modalities, emb["labels"], emb["dims"], seed, **hyper)
        head.fit({m: v[tr] for m, v in x.items()}, {m: v[tr] for m, v in present.items()}, y[tr], group[tr])
        metrics = {"held_out_clips": int(len(set(group[va]))),
                   "accuracy": accuracy_by_presence(head, {m: v[va] for m, v in x.items()},
                                                    {m: v[va] for m, v in present.items()}, y[va])}
    head = build_head(fusion, modalities, emb["labels"], emb["dims"], seed, **hyper).fit(x, present, y, group)
    models = emb["models"]
    card = _card(models.config, {m: models.encoders[m].weights.id for m in modalities},
                 {"source": str(data), "clips": len(clips), "windows": int(len(y)), "skipped": emb["errors"]},
                 metrics)
    save_head(head, out, card)
    return card


def _card(config: Config, encoders: dict[str, str], data: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    return {"encoders": encoders, "window": config.window.model_dump(),
            "pool": {m: getattr(config, m).pool for m in encoders}, "data": data, "metrics": metrics,
            "warnings": fusion_warnings(metrics),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def fusion_warnings(metrics: dict[str, Any]) -> list[str]:
    """A fused head that validates worse than one of its modalities alone is hurt by the other: say so."""
    acc = metrics.get("accuracy") or {}
    fused = acc.get("all")
    return [f"the head validates worse with all modalities ({fused:.3f}) than with {name} ({score:.3f}); "
            f"the other modality hurts: try --fusion {name.removesuffix(' only')}, more clips, or another method"
            for name, score in acc.items() if name != "all" and fused is not None and score > fused]


def report(card: dict[str, Any]) -> str:
    """The card's held-out figures as a small table, then its warnings (what `streamclf train` prints)."""
    metrics = dict(card.get("metrics") or {})
    if not metrics:
        return "no held-out metrics (fewer than 5 clips)"
    acc = metrics.pop("accuracy", {})
    lines = [f"{k.replace('_', ' ')}: {v}" for k, v in metrics.items()]
    width = max(len("modalities"), *map(len, acc))
    lines += [f"{'modalities':<{width}}  held-out accuracy", *(f"{k:<{width}}  {v:.3f}" for k, v in acc.items())]
    lines += [f"warning: {w}" for w in card.get("warnings", [])]
    return "\n".join(lines)


# Window settings the AV-digits streams are made for: one digit per 1 s slot, one YAMNet patch per window.
AVDIGITS_WINDOW = {"length": 1.0, "hop": 0.5, "fps": 4.0, "min_audio": 0.48, "max_side": 640}


def train_avdigits(fusion: str, out: str | Path, hold_out: str = "yweweler", seed: int = 0,
                   data_dir: str | Path | None = None, **hyper: Any) -> dict[str, Any]:
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
    head = build_head(fusion, modalities, CLASSES, dims, seed, **hyper).fit(x, present, y,
                                                                          data.audio_speaker[train_a])
    test_a = np.flatnonzero(data.audio_speaker == hold_out)
    ti = pair(test_a, data.audio_label, np.flatnonzero(data.image_fold == k), data.image_label,
              np.random.default_rng(seed + 1))
    xt = {"audio": data.audio["clean"][test_a], "video": data.image["clean"][ti]}
    metrics = {"held_out_speaker": hold_out, "held_out_image_fold": k,
               "accuracy": accuracy_by_presence(head, xt, {m: np.ones(len(test_a), bool) for m in xt},
                                                data.audio_label[test_a])}
    config = load_config(window=AVDIGITS_WINDOW, **{"audio.pool": "mean", "video.pool": "mean"})
    from .encoders import MODELS

    encoders = {m: MODELS[getattr(config, m).encoder].weights.id for m in modalities}
    card = _card(config, encoders, {"source": "AV-digits (FSDD + scikit-learn digits)", "pairs": int(len(y))},
                 metrics)
    save_head(head, out, card)
    return card
