"""Half-hourly electricity demand with covariates: day-ahead forecasts over the last four weeks of 2014.

    .venv/bin/python benchmarks/elecdemand.py                                  # every row
    .venv/bin/python benchmarks/elecdemand.py --only naive arima               # the baselines alone (a minute)
    .venv/bin/python benchmarks/elecdemand.py --only lstm [--extra "ARGS"] [--store DIR] [--json-out FILE]

The data (`ds, y, workday, temperature`, 17,520 half-hours of 2014; see its README.md) is read from
`--data` (default: ../shared/data/elecdemand/elecdemand.parquet from the repository root). The test
period is the last `--days` days (default 28): one forecast origin per day at midnight, each forecasting
the next 48 half-hours from everything before it. Every model is scored on the same 28 x 48 points:
pooled RMSE and MAE (GW), and RMSE over the seasonal naive forecast's (m = 48).

Rows:
- seasonal naive, m = 48 (yesterday) and m = 336 (the same day last week);
- AutoARIMA(season 48) of statsforecast, with `workday` and `temperature` as exogenous regressors (the
  observed temperature of the 48 steps stands in for a forecast, as the data's README says) and without.
  Fitted once on the `--arima-weeks` weeks before the first origin (default 8, 2,688 points: a seasonal
  AutoARIMA search on all 16,000 points takes far too long, and eight weeks hold the current season's
  level and temperature response), then, per origin, `forward`: the fitted model's Kalman filter over
  the window's start to the origin, then 48 steps (parameters fixed, as the pipeline's own baselines do);
- lstm-forecast: the model trained once on everything before the first origin, the network alone,

      lstm-forecast run --input train.parquet --horizon 48 --json --artifacts-dir STORE --forecast-model lstm [EXTRA]

  then one process per origin, forecasting from the data up to it:

      lstm-forecast predict --horizon 48 --input upto_ORIGIN.parquet --output out.parquet --json --artifacts-dir STORE

- lstm-forecast with covariates: the same with `--future-columns workday,temperature --future FILE` added
  to `run` (its input then holds the two columns; FILE: their values on the first test day, which the run
  forecasts) and `--future FILE` to each `predict` (`ds, workday, temperature` of the 48 steps after the
  origin). Skipped, with a note, when `lstm-forecast run --help` does not list `--future-columns`.

Wall time of a row: fitting plus every origin's forecast (for the LSTM: the run, then the 28 predict
processes, each importing TensorFlow and loading the model). The Prefect server is handled as in real.py
(PREFECT_API_URL if set, else one started for the runs).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.real import BIN, cli_env, json_safe, prefect_server, run_cli  # noqa: E402

HORIZON = 48  # half-hours: one day
DAY, WEEK = 48, 336
COVARIATES = ["workday", "temperature"]
ROWS = ("naive", "arima", "lstm", "lstm-covariates")


@dataclass
class Result:
    """One row of the table: forecasts (origins, HORIZON) or the reason there are none."""

    name: str
    forecasts: np.ndarray | None = field(default=None, repr=False)
    wall_s: float = math.nan
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def origins_of(frame: pd.DataFrame, days: int) -> np.ndarray:
    """Row numbers of the `days` forecast origins, one per day at midnight: the first row of each of the
    last `days` whole days (the data must end at a day's last half-hour)."""
    last_midnights = np.flatnonzero((frame["ds"].dt.hour == 0) & (frame["ds"].dt.minute == 0))[-days:]
    if len(last_midnights) < days or last_midnights[-1] + HORIZON != len(frame):
        raise ValueError(f"the data must end with {days} whole days of {HORIZON} half-hours")
    return last_midnights


def actuals(y: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """The values each origin forecasts, (origins, HORIZON)."""
    return np.stack([y[origin : origin + HORIZON] for origin in origins])


def pooled_errors(forecasts: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """RMSE and MAE over every origin and step pooled."""
    errors = forecasts - actual
    return float(np.sqrt(np.mean(errors**2))), float(np.mean(np.abs(errors)))


def seasonal_naive(y: np.ndarray, origins: np.ndarray, m: int) -> np.ndarray:
    """The `m` values before each origin, continued over the horizon, (origins, HORIZON)."""
    return np.stack([np.resize(y[origin - m : origin], HORIZON) for origin in origins])


def arima_forecasts(
    frame: pd.DataFrame, origins: np.ndarray, window: int, regressors: list[str]
) -> tuple[np.ndarray, str]:
    """AutoARIMA(season 48) fitted once on the `window` points before the first origin (with `regressors`
    as exogenous columns), then per origin its `forward` over the window's start to the origin and the next
    HORIZON steps (their regressor values known). Returns the forecasts (origins, HORIZON) and the model."""
    from statsforecast.models import AutoARIMA

    y = frame["y"].to_numpy(dtype="float64")
    x = frame[regressors].to_numpy(dtype="float64") if regressors else None
    start = origins[0] - window
    with warnings.catch_warnings():  # the order search warns about every fit that converges slowly
        warnings.simplefilter("ignore")
        model = AutoARIMA(season_length=DAY, approximation=True).fit(
            y[start : origins[0]], None if x is None else x[start : origins[0]]
        )
        rows = []
        for origin in origins:
            past, future = slice(start, origin), slice(origin, origin + HORIZON)
            result = model.forward(
                y[past], HORIZON, X=None if x is None else x[past], X_future=None if x is None else x[future]
            )
            rows.append(result["mean"])
    p, q, big_p, big_q, _, d, big_d = model.model_["arma"]
    return np.stack(rows), f"ARIMA({p},{d},{q})({big_p},{big_d},{big_q})[{DAY}]"


def cli_knows(command: str, flag: str, env: dict[str, str]) -> bool:
    """Whether `lstm-forecast COMMAND --help` lists `flag`."""
    done = subprocess.run([str(BIN / "lstm-forecast"), command, "--help"], env=env, capture_output=True, text=True)
    return flag in done.stdout


def lstm_forecasts(
    frame: pd.DataFrame,
    origins: np.ndarray,
    folder: Path,
    store: Path,
    env: dict[str, str],
    extra: list[str],
    covariates: list[str],
    timeout: float | None,
    log: Callable[[str], None],
) -> Result:
    """lstm-forecast trained once on the rows before the first origin (with `covariates` as future-known
    columns when given), then one `predict` process per origin on the rows before it."""
    name = "lstm-forecast" + (f" + {', '.join(covariates)}" if covariates else "")
    columns = ["ds", "y", *covariates]
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "train.parquet"
    frame.iloc[: origins[0]][columns].to_parquet(train, index=False)
    run_args = ["run", "--input", str(train), "--horizon", str(HORIZON), "--json", "--artifacts-dir", str(store)]
    # The network alone, with and without the covariates: a single series without them publishes its combination
    # with AutoETS and AutoARIMA by default (`--forecast-model auto`), and `predict` would follow it. An
    # `--extra "--forecast-model auto"` given later wins.
    run_args += ["--forecast-model", "lstm"]
    if covariates:  # the run's own forecast of the first day needs that day's covariates
        first_day = folder / "future_run.parquet"
        frame.iloc[origins[0] : origins[0] + HORIZON][["ds", *covariates]].to_parquet(first_day, index=False)
        run_args += ["--future-columns", ",".join(covariates), "--future", str(first_day)]
    log(f"{name}: lstm-forecast {shlex.join([*run_args, *extra])} ...")
    run = run_cli([*run_args, *extra], env, timeout)
    if run.exit != 0 or run.result is None:
        return Result(name, None, run.wall_s, f"run failed: exit {run.exit}: {run.error[:300]}")
    log(f"{name}: trained in {run.wall_s:.0f} s; predicting from {len(origins)} origins ...")
    test_metrics = run.result.get("metrics", {}).get("test", {})
    details: dict[str, Any] = {
        "run_wall_s": run.wall_s,
        "run_test_rmse": {model: values.get("rmse") for model, values in test_metrics.items()},
        "predict_wall_s": [],
    }
    rows = []
    for number, origin in enumerate(origins):
        history = folder / f"upto_{number:02d}.parquet"
        frame.iloc[:origin][columns].to_parquet(history, index=False)
        output = folder / f"forecast_{number:02d}.parquet"
        predict_args = ["predict", "--horizon", str(HORIZON), "--input", str(history), "--output", str(output)]
        predict_args += ["--json", "--artifacts-dir", str(store)]
        if covariates:
            future = folder / f"future_{number:02d}.parquet"
            frame.iloc[origin : origin + HORIZON][["ds", *covariates]].to_parquet(future, index=False)
            predict_args += ["--future", str(future)]
        predicted = run_cli(predict_args, env, timeout)
        details["predict_wall_s"].append(predicted.wall_s)
        if predicted.exit != 0:
            return Result(
                name,
                None,
                run.wall_s + sum(details["predict_wall_s"]),
                f"predict from {frame['ds'].iloc[origin]} failed: exit {predicted.exit}: {predicted.error[:300]}",
                details,
            )
        table = pd.read_parquet(output).sort_values("ds")
        expected = frame["ds"].iloc[origin : origin + HORIZON].to_numpy()
        if len(table) != HORIZON or not np.array_equal(pd.to_datetime(table["ds"]).to_numpy(), expected):
            return Result(
                name, None, math.nan, f"predict from {expected[0]}: its ds are not the next {HORIZON} half-hours"
            )
        rows.append(table["y_hat"].to_numpy(dtype="float64"))
    wall = run.wall_s + sum(details["predict_wall_s"])
    if forecasts_path := run.result.get("artifacts", {}).get("forecasts"):  # the run's own forecast of day one
        own = pd.read_parquet(forecasts_path).sort_values("ds")["y_hat"].to_numpy(dtype="float64")
        if len(own) == HORIZON:
            details["first_predict_vs_run_max_abs_diff"] = float(np.max(np.abs(own - rows[0])))
    log(f"{name}: {len(origins)} predicts in {sum(details['predict_wall_s']):.0f} s")
    return Result(name, np.stack(rows), wall, details=details)


def _fmt(value: float, spec: str) -> str:
    return "-" if not math.isfinite(value) else format(value, spec)


def scores(results: list[Result], actual: np.ndarray) -> list[dict[str, Any]]:
    """Each row's pooled RMSE, MAE and RMSE over the first row's (the seasonal naive, m = 48)."""
    rows = []
    for result in results:
        rmse, mae = pooled_errors(result.forecasts, actual) if result.forecasts is not None else (math.nan, math.nan)
        rows.append({"row": result.name, "rmse": rmse, "mae": mae, "wall_s": result.wall_s, "note": result.note})
    reference = rows[0]["rmse"]
    for row in rows:
        row["rmse_over_snaive48"] = row["rmse"] / reference if math.isfinite(reference) else math.nan
    return rows


def print_table(rows: list[dict[str, Any]], points: int) -> None:
    width = max(len(row["row"]) for row in rows) + 2
    head = f"{'row':<{width}}{'RMSE':>9}{'MAE':>9}{'/ snaive48':>12}{'wall s':>9}"
    print(f"pooled over {points} points (GW)")
    print(head)
    print("-" * len(head))
    for row in rows:
        print(
            f"{row['row']:<{width}}{_fmt(row['rmse'], '.4f'):>9}{_fmt(row['mae'], '.4f'):>9}"
            f"{_fmt(row['rmse_over_snaive48'], '.3f'):>12}{_fmt(row['wall_s'], '.1f'):>9}"
            + (f"  {row['note']}" if row["note"] else "")
        )


def timed(name: str, compute: Callable[[], tuple[np.ndarray, str]]) -> Result:
    started = time.perf_counter()
    forecasts, note = compute()
    return Result(name, forecasts, time.perf_counter() - started, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "elecdemand" / "elecdemand.parquet",
        help="the data (default: ../shared/data/elecdemand/elecdemand.parquet)",
    )
    parser.add_argument("--days", type=int, default=28, help="test days, one origin each (default 28)")
    parser.add_argument(
        "--only", nargs="+", choices=ROWS, default=list(ROWS), help="rows to run (default: all; naive always runs)"
    )
    parser.add_argument("--arima-weeks", type=int, default=8, help="weeks AutoARIMA is fitted on (default 8)")
    parser.add_argument("--extra", default="", help='extra flags for the LSTM runs, e.g. --extra "--epochs 20"')
    parser.add_argument("--timeout", type=float, default=None, help="seconds one CLI call may take (default: none)")
    parser.add_argument(
        "--temporary-server", action="store_true", help="let each CLI call start Prefect's temporary server"
    )
    parser.add_argument(
        "--store", type=Path, help="the LSTM runs' artifact stores go under this folder (default: a temporary one)"
    )
    parser.add_argument("--json-out", metavar="FILE", help="write the scores as JSON to FILE")
    args = parser.parse_args()

    frame = pd.read_parquet(args.data).sort_values("ds").reset_index(drop=True)
    origins = origins_of(frame, args.days)
    y = frame["y"].to_numpy(dtype="float64")
    actual = actuals(y, origins)
    extra = shlex.split(args.extra)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log(
        f"elecdemand: {len(frame)} half-hours, {len(origins)} origins from {frame['ds'].iloc[origins[0]]}, "
        f"horizon {HORIZON}; training data {origins[0]} rows"
    )
    results = [
        timed("seasonal naive, m = 48", lambda: (seasonal_naive(y, origins, DAY), "")),
        timed("seasonal naive, m = 336", lambda: (seasonal_naive(y, origins, WEEK), "")),
    ]
    if "arima" in args.only:
        window = args.arima_weeks * WEEK
        for regressors in (COVARIATES, []):
            name = "AutoARIMA" + (f" + {', '.join(regressors)}" if regressors else "")
            log(f"{name}: fitting on the {window} points before the first origin ...")
            results.append(timed(name, lambda r=regressors: arima_forecasts(frame, origins, window, r)))
            log(f"{name}: {results[-1].note}, {results[-1].wall_s:.0f} s")
    lstm_rows = [row for row in ("lstm", "lstm-covariates") if row in args.only]
    if lstm_rows:
        with tempfile.TemporaryDirectory(prefix="lstm-forecast-elecdemand-") as tmp:
            folder = Path(tmp)
            stores = args.store or folder / "stores"
            with prefect_server(args.temporary_server, folder / "prefect-home") as api_url:
                env = cli_env(api_url, folder / "prefect-home")
                for row in lstm_rows:
                    covariates = COVARIATES if row == "lstm-covariates" else []
                    if covariates and not cli_knows("run", "--future-columns", env):
                        note = "skipped: this lstm-forecast has no --future-columns yet"
                        log(f"lstm-forecast + covariates: {note}")
                        results.append(Result(f"lstm-forecast + {', '.join(covariates)}", None, math.nan, note))
                        continue
                    results.append(
                        lstm_forecasts(
                            frame, origins, folder / row, stores / row, env, extra, covariates, args.timeout, log
                        )
                    )
    rows = scores(results, actual)
    print_table(rows, actual.size)
    for result in results:
        if "predict_wall_s" in result.details and result.details["predict_wall_s"]:
            walls = result.details["predict_wall_s"]
            print(
                f"{result.name}: run {result.details['run_wall_s']:.0f} s, {len(walls)} predict processes "
                f"{sum(walls):.0f} s ({np.median(walls):.1f} s median each); its own test RMSE (the run's split): "
                + ", ".join(f"{k} {v:.4f}" for k, v in result.details["run_test_rmse"].items() if v is not None)
            )
            if "first_predict_vs_run_max_abs_diff" in result.details:
                print(
                    f"  the first origin's predict against the run's own forecast: largest difference "
                    f"{result.details['first_predict_vs_run_max_abs_diff']:.2e} GW"
                )
    if args.json_out:
        payload = {
            "data": str(args.data),
            "origins": [str(frame["ds"].iloc[origin]) for origin in origins],
            "horizon": HORIZON,
            "arima_weeks": args.arima_weeks,
            "extra": extra,
            "rows": rows,
            "details": {result.name: result.details for result in results if result.details},
        }
        Path(args.json_out).write_text(json.dumps(json_safe(payload), indent=1) + "\n")


if __name__ == "__main__":
    main()
