"""Stage 3, normalize: the series in the model's space, fitted on the training part only.

Everything is fitted on the rows before the test split only (the article fits its scaler on
the whole series, so the test period's range leaks into training). In order:

1. `log`: strictly positive series whose range spans a factor of `LOG_RATIO` (2) or more are
   modelled on the log scale (multiplicative seasonality and growth become additive).
2. Seasons (`seasons`, from the calendar): each season's profile is estimated with
   statsmodels' MSTL on the training part and subtracted, as the M4-winning ES-RNN
   deseasonalises before its LSTM; forecasts get the profile of their own phase back.
   A profile is the last training cycle of its MSTL component, repeated.
3. `kind`: 'none' models the values (MinMax to [0, 1] like the article); 'level' scales each
   window by its own level (its last value): inputs and targets are differences to that level,
   so the network never extrapolates beyond the training range, and a step-h forecast is
   the level plus one output (errors do not add up across steps); 'diff' models first
   differences whose forecasts are summed back up. 'auto' picks 'none' only when an augmented
   Dickey-Fuller test on the (deseasonalised) training part rejects a unit root at 1 %.
The parameters travel with the scaled series and, later, with the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.config import ForecastConfig, covariate_columns, has_features
from lstm_forecast.tasks.core.covariates import CovariateSpace, config_features, describe, feature_columns
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.space import ModelSpace, fit_model_space
from lstm_forecast.tasks.core.store import ChunkColumns, ChunkTables, ChunkWork, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import test_start, train_stop


def scale_series(
    series: pd.DataFrame,
    fit_stop: int,
    transform: str = "none",
    seasons: tuple[int, ...] = (),
    log: str = "no",
    season_stop: int | None = None,
) -> tuple[pd.DataFrame, ModelSpace]:
    """Add `y_scaled` (model space) to a `ds, y` series, fitting on rows `[0, fit_stop)` only (the seasonal
    profiles on `[0, season_stop)`)."""
    space = fit_model_space(series["y"].to_numpy(), fit_stop, transform, seasons, log, season_stop=season_stop)
    return series.assign(y_scaled=space.encode(series["y"].to_numpy())), space


@task(name="normalize", result_serializer="json")
def normalize(config: ForecastConfig, series: str, split: str, key: str) -> str:
    """Scale the series; returns the normalize key."""
    store = Store(config.artifacts_dir)
    bounds = store.read_table("split", split)
    frame = store.read_table("generate", series)
    fit_stop = test_start(bounds["split"].to_numpy(), bounds["start"].to_numpy())
    season_stop = season_stop_for(config, fit_stop, train_stop(bounds["split"].to_numpy(), bounds["start"].to_numpy()))
    future = store.future_values(series) if config.future_columns else None
    columns = {name: frame[name].to_numpy() for name in frame.columns}
    scaled, metadata = normalized_series(config, columns, fit_stop, future, season_stop)
    store.write_table("normalize", key, pd.DataFrame(scaled), metadata=metadata)
    log_model_space(fit_stop, metadata)
    return key


def smooth_level(config: ForecastConfig) -> bool:
    """Whether 'level' windows are read relative to the series' smoothed level (`fit_smoothing`): for a network of
    its own. Its few hundred windows at most are too few to learn how far to trust a noisy last value; relative to
    exponential smoothing's level, as ES-RNN normalises its windows, the network's zero output is that smoothing's
    forecast (20 real series: geometric mean of LSTM / best baseline 1.032 -> 1.021, UK lung-disease deaths
    236.4 -> 197.4). A global model learns it across series: on M4 Weekly its OWA went from 0.729 to 0.750 with
    each series' smoothed level."""
    return config.scope != "global"


