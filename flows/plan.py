"""The one plan of a run, for a single series or many: the order of the stages written once.

`planned_run` generates each series and sizes it from what generate stored with it (`series_facts`),
prepares each series (split, normalize, window), trains (one network across every series, or one per
series), then predicts, evaluates and plots. A runner does each step:

- `TaskRunner`: each stage of each series as a task run of its own, here, with Prefect's cache and
  retries (a single series: a run, a tuning trial, a backtest fold); the first failure raises.
- `StoreRunner` (flows/many.py uses it first for a panel): every output from the store alone, no task run;
  `NotStoredError` at the first one missing.
- `ChunkRunner` (flows/many.py): one task per stage and chunk of series; a failed series drops out alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio.to_thread
import numpy as np
import pandas as pd
from prefect import get_run_logger

from lstm_forecast.tasks.core.caching import stored_output, with_store_cache
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields, with_same_fields, with_series_ids
from lstm_forecast.tasks.core.defaults import (
    describe_adapted,
    global_settings,
    sized_config,
    statistical_sample,
    stored_facts,
)
from lstm_forecast.tasks.core.errors import ConstantSeriesError, InputError, TooShortError
from lstm_forecast.tasks.core.graph import (
    FINISH_STAGES,
    PREPARE_STAGES,
    STAGE,
    STAGES,
    UnwalkedList,
    stage_task,
    stages_until,
)
from lstm_forecast.tasks.core.store import KEY_COLUMN, Store, file_digest, stage_key, upstream_keys
from lstm_forecast.tasks.core.training_process import start_training_process
from lstm_forecast.tasks.operations.summary import ID, shown_by_mase, wide_test_metrics
from lstm_forecast.tasks.stages.evaluate import pooled_test_metrics

Stages = dict[str, dict[str, str]]  # stage name -> its key and status (computed or cached)
SeriesResult = dict[str, Any]  # {"stages": ..., maybe "facts": its `series_facts`} or `failed_result`
SeriesId = str | None  # None: the one series of a single-series input


class SeriesFailedError(Exception):
    """A series that failed inside a task covering several series; its message says why."""


class TooShortSeriesError(SeriesFailedError):
    """A series of a panel too short for a test split and windows of its own (`TooShortError`), or constant
    before it (`ConstantSeriesError`): one network across the panel still forecasts it, unscored."""


class NotStoredError(Exception):
    """An output a run needs (of stage `stage`) is not in the store, complete and up to date: the run has work
    to do."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


# The stages whose output missing from the store means the run will train a network: theirs, or train's own.
TRAINED_FROM: tuple[str, ...] = STAGES[: STAGES.index("train") + 1]


def failure_message(error: Exception) -> str:
    if isinstance(error, InputError):
        return f"{error.problem}; fix: {error.fix}"
    return str(error) if isinstance(error, SeriesFailedError) else f"{type(error).__name__}: {error}"


def failed_result(error: Exception) -> SeriesResult:
    """A series' result when a stage failed for it: the message, and whether the series is only too short (or
    constant) to be scored."""
    too_short = isinstance(error, TooShortError | ConstantSeriesError | TooShortSeriesError)
    return {"error": failure_message(error), **({"too_short": True} if too_short else {})}


def series_result(stage: str, config: ForecastConfig, stages: Stages, store: Store) -> SeriesResult:
    """A series' result after stage `stage` (its `stages` so far, `stage` included): the stage that reads the
    input also returns what the series' sizing reads (its `series_facts`, stored with it)."""
    if not STAGE[stage].reads_input:
        return {"stages": stages}
    return {"stages": stages, "facts": stored_facts(config, store, stages[stage]["key"])}


