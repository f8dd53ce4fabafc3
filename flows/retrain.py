"""The retraining flow: run the pipeline on the current data, then champion against challenger."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.forecast import DEFAULT_CONFIG, forecast
from tasks.challenge import challenge
from tasks.config import ForecastConfig
from tasks.registry import champion, pending_champion
from tasks.store import Store


@flow(name="lstm-retrain")
async def retrain(config: ForecastConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Unchanged data and config: everything is cached and nothing is decided. New data: a challenger is
    trained and promoted only if it beats the champion on the same most recent holdout."""
    result = await forecast(config=config)
    store = Store(config.artifacts_dir)
    model = result["stages"]["train"]["key"]
    current, reason = pending_champion(store.read_registry(), model)
    if current is None:
        get_run_logger().info("nothing to decide: %s", reason)
        decision: dict[str, Any] = {"outcome": "unchanged", "reason": reason}
    else:
        decision = challenge(config, result["stages"]["generate"]["key"], result["stages"]["split"]["key"],
                             model, current)
    decision["champion"] = champion(store.read_registry(), config.series_id or "")
    return {**result, "retrain": decision}
