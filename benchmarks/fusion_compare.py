"""Every fusion method vs the unimodal baselines on AV-digits (same API as `streamclf compare`).

    .venv/bin/python benchmarks/fusion_compare.py [--seeds N] [--folds K] [--methods ...]
    .venv/bin/python benchmarks/fusion_compare.py --tables-only

Prints the table and writes benchmarks/results/fusion_avdigits.{md,json,png}. ``--tables-only`` retrains
nothing: it rewrites the markdown and plot from the saved fusion_avdigits.json with the held-out-speaker
stream columns of avdigits_stream.json as they are now (after `benchmarks/avdigits_stream.py` ran).
"""

import argparse
import json
import sys
from pathlib import Path

from streamclf.cli import main
from streamclf.compare import write

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        add_help=False,
        epilog="every other argument goes to `streamclf compare` (its --help below)",
    )
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="rewrite the tables and plot from the saved "
        "results (fusion_avdigits.json, avdigits_stream.json); retrains nothing",
    )
    if "-h" in sys.argv or "--help" in sys.argv:
        parser.print_help()
        print()
    args, rest = parser.parse_known_args()
    if args.tables_only:
        result = json.loads((RESULTS / "fusion_avdigits.json").read_text())
        paths = write(
            result,
            RESULTS,
            "streamclf compare --out benchmarks/results`, then `benchmarks/fusion_compare.py --tables-only",
        )
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        sys.exit(0)
    sys.exit(main(["compare", *rest]))