class Runner(Protocol):
    """Does a run's steps for `planned_run`."""

    announces: bool  # logs the settings it sized and the statistical sample
    keys_by_digest: bool  # reads an input file's digest once for all its series' generate keys

    async def stage(
        self, stage: str, configs: dict[SeriesId, ForecastConfig], stages: dict[SeriesId, Stages], digest: str | None
    ) -> dict[SeriesId, SeriesResult]:
        """Stage `stage` of each series of `configs`, after its `stages` so far (`generate`: with its facts)."""
        ...

    async def stages(
        self,
        names: tuple[str, ...],
        configs: dict[SeriesId, ForecastConfig],
        stages: dict[SeriesId, Stages],
        keep: ChunkFilter,
    ) -> dict[SeriesId, Stages]:
        """Stages `names` in order for each series of `stages` (its stages so far), each stage's results kept by
        `keep` (which notes the failed ones); returns the stages of each series that came through."""
        ...

    async def train(
        self, config: ForecastConfig, upstream: dict[str, Any], prepared: dict[SeriesId, tuple[ForecastConfig, Stages]]
    ) -> Stages:
        """The one network of a global run, from its members' outputs `upstream` (each member's config and
        stages so far: `prepared`)."""
        ...


def run_stage(stage: str | Any, config: ForecastConfig, stages: Stages, upstream: dict[str, Any] | None = None) -> str:
    """Run one stage (by name, or a task of its own such as `train_global`) as a task run, cached in the
    store, in this process; note it in `stages` and return its key.

    Its inputs are the keys in `stages` of the stages its `STAGE_TABLE` entry names, unless `upstream` gives them.
    Raises:
        the stage's error if it failed.
    """
    task_ = stage_task(stage) if isinstance(stage, str) else stage
    if upstream is None:
        upstream = upstream_keys(task_.name, {name: done["key"] for name, done in stages.items()})
    arguments: dict[str, Any] = {  # a global model's lists of keys, unwalked by Prefect (keyed before)
        name: UnwalkedList(value) if isinstance(value, list) else value for name, value in upstream.items()
    }
    if not STAGE[task_.name].reads_input:
        arguments["key"] = stage_key(task_.name, config, upstream)  # computed once: the cache policy reuses it
    state = with_store_cache(task_, config)(config=config, **arguments, return_state=True)
    key = state.result(_sync=True)
    stages[task_.name] = {"key": key, "status": "cached" if state.name == "Cached" else "computed"}
    return key


class StagesInTurn:
    """A runner whose `stages` are run one after another (its `stage`), each for every series still going."""

    async def stages(
        self: Runner,
        names: tuple[str, ...],
        configs: dict[SeriesId, ForecastConfig],
        stages: dict[SeriesId, Stages],
        keep: ChunkFilter,
    ) -> dict[SeriesId, Stages]:
        going = stages
        for stage in names:
            done = keep(await self.stage(stage, {i: configs[i] for i in going}, going, None))
            going = {i: result["stages"] for i, result in done.items()}
        return going


class TaskRunner(StagesInTurn):
    """Each stage of each series as a task run of its own (`run_stage`), in this process: Prefect's cache,
    retries and states per stage, as the UI shows a single series' run. The first failure raises."""

    announces = True
    keys_by_digest = False

    async def stage(
        self, stage: str, configs: dict[SeriesId, ForecastConfig], stages: dict[SeriesId, Stages], digest: str | None
    ) -> dict[SeriesId, SeriesResult]:
        results: dict[SeriesId, SeriesResult] = {}
        for series_id, config in configs.items():
            own = dict(stages.get(series_id, {}))
            run_stage(stage, config, own)
            results[series_id] = series_result(stage, config, own, Store(config.artifacts_dir))
        return results

    async def train(
        self, config: ForecastConfig, upstream: dict[str, Any], prepared: dict[SeriesId, tuple[ForecastConfig, Stages]]
    ) -> Stages:
        from lstm_forecast.tasks.stages.train import train_global

        model_stages: Stages = {}
        run_stage(train_global, config, model_stages, upstream=upstream)
        return model_stages


def planned_inline(
    stage: str, config: ForecastConfig, stages: Stages, digest: str | None = None, store: Store | None = None
) -> tuple[dict[str, str], str | None, str | None]:
    """One stage of one series without a task run of its own: its inputs' keys, its planned key, and its
    output's key when that is complete and up to date in the store (else None: it must run). `store`:
    `config`'s, when the caller holds it."""
    upstream = upstream_keys(stage, {name: done["key"] for name, done in stages.items()})
    planned, output = stored_output(stage, config, upstream, digest, store=store)
    return upstream, planned, output


