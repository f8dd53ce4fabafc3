"""Hyperparameter search: the space around a base config, and how a trial is scored.

Pure functions: an Optuna trial in, a config out; an evaluate output in, a score out.
Trials are scored on the validation split (the tail of the training part), never on the
test split, so the test metrics of the chosen config stay an honest estimate.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.stages.evaluate import metric_value, select_metrics

TUNED_FIELDS = ("look_back", "units", "layers", "learning_rate", "batch_size")


def search_space(base: ForecastConfig) -> dict[str, Any]:
    """The choices around `base`: half, same or double its window, units and batch; 1–2 layers;
    a learning rate from a fifth to five times its own (log scale)."""

    def around(value: int, multiple: int = 1) -> list[int]:
        return sorted({max(multiple, int(value * factor) // multiple * multiple) for factor in (0.5, 1, 2)})

    return {
        "look_back": around(base.look_back, base.patch),
        "units": around(base.units),
        "layers": [1, 2],
        "learning_rate": (base.learning_rate / 5, base.learning_rate * 5),
        "batch_size": around(base.batch_size),
    }


def suggest_config(trial: Any, base: ForecastConfig) -> ForecastConfig:
    """The config an Optuna trial proposes: `base` with the tuned fields drawn from `search_space`."""
    space = search_space(base)
    low, high = space["learning_rate"]
    return with_fields(
        base,
        **{
            "look_back": trial.suggest_categorical("look_back", space["look_back"]),
            "units": trial.suggest_categorical("units", space["units"]),
            "layers": trial.suggest_categorical("layers", space["layers"]),
            "learning_rate": trial.suggest_float("learning_rate", low, high, log=True),
            "batch_size": trial.suggest_categorical("batch_size", space["batch_size"]),
        },
    )


def check_tunable(base: ForecastConfig) -> None:
    """Tuning needs a validation split to score on."""
    if base.validation_fraction <= 0:
        raise InputError(
            "tuning scores trials on the validation split, and validation_fraction is 0",
            "set validation_fraction above 0 (e.g. 0.1) in the config",
        )


def validation_score(metrics: pd.DataFrame) -> float:
    """The LSTM's validation RMSE, all steps pooled, from an evaluate output (long format)."""
    return float(select_metrics(metrics, "validation", "lstm", "rmse")["value"].iloc[0])


def mean_validation_mase(metrics: list[pd.DataFrame]) -> float:
    """A global trial's score: the mean over its series of the LSTM's validation MASE (scale-free, so
    every series counts alike), from their evaluate outputs; series without one are left out."""
    values = [metric_value(frame, "validation", "lstm", "mase") for frame in metrics]
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        raise InputError("no series has a validation MASE to score the trial on", "raise validation_fraction")
    return float(sum(finite) / len(finite))


def config_file_text(config: ForecastConfig, comment: str) -> str:
    """YAML that `lstm-forecast run --config` turns back into exactly `config`."""
    fields = config.model_dump(mode="json", exclude_defaults=True)
    return f"# {comment}\n" + yaml.safe_dump({"preset": "default", **fields}, sort_keys=False)
