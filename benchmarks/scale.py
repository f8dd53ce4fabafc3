"""Many series: sequential against a local Dask cluster, on the same machine, in one sitting.

Writes 16 synthetic series (noisy sines of different frequencies and seeds) in long format,
starts a `prefect server start` on a free loopback port, then runs `lstm-forecast run` on
them: one after another in one process, and on `--workers` local Dask workers; each cold
(empty store) and warm (same store, nothing changed). Reports wall times, the speedup, the
per-series cost of a cold run and the per-series overhead (a warm run's time per series:
Prefect task runs and store checks only), and checks both modes give the same metrics.

    .venv/bin/python benchmarks/scale.py --series 16 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lstm_forecast.tasks.core.graph import STAGES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import BIN, start_server, timed  # noqa: E402

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


def stage_seconds(url: str, flow_run_id: str) -> dict[str, float]:
    """Total run time (s) per stage over all task runs of one flow run, read from the Prefect server."""
    os.environ["PREFECT_API_URL"] = url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    totals = dict.fromkeys(STAGES, 0.0)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)
    for run in runs:
        stage = run.name.rsplit("-", 1)[0]
        if stage in totals:
            totals[stage] += run.total_run_time.total_seconds()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--points", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--settings", default=" ".join(SETTINGS), help=f"run options for every series (default: {' '.join(SETTINGS)})"
    )
    args = parser.parse_args()
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
