"""Train a fusion head for real use, from labeled clips or from AV-digits.

Clip embeddings come from the live pipeline itself (same decoder, windows,
encoders and pooling), so a head never meets features at run time that it
did not see in training; the card records the window and pooling settings
and the encoder weights so ``run --head`` can enforce them.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import replacing
from .audio_features import AUDIO_SHAPE
from .audio_features import check as check_features
from .catalog import COMPARE_ONLY, FUSION_METHODS, TRAINABLE, closest
from .config import Config, load_config
from .media import MEDIA_EXTENSIONS

if TYPE_CHECKING:  # torch: loaded only once the arguments and the data have been checked
    from .classifier import Classifier, Scored
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


def split_groups(groups: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training groups, held-out groups): a random ``val_fraction`` of the groups (at least one, never all)."""
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(
            f"--group needs at least two groups to hold one out, found {len(names)} ({', '.join(names) or 'none'})"
        )
    k = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    held = sorted(str(g) for g in np.random.default_rng(seed).choice(names, k, replace=False))
    return [g for g in names if g not in held], held


def _scored(
    paths: list[Path], config: Config, models: Classifier, progress: Callable[[str], None] | None, parallel: int
) -> tuple[list[tuple[int, Scored]], list[str]]:
    """``(index into paths, scored window)`` for every window of every file; failed files are reported and skipped."""
    from .pipeline import Pipeline
    from .sources import SourceSpec

    rows: list[tuple[int, Scored]] = []
    errors: list[str] = []
    for start in range(0, len(paths), parallel):
        chunk = list(enumerate(paths))[start : start + parallel]
        specs = [SourceSpec.parse(f"clip{i}={path}") for i, path in chunk]
        states = Pipeline(
            models.config, classifier=models, on_scored=lambda s: rows.append((int(s.window.source[4:]), s))
        ).run(specs)
        for i, path in chunk:
            st = states[f"clip{i}"]
            if st.fatal:
                errors.append(f"{path}: {st.errors[-1].split(': ', 1)[-1]}")
                if progress:
                    progress(f"skipped {errors[-1]}")
        if progress:
            progress(f"embedded {min(start + parallel, len(paths))}/{len(paths)} files, {len(rows)} windows")
    return rows, errors


