"""The installed command as a user runs it: no server configured, so Prefect starts a temporary one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lstm_forecast.tasks.core.store import STAGES
from tests.helpers import BIN, quiet_env


def test_run_on_the_temporary_server_prints_summary_and_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--artifacts-dir", str(tmp_path / "store"), "--json"],
        env=quiet_env(tmp_path / "home", None),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for split_name in ("train", "test"):
        for model in ("lstm", "naive"):
            values = result["metrics"][split_name][model]
            assert 0 < values["mae"] <= values["rmse"] < 10  # RMSE never below MAE; the series' scale is about 1
    assert result["stages"] == {stage: "computed" for stage in STAGES}
    assert all(Path(result["artifacts"][name]).exists() for name in ("plot", "model", "predictions"))
    text = done.stdout
    assert "Metrics (every model forecasts the same targets" in text and "Stages: generate computed" in text
    assert "on the test split" in text  # the plain verdict: LSTM or the best baseline
    assert "epoch 1/1" in done.stderr  # training progress is shown while it runs
