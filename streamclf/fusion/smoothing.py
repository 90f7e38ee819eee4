"""Smoothing of fused scores across consecutive windows of one source."""

from __future__ import annotations

import numpy as np


class EMA:
    """Exponential moving average per source; ``alpha=1`` turns smoothing off.

    Windows overlap, so raw scores flicker as a sound starts or an object
    enters; an EMA trades a little latency for labels a person can read.
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._state: dict[str, np.ndarray] = {}

    def __call__(self, source: str, scores: np.ndarray) -> np.ndarray:
        prev = self._state.get(source)
        out = scores if prev is None else self.alpha * scores + (1.0 - self.alpha) * prev
        self._state[source] = out
        return out