def season_stop_for(config: ForecastConfig, fit_stop: int, train_end: int) -> int:
    """The row before which a series' seasonal profiles are fitted (`fit_model_space`'s `season_stop`): the train
    split's end for a network of its own, whose few validation windows size its intervals and stop its training
    (an hourly sine with noise of unit spread: validation RMSE 0.66 with profiles fitted on those rows, test
    intervals covering 62 % instead of 90 %; 1.12 and 84 % without them). A global model keeps profiles fitted
    on the rows before the test split: its validation windows are a capped sample across the panel, and fitted
    without them M4 Weekly's OWA went from 0.730 to 0.741 and M4 Hourly's from 0.475 to 0.493."""
    return fit_stop if config.scope == "global" else train_end


def normalized_series(
    config: ForecastConfig,
    frame: Mapping[str, np.ndarray],
    fit_stop: int,
    future: dict[str, list] | None = None,
    season_stop: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One series' columns `ds, y` with `y_scaled` (model space) added (n,) each, and the metadata normalize stores
    with it: its model space fitted on rows `[0, fit_stop)` (the rows before the test split; its seasonal profiles
    on rows `[0, season_stop)`, `season_stop_for`, then refitted once a cycle), and the forecaster's, the same
    choices refitted on every row (seasonal profiles up to the last cycle). With features (`has_features`) the table
    also holds their channels `x_0, x_1, …` per row (`CovariateSpace.features`) and the metadata their space.

    Args:
        frame: the generate output's columns (`ds`, `y` and any covariate columns).
        future: the future columns' values after the series (generate's metadata `future`).
    """
    ds, y = frame["ds"], np.asarray(frame["y"], dtype="float64")
    smooth = smooth_level(config)
    space = fit_model_space(y, fit_stop, config.transform, tuple(config.seasons or ()), config.log, smooth, season_stop)
    full_space = fit_model_space(y, len(y), space.kind, space.seasons, "yes" if space.log else "no", smooth)
    scaled = {"ds": np.asarray(ds), "y": y, "y_scaled": space.encode(y)}
    metadata = space.to_dict() | {"forecaster": full_space.to_dict()}
    if has_features(config):
        features, covariates = config_features(config, frame, fit_stop, future)
        scaled |= dict(zip(feature_columns(covariates.width), np.asarray(features).T, strict=True))
        metadata["covariates"] = covariates.to_dict()
    return scaled, metadata


def log_model_space(fit_stop: int, metadata: dict[str, Any]) -> None:
    logger = stage_logger()
    if logger.isEnabledFor(logging.INFO):  # inside a chunk only its first series logs
        space = ModelSpace.from_dict(metadata)
        logger.info(
            "model space fitted on the first %d rows: %s, log %s, seasons %s, scale %s",
            fit_stop,
            space.kind,
            space.log,
            space.seasons,
            space.scaler,
        )
        if "covariates" in metadata:
            logger.info(describe(CovariateSpace.from_dict(metadata["covariates"])))


def normalize_chunk(work: ChunkWork) -> list[Exception | None]:
    """`normalize` of many series at once, each `(config, its inputs' keys, its key)`: their values and splits
    read once for the chunk. Returns, per series, None or the error it failed with (it fails alone)."""

    tables = ChunkTables("normalize")

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        series, bounds = own["series"], own["split"]
        fit_stop = test_start(bounds["split"], bounds["start"])
        season_stop = season_stop_for(config, fit_stop, train_stop(bounds["split"], bounds["start"]))
        future = store.future_values(upstream["series"]) if config.future_columns else None
        scaled, metadata = normalized_series(config, series, fit_stop, future, season_stop)
        tables.add(store, key, scaled, metadata)
        return lambda: log_model_space(fit_stop, metadata)

    covariates = covariate_columns(work[0][0]) if work else ()  # one panel, one set
    errors = each_series_of_chunk(
        work, {"series": ("generate", ("ds", "y", *covariates)), "split": ("split", ("split", "start"))}, one
    )
    tables.write()  # one table of the chunk's series (per column layout), not a table each
    return errors
