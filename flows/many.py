"""Many series: a long-format input, as one global model across its series or one model per series.

Global (the default for more than one series): the plan of every run (`flows/plan.py: planned_run`) with
one network across the series, answered from the store first (`StoreRunner`), else by chunk tasks
(`ChunkRunner`). Local (`scope: local`): the same plan and runners, each series training its own
model (in chunk tasks too).

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
import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from lstm_forecast.flows.cluster import (
    cancel_futures,
    cluster_slots,
    run_on_workers,
    runs_on_cluster,
    submit_in_turn,
    take_finished,
)
from lstm_forecast.flows.forecast import DEFAULT_CONFIG, many_artifact_paths
from lstm_forecast.flows.plan import (
    BesidePlots,
    ChunkFilter,
    Outcomes,
    SeriesFailedError,
    SeriesId,
    SeriesResult,
    Stages,
    TooShortSeriesError,
    evaluated_wide,
    failed_result,
    failure_message,
    failures_into,
    generate_and_size,
    planned_inline,
    planned_run,
    run_stage,
    run_stage_inline,
    series_result,
    stored_run,
)
from lstm_forecast.tasks.core.caching import stored_output
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.graph import (
    FINISH_STAGES,
    STAGE,
    STAGES,
    Unwalked,
    stage_ahead_function,
    stage_chunk_function,
    stages_until,
)
from lstm_forecast.tasks.core.heap import collect_less_often, freeze_loaded_modules
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.ahead import named, publish_forecasts, unscored_frames
from lstm_forecast.tasks.operations.registry import register_models
from lstm_forecast.tasks.operations.report import publish_forecast_table
from lstm_forecast.tasks.operations.summary import FORECAST_ONLY, SeriesOutcome, publish_summary
from lstm_forecast.tasks.stages.generate import read_series_ids
from lstm_forecast.tasks.stages.plot import import_plotting
from lstm_forecast.tasks.stages.train import train_global, warm_up_global

# A panel's per-series work runs in chunks of series: one task per stage and chunk, whose outputs the store
# writes as one pack file (`Store.batched`). The bounds keep a chunk's outputs small in memory (about 100 MB
# for 1,000 series of a few hundred points: predict's table, every window's steps) and the store at one file
# per stage and 100 series or fewer. A task costs about 0.1 s of Prefect's own work besides its chunk (its
# context and settings sent, a client made on the worker): 500 series a chunk spent about 7 % of a 10,000
# series run's per-series stages on it (benchmarks/README.md).
MIN_CHUNK_SERIES = 100
MAX_CHUNK_SERIES = 1000


def chunk_size(count: int, slots: int, least: int = MIN_CHUNK_SERIES) -> int:
    """Series per chunk for `count` series on `slots` task slots: four chunks per slot (a slow chunk does not
    hold the others up), each of `least` to `MAX_CHUNK_SERIES` series."""
    return max(least, min(MAX_CHUNK_SERIES, -(-count // (4 * max(1, slots)))))


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
    stage: str,
    configs: dict[str, ForecastConfig],
    stages: dict[str, Stages],
    digest: str | None = None,
    ahead: dict[str, Any] | None = None,
) -> dict[str, SeriesResult]:
    """Stage `stage` of each series of a chunk (its own config, after its `stages` so far), the chunk's
    outputs written as one pack; `generate` also returns what each series' sizing reads (`facts`). `ahead`:
    by id, what the stage's `Stage.ahead` function computed for a series while the network trained."""
    freeze_loaded_modules()  # a worker's imports so far: the collector need not walk them again
    collect_less_often()
    store = Store(next(iter(configs.values())).artifacts_dir)
    if (run_chunk := stage_chunk_function(stage)) is not None:
        with store.batched():
            return run_whole_chunk(stage, run_chunk, configs, stages, store, ahead or {}, digest)
    results: dict[str, SeriesResult] = {}
    with store.batched(), quiet_after_first() as next_series:
        for series_id, config in configs.items():
            try:
                own = dict(stages.get(series_id, {}))
                run_stage_inline(stage, config, own, digest)
                results[series_id] = series_result(stage, config, own, store)
            except Exception as error:  # one series failing must not stop the others
                results[series_id] = failed_result(error)
            next_series()
    return results


