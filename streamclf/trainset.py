"""The windows a head learns from and is judged on, all through the live pipeline.

Split from ``train`` (which fits, validates and saves heads) because this half
is about media, not models: each clip's own windows (cached per file), and
composed streams whose windows look like deployment windows: clips back to
back with gaps at random gains, copies with one modality degraded (real or
generated background noise at a random SNR under the audio; noisy, occluded
or washed-out frames), and silent/blank copies. Composed streams are cached
by what went into them, so training again with another method or seed only
trains.
About 450 lines on purpose: the per-clip windows and the composed streams share
the window cache and the one pipeline call that makes windows, so training and
the held-out report see windows made one way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import replacing
from .config import Config
from .types import SAMPLE_RATE

if TYPE_CHECKING:
    from .classifier import Classifier, Scored
    from .clips import Event

GAIN_DB = (-30.0, 6.0)  # training-stream gain per clip: a far, quiet microphone up to a near, hot one
STREAM_GAP = 0.5  # seconds of silence and grey between clips: in training streams and in the reported stream figure
BLANK_SHARE = 0.5  # share of two-modality training windows copied with one modality silent or blank
DEGRADE_SHARE = 0.5  # share of clips copied into the degraded stream, one modality damaged in each copy
# background noise under a degraded copy: from 10 dB louder than the clip's own sound to barely there
NOISE_SNR_DB = (-10.0, 20.0)
# damaged pictures: Gaussian noise sigma (grey levels), occluded share of the frame, contrast left
FRAME_DAMAGE = {"gauss": (20.0, 80.0), "occlude": (0.2, 0.6), "contrast": (0.1, 0.4)}
EMBED_RECIPE = "train-windows-v1"  # bump when windowing or pooling changes what a clip's windows hold
STREAM_RECIPE = "train-streams-v1"  # bump when composing, gains, degradations or their draws change


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


def _save_windows(file: Path, windows: list[dict[str, np.ndarray]], **extra: np.ndarray) -> None:
    arrays: dict[str, np.ndarray] = {"n": np.array(len(windows)), **{f"extra.{k}": v for k, v in extra.items()}}
    for m in sorted({m for w in windows for m in w}):
        at = [i for i, w in enumerate(windows) if m in w]
        arrays[m], arrays[f"{m}.at"] = np.stack([windows[i][m] for i in at]), np.array(at)
    file.parent.mkdir(parents=True, exist_ok=True)
    with replacing(file) as tmp:
        np.savez(tmp, allow_pickle=False, **arrays)  # numeric arrays only (and named: **arrays cannot mean it)


def _load_windows(file: Path) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """The windows and the ``extra`` arrays saved beside them."""
    with np.load(file) as z:
        windows: list[dict[str, np.ndarray]] = [{} for _ in range(int(z["n"]))]
        extra = {k.removeprefix("extra."): z[k] for k in z.files if k.startswith("extra.")}
        for m in (k for k in z.files if k != "n" and not k.endswith(".at") and not k.startswith("extra.")):
            for i, v in zip(z[f"{m}.at"], z[m], strict=True):
                windows[int(i)][m] = v
    return windows, extra


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
            per_clip[i] = _load_windows(file)[0]
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


# ---- degraded copies: one modality damaged, so a head learns to lean on the other


def active_power(audio: np.ndarray, frame: int = 400) -> float:
    """Mean power of the 25 ms frames within 30 dB of the loudest: the sound itself, not the silence around it."""
    n = len(audio) // frame
    if n == 0:
        return float(np.mean(np.square(audio, dtype=np.float64))) if len(audio) else 0.0
    p = np.square(audio[: n * frame].astype(np.float64)).reshape(n, frame).mean(1)
    return float(p[p >= 1e-3 * p.max()].mean())


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Generated background noise when the user gives none: a random spectral tilt (white to brown, 1/f^0..2)
    under a slow random swell (0.3-4 Hz, up to full depth), so it is neither stationary nor one colour."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / max(n, 1))
    noise = np.fft.irfft(spectrum * f ** (-rng.uniform(0.0, 2.0) / 2), n)
    phase = 2 * np.pi * rng.uniform(0.3, 4.0) * np.arange(n) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    swell = 1.0 - rng.uniform(0.0, 1.0) * 0.5 * (1 + np.sin(phase))
    return (noise * swell).astype(np.float32)


def add_noise(
    audio: np.ndarray, snr_db: float, rng: np.random.Generator, backgrounds: list[np.ndarray] | None = None
) -> np.ndarray:
    """``audio`` with background noise under all of it at ``snr_db`` (the sound's active power over the noise's):
    a random stretch of one of ``backgrounds`` (looped), or ``coloured_noise`` without any."""
    n = len(audio)
    if backgrounds:
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        start = int(rng.integers(len(bg)))
        noise = np.tile(bg, n // len(bg) + 2)[start : start + n].astype(np.float64)
    else:
        noise = coloured_noise(n, rng).astype(np.float64)
    level = float(np.mean(noise**2)) or 1e-12
    noise *= np.sqrt(active_power(audio) / (level * 10 ** (snr_db / 10)))
    return (audio + noise).astype(np.float32)


def damage_frames(frames: Iterable[np.ndarray], rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One kind of picture damage (``FRAME_DAMAGE``) at a random level for a whole clip: camera noise anew on
    every frame, an object in front of the lens in one place, or a washed-out, low-contrast image."""
    kind = ("gauss", "occlude", "contrast")[int(rng.integers(3))]
    lo, hi = FRAME_DAMAGE[kind]
    level = rng.uniform(lo, hi)
    place = rng.random(2)
    for f in frames:
        if kind == "gauss":
            yield np.clip(f + rng.normal(0, level, f.shape), 0, 255).astype(np.uint8)
        elif kind == "occlude":
            h, w = f.shape[:2]
            side = int(round(np.sqrt(level * h * w)))
            y0, x0 = int(place[0] * (h - side + 1)), int(place[1] * (w - side + 1))
            out = f.copy()
            out[y0 : y0 + side, x0 : x0 + side] = 128
            yield out
        else:
            yield (128 + level * (f.astype(np.float32) - 128)).astype(np.uint8)


