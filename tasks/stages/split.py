"""Stage 2, split: train / validation / test boundaries, as row positions.

The test split is the last `1 - train_fraction` of the points (the article's 80/20);
validation is the tail `validation_fraction` of the rest, used for early stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.store import ChunkColumns, ChunkWork, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import origin_ranges, split_bounds


@task(name="split", result_serializer="json")
def split(config: ForecastConfig, series: str, key: str) -> str:
    """Split the series `series` (a generate key); returns the split key."""
    store = Store(config.artifacts_dir)
    bounds = series_bounds(config, store.read_table("generate", series)["ds"])
    store.write_table("split", key, bounds)
    log_bounds(bounds)
    return key


def series_bounds(config: ForecastConfig, ds: pd.Series | np.ndarray) -> pd.DataFrame:
    """One series' split bounds; refuses a look_back or horizon too long for it before anything is written."""
    bounds = split_bounds(len(ds), config.train_fraction, config.validation_fraction)
    origin_ranges(  # the same check as `window_targets`, without building the windows' table
        len(ds), bounds, config.look_back, config.horizon, int(config.transform == "diff"), config.scope == "global"
    )
    return bounds


def log_bounds(bounds: pd.DataFrame) -> None:
    logger = stage_logger()
    if logger.isEnabledFor(logging.INFO):  # inside a chunk only its first series logs
        logger.info("split rows: %s", bounds.to_dict("records"))


def split_chunk(work: ChunkWork) -> list[Exception | None]:
    """`split` of many series at once, each `(config, its inputs' keys, its key)`: their times read once for
    the chunk. Returns, per series, None or the error it failed with (it fails alone)."""

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        bounds = series_bounds(config, own["series"]["ds"])
        store.write_table("split", key, bounds)
        return lambda: log_bounds(bounds)

    return each_series_of_chunk(work, {"series": ("generate", ("ds",))}, one)
