"""Deployments served by `lstm-forecast serve`: an ad hoc forecast and a scheduled retraining."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tasks.config import ForecastConfig

AD_HOC = "ad-hoc"
RETRAIN = "retrain"
NIGHTLY = "0 2 * * *"


def deployments(config: ForecastConfig, cron: str | None = None, interval: float | None = None) -> list[Any]:
    """The two deployments, both defaulting to `config`; retraining on `cron` or every `interval` seconds."""
    from flows.forecast import forecast
    from flows.retrain import retrain

    parameters = {"config": config.model_dump(mode="json")}
    schedule: dict[str, Any] = {"interval": timedelta(seconds=interval)} if interval else {"cron": cron or NIGHTLY}
    return [
        forecast.to_deployment(
            name=AD_HOC,
            parameters=parameters,
            tags=["lstm-forecast"],
            description="Run the forecasting pipeline once, with the parameters of the form.",
        ),
        retrain.to_deployment(
            name=RETRAIN,
            parameters=parameters,
            tags=["lstm-forecast"],
            description="Retrain on the current data; promote the challenger only if better.",
            # a scheduled run and a manual one never decide on the same challenger at once
            concurrency_limit=1,
            **schedule,
        ),
    ]


def serve(config: ForecastConfig, cron: str | None = None, interval: float | None = None) -> None:
    """Register both deployments with the running server and execute their runs until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(config, cron, interval))
