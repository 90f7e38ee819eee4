"""Batch labeling throughput on a folder of the shared media: media-seconds per wall-second.

    .venv/bin/python benchmarks/label_throughput.py [--engines local1 local2 ray] [--quick]

The folder holds every GRID clip, the pancake clip and the 60 s Big Buck Bunny excerpt (about 100 s of
media with audio and video). Each engine labels it from scratch into a fresh output folder; the wall
time includes loading the models (once per run, as a user would see it). Prints a table and writes
benchmarks/results/label_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from streamclf.batch import _probe_duration, label_files

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))
ENGINES = {"local1": {"workers": 1}, "local2": {"workers": 2}, "ray": {"engine": "ray"}}


def folder(tmp: Path, quick: bool) -> tuple[Path, float]:
    media = sorted((DATA / "media" / "grid").glob("*.mpg"))
    if not quick:
        media += [DATA / "media" / "flipping_a_pancake.mkv", DATA / "media" / "bbb_360p_60s.mp4"]
    if not media:
        raise SystemExit(f"label_throughput: no shared media under {DATA} (set STREAMCLF_SHARED_DATA)")
    src = tmp / "media"
    src.mkdir()
    for m in media[:3] if quick else media:
        shutil.copy(m, src / m.name)
    return src, sum(_probe_duration(p) or 0.0 for p in src.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--quick", action="store_true", help="3 short clips, local engine with 1 worker")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_throughput.json"))
    args = ap.parse_args()
    engines = ["local1"] if args.quick else args.engines
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, media_s = folder(Path(tmp), args.quick)
        for name in engines:
            t0 = time.monotonic()
            results = label_files([str(src)], Path(tmp) / f"out-{name}", progress=False, **ENGINES[name])
            wall = time.monotonic() - t0
            rows.append({"engine": name, "files": len(results), "ok": sum(r.status == "ok" for r in results),
                         "media_s": round(media_s, 1), "wall_s": round(wall, 1),
                         "media_s_per_wall_s": round(media_s / wall, 2)})
    print(f"{'engine':<8} {'files':>5} {'media s':>8} {'wall s':>7} {'media s / wall s':>17}")
    for r in rows:
        print(f"{r['engine']:<8} {r['files']:>5} {r['media_s']:>8.1f} {r['wall_s']:>7.1f} {r['media_s_per_wall_s']:>17.2f}")
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
              "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
