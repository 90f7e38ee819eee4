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


def bark_clip(ffmpeg: str, out: Path, at: float = 5.0, seconds: float = 12.0) -> Path:
    """A grey video whose audio is silence with one real dog bark (shared sounds) at ``at`` seconds."""
    import subprocess

    bark = shared("sounds/scratch/Animal/Dog1.wav")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=320x240:r=10:d={seconds}",
                    "-i", str(bark), "-filter_complex",
                    f"[1:a]aresample=16000,adelay={int(at * 1000)},apad,atrim=0:{seconds}[a]",
                    "-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(out)], check=True)
    return out
