"""`streamclf eval`: how well fusion names labeled clips, measured the way a user runs the product.

Three runs of the real pipeline (the records ``label`` writes, smoothing
included): **fused** on the media as given, **audio only** and **video only**
on the same media with the other track removed from the file (``clips.strip``,
a remux). No internal score is read, so a single-modality figure is what a
user with only a microphone or only a camera would get.

Either clip by clip, or (``compose``) over one stream made of the clips back
to back with a gap of silence and mid-grey frames before each and after the
last, so windows straddle boundaries and smoothing carries over as in live use.

Decision rule, the same for all three runs: a clip (event) is named by the
**score-summed top-1** of its windows, i.e. the fused label whose scores,
summed over those windows, is highest (a label outside a window's top 50
counts 0 there). Clip by clip, a clip's windows are all windows of its file;
in a composed stream they are the windows lying mostly inside the event
(more than half of the window's length overlaps it), or, for an event shorter
than half a window, the windows overlapping it most. A clip without windows
(a failed decode, or no track left after stripping) counts as wrong.

Figures: top-1 accuracy per category and overall; the gain of fused over the
better single modality; macro-F1 over the dataset's categories (a label outside
them counts against recall only); ECE of the window top-1 score (10 equal-width
bins over the windows of the events; right when the window's top-1 names the
event's category); with ``compose``, the rate of gap windows (lying entirely in
a gap: nothing but silence and grey, though smoothing still remembers the clip
before) whose top score reaches the threshold, i.e. would pass an alert rule with
the default ``min_score``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import closest, fused_labels
from .config import AlertRule, Config, load_config
from .train import labeled_clips

if TYPE_CHECKING:
    from .classifier import Classifier
    from .clips import Event

RUNS = {"fused": None, "audio only": "audio", "video only": "video"}  # run -> the track kept
DEFAULT_THRESHOLD: float = AlertRule(label="any").min_score or 0.5  # a rule's fused min_score when none is given
DEFAULT_GAP = 3.0  # seconds: a default 2 s window (hop 0.5) fits entirely inside a gap at least twice
MAX_LABELS = 50  # fusion.top_k's ceiling: how many scores a record carries
RECIPE = "eval-media-v2"  # bump when composing or stripping changes, so cached media is remade
BINS = 10
NOTHING = "nothing"  # the explicit outcome of a window no label reaches the threshold in (a silent, blank scene)


@dataclass
class Win:
    """One window record, reduced to what the metrics read."""

    t_start: float
    t_end: float
    scores: dict[str, float]

    @property
    def top(self) -> tuple[str | None, float]:
        if not self.scores:
            return None, 0.0
        label = max(self.scores, key=self.scores.__getitem__)
        return label, self.scores[label]


def outcome(w: Win, threshold: float = DEFAULT_THRESHOLD) -> str:
    """What a window says: its top label when that reaches ``threshold`` (an alert rule's default ``min_score``),
    else ``NOTHING``.

    Records keep their fused top-k as they are (the schema does not change):
    "nothing" is the null label, read as "no label at or above the alert
    threshold"; a silent, blank scene must come out this way.
    """
    label, score = w.top
    return label if label is not None and score >= threshold else NOTHING


def overlap(w: Win, start: float, end: float) -> float:
    """Seconds of window ``w`` inside [start, end]."""
    return max(0.0, min(w.t_end, end) - max(w.t_start, start))


def windows_inside(windows: list[Win], start: float, end: float) -> list[Win]:
    """Windows lying mostly (> half their length) inside [start, end]; else the ones overlapping it most."""
    inside = [w for w in windows if overlap(w, start, end) > 0.5 * (w.t_end - w.t_start)]
    if inside:
        return inside
    best = max((overlap(w, start, end) for w in windows), default=0.0)
    return [w for w in windows if best > 0 and overlap(w, start, end) == best]


def gap_windows(windows: list[Win], events: list[tuple[float, float]], end: float) -> list[Win]:
    """Windows lying entirely inside a gap: within [0, end] and overlapping no event.

    A window that still holds part of a clip may rightly name it; only a
    window of pure silence and grey measures false alarms.
    """
    return [
        w
        for w in windows
        if w.t_start >= -1e-6 and w.t_end <= end + 1e-6 and not any(overlap(w, s, e) > 1e-6 for s, e in events)
    ]


def decide(windows: Iterable[Win]) -> str | None:
    """The score-summed top-1 label of ``windows`` (None without windows)."""
    total: dict[str, float] = {}
    for w in windows:
        for label, score in w.scores.items():
            total[label] = total.get(label, 0.0) + score
    return max(total, key=total.__getitem__) if total else None


def f1_scores(truth: list[str], pred: list[str | None], classes: list[str]) -> dict[str, float]:
    """F1 per class of ``classes`` (a prediction outside them is a miss for the true class only)."""
    out = {}
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, pred, strict=True))
        out[c] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


def ece(confidence: list[float], correct: list[bool], bins: int = BINS) -> float | None:
    """Expected calibration error: sum over equal-width bins of (share of items) x |accuracy - mean confidence|."""
    if not confidence:
        return None
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0.0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidence[i] for i in idx) / len(idx)
            total += len(idx) / len(confidence) * abs(acc - conf)
    return total


def run_metrics(
    truth: list[str], per_event: list[list[Win]], gaps: list[Win] | None, classes: list[str], threshold: float
) -> dict[str, Any]:
    """The figures of one run: events named by ``decide``, scored against ``truth``."""
    pred = [decide(ws) for ws in per_event]
    f1 = f1_scores(truth, pred, classes)
    conf, right = [], []
    for label, ws in zip(truth, per_event, strict=True):
        for w in ws:
            top, score = w.top
            conf.append(score)
            right.append(top == label)
    per_category = {}
    for c in classes:
        hits = [p == t for t, p in zip(truth, pred, strict=True) if t == c]
        per_category[c] = {"clips": len(hits), "accuracy": sum(hits) / len(hits), "f1": f1[c]}
    hot = None if gaps is None else sum(outcome(w, threshold) != NOTHING for w in gaps)
    return {
        "accuracy": sum(p == t for t, p in zip(truth, pred, strict=True)) / len(truth),
        "macro_f1": sum(f1.values()) / len(f1),
        "ece": ece(conf, right),
        "windows": len(conf),
        "gap_windows": None if gaps is None else len(gaps),
        "gap_hot": hot,
        "gap_rate": None if hot is None or not gaps else hot / len(gaps),
        "gap_scores": None if gaps is None else [round(w.top[1], 4) for w in gaps],
        "without_windows": sum(not ws for ws in per_event),
        "per_category": per_category,
        "predicted": pred,
    }


def _key(clips: list[tuple[Path, str]], compose: bool, gap: float) -> str:
    """Cached media is reused only for the same files (path, size, mtime), labels and settings."""
    parts = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns, label] for p, label in clips]
    raw = json.dumps([RECIPE, compose, gap, parts])
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def prepare_media(
    clips: list[tuple[Path, str]], work: Path, compose: bool, gap: float, progress: Callable[[str], None] | None = None
) -> tuple[dict[str, list[Path | None]], list[Event]]:
    """The inputs of the three runs (one path per clip, or one composed stream), made once per ``work`` folder.

    A clip without the track a run keeps gets None there. Returns the paths
    per run and, with ``compose``, the events of the stream.
    """
    from .clips import Event, strip, tracks
    from .clips import compose as compose_stream

    folder = work / _key(clips, compose, gap)
    done = folder / "media.json"
    if done.exists():
        saved = json.loads(done.read_text())
        return (
            {run: [None if p is None else Path(p) for p in paths] for run, paths in saved["runs"].items()},
            [Event(**e) for e in saved["events"]],
        )
    folder.mkdir(parents=True, exist_ok=True)
    events: list[Event] = []
    if compose:
        stream = folder / "stream.mkv"
        events = compose_stream(clips, stream, gap=gap, progress=progress)
        sources = [stream]
    else:
        sources = [p for p, _ in clips]
    runs: dict[str, list[Path | None]] = {"fused": list(sources)}
    for run, keep in RUNS.items():
        if keep is None:
            continue
        runs[run] = []
        for i, src in enumerate(sources):
            try:
                have = tracks(src)
            except ValueError:  # unreadable: the fused run fails on it and reports it
                have = set()
            dst = folder / f"{i}.{keep}{src.suffix}"
            runs[run].append(strip(src, dst, keep) if keep in have else None)
    done.write_text(
        json.dumps(
            {
                "runs": {r: [None if p is None else str(p) for p in ps] for r, ps in runs.items()},
                "events": [asdict(e) for e in events],
            }
        )
    )
    return runs, events


def _windows(path: Path, models: Classifier) -> list[Win]:
    """The window records ``label`` would write for ``path``, as ``Win``."""
    from .labeling import iter_records

    return [
        Win(r["t_start"], r["t_end"], {x["label"]: x["score"] for x in r["labels"]})
        for r in iter_records(path, classifier=models)
    ]


def check_labels(data: str | Path, labels: Iterable[str], config: Config) -> None:
    """Every category of the data must be a label fusion can produce, or no clip of it could ever be right."""
    names = fused_labels(config)
    if names is None:
        return  # the head or category map cannot be read here; loading the models says why
    for label in sorted(set(labels)):
        if label not in names:
            where = f"the head {config.fusion.head}" if config.fusion.head else "the category map"
            raise ValueError(
                f"{data}: category {label!r} is not a label of {where}; closest: "
                f"{', '.join(closest(label, names))} ({len(names)} labels in all)"
            )


def evaluate(
    data: str | Path,
    config: Config | None = None,
    *,
    compose: bool = False,
    gap: float = DEFAULT_GAP,
    threshold: float = DEFAULT_THRESHOLD,
    work_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    models: Classifier | None = None,
    runs: Iterable[str] = tuple(RUNS),
) -> dict[str, Any]:
    """Fused, audio-only and video-only figures for the labeled clips in ``data`` (see the module docstring).

    ``runs`` picks some of the three (``RUNS``): e.g. only "audio only" with
    the video encoder disabled in ``config`` measures a microphone-only system
    on the same stripped media; ``gain`` is then None.

    ``data`` is what ``train`` reads (a folder per category or a CSV of
    path,label). ``work_dir`` keeps the stripped and composed media for the
    next call (default: a temporary folder, removed). Raises ValueError for
    unusable input before any model loads.
    """
    config = config or load_config()
    clips = labeled_clips(data)
    check_labels(data, (label for _, label in clips), config)
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold {threshold}: must be in [0, 1]")
    if compose and gap <= 0:
        raise ValueError(f"gap {gap}: must be above 0 s")
    wanted = list(runs)
    if not wanted or set(wanted) - set(RUNS):
        raise ValueError(f"runs {wanted}: choose from {', '.join(RUNS)}")
    names = fused_labels(config)
    config = config.model_copy(
        update={
            "fusion": config.fusion.model_copy(update={"top_k": min(MAX_LABELS, len(names) if names else MAX_LABELS)})
        }
    )
    say = progress or (lambda msg: None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="streamclf-eval-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        media, events = prepare_media(clips, work, compose, gap, progress)
        say(f"media ready in {work} ({time.monotonic() - started:.0f} s)")
        from .classifier import Classifier

        models = models or Classifier(config)
        calibration = getattr(models.fusion, "calibration", None)  # a trained head has none
        truth = [label for _, label in clips]
        classes = sorted(set(truth))
        measured, failed = {}, []
        for run, paths in media.items():
            if run not in wanted:
                continue
            per_file: list[list[Win]] = []
            last = time.monotonic()
            for i, path in enumerate(paths):
                try:
                    per_file.append([] if path is None else _windows(path, models))
                except ValueError as e:  # one bad clip is counted wrong and reported, the others go on
                    per_file.append([])
                    failed.append(f"{run}: {e}")
                    say(f"{run}: {e}")
                if time.monotonic() - last > 5 or i == len(paths) - 1:
                    last = time.monotonic()
                    say(
                        f"{run}: {i + 1}/{len(paths)} {'stream' if compose else 'clips'} done "
                        f"({time.monotonic() - started:.0f} s)"
                    )
            if compose:
                stream = per_file[0]
                spans = [(e.start, e.end) for e in events]
                per_event = [windows_inside(stream, s, e) for s, e in spans]
                gaps: list[Win] | None = gap_windows(stream, spans, spans[-1][1] + gap)
            else:
                per_event, gaps = per_file, None
            measured[run] = run_metrics(truth, per_event, gaps, classes, threshold)
    singles = [measured[r]["accuracy"] for r in measured if r != "fused"]
    predicted = {r: measured[r].pop("predicted") for r in measured}  # per clip, under "events"
    # where each clip lies in the composed stream
    places: list[dict[str, float]] = (
        [{"start": e.start, "end": e.end} for e in events] if compose else [{}] * len(clips)
    )
    return {
        "data": str(data),
        "mode": "composed stream" if compose else "clip by clip",
        "gap": gap if compose else None,
        "threshold": threshold,
        "fusion": f"head {config.fusion.head}"
        if config.fusion.head
        else f"category map {config.fusion.categories or 'built-in'}",
        "calibration": None if calibration is None else calibration.source(),
        "decision": "score-summed top-1 of "
        + ("the windows lying mostly inside each clip" if compose else "each clip's windows"),
        "clips": len(clips),
        "categories": classes,
        "gain": measured["fused"]["accuracy"] - max(singles) if "fused" in measured and singles else None,
        "runs": measured,
        "events": [
            {
                "path": str(p),
                "label": label,
                **place,
                **{r: predicted[r][i] for r in measured},
            }
            for i, ((p, label), place) in enumerate(zip(clips, places, strict=True))
        ],
        "failed": failed,
        "seconds": round(time.monotonic() - started, 1),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Header, one row per category, then the overall row (accuracy in %, F1 of the fused run)."""
    runs = result["runs"]
    rows = [["category", "clips", *runs, "gain", "fused F1"]]
    for c in result["categories"]:
        acc = [runs[r]["per_category"][c]["accuracy"] for r in runs]
        rows.append(
            [
                c,
                str(runs["fused"]["per_category"][c]["clips"]),
                *map(_pct, acc),
                f"{100 * (acc[0] - max(acc[1:])):+.1f}",
                f"{runs['fused']['per_category'][c]['f1']:.2f}",
            ]
        )
    rows.append(
        [
            "all",
            str(result["clips"]),
            *(_pct(runs[r]["accuracy"]) for r in runs),
            f"{100 * result['gain']:+.1f}",
            f"{runs['fused']['macro_f1']:.2f} (macro)",
        ]
    )
    return rows


def calibration_line(source: dict[str, Any] | None, fusion: str) -> str:
    """The calibration file the figures were measured with and what it was fitted on, in one line."""
    if source is None:
        return "none (a trained head calibrates itself)" if fusion.startswith("head") else "none (raw scores)"
    where = "built-in streamclf/data/calibration.yaml" if source["builtin"] else str(source["path"])
    return f"{where}, fitted on {'; '.join(source['data'])} ({source['clips']} clips)"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the table does not show: macro-F1 and ECE of each run, the gap-window rate, the rule."""
    runs = result["runs"]
    lines = [
        f"{result['clips']} clips, {result['mode']}; {result['fusion']}; {result['decision']}",
        "calibration: " + calibration_line(result.get("calibration"), result["fusion"]),
        "macro-F1: " + ", ".join(f"{r} {m['macro_f1']:.3f}" for r, m in runs.items()),
        "ECE of the window top-1 score: "
        + ", ".join(f"{r} {'-' if m['ece'] is None else format(m['ece'], '.3f')}" for r, m in runs.items()),
    ]
    if result["gap"] is not None:
        lines.append(
            f"gap windows with a label >= {result['threshold']:g}: "
            + ", ".join(f"{r} {m['gap_hot']}/{m['gap_windows']} ({_pct(m['gap_rate'])} %)" for r, m in runs.items())
        )
    lines += [f"failed: {f}" for f in result["failed"]]
    return lines


def render(result: dict[str, Any]) -> Any:
    """The table as a rich Table (plain text when printed to a pipe)."""
    from rich.table import Table

    header, *rows = table_rows(result)
    table = Table(title="top-1 accuracy (%) by category", title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2)
    return table


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """``result`` as indented JSON at ``path`` (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
