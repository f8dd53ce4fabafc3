"""The forecasting flow of one series: the plan of every run (flows/plan.py) on a panel of one, each stage a
task run of its own. No computation here."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio.to_thread
from prefect import flow, task
from prefect.runtime import flow_run

from lstm_forecast.flows.plan import Outcomes, Stages, TaskRunner, failures_into, generate_and_size, planned_run
from lstm_forecast.flows.serve import notify_failure, served_run_config
from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.ahead import publish_forecasts, series_label
from lstm_forecast.tasks.operations.registry import register_models
from lstm_forecast.tasks.operations.report import publish_forecast_table, publish_run
from lstm_forecast.tasks.stages.generate import long_format_ids

DEFAULT_CONFIG = ForecastConfig()


async def run_series(config: ForecastConfig, last_stage: str = "plot") -> Stages:
    """Every stage of one series in order, each a task run of its own in this process: the plan of every run
    (`planned_run`) on a panel of one. Returns each stage's key and status (computed or cached).

    Args:
        last_stage: stop after this stage (`evaluate`: no plot, for tuning trials).
    Raises:
        the first failed stage's error.
    """
    outcomes, _ = await planned_run(config, [config.series_id], False, last_stage, TaskRunner())
    stages = outcomes[config.series_id]
    assert not isinstance(stages, Exception)  # a TaskRunner raises a failed stage's error
    return stages


@task(name="series-pipeline", result_serializer="json")
def series_pipeline(config: ForecastConfig, last_stage: str = "plot") -> Stages:
    """All stages of one series (or one tuning trial) as one task of a Dask cluster: the stages run
    inside it, on the worker, as task runs of their own. One Dask task per series, not per stage:
    each Dask task pays for a Prefect context and client of its own."""
    return asyncio.run(run_series(config, last_stage))  # a worker's thread runs no event loop


async def sized_series_config(config: ForecastConfig) -> ForecastConfig:
    """`config` with its data-sized fields filled from its series (the plan's generate step, cached as usual)."""
    outcomes: Outcomes = {}
    sized = await generate_and_size(config, [config.series_id], False, TaskRunner(), failures_into(outcomes))
    return sized.configs[config.series_id]


async def run_pipeline(config: ForecastConfig, on_cluster: bool = False, last_stage: str = "plot") -> Stages:
    """`run_series` here, or (`on_cluster`) as one `series_pipeline` task on the flow's Dask task runner.

    Either way only the config and store keys travel, never data or models.
    """
    if not on_cluster:
        return await run_series(config, last_stage)
    future = series_pipeline.submit(config=config, last_stage=last_stage)
    await anyio.to_thread.run_sync(future.wait)
    return await future.state.aresult()  # raises the failed stage's error


ARTIFACTS = {"series": "generate", "model": "train", "predictions": "predict", "metrics": "evaluate", "plot": "plot"}


def artifact_paths(store: Store, stages: dict[str, dict[str, str]]) -> dict[str, str]:
    """Where a pipeline run's outputs are (a panel's per-series tables: the pack holding them, rows `_key`)."""
    return many_artifact_paths(store, {None: stages})[None]


def many_artifact_paths(store: Store, runs: dict[Any, dict[str, dict[str, str]]]) -> dict[Any, dict[str, str]]:
    """`artifact_paths` of many runs (by series id), each stage's outputs looked up at once."""
    where: dict[str, dict[str, Path]] = {
        stage: store.locations(stage, [s[stage]["key"] for s in runs.values() if stage in s])
        for stage in ARTIFACTS.values()
    }
    return {
        run: {name: str(where[stage][s[stage]["key"]]) for name, stage in ARTIFACTS.items() if stage in s}
        for run, s in runs.items()
    }


# Async although every stage is sync: an async flow run does not wait up to a second at exit
# for its heartbeat thread, which is most of a fully cached run's time.
@flow(name="lstm-forecast", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
async def forecast(config: ForecastConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Series → trained LSTM → predictions, metrics and plot. Returns every stage's key and status.

    A long-format input runs as `lstm-forecast-many` (a subflow), which returns its own shape."""
    config = served_run_config(config)
    if long_format_ids(config):  # the subflow reads the ids itself: 100,000 of them exceed a run's parameters
        from lstm_forecast.flows.many import forecast_many

        return await forecast_many(config=config)
    stages = await run_series(config)
    store = Store(config.artifacts_dir)
    register_models(config, {stages["train"]["key"]: [stages["evaluate"]["key"]]})
    label = series_label(config.model_dump())
    forecasts = publish_forecasts(
        config, {stages["predict"]["key"]: [label, stages["train"]["key"], stages["evaluate"]["key"]]}, False
    )
    await publish_run(store, stages["evaluate"]["key"], stages["plot"]["key"], stages["train"]["key"])
    await publish_forecast_table(forecasts, "The forecast rows of this run, one table (every series).")
    artifacts = artifact_paths(store, stages) | {"forecasts": forecasts}
    return {"flow_run_id": str(flow_run.id), "stages": stages, "artifacts": artifacts}
