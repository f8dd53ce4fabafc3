"""The `smoke` flow end to end against the session's Prefect server: tasks, cache, retries, concurrency."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from lstm_forecast.tasks.core.graph import STAGES
from lstm_forecast.tasks.core.store import Store
from tests.helpers import BIN, quiet_env, run_artifacts, store_snapshot, task_runs


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """`lstm-forecast run --json ...` in this process: (exit code, last JSON line or None, stderr)."""
    code = cli.main(["run", "--json", *args])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    result = json.loads(lines[-1]) if code == 0 and lines else None
    return code, result, captured.err


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    return tmp_path_factory.mktemp("smoke") / "store"


@dataclass
class TwoRuns:
    """A first `run --json` on the empty smoke store, then the same command again."""

    first: dict[str, Any]
    second: dict[str, Any]
    files_before_second: dict[str, str]
    mtimes_before_second: dict[Path, int]


def quiet_run(*args: str) -> dict[str, Any]:
    """`lstm-forecast run --json ...` in this process, its printout kept; the JSON line."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["run", "--json", *args]) == 0
    return json.loads(printed.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs(smoke_store: Path, prefect_api: str) -> TwoRuns:
    first = quiet_run("--preset", "smoke", "--artifacts-dir", str(smoke_store))
    before = store_snapshot(smoke_store)
    mtimes = {p: p.stat().st_mtime_ns for p in smoke_store.rglob("*") if p.is_file() and "locks" not in p.parts}
    second = quiet_run("--preset", "smoke", "--artifacts-dir", str(smoke_store))
    return TwoRuns(first, second, before, mtimes)


def test_a_first_run_computes_every_stage_and_reports_its_metrics_and_outputs(two_runs: TwoRuns) -> None:
    result = two_runs.first
    assert list(result["stages"]) == list(STAGES) and set(result["stages"].values()) == {"computed"}
    for split_name in ("train", "test"):
        for model in ("lstm", "naive"):
            values = result["metrics"][split_name][model]
            assert 0 < values["mae"] <= values["rmse"] < 10  # RMSE never below MAE; the series' scale is about 1
    for name in ("plot", "model", "predictions"):
        assert Path(result["artifacts"][name]).exists()
    assert (Path(result["artifacts"]["model"]) / "model.keras").is_file()


def test_a_first_run_shows_a_task_run_per_stage_and_its_artifacts_in_prefect(two_runs: TwoRuns) -> None:
    result = two_runs.first
    runs = task_runs(result["flow_run_id"])
    assert sorted(run.name.rsplit("-", 1)[0] for run in runs) == sorted([*STAGES, "register", "forecast-table"])
    assert all(run.state.is_completed() for run in runs)
    artifacts = run_artifacts(result["flow_run_id"])
    assert {"lstm-forecast-metrics", "lstm-forecast-plot", "lstm-forecast-model"} <= set(artifacts)
    # the forecast table: one row per step after the end of the series, its path in the artifact
    table = pd.read_parquet(result["artifacts"]["forecasts"])
    assert table[["unique_id", "model_key"]].values.tolist() == [["series", result["keys"]["train"]]]
    assert result["artifacts"]["forecasts"] in artifacts["lstm-forecast-forecasts"].description
    assert artifacts["lstm-forecast-plot"].data.startswith("![forecast plot](data:image/png;base64,")
    assert result["keys"]["train"] in artifacts["lstm-forecast-model"].data
    progress = [a for a in artifacts.values() if a.type == "progress"]
    assert progress and progress[0].data == 100.0


def test_a_first_run_forecasts_every_test_target(two_runs: TwoRuns) -> None:
    predictions = pd.read_parquet(two_runs.first["artifacts"]["predictions"])
    assert list(predictions.columns) == ["ds", "y", "y_hat", "y_lo", "y_hi", "split", "step"]
    assert (predictions["split"] == "test").sum() == 120  # smoke: 600 points, 20 % test, every one forecast


def test_a_second_identical_run_is_all_cached_writes_nothing_and_gives_the_same_numbers(
    two_runs: TwoRuns, smoke_store: Path
) -> None:
    again = two_runs.second
    assert set(again["stages"].values()) == {"cached"}
    assert again["metrics"] == two_runs.first["metrics"]
    assert store_snapshot(smoke_store) == two_runs.files_before_second
    assert {p: p.stat().st_mtime_ns for p in two_runs.mtimes_before_second} == two_runs.mtimes_before_second
    states = {run.name.rsplit("-", 1)[0]: run.state.name for run in task_runs(again["flow_run_id"])}
    assert states == {stage: "Cached" for stage in STAGES} | {"register": "Completed", "forecast-table": "Completed"}
    assert again["artifacts"]["forecasts"] == two_runs.first["artifacts"]["forecasts"]  # found, not written again
    assert {"lstm-forecast-metrics", "lstm-forecast-plot"} <= set(run_artifacts(again["flow_run_id"]))


def test_a_single_series_publishes_the_combination_and_forecast_model_lstm_the_network_alone(
    two_runs: TwoRuns, smoke_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = two_runs.first
    assert "combined" in first["metrics"]["test"] and first["metrics"]["test"]["combined"]["rmse"] > 0
    combined = pd.read_parquet(first["artifacts"]["forecasts"])
    metadata = Store(smoke_store).read_table_metadata("evaluate", first["keys"]["evaluate"])
    np.testing.assert_allclose(combined["y_hat"], metadata["combined_forecast"])
    # its interval is calibrated on its own test errors (evaluate's `combined_widths`), not borrowed from the LSTM
    np.testing.assert_allclose(combined["y_hi"] - combined["y_hat"], metadata["combined_widths"])
    assert (combined["y_hi"] - combined["y_lo"] > 0).all()

    code, result, _ = run_cli(
        capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store), "--forecast-model", "lstm"
    )
    assert code == 0 and result is not None
    # evaluate alone runs again: without the combination it fits the statistical models before the test split only
    assert {stage for stage, status in result["stages"].items() if status != "cached"} == {"evaluate"}
    assert result["metrics"]["test"] == first["metrics"]["test"]  # the same models scored on the same targets
    lstm = pd.read_parquet(result["artifacts"]["forecasts"])
    assert combined["model"].tolist() == ["combined"] * len(lstm) and (lstm["model"] == "lstm").all()
    predictions = pd.read_parquet(result["artifacts"]["predictions"])
    np.testing.assert_allclose(lstm["y_hat"], predictions.loc[predictions["split"] == "forecast", "y_hat"])
    assert not np.allclose(combined["y_hat"], lstm["y_hat"])


def test_changing_epochs_reruns_train_and_what_follows_only(
    smoke_store: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["run", "--preset", "smoke", "--artifacts-dir", str(smoke_store)])
    capsys.readouterr()
    code, result, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store), "--epochs", "2")
    assert code == 0 and result is not None
    assert result["stages"] == {
        "generate": "cached",
        "normalize": "cached",
        "split": "cached",
        "window": "cached",
        "train": "computed",
        "predict": "computed",
        "evaluate": "computed",
        "plot": "computed",
    }


