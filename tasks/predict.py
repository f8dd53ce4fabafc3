"""Stage 6, predict: the model's prediction for every target, in original units.

Each prediction sits on its own target's row and timestamp; one more row forecasts
the step after the end of the data (split `forecast`, `y` empty).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from tasks.config import ForecastConfig
from tasks.normalize import MinMaxParams, read_scaler
from tasks.store import Store, stage_key
from tasks.train import load_model
from tasks.window import window_inputs


def next_time(ds: pd.Series) -> object:
    """The timestamp one usual step after the last one (median step)."""
    return future_times(ds, 1).iloc[0]


def assemble_predictions(
    series: pd.DataFrame, targets: pd.DataFrame, y_hat_scaled: np.ndarray, forecast_scaled: float,
    scaler: MinMaxParams,
) -> pd.DataFrame:
    """Predictions aligned to their targets.

    Args:
        series: `ds, y` of every row.
        targets: `row, ds, split` (from `window_targets`).
        y_hat_scaled: (len(targets),) scaled predictions, in the order of `targets`.
        forecast_scaled: the scaled prediction for the step after the last row.
    Returns:
        DataFrame `ds, y, y_hat, split`: one row per target, then one `forecast` row.
    """
    rows = targets["row"].to_numpy()
    predictions = pd.DataFrame(
        {
            "ds": series["ds"].to_numpy()[rows],
            "y": series["y"].to_numpy()[rows],
            "y_hat": scaler.unscale(np.asarray(y_hat_scaled).reshape(-1)),
            "split": targets["split"].to_numpy(),
        }
    )
    forecast = pd.DataFrame(
        {"ds": [next_time(series["ds"])], "y": [np.nan], "y_hat": scaler.unscale(np.array([forecast_scaled])),
         "split": ["forecast"]}
    )
    return pd.concat([predictions, forecast], ignore_index=True).astype({"ds": series["ds"].dtype})


def predict_rows(model: Any, scaled: np.ndarray, rows: np.ndarray, look_back: int) -> np.ndarray:
    """Scaled one-step predictions (len(rows),) for target rows of a scaled series (rows <= len(scaled))."""
    inputs = window_inputs(scaled, rows, look_back)
    return model.predict(inputs, batch_size=4096, verbose=0).reshape(-1)


def recursive_forecast(model: Any, scaled: np.ndarray, look_back: int, steps: int) -> np.ndarray:
    """Scaled forecasts of the `steps` points after the series, each fed back as the next input."""
    history = list(np.asarray(scaled, dtype="float32")[-look_back:])
    outputs = []
    for _ in range(steps):
        window = np.asarray(history[-look_back:], dtype="float32").reshape(1, look_back, 1)
        value = float(model(window, training=False).numpy().reshape(-1)[0])
        outputs.append(value)
        history.append(value)
    return np.asarray(outputs)


def future_times(ds: pd.Series, steps: int) -> pd.Series:
    """The `steps` timestamps after the last one, at the median step."""
    step = ds.diff().median()
    return pd.Series([ds.iloc[-1] + step * (i + 1) for i in range(steps)]).astype(ds.dtype)


@task(name="predict", result_serializer="json")
def predict(config: ForecastConfig, series: str, normalize: str, window: str, model: str) -> str:
    """Predict every target and the next step; returns the predict key."""
    store = Store(config.artifacts_dir)
    key = stage_key("predict", config, {"series": series, "normalize": normalize, "window": window, "model": model})
    scaled = store.read_table("normalize", normalize)["y_scaled"].to_numpy()
    targets = store.read_table("window", window)
    rows = np.append(targets["row"].to_numpy(), len(scaled))  # every target, then the step after the end
    outputs = predict_rows(load_model(store.model_file(model)), scaled, rows, config.look_back)
    predictions = assemble_predictions(store.read_table("generate", series), targets, outputs[:-1], outputs[-1],
                                       read_scaler(store, normalize))
    store.write_table("predict", key, predictions)
    get_run_logger().info("next step %s: %.4f", predictions["ds"].iloc[-1], predictions["y_hat"].iloc[-1])
    return key
