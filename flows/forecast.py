"""The forecasting flow: the eight stages wired together. No computation here."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from prefect import flow
from prefect.runtime import flow_run

from tasks.caching import with_store_cache
from tasks.config import ForecastConfig
from tasks.evaluate import evaluate
from tasks.generate import generate
from tasks.normalize import normalize
from tasks.plot import plot
from tasks.predict import predict
from tasks.report import publish_run
from tasks.split import split
from tasks.store import Store
from tasks.train import train
from tasks.window import window

DEFAULT_CONFIG = ForecastConfig()


async def run_pipeline(config: ForecastConfig, submit: bool = False, last_stage: str = "plot") -> dict[
        str, dict[str, str]]:
    """Run the eight stages in order; returns each stage's key and status (computed or cached).

    Args:
        submit: hand each stage to the flow's task runner (a Dask cluster) instead of running it
            in this process. Either way only store keys pass between stages.
        last_stage: stop after this stage (`evaluate`: no plot, for tuning trials).
    Raises:
        the first failed stage's error.
    """
    stages: dict[str, dict[str, str]] = {}

    async def run(stage_task: Any, **upstream: str) -> str:
        cached_task = with_store_cache(stage_task, config)
        if submit:
            future = cached_task.submit(config=config, **upstream)
            await anyio.to_thread.run_sync(future.wait)
            state = future.state
        else:
            state = cached_task(config=config, **upstream, return_state=True)
        key = await state.aresult()  # raises the stage's error if it failed
        stages[stage_task.name] = {"key": key, "status": "cached" if state.name == "Cached" else "computed"}
        return key

    series = await run(generate)
    bounds = await run(split, series=series)
    scaled = await run(normalize, series=series, split=bounds)
    targets = await run(window, series=series, split=bounds, normalize=scaled)
    model = await run(train, series=series, normalize=scaled, window=targets)
    predictions = await run(predict, series=series, normalize=scaled, window=targets, model=model)
    await run(evaluate, series=series, normalize=scaled, window=targets, predictions=predictions, model=model)
    if last_stage == "evaluate":
        return stages
    await run(plot, series=series, predictions=predictions, model=model)
    return stages


def artifact_paths(store: Store, stages: dict[str, dict[str, str]]) -> dict[str, str]:
    """Where a pipeline run's outputs are."""
    outputs = {"series": "generate", "model": "train", "predictions": "predict", "metrics": "evaluate",
               "plot": "plot"}
    return {name: str(store.path(stage, stages[stage]["key"])) for name, stage in outputs.items()}


# Async although every stage is sync: an async flow run does not wait up to a second at exit
# for its heartbeat thread, which is most of a fully cached run's time.
@flow(name="lstm-forecast", log_prints=True)
async def forecast(config: ForecastConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Series → trained LSTM → predictions, metrics and plot. Returns every stage's key and status."""
    stages = await run_pipeline(config)
    store = Store(config.artifacts_dir)
    await publish_run(store, stages["evaluate"]["key"], stages["plot"]["key"], stages["train"]["key"])
    return {"flow_run_id": str(flow_run.id), "stages": stages, "artifacts": artifact_paths(store, stages)}