def run_whole_chunk(
    stage: str,
    run_chunk: Callable[..., list[Any]],
    configs: dict[str, ForecastConfig],
    stages: dict,
    store: Store,
    ahead: dict[str, Any],
    digest: str | None = None,
) -> dict[str, SeriesResult]:
    """Stage `stage` of each series of a chunk by its chunk function (`Stage.chunk`), for the series whose
    output is not in `store` already; it also takes what was computed `ahead` for them, if anything. The
    stage that reads the input (`digest`: its file's, if known) returns each series' key and facts."""
    results: dict[str, SeriesResult] = {}
    pending: list[tuple[str, Stages, tuple[ForecastConfig, dict[str, str], str]]] = []
    first = next(iter(configs.values()))  # `store` is the first series' (`stage_of_chunk`)
    for series_id, config in configs.items():
        own = dict(stages.get(series_id, {}))
        try:
            same_store = config.artifacts_dir == first.artifacts_dir  # a panel's series share one
            upstream, planned, output = planned_inline(stage, config, own, digest, store if same_store else None)
            if output is not None:
                results[series_id] = series_result(
                    stage, config, own | {stage: {"key": output, "status": "cached"}}, store
                )
            else:
                pending.append((series_id, own, (config, upstream, str(planned))))
        except Exception as error:  # one series failing must not stop the others
            results[series_id] = failed_result(error)
    handed = {"ahead": [ahead.get(series_id) for series_id, _, _ in pending]} if ahead else {}
    outcomes = run_chunk([work for _, _, work in pending], **handed) if pending else []
    for (series_id, own, (_, _, planned)), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, Exception):
            results[series_id] = failed_result(outcome)
            continue
        key, facts = outcome if outcome is not None else (planned, None)
        results[series_id] = {"stages": own | {stage: {"key": key, "status": "computed"}}}
        if facts is not None:
            results[series_id]["facts"] = facts
    return {i: results[i] for i in configs}  # in the chunk's order


class ChunkSeries:
    """A chunk's series for its task: each one's config and stages so far, handed over as one plain object.

    Prefect walks a task's arguments looking for futures (twice when the flow submits it, once more when it
    runs), into every field of every config: for a chunk of 250 series that cost about as much as the stage
    itself, in the flow's one process. There are no futures in here, and Prefect does not walk into it.

    It is pickled once, as bytes that only the worker unpickles: Dask's scheduler, which runs in the flow's
    process beside a local cluster, unpickles every task it is sent and pickles it again for the worker; with
    a chunk's 1,000 configs that was about 18 ms of the flow process's time per task, 1.1 s over a 10,000-series
    run, against 5 ms to pickle them once.
    """

    __slots__ = ("_content", "_payload", "token")

    def __init__(
        self, configs: dict[str, ForecastConfig], stages: dict[str, Stages], ahead: dict[str, Any] | None = None
    ) -> None:
        self._content: tuple[dict[str, ForecastConfig], dict[str, Stages], dict[str, Any] | None] | None = (
            configs,
            stages,
            ahead,
        )
        self._payload: bytes | None = None
        self.token = uuid.uuid4().hex

    def __dask_tokenize__(self) -> str:
        """What Dask hashes for the task's key: without it, Dask pickles the whole chunk to hash it (about 5 s of
        the flow process's time over a 10,000-series run). Each chunk's task is its own."""
        return self.token

    def __reduce__(self) -> tuple[Callable[[bytes, str], ChunkSeries], tuple[bytes, str]]:
        if self._payload is None:
            self._payload = pickle.dumps(self._content, protocol=pickle.HIGHEST_PROTOCOL)
        return _chunk_series_of, (self._payload, self.token)

    def _unpickled(self) -> tuple[dict[str, ForecastConfig], dict[str, Stages], dict[str, Any] | None]:
        if self._content is None:
            self._content = pickle.loads(self._payload)  # noqa: S301 - the flow's own pickle of its own objects
        return self._content

    @property
    def configs(self) -> dict[str, ForecastConfig]:
        return self._unpickled()[0]

    @property
    def stages(self) -> dict[str, Stages]:
        return self._unpickled()[1]

    @property
    def ahead(self) -> dict[str, Any] | None:
        return self._unpickled()[2]