def degrader(
    n: int, rng: np.random.Generator, backgrounds: list[np.ndarray] | None
) -> Callable[[int, np.ndarray, Iterable[np.ndarray]], tuple[np.ndarray, Iterable[np.ndarray]]]:
    """``clips.compose``'s per-clip hook for a degraded copy: half the clips get noise under their sound at a
    random SNR (``NOISE_SNR_DB``), the other half damaged pictures; the other modality is left as it is."""
    noisy = rng.random(n) < 0.5
    snr = rng.uniform(*NOISE_SNR_DB, n)
    seeds = rng.integers(2**32, size=n)

    def degrade(i: int, audio: np.ndarray, frames: Iterable[np.ndarray]) -> tuple[np.ndarray, Iterable[np.ndarray]]:
        r = np.random.default_rng(int(seeds[i]))
        if noisy[i] and len(audio):
            return add_noise(audio, float(snr[i]), r, backgrounds), frames
        return audio, damage_frames(frames, r)

    return degrade


def read_backgrounds(paths: Iterable[str | Path]) -> list[np.ndarray]:
    """Background sounds (files, or folders searched for media) for noise copies; one line names a bad file."""
    from .media import MEDIA_EXTENSIONS
    from .sources import read_audio

    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(q for q in p.rglob("*") if q.suffix.lower() in MEDIA_EXTENSIONS) if p.is_dir() else [p]
    out = []
    for f in files:
        wave = read_audio(f)  # raises ValueError naming the file
        if np.abs(wave).max(initial=0.0) > 1e-3 and len(wave) >= 1600:
            out.append(wave)
    if not out:
        raise ValueError(f"noise: no audible background sound in {', '.join(map(str, paths))}")
    return out


# ---- composed streams through the pipeline, cached by what went into them


def _stream_cache(key: list[Any]) -> Path:
    from .encoders import cache_dir

    raw = json.dumps([STREAM_RECIPE, *key])
    return cache_dir() / "train-streams" / f"{hashlib.sha1(raw.encode()).hexdigest()[:20]}.npz"


