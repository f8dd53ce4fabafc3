"""How many cycles of the MSTL seasonal component a seasonal profile should average, measured without a network.

    .venv/bin/python benchmarks/season_profiles.py [--cycles 1 2 3 4 6 12]

For each real series of `benchmarks/datasets.py` with a natural season up to 52, the model space is fitted on the
rows before the test part (the last 20 %) as a network of its own fits it (`fit_model_space`: log, MSTL profiles
refitted each cycle, the smoothed level), with `space.PROFILE_CYCLES` set to each count in turn. The one-step
forecast of the test part is then the reference level alone (the network's output zero) plus the profile in force
at each origin, back in original units. The table gives each count's test RMSE over that of the first count, and
their geometric mean over the series.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.datasets import DATASETS  # noqa: E402
from lstm_forecast.tasks.core import space as model_space  # noqa: E402

TRAIN_FRACTION = 0.8  # the pipeline's default: the test part is the last 20 %


def zero_output_rmse(y: np.ndarray, seasons: tuple[int, ...]) -> float:
    """One-step test RMSE of the reference level plus the seasonal profile, in `y`'s units."""
    fit_stop = int(len(y) * TRAIN_FRACTION)
    space = model_space.fit_model_space(y, fit_stop, "auto", seasons, "auto", smooth_level=True)
    v = space.adjusted(y)
    rows = np.arange(fit_stop, len(y))
    reference = space.reference(v)[rows - 1] if space.kind == "level" else v[rows - 1]
    adjusted = reference + space.season_at(rows, rows)
    forecast = np.exp(adjusted) if space.log else adjusted
    return float(np.sqrt(np.mean((y[rows] - forecast) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, nargs="+", default=[1, 2, 3, 4, 6, 12])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"{'series':18s}" + "".join(f"{f'{c} cycles':>11s}" for c in args.cycles))
    ratios: dict[int, list[float]] = {c: [] for c in args.cycles}
    for name, dataset in DATASETS.items():
        seasons = tuple(s for s in dataset.seasons if 2 <= s <= 52)
        if not seasons:
            continue
        y = dataset.load()["y"].interpolate().to_numpy()
        scores = []
        for cycles in args.cycles:
            model_space.PROFILE_CYCLES = cycles
            scores.append(zero_output_rmse(y, seasons))
        for cycles, score in zip(args.cycles, scores, strict=True):
            ratios[cycles].append(score / scores[0])
        print(f"{name:18s}" + "".join(f"{score / scores[0]:11.3f}" for score in scores))
    means = [math.exp(float(np.mean(np.log(ratios[c])))) for c in args.cycles]
    print(f"{'geometric mean':18s}" + "".join(f"{mean:11.3f}" for mean in means))


if __name__ == "__main__":
    main()
