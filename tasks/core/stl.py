"""STL's seasonal profile as a linear map of the series, built once per length and reused.

Non-robust STL (statsmodels' default, `robust=False`) is linear in the series: every loess weight
depends on positions alone. So the profile `seasonal_profiles` reads from MSTL with one season (the
mean of the last cycles of its seasonal component, centred) is `P @ values` for a matrix `P`
(season, n) that depends only on the length, the season and STL's settings. A panel's series share a
few hundred lengths: a worker builds each `P` once (about 2 ms) where MSTL took about 1 ms a call.

The matrices replicate statsmodels' `_stl.pyx` (netlib's `stl`): `_ess` (loess evaluated every `jump`
points and interpolated), `_ss` (cycle-subseries smoothing extended one cycle each way), `_fts` (moving
averages of a season, a season and 3) and `_onestp`'s five inner passes. They agree with it to about
1e-14 of the component's size, not to the bit: the sums run in another order.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

INNER_PASSES = 5  # statsmodels' STL.fit default when not robust (MSTL with one season fits once)
SEASONAL_WINDOW = 11  # MSTL's default seasonal window for its shortest season (7 + 4 x 1)
LOESS_DEGREE = 1  # statsmodels' default degree of all three smoothers
PROFILE_MATRICES = 512  # cached per process: (season, n) float64 each, 83 kB for 52 x 200


def stl_windows(season: int) -> dict[str, int]:
    """STL's window lengths (odd, in points) for `season` with `SEASONAL_WINDOW`, as statsmodels sets them, and
    each smoother's jump: every tenth of its window, as R's `stl` does by default."""
    trend = math.ceil(1.5 * season / (1 - 1.5 / SEASONAL_WINDOW))
    trend += trend % 2 == 0
    low_pass = season + 1
    low_pass += low_pass % 2 == 0
    windows = {"seasonal": SEASONAL_WINDOW, "trend": trend, "low_pass": low_pass}
    return windows | {f"{name}_jump": math.ceil(width / 10) for name, width in windows.items()}


def _loess_weights(n: int, window: int, evaluated: np.ndarray, lefts: np.ndarray, rights: np.ndarray) -> np.ndarray:
    """Weights (len(evaluated), n) of the degree-1 loess estimates at the 1-based positions `evaluated`, each
    from the points `lefts..rights` (1-based, inclusive, all as wide), as `_est` computes them; a row whose
    weights sum to zero is all NaN (STL then keeps the value)."""
    span = int(rights[0] - lefts[0]) + 1
    h = np.maximum(evaluated - lefts, rights - evaluated).astype("float64")[:, None]
    if window > n:
        h += (window - n) // 2
    positions = (lefts[:, None] + np.arange(span)).astype("float64")
    distance = np.abs(positions - evaluated[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        tricube = np.where(distance <= 0.001 * h, 1.0, (1.0 - (distance / h) ** 3) ** 3)
        weights = np.where(distance <= 0.999 * h, tricube, 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
        centre = (weights * positions).sum(axis=1, keepdims=True)
        spread = (weights * (positions - centre) ** 2).sum(axis=1, keepdims=True)
        slope = np.where((h > 0) & (np.sqrt(spread) > 0.001 * (n - 1.0)), (evaluated[:, None] - centre) / spread, 0.0)
    weights *= slope * (positions - centre) + 1.0
    out = np.zeros((len(evaluated), n))
    np.put_along_axis(out, (positions - 1).astype(np.intp), weights, axis=1)
    return out


def _loess_row(n: int, window: int, xs: int, left: int, right: int) -> np.ndarray | None:
    """`_loess_weights` at one position; None where they sum to zero."""
    row = _loess_weights(n, window, np.array([xs]), np.array([left]), np.array([right]))[0]
    return None if np.isnan(row).any() else row


@lru_cache(maxsize=4096)
def loess_matrix(n: int, window: int, jump: int) -> np.ndarray:
    """(n, n): `_ess` of a series of n points, a degree-1 loess of `window` points evaluated every `jump`
    points (and at the last) and linearly interpolated between."""
    return _interpolated(*_loess_rows(n, window, jump), n)


def _loess_rows(n: int, window: int, jump: int) -> tuple[np.ndarray, np.ndarray]:
    """The 0-based positions `_ess` evaluates its loess at (the first and the last among them, ascending) and
    their weights (len(positions), n); a row whose weights sum to zero keeps the point's own value."""
    if n < 2:
        return np.zeros(1, dtype=np.intp), np.ones((1, 1))
    jump = min(jump, n - 1)
    if window >= n:
        evaluated = np.arange(1, n + 1, jump)
        lefts, rights = np.ones_like(evaluated), np.full_like(evaluated, n)
    elif jump == 1:
        evaluated = np.arange(1, n + 1)
        lefts = np.clip(evaluated - (window + 2) // 2, 0, n - window) + 1
        rights = lefts + window - 1
    else:
        evaluated = np.arange(1, n + 1, jump)
        half = (window + 1) // 2
        lefts = np.clip(evaluated - half + 1, 1, n - window + 1)
        rights = lefts + window - 1
    if evaluated[-1] != n:  # `_ess` estimates the last point with the last evaluated point's window
        evaluated, lefts, rights = np.append(evaluated, n), np.append(lefts, lefts[-1]), np.append(rights, rights[-1])
    rows = _loess_weights(n, window, evaluated, lefts, rights)
    failed = np.isnan(rows).any(axis=1)
    rows[failed] = 0.0
    rows[failed, evaluated[failed] - 1] = 1.0
    return evaluated - 1, rows


def _interpolated(at: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """(n, k): `rows` (len(at), k) at the ascending 0-based positions `at` (0 and n - 1 among them), each position
    between two of them linearly interpolated from theirs, as `_ess` interpolates its estimates."""
    return _interpolation(at, n) @ rows


def _interpolation(at: np.ndarray, n: int) -> np.ndarray:
    """(n, len(at)): the linear interpolation of `_interpolated` as a matrix (two weights a row at most)."""
    out = np.zeros((n, len(at)))
    out[at, np.arange(len(at))] = 1.0
    between = np.ones(n, dtype=bool)
    between[at] = False
    positions = np.flatnonzero(between)
    upper = np.searchsorted(at, positions)
    fraction = (positions - at[upper - 1]) / (at[upper] - at[upper - 1])
    out[positions, upper - 1] = 1.0 - fraction
    out[positions, upper] = fraction
    return out


@lru_cache(maxsize=256)
def _subseries_matrix(k: int, window: int, jump: int) -> np.ndarray:
    """(k + 2, k): one cycle-subseries of k points smoothed, plus its estimates one cycle before and after."""
    inner = loess_matrix(k, window, jump)
    before = _loess_row(k, window, 0, 1, min(window, k))
    after = _loess_row(k, window, k + 1, max(1, k - window + 1), k)
    return np.vstack([inner[0] if before is None else before, inner, inner[k - 1] if after is None else after])


def _times_moving_average(matrix: np.ndarray, width: int) -> np.ndarray:
    """`matrix @ M` for M (m - width + 1, m), the moving average of `width` points (`_ma`), without forming M:
    column c sums the matrix's columns whose windows hold point c (a full convolution with a box)."""
    outputs, rows = matrix.shape[1], matrix.shape[0]
    sums = np.zeros((outputs + 2 * width - 1, rows))  # transposed: the running sum adds whole rows
    np.cumsum(matrix.T, axis=0, out=sums[width : width + outputs])
    sums[width + outputs :] = sums[width + outputs - 1]
    return ((sums[width:] - sums[:-width]) / width).T


def _seasonal_pass(n: int, season: int, windows: dict[str, int]) -> np.ndarray:
    """(n, n): one inner pass's seasonal component of the detrended series: cycle-subseries smoothing (`_ss`)
    less its low-pass filter (`_fts`, then a loess)."""
    size = n + 2 * season
    counts = (n - 1 - np.arange(season)) // season + 1  # points of each cycle-subseries
    longest = int(counts.max())
    # subseries[j, m, i]: row m of subseries j's (k + 2, k) smoother, zero-padded to the longest
    subseries = np.zeros((season, longest + 2, longest))
    for k in np.unique(counts):
        subseries[counts == k, : k + 2, :k] = _subseries_matrix(int(k), windows["seasonal"], windows["seasonal_jump"])
    # The smoothed subseries hold position m * season + j (m = 0 .. k + 1); the series, j + season * i.
    # The low-pass loess at its evaluated points only, the rest interpolated at the end: all of it is linear
    at, low_pass = _loess_rows(n, windows["low_pass"], windows["low_pass_jump"])
    for width in (3, season, season):
        low_pass = _times_moving_average(low_pass, width)  # (evaluated, size) after the three
    evaluated = len(at)
    padded = np.zeros((evaluated, (longest + 2) * season))
    padded[:, :size] = low_pass
    by_subseries = padded.reshape(evaluated, longest + 2, season).transpose(2, 0, 1) @ subseries
    filtered = _interpolated(at, by_subseries.transpose(1, 2, 0).reshape(evaluated, longest * season)[:, :n], n)
    # the smoothed subseries at the series' own positions (m = 1 .. k): row j + season m', column j + season i
    phase, row, column = np.ix_(np.arange(season), np.arange(longest), np.arange(longest))
    inside = (row < counts[phase]) & (column < counts[phase])
    phase, row, column = (np.broadcast_to(v, inside.shape)[inside] for v in (phase, row, column))
    middle = np.zeros((n, n))
    middle[phase + season * row, phase + season * column] = subseries[phase, row + 1, column]
    return middle - filtered


@lru_cache(maxsize=PROFILE_MATRICES)
def profile_matrix(n: int, season: int, cycles: int) -> np.ndarray:
    """(season, n): the centred mean of the last `cycles` cycles of STL's seasonal component of a series of n
    points, by phase (position % season), as a matrix: row p @ values is the profile at phase p."""
    windows = stl_windows(season)
    seasonal = _seasonal_pass(n, season, windows)
    at, rows = _loess_rows(n, windows["trend"], windows["trend_jump"])
    trend = _interpolation(at, n), rows  # the trend's loess as two factors: (n, evaluated) @ (evaluated, n)
    average = np.zeros((season, n))
    positions = np.arange(n - cycles * season, n)
    average[positions % season, positions] = 1.0 / cycles
    average -= average.mean(axis=0)
    # STL's passes: seasonal_j = S (I - trend_{j-1}), trend_j = T (I - seasonal_j), trend_0 = 0. Applied from the
    # left to the (season, n) average, so each pass costs a (season, n) @ (n, n) product, not (n, n) @ (n, n).
    return _times_seasonal_pass(average, INNER_PASSES, seasonal, trend)


def _times_seasonal_pass(
    rows: np.ndarray, passes: int, seasonal: np.ndarray, trend: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """`rows @ seasonal_passes` for the seasonal component after `passes` inner passes (`trend`: the trend
    smoother's two factors)."""
    after_seasonal = rows @ seasonal
    if passes == 1:
        return after_seasonal
    after_trend = (after_seasonal @ trend[0]) @ trend[1]  # rows @ S @ trend_{passes-1}: trend_j = T (I - seasonal_j)
    return after_seasonal - (after_trend - _times_seasonal_pass(after_trend, passes - 1, seasonal, trend))
