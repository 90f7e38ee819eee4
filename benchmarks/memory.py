"""Memory: peak RSS, and RSS over a long run on a looped clip (growth in percent).

    .venv/bin/python benchmarks/memory.py [--minutes 10] [--quick]
    .venv/bin/python benchmarks/memory.py --sources 16 --settings surveillance [--minutes 10]

The shared Big Buck Bunny clip is looped (stream copy, no re-encode) into a file far longer than
the run, and one pipeline reads it as fast as it can, with the JSON-lines sink writing every
record, for --minutes of wall time. With --sources N (more than one) that many copies play at real
time, as cameras do (live: the worker drops what it cannot keep up with), at --settings (those of
benchmarks/live_latency.py). RSS is sampled every few seconds. Growth compares the mean RSS
of the last tenth of the run with that of the second tenth (after the warm-up: models loaded,
caches filled, allocator settled). Prints a table and writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process from /proc (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def looped(media: Path, minutes: float, tmp: Path) -> Path:
    out = tmp / "looped.mp4"
    loops = int(minutes * 60 * 20 / 60) + 2  # 60 s a loop; at up to 20 media-s per wall-s the run ends first
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(media), "-c", "copy", str(out)],
        check=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="wall time of the run")
    ap.add_argument("--quick", action="store_true", help="20 s: checks the script, not the machine")
    ap.add_argument("--sources", type=int, default=1, help="copies of the clip; more than one play at real time")
    ap.add_argument(
        "--settings",
        choices=["default", "surveillance"],
        default="default",
        help="with --sources N > 1: the settings of benchmarks/live_latency.py (detector and reuse "
        "as for live sources)",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    args = ap.parse_args()
    media = DATA / "media" / "bbb_360p_60s.mp4"
    if not media.exists():
        raise SystemExit(f"memory: {media} is absent (set STREAMCLF_SHARED_DATA)")
    minutes = 20 / 60 if args.quick else args.minutes
    from streamclf import load_config
    from streamclf.pipeline import Pipeline, open_sinks
    from streamclf.sources import SourceSpec

    with tempfile.TemporaryDirectory() as tmp:
        source = looped(media, minutes, Path(tmp))
        start_rss, load = rss_mb(), os.getloadavg()[0]
        if args.sources > 1:
            # this script's folder is on the path when it runs
            from live_latency import config_for

            config = config_for(args.settings, detector=True, reuse=True)
        else:
            config = load_config()
        pipeline = Pipeline(config, sinks=open_sinks(config, Path(tmp) / "records.jsonl"))
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not done.wait(max(0.5, minutes * 60 / 200)):
                samples.append((time.monotonic() - t0, rss_mb()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(minutes * 60, pipeline.stop)
        timer.start()
        t_run = time.monotonic()
        states = pipeline.run([SourceSpec.parse(f"loop{i + 1}={source}") for i in range(args.sources)])
        wall = (time.monotonic() - t_run) / 60
        timer.cancel()
        done.set()
        sampler.join()
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    tenth = max(1, len(rss) // 10)
    early, late = float(rss[tenth : 2 * tenth].mean()), float(rss[-tenth:].mean())
    if wall < 0.95 * minutes and args.sources == 1:
        print(f"memory: the looped file ended after {wall:.1f} of {minutes:.1f} minutes")
    row = {
        "sources": args.sources,
        "settings": args.settings if args.sources > 1 else "default, as fast as it reads",
        "load_before": round(load, 2),
        "minutes": round(wall, 2),
        "windows": int(sum(st.windows for st in states.values())),
        "dropped_windows": int(sum(st.dropped.get("windows", 0) for st in states.values())),
        "rss_before_models_mb": round(start_rss, 1),
        "rss_peak_mb": round(rss_mb("VmHWM"), 1),
        "rss_early_mb": round(early, 1),
        "rss_late_mb": round(late, 1),
        "growth_percent": round(100 * (late - early) / early, 2),
        "samples": [[round(a, 1), round(b, 1)] for a, b in zip(t, rss, strict=True)],
    }
    print(
        "| sources | minutes | windows | peak RSS MB | RSS at 10-20 % MB | RSS at 90-100 % MB | growth (target < 5 %) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {row['sources']} | {row['minutes']} | {row['windows']} | {row['rss_peak_mb']} | {row['rss_early_mb']} | "
        f"{row['rss_late_mb']} | {row['growth_percent']} % |"
    )
    doc = {
        "command": " ".join(["benchmarks/memory.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "quick": args.quick,
        "runs": [row],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
