"""Rows, splits and windows: the arithmetic every stage shares.

A series of n rows is split into train / validation / test row ranges (`split_rows`); a window with
origin row `t` sees rows `[t - look_back, t)` and forecasts rows `t, …, t + horizon - 1`
(`window_targets` finds the origins, `window_inputs` and `window_targets_matrix` build the arrays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from lstm_forecast.tasks.core.errors import TooShortError

SPLITS = ("train", "validation", "test")


def split_bounds(n_points: int, train_fraction: float, validation_fraction: float) -> pd.DataFrame:
    """Contiguous row ranges covering `range(n_points)`.

    Returns:
        DataFrame with columns `split` (train, validation, test), `start`, `stop` (stop exclusive).
    """
    return pd.DataFrame(split_rows(n_points, train_fraction, validation_fraction))


def split_starts(n_points: int, train_fraction: float, validation_fraction: float = 0.0) -> tuple[int, int]:
    """The first rows of the validation and test splits of a series of `n_points` (the one place they are
    computed; nothing checked)."""
    test_start = int(n_points * train_fraction)
    return test_start - int(test_start * validation_fraction), test_start


def split_rows(n_points: int, train_fraction: float, validation_fraction: float) -> dict[str, list[Any]]:
    """`split_bounds` as its columns (lists), for checks that need no table."""
    validation_start, test_start = split_starts(n_points, train_fraction, validation_fraction)
    if n_points - test_start < 1 or validation_start < 2:
        raise TooShortError(
            f"the series has {n_points} points: too few to split {train_fraction:.0%} / {1 - train_fraction:.0%}",
            "pass a longer series or change --train-fraction",
        )
    return {
        "split": list(SPLITS),
        "start": [0, validation_start, test_start],
        "stop": [validation_start, test_start, n_points],
    }


def test_start(splits: np.ndarray, starts: np.ndarray) -> int:
    """The first row of the test split, from a split table's `split` and `start` columns."""
    return int(starts[np.flatnonzero(splits == "test")[0]])


def train_stop(splits: np.ndarray, starts: np.ndarray) -> int:
    """The first row after the train split (the validation split's first; the test split's when there is no
    validation split), from a split table's `split` and `start` columns."""
    validation = np.flatnonzero(np.asarray(splits) == "validation")
    return int(starts[validation[0]]) if len(validation) else test_start(splits, starts)


# A global model (one network across many series) also trains on, and forecasts from, windows with
# as few as this many real values (fewer than `look_back`): the rest of the window is padded with the
# series' first value, so series shorter than a window still take part and get forecasts.
GLOBAL_MIN_CONTEXT = 8


def least_context(look_back: int) -> int:
    """The fewest real values a global model's window holds: its first origin row."""
    return min(look_back, GLOBAL_MIN_CONTEXT)


def origin_ranges(
    n_points: int,
    bounds: pd.DataFrame | Mapping[str, np.ndarray],
    look_back: int,
    horizon: int = 1,
    offset: int = 0,
    padded: bool = False,
) -> list[tuple[int, int]]:
    """Each split's window origins as a range `[first, stop)` (`window_targets`' rows, without building them).

    Raises:
        TooShortError: the train or test split (or a non-empty validation split) has no origin left.
    """
    context = least_context(look_back) if padded else look_back
    names, starts, stops = (np.asarray(bounds[column]) for column in ("split", "start", "stop"))
    parts = [
        (max(int(start), context + offset), max(max(int(start), context + offset), int(stop) - horizon + 1))
        for start, stop in zip(starts, stops, strict=True)
    ]
    counts = {name: stop - first for name, (first, stop) in zip(names, parts, strict=True)}
    needed = {"train": 1, "test": 1, "validation": int(stops[1] > starts[1])}
    short = [name for name, least in needed.items() if counts.get(name, 0) < least]
    if short:
        raise TooShortError(
            f"the series has {n_points} points: too few for look_back {look_back} and horizon {horizon} "
            f"(no {' or '.join(short)} targets left)",
            "use a smaller --look-back or --horizon, or a longer series",
        )
    return parts


