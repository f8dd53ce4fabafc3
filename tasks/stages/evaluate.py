"""Stage 7, evaluate: error metrics of the LSTM and of baselines on exactly the same targets.

Baselines, each forecasting every window's `horizon` targets from the same origin:
- `naive`: the last value before the window's first target;
- `seasonal_naive`: the value one season earlier (season from config, or detected as the
  first autocorrelation peak of the training part);
- `arima`: statsmodels ARIMA fitted on the last `arima_fit_points` training rows, then
  run over the whole series with those parameters (its Kalman filter sees only the past
  of each origin); multi-step forecasts come from its predicted states.
- `auto_ets`, `auto_arima`: statsforecast's AutoETS and AutoARIMA with the series' seasons
  (MSTL-deseasonalised for long or several seasons), fitted on the training part and
  filtered over the rest the same way (`tasks/baselines.py`); for horizons above 1 they
  forecast the test origins only.

Metrics per split, model and step ahead (`step` 0 pools all steps): RMSE, MAE (series
units), sMAPE (percent), MASE (MAE over the in-sample one-step naive MAE of the training
part); for the LSTM also `coverage`, the share of targets inside its prediction interval.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.defaults import detect_season
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.stages.baselines import statistical_forecasts
from lstm_forecast.tasks.stages.normalize import read_model_space

METRICS = ("rmse", "mae", "smape", "mase", "coverage")
MODELS = ("lstm", "naive", "seasonal_naive", "arima", "auto_ets", "auto_arima")


def error_metrics(y: np.ndarray, y_hat: np.ndarray, mase_scale: float) -> dict[str, float]:
    """RMSE, MAE, sMAPE (%) and MASE of predictions `y_hat` of `y` (same shape).

    Targets without a forecast (NaN: a baseline's first rows, or multi-step origins before the test
    split) are left out; all NaN when none is left.
    """
    y, y_hat = np.asarray(y, dtype="float64"), np.asarray(y_hat, dtype="float64")
    forecast = np.isfinite(y_hat)
    if not forecast.any():
        return {"rmse": float("nan"), "mae": float("nan"), "smape": float("nan"), "mase": float("nan")}
    y, y_hat = y[forecast], y_hat[forecast]
    error = y_hat - y
    denominator = np.abs(y) + np.abs(y_hat)
    smape = np.where(denominator > 0, 2 * np.abs(error) / np.where(denominator > 0, denominator, 1), 0.0)
    mae = float(np.mean(np.abs(error)))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": mae,
        "smape": float(100 * np.mean(smape)),
        "mase": mae / mase_scale if mase_scale > 0 else float("nan"),
    }


def naive_predictions(y: np.ndarray, rows: np.ndarray, horizon: int = 1) -> np.ndarray:
    """The last value before each origin, for every step: (len(rows), horizon)."""
    return np.repeat(np.asarray(y, dtype="float64")[np.asarray(rows) - 1][:, None], horizon, axis=1)


def seasonal_naive_predictions(y: np.ndarray, rows: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """`y` one season before each target, seen from the origin (m, horizon); naive where history is short."""
    y = np.asarray(y, dtype="float64")
    steps = np.arange(horizon)
    source = np.asarray(rows)[:, None] + steps - season * ((steps // season) + 1)
    fallback = naive_predictions(y, rows, horizon)
    return np.where(source >= 0, y[np.clip(source, 0, None)], fallback)


def arima_predictions(
    y: np.ndarray, rows: np.ndarray, horizon: int, fit_start: int, fit_stop: int, order: tuple[int, int, int]
) -> np.ndarray:
    """ARIMA forecasts (len(rows), horizon) from each origin, with parameters fitted on `y[fit_start:fit_stop]`."""
    from statsmodels.tsa.arima.model import ARIMA

    y = np.asarray(y, dtype="float64")
    trend = "c" if order[1] == 0 else "n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fit is still usable
        fitted = ARIMA(y[fit_start:fit_stop], order=order, trend=trend).fit()
        results = fitted.apply(y).filter_results
    design, transition = results.design[:, :, 0], results.transition[:, :, 0]
    state = results.predicted_state[:, np.asarray(rows)]  # E[state at origin | y before origin]
    last = len(y) - 1
    forecasts = np.empty((len(rows), horizon))
    for step in range(horizon):
        at = np.minimum(np.asarray(rows) + step, last)
        obs_intercept = results.obs_intercept[0, at if results.obs_intercept.shape[1] > 1 else 0]
        forecasts[:, step] = (design @ state)[0] + obs_intercept
        state_intercept = results.state_intercept[:, at if results.state_intercept.shape[1] > 1 else [0]]
        state = transition @ state + state_intercept
    return forecasts


def evaluate_predictions(
    y: np.ndarray, targets: pd.DataFrame, predictions: pd.DataFrame, baselines: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Metrics of every model on every split and step.

    Args:
        y: the series' values (n,).
        targets: `row, split` of the window origins (m rows).
        predictions: `y_hat, y_lo, y_hi, split, step` (from `assemble_predictions`), m·horizon fitted rows first.
        baselines: name -> (m, horizon) forecasts of the same targets.
    Returns:
        Long table `split, model, step, metric, value`; step 0 pools all steps.
    """
    y = np.asarray(y, dtype="float64")
    fitted = predictions[predictions["split"] != "forecast"]
    horizon = int(fitted["step"].max())
    rows = targets["row"].to_numpy()
    truth = y[rows[:, None] + np.arange(horizon)]
    candidates = {"lstm": fitted["y_hat"].to_numpy().reshape(len(rows), horizon), **baselines}
    inside = ((fitted["y_lo"] <= fitted["y"]) & (fitted["y"] <= fitted["y_hi"])).to_numpy().reshape(len(rows), -1)
    train_stop = int(rows[targets["split"].to_numpy() == "train"].max()) + 1
    mase_scale = float(np.mean(np.abs(np.diff(y[:train_stop]))))
    records = []
    for split_name in ("train", "validation", "test"):
        mask = targets["split"].to_numpy() == split_name
        if not mask.any():
            continue
        for step in range(0, horizon + 1):
            columns = slice(None) if step == 0 else slice(step - 1, step)
            for model, y_hat in candidates.items():
                values = error_metrics(truth[mask][:, columns], y_hat[mask][:, columns], mase_scale)
                if model == "lstm":
                    values["coverage"] = float(np.mean(inside[mask][:, columns]))
                records += [
                    {"split": split_name, "model": model, "step": step, "metric": name, "value": value}
                    for name, value in values.items()
                ]
    return pd.DataFrame.from_records(records)