def _chunk_series_of(payload: bytes, token: str) -> ChunkSeries:
    """A `ChunkSeries` from its pickled content, left pickled until it is read."""
    series = ChunkSeries.__new__(ChunkSeries)
    series._content, series._payload, series.token = None, payload, token
    return series


def stage_of_chunk_task(stage: str, series: ChunkSeries, digest: str | None = None) -> dict[str, SeriesResult]:
    """`stage_of_chunk` of the chunk `series` (the function of a chunk's task)."""
    return stage_of_chunk(stage, series.configs, series.stages, digest, series.ahead)


# One task per stage, named after it: a panel's run shows the stages in the UI as a single series' run does.
CHUNK_TASKS = {
    name: task(stage_of_chunk_task, name=name, result_serializer="json", cache_policy=NO_CACHE, persist_result=False)
    for name in STAGES
}


class Progress:
    """Logs how far a phase over many series is: done, rate (series/s) and time left, at most every 10 s."""

    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.total, self.done = stage, total, 0
        self.started: float | None = None
        self.logged = time.monotonic()

    def start(self) -> None:
        """The phase starts now (for its rate), unless it started before."""
        if self.started is None:
            self.started = self.logged = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        self._log()

    def dropped(self, count: int) -> None:
        """`count` series of the total will not come (they failed before the phase)."""
        if count:
            self.total -= count
            self._log()

    def _log(self) -> None:
        now = time.monotonic()
        if not self.done or (now - self.logged < 10 and self.done < self.total):
            return
        self.logged = now
        rate = self.done / max(now - (self.started or now), 1e-9)
        left = f", about {(self.total - self.done) / rate:.0f} s left" if self.done < self.total else ""
        get_run_logger().info("%s: %d of %d series (%.1f series/s%s)", self.stage, self.done, self.total, rate, left)


async def each_chunk(
    names: tuple[str, ...],
    configs: dict[str, ForecastConfig],
    stages: dict[str, Stages],
    parallel: bool,
    keep: ChunkFilter,
    digest: str | None = None,
    ahead: AheadWork | None = None,
) -> dict[str, SeriesResult]:
    """Stages `names` in order of every series of `configs` (after its `stages` so far), one task per stage and
    chunk of series (`chunk_size`), each stage's results kept by `keep` (which notes the failed ones); returns
    the last stage's results of the series that came through. `ahead`: what was computed ahead for them.

    On the flow's Dask cluster (`parallel`) a chunk goes on to its next stage as soon as its last one is done:
    no stage waits for the slowest chunks of the one before while cores idle, and the cluster runs the tasks
    in the order they come (a stage's chunks before the next stage's). Else one chunk after another, here.
    """
    ids = list(configs)
    # Models of their own and plots take a second or more per series and are files of their own, not rows of
    # a pack: their chunks may be as small as one series, so that every worker trains or draws (a global run
    # plots the few series the UI shows).
    least = 1 if any(STAGE[stage].output in ("model", "image") for stage in names) else MIN_CHUNK_SERIES
    parts = chunks(ids, chunk_size(len(ids), cluster_slots() if parallel else 1, least))
    progress = {stage: Progress(stage, len(ids)) for stage in names}
    submitted = dict.fromkeys(names, 0)  # chunks handed each stage so far

    def handed(stage: str, ids: list[str]) -> dict[str, Any]:
        """Count a chunk handed to `stage` (its series `ids`); returns what was computed ahead for them."""
        submitted[stage] += 1
        return ahead.take(stage, ids, last=submitted[stage] == len(parts)) if ahead else {}

    async def through(chunk: list[str]) -> dict[str, SeriesResult]:
        results: dict[str, SeriesResult] = {}
        so_far = {i: stages[i] for i in chunk if i in stages}
        for position, stage in enumerate(names):
            progress[stage].start()
            own = handed(stage, chunk)
            series = ChunkSeries({i: configs[i] for i in chunk}, so_far, own or None)
            arguments = {"stage": stage, "series": series, "digest": digest if STAGE[stage].reads_input else None}
            if parallel:
                future = CHUNK_TASKS[stage].submit(**arguments)
                await anyio.to_thread.run_sync(future.wait)
                done = await future.state.aresult()
            else:
                done = CHUNK_TASKS[stage](**arguments)
            results = keep(done)
            so_far = {i: result["stages"] for i, result in results.items() if "stages" in result}
            progress[stage].add(len(chunk))
            for later in names[position + 1 :]:
                progress[later].dropped(len(chunk) - len(so_far))
                if not so_far:  # the chunk hands it nothing
                    handed(later, [])
            if not so_far:
                break
            chunk = list(so_far)
        return results

    if not parallel:
        return {i: r for chunk in parts for i, r in (await through(chunk)).items()}
    chains = [asyncio.ensure_future(through(chunk)) for chunk in parts]
    try:
        outcomes = await asyncio.gather(*chains)
    except BaseException:  # one chunk's failure fails the run: the others stop handing on work
        for chain in chains:
            chain.cancel()
        raise
    return {i: r for outcome in outcomes for i, r in outcome.items()}


