"""Side by side, in one sitting: the tutorial's script against `lstm-forecast run`, cold and warm.

Each round runs, in turn: the reference script, then for each preset a cold run
(empty store) and a warm run (the same store, nothing changed). Reports the median
and min-max wall time, the ratio to the reference, peak RSS and the test RMSE.

    .venv/bin/python benchmarks/speed.py --reference ../shared/reference/seed_lstm.py --rounds 3

Without `PREFECT_API_URL` each run of lstm-forecast starts Prefect's temporary
server; with it set, runs go to that server (start one with `prefect server start`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Run a command; its wall seconds, peak RSS of its largest process (GB), and stdout's last line."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stdout[-2000:]}")
    last = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "rss_gb": usage.ru_maxrss / 1024**2, "result": last}


def test_rmse(result: dict) -> float:
    if "test_rmse" in result:  # the reference script
        return float(result["test_rmse"])
    return float(result["metrics"]["test"]["lstm"]["rmse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="path of seed_lstm.py")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["default", "seed"])
    args = parser.parse_args()

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    work = Path(tempfile.mkdtemp(prefix="lstm-forecast-bench-"))
    samples: dict[str, list[dict]] = {}
    for round_number in range(args.rounds):
        print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr, flush=True)
        samples.setdefault("reference", []).append(
            timed([sys.executable, str(Path(args.reference).resolve()), "--plot", str(work / "ref.png")], env, work)
        )
        for preset in args.presets:
            store = work / f"store-{preset}"
            shutil.rmtree(store, ignore_errors=True)
            command = [str(BIN / "lstm-forecast"), "run", "--preset", preset, "--artifacts-dir", str(store), "--json"]
            samples.setdefault(f"{preset} cold", []).append(timed(command, env, work))
            warm = timed(command, env, work)
            assert set(warm["result"]["stages"].values()) == {"cached"}, warm["result"]["stages"]
            samples.setdefault(f"{preset} warm", []).append(warm)

    reference = statistics.median(s["wall_s"] for s in samples["reference"])
    server = os.environ.get("PREFECT_API_URL") or "temporary server per run"
    print(f"\nPrefect: {server}; {args.rounds} rounds; CPU cores: {os.cpu_count()}")
    print(f"{'run':<14}{'median s':>10}{'min-max s':>14}{'x reference':>13}{'peak RSS GB':>13}{'test RMSE':>11}")
    for name, runs in samples.items():
        walls = [s["wall_s"] for s in runs]
        rmse = statistics.median(test_rmse(s["result"]) for s in runs)
        print(f"{name:<14}{statistics.median(walls):>10.1f}{min(walls):>7.1f}-{max(walls):<6.1f}"
              f"{statistics.median(walls) / reference:>13.2f}{max(s['rss_gb'] for s in runs):>13.2f}{rmse:>11.4f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
