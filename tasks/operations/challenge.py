"""Champion against challenger: both models forecast the same most recent holdout.

The holdout is the test split of the current data: rows the challenger never
trained on, and, since data only grows, rows the champion never saw either.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.covariates import model_features
from lstm_forecast.tasks.core.networks import SavedModel, load_saved
from lstm_forecast.tasks.core.space import ModelSpace, read_model_space
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.registry import record_decision, utc_now
from lstm_forecast.tasks.stages.predict import predict_many


def holdout_errors(
    saved: SavedModel,
    frame: pd.DataFrame,
    holdout_start: int,
    space: ModelSpace | None = None,
    series_id: str | None = None,
) -> np.ndarray:
    """Errors of a model's one-step forecasts of `y[holdout_start:]` of a series `frame` (`ds, y`, covariate
    columns, `attrs["future"]`), in the series' units (a global model in the series' `space`, reading its
    `series_id`'s embedding row when it has one), with the feature channels the model reads."""
    space = space or saved.space
    y = frame["y"].to_numpy()
    rows = np.arange(max(holdout_start, saved.first_origin), len(y))
    features = model_features(saved.forecast_config, frame, frame.attrs.get("future"))
    inputs = space.inputs(space.encode(y), rows, saved.look_back, saved.patch, features)
    (z_hat,) = predict_many(saved.model, [saved.series_inputs(series_id, inputs)])
    return space.decode(z_hat, y, rows)[:, 0] - y[rows]


def holdout_rmse(saved: SavedModel, frame: pd.DataFrame, holdout_start: int) -> float:
    """RMSE of a model's one-step forecasts of `y[holdout_start:]`, in the series' units."""
    return float(np.sqrt(np.mean(holdout_errors(saved, frame, holdout_start) ** 2)))


def holdout_mase(
    saved: SavedModel, space: ModelSpace, frame: pd.DataFrame, holdout_start: int, series_id: str | None = None
) -> float:
    """MASE of a global model's one-step forecasts of `y[holdout_start:]` of series `series_id`: their mean
    absolute error over the mean absolute one-step change before the holdout (scale-free, so series can be
    pooled)."""
    y = frame["y"].to_numpy()
    scale = float(np.mean(np.abs(np.diff(y[:holdout_start])))) or 1.0
    return float(np.mean(np.abs(holdout_errors(saved, frame, holdout_start, space, series_id)))) / scale


def current_series(store: Store, config: ForecastConfig, series: str) -> pd.DataFrame:
    """A generated series with the future columns' values after it (`attrs["future"]`) when it has any."""
    frame = store.read_table("generate", series)
    frame.attrs["future"] = store.future_values(series) if config.future_columns else None
    return frame


@task(name="challenge")
def challenge(config: ForecastConfig, series: str, split: str, challenger: str, champion: str) -> dict[str, Any]:
    """Score both models on the holdout; promote the challenger if it is better. Returns the decision."""
    store = Store(config.artifacts_dir)
    frame = current_series(store, config, series)
    y = frame["y"].to_numpy()
    holdout_start = int(store.read_table("split", split).set_index("split").loc["test", "start"])
    challenger_rmse = holdout_rmse(load_saved(store, challenger), frame, holdout_start)
    champion_rmse = holdout_rmse(load_saved(store, champion), frame, holdout_start)
    decision = {
        "decided": utc_now(),
        "challenger": challenger,
        "champion": champion,
        "holdout_rows": len(y) - holdout_start,
        "holdout_start": holdout_start,
    }
    outcome = record_decision(store, decision, challenger_rmse, champion_rmse)
    get_run_logger().info(
        "challenger %s RMSE %.4f vs champion %s RMSE %.4f on the last %d rows: %s",
        challenger,
        challenger_rmse,
        champion,
        champion_rmse,
        len(y) - holdout_start,
        outcome,
    )
    return {**decision, "challenger_rmse": challenger_rmse, "champion_rmse": champion_rmse, "outcome": outcome}


@task(name="challenge")
def challenge_global(
    config: ForecastConfig,
    series_ids: list[str],
    series: list[str],
    split: list[str],
    normalize: list[str],
    challenger: str,
    champion: str,
) -> dict[str, Any]:
    """Two global models on the same holdouts (each series' test split, in its model space fitted before
    it): the challenger is promoted if its MASE averaged over the series is lower. Returns the decision,
    with each series' MASE of both."""
    store = Store(config.artifacts_dir)
    models = {"challenger": load_saved(store, challenger), "champion": load_saved(store, champion)}
    per_series: dict[str, dict[str, float]] = {}
    holdout_rows = 0
    for series_id, series_key, split_key, normalize_key in zip(series_ids, series, split, normalize, strict=True):
        frame = current_series(store, config, series_key)
        y = frame["y"].to_numpy()
        holdout_start = int(store.read_table("split", split_key).set_index("split").loc["test", "start"])
        space = read_model_space(store, normalize_key)
        per_series[series_id] = {
            name: holdout_mase(saved, space, frame, holdout_start, series_id) for name, saved in models.items()
        }
        holdout_rows += len(y) - holdout_start
    scores = {name: float(np.mean([values[name] for values in per_series.values()])) for name in models}
    decision = {
        "decided": utc_now(),
        "challenger": challenger,
        "champion": champion,
        "holdout_rows": holdout_rows,
        "holdout_start": -1,
        "metric": "mean MASE",
        "per_series": json.dumps(per_series),
    }
    outcome = record_decision(store, decision, scores["challenger"], scores["champion"])
    get_run_logger().info(
        "challenger %s mean MASE %.4f vs champion %s %.4f on the holdouts of %d series: %s",
        challenger,
        scores["challenger"],
        champion,
        scores["champion"],
        len(series_ids),
        outcome,
    )
    return {
        **decision,
        "challenger_rmse": scores["challenger"],
        "champion_rmse": scores["champion"],
        "outcome": outcome,
    }