def _stack(
    windows: list[dict[str, np.ndarray]], dims: dict[str, int]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embeddings ``[N, D]`` per modality (zeros where absent) and the presence masks, from per-window dicts."""
    x = {m: np.stack([w.get(m, np.zeros(d, np.float32)) for w in windows]).reshape(-1, d) for m, d in dims.items()}
    return x, {m: np.array([m in w for w in windows], bool) for m in dims}


EMBED_RECIPE = "train-windows-v1"  # bump when windowing or pooling changes what a clip's windows hold


def _cache_file(path: Path, config: Config, models: Classifier) -> Path:
    """Where a clip's window embeddings are kept: keyed by the file (path, size, mtime), window, pooling, weights
    and the extra audio features (``audio_features``) appended to the audio embedding."""
    from .encoders import cache_dir

    st = path.stat()
    raw = json.dumps(
        [
            EMBED_RECIPE,
            str(path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            config.window.model_dump(),
            {m: [getattr(config, m).pool, e.weights.id] for m, e in sorted(models.encoders.items())},
        ]
        + ([models.audio_features] if models.audio_features else [])
    )
    return cache_dir() / "train-windows" / f"{hashlib.sha1(raw.encode()).hexdigest()[:20]}.npz"


def _save_windows(file: Path, windows: list[dict[str, np.ndarray]]) -> None:
    arrays: dict[str, np.ndarray] = {"n": np.array(len(windows))}
    for m in sorted({m for w in windows for m in w}):
        at = [i for i, w in enumerate(windows) if m in w]
        arrays[m], arrays[f"{m}.at"] = np.stack([windows[i][m] for i in at]), np.array(at)
    file.parent.mkdir(parents=True, exist_ok=True)
    with replacing(file) as tmp:
        np.savez(tmp, allow_pickle=False, **arrays)  # numeric arrays only (and named: **arrays cannot mean it)


def _load_windows(file: Path) -> list[dict[str, np.ndarray]]:
    with np.load(file) as z:
        windows: list[dict[str, np.ndarray]] = [{} for _ in range(int(z["n"]))]
        for m in (k for k in z.files if k != "n" and not k.endswith(".at")):
            for i, v in zip(z[f"{m}.at"], z[m], strict=True):
                windows[int(i)][m] = v
    return windows


def clip_embeddings(
    clips: list[tuple[Path, str]],
    config: Config,
    models: Classifier | None = None,
    progress: Callable[[str], None] | None = None,
    parallel: int = 4,
    audio_features: str | None = None,
) -> dict[str, Any]:
    """Window embeddings of every clip through the live pipeline; bad clips are reported and skipped.

    ``audio_features`` (a recipe of ``streamclf.audio_features``) are appended to every
    window's audio embedding, as the pipeline does at run time for a head
    trained with them. Embedding is the slow part of training, so each
    clip's windows are cached (``_cache_file``): training again, with
    another method or seed, embeds only new or changed clips.
    """
    from .classifier import Classifier

    models = models or Classifier(config)
    models.audio_features = audio_features
    per_clip: dict[int, list[dict[str, np.ndarray]]] = {}
    todo = []
    for i, (path, _) in enumerate(clips):
        file = _cache_file(path, models.config, models)
        if file.exists():
            per_clip[i] = _load_windows(file)
        else:
            todo.append(i)
    if progress and len(todo) < len(clips):
        progress(f"{len(clips) - len(todo)} of {len(clips)} clips' windows from the cache")
    rows, errors = _scored([clips[i][0] for i in todo], config, models, progress, parallel)
    for k, i in enumerate(todo):
        got = [dict(s.embeddings.embedding) for j, s in rows if j == k]
        if got:
            per_clip[i] = got
            _save_windows(_cache_file(clips[i][0], models.config, models), got)
    windows = [(i, w) for i in sorted(per_clip) for w in per_clip[i]]
    if not windows:
        raise ValueError("no windows came out of the clips (all failed or too short)")
    labels = sorted({label for _, label in clips})
    empty = sorted(set(labels) - {clips[i][1] for i, _ in windows})
    if empty:
        raise ValueError(f"class {empty[0]!r}: no windows came out of its clips (all failed or too short)")
    dims = {
        m: len(next(w[m] for _, w in windows if m in w)) for m in models.encoders if any(m in w for _, w in windows)
    }
    x, present = _stack([w for _, w in windows], dims)
    y = np.array([labels.index(clips[i][1]) for i, _ in windows])
    return {
        "x": x,
        "present": present,
        "y": y,
        "group": np.array([i for i, _ in windows]),
        "labels": labels,
        "dims": dims,
        "errors": errors,
        "models": models,
    }


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


GAIN_DB = (-30.0, 6.0)  # training-stream gain per clip: a far, quiet microphone up to a near, hot one
STREAM_GAP = 0.5  # seconds of silence and grey between clips: in training streams and in the reported stream figure
BLANK_SHARE = 0.5  # share of two-modality training windows copied with one modality silent or blank


def window_events(
    spans: list[tuple[float, float]], events: list[tuple[float, float]]
) -> tuple[np.ndarray, list[set[int]]]:
    """Per window: the event it lies mostly (> half its length) inside, or -1; and every event it overlaps.

    A window mostly inside an event is a training window of that event even
    when it also holds the end of the one before or a gap: that is what a
    live window looks like.
    """
    inside, touched = [], []
    for t0, t1 in spans:
        cover = [max(0.0, min(t1, e1) - max(t0, e0)) for e0, e1 in events]
        best = int(np.argmax(cover)) if cover else -1
        inside.append(best if best >= 0 and cover[best] > 0.5 * (t1 - t0) else -1)
        touched.append({i for i, c in enumerate(cover) if c > 1e-6})
    return np.array(inside, np.int64), touched


def gains_db(n: int, rng: np.random.Generator, span: tuple[float, float] = GAIN_DB) -> np.ndarray:
    """A random gain per clip, uniform in dB over ``span``: loudness must not decide the class."""
    return rng.uniform(span[0], span[1], n)


def with_blanks(
    x: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    y: np.ndarray,
    groups: np.ndarray,
    blank: dict[str, np.ndarray],
    rng: np.random.Generator,
    share: float = BLANK_SHARE,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The rows, plus copies of a ``share`` of the two-modality rows with one modality silent or blank.

    ``blank`` holds embeddings of windows of silence and grey frames (through
    the same pipeline). Such a modality is present but says nothing, the case
    the head's own modality dropout (absent = masked) does not show it: a
    gated or attention head learns to let the other modality decide.
    """
    both = np.flatnonzero(np.all([present[m] for m in blank], axis=0)) if blank else np.zeros(0, np.int64)
    pick = both[rng.random(len(both)) < share]
    if not len(pick):
        return x, present, y, groups
    which = rng.integers(len(blank), size=len(pick))
    x2 = {m: v[pick].copy() for m, v in x.items()}
    for k, m in enumerate(blank):
        rows = which == k
        x2[m][rows] = blank[m][rng.integers(len(blank[m]), size=int(rows.sum()))]
    return (
        {m: np.concatenate([x[m], x2[m]]) for m in x},
        {m: np.concatenate([v, v[pick]]) for m, v in present.items()},
        np.concatenate([y, y[pick]]),
        np.concatenate([groups, groups[pick]]),
    )


def stream_windows(
    clips: list[tuple[Path, str]],
    usable: list[int],
    labels: list[str],
    dims: dict[str, int],
    models: Classifier,
    work: Path,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Training windows that look like deployment windows, through the live pipeline.

    The ``usable`` clips (those that decoded) in random order as one stream, each at a random gain
    (``GAIN_DB``), ``STREAM_GAP`` of silence and grey between them, so windows
    straddle clips and gaps; plus a file of silence and grey alone, whose
    windows are the silent/blank embeddings ``with_blanks`` uses.
    """
    from .clips import compose

    rng = np.random.default_rng(seed)
    order = np.asarray(usable)[rng.permutation(len(usable))]
    stream, blank = work / "train-stream.mkv", work / "blank.mkv"
    events = compose([clips[i] for i in order], stream, gap=STREAM_GAP, gains=list(gains_db(len(order), rng)))
    window = models.config.window
    compose([], blank, gap=2 * window.length + 4 * window.hop)
    rows, errors = _scored([stream, blank], models.config, models, progress, parallel=2)
    if errors:
        raise ValueError(f"training stream: {errors[0]}")
    scored = [s for i, s in rows if i == 0]
    inside, touched = window_events(
        [(s.window.t_start, s.window.t_end) for s in scored], [(e.start, e.end) for e in events]
    )
    keep = np.flatnonzero(inside >= 0)
    x, present = _stack([scored[k].embeddings.embedding for k in keep], dims)
    bx, bpresent = _stack([s.embeddings.embedding for i, s in rows if i == 1], dims)
    return {
        "x": x,
        "present": present,
        "clip": order[inside[keep]],
        "y": np.array([labels.index(clips[order[inside[k]]][1]) for k in keep], np.int64),
        "touched": [{int(order[t]) for t in touched[k]} for k in keep],
        "blank": {m: bx[m][bpresent[m]] for m in dims if bpresent[m].any()},
    }


def training_set(
    emb: dict[str, Any], aug: dict[str, Any] | None, use: np.ndarray, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Windows of the clips marked in ``use``: per clip, then (with ``aug``) stream windows touching only those
    clips and silent/blank copies. Returns x, present, y and the clip index of each row (its group)."""
    w = use[emb["group"]]
    x, present = {m: v[w] for m, v in emb["x"].items()}, {m: v[w] for m, v in emb["present"].items()}
    y, groups = emb["y"][w], emb["group"][w]
    if aug is None:
        return x, present, y, groups
    s = np.array([all(use[c] for c in t) for t in aug["touched"]], bool)
    x = {m: np.concatenate([v, aug["x"][m][s]]) for m, v in x.items()}
    present = {m: np.concatenate([v, aug["present"][m][s]]) for m, v in present.items()}
    y, groups = np.concatenate([y, aug["y"][s]]), np.concatenate([groups, aug["clip"][s]])
    return with_blanks(x, present, y, groups, aug["blank"], np.random.default_rng(seed))


def train(
    data: str | Path,
    fusion: str,
    out: str | Path,
    config: Config | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    progress: Callable[[str], None] | None = None,
    group: str | None = None,
    augment: bool = True,
    audio_features: str | None = AUDIO_SHAPE,
    **hyper: Any,
) -> dict[str, Any]:
    """Train ``fusion`` on labeled clips, report held-out figures, save the head fitted on all clips.

    Validation holds out whole groups (``group``: see ``grouped_clips``; else
    single clips) and reports per-window accuracy and, closer to what a user
    gets, ``eval`` on a composed stream of the held-out clips. ``augment``
    adds the training windows of ``stream_windows`` and ``with_blanks``.
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
    held: list[str] = []
    if val_fraction > 0 and (group is not None or len(clips) >= 5):
        held = split_groups(groups, val_fraction, seed)[1]
    pairs = [(p, label) for p, label, _ in clips]
    from .fusion import build_head, save_head

    emb = clip_embeddings(pairs, config, progress=progress, audio_features=audio_features)
    models, modalities = emb["models"], tuple(emb["dims"])
    encoders = {m: models.encoders[m].weights.id for m in modalities}

    group_code = np.unique(groups, return_inverse=True)[1]  # per clip

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
            stream_windows(pairs, usable, emb["labels"], emb["dims"], models, Path(tmp), seed, progress)
            if augment
            else None
        )
        if held:
            val = np.array([g in held for g in groups])
            head = fit(~val)
            w = val[emb["group"]]
            metrics = {
                **({"group": group or "sub-folder", "held_out_groups": held} if group is not None else {}),
                "held_out_clips": int(val.sum()),
                "accuracy": accuracy_by_presence(
                    head,
                    {m: v[w] for m, v in emb["x"].items()},
                    {m: v[w] for m, v in emb["present"].items()},
                    emb["y"][w],
                ),
            }
            streamed = [pairs[i] for i in usable if val[i]]
            if len({label for _, label in streamed}) >= 2:  # eval needs two categories to name
                card = _card(models.config, encoders, {}, {}, audio_features)
                metrics["stream"] = stream_figures(head, streamed, models.config, card, Path(tmp), progress)
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


def stream_figures(
    head: Head,
    clips: list[tuple[Path, str]],
    config: Config,
    card: dict[str, Any],
    work: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``eval --compose`` of ``head`` on ``clips`` back to back with ``STREAM_GAP`` gaps: fused, audio/video only."""
    from .evaluate import evaluate
    from .fusion import save_head

    folder = save_head(head, work / "held-out-head", card)
    listing = work / "held-out.csv"
    with listing.open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *((str(p.resolve()), label) for p, label in clips)])
    config = config.model_copy(update={"fusion": config.fusion.model_copy(update={"head": str(folder)})})
    result = evaluate(listing, config, compose=True, gap=STREAM_GAP, work_dir=work / "eval", progress=progress)
    return {
        "gap": STREAM_GAP,
        **{run: round(m["accuracy"], 4) for run, m in result["runs"].items()},
        "gain": round(result["gain"], 4),
    }


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
        lines.append(
            f"stream: eval --compose of the held-out clips with {stream['gap']:g} s gaps; fused minus the "
            f"better single modality {100 * stream['gain']:+.1f} pts"
        )
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
