"""Many series: a long-format input, as one global model across its series or one model per series.

Global (the default for more than one series): each series is generated and sized, the settings one
network shares are drawn from them, each series is prepared (split, normalize, window), one `train`
fits the network on every series' windows, and each series is predicted, evaluated and plotted with
it. Local (`scope: local`): one whole pipeline per series. Either way the per-series stages run on
the flow's Dask cluster when it has one, one Dask task per series and phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.cluster import runs_on_cluster
from flows.forecast import (
    DEFAULT_CONFIG,
    Stages,
    artifact_paths,
    finish_stages,
    prepare_stages,
    run_pipeline,
    run_stage,
)
from tasks.config import ForecastConfig, with_fields
from tasks.defaults import adapt_config, config_for_series, global_settings
from tasks.errors import InputError
from tasks.generate import generate, read_series_ids
from tasks.registry import register_models
from tasks.store import Store, file_digest, planned_key, stage_key, upstream_keys
from tasks.summary import SeriesOutcome, publish_summary
from tasks.train import train_global


def failure_message(error: Exception) -> str:
    return f"{error.problem}; fix: {error.fix}" if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


@task(name="series-generate", result_serializer="json")
def generate_series(config: ForecastConfig) -> dict[str, Any]:
    """Generate one series and size its own settings: its generate stage and sized config (as JSON)."""
    stages: Stages = {}
    series = run_stage(generate, config, stages)
    sized = config_for_series(config, Store(config.artifacts_dir), series)
    return {"stages": stages, "sized": sized.model_dump(mode="json")}


@task(name="series-prepare", result_serializer="json")
def prepare_series(config: ForecastConfig, stages: Stages) -> Stages:
    """split, normalize and window of one generated series; returns its stages so far."""
    stages = dict(stages)
    prepare_stages(config, stages)
    return stages


@task(name="series-finish", result_serializer="json")
def finish_series(config: ForecastConfig, stages: Stages) -> Stages:
    """predict, evaluate and plot of one prepared series with the global model (`stages["train"]`); returns
    all its stages."""
    stages = dict(stages)
    finish_stages(config, stages)
    return stages


async def each_series(ids: list[str], work: Callable[[str], Any], parallel: bool) -> dict[str, Any]:
    """`work(series_id)` for every id, on the cluster at once or in turn here; an exception is kept as the
    series' result (one series failing must not stop the others)."""

    async def one(series_id: str) -> Any:
        try:
            if parallel:
                future = work(series_id)
                await anyio.to_thread.run_sync(future.wait)
                return await future.state.aresult()
            return work(series_id)
        except Exception as error:
            return error

    if parallel:
        results = await asyncio.gather(*(one(series_id) for series_id in ids))
    else:
        results = [await one(series_id) for series_id in ids]
    return dict(zip(ids, results, strict=True))


def stored_global_run(config: ForecastConfig, ids: list[str]) -> tuple[dict[str, Stages], str] | None:
    """Each series' stages and the model key of a global run whose every output is already in the store
    and up to date, keyed as the stages would key them (`STAGE_INPUTS`); None if anything is missing.

    A rerun on unchanged data then costs a store check per output instead of a Prefect task run per
    stage and series (about 0.05 s each).
    """
    store = Store(config.artifacts_dir)
    try:
        digest = file_digest(config.input or "")
    except OSError:
        return None
    keys: dict[str, dict[str, str]] = {}
    for series_id in ids:
        series = store.read_source(stage_key("generate", with_fields(config, series_id=series_id), {}, extra=digest))
        if series is None or not store.is_complete("generate", series):
            return None
        keys[series_id] = {"generate": series}
    frames = {i: store.read_table("generate", keys[i]["generate"]) for i in ids}
    sized = [adapt_config(with_fields(config, series_id=i), frames[i]["ds"], frames[i]["y"].to_numpy()) for i in ids]
    shared = global_settings(config, sized, [len(frames[i]) for i in ids])
    configs = {i: adapt_config(with_fields(config, series_id=i, **shared), frames[i]["ds"], frames[i]["y"].to_numpy())
               for i in ids}
    for series_id in ids:
        for stage in ("split", "normalize", "window"):
            keys[series_id][stage] = planned_key(stage, configs[series_id], keys[series_id])
    model = stage_key("train", with_fields(config, **shared), {
        "series": [keys[i]["generate"] for i in ids], "normalize": [keys[i]["normalize"] for i in ids],
        "window": [keys[i]["window"] for i in ids], "series_ids": ids})
    for series_id in ids:
        keys[series_id]["train"] = model
        for stage in ("predict", "evaluate", "plot"):
            keys[series_id][stage] = planned_key(stage, configs[series_id], keys[series_id])
    for series_keys in keys.values():
        for stage, key in series_keys.items():
            inputs = ({name: [k[name if name != "series" else "generate"] for k in keys.values()]
                       for name in ("series", "normalize", "window")} if stage == "train" else
                      upstream_keys(stage, series_keys))
            if not store.is_complete(stage, key) or store.is_older_than_inputs(stage, key, inputs):
                return None
    return {i: {stage: {"key": key, "status": "cached"} for stage, key in keys[i].items()} for i in ids}, model


