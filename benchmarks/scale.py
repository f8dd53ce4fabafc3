"""Many series: sequential against a local Dask cluster, on the same machine, in one sitting.

Writes 16 synthetic series (noisy sines of different frequencies and seeds) in long format,
starts a `prefect server start` on a free loopback port, then runs `lstm-forecast run` on
them: one after another in one process, and on `--workers` local Dask workers; each cold
(empty store) and warm (same store, nothing changed). Reports wall times, the speedup, the
per-series cost of a cold run and the per-series overhead (a warm run's time per series:
Prefect task runs and store checks only), and checks both modes give the same metrics.

    .venv/bin/python benchmarks/scale.py --series 16 --workers 2

`--panel N` measures a real-sized panel instead: N weekly series of 150-250 points, crops of the M4
Weekly train part (`--data-dir`, seeded), run cold and warm on the defaults with `--workers`; wall time
per stage (first task start to last task end, from the Prefect API), series/s, peak RSS, the files in
the store, and mlforecast + LightGBM (lags 1-13 and 52, 300 trees) fitting and forecasting the same
panel in the same sitting, as a ratio to the median of `--opponent-runs` runs (default 3: its time alone
varied from 9.7 to 15.3 s on 10,000 series in one sitting). Both forecasts are then scored on the crops
whose source series goes on for 13 points (sMAPE, MASE; the naive forecast beside them). mlforecast runs
from its own virtual environment (`--opponent-venv`, created on first use): its wheel installs a top-level
`tests` package that would shadow this project's tests in `.venv`.

    .venv/bin/python benchmarks/scale.py --panel 10000 --workers 2

`--dated` gives the crops weekly timestamps (each ending on the same Sunday) instead of numeric time, as a real panel
has: the dates are parsed, their frequency inferred and the calendar read (mlforecast steps them by 'W-SUN').

`--short-share P` cuts a seeded share P of the crops to their last 30 values: too short for a test split of
their own, the global model forecasts them unscored (status `forecast_only`), and a warm rerun still runs no
chunk task.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstm_forecast.tasks.core.graph import STAGES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import BIN, start_server, timed  # noqa: E402

HORIZON = 13  # the panel's forecast steps (M4 Weekly's horizon)
# Per series: the default preset (what a user gets), on 4,000 points.
SETTINGS = ["--preset", "default"]


def write_series(path: Path, count: int, points: int) -> None:
    parts = []
    for number in range(count):
        t = np.arange(points) * 0.1
        noise = np.random.RandomState(number).normal(scale=0.4, size=points)
        parts.append(
            pd.DataFrame({"unique_id": f"series-{number:02d}", "ds": t, "y": np.sin((0.8 + 0.05 * number) * t) + noise})
        )
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)


def flow_task_runs(url: str, flow_run_id: str) -> list[Any]:
    """Every task run of one flow run, read from the Prefect server page by page (a page holds 200 at most: a
    100,000-series run has about 1,400)."""
    os.environ["PREFECT_API_URL"] = url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200, offset=len(runs)
            )
            runs.extend(page)
            if len(page) < 200:
                return runs


def stage_seconds(url: str, flow_run_id: str) -> dict[str, float]:
    """Total run time (s) per stage over all task runs of one flow run, read from the Prefect server."""

    totals = dict.fromkeys(STAGES, 0.0)
    for run in flow_task_runs(url, flow_run_id):
        stage = run.name.rsplit("-", 1)[0]
        if stage in totals:
            totals[stage] += run.total_run_time.total_seconds()
    return totals


REPO = Path(__file__).resolve().parents[1]
M4_WEEKLY = REPO.parent / "shared" / "data" / "m4-weekly"

OPPONENT = """
import sys, time
import lightgbm as lgb
import pandas as pd
from mlforecast import MLForecast

started = time.perf_counter()
panel = pd.read_parquet(sys.argv[1])
if pd.api.types.is_datetime64_any_dtype(panel["ds"]):  # `--dated`: weeks ending on Sundays
    freq = "W-SUN"
else:  # numeric time: mlforecast steps integer positions by freq=1
    panel["ds"], freq = panel["ds"].astype("int64"), 1
