"""The LSTM against its baselines on real public series: the built-in sine plus every series of
`benchmarks/datasets.py`, each through `lstm-forecast run --input FILE.csv --json`.

    .venv/bin/python benchmarks/real.py [--only NAME ...] [--extra "ARGS"] [--jobs N] [--json-out FILE]
                                        [--timeout S] [--temporary-server]

    .venv/bin/python benchmarks/real.py --only nile airpassengers --extra "--look-back 16 --patch 4"

Each series is written as a CSV (`ds, y`) to a temporary folder and run with the CLI's defaults plus
`--extra`, in its own temporary artifact store (nothing is cached between series or benchmark runs).
One table: exit code, the LSTM's test RMSE, the combined forecast's (half the LSTM, half the mean of
AutoETS and AutoARIMA), every baseline's test RMSE (whatever else `metrics.test` holds), LSTM / best
baseline, LSTM / seasonal naive, combined / best baseline, wall seconds; then, for the LSTM and for the
combination, the geometric mean of it over the best baseline on the real series (the sine excluded) and
on how many it loses to the seasonal-naive forecast; and the same mean for the model each run's forecast
table publishes (what a user of the defaults gets). A series that fails shows its exit code and last stderr line.

Prefect: the runs report to the server PREFECT_API_URL names; without one the script starts one
`prefect server start` for all runs (wall times then leave out the few seconds a temporary
server costs each run). `--temporary-server` lets each run start Prefect's temporary server
instead, as a user without a server gets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.datasets import DATASETS  # noqa: E402

BIN = Path(sys.executable).parent
SINE = "sine"
MODELS = ("lstm", "combined")  # the project's forecasts; every other model of `metrics.test` is a baseline


# --- running the CLI (m4.py uses these too) ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(api_url: str | None, prefect_home: Path | None = None) -> dict[str, str]:
    """The environment of an `lstm-forecast` run: quiet, reporting to `api_url` (None: a temporary server)."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS="false",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:  # a loaded machine can take longer than Prefect's default 20 s to start the temporary server
        env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env


@contextlib.contextmanager
def prefect_server(temporary: bool, home: Path) -> Iterator[str | None]:
    """The API URL the runs report to: PREFECT_API_URL if set, None if `temporary` (each run starts its
    own), else a `prefect server start` of our own on a free loopback port, stopped on exit."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    if temporary:
        yield None
        return
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = cli_env(None, home) | {"PREFECT_UI_ENABLED": "false"}
    url = f"http://127.0.0.1:{port}/api"
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
                if process.poll() is not None:
                    raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("prefect server did not become healthy in 180 s")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class CliRun:
    exit: int
    wall_s: float
    result: dict[str, Any] | None  # the JSON line, when the run printed one
    error: str  # the last stderr line worth showing ('' when it succeeded)
    stdout: str = field(repr=False, default="")


def last_error_line(stderr: str) -> str:
    """The CLI's own `error: ...` line if there is one, else the last non-empty stderr line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def run_cli(args: Sequence[str], env: dict[str, str], timeout: float | None = None) -> CliRun:
    """`lstm-forecast ARGS` (which must include --json); its exit code, wall time and JSON result."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [str(BIN / "lstm-forecast"), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr
        return CliRun(
            124,
            time.perf_counter() - started,
            None,
            f"timed out after {timeout:g} s; {last_error_line(stderr or '')}".rstrip("; "),
        )
    wall = time.perf_counter() - started
    result = None
    lines = done.stdout.strip().splitlines()
    if lines:
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(lines[-1])
            result = parsed if isinstance(parsed, dict) else None
    error = "" if done.returncode == 0 and result is not None else last_error_line(done.stderr)
    if done.returncode == 0 and result is None:
        error = error or "no JSON line at the end of stdout"
    return CliRun(done.returncode, wall, result, error, done.stdout)


# --- the benchmark ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    series: str
    points: int | None
    exit: int
    wall_s: float
    rmse: dict[str, float]  # test RMSE per model: 'lstm', 'combined' and every baseline the run scored
    error: str = ""
    frequency: str = ""
    published: str = ""  # the model of the run's forecast table: what a user of the defaults gets

    @property
    def baselines(self) -> dict[str, float]:
        return {name: value for name, value in self.rmse.items() if name not in MODELS and math.isfinite(value)}

    @property
    def best_baseline(self) -> str | None:
        return min(self.baselines, key=self.baselines.__getitem__) if self.baselines else None

    def ratio(self, baseline: str | None, model: str = "lstm") -> float:
        """`model`'s test RMSE over `baseline`'s (NaN when either is missing)."""
        ours, base = self.rmse.get(model, math.nan), self.rmse.get(baseline or "", math.nan)
        return ours / base if base and math.isfinite(base) and math.isfinite(ours) else math.nan


def run_series(name: str, folder: Path, extra: list[str], env: dict[str, str], timeout: float | None) -> Row:
    store = folder / "stores" / name
    args = ["run", "--json", "--artifacts-dir", str(store), *extra]
    points: int | None = None
    frequency = "synthetic"
    if name != SINE:
        dataset = DATASETS[name]
        frame = dataset.load()
        points, frequency = len(frame), dataset.frequency
        path = folder / "inputs" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        args[1:1] = ["--input", str(path)]
    run = run_cli(args, env, timeout)
    test = (run.result or {}).get("metrics", {}).get("test", {})
    rmse = {model: float(values["rmse"]) for model, values in test.items() if "rmse" in values}
    if name == SINE and run.result:
        points = _series_points(run.result)
    return Row(name, points, run.exit, run.wall_s, rmse, run.error, frequency, _published(run.result))


def _published(result: dict[str, Any] | None) -> str:
    """The model of a run's forecast table ('lstm' or 'combined'; '' without one)."""
    try:
        import pandas as pd

        return str(pd.read_parquet(result["artifacts"]["forecasts"], columns=["model"])["model"].iloc[0])
    except Exception:  # a failed run has none
        return ""


