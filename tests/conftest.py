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


def bark_clip(
    ffmpeg: str, out: Path, at: float = 5.0, seconds: float = 12.0, picture: Path | None = None, volume: float = 1.0
) -> Path:
    """A video whose audio is silence with one real dog bark (shared sounds, times ``volume``) at ``at`` seconds.

    The picture is grey, or ``picture`` (a video, or a still image shown throughout) at 640x360.
    """
    import subprocess

    bark = shared("sounds/scratch/Animal/Dog1.wav")
    if picture is None:
        video = ["-f", "lavfi", "-i", f"color=c=gray:s=320x240:r=10:d={seconds}"]
    elif picture.suffix.lower() in (".png", ".jpg", ".jpeg"):
        video = ["-loop", "1", "-framerate", "10", "-t", str(seconds), "-i", str(picture)]
    else:
        video = ["-t", str(seconds), "-i", str(picture)]
    scale = "scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:-1:-1," if picture is not None else ""
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            *video,
            "-i",
            str(bark),
            "-filter_complex",
            f"[0:v]{scale}format=yuv420p[v];"
            f"[1:a]volume={volume},aresample=16000,adelay={int(at * 1000)},apad,atrim=0:{seconds}[a]",
            "-map",
            "[v]",
            "-map",
            "[a]",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-shortest",
            str(out),
        ],
        check=True,
    )
    return out
