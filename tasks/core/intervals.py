"""Prediction intervals: split-conformal half-widths from errors on rows a model was not fitted on."""

from __future__ import annotations

import numpy as np


def conformal_widths(y_true: np.ndarray, y_hat: np.ndarray, level: float) -> np.ndarray:
    """Half-widths (horizon,) covering `level` of the absolute errors (m, horizon), finite-sample corrected."""
    errors = np.abs(np.asarray(y_true) - np.asarray(y_hat))
    count = len(errors)
    quantile = min(1.0, np.ceil((count + 1) * level) / count)
    return np.quantile(errors, quantile, axis=0, method="inverted_cdf")  # the k-th smallest error