def scored_streams(
    streams: dict[str, tuple[Callable[[Path], list[Event]], list[Any]]],
    models: Classifier,
    work: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, tuple[list[tuple[float, float]], list[dict[str, np.ndarray]], list[tuple[float, float]]]]:
    """name -> (window spans, window embeddings, event spans) of each composed stream.

    ``streams``: name -> (a function composing it into a file and returning its events, the cache key of
    what goes into it). Streams already embedded with the same key come from the cache; the others are
    composed and embedded together.
    """
    out = {}
    todo: list[tuple[str, Path, list[Event], Path]] = []
    for name, (make, key) in streams.items():
        file = _stream_cache(key)
        if file.exists():
            windows, extra = _load_windows(file)
            out[name] = ([tuple(s) for s in extra["spans"]], windows, [tuple(e) for e in extra["events"]])
        else:
            media = work / f"{name}.mkv"
            todo.append((name, media, make(media), file))
    if todo:
        rows, errors = _scored([m for _, m, _, _ in todo], models.config, models, progress, parallel=len(todo))
        if errors:
            raise ValueError(f"training stream: {errors[0]}")
        for k, (name, _, events, file) in enumerate(todo):
            scored = [s for j, s in rows if j == k]
            spans = [(s.window.t_start, s.window.t_end) for s in scored]
            windows = [dict(s.embeddings.embedding) for s in scored]
            ev = [(e.start, e.end) for e in events]
            _save_windows(
                file, windows, spans=np.array(spans, float).reshape(-1, 2), events=np.array(ev, float).reshape(-1, 2)
            )
            out[name] = (spans, windows, ev)
    return out


def stream_windows(
    clips: list[tuple[Path, str]],
    usable: list[int],
    labels: list[str],
    dims: dict[str, int],
    models: Classifier,
    work: Path,
    seed: int,
    progress: Callable[[str], None] | None = None,
    backgrounds: list[np.ndarray] | None = None,
    noise_key: list[Any] | None = None,
) -> dict[str, Any]:
    """Training windows that look like deployment windows, through the live pipeline.

    The ``usable`` clips (those that decoded) in random order as one stream, each at a random gain
    (``GAIN_DB``), ``STREAM_GAP`` of silence and grey between them, so windows
    straddle clips and gaps; a second stream of a random ``DEGRADE_SHARE`` of them with one modality
    damaged in each (``degrader``: ``backgrounds`` under the sound, or generated noise); and a file of
    silence and grey alone, whose windows are the silent/blank embeddings ``with_blanks`` uses.
    ``noise_key`` names the backgrounds in the cache key.
    """
    from .clips import compose

    rng = np.random.default_rng(seed)
    order = np.asarray(usable)[rng.permutation(len(usable))]
    gains = list(gains_db(len(order), rng))
    damaged = order[rng.random(len(order)) < DEGRADE_SHARE]
    degrade = degrader(len(damaged), rng, backgrounds)
    damaged_gains = list(gains_db(len(damaged), rng))
    window = models.config.window
    base = [seed, [_cache_file(p, models.config, models).name for p, _ in clips], [int(i) for i in usable]]
    got = scored_streams(
        {
            "train-stream": (lambda f: compose([clips[i] for i in order], f, gap=STREAM_GAP, gains=gains), base),
            "degraded-stream": (
                lambda f: compose([clips[i] for i in damaged], f, gap=STREAM_GAP, gains=damaged_gains, degrade=degrade),
                [*base, "degraded", noise_key or "generated"],
            ),
            "blank": (lambda f: compose([], f, gap=2 * window.length + 4 * window.hop), [window.model_dump()]),
        },
        models,
        work,
        progress,
    )
    x_parts, p_parts, clip, y, touched = [], [], [], [], []
    for name, played in (("train-stream", order), ("degraded-stream", damaged)):
        spans, windows, events = got[name]
        inside, hit = window_events(spans, events)
        keep = np.flatnonzero(inside >= 0)
        xs, ps = _stack([windows[k] for k in keep], dims)
        x_parts.append(xs)
        p_parts.append(ps)
        clip.append(played[inside[keep]])
        y.append(np.array([labels.index(clips[played[inside[k]]][1]) for k in keep], np.int64))
        touched += [{int(played[t]) for t in hit[k]} for k in keep]
    bx, bpresent = _stack(got["blank"][1], dims)
    return {
        "x": {m: np.concatenate([p[m] for p in x_parts]) for m in dims},
        "present": {m: np.concatenate([p[m] for p in p_parts]) for m in dims},
        "clip": np.concatenate(clip),
        "y": np.concatenate(y),
        "touched": touched,
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
