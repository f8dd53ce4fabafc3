"""Operations against the session's real Prefect server: retraining, registry, predict, serve, triggers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from lstm_forecast.tasks.core.config import build_config
from lstm_forecast.tasks.core.store import Store
from tests.helpers import BIN, quiet_env

WEAK = {"epochs": 1, "units": 2, "learning_rate": 1e-4}  # barely moves from its initial weights
STRONG = {"epochs": 12, "units": 16, "learning_rate": 0.01, "batch_size": 16}


def write_series(path: Path, n_points: int) -> None:
    """A clean periodic series (so a trained model clearly beats an untrained one)."""
    t = np.arange(n_points)
    noise = np.random.RandomState(1).normal(scale=0.05, size=n_points)
    pd.DataFrame({"ds": t, "y": np.sin(t / 3.0) + noise}).to_csv(path, index=False)


def retrain_once(store: Path, source: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from lstm_forecast.flows.retrain import retrain

    config = build_config("smoke", overrides={"input": str(source), "artifacts_dir": str(store), **overrides})
    return asyncio.run(retrain(config=config))


def write_long_series(path: Path, n_points: int) -> None:
    """Three clean periodic series of different scales in long format, `n_points` each."""
    t = np.arange(n_points)
    parts = [
        pd.DataFrame(
            {
                "unique_id": name,
                "ds": t,
                "y": scale * (2 + np.sin(t / period))
                + np.random.RandomState(number).normal(scale=0.05 * scale, size=n_points),
            }
        )
        for number, (name, scale, period) in enumerate([("a", 1.0, 3.0), ("b", 50.0, 4.0), ("c", 0.2, 5.0)])
    ]
    pd.concat(parts).to_csv(path, index=False)


def test_retraining_a_long_format_input_decides_its_global_model_on_every_series_holdout(
    tmp_path: Path, prefect_api: str
) -> None:
    store_dir, source = tmp_path / "store", tmp_path / "long.csv"
    store = Store(store_dir)
    write_long_series(source, 300)
    first = retrain_once(store_dir, source, WEAK)
    assert first["scope"] == "global" and first["retrain"]["outcome"] == "unchanged"
    assert first["retrain"]["champion"] == first["model"]

    write_long_series(source, 360)  # every series grew: a global challenger is trained and wins
    second = retrain_once(store_dir, source, STRONG)
    assert second["retrain"]["outcome"] == "promoted", second["retrain"]
    assert second["retrain"]["metric"] == "mean MASE" and second["retrain"]["champion"] == second["model"]
    per_series = json.loads(second["retrain"]["per_series"])
    assert sorted(per_series) == ["a", "b", "c"]
    assert second["retrain"]["challenger_rmse"] == pytest.approx(
        np.mean([v["challenger"] for v in per_series.values()])
    )
    registry = store.read_registry().set_index("key")
    assert registry.loc[first["model"], "status"] == "retired" and registry.loc[second["model"], "status"] == "champion"
    assert set(registry["series_id"]) == {"*"}
    decisions = store.read_decisions()
    assert decisions["outcome"].tolist() == ["promoted"] and decisions["metric"].tolist() == ["mean MASE"]
    latest = pd.read_parquet(store_dir / "forecasts" / "latest.parquet")  # as a downstream job reads it
    assert latest["unique_id"].tolist() == ["a", "b", "c"] and (latest["model_key"] == second["model"]).all()
    assert (latest["ds"] == 360).all() and latest[["y_hat", "y_lo", "y_hi"]].notna().all().all()
    assert second["latest"]["table"] == second["forecasts"]  # the promoted champion's forecast is the run's

    # Nothing changed: every output is found in the store, no stage runs, nothing is decided.
    unchanged = retrain_once(store_dir, source, STRONG)
    assert unchanged["retrain"]["outcome"] == "unchanged" and unchanged["model"] == second["model"]
    assert {stage["status"] for detail in unchanged["series"].values() for stage in detail["stages"].values()} == {
        "cached"
    }

    def keys(result: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {i: {name: stage["key"] for name, stage in d["stages"].items()} for i, d in result["series"].items()}

    assert keys(unchanged) == keys(second)  # the keys found are those the stages gave

    # The panel grows by a series the champion was not trained on and one too short to be scored, and a worse
    # challenger is kept out: the kept global champion still forecasts every series of the run, both included
    write_long_series(source, 420)
    frame = pd.read_csv(source)
    newcomer = frame.loc[frame["unique_id"] == "a"].assign(unique_id="d", y=lambda f: 3 * f["y"])
    pd.concat([frame, newcomer, frame.loc[frame["unique_id"] == "b"].tail(8).assign(unique_id="short")]).to_csv(
        source, index=False
    )
    third = retrain_once(store_dir, source, WEAK)
    assert third["retrain"]["outcome"] == "kept out", third["retrain"]
    assert third["series"]["short"]["status"] == "forecast_only"
    latest = pd.read_parquet(store_dir / "forecasts" / "latest.parquet")
    assert sorted(latest["unique_id"]) == ["a", "b", "c", "d", "short"] and (latest["ds"] == 420).all()
    assert (latest["model_key"] == second["model"]).all() and latest[["y_hat", "y_lo", "y_hi"]].notna().all().all()


def test_retraining_promotes_a_better_challenger_and_keeps_out_a_worse_one(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir, source = tmp_path / "store", tmp_path / "series.csv"
    store = Store(store_dir)
    write_series(source, 400)
    first = retrain_once(store_dir, source, WEAK)
    weak_key = first["stages"]["train"]["key"]
    assert first["retrain"]["outcome"] == "unchanged" and first["retrain"]["champion"] == weak_key

    latest_path = store_dir / "forecasts" / "latest.parquet"
    assert pd.read_parquet(latest_path)[["unique_id", "ds", "model_key"]].values.tolist() == [
        ["series", 400.0, weak_key]
    ]

    write_series(source, 480)  # the data grew: a challenger is trained and wins
    second = retrain_once(store_dir, source, STRONG)
    strong_key = second["stages"]["train"]["key"]
    assert pd.read_parquet(latest_path)[["ds", "model_key"]].values.tolist() == [[480.0, strong_key]]
    assert second["stages"]["train"]["status"] == "computed"
    assert second["retrain"]["outcome"] == "promoted", second["retrain"]
    assert second["retrain"]["challenger_rmse"] < second["retrain"]["champion_rmse"]

    write_series(source, 560)  # grew again: this challenger is worse and stays out
    third = retrain_once(store_dir, source, WEAK)
    assert third["retrain"]["outcome"] == "kept out", third["retrain"]
    assert third["retrain"]["champion"] == strong_key
    # the kept champion forecasts the grown data: its own numbers after the new last row
    published = pd.read_parquet(latest_path)
    assert published[["ds", "model_key"]].values.tolist() == [[560.0, strong_key]]
    assert abs(published["y_hat"].iloc[0] - np.sin(560 / 3.0)) < 0.5 and published["y_lo"].notna().all()
    assert len(list((store_dir / "forecasts").glob("*.parquet"))) >= 4  # the earlier tables are kept by key

    unchanged = retrain_once(store_dir, source, WEAK)  # same data and config: cached, nothing decided
    assert unchanged["stages"]["train"]["status"] == "cached"
    assert unchanged["retrain"]["outcome"] == "unchanged"

    registry = store.read_registry().set_index("key")
    assert registry.loc[weak_key, "status"] == "retired"
    assert registry.loc[strong_key, "status"] == "champion"
    assert registry.loc[third["stages"]["train"]["key"], "status"] == "challenger"
    assert (registry["status"] == "champion").sum() == 1
    decisions = store.read_decisions()
    assert decisions["outcome"].tolist() == ["promoted", "kept out"]
    assert (decisions["holdout_start"] == [384, 448]).all()  # the newest 20 % of the data at the time

    assert cli.main(["models", "--artifacts-dir", str(store_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["key"]: row["status"] for row in listed}[strong_key] == "champion"

    assert (
        cli.main(
            [
                "predict",
                "--model",
                "champion",
                "--horizon",
                "5",
                "--artifacts-dir",
                str(store_dir),
                "--input",
                str(source),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    forecast = pd.read_parquet(result["forecast"])
    assert result["model"] == strong_key and Path(result["plot"]).is_file()
    assert forecast["ds"].tolist() == [560.0, 561.0, 562.0, 563.0, 564.0]
    truth = np.sin(np.arange(560, 565) / 3.0)
    assert np.sqrt(np.mean((forecast["y_hat"] - truth) ** 2)) < 0.5  # the promoted model forecasts the sine


def test_serve_refuses_without_a_running_server(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "lstm-forecast"), "serve", "--preset", "smoke"],
        env=quiet_env(tmp_path / "home", None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "needs a running Prefect server" in done.stderr and "prefect server start" in done.stderr


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_served_schedule_runs_and_ad_hoc_triggers_within_the_served_folders(
    tmp_path: Path, prefect_server: str, prefect_api: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import PrefectHTTPStatusError

    store = tmp_path / "store"
    env = quiet_env(tmp_path / "home", prefect_server) | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    receiver, messages = message_receiver()
    notify = f"json://127.0.0.1:{receiver.server_port}/hook"
    served = ["serve", "--preset", "smoke", "--interval", "8", "--artifacts-dir", str(store), "--notify", notify]
    server = subprocess.Popen(
        [str(BIN / "lstm-forecast"), *served],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        with get_client(sync_client=True) as client:
            retrain_deployment = wait_for(lambda: _deployment(client, "lstm-retrain/retrain"), 60, "deployments")
            ad_hoc = wait_for(lambda: _deployment(client, "lstm-forecast/ad-hoc"), 30, "ad hoc deployment")
            assert retrain_deployment.schedules and not ad_hoc.schedules

            def completed_retrains() -> list[Any] | None:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain_deployment.id]))
                )
                completed = [run for run in runs if run.state and run.state.is_completed()]
                return completed if len(completed) >= 2 else None

            done = wait_for(completed_retrains, 240, "two completed scheduled retraining runs")
            assert all(run.auto_scheduled for run in done)
            # each scheduled run publishes the champion's forecast where a downstream job reads it
            latest = pd.read_parquet(store / "forecasts" / "latest.parquet")
            champion = Store(store).read_registry().query("status == 'champion'")["key"].tolist()
            assert latest["model_key"].tolist() == champion and latest["unique_id"].tolist() == ["series"]

            # A bad parameter is refused by the server before any run exists.
            before = len(
                client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[ad_hoc.id])))
            )
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(ad_hoc.id, parameters={"config": {"epochs": 0}})
            assert refused.value.response.status_code == 409
            assert "epochs" in refused.value.response.text
            assert (
                len(client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[ad_hoc.id]))))
                == before
            )

        # An ad hoc run from the command line, giving only the fields it changes: the rest stay served.
        triggered = subprocess.run(
            [
                str(BIN / "prefect"),
                "deployment",
                "run",
                "lstm-forecast/ad-hoc",
                "--params",
                json.dumps({"config": {"epochs": 2, "units": 4}}),
                "--watch",
                "--watch-timeout",
                "180",
            ],
            env=quiet_env(tmp_path / "home", prefect_server),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert triggered.returncode == 0, triggered.stdout[-2000:] + triggered.stderr[-2000:]
        registry = Store(store).read_registry()
        configs = [json.loads(text) for text in registry["config"]]
        smoke = build_config("smoke")
        assert any(
            c["epochs"] == 2 and c["units"] == 4 and c["n_points"] == smoke.n_points and c["patience"] == smoke.patience
            for c in configs
        )

        # A run pointed at a store outside the served folders fails at once and writes nothing there.
        elsewhere = tmp_path / "elsewhere"
        outside = build_config("smoke", overrides={"artifacts_dir": str(elsewhere)}).model_dump(mode="json")
        with get_client(sync_client=True) as client:
            fenced = client.create_flow_run_from_deployment(ad_hoc.id, parameters={"config": outside})

            def ended() -> Any:
                run = client.read_flow_run(fenced.id)
                return run if run.state and run.state.is_final() else None

            failed = wait_for(ended, 120, "the fenced run to end")
            assert failed.state.is_failed()
        assert not elsewhere.exists()
        # ... and the failure reached the --notify URL, through Apprise, as one message naming the run
        told = wait_for(lambda: [m for m in messages if failed.name in m.get("message", "")], 60, "a notification")
        assert len(told) == 1 and "Failed" in told[0]["message"] and told[0]["type"] == "failure"
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        receiver.shutdown()


def message_receiver() -> tuple[Any, list[dict[str, Any]]]:
    """A real HTTP server on a loopback port, in a thread, keeping each JSON body POSTed to it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    messages: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            messages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, messages


def _deployment(client: Any, name: str) -> Any:
    try:
        return client.read_deployment_by_name(name)
    except Exception:  # not registered yet
        return None
