"""Accuracy on the article's series, in one run: the default preset against the floor and the baselines.

    .venv/bin/python benchmarks/accuracy.py [--presets default seed]

Rows (test split, the last 20 %, every model forecasting the same 2,000 targets):
- oracle: the noise-free sine itself, the floor no forecaster can beat on average;
- lstm-forecast presets (`lstm-forecast run --preset P --json`), with the naive,
  seasonal-naive, ARIMA, AutoARIMA and AutoETS baselines their evaluate stage scored;
- ridge regression on 63 lags (scikit-learn), fitted on the rows before the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lstm_forecast.tasks.stages.generate import synthetic_series  # noqa: E402

BIN = Path(sys.executable).parent
LAGS = 63


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["default", "seed"])
    args = parser.parse_args()

    series = synthetic_series(10_000, 0.1, 1.0, 0.5, 0)
    y, t = series["y"].to_numpy(), series["ds"].to_numpy()
    test_start = 8000
    rows = np.arange(test_start, len(y))
    table: list[tuple[str, float, str]] = [("oracle: noise-free sine (floor)", rmse(np.sin(t[rows]), y[rows]), "")]

    from sklearn.linear_model import Ridge

    windows = sliding_window_view(y, LAGS)  # windows[i] = y[i : i + LAGS], the lags of row i + LAGS
    train_rows = np.arange(LAGS, test_start)
    started = time.perf_counter()
    ridge = Ridge(alpha=1.0).fit(windows[train_rows - LAGS], y[train_rows])
    ridge_rmse = rmse(ridge.predict(windows[rows - LAGS]), y[rows])
    table.append((f"ridge regression on {LAGS} lags", ridge_rmse, f"{time.perf_counter() - started:.1f} s fit"))

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with tempfile.TemporaryDirectory(prefix="lstm-forecast-accuracy-") as store:
        for preset in args.presets:
            started = time.perf_counter()
            done = subprocess.run(
                [str(BIN / "lstm-forecast"), "run", "--preset", preset, "--artifacts-dir", store, "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - started
            test = json.loads(done.stdout.strip().splitlines()[-1])["metrics"]["test"]
            coverage = test["lstm"].get("coverage", float("nan"))
            table.append(
                (
                    f"lstm-forecast --preset {preset}",
                    test["lstm"]["rmse"],
                    f"{wall:.0f} s wall, interval coverage {coverage:.3f} (nominal 0.9)",
                )
            )
            if preset == args.presets[0]:
                for baseline in ("arima", "auto_arima", "auto_ets", "seasonal_naive", "naive"):
                    table.append((f"{baseline} (scored by the {preset} run)", test[baseline]["rmse"], ""))

    floor = table[0][1]
    print(f"{'model':<44}{'test RMSE':>10}{'x floor':>9}  note")
    for name, value, note in table:
        print(f"{name:<44}{value:>10.4f}{value / floor:>9.4f}  {note}")


if __name__ == "__main__":
    main()
