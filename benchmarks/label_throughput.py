"""`streamclf label` against `streamclf run` on the same file, in the same run: media-seconds per second.

    .venv/bin/python benchmarks/label_throughput.py [--file bbb_360p_60s.mp4] [--repeats 3] [--load N] [--ray]

Each measurement is the CLI as a user runs it, in a fresh process (imports and model loading
included, as a user pays them), alternating run / label so both see the same machine load:
- run:   `streamclf run FILE --no-dashboard --out records.jsonl`
- label: `streamclf label FILE --out DIR --no-progress --force` (local engine, default workers)
- label-ray (with --ray): the same with `--engine ray`.
Reported per mode: the median wall time and CPU time (user + system of the process and all its
children) of --repeats (every run is kept in the JSON), media-seconds per wall-second and per
CPU-second, and the ratios label / run (speed above 1: label is faster). The ratios are what to
compare across machines: both modes share the load. The median, not the best: on a busy machine
the slow runs are the finding. ``--load N`` adds N busy-looping processes to imitate a shared machine.
Prints a table and writes benchmarks/results/label_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", ROOT.parent / "shared" / "data"))


def commands(path: Path, tmp: Path, ray: bool) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "streamclf"]
    out = {
        "run": [*cli, "run", str(path), "--no-dashboard", "--out", str(tmp / "run.jsonl")],
        "label": [*cli, "label", str(path), "--out", str(tmp / "label"), "--no-progress", "--force"],
    }
    if ray:
        out["label-ray"] = [*out["label"][:-3], str(tmp / "ray"), "--no-progress", "--force", "--engine", "ray"]
    return out


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one command (CPU of its whole process tree, as the kernel accounts it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"label_throughput: {' '.join(cmd[2:4])} failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="bbb_360p_60s.mp4", help="a file under the shared media folder")
    ap.add_argument("--repeats", type=int, default=3, help="runs per mode; the median counts")
    ap.add_argument("--ray", action="store_true", help="also the ray engine")
    ap.add_argument("--load", type=int, default=0, help="busy-looping processes to run meanwhile (a shared machine)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_throughput.json"))
    args = ap.parse_args()
    from streamclf.labeling.common import probe_duration as _probe_duration

    path = DATA / "media" / args.file
    if not path.is_file():
        raise SystemExit(f"label_throughput: {path}: no such file (set STREAMCLF_SHARED_DATA)")
    media_s = _probe_duration(path) or 0.0
    times: dict[str, list[tuple[float, float]]] = {}
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmds = commands(path, Path(tmp), args.ray)
            for _ in range(args.repeats):
                for mode, cmd in cmds.items():  # alternate, so a burst of load hits every mode alike
                    (Path(tmp) / "run.jsonl").unlink(missing_ok=True)
                    times.setdefault(mode, []).append(measure(cmd))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    rows = []
    for mode, got in times.items():
        wall, cpu = statistics.median(w for w, _ in got), statistics.median(c for _, c in got)
        rows.append(
            {
                "mode": mode,
                "media_s": round(media_s, 1),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "media_s_per_wall_s": round(media_s / wall, 2),
                "media_s_per_cpu_s": round(media_s / cpu, 2),
                "runs": [{"wall_s": round(w, 2), "cpu_s": round(c, 2)} for w, c in got],
            }
        )
    base = rows[0]
    for r in rows:
        r["speed_vs_run"] = round(r["media_s_per_wall_s"] / base["media_s_per_wall_s"], 2)
        r["cpu_vs_run"] = round(r["cpu_s"] / base["cpu_s"], 2)
    print(
        f"{'mode':<10} {'media s':>8} {'wall s':>7} {'cpu s':>7} {'media s/wall s':>15} {'media s/cpu s':>14} "
        f"{'speed vs run':>13} {'cpu vs run':>11}"
    )
    for r in rows:
        print(
            f"{r['mode']:<10} {r['media_s']:>8.1f} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} "
            f"{r['media_s_per_wall_s']:>15.2f} {r['media_s_per_cpu_s']:>14.2f} {r['speed_vs_run']:>13.2f} "
            f"{r['cpu_vs_run']:>11.2f}"
        )
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_1min": round(os.getloadavg()[0], 2),
        },
        "file": args.file,
        "repeats": args.repeats,
        "added_load": args.load,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
