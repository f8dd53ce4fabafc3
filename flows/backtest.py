"""The backtest flow: the forecasting flow on each fold's prefix of the series, then a summary."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow
from prefect.artifacts import acreate_table_artifact

from flows.forecast import DEFAULT_CONFIG, forecast
from tasks.backtest import backtest_folds, summarize_folds
from tasks.config import ForecastConfig
from tasks.store import Store


@flow(name="lstm-backtest")
async def backtest(config: ForecastConfig = DEFAULT_CONFIG, folds: int = 3) -> dict[str, Any]:
    """Rolling-origin evaluation over `folds` folds; returns each fold's result and the summary records."""
    full = await forecast(config=config)
    n_points = len(pd.read_parquet(full["artifacts"]["series"], columns=["y"]))
    results = []
    for series_end, train_fraction in backtest_folds(n_points, config.train_fraction, folds):
        fold_config = config.model_copy(update={"series_end": series_end, "train_fraction": train_fraction})
        results.append(await forecast(config=fold_config))
    store = Store(config.artifacts_dir)
    fold_metrics = []
    for result in results:
        metrics = store.read_table("evaluate", result["stages"]["evaluate"]["key"])
        test = metrics[(metrics["split"] == "test") & (metrics["step"] == 0)].dropna(subset=["value"])
        fold_metrics.append({model: dict(zip(part["metric"], part["value"], strict=True))
                             for model, part in test.groupby("model", sort=False)})
    summary = summarize_folds(fold_metrics)
    await acreate_table_artifact(key="lstm-forecast-backtest", table=summary.round(5).to_dict("records"),
                          description=f"Test metrics over {folds} rolling-origin folds.")
    return {"folds": results, "summary": summary.to_dict("records")}
