"""Proportions with their confidence intervals, and percentiles: the arithmetic every QA figure rests on.

* :func:`wilson_interval` — the Wilson score interval for a binomial proportion (Wilson 1927; recommended
  over the normal "Wald" interval by Brown, Cai and DasGupta 2001 because it keeps its coverage for small
  counts and proportions near 0 or 1, and never leaves [0, 1]).
* :func:`percentile` — linear interpolation between closest ranks (NumPy's default, Hyndman and Fan's
  definition 7), so p50 of an even count is the mean of the two middle values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["Z_95", "Z_99_9", "Proportion", "percentile", "wilson_interval"]

Z_95: Final = 1.959963984540054
"""The standard normal quantile for a two-sided 95 % interval."""
Z_99_9: Final = 3.2905267314919255
"""The standard normal quantile for a two-sided 99.9 % interval."""


@dataclass(frozen=True)
class Proportion:
    """``count`` of ``total`` with its rate and a Wilson interval (``rate`` is None when ``total`` is 0)."""

    count: int
    total: int
    low: float
    high: float

    @property
    def rate(self) -> float | None:
        """``count / total``, or None when there is nothing to divide by."""
        return self.count / self.total if self.total else None

    @classmethod
    def of(cls, count: int, total: int, z: float = Z_95) -> Proportion:
        """The proportion ``count / total`` with its Wilson interval at ``z``."""
        low, high = wilson_interval(count, total, z)
        return cls(count, total, low, high)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` in ``trials``: ``(low, high)``, within [0, 1].

    centre = (p + z²/2n) / (1 + z²/n), half-width = z / (1 + z²/n) · √(p(1 - p)/n + z²/4n²), with p the
    observed proportion. With no trials nothing is known: ``(0.0, 1.0)``. Raises ValueError when the
    counts are impossible.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"not a proportion: {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding must not leave it a hair off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``values`` by linear interpolation between closest ranks.

    Raises ValueError on an empty sequence or a ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