forecaster = MLForecast(
    models=[lgb.LGBMRegressor(n_estimators=300, verbosity=-1)], freq=freq, lags=[*range(1, 14), 52]
)
forecaster.fit(panel)
forecast = forecaster.predict(13)
wall = time.perf_counter() - started
forecast.rename(columns={"LGBMRegressor": "y_hat"}).to_parquet(sys.argv[2], index=False)
print(f"{wall:.3f} {forecast['unique_id'].nunique()}")
"""


SHORT_POINTS = 30  # `--short-share`: too few for a test split of their own at 13 steps ahead
LAST_WEEK = "2024-12-29"  # `--dated`: the Sunday every crop ends on, as a retailer's panel ends on its last week


def write_panel(
    path: Path, count: int, data_dir: Path, seed: int = 0, short_share: float = 0.0, dated: bool = False
) -> tuple[int, dict[str, np.ndarray]]:
    """`count` crops of 150-250 points of the M4 Weekly train series that have 250 or more, in long
    format with numeric time (`dated`: weekly timestamps, every crop ending on `LAST_WEEK`), a seeded
    `short_share` of them cut to their last `SHORT_POINTS` (the same crops otherwise); returns the number of
    rows and, for each crop its source continues by `HORIZON` points or more, those next points (the truth its
    forecast is scored on)."""
    train = pd.read_parquet(data_dir / "train.parquet")
    sources = [g["y"].to_numpy() for _, g in train.groupby("unique_id", sort=True) if len(g) >= 250]
    rng = np.random.default_rng(seed)
    cut = np.random.default_rng(seed + 1).random(count) < short_share
    parts = []
    futures = {}
    for number in range(count):
        source = sources[rng.integers(len(sources))]
        length = int(rng.integers(150, 251))
        start = int(rng.integers(0, len(source) - length + 1))
        if start + length + HORIZON <= len(source):
            futures[f"s{number:06d}"] = source[start + length :][:HORIZON]
        times = (
            pd.date_range(end=LAST_WEEK, periods=length, freq="W-SUN") if dated else np.arange(length, dtype="float64")
        )
        part = pd.DataFrame({"unique_id": f"s{number:06d}", "ds": times, "y": source[start:][:length]})
        parts.append(part.iloc[-SHORT_POINTS:] if cut[number] else part)
    panel = pd.concat(parts, ignore_index=True)
    panel.to_parquet(path, index=False)
    return len(panel), futures


def panel_accuracy(
    panel: pd.DataFrame, futures: dict[str, np.ndarray], forecasts: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """sMAPE (%) and MASE (scaled by each crop's in-sample mean absolute one-step change, as M4 scores weekly
    data) of each forecast table (`unique_id, ds, y_hat`) over the crops of `futures` (`HORIZON` true next
    values each), with the naive forecast (the crop's last value) as a row of its own; a model missing a
    crop's forecast is scored on the naive forecast there and the count says so."""
    ids = sorted(futures)
    history = panel.loc[panel["unique_id"].isin(futures)].sort_values(["unique_id", "ds"])
    groups = dict(tuple(history.groupby("unique_id", sort=True)["y"]))
    truth = np.stack([futures[i] for i in ids])
    last = np.array([groups[i].to_numpy()[-1] for i in ids])
    scale = np.array([np.mean(np.abs(np.diff(groups[i].to_numpy()))) for i in ids])
    naive = np.repeat(last[:, None], HORIZON, axis=1)
    rows = []
    for name, table in {"naive": None, **forecasts}.items():
        predicted, found = naive.copy(), len(ids)
        if table is not None:
            table = table.sort_values(["unique_id", "ds"])
            by_id = {i: g.to_numpy() for i, g in table.groupby("unique_id", sort=False)["y_hat"] if len(g) == HORIZON}
            found = 0
            for row, series_id in enumerate(ids):
                if series_id in by_id:
                    predicted[row], found = by_id[series_id], found + 1
        denominator = np.abs(truth) + np.abs(predicted)
        ratio = np.divide(2 * np.abs(truth - predicted), denominator, out=np.zeros_like(truth), where=denominator > 0)
        mase = np.mean(np.abs(truth - predicted), axis=1) / np.where(scale > 0, scale, np.nan)
        rows.append((name, found, 100 * ratio.mean(), float(np.nanmean(mase))))
    return pd.DataFrame(rows, columns=["model", "series", "smape", "mase"]).set_index("model")


def stage_walls(url: str, flow_run_id: str) -> dict[str, float]:
    """Wall seconds of each stage over one flow run: its first task run's start to its last one's end."""
    spans: dict[str, list] = {}
    for run in flow_task_runs(url, flow_run_id):
        stage = run.name.rsplit("-", 1)[0]
        if run.start_time and run.end_time:
            spans.setdefault(stage, []).append((run.start_time, run.end_time))
    return {
        stage: (max(end for _, end in spans[stage]) - min(start for start, _ in spans[stage])).total_seconds()
        for stage in STAGES
        if stage in spans
    }


def write_timeline(url: str, flow_run_id: str, started: float, path: Path) -> None:
    """Every task run of one flow run as CSV rows `task, start_s, end_s`, in seconds from the command's
    start (`started`, a Unix time): where the stages overlap and where the flow works alone."""
    rows = [
        (run.name, run.start_time.timestamp() - started, run.end_time.timestamp() - started)
        for run in flow_task_runs(url, flow_run_id)
        if run.start_time and run.end_time
    ]
    frame = pd.DataFrame(rows, columns=["task", "start_s", "end_s"]).sort_values("start_s")
    frame.round(3).to_csv(path, index=False)


def opponent_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with mlforecast, lightgbm and pyarrow ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # pyarrow: the panel reaches mlforecast as a Parquet file, and mlforecast does not pull it in
        packages = ["mlforecast", "lightgbm", "pyarrow"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def panel_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="lstm-forecast-panel-"))
    source = work / "panel.parquet"
    rows, futures = write_panel(source, args.panel, Path(args.data_dir), short_share=args.short_share, dated=args.dated)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base_env |= {"TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    python = opponent_python(Path(args.opponent_venv))
    opponent = work / "opponent.py"
    opponent.write_text(OPPONENT)
    opponent_walls = []
    for attempt in range(args.opponent_runs):
        print(f"mlforecast + LightGBM ({attempt + 1} of {args.opponent_runs}) ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        opponent_command = [str(python), str(opponent), str(source), str(work / "opponent-forecast.parquet")]
        done = subprocess.run(opponent_command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mlforecast failed: {done.stderr[-2000:]}")
        opponent_walls.append(time.perf_counter() - started)
    opponent_wall = float(np.median(opponent_walls))  # its time varies by half from run to run on a shared machine
    opponent_series = int(done.stdout.split()[-1])
    server, url = start_server(work / "home-server", base_env)
    env = base_env | {"PREFECT_HOME": str(work / "home-client"), "PREFECT_API_URL": url}
    store = work / "store"
    command = [str(BIN / "lstm-forecast"), "run", "--input", str(source), "--artifacts-dir", str(store)]
    command += ["--horizon", str(HORIZON), "--workers", str(args.workers), "--json", *args.extra.split()]
    try:
        print(f"lstm-forecast cold on {args.panel} series ...", file=sys.stderr, flush=True)
        started = time.time()
        cold = timed(command, env, work)
        stages = stage_walls(url, cold["result"]["flow_run_id"])
        if args.timeline:
            write_timeline(url, cold["result"]["flow_run_id"], started, Path(args.timeline))
        print(f"cold: {cold['wall_s']:.1f} s, peak RSS {cold['rss_gb']:.2f} GB, stages {stages}", file=sys.stderr)
        files = {folder.name: sum(1 for p in folder.rglob("*") if p.is_file()) for folder in store.iterdir()}
        forecast_table = pd.read_parquet(cold["result"]["forecasts"], columns=["unique_id", "ds", "y_hat"])
        print("lstm-forecast warm ...", file=sys.stderr, flush=True)
        warm = timed(command, env, work)
    finally:
        server.terminate()
        server.wait(timeout=30)
    statuses = [detail["status"] for detail in cold["result"]["series"].values()]
    completed, forecast_only = statuses.count("completed"), statuses.count("forecast_only")

    kind = "weekly timestamps" if args.dated else "numeric time"
    print(
        f"\n{args.panel} series, {rows} rows (M4 Weekly crops of 150-250 points, {kind}), CPU cores: {os.cpu_count()}"
    )
    print(f"lstm-forecast run --horizon 13 --workers {args.workers} {args.extra}".rstrip())
    print(f"{'':<34}{'wall s':>9}{'series/s':>10}{'peak RSS GB':>13}")
    print(
        f"{'lstm-forecast cold':<34}{cold['wall_s']:>9.1f}{args.panel / cold['wall_s']:>10.1f}{cold['rss_gb']:>13.2f}"
    )
    print(
        f"{'lstm-forecast warm':<34}{warm['wall_s']:>9.1f}{args.panel / warm['wall_s']:>10.1f}{warm['rss_gb']:>13.2f}"
    )
    print(
        f"{'mlforecast + LightGBM (fit+predict)':<34}{opponent_wall:>9.1f}{args.panel / opponent_wall:>10.1f}{'':>13}"
    )
    if len(opponent_walls) > 1:
        print(f"mlforecast's runs (the median above): {', '.join(f'{wall:.1f}' for wall in opponent_walls)} s")
    print(
        f"cold / mlforecast: {cold['wall_s'] / opponent_wall:.2f} x; series forecast: {completed + forecast_only} "
        f"(lstm-forecast; {forecast_only} of them too short to be scored), {opponent_series} (mlforecast)"
    )
    print("stage wall s (cold):", ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in stages.items()))
    print(
        "stage series/s (cold):",
        ", ".join(
            f"{stage} {args.panel / seconds:.0f}"
            for stage, seconds in stages.items()
            if stage != "train" and seconds > 0
        ),
    )
    accuracy = panel_accuracy(
        pd.read_parquet(source),
        futures,
        {
            "lstm-forecast": forecast_table,
            "mlforecast + LightGBM": pd.read_parquet(work / "opponent-forecast.parquet"),
        },
    )
    print(
        f"accuracy over the {len(futures)} crops whose source goes on for {HORIZON} points (the next {HORIZON} "
        "as truth; MASE scaled by the crop's mean absolute step):"
    )
    print(accuracy.round(4).to_string())
    total = sum(files.values())
    print(
        f"files in the store: {total} ({total / args.panel * 100:.1f} per 100 series): "
        + ", ".join(f"{name} {count}" for name, count in sorted(files.items()))
    )
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel", type=int, default=0, help="measure a panel of this many M4 Weekly crops instead")
    parser.add_argument("--data-dir", default=str(M4_WEEKLY), help="M4 Weekly's folder (train.parquet)")
    parser.add_argument("--opponent-venv", default=str(REPO / ".venv-bench"), help="mlforecast's virtual env")
    parser.add_argument(
        "--opponent-runs", type=int, default=3, help="mlforecast runs; the ratio uses their median (default 3)"
    )
    parser.add_argument(
        "--short-share",
        type=float,
        default=0.0,
        help=f"--panel: cut this share of the crops (seeded) to their last {SHORT_POINTS} values (default 0)",
    )
    parser.add_argument(
        "--dated", action="store_true", help="--panel: weekly timestamps (ending on Sundays) instead of numeric time"
    )
    parser.add_argument("--extra", default="", help="more options for the panel's lstm-forecast run")
    parser.add_argument("--timeline", default="", help="CSV file for the cold run's task runs (start, end in s)")
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--points", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--settings", default=" ".join(SETTINGS), help=f"run options for every series (default: {' '.join(SETTINGS)})"
    )
    args = parser.parse_args()
    if args.panel:
        panel_main(args)
        return
    settings = args.settings.split()

    work = Path(tempfile.mkdtemp(prefix="lstm-forecast-scale-"))
    source = work / "series.csv"
    write_series(source, args.series, args.points)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base_env |= {"TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server, url = start_server(work / "home-server", base_env)
    env = base_env | {"PREFECT_HOME": str(work / "home-client"), "PREFECT_API_URL": url}
    modes = {"sequential": [], f"dask, {args.workers} workers": ["--workers", str(args.workers)]}
    results: dict[str, dict[str, dict]] = {}
    try:
        for mode, extra in modes.items():
            print(f"{mode} ...", file=sys.stderr, flush=True)
            command = [
                str(BIN / "lstm-forecast"),
                "run",
                "--input",
                str(source),
                "--artifacts-dir",
                str(work / f"store-{mode.split(',')[0]}"),
                "--json",
                *settings,
                *extra,
            ]
            results[mode] = {"cold": timed(command, env, work), "warm": timed(command, env, work)}
            results[mode]["stages"] = stage_seconds(url, results[mode]["cold"]["result"]["flow_run_id"])
    finally:
        server.terminate()
        server.wait(timeout=30)

    sequential, parallel = (results[mode] for mode in modes)
    same = sequential["cold"]["result"]["metrics"] == parallel["cold"]["result"]["metrics"]
    lstm_wins = sum(detail.get("winner") == "lstm" for detail in parallel["cold"]["result"]["series"].values())
    print(f"\n{args.series} series x {args.points} points, CPU cores: {os.cpu_count()}, settings: {' '.join(settings)}")
    print(f"{'mode':<22}{'cold s':>8}{'per series s':>14}{'warm s':>8}{'overhead/series s':>19}{'peak RSS GB':>13}")
    for mode, runs in results.items():
        cold, warm = runs["cold"]["wall_s"], runs["warm"]["wall_s"]
        print(
            f"{mode:<22}{cold:>8.1f}{cold / args.series:>14.2f}{warm:>8.1f}{warm / args.series:>19.3f}"
            f"{runs['cold']['rss_gb']:>13.2f}"
        )
    print("\ncold run, task run time per series (s):", " ".join(f"{stage:>9}" for stage in STAGES))
    for mode, runs in results.items():
        print(f"{mode:<40}", " ".join(f"{runs['stages'][stage] / args.series:>9.2f}" for stage in STAGES))
    print(
        f"speedup (cold): {sequential['cold']['wall_s'] / parallel['cold']['wall_s']:.2f}x; "
        f"same metrics in both modes: {same}; LSTM wins on {lstm_wins} of {args.series} series"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
