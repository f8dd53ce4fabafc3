"""The retraining flow: run the pipeline on the current data, then champion against challenger, then
publish the forecast of every series by the champion left in place (`forecasts/latest.parquet`).

A long-format input is retrained as `run` trains it: one global model (decided against the global
champion on every series' holdout, by mean MASE) or one model per series (each decided against its
own series' champion, by holdout RMSE).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from lstm_forecast.flows.cluster import on_same_cluster
from lstm_forecast.flows.forecast import DEFAULT_CONFIG, forecast
from lstm_forecast.flows.many import forecast_many
from lstm_forecast.flows.serve import notify_failure, served_run_config
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.ahead import publish_latest
from lstm_forecast.tasks.operations.challenge import challenge, challenge_global
from lstm_forecast.tasks.operations.registry import GLOBAL_SERIES, champion, load_registry, pending_champion
from lstm_forecast.tasks.operations.report import publish_forecast_table
from lstm_forecast.tasks.stages.generate import long_format_ids


def decide_one(config: ForecastConfig, stages: dict[str, dict[str, str]], series_id: str = "") -> dict[str, Any]:
    """Champion against challenger for one series' new model (nothing to decide: why)."""
    store = Store(config.artifacts_dir)
    model = stages["train"]["key"]
    current, reason = pending_champion(load_registry(store), model)
    if current is None:
        get_run_logger().info("nothing to decide: %s", reason)
        decision: dict[str, Any] = {"outcome": "unchanged", "reason": reason}
    else:
        decision = challenge(config, stages["generate"]["key"], stages["split"]["key"], model, current)
    return decision | {"champion": champion(load_registry(store), series_id)}


async def published(config: ForecastConfig, series_keys: dict[str, str], run_table: str | None) -> dict[str, Any]:
    """`publish_latest`, and its table artifact."""
    latest = publish_latest(config, series_keys, run_table)
    await publish_forecast_table(
        latest["latest"], "Published by this retraining: the champion's forecast of every series.", "lstm-latest"
    )
    return latest


async def retrain_many(config: ForecastConfig, ids: list[str]) -> dict[str, Any]:
    """A long-format input: `forecast_many`, then the decision(s), then the champions' forecasts published."""
    result = await on_same_cluster(forecast_many)(config=config)
    store = Store(config.artifacts_dir)
    done = {i: d["stages"] for i, d in result["series"].items() if d["status"] == "completed"}
    series_keys = {i: stages["generate"]["key"] for i, stages in done.items()}
    if result["scope"] == "local":
        decisions = {i: decide_one(with_fields(config, series_id=i), stages, i) for i, stages in done.items()}
        return {**result, "retrain": decisions, "latest": await published(config, series_keys, result["forecasts"])}
    model = result["model"]
    current, reason = pending_champion(load_registry(store), model) if model else (None, "no series completed")
    if current is None:
        get_run_logger().info("nothing to decide: %s", reason)
        decision: dict[str, Any] = {"outcome": "unchanged", "reason": reason}
    else:
        keys = {name: [stages[name]["key"] for stages in done.values()] for name in ("generate", "split", "normalize")}
        decision = challenge_global(
            config, list(done), keys["generate"], keys["split"], keys["normalize"], model, current
        )
    decision |= {"champion": champion(load_registry(store), GLOBAL_SERIES)}
    return {**result, "retrain": decision, "latest": await published(config, series_keys, result["forecasts"])}


@flow(name="lstm-retrain", on_failure=[notify_failure], on_crashed=[notify_failure])
async def retrain(config: ForecastConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Unchanged data and config: everything is cached and nothing is decided. New data: a challenger is
    trained and promoted only if it beats the champion on the same most recent holdout."""
    config = served_run_config(config)
    if ids := long_format_ids(config):
        return await retrain_many(config, ids)
    result = await forecast(config=config)
    decision = decide_one(config, result["stages"], config.series_id or "")
    series_keys = {config.series_id or "": result["stages"]["generate"]["key"]}
    latest = await published(config, series_keys, result["artifacts"]["forecasts"])
    return {**result, "retrain": decision, "latest": latest}
