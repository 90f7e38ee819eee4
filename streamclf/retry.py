"""How long to wait before trying again: one rule for live-source reconnects and webhook redelivery.

Both retry loops wait on their own stop event and report each try, so a retry
library's decorator (tenacity, backoff) would not fit them; they share only
this timing rule.
"""

from __future__ import annotations

import random


def backoff(failures: int, first: float, longest: float) -> float:
    """Seconds to wait after ``failures`` failed tries in a row (1 = the first failure).

    ``first`` doubles per further failure up to ``longest``, then is jittered to
    50-100 % so that many clients that failed together do not retry in lockstep.
    """
    exponential = first * 2 ** min(max(failures - 1, 0), 30)  # bounded: an outage may last a night
    return min(exponential, longest) * random.uniform(0.5, 1.0)
