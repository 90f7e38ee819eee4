"""atomic.replacing: a file appears whole or not at all, and a failed write leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamclf.atomic import replacing


def test_the_target_appears_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "embeddings.npy"
    with replacing(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy"  # NumPy, OpenCV, FFmpeg read the suffix
        np.save(tmp, np.arange(3))
        assert not target.exists()
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["embeddings.npy"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "snapshot.jpg"
    target.write_bytes(b"old")
    with pytest.raises(OSError), replacing(target) as tmp:
        tmp.write_bytes(b"half a pic")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.jpg"]