def window_targets(
    ds: pd.Series | np.ndarray,
    bounds: pd.DataFrame | Mapping[str, np.ndarray],
    look_back: int,
    horizon: int = 1,
    offset: int = 0,
    padded: bool = False,
) -> pd.DataFrame:
    """The window origins of every split.

    Args:
        ds: the series' times, one per row.
        bounds: `split, start, stop` row ranges (from `split_bounds`; a table or its columns).
        offset: leading rows without a model-space value (1 when differencing).
        padded: origins from `GLOBAL_MIN_CONTEXT` rows on (their windows padded), not from `look_back`.
    Returns:
        DataFrame with `row` (origin: the first target's position), `ds` and `split`, in row order.
    """
    return pd.DataFrame(window_target_columns(ds, bounds, look_back, horizon, offset, padded))


def window_target_columns(
    ds: pd.Series | np.ndarray,
    bounds: pd.DataFrame | Mapping[str, np.ndarray],
    look_back: int,
    horizon: int = 1,
    offset: int = 0,
    padded: bool = False,
) -> dict[str, np.ndarray]:
    """The columns `row, ds, split` of `window_targets`, as arrays (a chunk of series puts many together)."""
    ranges = origin_ranges(len(ds), bounds, look_back, horizon, offset, padded)
    rows = np.concatenate([np.arange(first, stop) for first, stop in ranges])
    split_column = np.repeat(np.asarray(bounds["split"]).astype(object), [stop - first for first, stop in ranges])
    return {"row": rows, "ds": np.asarray(ds)[rows], "split": split_column}


def forecast_origins(splits: np.ndarray, train_forecasts: bool) -> np.ndarray:
    """Which window origins (splits (m,), from `window_targets`) predict forecasts and evaluate scores: every
    one, or without `train_forecasts` those after the train split; a series without a validation split keeps
    them all (its train errors calibrate its intervals). Boolean (m,)."""
    splits = np.asarray(splits)
    if train_forecasts or not (splits == "validation").any():
        return np.ones(len(splits), dtype=bool)
    return splits != "train"


