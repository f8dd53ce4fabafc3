"""Deployments served by `lstm-forecast serve`: an ad hoc forecast and a scheduled retraining."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.errors import InputError, quoted

AD_HOC = "ad-hoc"
RETRAIN = "retrain"
NIGHTLY = "0 2 * * *"
# The folders a served run may read and write, fixed when `serve` starts; its runs inherit the variable.
SERVED_ROOTS = "LSTM_FORECAST_SERVED_ROOTS"
# The served config (JSON), which a run's own `config` parameter changes field by field.
SERVED_CONFIG = "LSTM_FORECAST_SERVED_CONFIG"
# The Apprise URL `serve --notify` sends a message to when a served run fails or crashes.
NOTIFY_URL = "LSTM_FORECAST_NOTIFY_URL"
NOTIFIED_MESSAGE_CHARS = 1000


def checked_notify_url(url: str) -> str:
    """An Apprise URL that Apprise can send to (`slack://…`, `mailto://…`, `json://host/path`, …).

    Raises:
        InputError: one that it cannot.
    """
    from apprise import Apprise

    if not Apprise().add(url):
        raise InputError(
            "--notify is not an Apprise URL this machine can send to",
            "pass one such as slack://TOKEN/CHANNEL, mailto://user:password@example.com or "
            "json://host:port/path (https://github.com/caronc/apprise/wiki lists them)",
        )
    return url


async def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """A flow's failure and crash hook: in a run started by `serve --notify URL`, one message to that URL
    through Prefect's Apprise notification block; elsewhere nothing."""
    if not (url := os.environ.get(NOTIFY_URL)) or flow_run.parent_task_run_id is not None:
        return  # not served, or a subflow: the run it is part of sends the one message
    from prefect.blocks.notifications import AppriseNotificationBlock

    message = str(state.message or "")[:NOTIFIED_MESSAGE_CHARS]
    await AppriseNotificationBlock(url=url, notify_type="failure").anotify(
        body=f"{flow.name} run {flow_run.name!r} ({flow_run.id}) ended {state.name}: {message}",
        subject=f"lstm-forecast: a served run {state.name.lower()}",
    )


def merged_config(served: dict[str, Any], config: ForecastConfig) -> ForecastConfig:
    """The served config with the fields a run's parameter gave (`model_fields_set`: those in the form or
    the API call's `config` object) put over it; the fields it left out keep their served values."""
    changes = config.model_dump(mode="json", include=config.model_fields_set)
    return ForecastConfig.model_validate(served | changes)


def served_run_config(config: ForecastConfig) -> ForecastConfig:
    """The config a run works with: in a run started by `serve`, `merged_config` over the served config and
    checked by `check_served_paths`; elsewhere `config` itself."""
    if served := os.environ.get(SERVED_CONFIG):
        config = merged_config(json.loads(served), config)
    check_served_paths(config)
    return config


def served_roots(config: ForecastConfig) -> dict[str, str | None]:
    """Each path field's root: the served config's store for `artifacts_dir`, the folder of its input file
    for `input` and for `future` (None: served without an input file, a run takes none)."""
    data = str(Path(config.input).resolve().parent) if config.input else None
    return {"artifacts_dir": str(Path(config.artifacts_dir).resolve()), "input": data, "future": data}


def check_served_paths(config: ForecastConfig) -> None:
    """In a run started by `serve`, the store must lie under the served store and the input file (and the
    future file) under the served input's folder, each under its own root: a form or an API call cannot
    point a run at any other folder of the machine, nor write a store among the data or read the store as
    data."""
    fixed = os.environ.get(SERVED_ROOTS)
    if not fixed:
        return
    roots = json.loads(fixed)
    for field, value in (("artifacts_dir", config.artifacts_dir), ("input", config.input), ("future", config.future)):
        if not value:
            continue
        root, flag = roots.get(field), "--" + field.replace("_", "-")
        if root is None:  # served without an input file
            raise InputError(
                f"this served deployment takes no input file, not {quoted(value, 200)}",
                "restart `lstm-forecast serve` with --input to serve runs of the files in its folder",
            )
        if not Path(value).resolve().is_relative_to(root):
            raise InputError(
                f"this served deployment takes {field} only under {root}, not {quoted(value, 200)}",
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


def serve(
    config: ForecastConfig, cron: str | None = None, interval: float | None = None, notify: str | None = None
) -> None:
    """Register both deployments with the running server and execute their runs until interrupted;
    `notify`: an Apprise URL told of each failed or crashed run."""
    from prefect import serve as prefect_serve

    os.environ[SERVED_ROOTS] = json.dumps(served_roots(config))
    os.environ[SERVED_CONFIG] = config.model_dump_json()
    if notify:
        os.environ[NOTIFY_URL] = notify
    prefect_serve(*deployments(config, cron, interval))
