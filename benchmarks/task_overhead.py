"""Prefect's own work per task run on a local Dask cluster: prefect-dask's `DaskTaskRunner` against this
project's `KeptContextsTaskRunner` (flows/dask_runner.py), in turns, in one sitting.

Each round starts a flow on a fresh local cluster (2 workers, one thread each, as `--workers 2`) that hands out
`--tasks` task runs of a function that does almost nothing, each given a chunk of `--chunk` series' configs as a
panel's chunk task is. What the flow process, the workers and the Prefect server spend on them is Prefect's and
Dask's work per task run. A Prefect server is started for the measurement (its own PREFECT_HOME, loopback).

    .venv/bin/python benchmarks/task_overhead.py [--tasks 60] [--chunk 1000] [--rounds 2]
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

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import start_server  # noqa: E402

RUNNERS = ("prefect-dask", "kept-contexts")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def child(runner_name: str, tasks: int, chunk: int) -> None:
    """One round: a flow on a fresh cluster; prints its measurements as one JSON line."""
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    from lstm_forecast.flows.cluster import configure_dask, local_cluster_options
    from lstm_forecast.flows.dask_runner import KeptContextsTaskRunner
    from lstm_forecast.flows.many import ChunkSeries
    from lstm_forecast.tasks.core.config import ForecastConfig, with_fields

    @task(persist_result=False)
    def almost_nothing(series: ChunkSeries) -> dict[str, dict]:
        return {series_id: {"stages": {}} for series_id in series.configs}

    runner_class = DaskTaskRunner if runner_name == "prefect-dask" else KeptContextsTaskRunner
    configure_dask()
    base = ForecastConfig(horizon=13, scope="global")

    @flow(task_runner=runner_class(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_options(2)))
    def hand_out() -> dict[str, float]:
        here = psutil.Process()
        chunks = [
            ChunkSeries({f"s{n}-{i}": with_fields(base, series_id=f"s{n}-{i}") for i in range(chunk)}, {})
            for n in range(tasks)
        ]
        for warm in chunks[:2]:  # each worker's first task imports what it runs
            almost_nothing.submit(warm).result()
        workers = here.children(recursive=True)
        flow_before, workers_before = cpu_seconds(here), sum(cpu_seconds(w) for w in workers)
        started = time.perf_counter()
        for future in [almost_nothing.submit(c) for c in chunks]:
            future.result()
        return {
            "wall_s": time.perf_counter() - started,
            "flow_cpu_s": cpu_seconds(here) - flow_before,
            "workers_cpu_s": sum(cpu_seconds(w) for w in workers) - workers_before,
        }

    print(json.dumps(hand_out()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=60, help="task runs per round (default 60: a 10,000-series run)")
    parser.add_argument("--chunk", type=int, default=1000, help="series' configs handed to each (default 1000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tasks, args.chunk)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="task-overhead-") as work:
        server, url = start_server(Path(work) / "server", env)
        try:
            run_env = env | {"PREFECT_API_URL": url, "PREFECT_HOME": str(Path(work) / "client")}
            results: dict[str, list[dict[str, float]]] = {name: [] for name in RUNNERS}
            for _ in range(args.rounds):
                for name in RUNNERS:
                    server_before = cpu_seconds(psutil.Process(server.pid))
                    command = [sys.executable, __file__, "--child", name, "--tasks", str(args.tasks)]
                    done = subprocess.run(
                        [*command, "--chunk", str(args.chunk)],
                        env=run_env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    measured = json.loads(done.stdout.strip().splitlines()[-1])
                    measured["server_cpu_s"] = cpu_seconds(psutil.Process(server.pid)) - server_before
                    results[name].append(measured)
                    print(name, {k: round(v, 2) for k, v in measured.items()}, flush=True)
        finally:
            server.terminate()
            server.wait()
    print(f"\n{args.tasks} task runs of {args.chunk} series' configs, 2 local workers; means of {args.rounds} rounds")
    print(f"{'':16}{'wall s':>8}{'flow CPU s':>12}{'workers CPU s':>15}{'server CPU s':>14}{'per task, ms':>14}")
    means = {}
    for name, rows in results.items():
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        means[name] = mean
        total = mean["flow_cpu_s"] + mean["workers_cpu_s"] + mean["server_cpu_s"]
        print(
            f"{name:16}{mean['wall_s']:8.2f}{mean['flow_cpu_s']:12.2f}{mean['workers_cpu_s']:15.2f}"
            f"{mean['server_cpu_s']:14.2f}{1000 * total / args.tasks:14.0f}"
        )
    ours, theirs = means["kept-contexts"], means["prefect-dask"]
    print(
        f"kept-contexts / prefect-dask: wall {ours['wall_s'] / theirs['wall_s']:.2f} x, "
        f"workers' CPU {ours['workers_cpu_s'] / theirs['workers_cpu_s']:.2f} x"
    )


if __name__ == "__main__":
    main()