def window_inputs(
    values: np.ndarray,
    rows: np.ndarray,
    look_back: int,
    patch: int = 1,
    reference: np.ndarray | None = None,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Model inputs for origin rows: `out[i, :, :patch].ravel() = values[rows[i] - look_back : rows[i]]`, minus
    `reference[rows[i] - 1]` when given (each window relative to its own level). Rows before `look_back` get
    windows padded on the left with the first finite value (and the first row's features).

    Args:
        reference: per row, the level a window that ends there is read relative to (n,), or None.
        features: per row, channels read beside the value (n, F), or None.
    Returns:
        float32 array of shape (len(rows), look_back // patch, patch * (1 + F)): each step holds `patch`
        values, then the `patch` rows' F features each.
    """
    values, rows = np.asarray(values, dtype="float64"), np.asarray(rows)
    pad = max(0, look_back - int(rows.min())) if len(rows) else 0
    if pad:
        values = np.concatenate([np.full(pad, values[np.isfinite(values)][0]), values])
    windows = sliding_window_view(values, look_back)[rows + pad - look_back]
    if reference is not None:  # in float64: large levels keep their small differences
        windows = windows - np.asarray(reference, dtype="float64")[rows - 1][:, None]
    steps = look_back // patch
    out = windows.astype("float32").reshape(len(rows), steps, patch)
    if features is None or not features.shape[1]:
        return out
    channels = np.asarray(features, dtype="float32")
    if pad:
        channels = np.concatenate([np.repeat(channels[:1], pad, axis=0), channels])
    feature_windows = sliding_window_view(channels, look_back, axis=0)[rows + pad - look_back]  # (m, F, look_back)
    grouped = feature_windows.transpose(0, 2, 1).reshape(len(rows), steps, patch * channels.shape[1])
    return np.concatenate([out, grouped], axis=2)


# Windows cut at a time from a `SeriesLayout`: their float64 temporaries stay in the cache (cut 100,000 at once, they
# took twice as long as cutting each series' own).
WINDOW_BLOCK = 4096


class SeriesLayout:
    """Many series' rows end to end, each after `look_back` rows of padding (the pad `window_inputs` gives a window
    near a series' start): the windows of every series are then cut from one array at once (`window_inputs` at
    `positions`), as each series' own would be cut from it alone."""

    def __init__(self, lengths: np.ndarray, look_back: int) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        pad_starts = np.concatenate([[0], np.cumsum(lengths + look_back)[:-1]]).astype(np.int64)
        firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.look_back = look_back
        self.starts = pad_starts + look_back  # (S,) where each series' first row lies
        self._value_at = np.arange(int(lengths.sum())) + np.repeat(self.starts - firsts, lengths)
        self._pad_at = (pad_starts[:, None] + np.arange(look_back)).ravel()

    def laid_out(self, parts: list[np.ndarray], pads: np.ndarray) -> np.ndarray:
        """The series' `parts` (n_i, ...) end to end, each after `look_back` copies of its pad (its row of `pads`)."""
        out = np.empty((len(self._value_at) + len(self._pad_at), *pads.shape[1:]))
        out[self._value_at] = np.concatenate(parts) if parts else np.empty((0, *pads.shape[1:]))
        out[self._pad_at] = np.repeat(pads, self.look_back, axis=0)
        return out

    def encoded(self, spaces: list[Any], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The series' `values` each encoded in its model space (`ModelSpace.encode`) and laid out, padded with its
        first finite value; and their reference levels laid out (zeros for a series not read relative to one), or
        None when no space is 'level'."""
        encoded = [space.encode(y) for space, y in zip(spaces, values, strict=True)]
        if not any(space.kind == "level" for space in spaces):
            return self.laid_out(encoded, first_finite(encoded)), None
        references = [
            space.reference(z) if space.kind == "level" else np.zeros(len(z))
            for space, z in zip(spaces, encoded, strict=True)
        ]
        return self.laid_out(encoded, first_finite(encoded)), self.laid_out(references, np.zeros(len(spaces)))

    def positions(self, owner: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Where row `rows[i]` of series `owner[i]` lies in the layout."""
        return self.starts[owner] + rows


def first_finite(parts: list[np.ndarray]) -> np.ndarray:
    """Each part's first finite value (0 for a part with none), (len(parts),)."""
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    joined = np.concatenate([*parts, [0.0]])  # a finite value after the last part: every search finds one
    finite = np.flatnonzero(np.isfinite(joined))
    at = finite[np.searchsorted(finite, starts)]
    return np.where(at < starts + lengths, joined[at], 0.0)


def cut_in_blocks(cut: Any, positions: np.ndarray) -> np.ndarray:
    """`cut(block)` for blocks of at most `WINDOW_BLOCK` of `positions`, put together (one block for none)."""
    blocks = [positions[first : first + WINDOW_BLOCK] for first in range(0, len(positions), WINDOW_BLOCK)]
    return np.concatenate([cut(block) for block in blocks or [positions]])


def window_targets_matrix(
    values: np.ndarray, rows: np.ndarray, horizon: int, reference: np.ndarray | None = None
) -> np.ndarray:
    """Targets of origin rows: `out[i, h] = values[rows[i] + h]`, minus `reference[rows[i] - 1]` when given;
    float32 (len(rows), horizon)."""
    values, rows = np.asarray(values, dtype="float64"), np.asarray(rows)
    targets = values[rows[:, None] + np.arange(horizon)]
    if reference is not None:
        targets = targets - np.asarray(reference, dtype="float64")[rows - 1][:, None]
    return targets.astype("float32")


SPLIT_COLUMNS = ("split", "start", "stop")
