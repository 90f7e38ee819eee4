"""Frame reuse must not change labels on moving content: window labels with reuse on vs off, same clips.

    .venv/bin/python benchmarks/reuse_agreement.py [--quick]

Each clip is read as `label` reads a file, once with `reuse.enabled: false` (every frame computed)
and once with `reuse.enabled: true` (unchanged frames take the last computed frame's video embedding
and detections, silent windows the result of silence), at the default window (4 fps, hop 0.5 s) and
at the surveillance window (2 fps, window 2 s, hop 1 s), the person detector on (as for live
sources). Clips: Big Buck Bunny (360p, 720p) and the Kinetics pancake clip (moving: the target),
the GRID talking heads (a still background, a speaker who moves a little), and the still kitchen
with room tone of benchmarks/live_latency.py (where reuse acts on nearly every frame). Agreement is
the share of windows whose fused top-1 label is the same; also the video encoder's own top-1 and the
detector's person decision (score >= its threshold). The thresholds are
the defaults, not tuned on these clips (`reuse.motion` is the detector's earlier motion-skip setting).
Prints a table and writes benchmarks/results/reuse_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
SETTINGS = {"default": {}, "surveillance": {"window.fps": 2.0, "window.hop": 1.0, "window.length": 2.0}}


def clips(quick: bool, folder: Path) -> list[tuple[str, Path]]:
    """(group, path) of every clip measured; the still scene is composed into ``folder``."""
    # this script's folder is on the path when it runs
    from live_latency import static_scene

    media = DATA / "media"
    grid = sorted((media / "grid").glob("*.mpg"))[: 2 if quick else None]
    moving = (
        [media / "flipping_a_pancake.mkv"]
        if quick
        else [media / p for p in ("bbb_360p_60s.mp4", "bbb_720p_30s.mp4", "flipping_a_pancake.mkv")]
    )
    return (
        [("moving", p) for p in moving]
        + [("GRID", p) for p in grid]
        + [("still", static_scene(folder, 10.0 if quick else 60.0))]
    )


def records(models, path: Path) -> tuple[list[dict], dict[str, int]]:
    """The window records of one file, as `label` makes them, and what it reused."""
    from streamclf.labeling.common import file_windows
    from streamclf.recorder import Recorder

    recorder, memory = Recorder(models, models.config), models.memory(path.name)
    out = []
    for windows, state in file_windows(path, path.name, models.config):
        if state.fatal:
            raise RuntimeError(f"{path}: {state.errors[-1]}")
        out += [recorder(s, memory).to_dict() for s in models.score(windows, {path.name: memory})]
    return out, memory.reuse.reused(path.name)


def agreement(off: list[dict], on: list[dict], threshold: float) -> dict:
    assert len(off) == len(on), "reuse changed the number of windows"

    def same(key) -> int:
        return sum(key(a) == key(b) for a, b in zip(off, on, strict=True))

    return {
        "windows": len(off),
        "fused_top1_same": same(lambda r: r["labels"][0]["label"]),
        "video_top1_same": same(lambda r: r["video"][0]["label"] if r["video"] else None),
        "audio_top1_same": same(lambda r: r["audio"][0]["label"] if r["audio"] else None),
        "person_same": same(lambda r: (r["detector"] or {}).get("score", 0.0) >= threshold),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the Kinetics clip and 2 GRID clips: checks the script")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reuse_agreement.json"))
    args = ap.parse_args()
    if not (DATA / "media").exists():
        raise SystemExit(f"reuse_agreement: {DATA / 'media'} is absent (set STREAMCLF_SHARED_DATA)")
    paths = clips(args.quick, Path(tempfile.mkdtemp(prefix="reuse_agreement-")))
    from streamclf import load_config
    from streamclf.classifier import Classifier

    rows = []
    for setting, overrides in SETTINGS.items():
        models = {}
        for reuse in (False, True):
            models[reuse] = Classifier(load_config(**{**overrides, "detector.enabled": True, "reuse.enabled": reuse}))
        threshold = models[True].config.detector.threshold
        for group, path in paths:
            t0 = time.monotonic()
            off, _ = records(models[False], path)
            t_off = time.monotonic() - t0
            t0 = time.monotonic()
            on, reused = records(models[True], path)
            t_on = time.monotonic() - t0
            row = {
                "setting": setting,
                "group": group,
                "clip": path.name,
                **agreement(off, on, threshold),
                "reused": reused,
                "seconds_off": round(t_off, 1),
                "seconds_on": round(t_on, 1),
            }
            rows.append(row)
            print(
                f"{setting:<12} {path.name:<24} windows {row['windows']:>4}  "
                f"fused top-1 same {row['fused_top1_same']:>4}  video {row['video_top1_same']:>4}  "
                f"person {row['person_same']:>4}  reused {reused}",
                file=sys.stderr,
                flush=True,
            )
    keys = ("windows", "fused_top1_same", "video_top1_same", "person_same")
    summary = {}
    for group in ("moving", "GRID", "still", "all"):
        chosen = [r for r in rows if group in ("all", r["group"])]
        total = {k: sum(r[k] for r in chosen) for k in keys}
        summary[group] = {
            **total,
            "fused_agreement": round(total["fused_top1_same"] / max(1, total["windows"]), 4),
            "video_frames_reused": sum(r["reused"]["video_frames"] for r in chosen),
        }
    print("| setting | clip | windows | fused top-1 same | video top-1 same | person same | video frames reused |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['clip']} | {r['windows']} | {r['fused_top1_same']} | {r['video_top1_same']} | "
            f"{r['person_same']} | {r['reused']['video_frames']} |"
        )
    print(
        "fused top-1 agreement: "
        + ", ".join(f"{g} {v['fused_agreement']:.2%} of {v['windows']} windows" for g, v in summary.items())
    )
    doc = {
        "command": "benchmarks/reuse_agreement.py" + (" --quick" if args.quick else ""),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "reuse": json.loads(models[True].config.reuse.model_dump_json()),
        "summary": summary,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
