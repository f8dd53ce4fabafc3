"""Many series: a long-format input, as one global model across its series or one model per series.

Global (the default for more than one series): each series is generated and sized, the settings one
network shares are drawn from them, each series is prepared (split, normalize, window), one `train`
fits the network on every series' windows, and each series is predicted, evaluated and plotted with
it. Local (`scope: local`): one whole pipeline per series.

A global run's per-series stages run in chunks of series (`chunk_size`): one task per stage and chunk,
named after the stage, on the flow's Dask cluster when it has one. Each chunk's outputs of a stage are
written as one pack file (`Store.batched`), keyed per series as ever: editing one series recomputes its
own outputs and the model. The statistical baselines are scored on a fixed sample of a large panel's
series (`statistical_sample`) and only the series the UI shows are plotted (`plots: all` plots every one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from lstm_forecast.flows.cluster import cluster_slots, preload_keras_on_workers, runs_on_cluster
from lstm_forecast.flows.forecast import (
    DEFAULT_CONFIG,
    Stages,
    artifact_paths,
    run_pipeline,
    run_stage,
)
from lstm_forecast.tasks.core.caching import stored_output
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.defaults import global_settings, sized_config, statistical_sample, stored_facts
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.graph import (
    FINISH_STAGES,
    PREPARE_STAGES,
    STAGE,
    STAGES,
    stage_chunk_function,
    stage_task,
    stages_until,
)
from lstm_forecast.tasks.core.store import KEY_COLUMN, Store, file_digest, upstream_keys
from lstm_forecast.tasks.operations.ahead import publish_forecasts
from lstm_forecast.tasks.operations.registry import register_models
from lstm_forecast.tasks.operations.report import publish_forecast_table
from lstm_forecast.tasks.operations.summary import SeriesOutcome, publish_summary, series_to_show
from lstm_forecast.tasks.stages.generate import read_series_ids
from lstm_forecast.tasks.stages.train import train_global


class SeriesFailedError(Exception):
    """A series that failed inside a task covering several series; its message says why."""


def failure_message(error: Exception) -> str:
    if isinstance(error, InputError):
        return f"{error.problem}; fix: {error.fix}"
    return str(error) if isinstance(error, SeriesFailedError) else f"{type(error).__name__}: {error}"


def planned_inline(
    stage: str, config: ForecastConfig, stages: Stages, digest: str | None = None
) -> tuple[dict[str, str], str | None, str | None]:
    """One stage of one series as `run_stage_inline` would run it: its inputs' keys, its planned key, and
    its output's key when that is complete and up to date in the store (else None: it must run)."""
    upstream = upstream_keys(stage, {name: done["key"] for name, done in stages.items()})
    planned, output = stored_output(stage, config, upstream, digest)
    return upstream, planned, output


def run_stage_inline(stage: str, config: ForecastConfig, stages: Stages, digest: str | None = None) -> str:
    """One stage of one series inside the current task run, without a task run of its own: its output is
    reused when it is complete and up to date in the store (the check of `tasks/core/caching.py`), else its
    function computes it. Returns its key and notes it in `stages`."""
    upstream, planned, output = planned_inline(stage, config, stages, digest)
    status = "cached" if output is not None else "computed"
    if output is not None:
        key = output
    elif stage == "generate":  # generate keys its output by the series it reads
        key = stage_task(stage).fn(config=config, **upstream)
    else:
        key = stage_task(stage).fn(config=config, **upstream, key=planned)
    stages[stage] = {"key": key, "status": status}
    return key


SeriesResult = dict[str, Any]  # {"stages": ..., maybe "facts": its `series_facts`} or {"error": message}


# A panel's per-series work runs in chunks of series: one task per stage and chunk, whose outputs the store
# writes as one pack file (`Store.batched`). The bounds keep a chunk's outputs small in memory (about 50 MB
# for 500 series of a few hundred points) and the store at one file per stage and 100 series or fewer.
MIN_CHUNK_SERIES = 100
MAX_CHUNK_SERIES = 500


