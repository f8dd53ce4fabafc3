"""Champion against challenger: both models forecast the same most recent holdout.

The holdout is the test split of the current data: rows the challenger never
trained on, and, since data only grows, rows the champion never saw either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import get_run_logger, task

from tasks.config import ForecastConfig
from tasks.normalize import MinMaxParams
from tasks.predict import predict_rows
from tasks.registry import record_decision, utc_now
from tasks.store import Store
from tasks.train import load_model


def holdout_rmse(model: Any, scaler: MinMaxParams, look_back: int, y: np.ndarray, holdout_start: int) -> float:
    """RMSE of a model's one-step predictions of `y[holdout_start:]`, in the series' units."""
    rows = np.arange(max(holdout_start, look_back), len(y))
    predictions = scaler.unscale(predict_rows(model, scaler.scale(y), rows, look_back))
    return float(np.sqrt(np.mean((predictions - y[rows]) ** 2)))


def _saved_model_rmse(store: Store, key: str, y: np.ndarray, holdout_start: int) -> float:
    metadata = store.read_model_metadata(key)
    scaler = MinMaxParams(metadata["scaler"]["data_min"], metadata["scaler"]["data_max"])
    return holdout_rmse(load_model(store.model_file(key)), scaler, metadata["config"]["look_back"], y, holdout_start)


@task(name="challenge")
def challenge(config: ForecastConfig, series: str, split: str, challenger: str, champion: str) -> dict[str, Any]:
    """Score both models on the holdout; promote the challenger if it is better. Returns the decision."""
    store = Store(config.artifacts_dir)
    y = store.read_table("generate", series)["y"].to_numpy()
    holdout_start = int(store.read_table("split", split).set_index("split").loc["test", "start"])
    challenger_rmse = _saved_model_rmse(store, challenger, y, holdout_start)
    champion_rmse = _saved_model_rmse(store, champion, y, holdout_start)
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
        challenger, challenger_rmse, champion, champion_rmse, len(y) - holdout_start, outcome,
    )
    return {**decision, "challenger_rmse": challenger_rmse, "champion_rmse": champion_rmse, "outcome": outcome}
