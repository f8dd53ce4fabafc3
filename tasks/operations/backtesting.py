"""Rolling-origin backtests: the pipeline re-run on growing prefixes of the series.

The last `1 - train_fraction` of the series is cut into `folds` consecutive chunks;
fold k trains on everything before its chunk and tests on the chunk, as a normal
run of the pipeline on the first `series_end` rows would.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.core.windows import split_starts
from lstm_forecast.tasks.stages.evaluate import select_metrics


def backtest_folds(n_points: int, train_fraction: float, folds: int) -> list[tuple[int, float]]:
    """(series_end, train_fraction) of each fold, oldest first; each fold tests the next chunk."""
    test_points = n_points - split_starts(n_points, train_fraction)[1]
    chunk = test_points // folds if folds >= 1 else 0
    if chunk < 1:
        raise InputError(f"{folds} folds do not fit in {test_points} test points", "use fewer --folds")
    plans = []
    for fold in range(folds):
        end = n_points - test_points + (fold + 1) * chunk
        plans.append((end, (end - chunk + 0.5) / end))  # + 0.5: int(end * fraction) is exactly end - chunk
    return plans


def fraction_folds(train_fraction: float, folds: int) -> list[tuple[float, float]]:
    """(series_keep, train_fraction) of each fold of many series at once, oldest first: fold k keeps
    the first part of every series up to the end of its k-th test chunk (a `folds`-th of its test part)
    and tests on that chunk, whatever each series' length."""
    chunk = (1 - train_fraction) / folds if folds >= 1 else 0.0
    if chunk <= 0:
        raise InputError(f"{folds} folds do not fit in the test part", "use fewer --folds")
    plans = []
    for fold in range(folds):
        keep = min(1.0, round(train_fraction + (fold + 1) * chunk, 9))
        plans.append((keep, round((keep - chunk) / keep, 9)))
    return plans


def mean_over_series(per_series: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """`model -> metric -> value` averaged over series (for many series compare the scale-free MASE and
    sMAPE: RMSE and MAE mix the series' units)."""
    sums: dict[str, dict[str, list[float]]] = {}
    for models in per_series:
        for model, values in models.items():
            for metric, value in values.items():
                sums.setdefault(model, {}).setdefault(metric, []).append(value)
    return {model: {m: sum(v) / len(v) for m, v in metrics.items()} for model, metrics in sums.items()}


def summarize_folds(fold_metrics: list[dict[str, dict[str, float]]]) -> pd.DataFrame:
    """Mean, standard deviation, min and max over folds of each test metric.

    Args:
        fold_metrics: per fold, `model -> metric -> value` on the test split.
    Returns:
        DataFrame `model, metric, mean, std, min, max, folds`.
    """
    records: list[dict[str, Any]] = [
        {"fold": fold, "model": model, "metric": metric, "value": value}
        for fold, models in enumerate(fold_metrics)
        for model, values in models.items()
        for metric, value in values.items()
    ]
    frame = pd.DataFrame.from_records(records)
    summary = frame.groupby(["model", "metric"], sort=False)["value"].agg(["mean", "std", "min", "max", "count"])
    return summary.rename(columns={"count": "folds"}).reset_index()


def fold_test_metrics(store: Store, evaluate_key: str) -> dict[str, dict[str, float]]:
    """`model -> metric -> value` on the test split (all steps pooled) of one evaluate output."""
    metrics = store.read_table("evaluate", evaluate_key)
    test = select_metrics(metrics, split="test")
    return {
        model: dict(zip(part["metric"], part["value"], strict=True))
        for model, part in test.groupby("model", sort=False)
    }


def series_length(store: Store, series_key: str) -> int:
    """Rows of a generate output."""
    return len(store.read_table("generate", series_key))
