"""Many series: one pipeline per series of a long-format input, in turn or fanned out on Dask."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.cluster import runs_on_cluster
from flows.forecast import DEFAULT_CONFIG, artifact_paths, run_pipeline
from tasks.config import ForecastConfig, with_fields
from tasks.errors import InputError
from tasks.generate import read_series_ids
from tasks.store import Store
from tasks.summary import SeriesOutcome, publish_summary


@flow(name="lstm-forecast-many", log_prints=True)
async def forecast_many(config: ForecastConfig = DEFAULT_CONFIG, series_ids: list[str] | None = None) -> dict[
        str, Any]:
    """Each series of `config.input` (long format) through its own pipeline. On a Dask task runner
    all series run at once; otherwise one after another. A failed series fails alone."""
    ids = series_ids or read_series_ids(config)
    if not ids:
        raise InputError(f"the input has no column {config.id_column!r} naming its series",
                         "name the series column with --id-column, or run a single-series file as it is")
    store = Store(config.artifacts_dir)
    logger = get_run_logger()
    parallel = runs_on_cluster()

    async def one(series_id: str) -> tuple[SeriesOutcome, dict[str, Any]]:
        try:
            stages = await run_pipeline(with_fields(config, series_id=series_id), on_cluster=parallel)
        except Exception as error:  # one series failing must not stop the others
            message = f"{error.problem}; fix: {error.fix}" if isinstance(error, InputError) else (
                f"{type(error).__name__}: {error}")
            logger.error("series %r failed: %s", series_id, message)
            return SeriesOutcome(series_id, error=message), {"status": "failed", "error": message}
        metrics_key = stages["evaluate"]["key"]
        outcome = SeriesOutcome(series_id, store.read_table("evaluate", metrics_key), metrics_key)
        return outcome, {"status": "completed", "stages": stages, "artifacts": artifact_paths(store, stages)}

    if parallel:
        results = await asyncio.gather(*(one(series_id) for series_id in ids))
    else:
        results = [await one(series_id) for series_id in ids]
    summary, path = await publish_summary(store, [outcome for outcome, _ in results])
    logger.info("%d series, %d failed; summary %s", len(ids), int((summary["status"] == "failed").sum()), path)
    return {
        "flow_run_id": str(flow_run.id),
        "series": {outcome.series_id: detail for outcome, detail in results},
        "summary": path,
    }
