"""`streamclf eval`: how well fusion names labeled clips, measured the way a user runs the product.

Three runs of the real pipeline (the records ``label`` writes, smoothing
included): **fused** on the media as given, **audio only** and **video only**
on the same media with the other track removed from the file (``clips.strip``,
a remux). No internal score is read, so a single-modality figure is what a
user with only a microphone or only a camera would get.

Either clip by clip, or (``compose``) over one stream made of the clips back
to back with a gap of silence and mid-grey frames before each and after the
last, so windows straddle boundaries and smoothing carries over as in live use.

How windows become figures (the decision rule per clip, accuracy, macro-F1,
ECE, the gap rate) is ``scoring``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import closest, fused_labels
from .config import Config, load_config
from .scoring import DEFAULT_THRESHOLD, Win, gap_windows, run_metrics, windows_inside
from .train import labeled_clips

if TYPE_CHECKING:
    from .classifier import Classifier
    from .clips import Event

RUNS = {"fused": None, "audio only": "audio", "video only": "video"}  # run -> the track kept
DEFAULT_GAP = 3.0  # seconds: a default 2 s window (hop 0.5) fits entirely inside a gap at least twice
MAX_LABELS = 50  # fusion.top_k's ceiling: how many scores a record carries
RECIPE = "eval-media-v2"  # bump when composing or stripping changes, so cached media is remade


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
