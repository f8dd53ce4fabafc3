"""Memory of one global model's training step across many series (no Prefect, no store).

Builds `--series` synthetic series (random walks with a weekly-like cycle, lengths drawn from 100 to
3,000 points, levels from 1 to 10,000), fits each one's model space and window origins as the
normalize and window stages do, stacks the training windows a global model trains on (each series'
most recent, within the window budget) and trains the network for `--epochs` epochs. Prints the
windows per series, the arrays' sizes, the time of each step and the process's peak RSS.

    .venv/bin/python benchmarks/global_memory.py --series 10000 --epochs 1
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields  # noqa: E402
from lstm_forecast.tasks.core.defaults import window_cap  # noqa: E402
from lstm_forecast.tasks.core.fitting import fit_model
from lstm_forecast.tasks.core.space import fit_model_space
from lstm_forecast.tasks.core.windows import split_bounds, window_targets
from lstm_forecast.tasks.stages.train import MemberSeries, stacked_splits


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = with_fields(
        ForecastConfig(),
        scope="global",
        horizon=13,
        look_back=104,
        patch=4,
        ensemble=3,
        batch_size=256,
        epochs=args.epochs,
        patience=0,
        transform="level",
        log="auto",
        seasons=(),
    )
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    members = []
    for _ in range(args.series):
        n = int(rng.integers(100, 3000))
        level = 10 ** rng.uniform(0, 4)
        y = level * np.exp(np.cumsum(rng.normal(0, 0.02, n)) + 0.1 * np.sin(np.arange(n) * 2 * np.pi / 52))
        test_start = int(n * config.train_fraction)  # a validation tail of at least horizon + 2 rows, as sized
        validation = min(0.5, max(config.validation_fraction, (config.horizon + 2) / test_start))
        bounds = split_bounds(n, config.train_fraction, validation)
        fit_stop = int(bounds.set_index("split").loc["test", "start"])
        space = fit_model_space(y, fit_stop, "level", (), "auto")
        full = fit_model_space(y, n, "level", (), "yes" if space.log else "no")
        targets = window_targets(pd.Series(np.arange(n)), bounds, config.look_back, config.horizon, padded=True)
        members.append(MemberSeries(y, targets, space, full))
    prepared = time.perf_counter()
    cap = window_cap([int((m.targets["split"] == "train").sum()) for m in members])
    stacked_by_split = stacked_splits(members, config, {"train": cap, "validation": cap, None: cap})
    train, validation, every = (stacked_by_split[split] for split in ("train", "validation", None))
    stacked = time.perf_counter()
    megabytes = sum(a.nbytes for pair in (train, validation, every) for a in pair) / 2**20
    print(
        f"{args.series} series: at most {cap} training windows each; windows train {len(train[0])}, validation "
        f"{len(validation[0])}, every {len(every[0])}; arrays {megabytes:.0f} MiB; peak RSS so far "
        f"{peak_mib():.0f} MiB",
        flush=True,
    )
    fit_model(*train, *validation, config)
    fitted = time.perf_counter()
    print(
        f"prepare {prepared - started:.0f} s, stack {stacked - prepared:.0f} s, train {args.epochs} epoch(s) "
        f"{fitted - stacked:.0f} s; peak RSS {peak_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()
