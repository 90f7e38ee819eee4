"""The shared retry timing (live-source reconnects, webhook redelivery)."""

from __future__ import annotations

import pytest

from streamclf import retry
from streamclf.retry import backoff


@pytest.mark.parametrize("jitter", [0.5, 1.0])
def test_backoff_doubles_from_first_up_to_longest_then_jitters(monkeypatch: pytest.MonkeyPatch, jitter: float) -> None:
    monkeypatch.setattr(retry.random, "uniform", lambda lo, hi: jitter if (lo, hi) == (0.5, 1.0) else float("nan"))
    assert [backoff(n, 0.5, 5.0) for n in range(1, 7)] == [jitter * d for d in (0.5, 1.0, 2.0, 4.0, 5.0, 5.0)]


def test_backoff_stays_in_50_to_100_percent_and_survives_a_night_of_failures() -> None:
    waits = [backoff(n, 0.5, 30.0) for n in (1, 1, 1, 100, 10_000, 10**9)]
    assert all(0.25 <= w <= 0.5 for w in waits[:3])
    assert all(15.0 <= w <= 30.0 for w in waits[3:])  # no overflow: 2 ** 10**9 is never computed
