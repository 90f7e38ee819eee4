"""Shared fixtures: the real media in ../shared/data, skipped with a reason when absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared(relative: str) -> Path:
    """Path to a shared media file, or skip the test saying what is missing."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"shared media {path} is absent (set STREAMCLF_SHARED_DATA to the data folder)")
    return path


@pytest.fixture
def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("ffmpeg is not installed (setup.sh installs it with apt-get)")
    return exe


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted weights go to the user's cache unless STREAMCLF_CACHE is set; keep tests hermetic-ish."""
    os.environ.setdefault("STREAMCLF_CACHE", str(tmp_path_factory.mktemp("cache")))
