"""Champion against challenger: both models forecast the same most recent holdout.

The holdout is the test split of the current data: rows the challenger never
trained on, and, since data only grows, rows the champion never saw either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import get_run_logger, task

from tasks.config import ForecastConfig
from tasks.predict import predict_rows
from tasks.registry import record_decision, utc_now
from tasks.store import Store
from tasks.train import SavedModel, load_saved


def holdout_rmse(saved: SavedModel, y: np.ndarray, holdout_start: int) -> float:
    """RMSE of a model's one-step forecasts of `y[holdout_start:]`, in the series' units."""
    rows = np.arange(max(holdout_start, saved.first_origin), len(y))
    z_hat = predict_rows(saved.model, saved.space, saved.space.encode(y), rows, saved.look_back, saved.patch)
    forecasts = saved.space.decode(z_hat, y, rows)[:, 0]
    return float(np.sqrt(np.mean((forecasts - y[rows]) ** 2)))


@task(name="challenge")
def challenge(config: ForecastConfig, series: str, split: str, challenger: str, champion: str) -> dict[str, Any]:
    """Score both models on the holdout; promote the challenger if it is better. Returns the decision."""
    store = Store(config.artifacts_dir)
    y = store.read_table("generate", series)["y"].to_numpy()
    holdout_start = int(store.read_table("split", split).set_index("split").loc["test", "start"])
    challenger_rmse = holdout_rmse(load_saved(store, challenger), y, holdout_start)
    champion_rmse = holdout_rmse(load_saved(store, champion), y, holdout_start)
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
