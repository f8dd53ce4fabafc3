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
from lstm_forecast.tasks.core.store import ChunkColumns, ChunkTables, ChunkWork, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import origin_ranges, split_rows


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
    return pd.DataFrame(bound_columns(config, len(ds)))


def bound_columns(config: ForecastConfig, n_points: int) -> dict[str, np.ndarray]:
    """The columns `split, start, stop` of `series_bounds` for a series of `n_points`, as arrays."""
    rows = split_rows(n_points, config.train_fraction, config.validation_fraction)
    columns = {"split": np.array(rows["split"], dtype=object), **{n: np.array(rows[n]) for n in ("start", "stop")}}
    origin_ranges(  # the same check as `window_targets`, without building the windows' table
        n_points, columns, config.look_back, config.horizon, int(config.transform == "diff"), config.scope == "global"
    )
    return columns


def log_bounds(bounds: pd.DataFrame) -> None:
    logger = stage_logger()
    if logger.isEnabledFor(logging.INFO):  # inside a chunk only its first series logs
        logger.info("split rows: %s", bounds.to_dict("records"))


def split_chunk(work: ChunkWork) -> list[Exception | None]:
    """`split` of many series at once, each `(config, its inputs' keys, its key)`: their times read once for
    the chunk. Returns, per series, None or the error it failed with (it fails alone)."""

    tables = ChunkTables("split")

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        columns = bound_columns(config, len(own["series"]["ds"]))
        tables.add(store, key, columns)
        return lambda: log_bounds(pd.DataFrame(columns))

    errors = each_series_of_chunk(work, {"series": ("generate", ("ds",))}, one)
    tables.write()  # one table of the chunk's series, not a table each
    return errors
