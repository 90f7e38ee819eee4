"""A few seconds of coverage-guided fuzzing per target in CI; benchmarks/reliability.py runs them longer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("atheris", reason="atheris is in the test extra (setup.sh --test)")


def fuzz(target: str, seeds: list[Path], corpus: Path, seconds: int) -> tuple[int, str]:
    """Run one target from ``seeds`` (their first 8 KB); returns (runs, libFuzzer's output)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (corpus / seed.name).write_bytes(seed.read_bytes()[:8192])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.fuzz",
            target,
            f"-max_total_time={seconds}",
            "-timeout=20",
            "-max_len=8192",
            "-seed=1",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs, done.stderr[-2000:]
    return int(runs.group(1)), done.stderr


def test_fuzz_config_loader(tmp_path: Path) -> None:
    runs, _ = fuzz("config", sorted((ROOT / "configs").glob("*.yaml")), tmp_path / "corpus", 5)
    assert runs > 100


def test_fuzz_demux(tmp_path: Path) -> None:
    seeds = [
        DATA / "media/grid/bbaf2n.mpg",
        DATA / "media/flipping_a_pancake.mkv",
        DATA / "sounds/scratch/Animal/Dog1.wav",
    ]
    if not all(s.exists() for s in seeds):
        pytest.skip(f"shared media under {DATA} is absent")
    runs, _ = fuzz("demux", seeds, tmp_path / "corpus", 5)
    assert runs > 20
