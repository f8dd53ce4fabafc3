"""Side by side, in one sitting: the article's script against `lstm-forecast run`, cold and warm.

Each round runs, in turn: the reference script, then for each Prefect mode and preset
a cold run (empty store) and a warm run (the same store, nothing changed). Modes:
`temporary` (no PREFECT_API_URL: Prefect starts a temporary server per run) and
`server` (a `prefect server start` this script starts on a free loopback port with its
own PREFECT_HOME). Reports median and min-max wall time, the ratio to the reference's
median, peak RSS of the largest process, test RMSE, whether the warm runs imported
TensorFlow, and the device that trained.

    .venv/bin/python benchmarks/speed.py --reference ../shared/reference/seed_lstm.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Run a command: wall seconds, peak RSS (GB) of its largest process, and its last stdout line as JSON."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stdout[-2000:]}")
    return {"wall_s": wall, "rss_gb": usage.ru_maxrss / 1024**2, "result": json.loads(stdout.strip().splitlines()[-1])}


def start_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server_env = {**env, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("prefect server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="path of seed_lstm.py")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["default"])
    parser.add_argument("--modes", nargs="+", default=["temporary", "server"], choices=["temporary", "server"])
    args = parser.parse_args()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base_env |= {"TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    work = Path(tempfile.mkdtemp(prefix="lstm-forecast-bench-"))
    server, envs = None, {}
    if "temporary" in args.modes:
        envs["temporary"] = base_env | {"PREFECT_HOME": str(work / "home-temporary")}
    if "server" in args.modes:
        server, url = start_server(work / "home-server", base_env)
        envs["server"] = base_env | {"PREFECT_HOME": str(work / "home-client"), "PREFECT_API_URL": url}
    samples: dict[str, list[dict]] = {}
    try:
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr, flush=True)
            samples.setdefault("reference script", []).append(
                timed(
                    [sys.executable, str(Path(args.reference).resolve()), "--plot", str(work / "ref.png")],
                    base_env,
                    work,
                )
            )
            for mode, env in envs.items():
                for preset in args.presets:
                    store = work / f"store-{mode}-{preset}"
                    shutil.rmtree(store, ignore_errors=True)
                    command = [
                        str(BIN / "lstm-forecast"),
                        "run",
                        "--preset",
                        preset,
                        "--artifacts-dir",
                        str(store),
                        "--json",
                    ]
                    samples.setdefault(f"{preset} cold, {mode}", []).append(timed(command, env, work))
                    warm = timed(command, env, work)
                    assert set(warm["result"]["stages"].values()) == {"cached"}, warm["result"]["stages"]
                    samples.setdefault(f"{preset} warm, {mode}", []).append(warm)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    reference = statistics.median(s["wall_s"] for s in samples["reference script"])
    print(
        f"\n{args.rounds} rounds, alternating; CPU cores: {os.cpu_count()}; "
        f"trained on: {samples[next(k for k in samples if 'cold' in k)][0]['result'].get('trained_on')}"
    )
    print(
        f"{'run':<26}{'median s':>9}{'min-max s':>13}{'x ref':>7}{'x cold':>8}{'peak RSS GB':>12}"
        f"{'test RMSE':>10}{'TF imported':>12}"
    )
    for name, runs in samples.items():
        walls = [s["wall_s"] for s in runs]
        median = statistics.median(walls)
        results = [s["result"] for s in runs]
        rmse = statistics.median(
            r["test_rmse"] if "test_rmse" in r else r["metrics"]["test"]["lstm"]["rmse"] for r in results
        )
        cold = samples.get(name.replace("warm", "cold")) if "warm" in name else None
        versus_cold = f"{median / statistics.median(s['wall_s'] for s in cold):>8.3f}" if cold else f"{'':>8}"
        imported = ", ".join(sorted({str(r.get("tensorflow_imported", "yes")) for r in results}))
        print(
            f"{name:<26}{median:>9.1f}{min(walls):>6.1f}-{max(walls):<6.1f}{median / reference:>7.2f}"
            f"{versus_cold}{max(s['rss_gb'] for s in runs):>12.2f}{rmse:>10.4f}{imported:>12}"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