class StoreRunner(StagesInTurn):
    """Answers a run's stages from the store alone, in this process without a task run: each output by its
    planned key, when it is complete and up to date; `NotStoredError` at the first one that is not. A rerun
    on unchanged data then costs a store check per output, not a task run per stage and chunk."""

    announces = False
    keys_by_digest = True

    async def stage(
        self, stage: str, configs: dict[SeriesId, ForecastConfig], stages: dict[SeriesId, Stages], digest: str | None
    ) -> dict[SeriesId, SeriesResult]:
        return await anyio.to_thread.run_sync(stored_stage, stage, configs, stages, digest)

    async def train(
        self, config: ForecastConfig, upstream: dict[str, Any], prepared: dict[SeriesId, tuple[ForecastConfig, Stages]]
    ) -> Stages:
        _, model = await anyio.to_thread.run_sync(stored_output, "train", config, upstream)
        if model is None:
            raise NotStoredError("train")
        return {"train": {"key": model, "status": "cached"}}


def run_stage_inline(stage: str, config: ForecastConfig, stages: Stages, digest: str | None = None) -> str:
    """One stage of one series inside the current task run, without a task run of its own: its output is
    reused when it is complete and up to date in the store (the check of `tasks/core/caching.py`), else its
    function computes it. Returns its key and notes it in `stages`."""
    upstream, planned, output = planned_inline(stage, config, stages, digest)
    status = "cached" if output is not None else "computed"
    if output is not None:
        key = output
    elif STAGE[stage].reads_input:  # it keys its output by the series it reads
        key = stage_task(stage).fn(config=config, **upstream)
    else:
        key = stage_task(stage).fn(config=config, **upstream, key=planned)
    stages[stage] = {"key": key, "status": status}
    return key


# A rerun runs again, in its own process, the stages before training of the series whose output is missing,
# when they are at most this share of the panel (or this many): a series that fails on its own data (too short
# to be scored, constant) stores nothing, and would otherwise send every rerun of its panel through the chunk
# tasks. Those stages read no network.
REREAD_STAGES = ("generate", *PREPARE_STAGES)
REREAD_SHARE, REREAD_LEAST = 0.1, 100


def stored_stage(
    stage: str, configs: dict[SeriesId, ForecastConfig], stages: dict[SeriesId, Stages], digest: str | None = None
) -> dict[SeriesId, SeriesResult]:
    """Stage `stage` of each series from the store, as its chunk's task would return it (`generate` with
    each series' `series_facts`). The few missing outputs of a stage before training are run again here
    (`failed_again`); any other missing output raises `NotStoredError`."""
    results: dict[SeriesId, SeriesResult] = {}
    if not configs:
        return results
    store = Store(next(iter(configs.values())).artifacts_dir)
    missing: list[SeriesId] = []
    for series_id, config in configs.items():
        own = dict(stages.get(series_id, {}))
        try:
            output = planned_inline(stage, config, own, digest)[2]
        except Exception as error:  # a series that cannot be planned fails in a real run, which reports it
            raise NotStoredError(stage) from error
        if output is None:
            if stage not in REREAD_STAGES or len(missing) >= max(REREAD_LEAST, REREAD_SHARE * len(configs)):
                raise NotStoredError(stage)
            missing.append(series_id)
            continue
        own[stage] = {"key": output, "status": "cached"}
        results[series_id] = series_result(stage, config, own, store)
    if missing and not results:  # none stored: a new panel, or a new config
        raise NotStoredError(stage)
    results |= failed_again(stage, {i: configs[i] for i in missing}, stages, digest)
    return {i: results[i] for i in configs}


