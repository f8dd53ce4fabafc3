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

from lstm_forecast.flows.cluster import cluster_slots, runs_on_cluster
from lstm_forecast.flows.forecast import (
    DEFAULT_CONFIG,
    Stages,
    artifact_paths,
    run_pipeline,
    run_stage,
)
from lstm_forecast.tasks.core.caching import stored_output
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.defaults import adapt_config, config_for_series, global_settings
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.graph import FINISH_STAGES, PREPARE_STAGES, stage_task, stages_until
from lstm_forecast.tasks.core.store import Store, file_digest, planned_key, stage_key, upstream_keys
from lstm_forecast.tasks.operations.registry import register_models
from lstm_forecast.tasks.operations.summary import SeriesOutcome, publish_summary
from lstm_forecast.tasks.stages.generate import read_series_ids
from lstm_forecast.tasks.stages.train import train_global


class SeriesFailedError(Exception):
    """A series that failed inside a task covering several series; its message says why."""


def failure_message(error: Exception) -> str:
    if isinstance(error, InputError):
        return f"{error.problem}; fix: {error.fix}"
    return str(error) if isinstance(error, SeriesFailedError) else f"{type(error).__name__}: {error}"


def run_stage_inline(stage: str, config: ForecastConfig, stages: Stages, digest: str | None = None) -> str:
    """One stage of one series inside the current task run, without a task run of its own: its output is
    reused when it is complete and up to date in the store (the check of `tasks/core/caching.py`), else its
    function computes it. Returns its key and notes it in `stages`."""
    upstream = upstream_keys(stage, {name: done["key"] for name, done in stages.items()})
    planned, output = stored_output(stage, config, upstream, digest)
    status = "cached" if output is not None else "computed"
    if output is not None:
        key = output
    elif stage == "generate":  # generate keys its output by the series it reads
        key = stage_task(stage).fn(config=config, **upstream)
    else:
        key = stage_task(stage).fn(config=config, **upstream, key=planned)
    stages[stage] = {"key": key, "status": status}
    return key


SeriesResult = dict[str, Any]  # {"stages": ..., maybe "sized": config as JSON} or {"error": message}


def each_in_chunk(ids: list[str], work: Callable[[str], SeriesResult]) -> dict[str, SeriesResult]:
    """`work(series_id)` for each id in turn; a series that fails keeps its error message (it fails alone)."""
    results: dict[str, SeriesResult] = {}
    for series_id in ids:
        try:
            results[series_id] = work(series_id)
        except Exception as error:  # one series failing must not stop the others
            results[series_id] = {"error": failure_message(error)}
    return results


@task(name="generate-series", result_serializer="json")
def generate_chunk(config: ForecastConfig, ids: list[str]) -> dict[str, SeriesResult]:
    """generate each series of `ids` and size its own settings (its sized config, as JSON)."""
    store = Store(config.artifacts_dir)
    digest = file_digest(config.input) if config.input else None

    def one(series_id: str) -> SeriesResult:
        stages: Stages = {}
        own = with_fields(config, series_id=series_id)
        series = run_stage_inline("generate", own, stages, digest)
        return {"stages": stages, "sized": config_for_series(own, store, series).model_dump(mode="json")}

    return each_in_chunk(ids, one)


def run_each(
    configs: dict[str, ForecastConfig], stages: dict[str, Stages], stage_names: tuple[str, ...]
) -> dict[str, SeriesResult]:
    """`stage_names` in order for each series (its own config, after its `stages` so far); their stages."""

    def one(series_id: str) -> SeriesResult:
        own = dict(stages[series_id])
        for stage in stage_names:
            run_stage_inline(stage, configs[series_id], own)
        return {"stages": own}

    return each_in_chunk(list(configs), one)


@task(name="prepare-series", result_serializer="json")
def prepare_chunk(configs: dict[str, ForecastConfig], stages: dict[str, Stages]) -> dict[str, SeriesResult]:
    """split, normalize and window of each generated series (its own config); their stages so far."""
    return run_each(configs, stages, PREPARE_STAGES)


@task(name="finish-series", result_serializer="json")
def finish_chunk(
    configs: dict[str, ForecastConfig], stages: dict[str, Stages], last_stage: str = "plot"
) -> dict[str, SeriesResult]:
    """predict, evaluate (and plot) of each prepared series with the global model (`stages[id]["train"]`)."""
    return run_each(configs, stages, stages_until(FINISH_STAGES, last_stage))


