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

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.calendar import future_time_values
from lstm_forecast.tasks.core.config import ForecastConfig, feature_width
from lstm_forecast.tasks.core.covariates import read_features
from lstm_forecast.tasks.core.embedding import with_series_channel
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.intervals import conformal_widths
from lstm_forecast.tasks.core.networks import SavedModel, forward, load_saved
from lstm_forecast.tasks.core.space import ModelSpace, stored_model_space
from lstm_forecast.tasks.core.store import ChunkColumns, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import SeriesLayout, cut_in_blocks, forecast_origins, window_inputs


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
    """The columns of `assemble_predictions`, as arrays; the forecast rows' intervals are `forecast_widths` when
    given, else `widths` as every origin's."""
    ahead = widths if forecast_widths is None else forecast_widths
    return stacked_prediction_columns(
        [ds], [y], [rows], [splits], [y_hat], forecast[None], widths[None], np.asarray(ahead)[None], [freq]
    )


def stacked_prediction_columns(
    ds: list[pd.Series | np.ndarray],
    y: list[np.ndarray],
    rows: list[np.ndarray],
    splits: list[np.ndarray],
    y_hat: list[np.ndarray],
    forecast: np.ndarray,
    widths: np.ndarray,
    forecast_widths: np.ndarray,
    freqs: list[str | None],
) -> dict[str, np.ndarray]:
    """`prediction_columns` of many series, one after another, built at once: series i's origins `rows[i]` (m_i,)
    with their `splits[i]` and forecasts `y_hat[i]` (m_i, horizon), then its forecast rows; `forecast`, `widths`
    and `forecast_widths` hold a row (horizon,) per series. Series i has (m_i + 1) x horizon rows."""
    count, horizon = len(ds), forecast.shape[1]
    origins = np.array([len(r) for r in rows], dtype=np.int64)
    owner = np.repeat(np.arange(count), origins)
    lengths = np.array([len(values) for values in y], dtype=np.int64)
    targets = (np.repeat(np.cumsum(lengths) - lengths, origins) + np.concatenate(rows).astype(np.int64))[:, None]
    targets = targets + np.arange(horizon)  # (M, horizon): each origin's target rows in the series end to end
    # each series' origins, then its forecast: origin rows first, forecast rows after, in a stable sort by series
    order = np.argsort(np.concatenate([owner, np.arange(count)]), kind="stable")

    def laid(per_origin: np.ndarray, per_series: np.ndarray) -> np.ndarray:
        return np.concatenate([per_origin, per_series])[order].reshape(-1)

    times = np.concatenate([np.asarray(series) for series in ds])
    future = [future_time_values(series, horizon, freq) for series, freq in zip(ds, freqs, strict=True)]
    values = np.concatenate([np.asarray(v, dtype="float64") for v in y])
    hat = laid(np.concatenate(y_hat).reshape(-1, horizon), forecast)
    wide = laid(widths[owner], forecast_widths)
    split = np.concatenate([*[np.asarray(s, dtype=object) for s in splits], np.full(count, "forecast", dtype=object)])
    return {
        "ds": laid(times[targets], np.stack(future) if future else np.empty((0, horizon), times.dtype)),
        "y": laid(values[targets], np.full((count, horizon), np.nan)),
        "y_hat": hat,
        "y_lo": hat - wide,
        "y_hi": hat + wide,
        "split": np.repeat(split[order], horizon),
        "step": np.tile(np.arange(1, horizon + 1, dtype="int64"), len(owner) + count),
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

    ds: pd.Series | np.ndarray  # (n,): an array as a chunk reads it
    y: np.ndarray
    rows: np.ndarray
    splits: np.ndarray
    space: ModelSpace
    forecaster_space: ModelSpace
    features: np.ndarray | None = None  # (n, F) channels read beside the values

    @property
    def times_dtype(self) -> Any:
        """The dtype of its times as a pandas Series holds them (that of its predictions' `ds`)."""
        if isinstance(self.ds, pd.Series):
            return self.ds.dtype
        times = np.asarray(self.ds)
        return times.dtype if times.dtype.kind in "iufM" else pd.Series(times[:1]).dtype

    def forecasts(self, z_hat: np.ndarray, z_next: np.ndarray, config: ForecastConfig) -> SeriesForecasts:
        """Its forecasts in original units from the model's outputs for its window origins (m, horizon) and the
        forecaster's after the end (1, horizon), with their intervals' half-widths.

        Each origin's interval is calibrated on the validation errors (on the train errors without a validation
        split), so that the test split's coverage is scored on rows the widths did not see. The forecast's is
        calibrated on every error of the rows the model was not fitted on, validation and test: on M4 Hourly the
        validation split holds about three days of each series, and intervals sized on it alone covered 57 % of
        the M4 test instead of 90 % (85 % with the test split's errors too)."""
        y, rows = self.y, self.rows
        y_hat = self.space.decode(z_hat, y, rows)
        forecast = self.forecaster_space.decode(z_next, y, np.array([len(y)]))[0]
        truth = np.asarray(y, dtype="float64")[rows[:, None] + np.arange(config.horizon)]
        within = {split: self.splits == split for split in HELD_OUT_SPLITS}
        calibration = "validation" if within["validation"].any() else "train"
        mask = within["validation"] if calibration == "validation" else self.splits == calibration
        widths = conformal_widths(truth[mask], y_hat[mask], config.interval_level)
        held_out = np.logical_or.reduce(list(within.values()))
        forecast_widths, forecast_calibration = widths, calibration
        if held_out.any():
            forecast_widths = conformal_widths(truth[held_out], y_hat[held_out], config.interval_level)
            forecast_calibration = " and ".join(s for s in HELD_OUT_SPLITS if within[s].any())
        return SeriesForecasts(y_hat, forecast, widths, forecast_widths, forecast_calibration)


@dataclass(frozen=True)
class SeriesForecasts:
    """One series' forecasts in original units: at its window origins (m, horizon) and after the end (horizon,),
    the origins' interval half-widths and the forecast's (horizon,), and the splits the forecast's were calibrated
    on."""

    y_hat: np.ndarray
    forecast: np.ndarray
    widths: np.ndarray
    forecast_widths: np.ndarray
    calibration: str


def model_outputs(
    saved: SavedModel,
    forecaster: SavedModel,
    series: list[SeriesToPredict],
    series_ids: list[str | None],
    look_back: int,
    patch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's outputs for every window origin of many series, one series after another (M, horizon), and the
    forecaster's after each one's end (S, horizon). Each series is encoded in its own spaces; then the windows of
    all of them are cut from one layout (`SeriesLayout`) and applied `WINDOW_BLOCK` at a time (a model call costs
    tens of milliseconds before its first window; a chunk's windows at once would hold them all)."""
    layout = SeriesLayout(np.array([len(s.y) for s in series], dtype=np.int64), look_back)
    features = [s.features for s in series if s.features is not None]
    channels = layout.laid_out(features, np.stack([f[0] for f in features])) if features else None
    origins = np.array([len(s.rows) for s in series], dtype=np.int64)
    owner = np.repeat(np.arange(len(series)), origins)
    rows = np.concatenate([np.asarray(s.rows, dtype=np.int64) for s in series] or [np.zeros(0, np.int64)])
    ends = np.array([len(s.y) for s in series], dtype=np.int64)
    outputs = []
    for model, spaces, positions, owners in (
        (saved, [s.space for s in series], layout.positions(owner, rows), owner),
        (forecaster, [s.forecaster_space for s in series], layout.positions(np.arange(len(series)), ends), None),
    ):
        values, reference = layout.encoded(spaces, [s.y for s in series])
        rows_read = model.embedding_rows(series_ids)
        if rows_read is not None and owners is not None:
            rows_read = rows_read[owners]
        cut = functools.partial(
            window_inputs, values, look_back=look_back, patch=patch, reference=reference, features=channels
        )
        outputs.append(windows_applied(model.model, cut, positions, rows_read))
    return outputs[0], outputs[1]


def windows_applied(
    model: Any, cut: Callable[[np.ndarray], np.ndarray], positions: np.ndarray, embedding_rows: np.ndarray | None
) -> np.ndarray:
    """A model's outputs (len(positions), outputs) for the windows `cut(positions)` gives (`window_inputs` of
    laid-out values), `WINDOW_BLOCK` at a time, each window reading its `embedding_rows` entry when given."""

    def block_outputs(block: np.ndarray) -> np.ndarray:
        inputs = cut(positions[block])
        if embedding_rows is not None:
            inputs = with_series_channel(inputs, embedding_rows[block])
        outputs = forward(model, inputs)
        return outputs.reshape(len(outputs), int(np.prod(outputs.shape[1:])))

    return cut_in_blocks(block_outputs, np.arange(len(positions)))


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
        own["series"]["ds"],
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
    z_hat, z_next = model_outputs(saved, forecaster, [data], [config.series_id], config.look_back, config.patch)
    found = data.forecasts(z_hat, z_next, config)
    columns, _ = forecast_columns([data], [found], [config])
    store.write_table("predict", key, predictions_frame(columns, data.times_dtype))
    log_predictions(config, found.forecast_widths, found.forecast, found.calibration)
    return key


def forecast_columns(
    series: list[SeriesToPredict], found: list[SeriesForecasts], configs: list[ForecastConfig]
) -> tuple[dict[str, np.ndarray], list[int]]:
    """The predictions' columns of many series one after another (`stacked_prediction_columns`), and each one's
    number of rows."""
    columns = stacked_prediction_columns(
        [s.ds for s in series],
        [s.y for s in series],
        [s.rows for s in series],
        [s.splits for s in series],
        [f.y_hat for f in found],
        np.stack([f.forecast for f in found]),
        np.stack([f.widths for f in found]),
        np.stack([f.forecast_widths for f in found]),
        [config.freq for config in configs],
    )
    return columns, [(len(s.rows) + 1) * len(f.forecast) for s, f in zip(series, found, strict=True)]


def predict_chunk(work: list[tuple[ForecastConfig, dict[str, str], str]]) -> list[Exception | None]:
    """`predict` of many series at once, each `(config, its inputs' keys, its key)`: their inputs read once per
    pack, their windows cut and applied together per model (`model_outputs`), and one table for all their
    predictions. Returns, per series, None or the error it failed with (it fails alone)."""
    prepared: dict[str, SeriesToPredict] = {}  # by the series' predict key

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        prepared[key] = series_to_predict(store, upstream, own, feature_width(config), config.train_forecasts)
        return lambda: None  # predict logs once the model has run

    errors = each_series_of_chunk(work, PREDICT_INPUTS, one, described={"normalize": "normalize"})
    groups: dict[tuple[Any, ...], list[int]] = {}  # series applied together: one model, one window shape
    for index, (config, upstream, key) in enumerate(work):
        if errors[index] is None:
            shape = (config.look_back, config.patch, config.horizon, feature_width(config), prepared[key].times_dtype)
            groups.setdefault((config.artifacts_dir, upstream["model"], *shape), []).append(index)
    logged = False
    for (root, model, look_back, patch, *_), indices in groups.items():
        store = Store(root)
        series = [prepared[work[i][2]] for i in indices]
        try:
            saved, forecaster = load_saved(store, model), load_saved(store, model, forecaster=True)
            ids = [work[i][0].series_id for i in indices]
            z_hat, z_next = model_outputs(saved, forecaster, series, ids, look_back, patch)
        except Exception as error:  # every series of this model fails
            for index in indices:
                errors[index] = error
            continue
        bounds = np.concatenate([[0], np.cumsum([len(s.rows) for s in series])])
        done: list[tuple[int, SeriesToPredict, SeriesForecasts]] = []
        for number, (index, data) in enumerate(zip(indices, series, strict=True)):
            config = work[index][0]
            try:
                found = data.forecasts(z_hat[bounds[number] : bounds[number + 1]], z_next[number : number + 1], config)
            except Exception as error:  # reported per series: it fails alone
                errors[index] = error
                continue
            done.append((index, data, found))
            if not logged:
                log_predictions(config, found.forecast_widths, found.forecast, found.calibration)
                logged = True
        if done:
            columns, lengths = forecast_columns(
                [d for _, d, _ in done], [f for _, _, f in done], [work[i][0] for i, _, _ in done]
            )
            frame = predictions_frame(columns, done[0][1].times_dtype)
            store.write_tables("predict", [work[i][2] for i, _, _ in done], frame, lengths)
    return errors
