"""Every fusion method vs the unimodal baselines on AV-digits (same API as `streamclf compare`).

    .venv/bin/python benchmarks/fusion_compare.py [--seeds N] [--folds K] [--methods ...]

Prints the table and writes benchmarks/results/fusion_avdigits.{md,json,png}.
"""
import sys

from streamclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
