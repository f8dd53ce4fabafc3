"""Bootstrapped copies of a short series, to train its network on more than its own few windows.

Bergmeir, Hyndman and Benítez's moving-block bootstrap (2016, "Bagging exponential smoothing methods
using STL decomposition and Box-Cox transformation"), applied in the model space, where the log and the
seasons are already taken out: the adjusted values are split into a loess trend and a remainder, and each
copy is the trend plus the remainder resampled in blocks, so that a copy keeps the series' trend and
the short-range dependence of its noise.
"""

from __future__ import annotations

import numpy as np

NONSEASONAL_BLOCK = 8  # the block length of a series with no season (theirs: min(8, n / 2))
TREND_POINTS = 6  # the loess trend's span of a series with no season, in points (theirs: 6 / n)


def loess_trend(values: np.ndarray, span_points: int) -> np.ndarray:
    """Locally linear loess of `values` (n,) on the row number, each fit on `span_points` neighbours."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    n = len(values)
    frac = min(1.0, max(span_points, 3) / n)
    return lowess(values, np.arange(n, dtype="float64"), frac=frac, it=0, return_sorted=False)


def moving_blocks(remainder: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """`remainder` (n,) resampled as blocks of `block` consecutive values at random starts, cut to n at a
    random offset."""
    n = len(remainder)
    block = max(1, min(block, n))
    count = n // block + 2
    starts = rng.integers(0, n - block + 1, size=count)
    joined = remainder[starts[:, None] + np.arange(block)].ravel()
    offset = int(rng.integers(0, block))
    return joined[offset : offset + n]


def bootstrapped_copies(values: np.ndarray, copies: int, seasons: tuple[int, ...], seed: int) -> np.ndarray:
    """`copies` bootstrapped series (copies, n) of the adjusted `values` (n,), finite: the loess trend plus
    the remainder in moving blocks of twice the longest season (8 values without one)."""
    values = np.asarray(values, dtype="float64")
    longest = max(seasons, default=0)
    span = int(np.ceil(1.5 * longest)) if longest else TREND_POINTS
    trend = loess_trend(values, span)
    remainder = values - trend
    block = 2 * longest if longest else NONSEASONAL_BLOCK
    rng = np.random.default_rng(seed)
    return np.stack([trend + moving_blocks(remainder, block, rng) for _ in range(copies)])