def _series_points(result: dict[str, Any]) -> int | None:
    """Points of the built-in series (it has no input file): the rows of the generate stage's output."""
    try:
        import pandas as pd

        return len(pd.read_parquet(result["artifacts"]["series"], columns=["y"]))
    except Exception:  # only a label: never fail the benchmark for it
        return None


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def print_table(rows: list[Row]) -> None:
    baselines: list[str] = []
    for row in rows:
        baselines += [name for name in row.rmse if name not in MODELS and name not in baselines]
    baselines.sort(key=lambda name: (name != "seasonal_naive", name))
    width = max([6, *(len(row.series) for row in rows)]) + 2
    head = (
        f"{'series':<{width}}{'freq':<12}{'points':>7}{'exit':>5}{'lstm':>11}{'combined':>11}"
        + "".join(f"{name:>{max(len(name), 9) + 2}}" for name in baselines)
        + f"{'best baseline':>16}{'lstm/best':>10}{'lstm/snaive':>12}{'comb/best':>10}{'wall s':>8}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        print(
            f"{row.series:<{width}}{row.frequency:<12}{_fmt(row.points, 'd') if row.points else '-':>7}"
            f"{row.exit:>5}{_fmt(row.rmse.get('lstm'), '.4g'):>11}{_fmt(row.rmse.get('combined'), '.4g'):>11}"
            + "".join(f"{_fmt(row.rmse.get(name), '.4g'):>{max(len(name), 9) + 2}}" for name in baselines)
            + f"{row.best_baseline or '-':>16}{_fmt(row.ratio(row.best_baseline), '.3f'):>10}"
            f"{_fmt(row.ratio('seasonal_naive'), '.3f'):>12}"
            f"{_fmt(row.ratio(row.best_baseline, 'combined'), '.3f'):>10}{row.wall_s:>8.0f}"
        )
    print("-" * len(head))
    real = [row for row in rows if row.series != SINE]
    for model, label in (("lstm", "LSTM"), ("combined", "combined (half LSTM, half AutoETS/AutoARIMA)")):
        ratios = [row.ratio(row.best_baseline, model) for row in real]
        ratios = [value for value in ratios if math.isfinite(value) and value > 0]
        scored = [row for row in real if math.isfinite(row.ratio("seasonal_naive", model))]
        worse = [row.series for row in scored if row.ratio("seasonal_naive", model) > 1]
        if not ratios:
            print(f"Geometric mean of {label} / best baseline: no real series scored it")
            continue
        geomean = math.exp(sum(math.log(value) for value in ratios) / len(ratios))
        print(
            f"Geometric mean of {label} / best baseline over {len(ratios)} real series (sine excluded): "
            f"{geomean:.3f}  ({'loses' if geomean > 1 else 'wins'} on average); worse than seasonal naive "
            f"(test RMSE) on {len(worse)} of {len(scored)}" + (f": {', '.join(worse)}" if worse else "")
        )
    published = [row for row in real if row.published in MODELS]
    ratios = [row.ratio(row.best_baseline, row.published) for row in published]
    ratios = [value for value in ratios if math.isfinite(value) and value > 0]
    if ratios:
        counts = ", ".join(f"{m} on {sum(r.published == m for r in published)}" for m in MODELS)
        geomean = math.exp(sum(math.log(value) for value in ratios) / len(ratios))
        print(
            f"The runs' forecast tables publish {counts}: what they publish / best baseline, geometric mean "
            f"{geomean:.3f}"
        )
    failed = [row for row in rows if row.exit != 0 or "lstm" not in row.rmse]
    if failed:
        print(f"{len(failed)} run(s) failed:")
        for row in failed:
            print(f"  {row.series}: exit {row.exit}: {row.error[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [SINE, *DATASETS]
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=names, help=f"run only these series (of: {', '.join(names)})"
    )
    parser.add_argument("--extra", default="", help='extra flags for every run, e.g. --extra "--horizon 1"')
    parser.add_argument("--jobs", type=int, default=1, help="series run at once (default 1)")
    parser.add_argument("--json-out", metavar="FILE", help="write the rows as JSON to FILE")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take (default 3600)")
    parser.add_argument(
        "--temporary-server",
        action="store_true",
        help="let each run start Prefect's temporary server instead of sharing one",
    )
    args = parser.parse_args()
    selected = args.only or names
    extra = shlex.split(args.extra)

    rows: dict[str, Row] = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="lstm-forecast-real-") as tmp:
        folder = Path(tmp)
        with prefect_server(args.temporary_server, folder / "prefect-home") as api_url:
            env = cli_env(api_url, None if os.environ.get("PREFECT_API_URL") else folder / "prefect-home")
            print(
                f"{len(selected)} series, {max(1, args.jobs)} at a time, extra flags: {extra or 'none'}; "
                f"Prefect server: {api_url or 'a temporary one per run'}",
                file=sys.stderr,
                flush=True,
            )
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                futures = {pool.submit(run_series, name, folder, extra, env, args.timeout): name for name in selected}
                for future in as_completed(futures):
                    row = future.result()
                    with lock:
                        rows[row.series] = row
                        print(
                            f"  {row.series}: exit {row.exit}, {row.wall_s:.0f} s"
                            + (f", lstm test RMSE {row.rmse['lstm']:.4g}" if "lstm" in row.rmse else "")
                            + (f" ({row.error[:160]})" if row.error else ""),
                            file=sys.stderr,
                            flush=True,
                        )
    ordered = [rows[name] for name in selected]
    print_table(ordered)
    if args.json_out:
        payload = [
            asdict(row)
            | {
                "best_baseline": row.best_baseline,
                "lstm_over_best": row.ratio(row.best_baseline),
                "lstm_over_seasonal_naive": row.ratio("seasonal_naive"),
                "combined_over_best": row.ratio(row.best_baseline, "combined"),
            }
            for row in ordered
        ]
        Path(args.json_out).write_text(json.dumps(json_safe({"extra": extra, "rows": payload}), indent=1) + "\n")


if __name__ == "__main__":
    main()
