"""Stage 7, evaluate: error metrics of the LSTM and of baselines on exactly the same targets.

Baselines: `naive` predicts each target with the value just before it.
Metrics per model and split: RMSE, MAE (series units), sMAPE (percent), MASE
(MAE over the in-sample one-step naive MAE of the training part).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from tasks.config import ForecastConfig
from tasks.registry import model_entry, record_model
from tasks.store import Store, stage_key

METRICS = ("rmse", "mae", "smape", "mase")


def error_metrics(y: np.ndarray, y_hat: np.ndarray, mase_scale: float) -> dict[str, float]:
    """RMSE, MAE, sMAPE (%) and MASE of predictions `y_hat` of `y` (same shape)."""
    error = np.asarray(y_hat, dtype="float64") - np.asarray(y, dtype="float64")
    denominator = np.abs(y) + np.abs(y_hat)
    smape = np.where(denominator > 0, 2 * np.abs(error) / np.where(denominator > 0, denominator, 1), 0.0)
    mae = float(np.mean(np.abs(error)))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": mae,
        "smape": float(100 * np.mean(smape)),
        "mase": mae / mase_scale if mase_scale > 0 else float("nan"),
    }


def naive_predictions(y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The last value before each target row: `y[rows - 1]`."""
    return np.asarray(y)[np.asarray(rows) - 1]


def evaluate_predictions(series: pd.DataFrame, targets: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Metrics of every model on every split.

    Args:
        series: `ds, y` of every row.
        targets: `row, ds, split`, in the same order as the non-forecast rows of `predictions`.
        predictions: `ds, y, y_hat, split` (from `assemble_predictions`).
    Returns:
        Long table `split, model, metric, value`.
    """
    y_all = series["y"].to_numpy()
    rows = targets["row"].to_numpy()
    fitted = predictions[predictions["split"] != "forecast"]
    candidates = {"lstm": fitted["y_hat"].to_numpy(), "naive": naive_predictions(y_all, rows)}
    train_stop = int(rows[targets["split"].to_numpy() == "train"].max()) + 1
    mase_scale = float(np.mean(np.abs(np.diff(y_all[:train_stop]))))
    records = []
    for split_name in ("train", "validation", "test"):
        mask = targets["split"].to_numpy() == split_name
        if not mask.any():
            continue
        for model, y_hat in candidates.items():
            for metric, value in error_metrics(y_all[rows[mask]], y_hat[mask], mase_scale).items():
                records.append({"split": split_name, "model": model, "metric": metric, "value": value})
    return pd.DataFrame.from_records(records)


def metrics_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Wide view: one row per split and model, one column per metric."""
    wide = metrics.pivot_table(index=["split", "model"], columns="metric", values="value", sort=False)
    return wide.reindex(columns=[m for m in METRICS if m in wide.columns]).reset_index()


@task(name="evaluate", result_serializer="json")
def evaluate(config: ForecastConfig, series: str, window: str, predictions: str, model: str) -> str:
    """Score the LSTM and the baselines, and list the model in the registry; returns the evaluate key."""
    store = Store(config.artifacts_dir)
    key = stage_key("evaluate", config, {"series": series, "window": window, "predictions": predictions,
                                         "model": model})
    metrics = evaluate_predictions(store.read_table("generate", series), store.read_table("window", window),
                                   store.read_table("predict", predictions))
    store.write_table("evaluate", key, metrics)
    logger = get_run_logger()
    logger.info("metrics:\n%s", metrics_table(metrics).to_string(index=False, float_format="%.4f"))
    created = datetime.now(UTC).isoformat(timespec="seconds")
    status = record_model(store, model_entry(store, model, metrics, created))
    logger.info("registry: model %s is %s", model, status)
    return key