class AheadWork:
    """The work of later stages computed on the cluster while the network trains (`submit_ahead`): each
    stage's futures, whose results (dicts by series id) the stage's chunks take as they finish."""

    def __init__(self, futures: dict[str, list[Any]]) -> None:
        self.futures = futures
        self.finished: dict[str, dict[str, Any]] = {}

    def take(self, stage: str, ids: list[str], last: bool = False) -> dict[str, Any]:
        """What was computed ahead for stage `stage` of the series `ids` and is done by now, by id. At the
        stage's `last` chunk, the work not done yet is cancelled (the chunks compute their own)."""
        finished = self.finished.setdefault(stage, {})
        for part in take_finished(self.futures.get(stage, [])):
            finished |= part
        if last:
            cancel_futures(self.futures.pop(stage, []))
            if finished:
                get_run_logger().info("%s: %d series' work done ahead, while the network trained", stage, len(finished))
        return {i: finished[i] for i in ids if i in finished}


class ChunkRunner:
    """Runs a global run's stages: the per-series stages in chunk tasks (`each_chunk`), on the flow's Dask
    cluster when `parallel`, and `train_global` as a task; a series that fails drops out alone."""

    announces = True
    keys_by_digest = True

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        self.ahead: AheadWork | None = None  # the later stages' work computed while the network trains

    async def stage(
        self, stage: str, configs: dict[str, ForecastConfig], stages: dict[str, Stages], digest: str | None
    ) -> dict[str, SeriesResult]:
        return await each_chunk((stage,), configs, stages, self.parallel, lambda results: results, digest, self.ahead)

    async def stages(
        self,
        names: tuple[str, ...],
        configs: dict[str, ForecastConfig],
        stages: dict[str, Stages],
        keep: ChunkFilter,
    ) -> dict[str, Stages]:
        going = {i: configs[i] for i in stages}
        done = await each_chunk(names, going, stages, self.parallel, keep, ahead=self.ahead)
        return {i: result["stages"] for i, result in done.items()}

    async def train(
        self, config: ForecastConfig, upstream: dict[str, Any], prepared: dict[SeriesId, tuple[ForecastConfig, Stages]]
    ) -> Stages:
        """`train_global` as a task run here, on one TensorFlow thread; meanwhile, on the cluster, one core
        computes the parts of later stages that read no model (`Stage.ahead`), for at most `AHEAD_SERIES`
        series (their results wait in this process), and the training process builds and traces the network while
        this process assembles its windows (`warm_up_global`). The workers need no Keras: predict applies the saved
        network with numpy (`inference.py`)."""
        model_stages: Stages = {}
        if stored_output("train", config, upstream)[1] is None:  # the network will train
            warm_up_global(config, upstream["series_ids"])
            if self.parallel:
                self.ahead = AheadWork(submit_ahead(prepared))
                run_on_workers(import_plotting)  # on the core the sample leaves idle
        run_stage(train_global, config, model_stages, upstream=upstream)
        return model_stages


# The most series whose ahead work (the statistical baselines: about 40 kB of forecasts each) a run keeps in
# the flow process until their stage runs; beyond them the stage computes its own as usual.
AHEAD_SERIES = 1000


