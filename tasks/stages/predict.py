"""Stage 6, predict: the model's forecasts for every window, in original units, with intervals (a large
panel's series outside its sample skip the train split's windows: `ForecastConfig.train_forecasts`).

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

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.calendar import future_time_values
from lstm_forecast.tasks.core.config import ForecastConfig, feature_width
from lstm_forecast.tasks.core.covariates import read_features
from lstm_forecast.tasks.core.defaults import local_window_cap
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.intervals import conformal_widths
from lstm_forecast.tasks.core.networks import forward, load_saved
from lstm_forecast.tasks.core.space import ModelSpace, stored_model_space
from lstm_forecast.tasks.core.store import ChunkColumns, ChunkTables, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import forecast_origins


def predict_rows(
    model: Any,
    space: ModelSpace,
    scaled: np.ndarray,
    rows: np.ndarray,
    look_back: int,
    patch: int = 1,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Model-space forecasts (len(rows), horizon) for origin rows of a model-space series (rows <= len), with
    its feature channels (n, F) when the model reads any."""
    return forward(model, space.inputs(scaled, rows, look_back, patch, features)).reshape(len(rows), -1)


def prediction_columns(
    ds: pd.Series,
    y: np.ndarray,
    rows: np.ndarray,
    splits: np.ndarray,
    y_hat: np.ndarray,
    forecast: np.ndarray,
    widths: np.ndarray,
    freq: str | None = None,
    forecast_widths: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The columns of `assemble_predictions`, as arrays (a chunk of series puts many together); the forecast
    rows' intervals are `forecast_widths` when given, else `widths` as every origin's."""
    horizon = y_hat.shape[1]
    target_rows = (rows[:, None] + np.arange(horizon)).reshape(-1)
    hat = np.concatenate([y_hat.reshape(-1), forecast])
    ahead = widths if forecast_widths is None else forecast_widths
    wide = np.concatenate([np.tile(widths, len(rows)), ahead])
    times = np.concatenate([ds.to_numpy()[target_rows], future_time_values(ds, horizon, freq)])
    return {
        "ds": times,
        "y": np.concatenate([np.asarray(y, dtype="float64")[target_rows], np.full(horizon, np.nan)]),
        "y_hat": hat,
        "y_lo": hat - wide,
        "y_hi": hat + wide,
        "split": np.concatenate([np.repeat(np.asarray(splits, dtype=object), horizon), ["forecast"] * horizon]),
        "step": np.tile(np.arange(1, horizon + 1, dtype="int64"), len(rows) + 1),
    }


def predictions_frame(columns: dict[str, np.ndarray], ds_dtype: Any) -> pd.DataFrame:
    """A DataFrame of `prediction_columns` (of one series or many, concatenated), `ds` in `ds_dtype`."""
    predictions = pd.DataFrame(columns, copy=False)  # new arrays: a copy of a chunk's millions of rows is waste
    if predictions["ds"].dtype != ds_dtype:  # times with a zone: numpy holds them as objects
        predictions["ds"] = predictions["ds"].astype(ds_dtype)
    return predictions


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
    rows, splits = targets["row"].to_numpy(), targets["split"].to_numpy()
    columns = prediction_columns(series["ds"], series["y"].to_numpy(), rows, splits, y_hat, forecast, widths, freq)
    return predictions_frame(columns, series["ds"].dtype)


def forecast_all(
    model: Any,
    space: ModelSpace,
    y: np.ndarray,
    targets: pd.DataFrame,
    look_back: int,
    patch: int,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts in original units for every origin (m, horizon) and for the steps after the end (horizon,)."""
    rows = np.append(targets["row"].to_numpy(), len(y))  # every origin, then the row after the end
    z_hat = predict_rows(model, space, space.encode(y), rows, look_back, patch, features)
    values = space.decode(z_hat, y, rows)
    return values[:-1], values[-1]


def predict_many(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """One model's outputs for many series' inputs at once: `inputs[i]` (m_i, steps, patch) -> (m_i, horizon).

    One call for all of them: a model call costs tens of milliseconds before the first window.
    """
    if not inputs:
        return []
    outputs = forward(model, np.concatenate(inputs))
    outputs = outputs.reshape(len(outputs), -1)
    return np.split(outputs, np.cumsum([len(x) for x in inputs])[:-1])


# The splits whose rows the model was not fitted on: the forecast's interval is calibrated on their errors.
HELD_OUT_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class SeriesToPredict:
    """One series' data for predict: its times and values, its window origins (rows and splits) and model
    spaces (fitted on the rows before the test split, and on every row for the forecaster)."""

    ds: pd.Series
    y: np.ndarray
    rows: np.ndarray
    splits: np.ndarray
    space: ModelSpace
    forecaster_space: ModelSpace
    features: np.ndarray | None = None  # (n, F) channels read beside the values

    def inputs(self, look_back: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs of every window origin (m, steps, …), and the forecaster's after the end (1, …)."""
        (every,) = self.inputs_in_blocks(look_back, patch, max(1, len(self.rows)))  # one block, even of none
        return every, self.inputs_after_end(look_back, patch)

    def inputs_in_blocks(self, look_back: int, patch: int, block: int) -> Iterator[np.ndarray]:
        """`inputs` of the window origins, `block` origins at a time (the same values, fewer at once)."""
        z = self.space.encode(self.y)
        for start in range(0, max(len(self.rows), 1), block):
            yield self.space.inputs(z, self.rows[start : start + block], look_back, patch, self.features)

    def inputs_after_end(self, look_back: int, patch: int) -> np.ndarray:
        """The forecaster's inputs after the end of the data (1, steps, …)."""
        ahead = self.forecaster_space
        return ahead.inputs(ahead.encode(self.y), np.array([len(self.y)]), look_back, patch, self.features)

    def predictions(
        self, z_hat: np.ndarray, z_next: np.ndarray, config: ForecastConfig
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, str]:
        """The columns of its predictions in original units (`prediction_columns`) from the model's outputs for
        `inputs`; also the forecast's interval half-widths, the forecast and the splits the widths were calibrated
        on.

        Each origin's interval is calibrated on the validation errors (on the train errors without a validation
        split), so that the test split's coverage is scored on rows the widths did not see. The forecast's is
        calibrated on every error of the rows the model was not fitted on, validation and test: on M4 Hourly the
        validation split holds about three days of each series, and intervals sized on it alone covered 57 % of
        the M4 test instead of 90 % (85 % with the test split's errors too)."""
        y, rows = self.y, self.rows
        y_hat = self.space.decode(z_hat, y, rows)
        forecast = self.forecaster_space.decode(z_next, y, np.array([len(y)]))[0]
        truth = np.asarray(y, dtype="float64")[rows[:, None] + np.arange(config.horizon)]
        calibration = "validation" if (self.splits == "validation").any() else "train"
        mask = self.splits == calibration
        widths = conformal_widths(truth[mask], y_hat[mask], config.interval_level)
        held_out = np.isin(self.splits, HELD_OUT_SPLITS)
        forecast_widths, forecast_calibration = widths, calibration
        if held_out.any():
            forecast_widths = conformal_widths(truth[held_out], y_hat[held_out], config.interval_level)
            forecast_calibration = " and ".join(s for s in HELD_OUT_SPLITS if (self.splits == s).any())
        columns = prediction_columns(
            self.ds, y, rows, self.splits, y_hat, forecast, widths, config.freq, forecast_widths
        )
        return columns, forecast_widths, forecast, forecast_calibration


# What predict reads of its inputs: argument -> (stage, columns).
PREDICT_INPUTS = {"series": ("generate", ("ds", "y")), "window": ("window", ("row", "split"))}


def series_to_predict(
    store: Store,
    upstream: dict[str, str],
    own: ChunkColumns | None = None,
    width: int = 0,
    train_forecasts: bool = True,
) -> SeriesToPredict:
    """One series' data for predict, from its inputs' keys `upstream`: its inputs' columns `own` (as a chunk
    reads them; read here when None), `width` feature channels read from its normalize output, and the window
    origins it forecasts (`forecast_origins`)."""
    if own is None:
        own = {
            name: store.read_own_columns(stage, upstream[name], columns, {})
            for name, (stage, columns) in PREDICT_INPUTS.items()
        }
    normalize = upstream["normalize"]
    described = own.get("normalize") or store.read_table_metadata("normalize", normalize)
    splits = np.asarray(own["window"]["split"], dtype=object)
    kept = forecast_origins(splits, train_forecasts)
    return SeriesToPredict(
        pd.Series(own["series"]["ds"], name="ds"),
        own["series"]["y"],
        np.asarray(own["window"]["row"])[kept],
        splits[kept],
        stored_model_space(described),
        stored_model_space(described, forecaster=True),
        read_features(store.read_table("normalize", normalize), width) if width else None,
    )


def log_predictions(config: ForecastConfig, widths: np.ndarray, forecast: np.ndarray, calibration: str) -> None:
    stage_logger().info(
        "intervals (%.0f%%, from %s errors) half-widths per step: %s; next: %s",
        100 * config.interval_level,
        calibration,
        [float(f"{value:.5g}") for value in widths],
        [float(f"{value:.5g}") for value in forecast],
    )


@task(name="predict", result_serializer="json")
def predict(config: ForecastConfig, series: str, normalize: str, window: str, model: str, key: str) -> str:
    """Forecast every window and the steps after the end; returns the predict key."""
    store = Store(config.artifacts_dir)
    upstream = {"series": series, "normalize": normalize, "window": window}
    data = series_to_predict(store, upstream, width=feature_width(config), train_forecasts=config.train_forecasts)
    saved, forecaster = load_saved(store, model), load_saved(store, model, forecaster=True)
    # a long series' windows in blocks of at most a training split's bytes, not all at once
    block = local_window_cap(config.look_back, 1 + feature_width(config))
    z_hat = np.concatenate(
        [
            predict_many(saved.model, [saved.series_inputs(config.series_id, x)])[0]
            for x in data.inputs_in_blocks(config.look_back, config.patch, block)
        ]
    )
    x_next = data.inputs_after_end(config.look_back, config.patch)
    (z_next,) = predict_many(forecaster.model, [forecaster.series_inputs(config.series_id, x_next)])
    columns, widths, forecast, calibration = data.predictions(z_hat, z_next, config)
    store.write_table("predict", key, predictions_frame(columns, data.ds.dtype))
    log_predictions(config, widths, forecast, calibration)
    return key


def predict_chunk(work: list[tuple[ForecastConfig, dict[str, str], str]]) -> list[Exception | None]:
    """`predict` of many series at once, each `(config, its inputs' keys, its key)`: their inputs read once per
    pack, one model call per model for all of them, and one table for all their predictions. Returns, per
    series, None or the error it failed with (it fails alone)."""
    prepared: dict[str, tuple[SeriesToPredict, np.ndarray, np.ndarray]] = {}  # by the series' predict key

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        data = series_to_predict(store, upstream, own, feature_width(config), config.train_forecasts)
        prepared[key] = (data, *data.inputs(config.look_back, config.patch))
        return lambda: None  # predict logs once the model has run

    errors = each_series_of_chunk(work, PREDICT_INPUTS, one, described={"normalize": "normalize"})
    by_model: dict[tuple[str, str], list[int]] = {}
    for index, (config, upstream, _) in enumerate(work):
        if errors[index] is not None:
            continue
        by_model.setdefault((config.artifacts_dir, upstream["model"]), []).append(index)
    logged = False
    for (root, model), indices in by_model.items():
        store = Store(root)
        try:
            saved, forecaster = load_saved(store, model), load_saved(store, model, forecaster=True)
            series = [(work[i][0].series_id, prepared[work[i][2]]) for i in indices]
            outputs = predict_many(saved.model, [saved.series_inputs(s, inputs) for s, (_, inputs, _) in series])
            ahead = predict_many(forecaster.model, [forecaster.series_inputs(s, last) for s, (_, _, last) in series])
        except Exception as error:  # every series of this model fails
            for index in indices:
                errors[index] = error
            continue
        tables = ChunkTables("predict")
        dtypes: set[Any] = set()
        for index, z_hat, z_next in zip(indices, outputs, ahead, strict=True):
            config, _, key = work[index]
            try:
                data = prepared[key][0]
                columns, widths, forecast, calibration = data.predictions(z_hat, z_next, config)
            except Exception as error:  # reported per series: it fails alone
                errors[index] = error
                continue
            tables.add(store, key, columns)
            dtypes.add(data.ds.dtype)
            if not logged:
                log_predictions(config, widths, forecast, calibration)
                logged = True
        # one table of the chunk's series, not a table each (their times' dtype: one input's)
        tables.write({"ds": dtypes.pop()} if len(dtypes) == 1 else None)
    return errors