def chunks(ids: list[str], count: int) -> list[list[str]]:
    """`ids` in `count` (or fewer) consecutive chunks of nearly equal size."""
    count = max(1, min(count, len(ids)))
    size = -(-len(ids) // count)
    return [ids[start : start + size] for start in range(0, len(ids), size)]


async def each_chunk(ids: list[str], work: Callable[[list[str]], Any], parallel: bool) -> dict[str, SeriesResult]:
    """`work(chunk)` for chunks of `ids`: on the cluster, four chunks per worker thread at once (so a slow
    chunk does not hold the others up); here, chunks of `SERIES_PER_TASK` in turn."""
    if not parallel:
        results: dict[str, SeriesResult] = {}
        for chunk in chunks(ids, -(-len(ids) // SERIES_PER_TASK)):
            results |= work(chunk)
        return results
    futures = [work(chunk) for chunk in chunks(ids, 4 * cluster_slots())]
    merged: dict[str, SeriesResult] = {}
    for future in futures:
        await anyio.to_thread.run_sync(future.wait)
        merged |= await future.state.aresult()
    return merged


SERIES_PER_TASK = 100  # in process, a phase's task runs cover this many series each (progress in the UI)


def stored_global_run(
    config: ForecastConfig, ids: list[str], last_stage: str = "plot"
) -> tuple[dict[str, Stages], str] | None:
    """Each series' stages and the model key of a global run whose every output is already in the store
    and up to date, keyed as the stages would key them (`STAGE_TABLE`); None if anything is missing.

    A rerun on unchanged data then costs a store check per output instead of a Prefect task run per
    stage and series.
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
    configs = {
        i: adapt_config(with_fields(config, series_id=i, **shared), frames[i]["ds"], frames[i]["y"].to_numpy())
        for i in ids
    }
    for series_id in ids:
        for stage in PREPARE_STAGES:
            keys[series_id][stage] = planned_key(stage, configs[series_id], keys[series_id])
    model = stage_key(
        "train",
        with_fields(config, **shared),
        {
            "series": [keys[i]["generate"] for i in ids],
            "normalize": [keys[i]["normalize"] for i in ids],
            "window": [keys[i]["window"] for i in ids],
            "series_ids": ids,
        },
    )
    for series_id in ids:
        keys[series_id]["train"] = model
        for stage in stages_until(FINISH_STAGES, last_stage):
            keys[series_id][stage] = planned_key(stage, configs[series_id], keys[series_id])
    for series_keys in keys.values():
        for stage, key in series_keys.items():
            inputs = (
                {
                    name: [k[name if name != "series" else "generate"] for k in keys.values()]
                    for name in ("series", "normalize", "window")
                }
                if stage == "train"
                else upstream_keys(stage, series_keys)
            )
            if not store.is_complete(stage, key) or store.is_older_than_inputs(stage, key, inputs):
                return None
    return {i: {stage: {"key": key, "status": "cached"} for stage, key in keys[i].items()} for i in ids}, model


def call(task_function: Any, parallel: bool, **arguments: Any) -> Any:
    """A chunk task: submitted to the flow's Dask task runner when `parallel`, else run here."""
    return task_function.submit(**arguments) if parallel else task_function(**arguments)


ChunkFilter = Callable[[dict[str, SeriesResult]], dict[str, SeriesResult]]


def failures_into(outcomes: dict[str, Stages | Exception]) -> ChunkFilter:
    """A filter of chunk results that notes each failed series' error in `outcomes` and keeps the rest."""

    def keep_failures(results: dict[str, SeriesResult]) -> dict[str, SeriesResult]:
        for series_id, result in results.items():
            if "error" in result:
                outcomes[series_id] = SeriesFailedError(result["error"])
        return {i: r for i, r in results.items() if "error" not in r}

    return keep_failures


async def generate_and_share(
    config: ForecastConfig,
    ids: list[str],
    parallel: bool,
    keep_failures: ChunkFilter,
) -> tuple[dict[str, SeriesResult], dict[str, Any]]:
    """Generate each series (its own sized config) and draw the settings one network shares across them
    (`global_settings`); returns the generated series' results and those settings."""
    generated = keep_failures(
        await each_chunk(ids, lambda chunk: call(generate_chunk, parallel, config=config, ids=chunk), parallel)
    )
    if not generated:
        return generated, {}
    store = Store(config.artifacts_dir)
    sized = [ForecastConfig.model_validate(r["sized"]) for r in generated.values()]
    lengths = [len(store.read_table("generate", generated[i]["stages"]["generate"]["key"])) for i in generated]
    return generated, global_settings(config, sized, lengths)


async def shared_config(config: ForecastConfig, ids: list[str]) -> ForecastConfig:
    """`config` with the settings one network shares across the series `ids` filled in (a tuning
    search's base); the series are generated as in a run (cached)."""
    failures: dict[str, Stages | Exception] = {}
    config = with_fields(config, scope="global")
    generated, shared = await generate_and_share(config, ids, runs_on_cluster(), failures_into(failures))
    if not generated:
        reasons = "; ".join(f"{i}: {failure_message(e)}" for i, e in failures.items() if isinstance(e, Exception))
        raise InputError(f"no series of {config.input} could be read ({reasons[:500]})", "fix the input file")
    return with_fields(config, **shared)


async def forecast_global(
    config: ForecastConfig, ids: list[str], parallel: bool, last_stage: str = "plot"
) -> tuple[dict[str, Stages | Exception], str | None]:
    """One network across the series `ids`; returns each series' stages (or its error) and the model key.

    The per-series stages run in a task per phase and chunk of series (`generate-series`,
    `prepare-series`, `finish-series`), each stage inside it without a task run of its own: a task
    run costs more than most of these stages (benchmarks/README.md has the measurements).
    """
    logger = get_run_logger()
    config = with_fields(config, scope="global")
    stored = await anyio.to_thread.run_sync(stored_global_run, config, ids, last_stage)
    if stored is not None:
        logger.info("all %d series and their global model are in the store, up to date: nothing to run", len(ids))
        stages, model = stored
        return dict(stages), model

    outcomes: dict[str, Stages | Exception] = {}
    keep_failures = failures_into(outcomes)
    generated, shared = await generate_and_share(config, ids, parallel, keep_failures)
    if not generated:
        return outcomes, None
    logger.info("one network across %d series: %s", len(generated), ", ".join(f"{k} {v}" for k, v in shared.items()))
    store = Store(config.artifacts_dir)
    configs = {
        i: config_for_series(
            with_fields(config, series_id=i, **shared), store, generated[i]["stages"]["generate"]["key"]
        )
        for i in generated
    }
    prepared = keep_failures(
        await each_chunk(
            list(generated),
            lambda chunk: call(
                prepare_chunk,
                parallel,
                configs={i: configs[i] for i in chunk},
                stages={i: generated[i]["stages"] for i in chunk},
            ),
            parallel,
        )
    )
    members = [i for i in ids if i in prepared]
    if not members:
        return outcomes, None
    keys = {name: [prepared[i]["stages"][name]["key"] for i in members] for name in ("generate", "normalize", "window")}
    model_stages: Stages = {}
    model = run_stage(
        train_global,
        with_fields(config, **shared),
        model_stages,
        upstream={
            "series": keys["generate"],
            "normalize": keys["normalize"],
            "window": keys["window"],
            "series_ids": members,
        },
    )
    finished = keep_failures(
        await each_chunk(
            members,
            lambda chunk: call(
                finish_chunk,
                parallel,
                configs={i: configs[i] for i in chunk},
                stages={i: prepared[i]["stages"] | model_stages for i in chunk},
                last_stage=last_stage,
            ),
            parallel,
        )
    )
    return outcomes | {i: finished[i]["stages"] for i in members if i in finished}, model


async def forecast_local(
    config: ForecastConfig, ids: list[str], parallel: bool, last_stage: str = "plot"
) -> dict[str, Stages | Exception]:
    """One whole pipeline per series."""

    async def one(series_id: str) -> Stages | Exception:
        try:
            return await run_pipeline(with_fields(config, series_id=series_id), parallel, last_stage)
        except Exception as error:
            return error

    if parallel:
        return dict(zip(ids, await asyncio.gather(*(one(i) for i in ids)), strict=True))
    return {i: await one(i) for i in ids}


def chosen_scope(config: ForecastConfig, count: int) -> str:
    """`global` or `local`: the config's choice, or for `auto` global when there is more than one series."""
    return config.scope if config.scope != "auto" else "global" if count > 1 else "local"


@flow(name="lstm-forecast-many", log_prints=True)
async def forecast_many(
    config: ForecastConfig = DEFAULT_CONFIG,
    series_ids: list[str] | None = None,
    last_stage: str = "plot",
    to_registry: bool = True,
) -> dict[str, Any]:
    """Each series of `config.input` (long format): one global model across them, or one model each
    (`scope`). A failed series fails alone. Tuning trials stop after `evaluate` and, as backtest folds,
    are not entered `to_registry`."""
    ids = series_ids or read_series_ids(config)
    if not ids:
        raise InputError(
            f"the input has no column {config.id_column!r} naming its series",
            "name the series column with --id-column, or run a single-series file as it is",
        )
    store = Store(config.artifacts_dir)
    logger = get_run_logger()
    parallel = runs_on_cluster()
    scope = chosen_scope(config, len(ids))
    model = None
    if scope == "global":
        results, model = await forecast_global(config, ids, parallel, last_stage)
    else:
        results = await forecast_local(with_fields(config, scope="local"), ids, parallel, last_stage)
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
        plot_key = result["plot"]["key"] if "plot" in result else ""
        outcomes.append(SeriesOutcome(series_id, store.read_table("evaluate", metrics_key), metrics_key, "", plot_key))
        details[series_id] = {"status": "completed", "stages": result, "artifacts": artifact_paths(store, result)}
    completed = {i: d["stages"] for i, d in details.items() if d["status"] == "completed"}
    if completed and to_registry:
        evaluations = (
            {model: [s["evaluate"]["key"] for s in completed.values()]}
            if scope == "global" and model
            else {s["train"]["key"]: [s["evaluate"]["key"]] for s in completed.values()}
        )
        register_models(config, evaluations)
    summary, path = await publish_summary(store, outcomes)
    logger.info("%d series, %d failed; summary %s", len(ids), int((summary["status"] == "failed").sum()), path)
    return {"flow_run_id": str(flow_run.id), "scope": scope, "model": model, "series": details, "summary": path}
