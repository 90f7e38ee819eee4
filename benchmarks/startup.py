"""How long the command line takes to answer when nothing needs a model: help, usage and config errors.

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--label after]
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/startup.py --label before

Each case is a fresh ``python -m streamclf ...`` (or ``run_stream.py``) process, timed from start to
exit, several times; the table gives the median. The code measured is whichever ``streamclf`` the
interpreter imports (PYTHONPATH first), so the same script measures an older checkout for a
before/after pair. Results are merged under ``--label`` into benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cases(code: Path, bad_config: Path) -> dict[str, list[str]]:
    """What a newcomer types first: help, a typo in a flag, a typo in a config, an alert label that is not one."""
    cli = [sys.executable, "-m", "streamclf"]
    return {
        "streamclf --help": [*cli, "--help"],
        "streamclf run --help": [*cli, "run", "--help"],
        "run_stream.py --help": [sys.executable, str(code / "run_stream.py"), "--help"],
        "config error (unknown key)": [*cli, "run", "--config", str(bad_config), "--no-dashboard"],
        "unknown flag": [*cli, "run", "--no-dashbord"],
        "unknown alert label": [*cli, "run", "--alert", "dgo", "--no-dashboard", "--out", os.devnull],
    }


def timed(argv: list[str], cwd: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=600)
    return time.perf_counter() - t0, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per case (the median is reported)")
    ap.add_argument("--label", default="after", help="key of this measurement in the JSON (e.g. before, after)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = ap.parse_args()
    spec = importlib.util.find_spec("streamclf")
    if spec is None or spec.origin is None:
        raise SystemExit("startup: streamclf is not importable (install it or set PYTHONPATH)")
    code = Path(spec.origin).resolve().parents[1]
    commit = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("window:\n  lenght: 2\n")
        for name, argv in cases(code, bad).items():
            runs = [timed(argv, Path(tmp)) for _ in range(args.repeats)]
            times = [t for t, _ in runs]
            rows.append(
                {
                    "case": name,
                    "argv": " ".join(argv[1:]),
                    "exit_code": runs[-1][1],
                    "median_s": round(statistics.median(times), 3),
                    "min_s": round(min(times), 3),
                    "max_s": round(max(times), 3),
                }
            )
            print(
                f"{name:<28} exit {rows[-1]['exit_code']}  median {rows[-1]['median_s']:7.3f} s  "
                f"(min {rows[-1]['min_s']:.3f}, max {rows[-1]['max_s']:.3f})",
                flush=True,
            )
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[args.label] = {
        "code": str(code),
        "commit": commit,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "cases": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\n{'case':<28} " + " ".join(f"{label:>12}" for label in doc) + "   (median s, exit code)")
    for name in (r["case"] for r in rows):
        cells = []
        for label in doc:
            row = next((r for r in doc[label]["cases"] if r["case"] == name), None)
            cells.append(f"{row['median_s']:>8.3f} ({row['exit_code']})" if row else f"{'-':>12}")
        print(f"{name:<28} " + " ".join(cells))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
