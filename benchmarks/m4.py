"""M4 Weekly or Hourly, scored the M4 way: lstm-forecast's forecasts against the published table.

    .venv/bin/python benchmarks/m4.py --baselines-only              # Naive2 / seasonal naive on all 359 series
    .venv/bin/python benchmarks/m4.py --dataset hourly [--extra "--workers 2"]   # M4 Hourly, 372 series, h = 48
    .venv/bin/python benchmarks/m4.py --limit 3                     # the LSTM on the first 3 series
    .venv/bin/python benchmarks/m4.py --sample 30 --seed 0 [--extra "--epochs 20"] [--json-out FILE]
    .venv/bin/python benchmarks/m4.py --ids W1 W246                 # named series
    .venv/bin/python benchmarks/m4.py [--data-dir DIR] [--store DIR] [--extra "--workers 2"]   # all 359 series
    .venv/bin/python benchmarks/m4.py --short-share 0.5 [--short-points 16 60]   # half of them cut short

The data (`unique_id, ds, y`; `train.parquet`, `test.parquet`; see its README.md) is read from
`--data-dir` (default: ../shared/data/m4-weekly from the repository root, or m4-hourly-dev: below). The
train part of the chosen series is written as one long-format Parquet file and run as

    lstm-forecast run --input train.parquet --horizon 13 --json --artifacts-dir STORE [EXTRA]

(`--horizon 48` for hourly), which trains one global model across the series (`--extra "--scope local"`:
one model per series) and forecasts the 13 steps after each series' end: the run's forecast table
(`forecasts` in the JSON; with `--extra "--forecast-model combined"` the combination with AutoETS and
AutoARIMA where those were fitted), or for a run without one the `forecast` rows of the predictions Parquet
that `series.<id>.artifacts.predictions` names (a pack of many series, whose rows
`_key == series.<id>.keys.predict` are the series'). Those are scored against test.parquet: sMAPE, MASE
(m = 1: scale = mean |x_t - x_(t-1)| over the series' whole train part), both averaged over the series, and
OWA = (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2) / 2 with this script's own Naive2 (for weekly data the
plain naive forecast) on the same series. A series the pipeline fails on is listed and left out of the
LSTM's row; a second row fills it with Naive2.

`--short-share P` cuts a seeded share P of the series to their last 16-60 values (`--short-points`) before the
run: too short for a test split of their own, they are forecast by the global model the other series train
(status `forecast_only`) and scored here on the same test and MASE scale (the whole train part's) as the
others, each group beside Naive2 on the same series.

Also printed: wall time and peak RSS of the run (getrusage of the child processes), and whether the
script's Naive2 reproduces the published sMAPE 9.161 / MASE 2.777 (only meaningful on all 359 series).

`--dataset hourly` reads ../shared/data/m4-hourly-dev (372 of the 414 hourly series; test.parquet has
`unique_id, step, y`) and scores as M4 does for hourly data: h = 48, MASE with m = 24, Naive2 = the naive
forecast after a classical multiplicative seasonal adjustment (statsmodels' `seasonal_decompose`, period 24)
when M4's 90 % autocorrelation test at lag 24 finds seasonality, else the plain naive forecast; the extra row
is the seasonal naive with m = 24. The published hourly figures (OWA only) are for all 414 series, so there
is no Naive2 check: score the seasonal naive on the same series next to the LSTM instead.

The Prefect server is handled as in real.py (PREFECT_API_URL if set, else one started for the run).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.real import cli_env, json_safe, prefect_server, run_cli  # noqa: E402

HORIZON = 13
SEASON = 52  # for the extra seasonal-naive row; M4 itself uses m = 1 for weekly data
SCALE_LAG = 1  # M4's MASE for weekly data: m = 1
PUBLISHED = [  # M4 "Evaluation and Ranks.xlsx", weekly, all 359 series (the data's README.md)
    ("best entry (Darin, statistical)", 6.582, 2.107, 0.739),
    ("Petropoulos & Svetunkov (combination)", 6.726, 2.133, 0.751),
    ("Smyl (ES-RNN, M4 winner overall)", 7.817, 2.356, 0.851),
    ("Damped exponential smoothing", 8.866, 2.404, 0.917),
    ("Theta", 9.093, 2.637, 0.971),
    ("Naive2 = sNaive (m = 1)", 9.161, 2.777, 1.000),
    ("RNN benchmark of the organisers", 15.220, 5.132, 1.755),
    ("MLP benchmark of the organisers", 21.349, 13.568, 3.608),
]
NAIVE2_PUBLISHED = (9.161, 2.777)
FULL_SET = 359


@dataclass(frozen=True)
class Dataset:
    """How M4 scores one frequency: horizon, MASE lag, Naive2's season (1: none), the published table."""

    name: str  # the data folder under ../shared/data
    title: str
    horizon: int
    scale_lag: int  # m of MASE
    naive2_season: int  # M4's seasonality test and adjustment at this lag (1: Naive2 is the naive forecast)
    season: int  # the extra seasonal-naive row
    published: list[tuple[str, float | None, float | None, float]]
    published_series: int  # how many series the published figures cover
    naive2_published: tuple[float, float] | None  # Naive2's published sMAPE / MASE, to check the script's
    naive2_name: str


