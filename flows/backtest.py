"""The backtest flow: the forecasting flow on each fold's prefix of the series, then a summary."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow
from prefect.artifacts import acreate_table_artifact

from lstm_forecast.flows.cluster import on_same_cluster
from lstm_forecast.flows.forecast import DEFAULT_CONFIG, forecast, run_pipeline
from lstm_forecast.flows.many import forecast_many
from lstm_forecast.tasks.core.config import NOT_PUBLISHED, Folds, ForecastConfig, with_fields
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.backtesting import (
    backtest_folds,
    fold_test_metrics,
    fraction_folds,
    mean_over_series,
    series_length,
    summarize_folds,
)
from lstm_forecast.tasks.stages.generate import long_format_ids


async def publish_backtest(summary: pd.DataFrame, folds: int, what: str) -> None:
    await acreate_table_artifact(
        key="lstm-forecast-backtest",
        table=summary.round(5).to_dict("records"),
        description=f"Test metrics over {folds} rolling-origin folds{what}.",
    )


async def backtest_many(config: ForecastConfig, ids: list[str], folds: int) -> dict[str, Any]:
    """Many series: each fold cuts every series at the same fraction of its length (`fraction_folds`)
    and runs them as a run would (one global model, or one each); a fold's metrics are the mean over
    its series."""
    store = Store(config.artifacts_dir)
    await forecast(config=config)  # a run on all the data, registered as any run
    results, fold_metrics = [], []
    for keep, train_fraction in fraction_folds(config.train_fraction, folds):
        fold_config = with_fields(config, series_keep=keep, train_fraction=train_fraction, forecast_model=NOT_PUBLISHED)
        fold = await on_same_cluster(forecast_many)(config=fold_config, last_stage="evaluate", to_registry=False)
        done = [d for d in fold["series"].values() if d["status"] == "completed"]
        fold_metrics.append(mean_over_series([fold_test_metrics(store, d["stages"]["evaluate"]["key"]) for d in done]))
        results.append({"series": {i: d["status"] for i, d in fold["series"].items()}, "model": fold["model"]})
    summary = summarize_folds(fold_metrics)
    await publish_backtest(summary, folds, f", each the mean over {len(ids)} series")
    return {"folds": results, "summary": summary.to_dict("records")}


@flow(name="lstm-backtest")
async def backtest(config: ForecastConfig = DEFAULT_CONFIG, folds: Folds = 3) -> dict[str, Any]:
    """Rolling-origin evaluation over `folds` folds; returns each fold's result and the summary records."""
    if ids := long_format_ids(config):
        return await backtest_many(config, ids, folds)
    store = Store(config.artifacts_dir)
    full = await forecast(config=config)  # a run on all the data, registered as any run
    n_points = series_length(store, full["stages"]["generate"]["key"])
    results = []
    for series_end, train_fraction in backtest_folds(n_points, config.train_fraction, folds):
        fold_config = with_fields(
            config, series_end=series_end, train_fraction=train_fraction, forecast_model=NOT_PUBLISHED
        )
        results.append({"stages": await run_pipeline(fold_config)})  # folds are never registered
    summary = summarize_folds([fold_test_metrics(store, r["stages"]["evaluate"]["key"]) for r in results])
    await publish_backtest(summary, folds, "")
    return {"folds": results, "summary": summary.to_dict("records")}
