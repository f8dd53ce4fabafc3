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
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from prefect import task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.store import ChunkWork, Store, by_store
from lstm_forecast.tasks.stages.normalize import read_model_space

# A global model (one network across many series) also trains on, and forecasts from, windows with
# as few as this many real values (fewer than `look_back`): the rest of the window is padded with the
# series' first value, so series shorter than a window still take part and get forecasts.
GLOBAL_MIN_CONTEXT = 8


def window_targets(
    ds: pd.Series | np.ndarray,
    bounds: pd.DataFrame | Mapping[str, np.ndarray],
    look_back: int,
    horizon: int = 1,
    offset: int = 0,
    padded: bool = False,
) -> pd.DataFrame:
    """The window origins of every split.

    Args:
        ds: the series' times, one per row.
        bounds: `split, start, stop` row ranges (from `split_bounds`; a table or its columns).
        offset: leading rows without a model-space value (1 when differencing).
        padded: origins from `GLOBAL_MIN_CONTEXT` rows on (their windows padded), not from `look_back`.
    Returns:
        DataFrame with `row` (origin: the first target's position), `ds` and `split`, in row order.
    """
    context = min(look_back, GLOBAL_MIN_CONTEXT) if padded else look_back
    names, starts, stops = (np.asarray(bounds[column]) for column in ("split", "start", "stop"))
    parts = [
        np.arange(max(int(start), context + offset), int(stop) - horizon + 1)
        for start, stop in zip(starts, stops, strict=True)
    ]
    counts = {name: len(part) for name, part in zip(names, parts, strict=True)}
    needed = {"train": 1, "test": 1, "validation": int(stops[1] > starts[1])}
    short = [name for name, least in needed.items() if counts.get(name, 0) < least]
    if short:
        raise InputError(
            f"the series has {len(ds)} points: too few for look_back {look_back} and horizon {horizon} "
            f"(no {' or '.join(short)} targets left)",
            "use a smaller --look-back or --horizon, or a longer series",
        )
    rows = np.concatenate(parts)
    split_column = np.repeat(names.astype(object), [len(part) for part in parts])
    return pd.DataFrame({"row": rows, "ds": np.asarray(ds)[rows], "split": split_column})


def window_inputs(
    values: np.ndarray, rows: np.ndarray, look_back: int, patch: int = 1, relative: bool = False
) -> np.ndarray:
    """Model inputs for origin rows: `out[i].ravel() = values[rows[i] - look_back : rows[i]]`, minus its
    last value when `relative` (each window scaled by its own level). Rows before `look_back` get windows
    padded on the left with the first finite value.

    Returns:
        float32 array of shape (len(rows), look_back // patch, patch): each step holds `patch` values.
    """
    values, rows = np.asarray(values, dtype="float64"), np.asarray(rows)
    pad = max(0, look_back - int(rows.min())) if len(rows) else 0
    if pad:
        values = np.concatenate([np.full(pad, values[np.isfinite(values)][0]), values])
        rows = rows + pad
    windows = sliding_window_view(values, look_back)[rows - look_back]
    if relative:  # in float64: large levels keep their small differences
        windows = windows - windows[:, -1:]
    return windows.astype("float32").reshape(len(rows), look_back // patch, patch)


def window_targets_matrix(values: np.ndarray, rows: np.ndarray, horizon: int, relative: bool = False) -> np.ndarray:
    """Targets of origin rows: `out[i, h] = values[rows[i] + h]`, minus `values[rows[i] - 1]` when
    `relative`; float32 (len(rows), horizon)."""
    values, rows = np.asarray(values, dtype="float64"), np.asarray(rows)
    targets = values[rows[:, None] + np.arange(horizon)]
    return (targets - values[rows - 1][:, None] if relative else targets).astype("float32")


@task(name="window", result_serializer="json")
def window(config: ForecastConfig, series: str, split: str, normalize: str, key: str) -> str:
    """Find every window's origin; returns the window key."""
    store = Store(config.artifacts_dir)
    targets = series_targets(
        config,
        store.read_table("generate", series)["ds"],
        store.read_table("split", split),
        read_model_space(store, normalize).offset,
    )
    store.write_table("window", key, targets)
    log_targets(targets)
    return key


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
    errors: list[Exception | None] = [None] * len(work)
    logged = False
    for root, indices in by_store(work).items():
        store = Store(root)
        times = store.read_columns("generate", [work[i][1]["series"] for i in indices], ("ds",))
        splits = store.read_columns("split", [work[i][1]["split"] for i in indices], SPLIT_COLUMNS)
        for index in indices:
            config, upstream, key = work[index]
            try:
                targets = series_targets(
                    config,
                    store.read_own_columns("generate", upstream["series"], ("ds",), times)["ds"],
                    store.read_own_columns("split", upstream["split"], SPLIT_COLUMNS, splits),
                    read_model_space(store, upstream["normalize"]).offset,
                )
                store.write_table("window", key, targets)
                if not logged:
                    log_targets(targets)
                    logged = True
            except Exception as error:  # reported per series: it fails alone
                errors[index] = error
    return errors


SPLIT_COLUMNS = ("split", "start", "stop")
