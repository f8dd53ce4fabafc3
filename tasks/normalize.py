"""Stage 3, normalize: MinMax scaling to [0, 1], fitted on the training part only.

The article fits its scaler on the whole series, so the test period's range leaks
into training. Here only rows before the test split are seen by the fit; the
parameters travel with the scaled series and, later, with the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from tasks.config import ForecastConfig
from tasks.errors import InputError
from tasks.store import Store, stage_key


@dataclass(frozen=True)
class MinMaxParams:
    """`scaled = (y - data_min) / (data_max - data_min)`, in the series' units."""

    data_min: float
    data_max: float

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype="float64") - self.data_min) / (self.data_max - self.data_min)

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype="float64") * (self.data_max - self.data_min) + self.data_min

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def fit_minmax(train_values: np.ndarray) -> MinMaxParams:
    """Min and max of the training values; `InputError` if they are all equal."""
    low, high = float(np.min(train_values)), float(np.max(train_values))
    if not high > low:
        raise InputError(
            f"the training part of the series is constant ({low}): there is nothing to learn",
            "check the value column, or forecast a series that varies",
        )
    return MinMaxParams(low, high)


def scale_series(series: pd.DataFrame, fit_stop: int) -> tuple[pd.DataFrame, MinMaxParams]:
    """Add `y_scaled` to a `ds, y` series, fitting on rows `[0, fit_stop)` only."""
    params = fit_minmax(series["y"].to_numpy()[:fit_stop])
    return series.assign(y_scaled=params.scale(series["y"].to_numpy())), params


@task(name="normalize", result_serializer="json")
def normalize(config: ForecastConfig, series: str, split: str) -> str:
    """Scale the series; returns the normalize key."""
    store = Store(config.artifacts_dir)
    key = stage_key("normalize", config, {"series": series, "split": split})
    bounds = store.read_table("split", split).set_index("split")
    scaled, params = scale_series(store.read_table("generate", series), int(bounds.loc["test", "start"]))
    store.write_table("normalize", key, scaled, metadata={"scaler": "minmax", **params.to_dict()})
    get_run_logger().info("scaler fitted on the first %d rows: %s", bounds.loc["test", "start"], params)
    return key


def read_scaler(store: Store, normalize_key: str) -> MinMaxParams:
    """The scaler parameters stored with a normalize output."""
    metadata = store.read_table_metadata("normalize", normalize_key)
    return MinMaxParams(metadata["data_min"], metadata["data_max"])
