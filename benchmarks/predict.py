"""The forecast table of every series in one `predict` call, against the run's own forecast rows.

Trains a global model on a long-format panel (`lstm-forecast run --horizon 13 --workers 2`, the
defaults; skipped with `--store DIR` holding such a run), then times `lstm-forecast predict
--horizon 13` for every series in one process, twice (TensorFlow's import and the model's load
included each time: every call is a new process), and compares its table with the run's (the
predict stage's rows of each series, the JSON's `forecasts`): the largest difference of `y_hat`,
`y_lo` and `y_hi`, relative to the series' scale. The one-series-at-a-time way (`predict
--series-id ID`, one process per series, as a caller had to before) is timed on `--one-by-one`
series and scaled to the panel, as the ratio.

    .venv/bin/python benchmarks/predict.py                     # M4 Weekly, all 359 series
    .venv/bin/python benchmarks/predict.py --panel 10000       # 10,000 crops of M4 Weekly (scale.py's panel)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import M4_WEEKLY, write_panel  # noqa: E402
from speed import BIN, start_server, timed  # noqa: E402


def predict_seconds(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def largest_difference(table: pd.DataFrame, reference: pd.DataFrame) -> float:
    """The largest |difference| of y_hat, y_lo, y_hi between two forecast tables, over each series' scale."""
    merged = table.merge(reference, on=["unique_id", "ds"], suffixes=("", "_ref"), validate="one_to_one")
    if len(merged) != len(reference):
        raise RuntimeError(f"the tables cover different rows: {len(merged)} of {len(reference)} matched")
    scale = merged.groupby("unique_id")["y_hat_ref"].transform(lambda v: max(float(np.abs(v).max()), 1e-12))
    return max(float(((merged[c] - merged[f"{c}_ref"]).abs() / scale).max()) for c in ("y_hat", "y_lo", "y_hi"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel", type=int, default=0, help="N crops of M4 Weekly instead of its 359 series")
    parser.add_argument("--data-dir", default=str(M4_WEEKLY), help="M4 Weekly's folder (train.parquet)")
    parser.add_argument("--store", help="a store a run of the panel already filled (its JSON in run.json beside it)")
    parser.add_argument("--one-by-one", type=int, default=5, help="series timed one process each (default 5)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = Path(args.store).parent if args.store else Path(tempfile.mkdtemp(prefix="lstm-forecast-predict-"))
    source = work / "panel.parquet"
    if not source.exists():
        if args.panel:
            write_panel(source, args.panel, Path(args.data_dir))
        else:
            pd.read_parquet(Path(args.data_dir) / "train.parquet").to_parquet(source, index=False)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base_env |= {"TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    store = Path(args.store) if args.store else work / "store"
    run_json = work / "run.json"
    if not run_json.exists():
        server, url = start_server(work / "home-server", base_env)
        env = base_env | {"PREFECT_HOME": str(work / "home-client"), "PREFECT_API_URL": url}
        command = [str(BIN / "lstm-forecast"), "run", "--input", str(source), "--artifacts-dir", str(store)]
        command += ["--horizon", "13", "--workers", str(args.workers), "--json"]
        print(f"lstm-forecast run on {source} ...", file=sys.stderr, flush=True)
        try:
            run = timed(command, env, work)
        finally:
            server.terminate()
            server.wait(timeout=30)
        run_json.write_text(json.dumps(run["result"]))
        print(f"run: {run['wall_s']:.1f} s", file=sys.stderr)
    result = json.loads(run_json.read_text())
    reference = pd.read_parquet(result["forecasts"])
    series = sorted(reference["unique_id"].unique())

    env = base_env | {"PREFECT_HOME": str(work / "home-predict")}
    predict = [str(BIN / "lstm-forecast"), "predict", "--artifacts-dir", str(store), "--horizon", "13", "--json"]
    walls, outputs = [], []
    for _ in range(2):
        wall, output = predict_seconds(predict, env, work)
        walls.append(wall)
        outputs.append(output)
        print(f"predict, every series: {wall:.1f} s", file=sys.stderr, flush=True)
    table = pd.read_parquet(outputs[-1]["forecast"])
    difference = largest_difference(table, reference)
    rng = np.random.default_rng(0)
    picked = [str(i) for i in rng.choice(series, size=min(args.one_by_one, len(series)), replace=False)]
    one_walls = [predict_seconds([*predict, "--series-id", i], env, work)[0] for i in picked]
    per_series = statistics.median(one_walls)

    print(f"\n{len(series)} series, horizon 13, CPU cores: {os.cpu_count()}")
    print(f"{'':<44}{'wall s':>9}{'series/s':>10}")
    every, one_each = statistics.median(walls), per_series * len(series)
    print(f"{'predict, every series in one call (median)':<44}{every:>9.1f}{len(series) / every:>10.1f}")
    print(f"{'predict --series-id, one call per series':<44}{one_each:>9.1f}{1 / per_series:>10.2f}")
    print(f"  (one call per series: median of {len(picked)} calls, {per_series:.1f} s each, times {len(series)})")
    print(f"one call / one per series: {every / one_each:.4f} x")
    print(f"rows: {len(table)} (the run's table: {len(reference)}); calls: {', '.join(f'{w:.1f}' for w in walls)} s")
    print(
        f"largest difference from the run's forecast rows (y_hat, y_lo, y_hi; over the series' scale): {difference:.2e}"
    )
    print(f"within 1e-6: {difference <= 1e-6}")


if __name__ == "__main__":
    main()
