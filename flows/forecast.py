"""The forecasting flow: the eight stages wired together. No computation here."""

from __future__ import annotations

from typing import Any

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


# Async although every stage is sync: an async flow run does not wait up to a second at exit
# for its heartbeat thread, which is most of a fully cached run's time.
@flow(name="lstm-forecast", log_prints=True)
async def forecast(config: ForecastConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    """Series → trained LSTM → predictions, metrics and plot. Returns every stage's key and status."""
    stages: dict[str, dict[str, str]] = {}

    async def run(stage_task: Any, **upstream: str) -> str:
        state = with_store_cache(stage_task, config)(config=config, **upstream, return_state=True)
        key = await state.aresult()  # raises the stage's error if it failed
        stages[stage_task.name] = {"key": key, "status": "cached" if state.name == "Cached" else "computed"}
        return key

    series = await run(generate)
    bounds = await run(split, series=series)
    scaled = await run(normalize, series=series, split=bounds)
    targets = await run(window, series=series, split=bounds, normalize=scaled)
    model = await run(train, series=series, normalize=scaled, window=targets)
    predictions = await run(predict, series=series, normalize=scaled, window=targets, model=model)
    metrics = await run(evaluate, series=series, normalize=scaled, window=targets, predictions=predictions,
                        model=model)
    figure = await run(plot, series=series, predictions=predictions, model=model)

    store = Store(config.artifacts_dir)
    await publish_run(store, metrics, figure, model)
    return {
        "flow_run_id": str(flow_run.id),
        "stages": stages,
        "artifacts": {
            "series": str(store.path("generate", series)),
            "model": str(store.path("train", model)),
            "predictions": str(store.path("predict", predictions)),
            "metrics": str(store.path("evaluate", metrics)),
            "plot": str(store.path("plot", figure)),
        },
    }
