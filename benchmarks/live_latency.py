"""Live latency with N sources paced at real time on this machine.

    .venv/bin/python benchmarks/live_latency.py [--sources 4] [--seconds 45] [--hop 0.5] [--media F] [--quick]
                                                [--detector off|on|both] [--still]

Each source is the shared Big Buck Bunny clip (H.264 360p + AAC) played at real time, as a camera
would deliver it. Latency is from the moment a window's last sample arrived (the window became
complete) to its record being written; dropped counts what the live feeds threw away because the
worker fell behind. Prints a table and writes benchmarks/results/live_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from streamclf import load_config
from streamclf.pipeline import Pipeline
from streamclf.sources import SourceSpec

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def measure(n: int, seconds: float, media: Path, hop: float = 0.5, detector: bool = False) -> dict:
    config = load_config(**{"sources.realtime": True, "window.hop": hop, "detector.enabled": detector})
    latencies: list[float] = []
    pipeline = Pipeline(config, on_event=lambda r, s: latencies.append(r["latency_ms"]) if "type" not in r else None)
    specs = [SourceSpec.parse(f"cam{i + 1}={media}") for i in range(n)]
    timer = threading.Timer(seconds, pipeline.stop)
    timer.start()
    t0 = time.monotonic()
    states = pipeline.run(specs)
    wall = time.monotonic() - t0
    timer.cancel()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    dropped = {k: sum(st.dropped.get(k, 0) for st in states.values()) for k in ("windows", "frames", "audio_chunks")}
    return {"sources": n, "wall_s": round(wall, 1), "windows": int(sum(st.windows for st in states.values())),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "dropped": dropped, "hop_s": config.window.hop, "detector": detector, "stages": pipeline.timings.summary()}


def still_camera(media: Path, folder: Path) -> Path:
    """``media``'s picture at 10 s held for its whole length, with its sound (H.264 + AAC, as a camera sends)."""
    still, out = folder / "still.png", folder / f"still-{media.stem}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "10", "-i", str(media), "-frames:v", "1", str(still)],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "24", "-i", str(still), "-i", str(media),
                    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(out)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, nargs="+", default=[4])
    ap.add_argument("--seconds", type=float, default=45.0, help="media seconds per run")
    ap.add_argument("--hop", type=float, default=0.5, help="seconds between windows")
    ap.add_argument("--media", default="bbb_360p_60s.mp4", help="clip under shared/data/media (e.g. bbb_720p_30s.mp4)")
    ap.add_argument("--quick", action="store_true", help="1 source, 8 s: checks the script, not the machine")
    ap.add_argument("--detector", choices=["off", "on", "both"], default="off",
                    help="the person detector (live sources have it by default; off keeps these runs comparable)")
    ap.add_argument("--still", action="store_true", help="each source a fixed camera where nothing moves: the "
                    "clip's picture at 10 s held, with the clip's sound (what the detector's motion skip is for)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "live_latency.json"))
    args = ap.parse_args()
    media = DATA / "media" / args.media
    if not media.exists():
        raise SystemExit(f"live_latency: {media} is absent (set STREAMCLF_SHARED_DATA)")
    if args.still:
        media = still_camera(media, Path(tempfile.mkdtemp(prefix="live_latency-")))
    counts, seconds = ([1], 8.0) if args.quick else (args.sources, args.seconds)
    detector = {"off": [False], "on": [True], "both": [False, True]}[args.detector]
    rows = [measure(n, seconds, media, args.hop, d) for n in counts for d in detector]
    print(f"{'sources':>7} {'detector':>8} {'windows':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'dropped win':>11}")
    for r in rows:
        print(f"{r['sources']:>7} {'on' if r['detector'] else 'off':>8} {r['windows']:>8} {r['latency_p50_ms']:>8.1f} "
              f"{r['latency_p95_ms']:>8.1f} {r['latency_p99_ms']:>8.1f} {r['dropped']['windows']:>11}")
    result = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
              "media": media.name, "still": args.still, "seconds": seconds, "hop_s": args.hop, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
