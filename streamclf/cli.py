"""Command line: argument parsing only, over the Python API."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config


def _run(args: argparse.Namespace) -> int:
    from .pipeline import run

    overrides = {k: v for k, v in {
        "window.fps": args.fps, "window.length": args.window, "window.hop": args.hop,
        "device": args.device, "fusion.top_k": args.top_k, "fusion.smoothing": args.smoothing,
    }.items() if v is not None}
    config = load_config(args.config, **overrides)
    states = run(args.sources, out=args.out, config=config, dashboard=not args.no_dashboard)
    failed = False
    for st in states.values():
        if st.fatal:
            failed = True
            print(f"streamclf: error: {st.errors[-1]}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamclf", description="Real-time audio-visual classification.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="classify files, cameras or streams live")
    run.add_argument("sources", nargs="*", metavar="SOURCE",
                     help="file, URL, /dev/videoN or camera index; NAME=SOURCE names it (default: built-in sample)")
    run.add_argument("--out", help="append JSON-lines records here (- for stdout)")
    run.add_argument("--config", help="YAML config (see configs/default.yaml)")
    run.add_argument("--no-dashboard", action="store_true", help="no live terminal view")
    run.add_argument("--fps", type=float, help="video frames sampled per second")
    run.add_argument("--window", type=float, help="window length, seconds")
    run.add_argument("--hop", type=float, help="hop between windows, seconds")
    run.add_argument("--top-k", type=int, help="labels per record")
    run.add_argument("--smoothing", type=float, help="EMA alpha across windows (1 = off)")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"streamclf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
