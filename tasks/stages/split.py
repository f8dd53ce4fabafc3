"""Stage 2, split: train / validation / test boundaries, as row positions.

The test split is the last `1 - train_fraction` of the points (the article's 80/20);
validation is the tail `validation_fraction` of the rest, used for early stopping.
"""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.stages.window import window_targets

SPLITS = ("train", "validation", "test")


def split_bounds(n_points: int, train_fraction: float, validation_fraction: float) -> pd.DataFrame:
    """Contiguous row ranges covering `range(n_points)`.

    Returns:
        DataFrame with columns `split` (train, validation, test), `start`, `stop` (stop exclusive).
    """
    test_start = int(n_points * train_fraction)
    validation_start = test_start - int(test_start * validation_fraction)
    if n_points - test_start < 1 or validation_start < 2:
        raise InputError(
            f"the series has {n_points} points: too few to split {train_fraction:.0%} / {1 - train_fraction:.0%}",
            "pass a longer series or change --train-fraction",
        )
    return pd.DataFrame(
        {
            "split": list(SPLITS),
            "start": [0, validation_start, test_start],
            "stop": [validation_start, test_start, n_points],
        }
    )


@task(name="split", result_serializer="json")
def split(config: ForecastConfig, series: str, key: str) -> str:
    """Split the series `series` (a generate key); returns the split key."""
    store = Store(config.artifacts_dir)
    ds = store.read_table("generate", series)["ds"]
    bounds = split_bounds(len(ds), config.train_fraction, config.validation_fraction)
    # refuse a look_back or horizon too long before writing anything
    window_targets(
        ds, bounds, config.look_back, config.horizon, int(config.transform == "diff"), padded=config.scope == "global"
    )
    store.write_table("split", key, bounds)
    get_run_logger().info("split rows: %s", bounds.to_dict("records"))
    return key
