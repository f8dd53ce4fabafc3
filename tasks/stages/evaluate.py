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

One combination is scored beside them where the statistical baselines were fitted: `combined`, half the
LSTM's forecast and half the mean of AutoETS' and AutoARIMA's (`combined_predictions`).

Metrics per split, model and step ahead (`step` 0 pools all steps): RMSE, MAE (series
units), sMAPE (percent), MASE (MAE over the in-sample one-step naive MAE of the training
part); for the LSTM also `coverage`, the share of targets inside its prediction interval.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.baselines import fit_scale, statistical_forecasts
from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.defaults import detect_season
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.intervals import conformal_widths
from lstm_forecast.tasks.core.space import fixed_kind, read_model_space, stored_model_space
from lstm_forecast.tasks.core.store import ChunkColumns, ChunkTables, ChunkWork, Store, each_series_of_chunk
from lstm_forecast.tasks.core.windows import forecast_origins

METRICS = ("rmse", "mae", "smape", "mase", "coverage")
COMBINED = "combined"
MODELS = ("lstm", "naive", "seasonal_naive", "arima", "auto_ets", "auto_arima", COMBINED)
BASELINES = tuple(name for name in MODELS if name not in ("lstm", COMBINED))


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

    scale = fit_scale(y[fit_start:fit_stop])
    y = np.asarray(y, dtype="float64") / scale
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
    return forecasts * scale


def combined_predictions(lstm: np.ndarray, statistical: dict[str, np.ndarray]) -> np.ndarray | None:
    """Half the LSTM's forecasts plus half the mean of the statistical ones (each the same shape as `lstm`);
    NaN wherever one is missing, None when there is no statistical forecast.

    A combination across model families with fixed weights, as the M4 competition's combinations and the
    ES-RNN hybrid combine: weights fitted on a short series' few validation windows are mostly noise, and the
    statistical models have seen the validation part. The LSTM keeps half whatever number of statistical
    models was fitted (one is left out when all its fits fail).
    """
    if not statistical:
        return None
    return 0.5 * np.asarray(lstm, dtype="float64") + 0.5 * np.mean(np.stack(list(statistical.values())), axis=0)


