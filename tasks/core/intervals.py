"""Prediction intervals: split-conformal half-widths from errors on rows a model was not fitted on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lstm_forecast.tasks.core.store import KEY_COLUMN


def conformal_widths(y_true: np.ndarray, y_hat: np.ndarray, level: float) -> np.ndarray:
    """Half-widths (horizon,) covering `level` of the absolute errors (m, horizon), finite-sample corrected."""
    errors = np.abs(np.asarray(y_true) - np.asarray(y_hat))
    count = len(errors)
    quantile = min(1.0, np.ceil((count + 1) * level) / count)
    if count == 0 or errors.ndim != 2:
        return np.quantile(errors, quantile, axis=0, method="inverted_cdf")  # the k-th smallest error
    # That quantile's order statistic as numpy's `inverted_cdf` picks it, without `np.quantile`'s own work (a
    # panel's predict asks twice per series): the same element of each column, NaN where the column holds one.
    index = count * quantile - 1
    order = max(0, int(np.floor(index)) + (0 if index == np.floor(index) else 1))
    widths = np.partition(errors, order, axis=0)[order]
    return np.where(np.isnan(errors).any(axis=0), np.nan, widths)


def naive_scale(y: np.ndarray) -> float:
    """A series' own unit of error: the mean absolute one-step change of `y` (n,), NaNs skipped (MASE's scale,
    m = 1); NaN when there is no change to average."""
    changes = np.abs(np.diff(np.asarray(y, dtype="float64")))
    changes = changes[np.isfinite(changes)]
    return float(changes.mean()) if len(changes) else float("nan")


def since_first_change(y: np.ndarray) -> np.ndarray:
    """`y` (n,) from the last row of its leading run of equal values on (all of it when it never changes): a
    product's zeros before its launch are no part of how much it moves since."""
    values = np.asarray(y, dtype="float64")
    changed = np.flatnonzero(values[1:] != values[:-1])
    return values[changed[0] :] if len(changed) else values


def pooled_scaled_widths(calibration: pd.DataFrame, level: float) -> np.ndarray | None:
    """Half-widths per step (horizon,) in units of a series' `naive_scale`, pooled over many series: the
    split-conformal quantile of every series' absolute errors, each divided by the naive scale of that series'
    actual values at step 1 (its calibration rows in time order). None when no series has a scale.

    Args:
        calibration: `_key, y, y_hat, step` rows of many series' calibration split (`_key`, `KEY_COLUMN`, names
            the series).
    """
    frame = calibration.loc[np.isfinite(calibration["y"]) & np.isfinite(calibration["y_hat"])]
    first = frame.loc[frame["step"] == 1]
    scales = first.groupby(KEY_COLUMN, sort=False, observed=True)["y"].agg(naive_scale)
    scales = scales[np.isfinite(scales) & (scales > 0)]
    frame = frame.loc[frame[KEY_COLUMN].isin(scales.index)]
    if frame.empty:
        return None
    scaled = np.abs(frame["y"] - frame["y_hat"]).to_numpy() / scales.reindex(frame[KEY_COLUMN]).to_numpy()
    horizon = int(frame["step"].max())
    steps = frame["step"].to_numpy()
    return np.array([conformal_widths(scaled[steps == step][:, None], 0.0, level)[0] for step in range(1, horizon + 1)])
