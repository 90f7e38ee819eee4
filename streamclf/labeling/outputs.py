"""``label``'s files: per-file timelines (JSON lines), segments, WebVTT subtitles and plots, and the run summary.

Outputs are written to a scratch folder and renamed into place, the segments
file last: it marks the file done (it holds the resume key), so a killed job
resumes where it stopped and never reads a half-written file as done.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .common import SCRATCH, Job


@dataclass
class FileResult:
    """One row of the run summary."""

    path: str
    rel: str
    status: str  # ok, partial (labeled up to where decoding stopped; ``error`` says why), error
    duration: float | None = None
    windows: int = 0
    top: list[dict[str, Any]] = field(default_factory=list)  # [{label, seconds}], longest first
    error: str | None = None
    warnings: int = 0
    resumed: bool = False


class Writer:
    """Atomic per-file outputs: scratch folder first, then renamed into place, segments last."""

    def __init__(self, out: Path, plots: bool, threshold: float, hop: float) -> None:
        self.out, self.plots, self.threshold, self.hop = out, plots, threshold, hop
        self.scratch = out / SCRATCH
        shutil.rmtree(self.scratch, ignore_errors=True)  # whatever a killed run left half-written
        self.scratch.mkdir(parents=True, exist_ok=True)

    def done(self, job: Job, key: str) -> dict[str, Any] | None:
        path = self.out / (job.rel + ".segments.json")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != key or data.get("threshold") != self.threshold:
            return None
        if self.plots and not (self.out / (job.rel + ".png")).exists():
            return None  # asked for plots this time
        return data

    def write(self, job: Job, key: str, records: list[dict[str, Any]], end: dict[str, Any]) -> dict[str, Any]:
        duration = end["duration"]
        segments = merge_segments(records, self.threshold, self.hop, duration)
        summary = {
            "source": job.rel,
            "path": str(job.path),
            "key": key,
            "duration": duration,
            "windows": len(records),
            "threshold": self.threshold,
            "segments": segments,
            "warnings": end["errors"],
            "status": "partial" if end["partial"] else "ok",
            "partial": end["partial"],
        }
        outputs: dict[str, str | None] = {  # None: the plot, drawn straight into its file
            ".jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
            ".vtt": webvtt(segments),
        }
        if self.plots:
            outputs[".png"] = None
        outputs[".segments.json"] = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"  # last: marks done
        for ext, text in outputs.items():
            final = self.out / (job.rel + ext)
            tmp = self.scratch / (hashlib.sha1(job.rel.encode()).hexdigest()[:16] + ext)
            if text is None:
                plot_timeline(records, tmp, title=job.rel)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        return summary


def merge_segments(
    records: list[dict[str, Any]], threshold: float, hop: float, duration: float | None = None
) -> list[dict[str, Any]]:
    """Consecutive windows whose top fused label is the same (and >= threshold) become one segment.

    A window stands for its centre +- hop/2, so segments tile the timeline
    without the overlap of the windows themselves; the first and last
    windows also cover the file's start and end.
    """
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for i, r in enumerate(records):
        top: dict[str, Any] = r["labels"][0] if r["labels"] else {}
        centre = (r["t_start"] + r["t_end"]) / 2
        label = top["label"] if top and top["score"] >= threshold else None
        start = r["t_start"] if i == 0 else max(0.0, centre - hop / 2)
        end = r["t_end"] if i == len(records) - 1 else centre + hop / 2
        if duration:
            end = min(end, duration)
        if cur is not None and (label != cur["label"] or start > cur["end"] + 1e-6):
            out.append(cur)
            cur = None
        if label is None:
            continue
        if cur is None:
            cur = {"label": label, "start": start, "end": end, "scores": []}
        cur["end"] = end
        cur["scores"].append(top["score"])
    if cur is not None:
        out.append(cur)
    return [
        {
            "label": s["label"],
            "start": round(s["start"], 3),
            "end": round(s["end"], 3),
            "peak": round(max(s["scores"]), 4),
            "mean": round(sum(s["scores"]) / len(s["scores"]), 4),
        }
        for s in out
    ]


def _vtt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def webvtt(segments: list[dict[str, Any]]) -> str:
    """Segments as WebVTT cues, so the labels show as subtitles in any player."""
    cues = [
        f"{i}\n{_vtt_time(s['start'])} --> {_vtt_time(s['end'])}\n{s['label']} ({s['peak']:.2f})\n"
        for i, s in enumerate(segments, 1)
        if s["end"] > s["start"]
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def plot_timeline(records: list[dict[str, Any]], path: Path, title: str = "", n: int = 5) -> None:
    """Per-class scores over time for audio, video and fused: one panel each, the n strongest classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [(r["t_start"] + r["t_end"]) / 2 for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for ax, key in zip(axes, ("audio", "video", "labels"), strict=True):
        series: dict[str, list[float]] = {}
        for i, r in enumerate(records):
            for e in r.get(key) or []:
                series.setdefault(e["label"], [0.0] * len(records))[i] = e["score"]
        for label in sorted(series, key=lambda k: -max(series[k]))[:n]:
            ax.plot(t, series[label], label=label[:30])
        ax.set_ylabel("fused" if key == "labels" else key)
        ax.set_ylim(0, 1)
        if series:
            ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


def top(segments: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    total: dict[str, float] = {}
    for s in segments:
        total[s["label"]] = total.get(s["label"], 0.0) + s["end"] - s["start"]
    return [{"label": k, "seconds": round(v, 2)} for k, v in sorted(total.items(), key=lambda kv: -kv[1])[:n]]


def write_summary(out: Path, rows: list[FileResult], manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / SCRATCH
    tmp.mkdir(exist_ok=True)
    with open(tmp / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "output", "duration", "status", "windows", "top_labels", "warnings", "resumed", "error"])
        for r in rows:
            top = "; ".join(f"{t['label']} {t['seconds']:.1f}s" for t in r.top)
            w.writerow(
                [
                    r.path,
                    r.rel,
                    "" if r.duration is None else round(r.duration, 3),
                    r.status,
                    r.windows,
                    top,
                    r.warnings,
                    r.resumed,
                    r.error or "",
                ]
            )
    (tmp / "summary.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "partial", "error")}
    manifest = {
        **manifest,
        "files": len(rows),
        **counts,
        "resumed": sum(r.resumed for r in rows),
        "streamclf": __version__,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in ("summary.csv", "summary.json", "manifest.json"):
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