def failed_again(
    stage: str, configs: dict[SeriesId, ForecastConfig], stages: dict[SeriesId, Stages], digest: str | None = None
) -> dict[SeriesId, SeriesResult]:
    """Stage `stage` of series whose output is not stored (after their `stages` so far), run here, when each
    one fails on its own data as its chunk's task would fail it (`failed_result`); `NotStoredError` at the first
    that does not fail: its output is new, and the run has work to do."""
    results: dict[SeriesId, SeriesResult] = {}
    if not configs:
        return results
    # A series that does not fail raises out of the batch, and what it wrote is not kept: its chunk's task
    # writes it in its pack.
    with Store(next(iter(configs.values())).artifacts_dir).batched():
        for series_id, config in configs.items():
            try:
                run_stage_inline(stage, config, dict(stages.get(series_id, {})), digest)
            except InputError as error:  # its data's own fault: a chunk task would fail it the same way
                results[series_id] = failed_result(error)
                continue
            except Exception as error:
                raise NotStoredError(stage) from error
            raise NotStoredError(stage)
    return results


ChunkFilter = Callable[[dict[SeriesId, SeriesResult]], dict[SeriesId, SeriesResult]]
Outcomes = dict[SeriesId, Stages | Exception]  # each series' stages, or why it failed


def failures_into(outcomes: Outcomes) -> ChunkFilter:
    """A filter of a stage's results that notes each failed series' error in `outcomes` and keeps the rest."""

    def keep_failures(results: dict[SeriesId, SeriesResult]) -> dict[SeriesId, SeriesResult]:
        for series_id, result in results.items():
            if "error" in result:
                failed = TooShortSeriesError if result.get("too_short") else SeriesFailedError
                outcomes[series_id] = failed(result["error"])
        return {i: r for i, r in results.items() if "error" not in r}

    return keep_failures


class Sized:
    """The generated series of a run and the configs sized for them."""

    __slots__ = ("configs", "generated", "shared")

    def __init__(
        self, generated: dict[SeriesId, SeriesResult], configs: dict[SeriesId, ForecastConfig], shared: dict[str, Any]
    ) -> None:
        self.generated, self.configs, self.shared = generated, configs, shared


async def generate_and_size(
    config: ForecastConfig, ids: list[SeriesId], global_model: bool, runner: Runner, keep_failures: ChunkFilter
) -> Sized:
    """Generate each series (with what its sizing reads: `series_facts`) and size each one's config from
    its facts: with one network across them (`global_model`), first the settings it shares (`shared`)."""
    digest = file_digest(config.input) if config.input and runner.keys_by_digest else None
    own = with_series_ids(config, ids)
    generated = keep_failures(await runner.stage("generate", own, {}, digest))
    facts = {i: r["facts"] for i, r in generated.items()}
    sized = {i: sized_config(own[i], facts[i]) for i in generated}  # once per series
    if not global_model:
        return Sized(generated, sized, {})
    shared = global_settings(config, list(sized.values()), [int(f["points"]) for f in facts.values()]) if sized else {}
    return Sized(generated, panel_configs(config, shared, sized), shared)


def panel_configs(
    config: ForecastConfig, shared: dict[str, Any], sized: dict[SeriesId, ForecastConfig]
) -> dict[SeriesId, ForecastConfig]:
    """Each series' config in a global run (by id), from its own `sized` config: the settings the network
    shares over its own, and outside the sample (`statistical_sample`) naive baselines only and no forecasts of
    its train split's windows (their in-sample fit: about four fifths of a short series' predictions, scored on
    no decision). The shared settings replace every sized field that depends on another (look-back, patch,
    training, baselines, calendar); those left (frequency, seasons, validation fraction) are the series' own."""
    sampled = statistical_sample([str(i) for i in sized], config.baseline_sample, config.seed)
    outside = {"train_forecasts": False} | ({} if shared.get("baselines") == "naive" else {"baselines": "naive"})
    inside = with_same_fields({i: own for i, own in sized.items() if str(i) in sampled}, **shared)
    others = with_same_fields({i: own for i, own in sized.items() if str(i) not in sampled}, **(shared | outside))
    return {i: inside[i] if i in inside else others[i] for i in sized}


