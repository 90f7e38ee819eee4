"""Files that appear whole or not at all: write beside the target, then rename over it.

A reader (a resumed batch, another process sharing the cache, a user opening an
alert clip) must never see half a file, and a failed write must not leave its
temporary behind. ``os.replace`` is atomic on one file system, so the temporary
lives in the target's folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def beside(path: Path) -> Path:
    """Where ``path`` is written before it is renamed over it (for writers that outlive one block).

    It keeps the target's suffix (NumPy, OpenCV and FFmpeg pick the format from it) and carries the process id,
    so processes writing the same cache file at once do not mix their bytes.
    """
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends without error."""
    tmp = beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a successful replace it no longer exists
