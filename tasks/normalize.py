"""Stage 3, normalize: the series in the model's space, fitted on the training part only.

MinMax to [0, 1] as the article does, but fitted on the rows before the test split only
(the article fits on the whole series, so the test period's range leaks into training).
For series whose level leaves the training range (trends, growth, level shifts) the
model works on differences instead: `transform` 'diff', or 'auto', which differences
when an augmented Dickey-Fuller test on the training part cannot reject a unit root.
The parameters travel with the scaled series and, later, with the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from tasks.config import ForecastConfig
from tasks.errors import InputError
from tasks.store import Store, stage_key

ADF_P_VALUE = 0.05


@dataclass(frozen=True)
class MinMaxParams:
    """`scaled = (v - data_min) / (data_max - data_min)`."""

    data_min: float
    data_max: float

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype="float64") - self.data_min) / (self.data_max - self.data_min)

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype="float64") * (self.data_max - self.data_min) + self.data_min


@dataclass(frozen=True)
class ModelSpace:
    """How values map to what the model sees: optional first differences, then MinMax.

    `offset` is the number of leading rows without a model-space value (1 when differencing).
    """

    kind: str  # "none" or "diff"
    scaler: MinMaxParams

    @property
    def offset(self) -> int:
        return 1 if self.kind == "diff" else 0

    def encode(self, y: np.ndarray) -> np.ndarray:
        """Model-space values (n,), NaN where undefined."""
        y = np.asarray(y, dtype="float64")
        base = np.concatenate([[np.nan], np.diff(y)]) if self.kind == "diff" else y
        return self.scaler.scale(base)

    def decode(self, z_hat: np.ndarray, y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Values (m, H) from model-space forecasts `z_hat` (m, H) made at origin rows (m,).

        Row `origins[i]` is the first forecast target of row i; `y[origins - 1]` is known when forecasting.
        """
        steps = self.scaler.unscale(np.asarray(z_hat).reshape(len(origins), -1))
        if self.kind == "diff":
            return np.asarray(y, dtype="float64")[np.asarray(origins) - 1][:, None] + np.cumsum(steps, axis=1)
        return steps

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self.scaler)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpace:
        return cls(data.get("kind", "none"), MinMaxParams(data["data_min"], data["data_max"]))


def fit_minmax(train_values: np.ndarray) -> MinMaxParams:
    """Min and max of the training values; `InputError` if they are all equal."""
    values = np.asarray(train_values, dtype="float64")
    values = values[np.isfinite(values)]
    low, high = float(np.min(values)), float(np.max(values))
    if not high > low:
        raise InputError(
            f"the training part of the series is constant ({low}): there is nothing to learn",
            "check the value column, or forecast a series that varies",
        )
    return MinMaxParams(low, high)


def has_unit_root(train_values: np.ndarray) -> bool:
    """ADF test (constant, up to 12 lags) on the training values: True if a unit root is not rejected."""
    from statsmodels.tsa.stattools import adfuller

    values = np.asarray(train_values, dtype="float64")
    p_value = adfuller(values[-5000:], maxlag=12, regression="c", autolag=None, result_object=False)[1]
    return bool(p_value > ADF_P_VALUE)


def fit_model_space(y: np.ndarray, fit_stop: int, transform: str) -> ModelSpace:
    """Choose the transform (for 'auto') and fit the scaler on rows `[0, fit_stop)` only."""
    train = np.asarray(y, dtype="float64")[:fit_stop]
    fit_minmax(train)  # refuses a constant training part, whatever the transform
    kind = transform if transform != "auto" else ("diff" if has_unit_root(train) else "none")
    base = np.diff(train) if kind == "diff" else train
    return ModelSpace(kind, fit_minmax(base))


def scale_series(series: pd.DataFrame, fit_stop: int, transform: str = "none") -> tuple[pd.DataFrame, ModelSpace]:
    """Add `y_scaled` (model space) to a `ds, y` series, fitting on rows `[0, fit_stop)` only."""
    space = fit_model_space(series["y"].to_numpy(), fit_stop, transform)
    return series.assign(y_scaled=space.encode(series["y"].to_numpy())), space


@task(name="normalize", result_serializer="json")
def normalize(config: ForecastConfig, series: str, split: str) -> str:
    """Scale the series; returns the normalize key."""
    store = Store(config.artifacts_dir)
    key = stage_key("normalize", config, {"series": series, "split": split})
    bounds = store.read_table("split", split).set_index("split")
    fit_stop = int(bounds.loc["test", "start"])
    scaled, space = scale_series(store.read_table("generate", series), fit_stop, config.transform)
    store.write_table("normalize", key, scaled, metadata=space.to_dict())
    get_run_logger().info("model space fitted on the first %d rows: %s", fit_stop, space)
    return key


def read_model_space(store: Store, normalize_key: str) -> ModelSpace:
    """The transform and scaler stored with a normalize output."""
    return ModelSpace.from_dict(store.read_table_metadata("normalize", normalize_key))
