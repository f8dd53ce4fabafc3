"""The forecasting flow: the eight stages wired together. No computation here."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from lstm_forecast.flows.serve import notify_failure, served_run_config
from lstm_forecast.tasks.core.caching import with_store_cache
from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.defaults import config_for_series, describe_adapted
from lstm_forecast.tasks.core.graph import FINISH_STAGES, PREPARE_STAGES, stage_task, stages_until
from lstm_forecast.tasks.core.store import Store, stage_key, upstream_keys
from lstm_forecast.tasks.operations.ahead import publish_forecasts, series_label
from lstm_forecast.tasks.operations.registry import register_models
from lstm_forecast.tasks.operations.report import publish_forecast_table, publish_run
from lstm_forecast.tasks.stages.generate import long_format_ids

DEFAULT_CONFIG = ForecastConfig()


Stages = dict[str, dict[str, str]]  # stage name -> its key and status (computed or cached)


def run_stage(stage: str | Any, config: ForecastConfig, stages: Stages, upstream: dict[str, Any] | None = None) -> str:
    """Run one stage (by name, or a task of its own such as `train_global`), cached in the store, in
    this process; note it in `stages` and return its key.

    Its inputs are the keys in `stages` of the stages its `STAGE_TABLE` entry names, unless `upstream` gives them.
    Raises:
        the stage's error if it failed.
    """
    task_ = stage_task(stage) if isinstance(stage, str) else stage
    if upstream is None:
        upstream = upstream_keys(task_.name, {name: done["key"] for name, done in stages.items()})
    arguments = dict(upstream)
    if task_.name != "generate":  # generate keys its output by the series it reads
        arguments["key"] = stage_key(task_.name, config, upstream)  # computed once: the cache policy reuses it
    state = with_store_cache(task_, config)(config=config, **arguments, return_state=True)
    key = state.result(_sync=True)
    stages[task_.name] = {"key": key, "status": "cached" if state.name == "Cached" else "computed"}
    return key


def prepare_stages(config: ForecastConfig, stages: Stages) -> None:
    """The stages between generate and train (split, normalize, window) of a generated series."""
    for stage in PREPARE_STAGES:
        run_stage(stage, config, stages)


def finish_stages(config: ForecastConfig, stages: Stages, last_stage: str = "plot") -> None:
    """The stages after train (predict, evaluate, plot) of a prepared series with a trained model."""
    for stage in stages_until(FINISH_STAGES, last_stage):
        run_stage(stage, config, stages)


def run_stages(config: ForecastConfig, last_stage: str = "plot") -> Stages:
    """Run the stages in order, in this process; returns each stage's key and status (computed or cached).

    Args:
        last_stage: stop after this stage (`evaluate`: no plot, for tuning trials).
    Raises:
        the first failed stage's error.
    """
    stages: Stages = {}
    series = run_stage("generate", config, stages)
    config = config_for_series(config, Store(config.artifacts_dir), series)
    get_run_logger().info(describe_adapted(config))
    prepare_stages(config, stages)
    run_stage("train", config, stages)
    finish_stages(config, stages, last_stage)
    return stages


@task(name="series-pipeline", result_serializer="json")
def series_pipeline(config: ForecastConfig, last_stage: str = "plot") -> dict[str, dict[str, str]]:
    """All stages of one series (or one tuning trial) as one task of a Dask cluster: the stages run
    inside it, on the worker, as task runs of their own. One Dask task per series, not per stage:
    each Dask task pays for a Prefect context and client of its own."""
    return run_stages(config, last_stage)


def sized_config(config: ForecastConfig) -> ForecastConfig:
    """`config` with its data-sized fields filled from its series (the generate stage, cached as usual)."""
    series = with_store_cache(stage_task("generate"), config)(config=config, return_state=True).result(_sync=True)
    return config_for_series(config, Store(config.artifacts_dir), series)


async def run_pipeline(
    config: ForecastConfig, on_cluster: bool = False, last_stage: str = "plot"
) -> dict[str, dict[str, str]]:
    """`run_stages` here, or (`on_cluster`) as one `series_pipeline` task on the flow's Dask task runner.

    Either way only the config and store keys travel, never data or models.
    """
    if not on_cluster:
        return run_stages(config, last_stage)
    future = series_pipeline.submit(config=config, last_stage=last_stage)
    await anyio.to_thread.run_sync(future.wait)
    return await future.state.aresult()  # raises the failed stage's error


def artifact_paths(store: Store, stages: dict[str, dict[str, str]]) -> dict[str, str]:
    """Where a pipeline run's outputs are (a panel's per-series tables: the pack holding them, rows `_key`)."""
    outputs = {"series": "generate", "model": "train", "predictions": "predict", "metrics": "evaluate", "plot": "plot"}
    found = {name: stages[stage]["key"] for name, stage in outputs.items() if stage in stages}
    return {name: str(store.location(outputs[name], key)) for name, key in found.items()}


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
    stages = run_stages(config)
    store = Store(config.artifacts_dir)
    register_models(config, {stages["train"]["key"]: [stages["evaluate"]["key"]]})
    label = series_label(config.model_dump())
    forecasts = publish_forecasts(config, {stages["predict"]["key"]: [label, stages["train"]["key"]]})
    await publish_run(store, stages["evaluate"]["key"], stages["plot"]["key"], stages["train"]["key"])
    await publish_forecast_table(forecasts, "The forecast rows of this run, one table (every series).")
    artifacts = artifact_paths(store, stages) | {"forecasts": forecasts}
    return {"flow_run_id": str(flow_run.id), "stages": stages, "artifacts": artifacts}
