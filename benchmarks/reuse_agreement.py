"""Frame reuse must not change labels on moving content: window labels with reuse on vs off, same clips.

    .venv/bin/python benchmarks/reuse_agreement.py [--quick]

Each clip is read as `label` reads a file, once with `reuse.enabled: false` (every frame computed)
and once with `reuse.enabled: true` (unchanged frames take the last computed frame's video embedding
and detections, silent windows the result of silence), at the default window (4 fps, hop 0.5 s) and
at the surveillance window (2 fps, window 2 s, hop 1 s), the person detector on (as for live
sources). Agreement is the share of windows whose fused top-1 label is the same; also the video
encoder's own top-1 and the detector's person decision (score >= its threshold). The thresholds are
the defaults, not tuned on these clips (`reuse.motion` is the detector's earlier motion-skip setting).
Prints a table and writes benchmarks/results/reuse_agreement.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
SETTINGS = {"default": {}, "surveillance": {"window.fps": 2.0, "window.hop": 1.0, "window.length": 2.0}}


def clips(quick: bool) -> list[Path]:
    media = DATA / "media"
    grid = sorted((media / "grid").glob("*.mpg"))
    return ([media / "flipping_a_pancake.mkv", *grid[:2]] if quick
            else [media / "bbb_360p_60s.mp4", media / "bbb_720p_30s.mp4", media / "flipping_a_pancake.mkv", *grid])


def records(models, path: Path) -> list[dict]:
    """The window records of one file, as `label` makes them."""
    from streamclf.batch import file_windows
    from streamclf.pipeline import Recorder

    recorder = Recorder(models, models.config)
    out = []
    for windows, state in file_windows(path, path.name, models.config):
        if state.fatal:
            raise RuntimeError(f"{path}: {state.errors[-1]}")
        out += [recorder(s).to_dict() for s in models.process(windows)]
    models.forget(path.name)
    return out


def agreement(off: list[dict], on: list[dict], threshold: float) -> dict:
    assert len(off) == len(on), "reuse changed the number of windows"

    def same(key) -> int:
        return sum(key(a) == key(b) for a, b in zip(off, on))

    return {"windows": len(off),
            "fused_top1_same": same(lambda r: r["labels"][0]["label"]),
            "video_top1_same": same(lambda r: r["video"][0]["label"] if r["video"] else None),
            "audio_top1_same": same(lambda r: r["audio"][0]["label"] if r["audio"] else None),
            "person_same": same(lambda r: (r["detector"] or {}).get("score", 0.0) >= threshold)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the Kinetics clip and 2 GRID clips: checks the script")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reuse_agreement.json"))
    args = ap.parse_args()
    paths = clips(args.quick)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"reuse_agreement: {missing[0]} is absent (set STREAMCLF_SHARED_DATA)")
    from streamclf import load_config
    from streamclf.pipeline import Models

    rows = []
    for setting, overrides in SETTINGS.items():
        models = {}
        for reuse in (False, True):
            models[reuse] = Models(load_config(**{**overrides, "detector.enabled": True, "reuse.enabled": reuse}))
        threshold = models[True].config.detector.threshold
        for path in paths:
            t0 = time.monotonic()
            off = records(models[False], path)
            t_off = time.monotonic() - t0
            before = models[True].reuse.totals()
            t0 = time.monotonic()
            on = records(models[True], path)
            t_on = time.monotonic() - t0
            reused = {k: v - before[k] for k, v in models[True].reuse.totals().items()}
            row = {"setting": setting, "clip": path.name, **agreement(off, on, threshold), "reused": reused,
                   "seconds_off": round(t_off, 1), "seconds_on": round(t_on, 1)}
            rows.append(row)
            print(f"{setting:<12} {path.name:<24} windows {row['windows']:>4}  fused top-1 same {row['fused_top1_same']:>4}"
                  f"  video {row['video_top1_same']:>4}  person {row['person_same']:>4}  reused {reused}",
                  file=sys.stderr, flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("windows", "fused_top1_same", "video_top1_same", "person_same")}
    moving = [r for r in rows if not r["clip"].endswith(".mpg")]
    summary = {"all": {**total, "fused_agreement": round(total["fused_top1_same"] / total["windows"], 4)},
               "bbb_and_kinetics": {"windows": sum(r["windows"] for r in moving),
                                    "fused_agreement": round(sum(r["fused_top1_same"] for r in moving)
                                                             / max(1, sum(r["windows"] for r in moving)), 4)}}
    print("| setting | clip | windows | fused top-1 same | video top-1 same | person same | video frames reused |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['clip']} | {r['windows']} | {r['fused_top1_same']} | {r['video_top1_same']} | "
              f"{r['person_same']} | {r['reused']['video_frames']} |")
    print(f"fused top-1 agreement: bbb + Kinetics {summary['bbb_and_kinetics']['fused_agreement']:.2%}, "
          f"all clips {summary['all']['fused_agreement']:.2%}")
    doc = {"command": "benchmarks/reuse_agreement.py" + (" --quick" if args.quick else ""),
           "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
           "reuse": json.loads(models[True].config.reuse.model_dump_json()), "summary": summary, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
