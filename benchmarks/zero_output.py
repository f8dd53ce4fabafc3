"""What a 'level' network forecasts when its output is zero, on the real series: the reference its windows are
read relative to, by itself, as a one-step forecast of the test part (the last 20 %).

    .venv/bin/python benchmarks/zero_output.py [--best-from real.json]

For each series with a unit root (kind 'level'), in its model space (log and the natural seasons of
`benchmarks/datasets.py` up to 52, fitted on the rows before the test part, seasons refitted each cycle), the
one-step test RMSE of three references, back in original units:

- `last`: the last value (a global model's reference);
- `smoothed`: simple exponential smoothing with the fitted weight (`space.fit_smoothing`; a network of its own);
- `holt`: damped Holt (level, trend, damping fitted by least squares on the training part): not used by the
  pipeline, measured as a candidate.

With `--best-from` (the JSON of `benchmarks/real.py --json-out`), each RMSE is divided by that run's best baseline
of the series, as the real-series table reports the LSTM. The network learns a correction on top of its reference;
this shows where the reference alone stands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.datasets import DATASETS  # noqa: E402
from lstm_forecast.tasks.core.space import fit_model_space  # noqa: E402

TRAIN_FRACTION = 0.8  # the pipeline's default: the test part is the last 20 %


def damped_holt_forecasts(values: np.ndarray, level_weight: float, trend_weight: float, damping: float) -> np.ndarray:
    """One-step forecasts (n,) of damped Holt made at each row: `level + damping * trend`."""
    level, trend = np.empty(len(values)), np.zeros(len(values))
    level[0] = values[0]
    for t in range(1, len(values)):
        level[t] = level_weight * values[t] + (1 - level_weight) * (level[t - 1] + damping * trend[t - 1])
        trend[t] = trend_weight * (level[t] - level[t - 1]) + (1 - trend_weight) * damping * trend[t - 1]
    return level + damping * trend


def fit_damped_holt(values: np.ndarray) -> tuple[float, float, float]:
    """Level weight, trend weight and damping (0.8 to 1) minimising the one-step squared errors on `values`."""
    from scipy.optimize import minimize

    def squared_errors(parameters: np.ndarray) -> float:
        return float(np.sum((values[1:] - damped_holt_forecasts(values, *parameters)[:-1]) ** 2))

    found = minimize(squared_errors, [0.5, 0.1, 0.95], bounds=[(0.01, 1.0), (0.0, 1.0), (0.8, 1.0)], method="L-BFGS-B")
    return tuple(float(v) for v in found.x)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--best-from", type=Path, help="benchmarks/real.py --json-out FILE: divide by its best")
    args = parser.parse_args()
    best: dict[str, float] = {}
    if args.best_from:
        for row in json.loads(args.best_from.read_text())["rows"]:
            if row.get("best_baseline"):
                best[row["series"]] = row["rmse"][row["best_baseline"]]
    unit = "/ best baseline" if best else "(test RMSE)"
    print(f"{'series':18s} {'weight':>6s} {'last':>10s} {'smoothed':>10s} {'holt':>10s}   {unit}")
    for name, dataset in DATASETS.items():
        y = dataset.load()["y"].interpolate().to_numpy()
        fit_stop = int(len(y) * TRAIN_FRACTION)
        seasons = tuple(s for s in dataset.seasons if s <= 52)
        space = fit_model_space(y, fit_stop, "auto", seasons, "auto", smooth_level=True)
        if space.kind != "level":
            continue
        v = space.adjusted(y)
        rows = np.arange(fit_stop, len(y))
        holt = damped_holt_forecasts(v, *fit_damped_holt(v[:fit_stop]))
        references = {"last": v[rows - 1], "smoothed": space.reference(v)[rows - 1], "holt": holt[rows - 1]}
        scores = []
        for reference in references.values():
            adjusted = reference + (space.season_at(rows, rows) if space.seasonal else 0.0)
            forecast = np.exp(adjusted) if space.log else adjusted
            rmse = float(np.sqrt(np.mean((y[rows] - forecast) ** 2)))
            scores.append(rmse / best[name] if name in best else rmse)
        print(f"{name:18s} {space.smoothing:6.2f} " + " ".join(f"{score:10.4g}" for score in scores))


if __name__ == "__main__":
    main()
