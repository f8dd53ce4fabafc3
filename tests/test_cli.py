"""The installed command as a user runs it: no server configured, so Prefect starts a temporary one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from lstm_forecast.flows.cli import readable, verdict
from lstm_forecast.tasks.core.graph import STAGES
from lstm_forecast.tasks.operations.report import significant
from tests.helpers import BIN, quiet_env


@pytest.fixture(scope="module")
def temporary_server_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`lstm-forecast run --preset smoke --json` in a fresh process with no server configured, in the environment
    of a new user (no TensorFlow logging variables)."""
    folder = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in quiet_env(folder / "home", None).items() if not k.startswith(("TF_", "ABSL_"))}
    done = subprocess.run(
        [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--artifacts-dir", str(folder / "store"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_run_on_the_temporary_server_ends_stdout_with_its_results_as_json(
    temporary_server_run: subprocess.CompletedProcess[str],
) -> None:
    result = json.loads(temporary_server_run.stdout.strip().splitlines()[-1])
    for split_name in ("train", "test"):
        for model in ("lstm", "naive"):
            values = result["metrics"][split_name][model]
            assert 0 < values["mae"] <= values["rmse"] < 10  # RMSE never below MAE; the series' scale is about 1
    assert result["stages"] == {stage: "computed" for stage in STAGES}
    assert all(Path(result["artifacts"][name]).exists() for name in ("plot", "model", "predictions"))


def test_a_run_prints_its_metrics_stages_and_a_plain_verdict(
    temporary_server_run: subprocess.CompletedProcess[str],
) -> None:
    text = temporary_server_run.stdout
    assert "Metrics (every model forecasts the same targets" in text and "Stages: generate computed" in text
    assert "on the test split" in text  # the plain verdict: LSTM or the best baseline
    assert "The forecast table carries half the LSTM" in text  # a single series publishes the combination


def test_the_verdict_names_the_combination_only_when_it_beats_every_model() -> None:
    scores = {"lstm": {"rmse": 2.0}, "naive": {"rmse": 1.5}, "combined": {"rmse": 1.0}}
    assert verdict(scores).startswith("A baseline beats the LSTM") and "--forecast-model combined" in verdict(scores)
    scores["combined"]["rmse"] = 1.6
    assert "naive RMSE 1.5000" in verdict(scores) and "combined" not in verdict(scores)
    assert "combined" not in verdict({"lstm": {"rmse": 1.0}, "naive": {"rmse": 1.5}})


def test_the_verdict_says_when_the_forecast_table_carries_the_combination() -> None:
    scores = {"lstm": {"rmse": 1.0}, "naive": {"rmse": 1.5}, "combined": {"rmse": 1.2}}
    said = verdict(scores, "combined")
    assert said.startswith("The LSTM wins") and "carries half the LSTM" in said and "RMSE 1.2000" in said
    assert "--forecast-model lstm" in said and "carries" not in verdict(scores, "lstm")


def test_metrics_read_in_any_unit() -> None:
    assert [readable(v) for v in (1.35971, 0.0, 14798041.08641, 3.2e-9, -0.00123456)] == [
        "1.3597",
        "0.0000",
        "14798041.1",
        "3.2e-09",
        "-0.0012346",
    ]
    said = verdict({"lstm": {"rmse": 2.1e-9}, "naive": {"rmse": 3.4e-9}})
    assert "RMSE 2.1e-09, best baseline naive 3.4e-09" in said  # not "0.0000 against 0.0000"


def test_the_ui_s_metrics_keep_five_digits_of_a_series_in_any_unit() -> None:
    frame = pd.DataFrame({"model": ["lstm", "naive"], "rmse": [1.23456789e-9, 12345678.987654], "windows": [3, 4]})
    assert significant(frame).to_dict("records") == [
        {"model": "lstm", "rmse": 1.2346e-09, "windows": 3},
        {"model": "naive", "rmse": 12345678.98765, "windows": 4},
    ]


def test_a_run_shows_training_progress_and_no_failed_log_delivery(
    temporary_server_run: subprocess.CompletedProcess[str],
) -> None:
    assert "epoch 1/1" in temporary_server_run.stderr  # training progress is shown while it runs
    assert "Error logging to API" not in temporary_server_run.stderr  # every log reached the server in time


def test_a_new_user_s_first_run_prints_no_library_chatter(
    temporary_server_run: subprocess.CompletedProcess[str],
) -> None:
    err = temporary_server_run.stderr
    assert "Running hook" not in err and "finished running successfully" not in err  # Prefect's, at DEBUG
    assert "absl::InitializeLog" not in err and "] oneDNN custom operations" not in err  # TensorFlow's loading
    assert "cudart_stub" not in err
    assert "600 points, 0 to 59.9\n" in err  # not 59.900000000000006


def test_the_top_level_help_says_what_the_tool_does_not_how_its_module_is_laid_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lstm_forecast.flows import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # as one line: argparse wraps the text
    assert "Keras LSTM forecaster" in shown and "COMMAND --help" in shown
    assert "run_flow" not in shown and "arguments.py" not in shown  # the module's docstring, for its readers


@pytest.mark.parametrize("command", ["run", "retrain", "backtest", "tune", "serve", "models", "predict"])
def test_every_command_s_help_prints_and_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from lstm_forecast.flows.arguments import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: lstm-forecast {command}" in capsys.readouterr().out