def test_deleting_one_stage_output_rebuilds_it_and_its_dependants(
    smoke_store: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store))
    assert code == 0 and result is not None
    store = Store(smoke_store)
    store.path("predict", result["keys"]["predict"]).unlink()
    code, rebuilt, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store))
    assert code == 0 and rebuilt is not None
    expected = {stage: "cached" for stage in STAGES} | {
        "predict": "computed",
        "evaluate": "computed",
        "plot": "computed",
    }
    assert rebuilt["stages"] == expected
    assert rebuilt["metrics"] == result["metrics"]


def test_damaged_cache_file_is_rebuilt_not_trusted(
    smoke_store: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store))
    assert code == 0 and result is not None
    window_file = Store(smoke_store).path("window", result["keys"]["window"])
    window_file.write_bytes(window_file.read_bytes()[:50])  # truncated mid-file
    code, rebuilt, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store))
    assert code == 0 and rebuilt is not None
    assert rebuilt["stages"]["window"] == "computed" and rebuilt["stages"]["split"] == "cached"
    assert rebuilt["stages"]["train"] == "computed"  # it reads the rebuilt file
    assert pd.read_parquet(window_file)["split"].value_counts()["test"] == 120


def test_a_file_saved_again_with_the_same_values_or_a_garbled_source_record_retrains_nothing(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t = np.arange(500) * 0.1
    frame = pd.DataFrame({"ds": t, "y": np.sin(t) + np.random.RandomState(0).normal(scale=0.3, size=500)})
    source, store = tmp_path / "series.csv", tmp_path / "store"
    frame.to_csv(source, index=False)
    options = ("--preset", "smoke", "--input", str(source), "--artifacts-dir", str(store))
    code, first, _ = run_cli(capsys, *options)
    assert code == 0 and first is not None and first["stages"]["train"] == "computed"

    frame.assign(note="saved again").to_csv(source, index=False, float_format="%.17g")  # other bytes, same series
    for record in (store / "sources").iterdir():
        record.write_text("{garbled")
    code, again, _ = run_cli(capsys, *options)
    assert code == 0 and again is not None
    assert again["stages"]["generate"] == "computed"  # the file changed: it is read again
    assert {stage for stage, how in again["stages"].items() if how == "computed"} == {"generate"}
    assert again["keys"] == first["keys"] and again["metrics"] == first["metrics"]


def test_same_config_gives_same_metrics_in_a_fresh_store(
    smoke_store: Path, tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, first, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(smoke_store))
    _, fresh, _ = run_cli(capsys, "--preset", "smoke", "--artifacts-dir", str(tmp_path / "other"))
    assert first is not None and fresh is not None
    assert fresh["stages"]["train"] == "computed"
    assert fresh["metrics"] == first["metrics"]


def test_file_input_with_dates_and_a_transient_read_failure_is_retried(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lstm_forecast.tasks.stages import generate as generate_stage

    frame = pd.DataFrame(
        {
            "when": pd.date_range("2024-01-01", periods=400, freq="h").astype(str),
            "load": np.sin(np.arange(400) / 5.0) + 10,
        }
    )
    source = tmp_path / "load.csv"
    frame.to_csv(source, index=False)
    real_read = generate_stage.read_input_file
    failures = []

    def flaky_read(path: str | Path) -> tuple[bytes, str]:
        if not failures:
            failures.append(path)
            raise OSError("stale file handle (injected)")
        return real_read(path)

    monkeypatch.setattr(generate_stage, "read_input_file", flaky_read)
    settings = tmp_path / "fast-retry.yaml"
    settings.write_text("preset: smoke\nread_retry_delay_s: 0.1\n")
    code, result, _ = run_cli(
        capsys,
        "--config",
        str(settings),
        "--input",
        str(source),
        "--time-column",
        "when",
        "--value-column",
        "load",
        "--artifacts-dir",
        str(tmp_path / "store"),
    )
    assert code == 0 and result is not None and failures
    predictions = pd.read_parquet(result["artifacts"]["predictions"])
    assert predictions["ds"].dtype.kind == "M"
    assert predictions["ds"].iloc[-1] == pd.Timestamp("2024-01-17 16:00")  # one hour after the last row

    from prefect.client.orchestration import get_client

    generate_run = next(r for r in task_runs(result["flow_run_id"]) if r.name.startswith("generate"))
    with get_client(sync_client=True) as client:
        history = [state.name for state in client.read_task_run_states(generate_run.id)]
    assert "AwaitingRetry" in history and history[-1] == "Completed"


def test_two_identical_runs_at_once_train_once_and_a_cached_run_and_predict_skip_tensorflow(
    tmp_path: Path, prefect_server: str
) -> None:
    store = tmp_path / "store"
    command = [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--artifacts-dir", str(store), "--json"]
    processes = [
        subprocess.Popen(
            command,
            env=quiet_env(tmp_path / f"home{i}", prefect_server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    codes = [process.returncode for process in processes]
    assert codes == [0, 0], "\n".join(err[-3000:] for (_, err), code in zip(outputs, codes, strict=True) if code)
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for stage in STAGES:
        assert sorted(r["stages"][stage] for r in results) == ["cached", "computed"], stage
    assert results[0]["metrics"] == results[1]["metrics"]
    assert len(list((store / "models").iterdir())) == 1

    # A third, fully cached run against the running server never imports TensorFlow.
    warm = subprocess.run(
        command, env=quiet_env(tmp_path / "home3", prefect_server), capture_output=True, text=True, timeout=120
    )
    assert warm.returncode == 0, warm.stderr[-2000:]
    summary = json.loads(warm.stdout.strip().splitlines()[-1])
    assert set(summary["stages"].values()) == {"cached"}
    assert summary["tensorflow_imported"] is False

    # Nor does `predict`: it applies the saved network's numpy arrays.
    predict = [str(BIN / "lstm-forecast"), "predict", "--horizon", "3", "--artifacts-dir", str(store), "--json"]
    forecast = subprocess.run(
        predict, env=quiet_env(tmp_path / "home4", prefect_server), capture_output=True, text=True, timeout=120
    )
    assert forecast.returncode == 0, forecast.stderr[-2000:]
    assert json.loads(forecast.stdout.strip().splitlines()[-1])["tensorflow_imported"] is False


def test_backtest_reports_mean_and_spread_over_folds(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["backtest", "--preset", "smoke", "--folds", "2", "--artifacts-dir", str(tmp_path / "store"), "--json"]
    )
    assert code == 0
    summary = pd.DataFrame(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"])
    # the folds score the combination, but refit no statistical model for a forecast they do not publish
    store = Store(tmp_path / "store")
    evaluated = [
        store.read_table_metadata("evaluate", p.stem) for p in (tmp_path / "store" / "evaluate").glob("*.parquet")
    ]
    assert len(evaluated) == 3 and sum("combined_forecast" in metadata for metadata in evaluated) == 1  # the full run
    lstm_rmse = summary[(summary["model"] == "lstm") & (summary["metric"] == "rmse")].iloc[0]
    assert lstm_rmse["folds"] == 2 and lstm_rmse["min"] <= lstm_rmse["mean"] <= lstm_rmse["max"]
    assert set(summary["model"]) == {"lstm", "naive", "seasonal_naive", "arima", "auto_ets", "auto_arima", "combined"}
    registry = pd.read_parquet(tmp_path / "store" / "registry.parquet")
    assert registry["status"].tolist() == ["champion"]  # the run on all the data; the folds never register