def announce(sized: Sized, global_model: bool) -> None:
    """Log the settings sized from the data: one network's shared settings and the statistical baselines'
    sample, or each series' own settings."""
    logger = get_run_logger()
    if not global_model:  # each series' own settings: one line for one series, the first for a panel
        first = next(iter(sized.configs.values()))
        count = len(sized.configs)
        logger.info(
            describe_adapted(first) + (f" (the first of {count} series, each sized alike)" if count > 1 else "")
        )
        return
    count = len(sized.generated)
    logger.info("one network across %d series: %s", count, ", ".join(f"{k} {v}" for k, v in sized.shared.items()))
    sampled = sum(c.train_forecasts for c in sized.configs.values())
    if sampled < count:
        statistical = sized.shared["baselines"] != "naive"
        logger.info(
            "%sforecasts of the train split's windows (the in-sample fit) on %d of %d series, a sample fixed by "
            "their ids and the seed (--baseline-sample 0: every series); naive and seasonal naive, and the "
            "validation and test forecasts, on every series",
            "statistical baselines (AutoETS, AutoARIMA: about a second per series) and " if statistical else "",
            sampled,
            count,
        )


# Work a run does with every series' outputs up to its last stage before plot, while the plots are drawn (in a
# thread of this process: the plots run on the cluster): the series' stages (or errors) and the global model's key.
BesidePlots = Callable[[Outcomes, str | None], None]


async def planned_run(
    config: ForecastConfig,
    ids: list[SeriesId],
    global_model: bool,
    last_stage: str,
    runner: Runner,
    beside_plots: BesidePlots | None = None,
) -> tuple[Outcomes, str | None]:
    """The plan of every run, each step done by `runner`: generate every series and size it (with one
    network across them, `global_model`: share its settings first), prepare each series (split, normalize,
    window), train (that one network on them all, or each series' own), then predict, evaluate and plot
    each one (a global run plots the series the UI shows; `plots: all` every one). `beside_plots` is called
    with the outcomes so far once the stages before plot are done, while the plots are drawn.

    Returns each series' stages (or its error) and the global model's key (None for models of their own).
    """
    outcomes: Outcomes = {}
    keep_failures = failures_into(outcomes)
    sized = await generate_and_size(config, ids, global_model, runner, keep_failures)
    if not sized.generated:
        return outcomes, None
    if runner.announces:
        announce(sized, global_model)
    configs = sized.configs

    async def each_stage(stage_names: tuple[str, ...], going: dict[SeriesId, Stages]) -> dict[SeriesId, Stages]:
        return await runner.stages(stage_names, configs, going, keep_failures)

    prepared = await each_stage(PREPARE_STAGES, {i: r["stages"] for i, r in sized.generated.items()})
    members = [i for i in ids if i in prepared]
    if not members:
        return outcomes, None
    model = None
    if global_model:
        inputs = {name: [prepared[i][stage]["key"] for i in members] for name, stage in STAGE["train"].inputs.items()}
        upstream = {**inputs, "series_ids": members}
        members_so_far = {i: (configs[i], prepared[i]) for i in members}
        model_stages = await runner.train(with_fields(config, **sized.shared), upstream, members_so_far)
        trained = {i: prepared[i] | model_stages for i in members}
        model = model_stages["train"]["key"]
    else:
        trained = await each_stage(("train",), {i: prepared[i] for i in members})
    scored = stages_until(FINISH_STAGES, last_stage)
    finished = await each_stage(tuple(s for s in scored if s != "plot"), trained)
    beside = [] if beside_plots is None else [asyncio.to_thread(beside_plots, outcomes | finished, model)]
    if "plot" in scored:
        shown = list(finished)
        if global_model and config.plots != "all":
            shown = shown_series(Store(config.artifacts_dir), finished)
        plotted, *_ = await asyncio.gather(each_stage(("plot",), {i: finished[i] for i in shown}), *beside)
        finished |= plotted
    elif beside:
        await beside[0]
    return outcomes | {i: finished[i] for i in members if i in finished}, model


