"""Broken real media through `streamclf label` and `streamclf run`: no crash, no hang, nothing silent.

CI runs a smaller set (3 inputs per kind of damage and seed clip, about 90
files); `benchmarks/reliability.py` runs the full 224.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DATA, shared
from tests.reliability.media import Broken, Outcome, decodable, generate, label_outcome, run_outcome

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Broken], dict[str, float]]:
    shared("media/bbb_360p_60s.mp4")
    folder = tmp_path_factory.mktemp("broken")
    inputs = generate(DATA, folder, per_seed=3)
    return inputs, decodable([b.path for b in inputs], folder.parent, ROOT, timeout=300)


def _check(outcome: Outcome, inputs: list[Broken], seconds: dict[str, float]) -> None:
    assert outcome.returncode is not None, "streamclf hung on broken inputs"
    assert not outcome.crashed, outcome.stderr[-3000:]
    assert outcome.returncode == 1, "some inputs are unusable, so the exit code must say so"
    names = [b.path.name for b in inputs]
    missed = [n for n in names if seconds[n] >= 0.5 and not outcome.records.get(n)]
    assert not missed, f"FFmpeg decodes over half a second of these, streamclf labeled nothing: {missed}"
    unsaid = {n: outcome.error_lines[n] for n in names if not outcome.records.get(n) and outcome.error_lines[n] != 1}
    assert not unsaid, f"unusable inputs need exactly one error line each: {unsaid}"
    assert sum(outcome.records.get(n, 0) > 0 for n in names) > len(names) // 3  # most damage leaves good parts


def test_label_survives_broken_media(broken, tmp_path: Path) -> None:
    inputs, seconds = broken
    outcome = label_outcome([b.path for b in inputs], tmp_path / "out", ROOT, timeout=600)
    _check(outcome, inputs, seconds)
    assert not (tmp_path / "out" / ".partial").exists() or not any((tmp_path / "out" / ".partial").iterdir())


def test_run_survives_broken_media(broken, tmp_path: Path) -> None:
    inputs, seconds = broken
    outcome = run_outcome([b.path for b in inputs], tmp_path / "out.jsonl", ROOT, timeout=600)
    _check(outcome, inputs, seconds)