def select_metrics(
    metrics: pd.DataFrame,
    split: str | None = None,
    model: str | None = None,
    metric: str | None = None,
    step: int | None = 0,
) -> pd.DataFrame:
    """The rows of an evaluate table (long format: split, model, metric, step, value) that match every
    value given (None: any); step 0 is all steps pooled. Rows without a value are left out."""
    mask = np.ones(len(metrics), dtype=bool)
    for column, wanted in (("split", split), ("model", model), ("metric", metric), ("step", step)):
        if wanted is not None:
            mask &= (metrics[column] == wanted).to_numpy()
    return metrics[mask].dropna(subset=["value"])


def pooled_test_metrics(metrics: pd.DataFrame, by: str) -> pd.DataFrame:
    """The test metrics, all steps pooled, of many evaluate tables stacked in one (column `by` naming each
    table's series): one row per value of `by` (in order of appearance), one column `<model>_<metric>` each."""
    test = select_metrics(metrics, split="test")
    wide = test.pivot_table(index=by, columns=["model", "metric"], values="value", aggfunc="first", observed=True)
    wide.columns = [f"{model}_{metric}" for model, metric in wide.columns]
    return wide.reindex(pd.unique(metrics[by]))


def metric_value(metrics: pd.DataFrame, split: str, model: str, metric: str, step: int = 0) -> float:
    """One model's metric on one split (step 0: all steps pooled); NaN when the table lacks it."""
    rows = select_metrics(metrics, split, model, metric, step)
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def metrics_table(metrics: pd.DataFrame, step: int = 0) -> pd.DataFrame:
    """Wide view of one step (0: all steps pooled): one row per split and model, one column per metric."""
    chosen = metrics[metrics["step"] == step] if "step" in metrics else metrics
    wide = chosen.pivot_table(index=["split", "model"], columns="metric", values="value", sort=False)
    return wide.reindex(columns=[m for m in METRICS if m in wide.columns]).reset_index()


@task(name="evaluate", result_serializer="json")
def evaluate(
    config: ForecastConfig, series: str, normalize: str, window: str, predictions: str, model: str, key: str
) -> str:
    """Score the LSTM and the baselines; returns the evaluate key."""
    store = Store(config.artifacts_dir)
    logger = get_run_logger()
    y = store.read_table("generate", series)["y"].to_numpy()
    targets = store.read_table("window", window)
    rows = targets["row"].to_numpy()
    fit_stop = int(targets.loc[targets["split"] == "test", "row"].min())  # the test split's first row
    season = config.season_length or detect_season(y[:fit_stop])
    differenced = read_model_space(store, normalize).kind in ("diff", "level")  # a unit root was found
    order = config.arima_order or (2, int(differenced), 2)
    baselines = {
        "naive": naive_predictions(y, rows, config.horizon),
        "seasonal_naive": seasonal_naive_predictions(y, rows, config.horizon, season),
    }
    described: dict[str, str] = {}
    if config.baselines in ("all", "auto"):
        baselines["arima"] = arima_predictions(
            y, rows, config.horizon, max(0, fit_stop - config.arima_fit_points), fit_stop, order
        )
    if config.baselines in ("all", "auto", "statistical"):
        seasons = tuple(config.seasons or ()) or ((season,) if season > 1 else ())
        statistical, described = statistical_forecasts(
            y, rows, config.horizon, 0, fit_stop, seasons, eval_from=fit_stop
        )
        baselines.update(statistical)
    metrics = evaluate_predictions(y, targets, store.read_table("predict", predictions), baselines)
    store.write_table(
        "evaluate",
        key,
        metrics,
        metadata={"season_length": season, "arima_order": list(order), "statistical_baselines": described},
    )
    logger.info(
        "season length %d, ARIMA%s; %s; metrics (all steps):\n%s",
        season,
        order,
        "; ".join(f"{name}: {text}" for name, text in described.items()),
        metrics_table(metrics).to_string(index=False, float_format="%.4f"),
    )
    return key