def submit_ahead(prepared: dict[SeriesId, tuple[ForecastConfig, Stages]]) -> dict[str, list[Any]]:
    """Submit, one chunk after another on one core of the cluster (`submit_in_turn`), the ahead work
    (`Stage.ahead`) of each later stage for the prepared series whose configs score the statistical
    baselines (the sample the plan drew), at most `AHEAD_SERIES`; returns each stage's futures."""
    wanted = [i for i, (config, _) in prepared.items() if config.baselines != "naive"][:AHEAD_SERIES]
    submitted: dict[str, list[Any]] = {}
    for stage in FINISH_STAGES:
        if not wanted or (function := stage_ahead_function(stage)) is None:
            continue
        works = []
        for series_id in wanted:
            config, own = prepared[series_id]
            inputs = {name: own[source]["key"] for name, source in STAGE[stage].inputs.items() if source in own}
            works.append((config, inputs, series_id))
        submitted[stage] = submit_in_turn(function, chunks(works, AHEAD_CHUNK_SERIES))
    return submitted


AHEAD_CHUNK_SERIES = 10  # small: the chunks not finished when their stage starts are dropped, and it computes them


async def shared_config(config: ForecastConfig, ids: list[str]) -> ForecastConfig:
    """`config` with the settings one network shares across the series `ids` filled in (a tuning
    search's base); the series are generated as in a run (cached)."""
    failures: Outcomes = {}
    config = with_fields(config, scope="global")
    runner = ChunkRunner(runs_on_cluster())
    sized = await generate_and_size(config, list(ids), True, runner, failures_into(failures))
    if not sized.generated:
        reasons = "; ".join(f"{i}: {failure_message(e)}" for i, e in failures.items() if isinstance(e, Exception))
        raise InputError(f"no series of {config.input} could be read ({reasons[:500]})", "fix the input file")
    return with_fields(config, **sized.shared)


async def forecast_panel(
    config: ForecastConfig,
    ids: list[str],
    global_model: bool,
    parallel: bool,
    last_stage: str = "plot",
    beside_plots: BesidePlots | None = None,
) -> tuple[Outcomes, str | None]:
    """Every series of `ids`: one network across them (`global_model`), or each series' own. Returns each
    series' stages (or its error) and the global model's key (None for models of their own).

    The plan of every run (`planned_run`), answered first from the store alone (`StoreRunner`: a rerun on
    unchanged data runs no task), else run (`ChunkRunner`): each per-series stage, a local panel's training
    included, as one task per chunk of series, named after the stage, each chunk's tables in one pack.
    `beside_plots` gets the outcomes up to the stage before plot, while the plots are drawn (after them when
    the store answers the run).
    """
    config = with_fields(config, scope="global" if global_model else "local")
    series: list[SeriesId] = list(ids)
    stored = await stored_run(config, series, global_model, last_stage, trains_here=global_model or not parallel)
    if stored is None:
        return await planned_run(config, series, global_model, last_stage, ChunkRunner(parallel), beside_plots)
    what = "and their global model are" if global_model else "and their models are"
    get_run_logger().info("all %d series %s in the store, up to date: nothing to run", len(ids), what)
    if beside_plots is not None:
        beside_plots(*stored)
    return stored


LOGGED_FAILURES = 5  # failed series logged one by one; the summary lists every one