async def stored_run(
    config: ForecastConfig, ids: list[SeriesId], global_model: bool, last_stage: str, trains_here: bool
) -> tuple[Outcomes, str | None] | None:
    """The run answered from the store alone (`StoreRunner`), or None when an output it needs is missing. Then,
    when that output is a network's or one before it and the network would train in this process
    (`trains_here`), the training process starts now: it imports TensorFlow while the stages before run."""
    try:
        return await planned_run(config, ids, global_model, last_stage, StoreRunner())
    except NotStoredError as missing:
        if trains_here and missing.stage in TRAINED_FROM:
            start_training_process()
        return None


def shown_series(store: Store, stages: dict[SeriesId, Stages]) -> list[SeriesId]:
    """The handful of series a run shows in the UI (`series_to_show`: the LSTM's best and worst), by their
    evaluate outputs' LSTM test MASE, from their pooled rows (`pooled_rows`), which the summary and the registry
    read next: read once (10,000 series: the publication beside the plots 0.5 s shorter)."""
    keys = {i: s["evaluate"]["key"] for i, s in stages.items()}
    pooled = pooled_rows(store, keys.values())
    chosen = (pooled["split"] == "test") & (pooled["model"] == "lstm") & (pooled["metric"] == "mase")
    rows = pooled.loc[chosen.to_numpy(), [KEY_COLUMN, "value"]].dropna()
    mase = dict(zip(rows[KEY_COLUMN].astype(str)[::-1], rows["value"][::-1], strict=True))  # each output's first
    return [i for i, _ in shown_by_mase([(i, mase.get(str(key), float("nan"))) for i, key in keys.items()])]


# The pooled rows (step 0) of the evaluate outputs the flow read last, by store root, column KEY_COLUMN naming each
# output, and the keys they hold: the UI's choice of series, the summary and the command's JSON read the same
# outputs, and an output's key names its content.
_POOLED: dict[str, tuple[pd.DataFrame, frozenset[str]]] = {}


def pooled_rows(store: Store, keys: Iterable[str]) -> pd.DataFrame:
    """The rows of all steps pooled (step 0: what the summary, the registry and the UI read) of the evaluate outputs
    `keys` and maybe others, stacked, column KEY_COLUMN naming each output: each pack read once, the per-step rows
    left out (100,000 series' rows stay small). The outputs the last call read are not read again."""
    wanted = list(dict.fromkeys(str(key) for key in keys))
    root = str(store.root)
    held = _POOLED.get(root)
    if held is None or not held[1].issuperset(wanted):
        stacked = store.read_tables("evaluate", wanted, where={"step": 0})
        _POOLED.clear()
        held = _POOLED[root] = (stacked, frozenset(str(key) for key in pd.unique(stacked[KEY_COLUMN])))
    return held[0]


def evaluate_rows(store: Store, keys: list[str]) -> pd.DataFrame:
    """The pooled rows (step 0) of the evaluate outputs `keys`, stacked, column KEY_COLUMN naming each output: the
    rows `pooled_rows` read last when they hold every one (the command's JSON reads what the flow read)."""
    if not keys:
        return pd.DataFrame()
    stacked = pooled_rows(store, keys)
    return stacked[stacked[KEY_COLUMN].isin(keys)]


def evaluated_wide(store: Store, keys: dict[Any, str]) -> pd.DataFrame:
    """`wide_test_metrics` of the series whose evaluate outputs are `keys` (series id -> key): one row per series,
    from the pooled rows `pooled_rows` reads for them, as one table (a table per series, stacked, took about a
    second for 10,000 series; slicing one per series from the rows read, 0.5 s)."""
    if not keys:  # every series failed, or none was scored
        return wide_test_metrics([])
    stacked = pooled_rows(store, keys.values())
    ids = {key: series_id for series_id, key in keys.items()}
    chosen = stacked[stacked[KEY_COLUMN].isin(list(ids))]
    named = np.asarray(chosen[KEY_COLUMN].map(ids), dtype=object)
    return pooled_test_metrics(chosen.drop(columns=KEY_COLUMN).assign(**{ID: named}), ID)
