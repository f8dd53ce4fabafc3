"""Faults: a run killed mid-training leaves nothing that is read as finished, and no lock that blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flows import cli
from tests.conftest import BIN, quiet_env


def test_kill_during_training_then_rerun_reuses_finished_stages(
    tmp_path: Path, prefect_server: str, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    args = ["run", "--preset", "smoke", "--epochs", "150", "--artifacts-dir", str(store), "--json"]
    victim = subprocess.Popen([str(BIN / "lstm-forecast"), *args], env=quiet_env(tmp_path / "home", prefect_server),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = store / "_prefect" / "locks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the train stage holds its lock while it trains
        if list((store / "window").glob("*.parquet")) and list(locks.glob("*.lock")):
            break
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("training did not start within 120 s")
    time.sleep(2)  # well into the epochs
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (store / "models").exists() or all(p.name.startswith(".") for p in (store / "models").iterdir())
    assert list(locks.glob("*.lock"))  # the dead run's lock is still there

    started = time.monotonic()
    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert time.monotonic() - started < 200  # no waiting on the dead run's lock
    assert result["stages"] == {
        "generate": "cached", "normalize": "cached", "split": "cached", "window": "cached",
        "train": "computed", "predict": "computed", "evaluate": "computed", "plot": "computed",
    }
    assert [p.name for p in locks.glob("*.lock")] == ["registry.lock"]  # stage locks released; flock file stays
    finished = [p for p in (store / "models").iterdir() if not p.name.startswith(".")]
    assert [p.name for p in finished] == [result["keys"]["train"]]
