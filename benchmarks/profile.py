"""Where a cold run's time goes: process start to flow start, each stage, and shutdown.

Runs `lstm-forecast run --preset P` once into an empty store, against a
`prefect server start` this script starts (`--mode server`) or Prefect's temporary
server (`--mode temporary`), then reads the flow run's and task runs' start and end
times from the Prefect API.

    .venv/bin/python benchmarks/profile.py --mode server --preset default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import BIN, start_server  # noqa: E402


async def run_times(api_url: str, flow_run_id: str) -> tuple[object, list[tuple[str, float, float]]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    rows = [(t.name.rsplit("-", 1)[0], t.start_time.timestamp(), t.end_time.timestamp()) for t in tasks]
    return flow_run, sorted(rows, key=lambda row: row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["server", "temporary"], default="server")
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lstm-forecast-profile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = None
    if args.mode == "server":
        server, url = start_server(work / "home-server", env)
        env |= {"PREFECT_API_URL": url, "PREFECT_HOME": str(work / "home-client")}
    else:
        env |= {"PREFECT_HOME": str(work / "home-temporary")}
    try:
        started = time.time()
        done = subprocess.run(
            [
                str(BIN / "lstm-forecast"),
                "run",
                "--preset",
                args.preset,
                "--artifacts-dir",
                str(work / "store"),
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        ended = time.time()
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if args.mode == "temporary":  # the temporary server is gone: read the run from a fresh one on the same DB
            server, url = start_server(work / "home-temporary", env)
        flow_run, tasks = asyncio.run(run_times(url, result["flow_run_id"]))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    flow_start, flow_end = flow_run.start_time.timestamp(), flow_run.end_time.timestamp()
    print(f"cold `lstm-forecast run --preset {args.preset}`, {args.mode} Prefect server: {ended - started:.1f} s wall")
    print(f"  {'process start -> flow run starts (imports, server, flow setup)':<66}{flow_start - started:>6.1f} s")
    previous = flow_start
    for name, start, end in tasks:
        gap = start - previous
        print(f"  {name + ' (+ ' + format(gap, '.2f') + ' s before it)':<66}{end - start:>6.1f} s")
        previous = end
    print(f"  {'after the last stage -> flow run ends (artifacts, state)':<66}{flow_end - previous:>6.1f} s")
    print(f"  {'flow run ends -> process exits (log flush, shutdown)':<66}{ended - flow_end:>6.1f} s")


if __name__ == "__main__":
    main()
