#!/usr/bin/env python3
"""``python run_stream.py [SOURCE...]`` is ``streamclf run``: with no sources, the built-in sample."""

import sys

from streamclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
