"""Deployments served by `lstm-forecast serve`: an ad hoc forecast and a scheduled retraining."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.errors import InputError, shown

AD_HOC = "ad-hoc"
RETRAIN = "retrain"
NIGHTLY = "0 2 * * *"
# The folders a served run may read and write, fixed when `serve` starts; its runs inherit the variable.
SERVED_ROOTS = "LSTM_FORECAST_SERVED_ROOTS"


def served_roots(config: ForecastConfig) -> dict[str, str | None]:
    """Each path field's root: the served config's store for `artifacts_dir`, the folder of its input file
    for `input` (None: served without an input file, a run takes none)."""
    return {
        "artifacts_dir": str(Path(config.artifacts_dir).resolve()),
        "input": str(Path(config.input).resolve().parent) if config.input else None,
    }


def check_served_paths(config: ForecastConfig) -> None:
    """In a run started by `serve`, the store must lie under the served store and the input file under the
    served input's folder, each under its own root: a form or an API call cannot point a run at any other
    folder of the machine, nor write a store among the data or read the store as data."""
    fixed = os.environ.get(SERVED_ROOTS)
    if not fixed:
        return
    roots = json.loads(fixed)
    for field, value in (("artifacts_dir", config.artifacts_dir), ("input", config.input)):
        if not value:
            continue
        root, flag = roots.get(field), "--" + field.replace("_", "-")
        if root is None:  # served without an input file
            raise InputError(
                f"this served deployment takes no input file, not {shown(value, 200)}",
                "restart `lstm-forecast serve` with --input to serve runs of the files in its folder",
            )
        if not Path(value).resolve().is_relative_to(root):
            raise InputError(
                f"this served deployment takes {field} only under {root}, not {shown(value, 200)}",
                f"choose a path under that folder, or restart `lstm-forecast serve` with {flag} there",
            )


def deployments(config: ForecastConfig, cron: str | None = None, interval: float | None = None) -> list[Any]:
    """The two deployments, both defaulting to `config`; retraining on `cron` or every `interval` seconds."""
    from lstm_forecast.flows.forecast import forecast
    from lstm_forecast.flows.retrain import retrain

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

    os.environ[SERVED_ROOTS] = json.dumps(served_roots(config))
    prefect_serve(*deployments(config, cron, interval))