def evaluate_predictions(
    y: np.ndarray, targets: pd.DataFrame, predictions: pd.DataFrame, baselines: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Metrics of every model on every split and step.

    Args:
        y: the series' values (n,).
        targets: `row, split` of the window origins (m rows).
        predictions: `y, y_hat, y_lo, y_hi, split, step` (from `assemble_predictions`), m·horizon fitted rows
            first.
        baselines: name -> (m, horizon) forecasts of the same targets (the baselines and the combination).
    Returns:
        Long table `split, model, step, metric, value`; step 0 pools all steps.
    """
    fitted = (predictions["split"] != "forecast").to_numpy()
    columns = {name: predictions[name].to_numpy()[fitted] for name in ("y", "y_hat", "y_lo", "y_hi")}
    horizon = int(predictions["step"].to_numpy()[fitted].max())
    rows, splits = targets["row"].to_numpy(), targets["split"].to_numpy()
    return pd.DataFrame(metrics_of_arrays(y, rows, splits, columns, horizon, baselines))


def metrics_of_arrays(
    y: np.ndarray,
    rows: np.ndarray,
    splits: np.ndarray,
    fitted: dict[str, np.ndarray],
    horizon: int,
    baselines: dict[str, np.ndarray],
    train_stop: int | None = None,
) -> dict[str, np.ndarray]:
    """The columns of `evaluate_predictions`, on arrays: origin `rows` (m,) and their `splits` (m,); `fitted`
    holds the predictions' fitted rows (m·horizon,) by column (`y`, `y_hat`, `y_lo`, `y_hi`). MASE is scaled by
    the mean absolute step of the rows before `train_stop` (default: the row after the last train origin).

    Every model's metrics of a split are computed at once for all steps (`split_metrics`), with the same
    reductions over the same values as `error_metrics` per step, so the numbers are the same to the bit.
    """
    return metrics_of_many([MetricsInputs(y, rows, splits, fitted, horizon, baselines, train_stop)])[0]


@dataclass(frozen=True)
class MetricsInputs:
    """One series' arguments of `metrics_of_arrays`."""

    y: np.ndarray
    rows: np.ndarray
    splits: np.ndarray
    fitted: dict[str, np.ndarray]
    horizon: int
    baselines: dict[str, np.ndarray]
    train_stop: int | None = None


SPLITS = ("train", "validation", "test")


def metrics_of_many(inputs: list[MetricsInputs]) -> list[dict[str, np.ndarray]]:
    """`metrics_of_arrays` of many series (the columns of each, in order), the same to the bit: the splits of
    series with the same models, horizon and number of origins there are scored together (`split_metrics` on
    their stacked arrays: its reductions run along the same contiguous rows as for one series), as a panel's
    series mostly are; a series with a missing forecast (NaN) is scored alone."""
    prepared = []
    groups: dict[tuple, list[tuple[int, int]]] = {}  # (split, models, horizon, origins) -> (series, split number)
    for number, one in enumerate(inputs):
        y, rows, splits, horizon = np.asarray(one.y, dtype="float64"), one.rows, one.splits, one.horizon
        candidates = {"lstm": np.asarray(one.fitted["y_hat"]).reshape(len(rows), horizon), **one.baselines}
        names = tuple(candidates)
        stacked = np.stack([np.asarray(candidates[name], dtype="float64") for name in names])  # (models, m, h)
        truth = y[rows[:, None] + np.arange(horizon)]
        inside = ((one.fitted["y_lo"] <= one.fitted["y"]) & (one.fitted["y"] <= one.fitted["y_hi"])).reshape(
            len(rows), -1
        )
        train_stop = one.train_stop if one.train_stop is not None else int(rows[splits == "train"].max()) + 1
        mase_scale = float(np.mean(np.abs(np.diff(y[:train_stop]))))
        whole = bool(np.isfinite(stacked).all())  # else `split_metrics` scores each model with a NaN on its own
        parts = []
        for split_name in SPLITS:
            mask = splits == split_name
            if mask.any():
                part = (split_name, truth[mask], stacked[:, mask], inside[mask].astype("float64"))
                if whole:
                    key = (split_name, names, horizon, int(mask.sum()))
                    groups.setdefault(key, []).append((number, len(parts)))
                parts.append(part)
        prepared.append((names, horizon, mase_scale, parts))
    scored: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        truths = np.stack([prepared[i][3][j][1] for i, j in members])  # (series, m, h)
        forecasts = np.stack([prepared[i][3][j][2] for i, j in members])  # (series, models, m, h)
        insides = np.stack([prepared[i][3][j][3] for i, j in members])
        scales = np.array([prepared[i][2] for i, _ in members])
        values = split_metrics(truths, forecasts, scales)
        coverage = step_means(insides)
        for position, member in enumerate(members):
            scored[member] = (values[position], coverage[position])
    columns = []
    for number, (names, horizon, mase_scale, parts) in enumerate(prepared):
        results = []
        for index, (split_name, truth, stacked, inside) in enumerate(parts):
            found = scored.get((number, index))
            if found is None:
                found = (split_metrics(truth, stacked, mase_scale), step_means(inside))
            results.append((split_name, *found))
        columns.append(metric_columns(results, list(names), horizon))
    return columns


def step_means(values: np.ndarray) -> np.ndarray:
    """Means of an (m, horizon) array: all of it (pooled), then each column; (horizon + 1,). Each mean reduces
    the same values in the same order as `np.mean` of that 1-d selection. Leading axes (series) are kept:
    (…, m, horizon) -> (…, horizon + 1)."""
    *lead, rows, horizon = values.shape
    pooled = np.mean(values.reshape(*lead, rows * horizon), axis=-1)
    per_step = np.mean(np.ascontiguousarray(np.swapaxes(values, -1, -2)), axis=-1)
    return np.concatenate([pooled[..., None], per_step], axis=-1)


def split_metrics(truth: np.ndarray, y_hat: np.ndarray, mase_scale: float | np.ndarray) -> np.ndarray:
    """RMSE, MAE, sMAPE and MASE (`error_metrics`) of models' forecasts `y_hat` (models, m, horizon) of `truth`
    (m, horizon), pooled over all steps and per step: (horizon + 1, models, 4), step 0 pooled. Many series at
    once: `truth` (series, m, horizon), `y_hat` (series, models, m, horizon) and `mase_scale` (series,), each
    forecast finite, give (series, horizon + 1, models, 4).

    A model with a missing forecast (NaN) is scored per step by `error_metrics` itself (it leaves those out).
    """
    if truth.ndim == 3:
        error = y_hat - truth[:, None]
        denominator = np.abs(truth[:, None]) + np.abs(y_hat)
        smape = np.where(denominator > 0, 2 * np.abs(error) / np.where(denominator > 0, denominator, 1), 0.0)
        mse, mae, mean_smape = (pooled_and_per_step(values) for values in (error**2, np.abs(error), smape))
        scales = np.asarray(mase_scale, dtype="float64")[:, None, None]
        mase = np.divide(mae, scales, out=np.full_like(mae, np.nan), where=scales > 0)
        return np.stack([np.sqrt(mse), mae, 100 * mean_smape, mase], axis=-1)
    models, _, horizon = y_hat.shape
    out = np.empty((horizon + 1, models, 4))
    finite = np.isfinite(y_hat).reshape(models, -1).all(axis=1)
    if finite.any():
        error = y_hat[finite] - truth
        denominator = np.abs(truth) + np.abs(y_hat[finite])
        smape = np.where(denominator > 0, 2 * np.abs(error) / np.where(denominator > 0, denominator, 1), 0.0)
        squared, absolute = error**2, np.abs(error)
        mse, mae, mean_smape = (pooled_and_per_step(values) for values in (squared, absolute, smape))
        out[:, finite, 0] = np.sqrt(mse)
        out[:, finite, 1] = mae
        out[:, finite, 2] = 100 * mean_smape
        out[:, finite, 3] = mae / mase_scale if mase_scale > 0 else float("nan")
    for model in np.flatnonzero(~finite):
        for step in range(horizon + 1):
            columns = slice(None) if step == 0 else slice(step - 1, step)
            values = error_metrics(truth[:, columns], y_hat[model][:, columns], mase_scale)
            out[step, model] = [values[name] for name in ("rmse", "mae", "smape", "mase")]
    return out


def pooled_and_per_step(values: np.ndarray) -> np.ndarray:
    """Means of (models, m, horizon) values per model: pooled over rows and steps, then per step (the rows of
    one step); (horizon + 1, models), each reducing its values in the order `np.mean` of a 1-d array does.
    Leading axes (series) are kept: (…, models, m, horizon) -> (…, horizon + 1, models)."""
    *lead, models, rows, horizon = values.shape
    pooled = np.mean(values.reshape(*lead, models, rows * horizon), axis=-1)
    per_step = np.mean(np.ascontiguousarray(np.moveaxis(values, -1, -3)), axis=-1)  # (…, horizon, models)
    return np.concatenate([pooled[..., None, :], per_step], axis=-2)


def metric_columns(
    parts: list[tuple[str, np.ndarray, np.ndarray]], names: list[str], horizon: int
) -> dict[str, np.ndarray]:
    """The columns of the long table `split, model, step, metric, value` of each split's `split_metrics` and LSTM
    coverage, in the order split, step, model, metric (coverage after the LSTM's four)."""
    per_model = [4 + (name == "lstm") for name in names]
    block = sum(per_model)  # rows per split and step
    starts = np.cumsum([0, *per_model[:-1]])
    lstm = names.index("lstm")
    values = np.empty((len(parts), horizon + 1, block))
    for number, (_, metrics, coverage) in enumerate(parts):
        for index, start in enumerate(starts):
            values[number, :, start : start + 4] = metrics[:, index, :]
        values[number, :, starts[lstm] + 4] = coverage
    split, model, step, metric = _label_columns(tuple(name for name, _, _ in parts), tuple(names), horizon)
    # The label columns are shared and read-only: a table made of them copies them (pandas' default for a dict).
    return {"split": split, "model": model, "step": step, "metric": metric, "value": values.reshape(-1)}


@functools.lru_cache(maxsize=64)
def _label_columns(
    splits: tuple[str, ...], names: tuple[str, ...], horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`metric_columns`' `split, model, step, metric` columns: the same for every series of a run with the same
    splits, models and horizon, so built once (a panel's evaluate builds tens of thousands of tables)."""
    per_model = [4 + (name == "lstm") for name in names]
    block = sum(per_model)
    model_column = np.repeat(np.array(names, dtype=object), per_model)
    metric_column = np.concatenate(
        [np.array(["rmse", "mae", "smape", "mase", "coverage"][:count], dtype=object) for count in per_model]
    )
    blocks = len(splits) * (horizon + 1)
    columns = (
        np.repeat(np.array(splits, dtype=object), (horizon + 1) * block),
        np.tile(model_column, blocks),
        np.tile(np.repeat(np.arange(horizon + 1, dtype="int64"), block), len(splits)),
        np.tile(metric_column, blocks),
    )
    for column in columns:
        column.flags.writeable = False
    return columns


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


@dataclass(frozen=True)
class SeriesToEvaluate:
    """One series' inputs to evaluate: its values, the window origins predict forecast (`row`, `split`), the
    fitted rows of its predictions (`y`, `y_hat`, `y_lo`, `y_hi`, m·horizon each), its model space's kind, the
    LSTM's forecast past the end of the data (horizon,) and the row after its last train origin (MASE's scale
    ends there, whichever origins were forecast)."""

    y: np.ndarray
    rows: np.ndarray
    splits: np.ndarray
    fitted: dict[str, np.ndarray]
    kind: str
    future: np.ndarray
    train_stop: int | None = None


def scored_origins(rows: np.ndarray, splits: np.ndarray, train_forecasts: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """The window origins (`rows`, `splits`, (m,) each) that predict forecast (`forecast_origins`), and the row
    after the last train origin."""
    rows, splits = np.asarray(rows), np.asarray(splits)
    kept = forecast_origins(splits, train_forecasts)
    return rows[kept], splits[kept], int(rows[splits == "train"].max()) + 1


def series_to_evaluate(
    y: np.ndarray, targets: pd.DataFrame, predictions: pd.DataFrame, kind: str, train_forecasts: bool = True
) -> SeriesToEvaluate:
    fitted = (predictions["split"] != "forecast").to_numpy()
    rows, splits, train_stop = scored_origins(targets["row"].to_numpy(), targets["split"].to_numpy(), train_forecasts)
    return SeriesToEvaluate(
        np.asarray(y),
        rows,
        splits,
        {name: predictions[name].to_numpy()[fitted] for name in ("y", "y_hat", "y_lo", "y_hi")},
        kind,
        predictions["y_hat"].to_numpy()[~fitted],
        train_stop,
    )


# The statistical baselines' forecasts of one series (name -> (len(rows), horizon)), what each one fitted, and
# with `--forecast-model combined` each one's forecast past the end of the data (name -> (horizon,); else {}).
Statistical = tuple[dict[str, np.ndarray], dict[str, str], dict[str, np.ndarray]]


def statistical_part(config: ForecastConfig, y: np.ndarray, rows: np.ndarray, splits: np.ndarray) -> Statistical:
    """The statistical baselines `config` names (AutoETS, AutoARIMA; none: empty) of the series `y` (n,), for
    its windows' first targets `rows` in splits `splits`. They read no model: a global run computes them while
    its network trains (`statistical_ahead`)."""
    if config.baselines not in ("all", "auto", "statistical"):
        return {}, {}, {}
    fit_stop = int(rows[splits == "test"].min())  # the test split's first row
    seasons = statistical_seasons(config, y[:fit_stop])
    forecasts, described = statistical_forecasts(y, rows, config.horizon, 0, fit_stop, seasons, eval_from=fit_stop)
    if config.forecast_model != COMBINED:
        return forecasts, described, {}
    # The forecast a combination publishes, from models refitted on every row as the network's forecaster is:
    # with the parameters fitted before the test split, M4 Weekly's combined OWA was 0.779; refitted, 0.741.
    future = statistical_future(y, config.horizon, seasons)
    return forecasts, described, {name: values for name, values in future.items() if name in forecasts}


def statistical_seasons(config: ForecastConfig, train_y: np.ndarray) -> tuple[int, ...]:
    """The season lengths AutoETS and AutoARIMA model: the config's seasons, else its (or `train_y`'s) season."""
    season = config.season_length or detect_season(train_y)
    return tuple(config.seasons or ()) or ((season,) if season > 1 else ())


def statistical_future(y: np.ndarray, horizon: int, seasons: tuple[int, ...]) -> dict[str, np.ndarray]:
    """AutoETS' and AutoARIMA's forecasts (horizon,) after the end of `y` (n,), fitted on every row."""
    end = len(y)
    future, _ = statistical_forecasts(y, np.array([end]), horizon, 0, end, seasons, eval_from=end)
    return {name: values[0] for name, values in future.items()}


def combined_future(config: ForecastConfig, y: np.ndarray, lstm: np.ndarray) -> np.ndarray | None:
    """The combination's forecast (steps,) after the end of `y` (n,), from the LSTM's `lstm` (steps,) and the
    statistical models refitted on every row (with the seasons of `config`, the series' own sized config);
    None when none of them fits or a forecast is not finite."""
    y = np.asarray(y, dtype="float64")
    statistical = statistical_future(y, len(lstm), statistical_seasons(config, y))
    combined = combined_predictions(np.asarray(lstm, dtype="float64"), statistical)
    return combined if combined is not None and np.isfinite(combined).all() else None


def score_series(
    config: ForecastConfig, data: SeriesToEvaluate, statistical: Statistical | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The evaluate table's columns of one series (the LSTM, the baselines `config` names and, with statistical
    baselines, their combination with the LSTM) and its metadata; `statistical`: its `statistical_part` when it
    was computed ahead."""
    inputs, metadata = scoring_inputs(config, data, statistical)
    return metrics_of_many([inputs])[0], metadata


def scoring_inputs(
    config: ForecastConfig, data: SeriesToEvaluate, statistical: Statistical | None = None
) -> tuple[MetricsInputs, dict[str, Any]]:
    """`score_series` up to its metrics: what they are computed from (every model's forecasts), and the
    metadata."""
    y, rows = data.y, data.rows
    fit_stop = int(rows[data.splits == "test"].min())  # the test split's first row
    season = config.season_length or detect_season(y[:fit_stop])
    order = config.arima_order or (2, int(data.kind in ("diff", "level")), 2)  # a unit root was found
    others = {
        "naive": naive_predictions(y, rows, config.horizon),
        "seasonal_naive": seasonal_naive_predictions(y, rows, config.horizon, season),
    }
    if config.baselines in ("all", "auto"):
        others["arima"] = arima_predictions(
            y, rows, config.horizon, max(0, fit_stop - config.arima_fit_points), fit_stop, order
        )
    forecasts, described, future = (
        statistical if statistical is not None else statistical_part(config, y, rows, data.splits)
    )
    others.update(forecasts)
    horizon = len(data.fitted["y_hat"]) // len(rows)
    combined = combined_predictions(np.asarray(data.fitted["y_hat"]).reshape(len(rows), horizon), forecasts)
    metadata = {"season_length": season, "arima_order": list(order), "statistical_baselines": described}
    if combined is not None:
        others[COMBINED] = combined
        ahead = combined_predictions(np.asarray(data.future, dtype="float64"), future) if future else None
        if ahead is not None and np.isfinite(ahead).all():  # the forecast table's rows with --forecast-model combined
            metadata["combined_forecast"] = [float(value) for value in ahead]
            metadata["combined_widths"] = [float(value) for value in combined_widths(config, data, combined)]
    return MetricsInputs(y, rows, data.splits, data.fitted, horizon, others, data.train_stop), metadata


def combined_widths(config: ForecastConfig, data: SeriesToEvaluate, combined: np.ndarray) -> np.ndarray:
    """Split-conformal half-widths (horizon,) of the combined forecast (m, horizon), from its errors on the test
    split: the one part of the data neither the network nor the statistical models were fitted on. Its published
    interval is then calibrated for it, not borrowed from the LSTM's."""
    horizon = combined.shape[1]
    test = np.flatnonzero(data.splits == "test")
    test = test[np.isfinite(combined[test]).all(axis=1)]
    truth = np.asarray(data.y, dtype="float64")[data.rows[test][:, None] + np.arange(horizon)]
    return conformal_widths(truth, combined[test], config.interval_level)


def log_metrics(metrics: pd.DataFrame, metadata: dict[str, Any]) -> None:
    described = metadata["statistical_baselines"]
    stage_logger().info(
        "season length %d, ARIMA%s; %s; metrics (all steps):\n%s",
        metadata["season_length"],
        tuple(metadata["arima_order"]),
        "; ".join(f"{name}: {text}" for name, text in described.items()),
        metrics_table(metrics).to_string(index=False, float_format="%.4f"),
    )


@task(name="evaluate", result_serializer="json")
def evaluate(
    config: ForecastConfig, series: str, normalize: str, window: str, predictions: str, model: str, key: str
) -> str:
    """Score the LSTM and the baselines; returns the evaluate key."""
    store = Store(config.artifacts_dir)
    data = series_to_evaluate(
        store.read_table("generate", series)["y"].to_numpy(),
        store.read_table("window", window),
        store.read_table("predict", predictions),
        fixed_kind(config.transform) or read_model_space(store, normalize).kind,
        config.train_forecasts,
    )
    columns, metadata = score_series(config, data)
    metrics = pd.DataFrame(columns)
    store.write_table("evaluate", key, metrics, metadata=metadata)
    log_metrics(metrics, metadata)
    return key


def evaluate_chunk(work: ChunkWork, ahead: list[Statistical | None] | None = None) -> list[Exception | None]:
    """`evaluate` of many series at once, each `(config, its inputs' keys, its key)`: each input stage's
    outputs read once for the chunk (`Store.read_columns`), the metrics of all of them computed together
    (`metrics_of_many`), the metrics table logged for the first series only; `ahead`: per series, its
    `statistical_part` when it was computed ahead (else None). Returns, per series, None or the error it
    failed with (it fails alone)."""
    computed = {key: part for (_, _, key), part in zip(work, ahead or [], strict=False) if part is not None}
    scoring: list[tuple[Store, str, MetricsInputs, dict[str, Any]]] = []

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        predicted = own["predictions"]
        fitted = predicted["split"] != "forecast"
        rows, splits, train_stop = scored_origins(own["window"]["row"], own["window"]["split"], config.train_forecasts)
        data = SeriesToEvaluate(
            own["series"]["y"],
            rows,
            splits,
            {name: predicted[name][fitted] for name in ("y", "y_hat", "y_lo", "y_hi")},
            fixed_kind(config.transform) or stored_model_space(own["normalize"]).kind,
            predicted["y_hat"][~fitted],
            train_stop,
        )
        inputs, metadata = scoring_inputs(config, data, computed.get(key))
        scoring.append((store, key, inputs, metadata))
        return lambda: log_metrics(pd.DataFrame(metrics_of_many([inputs])[0]), metadata)

    chosen = any(fixed_kind(config.transform) is None for config, _, _ in work)  # else no footer to read
    errors = each_series_of_chunk(work, EVALUATE_COLUMNS, one, described={"normalize": "normalize"} if chosen else None)
    try:
        scored = metrics_of_many([inputs for _, _, inputs, _ in scoring])
    except Exception:  # noqa: BLE001 - each series scored alone below, so that one that fails fails alone
        scored = [None] * len(scoring)
    positions = {key: index for index, (_, _, key) in enumerate(work)}
    tables = ChunkTables("evaluate")
    for (store, key, inputs, metadata), columns in zip(scoring, scored, strict=True):
        try:
            tables.add(store, key, columns if columns is not None else metrics_of_many([inputs])[0], metadata)
        except Exception as error:  # noqa: BLE001 - reported per series
            errors[positions[key]] = error
    tables.write()  # one table of the chunk's series, not a table each
    return errors


def statistical_ahead(work: ChunkWork) -> dict[str, Statistical]:
    """The part of `evaluate` that reads no model, for many series before their model exists (`Stage.ahead`),
    each `(config, its prepared inputs' keys, its id)`: the `statistical_part` of each series whose config
    names statistical baselines, by id. A series that fails here is left out: evaluate computes it again and
    reports why."""
    wanted = [(config, upstream, series_id) for config, upstream, series_id in work if config.baselines != "naive"]
    done: dict[str, Statistical] = {}

    def one(store: Store, config: ForecastConfig, upstream: dict, key: str, own: ChunkColumns) -> Callable[[], None]:
        rows, splits, _ = scored_origins(own["window"]["row"], own["window"]["split"], config.train_forecasts)
        done[key] = statistical_part(config, own["series"]["y"], rows, splits)
        return lambda: None  # the series' id stands in its work's key

    each_series_of_chunk(wanted, {name: EVALUATE_COLUMNS[name] for name in ("series", "window")}, one)
    return done


# evaluate's table inputs read for a whole chunk: argument -> (stage, the columns it needs)
EVALUATE_COLUMNS = {
    "series": ("generate", ("y",)),
    "window": ("window", ("row", "split")),
    "predictions": ("predict", ("y", "y_hat", "y_lo", "y_hi", "split")),
}