def chunk_size(count: int, slots: int) -> int:
    """Series per chunk for `count` series on `slots` task slots: four chunks per slot (a slow chunk does not
    hold the others up), each of `MIN_CHUNK_SERIES` to `MAX_CHUNK_SERIES` series."""
    return max(MIN_CHUNK_SERIES, min(MAX_CHUNK_SERIES, -(-count // (4 * max(1, slots)))))


def chunks(ids: list[str], size: int) -> list[list[str]]:
    """`ids` in consecutive chunks of `size` (the last one shorter)."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


@contextlib.contextmanager
def quiet_after_first() -> Iterator[Callable[[], None]]:
    """Inside a chunk, the stages of its first series log as usual and the rest only warnings and errors
    (ten thousand series must not send ten thousand metric tables to the server). Yields a function to
    call after each series."""
    logger = logging.getLogger("prefect.task_runs")
    level = logger.level
    quiet = max(level, logging.WARNING)

    def next_series() -> None:
        if logger.level != quiet:  # setting a level clears every logger's cache: once per chunk, not per series
            logger.setLevel(quiet)

    try:
        yield next_series
    finally:
        logger.setLevel(level)


def stage_of_chunk(
    stage: str, configs: dict[str, ForecastConfig], stages: dict[str, Stages], digest: str | None = None
) -> dict[str, SeriesResult]:
    """Stage `stage` of each series of a chunk (its own config, after its `stages` so far), the chunk's
    outputs written as one pack; `generate` also returns what each series' sizing reads (`facts`)."""
    store = Store(next(iter(configs.values())).artifacts_dir)
    if (run_chunk := stage_chunk_function(stage)) is not None:
        with store.batched():
            return run_whole_chunk(stage, run_chunk, configs, stages)
    results: dict[str, SeriesResult] = {}
    with store.batched(), quiet_after_first() as next_series:
        for series_id, config in configs.items():
            try:
                own = dict(stages.get(series_id, {}))
                key = run_stage_inline(stage, config, own, digest)
                results[series_id] = {"stages": own}
                if stage == "generate":
                    results[series_id]["facts"] = stored_facts(config, store, key)
            except Exception as error:  # one series failing must not stop the others
                results[series_id] = {"error": failure_message(error)}
            next_series()
    return results


def run_whole_chunk(
    stage: str, run_chunk: Callable[..., list[Exception | None]], configs: dict[str, ForecastConfig], stages: dict
) -> dict[str, SeriesResult]:
    """Stage `stage` of each series of a chunk by its chunk function (`Stage.chunk`), for the series whose
    output is not in the store already."""
    results: dict[str, SeriesResult] = {}
    pending: list[tuple[str, Stages, tuple[ForecastConfig, dict[str, str], str]]] = []
    for series_id, config in configs.items():
        own = dict(stages.get(series_id, {}))
        try:
            upstream, planned, output = planned_inline(stage, config, own)
        except Exception as error:  # one series failing must not stop the others
            results[series_id] = {"error": failure_message(error)}
            continue
        if output is not None:
            results[series_id] = {"stages": own | {stage: {"key": output, "status": "cached"}}}
        else:
            pending.append((series_id, own, (config, upstream, str(planned))))
    errors = run_chunk([work for _, _, work in pending]) if pending else []
    for (series_id, own, (_, _, planned)), error in zip(pending, errors, strict=True):
        done = {"key": planned, "status": "computed"}
        results[series_id] = {"error": failure_message(error)} if error else {"stages": own | {stage: done}}
    return {i: results[i] for i in configs}  # in the chunk's order


class ChunkSeries:
    """A chunk's series for its task: each one's config and stages so far, handed over as one plain object.

    Prefect walks a task's arguments looking for futures (twice when the flow submits it, once more when it
    runs), into every field of every config: for a chunk of 250 series that cost about as much as the stage
    itself, in the flow's one process. There are no futures in here, and Prefect does not walk into it.
    """

    __slots__ = ("configs", "stages")

    def __init__(self, configs: dict[str, ForecastConfig], stages: dict[str, Stages]) -> None:
        self.configs, self.stages = configs, stages


def stage_of_chunk_task(stage: str, series: ChunkSeries, digest: str | None = None) -> dict[str, SeriesResult]:
    """`stage_of_chunk` of the chunk `series` (the function of a chunk's task)."""
    return stage_of_chunk(stage, series.configs, series.stages, digest)


# One task per stage, named after it: a panel's run shows the stages in the UI as a single series' run does.
CHUNK_TASKS = {
    name: task(stage_of_chunk_task, name=name, result_serializer="json", cache_policy=NO_CACHE, persist_result=False)
    for name in STAGES
    if name != "train"
}


class Progress:
    """Logs how far a phase over many series is: done, rate (series/s) and time left, at most every 10 s."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done = stage, total, 0
        self.started = self.logged = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.logged < 10 and self.done < self.total:
            return
        self.logged = now
        rate = self.done / max(now - self.started, 1e-9)
        left = f", about {(self.total - self.done) / rate:.0f} s left" if self.done < self.total else ""
        get_run_logger().info("%s: %d of %d series (%.1f series/s%s)", self.stage, self.done, self.total, rate, left)


async def each_chunk(
    stage: str,
    configs: dict[str, ForecastConfig],
    stages: dict[str, Stages],
    parallel: bool,
    digest: str | None = None,
) -> dict[str, SeriesResult]:
    """Stage `stage` of every series of `configs`, one task per chunk (`chunk_size`): on the flow's Dask
    cluster when `parallel`, else one after another here."""
    ids = list(configs)
    parts = chunks(ids, chunk_size(len(ids), cluster_slots() if parallel else 1))
    progress = Progress(stage, len(ids))
    chunk_task = CHUNK_TASKS[stage]

    def arguments(chunk: list[str]) -> dict[str, Any]:
        series = ChunkSeries({i: configs[i] for i in chunk}, {i: stages[i] for i in chunk if i in stages})
        return {"stage": stage, "series": series, "digest": digest}

    results: dict[str, SeriesResult] = {}
    if not parallel:
        for chunk in parts:
            results |= chunk_task(**arguments(chunk))
            progress.add(len(chunk))
        return results
    futures = [chunk_task.submit(**arguments(chunk)) for chunk in parts]
    for future, chunk in zip(futures, parts, strict=True):
        await anyio.to_thread.run_sync(future.wait)
        results |= await future.state.aresult()
        progress.add(len(chunk))
    return results


class NotStoredError(Exception):
    """An output a run needs is not in the store, complete and up to date: the run has work to do."""


class ChunkRunner:
    """Runs a global run's stages: the per-series stages in chunk tasks (`each_chunk`), on the flow's Dask
    cluster when `parallel`, and `train_global` as a task; a series that fails drops out alone."""

    announces = True  # logs the shared settings and the statistical sample

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel

    async def stage(
        self, stage: str, configs: dict[str, ForecastConfig], stages: dict[str, Stages], digest: str | None = None
    ) -> dict[str, SeriesResult]:
        return await each_chunk(stage, configs, stages, self.parallel, digest)

    async def train(self, config: ForecastConfig, upstream: dict[str, Any]) -> Stages:
        model_stages: Stages = {}
        preloading = preload_keras_on_workers() if self.parallel else []
        run_stage(train_global, config, model_stages, upstream=upstream)
        del preloading  # done by now, on the core training left free
        return model_stages


class StoreRunner:
    """Answers a global run's stages from the store alone, in this process without a task run: each output
    by its planned key, when it is complete and up to date; `NotStoredError` at the first one that is not. A
    rerun on unchanged data then costs a store check per output, not a task run per stage and chunk."""

    announces = False

    async def stage(
        self, stage: str, configs: dict[str, ForecastConfig], stages: dict[str, Stages], digest: str | None = None
    ) -> dict[str, SeriesResult]:
        return await anyio.to_thread.run_sync(stored_stage, stage, configs, stages, digest)

    async def train(self, config: ForecastConfig, upstream: dict[str, Any]) -> Stages:
        _, model = await anyio.to_thread.run_sync(stored_output, "train", config, upstream)
        if model is None:
            raise NotStoredError("train")
        return {"train": {"key": model, "status": "cached"}}


def stored_stage(
    stage: str, configs: dict[str, ForecastConfig], stages: dict[str, Stages], digest: str | None = None
) -> dict[str, SeriesResult]:
    """Stage `stage` of each series from the store, as its chunk's task would return it (`generate` with
    each series' `series_facts`). Raises `NotStoredError` at the first output the store lacks."""
    results: dict[str, SeriesResult] = {}
    store = Store(next(iter(configs.values())).artifacts_dir) if configs else None
    for series_id, config in configs.items():
        own = dict(stages.get(series_id, {}))
        try:
            output = planned_inline(stage, config, own, digest)[2]
        except Exception as error:  # a series that cannot be planned fails in a real run, which reports it
            raise NotStoredError(stage) from error
        if output is None:
            raise NotStoredError(stage)
        results[series_id] = {"stages": own | {stage: {"key": output, "status": "cached"}}}
        if stage == "generate":
            results[series_id]["facts"] = stored_facts(config, store, output)
    return results


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
    runner: ChunkRunner | StoreRunner,
    keep_failures: ChunkFilter,
) -> tuple[dict[str, SeriesResult], dict[str, Any]]:
    """Generate each series (with what its sizing reads: `series_facts`) and draw the settings one network
    shares across them (`global_settings`); returns the generated series' results and those settings."""
    digest = file_digest(config.input) if config.input else None
    own = {i: with_fields(config, series_id=i) for i in ids}
    generated = keep_failures(await runner.stage("generate", own, {}, digest))
    if not generated:
        return generated, {}
    return generated, shared_settings(config, {i: r["facts"] for i, r in generated.items()})


def shared_settings(config: ForecastConfig, facts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings one network shares across the series whose `series_facts` are `facts` (by id)."""
    sized = [sized_config(with_fields(config, series_id=i), own) for i, own in facts.items()]
    return global_settings(config, sized, [int(own["points"]) for own in facts.values()])


def panel_configs(
    config: ForecastConfig, shared: dict[str, Any], facts: dict[str, dict[str, Any]]
) -> dict[str, ForecastConfig]:
    """Each series' config in a global run (by id): the shared settings, then its own data-sized fields
    from its `series_facts`; naive baselines outside the statistical baselines' sample."""
    sampled = statistical_sample(list(facts), config.baseline_sample, config.seed)
    return {i: sized_config(panel_config(config, shared, i, i in sampled), own) for i, own in facts.items()}


async def shared_config(config: ForecastConfig, ids: list[str]) -> ForecastConfig:
    """`config` with the settings one network shares across the series `ids` filled in (a tuning
    search's base); the series are generated as in a run (cached)."""
    failures: dict[str, Stages | Exception] = {}
    config = with_fields(config, scope="global")
    generated, shared = await generate_and_share(config, ids, ChunkRunner(runs_on_cluster()), failures_into(failures))
    if not generated:
        reasons = "; ".join(f"{i}: {failure_message(e)}" for i, e in failures.items() if isinstance(e, Exception))
        raise InputError(f"no series of {config.input} could be read ({reasons[:500]})", "fix the input file")
    return with_fields(config, **shared)


async def forecast_global(
    config: ForecastConfig, ids: list[str], parallel: bool, last_stage: str = "plot"
) -> tuple[dict[str, Stages | Exception], str | None]:
    """One network across the series `ids`; returns each series' stages (or its error) and the model key.

    One plan (`global_run`), answered first from the store alone (`StoreRunner`: a rerun on unchanged data
    runs no task), else run (`ChunkRunner`): each per-series stage as one task per chunk of series, named
    after the stage, each chunk's outputs in one pack.
    """
    config = with_fields(config, scope="global")
    with contextlib.suppress(NotStoredError):
        stages, model = await global_run(config, ids, last_stage, StoreRunner())
        get_run_logger().info(
            "all %d series and their global model are in the store, up to date: nothing to run", len(ids)
        )
        return stages, model
    return await global_run(config, ids, last_stage, ChunkRunner(parallel))


async def global_run(
    config: ForecastConfig, ids: list[str], last_stage: str, runner: ChunkRunner | StoreRunner
) -> tuple[dict[str, Stages | Exception], str | None]:
    """The plan of a global run, each stage done by `runner`: generate every series and size it, share the
    network's settings, prepare each series (split, normalize, window), train one network on them all, then
    predict, evaluate and (the series the UI shows) plot each one. Returns each series' stages (or its
    error) and the model key."""
    logger = get_run_logger()
    outcomes: dict[str, Stages | Exception] = {}
    keep_failures = failures_into(outcomes)
    generated, shared = await generate_and_share(config, ids, runner, keep_failures)
    if not generated:
        return outcomes, None
    facts = {i: r["facts"] for i, r in generated.items()}
    configs = panel_configs(config, shared, facts)
    if runner.announces:
        logger.info(
            "one network across %d series: %s", len(generated), ", ".join(f"{k} {v}" for k, v in shared.items())
        )
        sampled = sum(c.baselines != "naive" for c in configs.values())
        if sampled < len(generated) and shared["baselines"] != "naive":
            logger.info(
                "statistical baselines (AutoETS, AutoARIMA) on %d of %d series, a sample fixed by their ids and "
                "the seed (about a second per series; --baseline-sample 0 scores every series); naive and "
                "seasonal naive on every series",
                sampled,
                len(generated),
            )

    async def each_stage(stage_names: tuple[str, ...], going: dict[str, Stages]) -> dict[str, Stages]:
        for stage in stage_names:
            done = keep_failures(await runner.stage(stage, {i: configs[i] for i in going}, going))
            going = {i: result["stages"] for i, result in done.items()}
        return going

    prepared = await each_stage(PREPARE_STAGES, {i: r["stages"] for i, r in generated.items()})
    members = [i for i in ids if i in prepared]
    if not members:
        return outcomes, None
    inputs = {name: [prepared[i][stage]["key"] for i in members] for name, stage in STAGE["train"].inputs.items()}
    model_stages = await runner.train(with_fields(config, **shared), {**inputs, "series_ids": members})
    scored = stages_until(FINISH_STAGES, last_stage)
    finished = await each_stage(
        tuple(s for s in scored if s != "plot"), {i: prepared[i] | model_stages for i in members}
    )
    if "plot" in scored:
        store = Store(config.artifacts_dir)
        plotted = list(finished) if config.plots == "all" else shown_series(store, finished)
        finished |= await each_stage(("plot",), {i: finished[i] for i in plotted})
    return outcomes | {i: finished[i] for i in members if i in finished}, model_stages["train"]["key"]


def shown_series(store: Store, stages: dict[str, Stages]) -> list[str]:
    """The handful of series a run shows in the UI (`series_to_show`: the LSTM's best and worst), by
    their evaluate outputs."""
    tables = evaluate_tables(store, {i: s["evaluate"]["key"] for i, s in stages.items()})
    outcomes = [SeriesOutcome(i, tables[i]) for i in stages]
    return [outcome.series_id for outcome, _ in series_to_show(outcomes, plotted_only=False)]


# The pooled rows of the evaluate outputs the flow read last, by (store root, key): the UI's choice of series
# and the summary read the same outputs, and an output's key names its content.
_POOLED_READ: dict[tuple[str, str], pd.DataFrame] = {}


def evaluate_tables(store: Store, keys: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Series id -> its evaluate table's rows of all steps pooled (step 0: what the summary, the registry
    and the UI read), for many series at once (each pack read once; the per-step rows left out keep
    100,000 series' tables small). Outputs the last call read are not read again."""
    root = str(store.root)
    if any((root, key) not in _POOLED_READ for key in keys.values()):
        stacked = store.read_tables("evaluate", list(keys.values()), where={"step": 0})
        positions = stacked.groupby(KEY_COLUMN, observed=True).indices
        pooled = stacked.drop(columns=KEY_COLUMN)  # once, not once per series
        _POOLED_READ.clear()
        _POOLED_READ.update({(root, str(key)): pooled.iloc[rows] for key, rows in positions.items()})
    return {series_id: _POOLED_READ[(root, key)] for series_id, key in keys.items()}


def panel_config(config: ForecastConfig, shared: dict[str, Any], series_id: str, sampled: bool) -> ForecastConfig:
    """One series' config in a global run, before its own data-sized fields: the settings the network
    shares, and naive baselines only when it is outside the statistical baselines' sample."""
    own = {} if sampled or shared.get("baselines") == "naive" else {"baselines": "naive"}
    return with_fields(config, series_id=series_id, **(shared | own))


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


LOGGED_FAILURES = 5  # failed series logged one by one; the summary lists every one


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
    failures = 0
    evaluated = {i: r["evaluate"]["key"] for i, r in results.items() if not isinstance(r, Exception)}
    tables = evaluate_tables(store, evaluated)
    for series_id in ids:
        result = results[series_id]
        if isinstance(result, Exception):
            message = failure_message(result)
            failures += 1
            if failures <= LOGGED_FAILURES:
                logger.error("series %r failed: %s", series_id, message)
            outcomes.append(SeriesOutcome(series_id, error=message))
            details[series_id] = {"status": "failed", "error": message}
            continue
        metrics_key = result["evaluate"]["key"]
        plot_key = result["plot"]["key"] if "plot" in result else ""
        outcomes.append(SeriesOutcome(series_id, tables[series_id], metrics_key, "", plot_key))
        details[series_id] = {"status": "completed", "stages": result, "artifacts": artifact_paths(store, result)}
    completed = {i: d["stages"] for i, d in details.items() if d["status"] == "completed"}
    if completed and to_registry:
        evaluations = (
            {model: [s["evaluate"]["key"] for s in completed.values()]}
            if scope == "global" and model
            else {s["train"]["key"]: [s["evaluate"]["key"]] for s in completed.values()}
        )
        register_models(config, evaluations)
    forecasts = None
    if completed and to_registry and "predict" in stages_until(FINISH_STAGES, last_stage):
        predictions = {s["predict"]["key"]: [i, s["train"]["key"]] for i, s in completed.items()}
        forecasts = publish_forecasts(config, predictions)
        await publish_forecast_table(forecasts, "The forecast rows of this run, one table (every series).")
    if failures > LOGGED_FAILURES:
        logger.error("%d more series failed: the summary lists each one and its error", failures - LOGGED_FAILURES)
    summary, path = await publish_summary(store, outcomes)
    logger.info("%d series, %d failed; summary %s", len(ids), int((summary["status"] == "failed").sum()), path)
    return {
        "flow_run_id": str(flow_run.id),
        "scope": scope,
        "model": model,
        "series": details,
        "summary": path,
        "forecasts": forecasts,
    }
