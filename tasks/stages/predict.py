"""Stage 6, predict: the model's forecasts for every window, in original units, with intervals.

Each forecast sits on its own target's row and timestamp, with `step` = how many steps
ahead of its window it is (1 … horizon); these come from the model trained on the train
split only. Then `horizon` more rows forecast the steps after the end of the data (split
`forecast`, `y` empty), from the forecaster trained on every row, at the calendar's next
timestamps (month starts stay month starts, business days skip weekends).

Multi-step forecasts are direct: the model has one output per step ahead and is
trained on all of them at once, so errors are not fed back into later steps and one
forward pass gives the whole horizon.

Prediction intervals are split-conformal: for each step, the `interval_level`
quantile of the absolute errors on the validation split (the training split when
there is none), added on both sides of the forecast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from lstm_forecast.tasks.core.calendar import future_times
from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.stages.normalize import ModelSpace, read_model_space
from lstm_forecast.tasks.stages.train import load_saved


def predict_rows(
    model: Any, space: ModelSpace, scaled: np.ndarray, rows: np.ndarray, look_back: int, patch: int = 1
) -> np.ndarray:
    """Model-space forecasts (len(rows), horizon) for origin rows of a model-space series (rows <= len)."""
    outputs = model.predict(space.inputs(scaled, rows, look_back, patch), batch_size=1024, verbose=0)
    return np.asarray(outputs).reshape(len(rows), -1)


def conformal_widths(y_true: np.ndarray, y_hat: np.ndarray, level: float) -> np.ndarray:
    """Half-widths (horizon,) covering `level` of the absolute errors (m, horizon), finite-sample corrected."""
    errors = np.abs(np.asarray(y_true) - np.asarray(y_hat))
    count = len(errors)
    quantile = min(1.0, np.ceil((count + 1) * level) / count)
    return np.quantile(errors, quantile, axis=0, method="inverted_cdf")  # the k-th smallest error


def assemble_predictions(
    series: pd.DataFrame,
    targets: pd.DataFrame,
    y_hat: np.ndarray,
    forecast: np.ndarray,
    widths: np.ndarray,
    freq: str | None = None,
) -> pd.DataFrame:
    """Forecasts aligned to their targets.

    Args:
        series: `ds, y` of every row.
        targets: `row, ds, split` of the window origins (from `window_targets`).
        y_hat: (len(targets), horizon) forecasts in original units, in the order of `targets`.
        forecast: (horizon,) forecasts of the steps after the last row.
        widths: (horizon,) interval half-widths per step.
        freq: the calendar frequency of `ds` (None: inferred, or the median step for numeric time).
    Returns:
        DataFrame `ds, y, y_hat, y_lo, y_hi, split, step`: per origin its steps, then the forecast rows.
    """
    horizon = y_hat.shape[1]
    target_rows = (targets["row"].to_numpy()[:, None] + np.arange(horizon)).reshape(-1)
    steps = np.tile(np.arange(1, horizon + 1), len(targets))
    half = np.tile(widths, len(targets))
    fitted = pd.DataFrame(
        {
            "ds": series["ds"].to_numpy()[target_rows],
            "y": series["y"].to_numpy()[target_rows],
            "y_hat": y_hat.reshape(-1),
            "y_lo": y_hat.reshape(-1) - half,
            "y_hi": y_hat.reshape(-1) + half,
            "split": np.repeat(targets["split"].to_numpy(), horizon),
            "step": steps,
        }
    )
    future = pd.DataFrame(
        {
            "ds": future_times(series["ds"], horizon, freq),
            "y": np.nan,
            "y_hat": forecast,
            "y_lo": forecast - widths,
            "y_hi": forecast + widths,
            "split": "forecast",
            "step": np.arange(1, horizon + 1),
        }
    )
    return pd.concat([fitted, future], ignore_index=True).astype({"ds": series["ds"].dtype, "step": "int64"})


def forecast_all(
    model: Any, space: ModelSpace, y: np.ndarray, targets: pd.DataFrame, look_back: int, patch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts in original units for every origin (m, horizon) and for the steps after the end (horizon,)."""
    rows = np.append(targets["row"].to_numpy(), len(y))  # every origin, then the row after the end
    z_hat = predict_rows(model, space, space.encode(y), rows, look_back, patch)
    values = space.decode(z_hat, y, rows)
    return values[:-1], values[-1]


def forecast_next(model: Any, space: ModelSpace, y: np.ndarray, look_back: int, patch: int) -> np.ndarray:
    """Forecasts (horizon,) of the steps after the end of `y`, in original units."""
    rows = np.array([len(y)])
    return space.decode(predict_rows(model, space, space.encode(y), rows, look_back, patch), y, rows)[0]


@task(name="predict", result_serializer="json")
def predict(config: ForecastConfig, series: str, normalize: str, window: str, model: str, key: str) -> str:
    """Forecast every window and the steps after the end; returns the predict key."""
    store = Store(config.artifacts_dir)
    frame = store.read_table("generate", series)
    targets = store.read_table("window", window)
    y = frame["y"].to_numpy()
    y_hat, forecast = forecast_all(
        load_saved(store, model).model, read_model_space(store, normalize), y, targets, config.look_back, config.patch
    )
    forecaster = load_saved(store, model, forecaster=True).model
    forecast = forecast_next(
        forecaster, read_model_space(store, normalize, forecaster=True), y, config.look_back, config.patch
    )
    calibration = "validation" if (targets["split"] == "validation").any() else "train"
    mask = (targets["split"] == calibration).to_numpy()
    truth = y[targets["row"].to_numpy()[mask][:, None] + np.arange(config.horizon)]
    widths = conformal_widths(truth, y_hat[mask], config.interval_level)
    predictions = assemble_predictions(frame, targets, y_hat, forecast, widths, config.freq)
    store.write_table("predict", key, predictions)
    get_run_logger().info(
        "intervals (%.0f%%, from %s errors) half-widths per step: %s; next: %s",
        100 * config.interval_level,
        calibration,
        np.round(widths, 4).tolist(),
        np.round(forecast, 4).tolist(),
    )
    return key