async def forecast_global(config: ForecastConfig, ids: list[str], parallel: bool) -> tuple[
        dict[str, Stages | Exception], str | None]:
    """One network across the series `ids`; returns each series' stages (or its error) and the model key."""
    logger = get_run_logger()
    config = with_fields(config, scope="global")
    stored = await anyio.to_thread.run_sync(stored_global_run, config, ids)
    if stored is not None:
        logger.info("all %d series and their global model are in the store, up to date: nothing to run", len(ids))
        stages, model = stored
        return dict(stages), model

    def call(task_function: Any, **arguments: Any) -> Any:
        return task_function.submit(**arguments) if parallel else task_function.fn(**arguments)

    generated: dict[str, Any] = await each_series(
        ids, lambda i: call(generate_series, config=with_fields(config, series_id=i)), parallel)
    ready = {i: r for i, r in generated.items() if not isinstance(r, Exception)}
    outcomes: dict[str, Stages | Exception] = {i: r for i, r in generated.items() if isinstance(r, Exception)}
    if not ready:
        return outcomes, None
    store = Store(config.artifacts_dir)
    sized = {i: ForecastConfig.model_validate(r["sized"]) for i, r in ready.items()}
    lengths = [len(store.read_table("generate", ready[i]["stages"]["generate"]["key"])) for i in ready]
    shared = global_settings(config, list(sized.values()), lengths)
    logger.info("one network across %d series: %s", len(ready), ", ".join(f"{k} {v}" for k, v in shared.items()))
    configs = {i: config_for_series(with_fields(config, series_id=i, **shared), store,
                                    ready[i]["stages"]["generate"]["key"]) for i in ready}
    prepared = await each_series(
        list(ready), lambda i: call(prepare_series, config=configs[i], stages=ready[i]["stages"]), parallel)
    outcomes |= {i: r for i, r in prepared.items() if isinstance(r, Exception)}
    members = [i for i, r in prepared.items() if not isinstance(r, Exception)]
    if not members:
        return outcomes, None
    keys = {name: [prepared[i][name]["key"] for i in members] for name in ("generate", "normalize", "window")}
    model_stages: Stages = {}
    model = run_stage(train_global, with_fields(config, **shared), model_stages, upstream={
        "series": keys["generate"], "normalize": keys["normalize"], "window": keys["window"], "series_ids": members})
    finished = await each_series(
        members, lambda i: call(finish_series, config=configs[i], stages=prepared[i] | model_stages), parallel)
    return outcomes | finished, model


async def forecast_local(config: ForecastConfig, ids: list[str], parallel: bool) -> dict[str, Stages | Exception]:
    """One whole pipeline per series."""

    async def one(series_id: str) -> Stages | Exception:
        try:
            return await run_pipeline(with_fields(config, series_id=series_id), on_cluster=parallel)
        except Exception as error:
            return error

    if parallel:
        return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids)), strict=True))
    return {i: await one(i) for i in ids}


def chosen_scope(config: ForecastConfig, count: int) -> str:
    """`global` or `local`: the config's choice, or for `auto` global when there is more than one series."""
    return config.scope if config.scope != "auto" else "global" if count > 1 else "local"


@flow(name="lstm-forecast-many", log_prints=True)
async def forecast_many(config: ForecastConfig = DEFAULT_CONFIG, series_ids: list[str] | None = None) -> dict[
        str, Any]:
    """Each series of `config.input` (long format): one global model across them, or one model each
    (`scope`). A failed series fails alone."""
    ids = series_ids or read_series_ids(config)
    if not ids:
        raise InputError(f"the input has no column {config.id_column!r} naming its series",
                         "name the series column with --id-column, or run a single-series file as it is")
    store = Store(config.artifacts_dir)
    logger = get_run_logger()
    parallel = runs_on_cluster()
    scope = chosen_scope(config, len(ids))
    model = None
    if scope == "global":
        results, model = await forecast_global(config, ids, parallel)
    else:
        results = await forecast_local(with_fields(config, scope="local"), ids, parallel)
    outcomes: list[SeriesOutcome] = []
    details: dict[str, Any] = {}
    for series_id in ids:
        result = results[series_id]
        if isinstance(result, Exception):
            message = failure_message(result)
            logger.error("series %r failed: %s", series_id, message)
            outcomes.append(SeriesOutcome(series_id, error=message))
            details[series_id] = {"status": "failed", "error": message}
            continue
        metrics_key = result["evaluate"]["key"]
        outcomes.append(SeriesOutcome(series_id, store.read_table("evaluate", metrics_key), metrics_key))
        details[series_id] = {"status": "completed", "stages": result, "artifacts": artifact_paths(store, result)}
    completed = {i: d["stages"] for i, d in details.items() if d["status"] == "completed"}
    if completed:
        evaluations = ({model: [s["evaluate"]["key"] for s in completed.values()]} if scope == "global" and model
                       else {s["train"]["key"]: [s["evaluate"]["key"]] for s in completed.values()})
        register_models(config, evaluations)
    summary, path = await publish_summary(store, outcomes)
    logger.info("%d series, %d failed; summary %s", len(ids), int((summary["status"] == "failed").sum()), path)
    return {"flow_run_id": str(flow_run.id), "scope": scope, "model": model, "series": details, "summary": path}