class PanelPublication:
    """What a panel run publishes from its series' outputs up to evaluate, done while the plots are drawn (a
    `BesidePlots`): the series too short to be scored that the global model forecasts (`unscored`) or cannot
    (`failed`), the test metrics (`wide`: one row per series) and artifact paths of the others, their models
    entered in the registry and the run's forecast table (`forecasts`, its path)."""

    def __init__(self, config: ForecastConfig, ids: list[str], scope: str, to_registry: bool, last_stage: str) -> None:
        self.config, self.ids, self.scope = config, ids, scope
        self.to_registry, self.last_stage = to_registry, last_stage
        self.unscored: dict[str, Any] = {}
        self.failed: dict[str, Exception] = {}
        self.wide: Any = None  # `evaluated_wide` of the series scored
        self.artifacts: dict[str, dict[str, str]] = {}
        self.forecasts: str | None = None

    def __call__(self, results: Outcomes, model: str | None) -> None:
        config, store = self.config, Store(self.config.artifacts_dir)
        forecasts_wanted = self.to_registry and "predict" in stages_until(FINISH_STAGES, self.last_stage)
        too_short = [i for i in self.ids if isinstance(results[i], TooShortSeriesError)]
        if model and too_short and forecasts_wanted:
            self.unscored, unforecastable = unscored_frames(config, model, too_short)
            for series_id, why in unforecastable.items():
                self.failed[series_id] = SeriesFailedError(f"{failure_message(results[series_id])}; {why}")
            get_run_logger().warning(
                "%d series too short for a test split of their own, or constant before it: forecast by the global "
                "model and not scored (status '%s' in the summary)",
                len(self.unscored),
                FORECAST_ONLY,
            )
        completed = {i: results[i] for i in self.ids if not isinstance(results[i], Exception)}
        self.wide = evaluated_wide(store, {i: r["evaluate"]["key"] for i, r in completed.items()})
        self.artifacts = many_artifact_paths(store, completed)
        if completed and self.to_registry:
            evaluations = (
                {model: [s["evaluate"]["key"] for s in completed.values()]}
                if self.scope == "global" and model
                else {s["train"]["key"]: [s["evaluate"]["key"]] for s in completed.values()}
            )
            register_models(config, Unwalked(evaluations))
        if completed and forecasts_wanted:
            predictions = {
                s["predict"]["key"]: [i, s["train"]["key"], s["evaluate"]["key"]] for i, s in completed.items()
            }
            unscored = (model, self.unscored) if self.unscored else None
            self.forecasts = publish_forecasts(config, Unwalked(predictions), self.scope == "global", unscored)


class SeriesDetails(Unwalked):
    """A panel run's details of each series (status, stages, artifacts), by id, that Prefect does not walk
    (`Unwalked`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SeriesDetails({len(self)} series)"


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
    published = PanelPublication(config, ids, scope, to_registry, last_stage)
    results, model = await forecast_panel(config, ids, scope == "global", parallel, last_stage, published)
    results |= published.failed  # too short for a test split, and not forecast by the global model either
    unscored = published.unscored
    outcomes: list[SeriesOutcome] = []
    details: dict[str, Any] = {}
    failures = 0
    left_out: list[str] = []  # too short to be scored (or constant), in a run that publishes no forecast
    drawn = {i: {"plot": r["plot"]} for i, r in results.items() if not isinstance(r, Exception) and "plot" in r}
    plot_paths = many_artifact_paths(store, drawn)  # drawn after `published` looked up the other paths
    for series_id in ids:
        result = results[series_id]
        if series_id in unscored:
            message = failure_message(result)
            outcomes.append(SeriesOutcome(series_id, error=message, forecast_only=True))
            details[series_id] = {"status": FORECAST_ONLY, "reason": message}
            continue
        if isinstance(result, TooShortSeriesError) and model and not to_registry:
            left_out.append(series_id)  # a backtest fold or a tuning trial: no forecast to publish them in
            outcomes.append(SeriesOutcome(series_id, error=failure_message(result)))
            details[series_id] = {"status": "failed", "error": failure_message(result)}
            continue
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
        outcomes.append(SeriesOutcome(series_id, None, metrics_key, "", plot_key))  # its metrics: `published.wide`
        artifacts = published.artifacts[series_id] | plot_paths.get(series_id, {})
        details[series_id] = {"status": "completed", "stages": result, "artifacts": artifacts}
    forecasts = published.forecasts
    if forecasts is not None:
        await publish_forecast_table(forecasts, "The forecast rows of this run, one table (every series).")
    if left_out:
        logger.warning(
            "%d series too short for a test split of their own, or constant before it, are left out of this run, "
            "which publishes no forecast (%s)",
            len(left_out),
            named(left_out),
        )
    if failures > LOGGED_FAILURES:
        logger.error("%d more series failed: the summary lists each one and its error", failures - LOGGED_FAILURES)
    summary, path = await publish_summary(store, outcomes, published.wide)
    logger.info(
        "%d series, %d failed, %d forecast only; summary %s",
        len(ids),
        int((summary["status"] == "failed").sum()),
        len(unscored),
        path,
    )
    return {
        "flow_run_id": str(flow_run.id),
        "scope": scope,
        "model": model,
        "series": SeriesDetails(details),
        "summary": path,
        "forecasts": forecasts,
    }
