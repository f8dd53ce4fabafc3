"""Stage 4, window: which past values predict which targets.

A window with origin row `t` sees rows `[t - look_back, t)` and forecasts rows
`t, …, t + horizon - 1`. Every row from `look_back` on is an origin, in whichever
split it falls, as long as its targets stay in that split: the first test targets
take their context from the end of the training part, so every test point is
forecast (the article's `range(len - look_back - 1)` drops a window, and its
windows never cross the split, so it skips the first `look_back` test points).

The output stores the origins (row, `ds`, split), not the windows themselves:
the windows are views into the scaled series, built when needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.space import fixed_kind, read_model_space, stored_model_space
from lstm_forecast.tasks.core.store import ChunkColumns, ChunkTables, ChunkWork, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import SPLIT_COLUMNS, window_target_columns, window_targets


@task(name="window", result_serializer="json")
def window(config: ForecastConfig, series: str, split: str, normalize: str, key: str) -> str:
    """Find every window's origin; returns the window key."""
    store = Store(config.artifacts_dir)
    offset = fixed_offset(config)
    targets = series_targets(
        config,
        store.read_table("generate", series)["ds"],
        store.read_table("split", split),
        read_model_space(store, normalize).offset if offset is None else offset,
    )
    store.write_table("window", key, targets)
    log_targets(targets)
    return key


def fixed_offset(config: ForecastConfig) -> int | None:
    """The model space's `offset` when the config fixes its kind (`fixed_kind`), read from no file; None for
    'auto' (normalize chose, and its output says which)."""
    kind = fixed_kind(config.transform)
    return None if kind is None else int(kind == "diff")


def series_targets(
    config: ForecastConfig, ds: pd.Series | np.ndarray, bounds: pd.DataFrame | Mapping[str, np.ndarray], offset: int
) -> pd.DataFrame:
    """The window origins of one series (`window_targets` with the config's look-back and horizon)."""
    return window_targets(ds, bounds, config.look_back, config.horizon, offset, padded=config.scope == "global")


def log_targets(targets: pd.DataFrame) -> None:
    logger = stage_logger()
    if logger.isEnabledFor(logging.INFO):  # inside a chunk only its first series logs
        logger.info("targets per split: %s", targets["split"].value_counts().to_dict())


def window_chunk(work: ChunkWork) -> list[Exception | None]:
    """`window` of many series at once, each `(config, its inputs' keys, its key)`: their times and splits
    read once for the chunk. Returns, per series, None or the error it failed with (it fails alone)."""

    tables = ChunkTables("window")

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        offset = fixed_offset(config)
        offset = stored_model_space(own["normalize"]).offset if offset is None else offset
        ds = own["series"]["ds"]
        padded = config.scope == "global"
        columns = window_target_columns(ds, own["split"], config.look_back, config.horizon, offset, padded)
        tables.add(store, key, columns)
        return lambda: log_targets(pd.DataFrame(columns))

    inputs = {"series": ("generate", ("ds",)), "split": ("split", SPLIT_COLUMNS)}
    chosen = any(fixed_offset(config) is None for config, _, _ in work)  # else no footer to read (a chunk's: 0.1 s)
    errors = each_series_of_chunk(work, inputs, one, described={"normalize": "normalize"} if chosen else None)
    tables.write()  # one table of the chunk's series, not a table each
    return errors