WEEKLY = Dataset(
    "m4-weekly", "M4 Weekly", HORIZON, SCALE_LAG, 1, SEASON, PUBLISHED, FULL_SET, NAIVE2_PUBLISHED,
    "Naive2 (naive, m = 1)",
)  # fmt: skip
HOURLY = Dataset(
    "m4-hourly-dev",
    "M4 Hourly",
    48,
    24,
    24,
    24,
    [  # M4 "Evaluation and Ranks.xlsx", hourly, all 414 series (the data's README.md): OWA only
        ("Doornik et al. (best)", None, None, 0.410),
        ("Smyl (ES-RNN)", None, None, 0.440),
        ("seasonal naive (m = 24)", None, None, 0.627),
        ("MLP benchmark of the organisers", None, None, 0.921),
        ("Naive2 (seasonally adjusted naive)", None, None, 1.000),
        ("RNN benchmark of the organisers", None, None, 1.036),
    ],
    414,
    None,
    "Naive2 (seasonally adjusted naive, m = 24)",
)
DATASETS = {"weekly": WEEKLY, "hourly": HOURLY}


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """M4's sMAPE (percent), mean over the horizon; a step where both are 0 counts as 0."""
    denominator = np.abs(actual) + np.abs(forecast)
    terms = np.divide(
        200 * np.abs(actual - forecast), denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(np.mean(terms))


def mase(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray, m: int = SCALE_LAG) -> float:
    """M4's MASE: mean absolute error over the mean absolute m-step difference of the whole train part."""
    scale = np.mean(np.abs(insample[m:] - insample[:-m]))
    return float(np.mean(np.abs(actual - forecast)) / scale)


def naive2(insample: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """Naive2 for weekly data: M4's seasonality test runs at lag m = 1, so it is the plain naive forecast."""
    return np.repeat(insample[-1], horizon)


def seasonal_naive(insample: np.ndarray, m: int = SEASON, horizon: int = HORIZON) -> np.ndarray:
    """The last `m` values repeated (the plain naive forecast when the series is shorter than m)."""
    if len(insample) < m:
        return naive2(insample, horizon)
    return np.resize(insample[-m:], horizon)


def acf(values: np.ndarray, lag: int) -> float:
    """R's `acf` at `lag`: mean removed, the lagged cross-products over the sum of squares."""
    x = values - values.mean()
    return float(np.dot(x[lag:], x[: len(x) - lag]) / np.dot(x, x))


def seasonality_test(insample: np.ndarray, m: int) -> bool:
    """M4's 90 % autocorrelation test at lag m (`SeasonalityTest` of the M4 benchmarks' R code): seasonal when
    |acf(m)| > 1.645 * sqrt((1 + 2 * sum_{k<m} acf(k)^2) / n); never with fewer than 3 m values."""
    n = len(insample)
    if n < 3 * m:
        return False
    correlations = np.array([acf(insample, k) for k in range(1, m + 1)])
    limit = 1.645 * np.sqrt((1 + 2 * np.sum(correlations[:-1] ** 2)) / n)
    return bool(abs(correlations[-1]) > limit)


def seasonally_adjusted_naive(insample: np.ndarray, m: int, horizon: int) -> np.ndarray:
    """M4's Naive2: with seasonality at lag m, the naive forecast of the series divided by the seasonal indices
    of a classical multiplicative decomposition, times the indices of the forecast steps; else plain naive."""
    if m <= 1 or not seasonality_test(insample, m):
        return naive2(insample, horizon)
    from statsmodels.tsa.seasonal import seasonal_decompose

    indices = np.asarray(seasonal_decompose(insample, model="multiplicative", period=m).seasonal)[:m]
    n = len(insample)
    level = insample[-1] / indices[(n - 1) % m]
    return level * indices[(n + np.arange(horizon)) % m]


def auto_ets(history: pd.DataFrame, horizon: int) -> dict[str, np.ndarray]:
    """statsforecast's AutoETS (no season: the cut series hold less than a year) on each series of `history`."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    forecasts = StatsForecast(models=[AutoETS(season_length=1)], freq=1, n_jobs=2).forecast(df=history, h=horizon)
    forecasts = forecasts.sort_values(["unique_id", "ds"])
    return {str(i): part["AutoETS"].to_numpy("float64") for i, part in forecasts.groupby("unique_id", sort=False)}


@dataclass
class Score:
    name: str
    smape: float
    mase: float
    series: int

    def owa(self, reference: Score) -> float:
        return 0.5 * (self.smape / reference.smape + self.mase / reference.mase)


def score(
    name: str,
    forecasts: dict[str, np.ndarray],
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    m: int = SCALE_LAG,
) -> Score:
    ids = list(forecasts)
    return Score(
        name,
        float(np.mean([smape(test[i], forecasts[i]) for i in ids])),
        float(np.mean([mase(test[i], forecasts[i], train[i], m) for i in ids])),
        len(ids),
    )


def choose_ids(all_ids: list[str], limit: int | None, sample: int | None, seed: int) -> list[str]:
    if sample is not None:
        rng = np.random.default_rng(seed)
        picked = set(rng.choice(len(all_ids), size=min(sample, len(all_ids)), replace=False).tolist())
        return [series_id for index, series_id in enumerate(all_ids) if index in picked]
    return all_ids[:limit] if limit is not None else all_ids


@functools.lru_cache(maxsize=2)
def read_predictions(path: str) -> pd.DataFrame:
    return pd.read_parquet(path)


def published_forecasts(path: str | None) -> dict[str, np.ndarray]:
    """Each series' `y_hat` in the run's forecast table (the model `--forecast-model` chose), by `ds`; {} without
    one."""
    if not path:
        return {}
    table = pd.read_parquet(path, columns=["unique_id", "ds", "y_hat"]).sort_values(["unique_id", "ds"], kind="stable")
    return {str(i): part["y_hat"].to_numpy("float64") for i, part in table.groupby("unique_id", sort=False)}


def published_intervals(path: str | None) -> dict[str, np.ndarray]:
    """Each series' interval bounds (2, steps) `y_lo, y_hi` in the run's forecast table, by `ds`; {} without one."""
    if not path:
        return {}
    table = pd.read_parquet(path, columns=["unique_id", "ds", "y_lo", "y_hi"])
    table = table.sort_values(["unique_id", "ds"], kind="stable")
    return {str(i): part[["y_lo", "y_hi"]].to_numpy("float64").T for i, part in table.groupby("unique_id", sort=False)}


def coverage(intervals: dict[str, np.ndarray], test: dict[str, np.ndarray], ids: set[str]) -> tuple[float, int]:
    """The share of the test values of `ids` inside their series' interval, and the number of series that have
    one (rows without an interval are left out)."""
    inside, count, series = 0, 0, 0
    for i in sorted(ids & set(intervals)):
        low, high = intervals[i]
        known = np.isfinite(low) & np.isfinite(high)
        if known.any():
            actual = test[i][: len(low)][known]
            inside += int(((actual >= low[known]) & (actual <= high[known])).sum())
            count, series = count + int(known.sum()), series + 1
    return (inside / count if count else float("nan")), series


def read_forecast(path: str, key: str, expected_ds: np.ndarray, horizon: int = HORIZON) -> tuple[np.ndarray, str]:
    """The `horizon` `forecast` rows of a series' predictions (its own file, or its rows `_key == key` of the
    pack of many series that holds them), by step; and a note if their `ds` differ from the test's."""
    predictions = read_predictions(path)
    if "_key" in predictions:
        predictions = predictions[predictions["_key"] == key]
    future = predictions.loc[predictions["split"] == "forecast"].sort_values("step")
    values = future["y_hat"].to_numpy(dtype="float64")
    if len(values) != horizon:
        raise ValueError(f"{len(values)} forecast rows, not {horizon}")
    note = ""
    with np.errstate(invalid="ignore"):
        ds = pd.to_numeric(future["ds"], errors="coerce").to_numpy(dtype="float64")
    if not np.allclose(ds, expected_ds.astype("float64")):
        note = f"forecast ds {ds[:2].tolist()}... differ from the test ds {expected_ds[:2].tolist()}..."
    return values, note


def print_table(
    rows: list[tuple[str, Score | None, Score]], subset: int, dataset: Dataset = WEEKLY, available: int = FULL_SET
) -> None:
    """Published rows, then ours; each of ours with its OWA against Naive2 on the same series."""
    published, full = dataset.published, dataset.published_series
    width = max(len(row[0]) for row in rows + [(p[0], None, None) for p in published]) + 2
    print(f"{'method':<{width}}{'sMAPE':>9}{'MASE':>9}{'OWA':>8}{'series':>8}")
    print(f"published, all {full} series{'' if all(p[1] is not None for p in published) else ' (OWA only)'}:")
    for name, s, m, o in published:
        s_text, m_text = (f"{v:>9.3f}" if v is not None else f"{'-':>9}" for v in (s, m))
        print(f"  {name:<{width - 2}}{s_text}{m_text}{o:>8.3f}{full:>8}")
    if subset == full:
        note = ""
    elif subset == available:
        note = f" (all {available} of this data, {full - available} of the published {full} kept apart: near the above)"
    else:
        note = " (a subset: not comparable to the above)"
    print(f"this script, {subset} series{note}:")
    for name, result, reference in rows:
        if result is None:
            print(f"  {name:<{width - 2}}{'-':>9}{'-':>9}{'-':>8}{0:>8}")
        else:
            print(
                f"  {name:<{width - 2}}{result.smape:>9.3f}{result.mase:>9.3f}{result.owa(reference):>8.3f}"
                f"{result.series:>8}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="weekly",
        help="weekly (359 series, h = 13; the default) or hourly (372 series, h = 48)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder of train.parquet and test.parquet (default: ../shared/data/m4-weekly, or m4-hourly-dev)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--limit", type=int, help="only the first N series (file order: W1, W2, ...)")
    group.add_argument("--sample", type=int, help="N series drawn at random (with --seed)")
    group.add_argument("--ids", nargs="+", metavar="ID", help="these series, e.g. --ids W1 W246")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--extra", default="", help='extra flags for the run, e.g. --extra "--epochs 20"')
    parser.add_argument("--baselines-only", action="store_true", help="skip the LSTM: score Naive2 and seasonal naive")
    parser.add_argument("--timeout", type=float, default=None, help="seconds the LSTM run may take (default: none)")
    parser.add_argument(
        "--temporary-server",
        action="store_true",
        help="let the run start Prefect's temporary server instead of one started here",
    )
    parser.add_argument(
        "--store",
        type=Path,
        help="the run's artifact store (default: a temporary one, removed "
        "after); run twice with the same store to time a warm rerun",
    )
    parser.add_argument("--json-out", metavar="FILE", help="write the scores (and per-series LSTM errors) as JSON")
    parser.add_argument(
        "--short-share",
        type=float,
        default=0.0,
        help="cut this share of the series (seeded) to their last --short-points values before the run: too short "
        "for a test split of their own, the global model forecasts them unscored; scored here on the same test",
    )
    parser.add_argument(
        "--short-points", type=int, nargs=2, default=(16, 60), metavar=("LEAST", "MOST"), help="(default 16 60)"
    )
    args = parser.parse_args()
    dataset = DATASETS[args.dataset]
    data_dir = args.data_dir or REPO.parent / "shared" / "data" / dataset.name
    horizon, m = dataset.horizon, dataset.scale_lag

    train_frame = pd.read_parquet(data_dir / "train.parquet")
    test_frame = pd.read_parquet(data_dir / "test.parquet")
    all_ids = list(dict.fromkeys(train_frame["unique_id"]))  # file order
    unknown = sorted(set(args.ids or []) - set(all_ids))
    if unknown:
        parser.error(f"unknown series: {', '.join(unknown)}")
    ids = (
        [i for i in all_ids if i in set(args.ids)]
        if args.ids
        else choose_ids(all_ids, args.limit, args.sample, args.seed)
    )
    train = {
        key: group.sort_values("ds")["y"].to_numpy(dtype="float64")
        for key, group in train_frame[train_frame["unique_id"].isin(ids)].groupby("unique_id")
    }
    order = "ds" if "ds" in test_frame else "step"  # hourly: `step` 1..48 after the series' end
    test_groups = {
        key: group.sort_values(order)
        for key, group in test_frame[test_frame["unique_id"].isin(ids)].groupby("unique_id")
    }
    test = {key: group["y"].to_numpy(dtype="float64") for key, group in test_groups.items()}
    if order == "ds":
        expected_ds = {key: group["ds"].to_numpy() for key, group in test_groups.items()}
    else:
        last_ds = train_frame[train_frame["unique_id"].isin(ids)].groupby("unique_id")["ds"].max()
        expected_ds = {key: last_ds[key] + group["step"].to_numpy() for key, group in test_groups.items()}
    cut: dict[str, int] = {}  # series cut short for the run -> the values kept (their MASE scale stays M4's)
    if args.short_share > 0:
        rng = np.random.default_rng(args.seed + 1)
        chosen = rng.choice(len(ids), size=round(args.short_share * len(ids)), replace=False)
        cut = {ids[int(k)]: int(rng.integers(args.short_points[0], args.short_points[1] + 1)) for k in sorted(chosen)}
        ranked = train_frame.groupby("unique_id").cumcount(ascending=False)  # 0: each series' last row
        kept = train_frame["unique_id"].map(cut).fillna(np.inf)
        train_frame = train_frame.loc[ranked < kept].reset_index(drop=True)
        print(f"{len(cut)} series cut to their last {args.short_points[0]}-{args.short_points[1]} values", flush=True)
    lengths = [len(train[i]) for i in ids]
    print(
        f"{dataset.title}: {len(ids)} of {len(all_ids)} series, train lengths {min(lengths)}-{max(lengths)} "
        f"(median {int(np.median(lengths))}), horizon {horizon}",
        flush=True,
    )

    naive2_forecasts = {i: seasonally_adjusted_naive(train[i], dataset.naive2_season, horizon) for i in ids}
    reference = score(dataset.naive2_name, naive2_forecasts, train, test, m)
    snaive = score(
        f"seasonal naive (m = {dataset.season})",
        {i: seasonal_naive(train[i], dataset.season, horizon) for i in ids},
        train,
        test,
        m,
    )
    rows: list[tuple[str, Score | None, Score]] = [
        (reference.name, reference, reference),
        (snaive.name, snaive, reference),
    ]
    report: dict[str, object] = {"series": ids, "extra": shlex.split(args.extra)}
    if dataset.naive2_season > 1:
        seasonal = [i for i in ids if seasonality_test(train[i], dataset.naive2_season)]
        report.update(dataset=args.dataset, naive2_seasonally_adjusted=len(seasonal))
        print(
            f"Naive2: seasonally adjusted (lag {dataset.naive2_season}) on {len(seasonal)} of {len(ids)} series",
            flush=True,
        )
    failed: dict[str, str] = {}
    wall = peak_mib = None
    if not args.baselines_only:
        extra = shlex.split(args.extra)
        with tempfile.TemporaryDirectory(prefix="lstm-forecast-m4-") as tmp:
            folder = Path(tmp)
            path = folder / f"{dataset.name}-train.parquet"
            train_frame[train_frame["unique_id"].isin(ids)].to_parquet(path, index=False)
            with prefect_server(args.temporary_server, folder / "prefect-home") as api_url:
                env = cli_env(api_url, folder / "prefect-home")
                print(
                    f"running lstm-forecast on {len(ids)} series (Prefect server: {api_url or 'a temporary one'}) ...",
                    flush=True,
                )
                run = run_cli(
                    [
                        "run",
                        "--input",
                        str(path),
                        "--horizon",
                        str(horizon),
                        "--json",
                        "--artifacts-dir",
                        str(args.store or folder / "store"),
                        *extra,
                    ],
                    env,
                    args.timeout,
                )
                peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
            wall = run.wall_s
            details = (run.result or {}).get("series", {})
            published = published_forecasts((run.result or {}).get("forecasts"))
            intervals = published_intervals((run.result or {}).get("forecasts"))
            lstm_forecasts: dict[str, np.ndarray] = {}
            for i in ids:
                detail = details.get(i, {})
                if detail.get("status") not in ("completed", "forecast_only"):
                    failed[i] = detail.get("error") or run.error or f"exit {run.exit}, no result"
                    continue
                try:
                    if i in published:
                        lstm_forecasts[i], note = published[i], ""
                        if len(published[i]) != horizon:
                            raise ValueError(f"{len(published[i])} forecast rows, not {horizon}")
                    else:
                        lstm_forecasts[i], note = read_forecast(
                            detail["artifacts"]["predictions"],
                            detail.get("keys", {}).get("predict", ""),
                            expected_ds[i],
                            horizon,
                        )
                except (KeyError, OSError, ValueError) as error:
                    failed[i] = f"forecast unreadable: {error}"
                    continue
                if note:
                    print(f"  warning: {i}: {note}")
        if lstm_forecasts:
            lstm = score("lstm-forecast", lstm_forecasts, train, test, m)
            if failed:  # OWA of the series that finished against Naive2 on exactly those series
                same = score("Naive2", {i: naive2_forecasts[i] for i in lstm_forecasts}, train, test, m)
                rows.append((f"lstm-forecast ({len(lstm_forecasts)} series that finished)", lstm, same))
                filled = {i: lstm_forecasts.get(i, naive2_forecasts[i]) for i in ids}
                filled_score = score("filled", filled, train, test, m)
                rows.append(("lstm-forecast, failed series -> Naive2", filled_score, reference))
            else:
                rows.append(("lstm-forecast", lstm, reference))
            if cut:
                short_history = train_frame[train_frame["unique_id"].isin(cut)]
                ets = {i: f for i, f in auto_ets(short_history, horizon).items() if i in lstm_forecasts}
                same = score("Naive2", {i: naive2_forecasts[i] for i in ets}, train, test, m)
                rows.append((f"AutoETS on the {len(ets)} series cut short", score("ets", ets, train, test, m), same))
                for name, part in (("cut short", set(cut)), ("not cut", set(ids) - set(cut))):
                    found = {i: f for i, f in lstm_forecasts.items() if i in part}
                    if found:
                        same = score("Naive2", {i: naive2_forecasts[i] for i in found}, train, test, m)
                        rows.append(
                            (f"lstm-forecast, the {len(found)} series {name}", score(name, found, train, test, m), same)
                        )
            groups = [("all", set(lstm_forecasts))]
            if cut:
                groups += [("cut short", set(cut) & set(lstm_forecasts)), ("not cut", set(lstm_forecasts) - set(cut))]
            shares = {name: coverage(intervals, test, part) for name, part in groups}
            if any(series for _, series in shares.values()):
                report["interval_coverage"] = {name: share for name, (share, _) in shares.items()}
                print(
                    "interval coverage of the test values (nominal: --interval-level, 90% by default): "
                    + ", ".join(f"{name} {share:.1%} ({series} series)" for name, (share, series) in shares.items())
                )
            report["lstm_per_series"] = {
                i: {
                    "smape": smape(test[i], f),
                    "mase": mase(test[i], f, train[i], m),
                    "naive2_smape": smape(test[i], naive2_forecasts[i]),
                    "naive2_mase": mase(test[i], naive2_forecasts[i], train[i], m),
                }
                for i, f in lstm_forecasts.items()
            }
        else:
            rows.append(("lstm-forecast (no series finished)", None, reference))
        report.update(exit=run.exit, wall_s=wall, peak_rss_mib=peak_mib, failed=failed)

    print()
    print_table(rows, len(ids), dataset, len(all_ids))
    if wall is not None:
        print(
            f"lstm-forecast run: exit {report['exit']}, wall {wall:.0f} s ({wall / len(ids):.1f} s per series), "
            f"peak RSS {peak_mib:.0f} MiB (largest child process)"
        )
    for i, error in failed.items():
        print(f"  series {i} failed: {error[:300]}")

    published, full = dataset.naive2_published, dataset.published_series
    smape_n2, mase_n2 = round(reference.smape, 3), round(reference.mase, 3)
    reproduces = (smape_n2, mase_n2) == published
    if published is None:
        print(
            f"Naive2 check: none (the published figures are OWA on all {full} series, this data holds "
            f"{len(all_ids)}); the seasonal naive's OWA here {snaive.owa(reference):.3f} against the published "
            f"{dataset.published[2][3]:.3f}"
        )
    elif len(ids) == full:
        print(
            f"Naive2 check on all {full} series: sMAPE {reference.smape:.3f}, MASE {reference.mase:.3f} vs "
            f"published {published[0]:.3f} / {published[1]:.3f}: "
            + ("reproduces" if reproduces else "DOES NOT reproduce")
        )
    else:
        print(f"Naive2 check: needs all {full} series (this run has {len(ids)}); run --baselines-only")
    report["scores"] = {
        name: (vars(result) | {"owa": result.owa(against)}) if result else None for name, result, against in rows
    }
    report["naive2_reproduces_published"] = reproduces if published is not None and len(ids) == full else None
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(json_safe(report), indent=1) + "\n")
    if not args.baselines_only and len(failed) == len(ids):
        sys.exit(1)  # no LSTM forecast to score


if __name__ == "__main__":
    main()
