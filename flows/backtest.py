"""The backtest flow: the forecasting flow on each fold's prefix of the series, then a summary."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from flows.forecast import DEFAULT_CONFIG, forecast
from tasks.backtest import backtest_folds, fold_test_metrics, series_length, summarize_folds
from tasks.config import ForecastConfig, with_fields
from tasks.store import Store


@flow(name="lstm-backtest")
async def backtest(config: ForecastConfig = DEFAULT_CONFIG, folds: int = 3) -> dict[str, Any]:
    """Rolling-origin evaluation over `folds` folds; returns each fold's result and the summary records."""
    store = Store(config.artifacts_dir)
    full = await forecast(config=config)
    n_points = series_length(store, full["stages"]["generate"]["key"])
    results = []
    for series_end, train_fraction in backtest_folds(n_points, config.train_fraction, folds):
        fold_config = with_fields(config, series_end=series_end, train_fraction=train_fraction)
        results.append(await forecast(config=fold_config))
    summary = summarize_folds([fold_test_metrics(store, r["stages"]["evaluate"]["key"]) for r in results])
    await acreate_table_artifact(
        key="lstm-forecast-backtest",
        table=summary.round(5).to_dict("records"),
        description=f"Test metrics over {folds} rolling-origin folds.",
    )
    return {"folds": results, "summary": summary.to_dict("records")}
