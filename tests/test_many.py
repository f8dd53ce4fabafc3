"""Many series: long-format input, one global model or one model per series, sequential or on Dask."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.graph import STAGES
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.registry import champion, register
from lstm_forecast.tasks.operations.summary import SeriesOutcome, series_summary, series_to_show
from lstm_forecast.tasks.stages.generate import select_series, series_ids
from tests.helpers import BIN, quiet_env, run_artifacts, task_runs


def long_frame(lengths: dict[str, int]) -> pd.DataFrame:
    """Noisy sines in long format (`unique_id, ds, y`), one per id, of the given lengths."""
    parts = []
    for number, (series_id, length) in enumerate(lengths.items()):
        t = np.arange(length) * 0.1
        y = np.sin((1 + 0.2 * number) * t) + np.random.RandomState(number).normal(scale=0.3, size=length)
        parts.append(pd.DataFrame({"unique_id": series_id, "ds": t, "y": y}))
    return pd.concat(parts, ignore_index=True)


def test_select_series_keeps_one_id_and_refuses_what_it_cannot_choose() -> None:
    raw = long_frame({"a": 3, "b": 2})
    assert series_ids(raw, "unique_id") == ["a", "b"]
    assert series_ids(raw.drop(columns="unique_id"), "unique_id") == []
    assert select_series(raw, "unique_id", "b")["y"].tolist() == raw["y"].iloc[3:].tolist()
    with pytest.raises(InputError, match="holds 2 series"):
        select_series(raw, "unique_id", None)
    with pytest.raises(InputError, match="'c' is not in column"):
        select_series(raw, "unique_id", "c")
    single = raw[raw["unique_id"] == "a"]
    assert select_series(single, "unique_id", None) is single


def test_summary_names_each_winner_and_keeps_failures() -> None:
    def metrics(rmse: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"split": "test", "model": model, "metric": "rmse", "step": 0, "value": value}
                for model, value in rmse.items()
            ]
        )

    summary = series_summary(
        [
            SeriesOutcome("a", metrics({"lstm": 0.5, "naive": 0.7, "arima": 0.6}), "k1"),
            SeriesOutcome("b", metrics({"lstm": 0.9, "naive": 0.7, "arima": 0.6}), "k2"),
            SeriesOutcome("c", error="series too short"),
        ]
    )
    assert summary["unique_id"].tolist() == ["a", "b", "c"]
    assert summary["winner"].tolist() == ["lstm", "arima", ""]
    assert summary["status"].tolist() == ["completed", "completed", "failed"]
    assert summary.loc[0, "lstm_rmse"] == 0.5 and np.isnan(summary.loc[2, "lstm_rmse"])
    assert summary.loc[2, "error"] == "series too short"
    assert summary["baselines"].tolist() == ["naive,arima", "naive,arima", ""]


def test_the_ui_shows_the_lstm_s_best_and_worst_series_by_test_mase() -> None:
    def outcome(series_id: str, mase: float) -> SeriesOutcome:
        metrics = pd.DataFrame([{"split": "test", "model": "lstm", "metric": "mase", "step": 0, "value": mase}])
        return SeriesOutcome(series_id, metrics, "k", plot_key="p")

    outcomes = [outcome(f"s{i}", mase) for i, mase in enumerate([0.9, 0.2, 1.7, 0.5, 2.4, 1.1])]
    outcomes.append(SeriesOutcome("failed", error="too short"))
    shown = series_to_show(outcomes, count=4)
    assert [(o.series_id, label.split(":")[0]) for o, label in shown] == [
        ("s1", "among the best"),
        ("s3", "among the best"),
        ("s2", "among the worst"),
        ("s4", "among the worst"),
    ]
    assert [o.series_id for o, _ in series_to_show(outcomes[:3], count=4)] == ["s1", "s0", "s2"]


def test_each_series_has_its_own_champion() -> None:
    def entry(key: str, series_id: str) -> dict[str, object]:
        return {"key": key, "series_id": series_id, "test_rmse": 1.0, "test_mae": 1.0, "naive_test_rmse": 1.0}

    registry = register(None, entry("k1", "a"))
    registry = register(registry, entry("k2", "b"))
    registry = register(registry, entry("k3", "a"))
    assert registry["status"].tolist() == ["champion", "champion", "challenger"]
    assert (champion(registry, "a"), champion(registry, "b"), champion(registry)) == ("k1", "k2", None)


def test_an_unreachable_dask_scheduler_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    source = tmp_path / "long.csv"
    long_frame({"a": 300, "b": 300}).to_csv(source, index=False)
    result = subprocess.run(
        [
            str(BIN / "lstm-forecast"),
            "run",
            "--preset",
            "smoke",
            "--input",
            str(source),
            "--artifacts-dir",
            str(tmp_path / "store"),
            "--dask-address",
            f"tcp://127.0.0.1:{port}",
        ],
        env=quiet_env(tmp_path / "home", None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot reach the Dask scheduler" in result.stderr and "fix:" in result.stderr
    assert not (tmp_path / "store").exists()


def long_run(tmp_path: Path, source: Path, prefect_server: str, scope: str) -> Any:
    """A function running `lstm-forecast run` on `source` with the smoke preset and `--scope scope`, into
    a store of its own; it returns the process and its JSON output."""

    def run(store: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        result = subprocess.run(
            [
                str(BIN / "lstm-forecast"),
                "run",
                "--preset",
                "smoke",
                "--input",
                str(source),
                "--artifacts-dir",
                str(tmp_path / store),
                "--json",
                "--scope",
                scope,
                *extra,
            ],
            env=quiet_env(tmp_path / f"home-{store}", prefect_server),
            capture_output=True,
            text=True,
            timeout=400,
        )
        return result, json.loads(result.stdout.strip().splitlines()[-1])

    return run


def five_series_one_flat(source: Path) -> pd.DataFrame:
    """Writes (and returns) a long-format CSV of four noisy sines and one constant series, `flat`."""
    frame = long_frame({"s0": 600, "s1": 600, "flat": 600, "s2": 600, "s3": 600})
    frame.loc[frame["unique_id"] == "flat", "y"] = 1.0  # a constant series: nothing to learn
    frame.to_csv(source, index=False)
    return frame


@dataclass
class GlobalRuns:
    """One long-format file of six series (one constant, one of 3 points), run with one global model in process
    and on two Dask workers, each into a store of its own."""

    folder: Path
    source: Path
    frame: pd.DataFrame
    run: Any
    sequential: subprocess.CompletedProcess[str]
    sequential_json: dict[str, Any]
    on_dask: subprocess.CompletedProcess[str]
    dask_json: dict[str, Any]


@pytest.fixture(scope="module")
def global_runs(tmp_path_factory: pytest.TempPathFactory, prefect_server: str, prefect_api: str) -> GlobalRuns:
    folder = tmp_path_factory.mktemp("global")
    source = folder / "long.csv"
    frame = pd.concat([five_series_one_flat(source), long_frame({"tiny": 3})], ignore_index=True)
    frame.to_csv(source, index=False)
    run = long_run(folder, source, prefect_server, "global")
    sequential, sequential_json = run("sequential")
    on_dask, dask_json = run("dask", "--workers", "2")
    return GlobalRuns(folder, source, frame, run, sequential, sequential_json, on_dask, dask_json)


GOOD = ("s0", "s1", "s2", "s3")


def test_a_global_model_on_dask_gives_the_sequential_run_s_numbers_and_a_bad_series_fails_alone(
    global_runs: GlobalRuns,
) -> None:
    runs = global_runs
    for result, output in ((runs.sequential, runs.sequential_json), (runs.on_dask, runs.dask_json)):
        assert result.returncode == 1, result.stderr[-3000:]
        assert "one network across them" in result.stdout and output["failed"] == ["tiny"]
        assert "the global model reads at least" in output["series"]["tiny"]["error"]
        # a constant series has nothing to score the network on: forecast as its constant, unscored
        assert output["series"]["flat"]["status"] == "forecast_only"
        assert "is constant" in output["series"]["flat"]["reason"]
        assert sorted(output["metrics"]) == list(GOOD)
    assert runs.dask_json["metrics"] == runs.sequential_json["metrics"]  # the same numbers wherever they ran
    # Dask's INFO chatter (nannies, comms; a closed comm's traceback at shutdown) stays out of stderr
    assert "| INFO    | distributed." not in runs.on_dask.stderr, runs.on_dask.stderr[-3000:]
    # with a server to run on, the local workers were started while the command got the run ready
    assert "Connecting to an existing Dask cluster" in runs.on_dask.stderr


def test_a_local_cluster_started_ahead_is_the_one_the_run_s_task_runner_takes() -> None:
    from distributed import Client

    from lstm_forecast.flows import cluster
    from lstm_forecast.tasks.core.training_process import KEPT_MEMORY

    cluster.start_local_cluster(1)
    started = cluster._starting[1].result()
    runner = cluster.dask_task_runner(None, 1)
    assert runner.address is None  # the cluster is taken when the run first needs it (its flow run made meanwhile)
    with runner:
        assert runner.client.scheduler.address == runner.address == started.scheduler_address
    assert runner.address.startswith("tcp://127.0.0.1:")
    with Client(runner.address) as client:
        assert list(client.nthreads().values()) == [1]  # one worker of one thread, as `--workers 1` asks
        # what a chunk task needs, imported before the worker started, by the process it was forked from, not by
        # this one (`eval` is pickled by reference: asking imports nothing of this project there, which a lambda
        # would)
        imported = client.run(eval, f"{cluster.WORKER_PRELOAD!r} in __import__('sys').modules")
        assert list(imported.values()) == [True]
        (parent,) = client.run(eval, "__import__('os').getppid()").values()
        assert parent != os.getpid()
        # one thread for numpy too: its environment was set before numpy loaded in the server it was forked from
        (pools,) = client.run(eval, "__import__('threadpoolctl').threadpool_info()").values()
        assert pools and {pool["num_threads"] for pool in pools} == {1}
        environ = client.submit(lambda: dict(__import__("os").environ)).result()
        assert environ["OMP_NUM_THREADS"] == "1"
        # freed memory kept in the worker, as in the training process (Dask's default hands back blocks > 64 kB)
        assert {name: environ[name] for name in KEPT_MEMORY} == KEPT_MEMORY
    started.close()
    assert cluster.dask_task_runner(None, 1).address is None  # taken once: a second run starts a cluster of its own


def test_a_global_model_is_one_model_with_a_plot_per_series_and_one_registry_entry(global_runs: GlobalRuns) -> None:
    series = global_runs.dask_json["series"]
    models = {series[s]["artifacts"]["model"] for s in GOOD}
    plots = {series[s]["artifacts"]["plot"] for s in GOOD}
    assert len(models) == 1 and len(plots) == 4 and all(Path(p).is_file() for p in plots)
    metadata = json.loads((Path(models.pop()) / "metadata.json").read_text())
    assert metadata["scope"] == "global" and metadata["series_ids"] == list(GOOD)
    registry = pd.read_parquet(global_runs.folder / "dask" / "registry.parquet")
    assert registry[["series_id", "status"]].values.tolist() == [["*", "champion"]]
    assert 0 < registry["test_mase"].iloc[0] < 10 and np.isnan(registry["test_rmse"].iloc[0])
    # the UI shows the plots of a handful of series (here all four) and says where the rest are
    plots = run_artifacts(global_runs.dask_json["flow_run_id"])["lstm-forecast-series-plots"].data
    assert plots.count("data:image/png;base64,") == 4 and "4 of 4 plotted series shown" in plots


def test_a_global_run_shows_the_eight_stages_as_a_task_per_chunk_of_series(global_runs: GlobalRuns) -> None:
    # Five series make one chunk: one task per stage, but a task per plot (a plot takes a second or more, so
    # its chunks may be as small as one series); the bad series fails inside the generate chunk.
    runs = task_runs(global_runs.dask_json["flow_run_id"])
    names = sorted(r.name.rsplit("-", 1)[0] for r in runs)
    expected = sorted([*STAGES, "plot", "plot", "plot", "register", "forecast-table"])
    assert names == expected and not [r for r in runs if r.state.is_failed()]
    in_process = [r.name.rsplit("-", 1)[0] for r in task_runs(global_runs.sequential_json["flow_run_id"])]
    assert sorted(in_process) == names
    # one pack file per table stage, not one file per series
    store = global_runs.folder / "dask"
    for stage in ("generate", "split", "normalize", "window", "predict", "evaluate"):
        assert [p.parent.name for p in (store / stage).rglob("*.parquet")] == ["packs"], stage


def test_predict_forecasts_every_series_of_a_global_champion_in_one_table_as_the_run_did(
    global_runs: GlobalRuns, prefect_server: str
) -> None:
    store = global_runs.folder / "dask"
    run_table = pd.read_parquet(global_runs.dask_json["forecasts"])
    assert list(run_table.columns) == ["unique_id", "ds", "y_hat", "y_lo", "y_hi", "model", "model_key", "made_at"]
    assert sorted(run_table["unique_id"]) == sorted([*GOOD, "flat"])
    scored = run_table["unique_id"] != "flat"
    assert (run_table.loc[scored, "y_lo"] < run_table.loc[scored, "y_hi"]).all()
    assert (run_table.loc[~scored, ["y_lo", "y_hat", "y_hi"]].to_numpy() == 1.0).all()
    env = quiet_env(global_runs.folder / "home-predict", prefect_server)
    command = [str(BIN / "lstm-forecast"), "predict", "--artifacts-dir", str(store), "--json"]
    every = subprocess.run(command + ["--horizon", "1"], env=env, capture_output=True, text=True, timeout=200)
    assert every.returncode == 0, every.stderr[-3000:]
    result = json.loads(every.stdout.strip().splitlines()[-1])
    table = pd.read_parquet(result["forecast"])
    assert result["series"] == 5 and sorted(table["unique_id"]) == sorted([*GOOD, "flat"])
    merged = table.merge(run_table, on=["unique_id", "ds"], suffixes=("", "_run"), validate="one_to_one")
    for column in ("y_hat", "y_lo", "y_hi"):  # one batched call gives each series' own forecast
        np.testing.assert_allclose(merged[column], merged[f"{column}_run"], rtol=1e-6, atol=1e-6)
    assert (merged["model_key"] == merged["model_key_run"]).all()
    # two series, past the model's horizon (fed back), into a CSV for another system
    output = global_runs.folder / "two.csv"
    narrowed = command + ["--horizon", "3", "--series-id", "s1,s3", "--output", str(output)]
    two = subprocess.run(narrowed, env=env, capture_output=True, text=True, timeout=200)
    assert two.returncode == 0, two.stderr[-3000:]
    exported = pd.read_csv(output)
    assert exported["unique_id"].tolist() == ["s1"] * 3 + ["s3"] * 3
    first = exported.groupby("unique_id").head(1).set_index("unique_id")["y_hat"]
    np.testing.assert_allclose(first, run_table.set_index("unique_id").loc[["s1", "s3"], "y_hat"], rtol=1e-6)
    assert exported["y_lo"].isna().tolist() == [False, True, True] * 2  # intervals only within the horizon
    unknown = subprocess.run(
        command + ["--horizon", "1", "--series-id", "s1,nope"], env=env, capture_output=True, text=True, timeout=200
    )
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr


def test_a_global_run_publishes_the_combination_of_every_series_whose_statistical_baselines_it_scored(
    global_runs: GlobalRuns, prefect_server: str
) -> None:
    # the statistical baselines of a global run are computed on the workers while the network trains
    shutil.copytree(global_runs.folder / "dask", global_runs.folder / "combined")
    result, output = global_runs.run("combined", "--workers", "2", "--forecast-model", "combined")
    assert result.returncode == 1, result.stderr[-3000:]  # the 3-point series still fails alone
    table = pd.read_parquet(output["forecasts"]).set_index(["unique_id", "ds"])
    lstm = pd.read_parquet(global_runs.dask_json["forecasts"]).set_index(["unique_id", "ds"])
    assert sorted(set(table.index.get_level_values(0))) == sorted([*GOOD, "flat"])
    table = table.drop(index="flat", level=0)  # unscored, without statistical baselines: the LSTM's constant
    lstm = lstm.loc[table.index]
    assert (table["model"] == "combined").all()
    assert not np.allclose(table["y_hat"], lstm["y_hat"]) and (table["y_lo"] < table["y_hi"]).all()
    # predict forecasts each series with the model its run published, each series' own seasons refitted
    command = ["predict", "--artifacts-dir", str(global_runs.folder / "combined"), "--horizon", "1", "--json"]
    env = quiet_env(global_runs.folder / "home-predict-combined", prefect_server)
    done = subprocess.run([str(BIN / "lstm-forecast"), *command], env=env, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    again = pd.read_parquet(json.loads(done.stdout.strip().splitlines()[-1])["forecast"]).set_index(["unique_id", "ds"])
    assert (again.drop(index="flat", level=0)["model"] == "combined").all()
    for column in ("y_hat", "y_lo", "y_hi"):
        np.testing.assert_allclose(again.loc[table.index, column], table[column], rtol=1e-6)


def test_series_outside_the_sample_skip_the_train_split_s_forecasts_and_keep_every_held_out_number(
    global_runs: GlobalRuns,
) -> None:
    shutil.copytree(global_runs.folder / "dask", global_runs.folder / "sampled")
    result, output = global_runs.run("sampled", "--workers", "2", "--baseline-sample", "2")
    assert result.returncode == 1, result.stderr[-3000:]  # the 3-point series still fails alone
    assert "the in-sample fit) on 2 of 4 series" in result.stderr
    full = global_runs.dask_json
    ours, theirs = Store(str(global_runs.folder / "sampled")), Store(str(global_runs.folder / "dask"))
    splits = {}
    for series_id in GOOD:
        own, before = output["series"][series_id], full["series"][series_id]
        assert own["stages"]["train"] == "cached"  # the same network: the sample is not one of its settings
        predictions = ours.read_table("predict", own["keys"]["predict"])
        splits[series_id] = set(predictions["split"])
        held_out = predictions[predictions["split"] != "train"].reset_index(drop=True)
        kept = theirs.read_table("predict", before["keys"]["predict"])
        pd.testing.assert_frame_equal(held_out, kept[kept["split"] != "train"].reset_index(drop=True))
        metrics = ours.read_table("evaluate", own["keys"]["evaluate"])
        assert set(metrics["split"]) == splits[series_id] - {"forecast"}
        everything = theirs.read_table("evaluate", before["keys"]["evaluate"])
        for model in ("lstm", "naive", "seasonal_naive"):  # the same held-out scores, MASE's scale included
            mine = metrics[(metrics["model"] == model) & (metrics["split"] != "train")].reset_index(drop=True)
            full_run = everything[(everything["model"] == model) & (everything["split"] != "train")]
            pd.testing.assert_frame_equal(mine, full_run.reset_index(drop=True))
    outside = [i for i in GOOD if "train" not in splits[i]]
    assert outside and len(outside) < len(GOOD)  # both kinds among the scored series
    assert all(output["series"][i]["stages"]["predict"] == "computed" for i in outside)
    assert all(output["series"][i]["stages"]["predict"] == "cached" for i in GOOD if i not in outside)


def test_editing_one_series_recomputes_its_stages_and_the_network_and_reuses_the_others(
    global_runs: GlobalRuns, prefect_server: str
) -> None:
    edited = global_runs.frame.copy()
    edited.loc[edited["unique_id"] == "s3", "y"] += 0.5
    source = global_runs.folder / "edited.csv"
    edited.to_csv(source, index=False)
    shutil.copytree(global_runs.folder / "sequential", global_runs.folder / "edited", copy_function=shutil.copy2)
    run = long_run(global_runs.folder, source, prefect_server, "global")
    again, again_json = run("edited")
    assert again.returncode == 1, again.stderr[-3000:]
    statuses = {i: again_json["series"][i]["stages"] for i in GOOD}
    assert [statuses[i]["normalize"] for i in GOOD] == ["cached"] * 3 + ["computed"]
    assert {statuses[i]["train"] for i in GOOD} == {"computed"}
    before = global_runs.sequential_json["series"]["s0"]["artifacts"]["model"]
    assert Path(again_json["series"]["s0"]["artifacts"]["model"]).name != Path(before).name


def test_four_series_on_two_dask_workers_equal_the_sequential_run_and_a_bad_series_fails_alone(
    tmp_path: Path, prefect_server: str, prefect_api: str
) -> None:
    source = tmp_path / "long.csv"
    frame = five_series_one_flat(source)
    run = long_run(tmp_path, source, prefect_server, "local")

    sequential, sequential_json = run("sequential")
    on_dask, dask_json = run("dask", "--workers", "2")
    for result, output in ((sequential, sequential_json), (on_dask, dask_json)):
        assert result.returncode == 1, result.stderr[-3000:]  # one series failed, and the exit code says so
        assert "1 of 5 series failed: flat" in result.stderr
        assert output["failed"] == ["flat"]
        assert "is constant" in output["series"]["flat"]["error"] and "fix:" in output["series"]["flat"]["error"]
        assert sorted(output["metrics"]) == ["s0", "s1", "s2", "s3"]
    assert dask_json["metrics"] == sequential_json["metrics"]  # the same numbers wherever they ran

    # Each series has its own pipeline: its own keys, model, plot and registry champion.
    models = {dask_json["series"][s]["artifacts"]["model"] for s in ("s0", "s1", "s2", "s3")}
    plots = {dask_json["series"][s]["artifacts"]["plot"] for s in ("s0", "s1", "s2", "s3")}
    assert len(models) == len(plots) == 4 and all(Path(p).is_file() for p in plots)
    registry = pd.read_parquet(tmp_path / "dask" / "registry.parquet")
    assert sorted(registry.loc[registry["status"] == "champion", "series_id"]) == ["s0", "s1", "s2", "s3"]
    # one table all the same: each series forecast by its own champion, in one predict call too
    table = pd.read_parquet(dask_json["forecasts"])
    assert sorted(table["unique_id"]) == ["s0", "s1", "s2", "s3"] and table["model_key"].nunique() == 4
    output = tmp_path / "local.parquet"
    assert (
        cli.main(["predict", "--horizon", "1", "--artifacts-dir", str(tmp_path / "dask"), "--output", str(output)]) == 0
    )
    predicted = pd.read_parquet(output).set_index("unique_id").loc[table["unique_id"]]
    # networks of one series each publish the combination; predict refits the statistical models alike
    assert (table["model"] == "combined").all() and (predicted["model"] == "combined").all()
    np.testing.assert_allclose(predicted["y_hat"], table["y_hat"], rtol=1e-6)
    np.testing.assert_allclose(predicted["y_hi"], table["y_hi"], rtol=1e-6)
    assert predicted["model_key"].tolist() == table["model_key"].tolist()

    summary = pd.read_parquet(dask_json["summary"])
    assert summary["unique_id"].tolist() == ["s0", "s1", "flat", "s2", "s3"]
    assert summary.set_index("unique_id").loc["flat", "status"] == "failed"

    # The Dask workers reported to the same Prefect server: every task run is in the flow run, one per stage
    # and chunk of series (five series make one chunk; models of their own and plots come in chunks as small as
    # one series, so that both workers train and draw); the bad series fails inside its chunk alone.
    runs = task_runs(dask_json["flow_run_id"])
    names = sorted(r.name.rsplit("-", 1)[0] for r in runs)
    assert names.count("train") == names.count("plot") == 4 and not [r for r in runs if r.state.is_failed()]
    others = [stage for stage in STAGES if stage not in ("train", "plot")]
    assert [name for name in names if name not in ("train", "plot")] == sorted([*others, "register", "forecast-table"])
    assert "lstm-forecast-series" in run_artifacts(dask_json["flow_run_id"])

    # Edit one series and add one: only those two are computed again; the others stay cached.
    frame.loc[frame["unique_id"] == "s3", "y"] += 0.5
    pd.concat([frame, long_frame({"s4": 600}).assign(y=lambda f: f["y"] * 2)]).to_csv(source, index=False)
    again, again_json = run("sequential")
    assert again.returncode == 1 and again_json["failed"] == ["flat"], again.stderr[-3000:]
    trained = {i: again_json["series"][i]["stages"]["train"] for i in ("s0", "s1", "s2", "s3", "s4")}
    assert trained == {"s0": "cached", "s1": "cached", "s2": "cached", "s3": "computed", "s4": "computed"}
    for series_id in ("s0", "s1", "s2"):
        assert again_json["metrics"][series_id] == sequential_json["metrics"][series_id]
        assert again_json["series"][series_id]["artifacts"] == sequential_json["series"][series_id]["artifacts"]
    assert again_json["metrics"]["s3"] != sequential_json["metrics"]["s3"] and "s4" in again_json["metrics"]


def test_tune_searches_on_dask_scores_on_validation_and_writes_a_config_run_accepts(
    tmp_path: Path, prefect_server: str, prefect_api: str
) -> None:
    store, best_file = tmp_path / "store", tmp_path / "best.yaml"
    env = quiet_env(tmp_path / "home", prefect_server)
    tuned = subprocess.run(
        [
            str(BIN / "lstm-forecast"),
            "tune",
            "--preset",
            "smoke",
            "--trials",
            "4",
            "--workers",
            "2",
            "--artifacts-dir",
            str(store),
            "--output",
            str(best_file),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    result = json.loads(tuned.stdout.strip().splitlines()[-1])
    trials = pd.read_parquet(result["trials"])
    assert trials["trial"].tolist() == [0, 1, 2, 3] and trials["validation_rmse"].notna().all()
    assert result["best_validation_rmse"] == trials["validation_rmse"].min()
    assert "lstm-tune-trials" in run_artifacts(result["flow_run_id"])
    # The trials ran as task runs of the tuning flow run (on the Dask workers): generate to evaluate,
    # after one generate that sized the search space from the series.
    names = [r.name.rsplit("-", 1)[0] for r in task_runs(result["flow_run_id"])]
    assert names.count("series-pipeline") == 4 and names.count("evaluate") == 4 and len(names) == 4 * 8 + 1
    assert names.count("generate") == 5

    rerun = subprocess.run(
        [str(BIN / "lstm-forecast"), "run", "--config", str(best_file), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["stages"]["train"] == "cached"  # the best trial's model, reused
    assert summary["metrics"]["validation"]["lstm"]["rmse"] == pytest.approx(result["best_validation_rmse"])
    from lstm_forecast.tasks.core.config import build_config

    reread = build_config("smoke", best_file)  # the file's own preset line wins over the command's
    assert {name: getattr(reread, name) for name in result["best"]} == result["best"]


def test_search_space_stays_around_the_base_config_and_needs_a_validation_split() -> None:
    from lstm_forecast.tasks.core.config import PRESETS, ForecastConfig, with_fields
    from lstm_forecast.tasks.operations.tuning import check_tunable, search_space, validation_score

    base = ForecastConfig(**PRESETS["smoke"])  # look_back 8, patch 2, units 8, batch 32, lr 0.005
    space = search_space(base)
    assert space["look_back"] == [4, 8, 16] and all(v % base.patch == 0 for v in space["look_back"])
    assert space["units"] == [4, 8, 16] and space["batch_size"] == [16, 32, 64] and space["layers"] == [1, 2]
    assert space["learning_rate"] == pytest.approx((0.001, 0.025))
    with pytest.raises(InputError, match="validation split"):
        check_tunable(with_fields(base, validation_fraction=0.0))
    metrics = pd.DataFrame(
        [
            {"split": "validation", "model": "lstm", "metric": "rmse", "step": 0, "value": 0.4},
            {"split": "test", "model": "lstm", "metric": "rmse", "step": 0, "value": 0.1},
        ]
    )
    assert validation_score(metrics) == 0.4  # never the test split


def test_ids_are_text_and_a_row_without_one_is_refused_with_its_line() -> None:
    from lstm_forecast.tasks.stages.generate import parse_table

    raw = parse_table(b"unique_id,ds,y\n01,0,1.0\n1,0,2.0\n01,1,3.0\n", ".csv", "unique_id")
    assert series_ids(raw, "unique_id") == ["01", "1"]  # not both read as the number 1
    assert select_series(raw, "unique_id", "01")["y"].tolist() == [1.0, 3.0]
    missing = parse_table(b"unique_id,ds,y\na,0,1.0\n,1,2.0\na,2,3.0\n", ".csv", "unique_id")
    with pytest.raises(InputError, match=r"1 row\(s\) have no 'unique_id' \(file lines \[3\]\)"):
        series_ids(missing, "unique_id")


def three_series_file(folder: Path) -> Path:
    """A long-format CSV of three noisy sines of 300 to 400 points."""
    source = folder / "long.csv"
    long_frame({"a": 400, "b": 300, "c": 350}).to_csv(source, index=False)
    return source


def test_a_backtest_of_many_series_averages_each_fold_over_the_series_and_registers_only_the_full_run(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, store = three_series_file(tmp_path), tmp_path / "store"
    arguments = ["backtest", "--preset", "smoke", "--input", str(source), "--folds", "2", "--artifacts-dir", str(store)]
    assert cli.main([*arguments, "--json"]) == 0
    summary = pd.DataFrame(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"])
    mase = summary[(summary["model"] == "lstm") & (summary["metric"] == "mase")].iloc[0]
    assert mase["folds"] == 2 and 0 < mase["min"] <= mase["mean"] <= mase["max"] < 10
    registry = pd.read_parquet(store / "registry.parquet")
    assert registry[["series_id", "status"]].values.tolist() == [["*", "champion"]]  # folds never register


def test_tune_on_many_series_scores_global_trials_by_their_mean_validation_mase(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, store = three_series_file(tmp_path), tmp_path / "store"
    arguments = ["tune", "--preset", "smoke", "--input", str(source), "--trials", "2", "--artifacts-dir", str(store)]
    assert cli.main([*arguments, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["score"] == "validation_mase" and 0 < result["best_validation_mase"] < 10
    trials = pd.read_parquet(result["trials"])
    assert len(trials) == 2 and trials["validation_mase"].notna().all()
    assert trials["validation_mase"].min() == result["best_validation_mase"]
    metadata = json.loads((store / "models" / trials["model"].iloc[0] / "metadata.json").read_text())
    assert metadata["scope"] == "global" and metadata["series_ids"] == ["a", "b", "c"]
    assert "scope: global" in Path(result["config"]).read_text()
    assert not (store / "registry.parquet").exists()  # trials are never registered


def test_chunks_keep_every_slot_busy_within_their_bounds() -> None:
    from lstm_forecast.flows.many import MAX_CHUNK_SERIES, MIN_CHUNK_SERIES, chunk_size, chunks

    assert chunk_size(5, 2) == MIN_CHUNK_SERIES  # a few series: one chunk
    assert chunk_size(2_000, 2) == 250  # four chunks per slot
    assert chunk_size(6_000, 2) == 750
    assert chunk_size(100_000, 2) == MAX_CHUNK_SERIES
    assert chunks(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_a_panel_run_s_series_details_read_as_a_dict_but_prefect_does_not_walk_into_them() -> None:
    from prefect.futures import resolve_futures_to_states
    from prefect.utilities.collections import visit_collection

    from lstm_forecast.flows.many import SeriesDetails
    from lstm_forecast.tasks.core.graph import Unwalked, UnwalkedList

    stages = {"train": {"key": "k", "status": "cached"}}
    details = {f"s{n}": {"status": "completed", "stages": stages} for n in range(3)}
    wrapped = SeriesDetails(details)
    assert wrapped == details and dict(wrapped) == details and len(wrapped) == 3 and list(wrapped) == list(details)
    assert json.loads(json.dumps(dict(wrapped))) == details  # the CLI's JSON output, as before
    visited: list[Any] = []
    visit_collection({"series": wrapped}, visit_fn=visited.append, return_data=False)
    assert wrapped in visited and "s0" not in visited and "completed" not in visited
    visited.clear()
    visit_collection({"series": details}, visit_fn=visited.append, return_data=False)
    assert "s0" in visited and "completed" in visited  # a plain dict is walked to its last string
    assert resolve_futures_to_states({"series": wrapped})["series"] is wrapped
    # a publication task's argument (predict key -> its series' id, model and evaluate keys), as it is handed
    keys = Unwalked({"p0": ["s0", "m", "e0"], "p1": ["s1", "m", "e1"]})
    visited.clear()
    visit_collection({"predictions": keys}, visit_fn=visited.append, return_data=False)
    assert keys in visited and "p0" not in visited and "s0" not in visited
    assert (
        sorted(keys.items()) == [("p0", ["s0", "m", "e0"]), ("p1", ["s1", "m", "e1"])]
        and repr(keys) == "Unwalked(2 entries)"
    )
    # a global model's train task's lists of keys (`run_stage`), read as lists inside the task
    series = UnwalkedList(["k0", "k1", "k2"])
    visited.clear()
    visit_collection({"series": series}, visit_fn=visited.append, return_data=False)
    assert series in visited and "k0" not in visited
    assert list(series) == ["k0", "k1", "k2"] and series[1:] == ["k1", "k2"] and len(series) == 3 and "k1" in series


def test_the_statistical_baselines_sample_is_fixed_by_ids_and_seed() -> None:
    from lstm_forecast.tasks.core.defaults import statistical_sample

    ids = [f"s{number}" for number in range(1000)]
    sample = statistical_sample(ids, 100, seed=0)
    assert len(sample) == 100 and sample <= set(ids)
    assert statistical_sample(list(reversed(ids)), 100, seed=0) == sample  # the order of the file does not matter
    assert statistical_sample(ids, 100, seed=1) != sample
    grown = statistical_sample([*ids, "new"], 100, seed=0)
    assert len(grown - sample) <= 1  # one more series moves at most one in
    assert statistical_sample(ids, 0, seed=0) == set(ids) == statistical_sample(ids, 5000, seed=0)


def test_many_failed_series_print_a_count_the_first_few_and_where_all_are(tmp_path: Path, prefect_server: str) -> None:
    source = tmp_path / "short.csv"
    long_frame({f"short{number:02d}": 12 for number in range(30)}).to_csv(source, index=False)
    result, output = long_run(tmp_path, source, prefect_server, "global")("store")
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(output["failed"]) == 30
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert line == "error: 30 of 30 series failed: short00, short01, short02, short03, short04 and 25 more"
    summary_path = output["summary"]
    assert summary_path in result.stderr and len(result.stderr) < 20_000
    summary = pd.read_parquet(summary_path)
    assert (summary["status"] == "failed").all() and summary["error"].str.contains("too few").all()
    assert result.stdout.count("failed:") == 5


def test_series_too_short_to_be_scored_are_forecast_by_the_global_model_and_the_shortest_fail_alone(
    tmp_path: Path, prefect_server: str
) -> None:
    frame = long_frame({"s0": 300, "s1": 300, "s2": 300, "short": 8, "tiny": 3, "flat": 300})
    frame.loc[frame["unique_id"] == "flat", "y"] = 1.0
    source = tmp_path / "panel.csv"
    frame.to_csv(source, index=False)
    run = long_run(tmp_path, source, prefect_server, "global")
    result, output = run("store")
    assert result.returncode == 1, result.stderr[-3000:]  # `tiny` fails alone: fewer points than a window reads
    assert output["failed"] == ["tiny"]
    assert "the global model reads at least" in output["series"]["tiny"]["error"]
    assert output["series"]["short"]["status"] == "forecast_only" and sorted(output["metrics"]) == ["s0", "s1", "s2"]
    assert "too few for a 20% test split" in output["series"]["short"]["reason"]
    assert output["series"]["flat"]["status"] == "forecast_only"
    assert "constant" in output["series"]["flat"]["reason"]
    assert "2 series too short for a test split of their own, or constant before it (short, flat)" in result.stdout
    summary = pd.read_parquet(output["summary"]).set_index("unique_id")
    assert summary.loc["short", "status"] == "forecast_only" and np.isnan(summary.loc["short", "lstm_rmse"])
    table = pd.read_parquet(output["forecasts"])
    short = table.loc[table["unique_id"] == "short"]
    horizon = int((table["unique_id"] == "s0").sum())
    assert len(short) == horizon and np.isfinite(short["y_hat"]).all()
    # an interval sized by the members' validation errors in their own units, times its own unit
    assert (short["y_lo"] < short["y_hat"]).all() and (short["y_hat"] < short["y_hi"]).all()
    assert short["model_key"].iloc[0] == output["model"] and short["model"].iloc[0] == "lstm"
    assert (short["ds"].to_numpy() > frame.loc[frame["unique_id"] == "short", "ds"].max()).all()
    flat = table.loc[table["unique_id"] == "flat"]  # a constant series: its constant, with no spread to widen it
    assert len(flat) == horizon and (flat[["y_hat", "y_lo", "y_hi"]].to_numpy() == 1.0).all()
    # A rerun is answered from the store: the failed series' stages run again in the flow's process, and fail
    # alike, without a task
    warm, warm_json = run("store")
    ran = {r.name.rsplit("-", 1)[0] for r in task_runs(warm_json["flow_run_id"])}
    assert warm.returncode == 1 and not ran & set(STAGES), warm.stderr[-5000:]

    def outcomes(result: dict) -> dict:  # each series' status, error or reason and artifacts (not whether cached)
        return {i: {k: v for k, v in detail.items() if k != "stages"} for i, detail in result["series"].items()}

    assert (outcomes(warm_json), warm_json["forecasts"]) == (outcomes(output), output["forecasts"])
    # `predict` with the data forecasts it as the run did (a global model reads any series given to it) ...
    env = quiet_env(tmp_path / "home-predict", prefect_server)
    command = [str(BIN / "lstm-forecast"), "predict", "--artifacts-dir", str(tmp_path / "store"), "--json"]
    command += ["--horizon", str(horizon)]
    with_new = tmp_path / "with_new.csv"  # and a series the run never saw: `short` twice as large
    newcomer = frame.loc[frame["unique_id"] == "short"].assign(unique_id="newcomer", y=lambda f: 2 * f["y"])
    pd.concat([frame, newcomer]).to_csv(with_new, index=False)
    given = subprocess.run(
        [*command, "--series-id", "short,s0,newcomer", "--input", str(with_new)],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert given.returncode == 0, given.stderr[-3000:]
    again_table = pd.read_parquet(json.loads(given.stdout.strip().splitlines()[-1])["forecast"])
    merged = again_table.merge(table, on=["unique_id", "ds"], suffixes=("", "_run"), validate="one_to_one")
    assert sorted(set(merged["unique_id"])) == ["s0", "short"] and len(merged) == 2 * horizon
    np.testing.assert_allclose(merged["y_hat"], merged["y_hat_run"], rtol=1e-6)
    np.testing.assert_allclose(merged["y_hi"] - merged["y_hat"], merged["y_hi_run"] - merged["y_hat_run"], rtol=1e-6)
    # the new series gets the panel's pooled widths in its own units: twice `short`'s
    new_widths = again_table.query("unique_id == 'newcomer'").eval("y_hi - y_hat").to_numpy()
    np.testing.assert_allclose(new_widths, 2 * (short["y_hi"] - short["y_hat"]).to_numpy(), rtol=1e-6)
    # ... and without it from the rows the run kept of it: every series of the run's table, as the run forecast it
    stored = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    assert stored.returncode == 0, stored.stderr[-3000:]
    stored_table = pd.read_parquet(json.loads(stored.stdout.strip().splitlines()[-1])["forecast"])
    merged = stored_table.merge(table, on=["unique_id", "ds"], suffixes=("", "_run"), validate="one_to_one")
    every = ["flat", "s0", "s1", "s2", "short"]
    assert sorted(set(stored_table["unique_id"])) == sorted(set(table["unique_id"])) == every
    assert len(merged) == len(table)
    np.testing.assert_allclose(merged["y_hat"], merged["y_hat_run"], rtol=1e-6)
    np.testing.assert_allclose(merged["y_hi"] - merged["y_hat"], merged["y_hi_run"] - merged["y_hat_run"], rtol=1e-6)
    command += ["--series-id", "short,s0"]
    # read in its own space (relative to its last value): the same series 100 higher is forecast 100 higher,
    # by the same network (the members are unchanged, so the model is cached)
    frame.loc[frame["unique_id"] == "short", "y"] += 100.0
    frame.to_csv(source, index=False)
    again, again_json = run("store")
    assert again.returncode == 1 and again_json["model"] == output["model"]
    # answered from the store: the failed series' stages run again in the flow's process, and fail alike
    raised = pd.read_parquet(again_json["forecasts"]).query("unique_id == 'short'")
    np.testing.assert_allclose(raised["y_hat"].to_numpy(), short["y_hat"].to_numpy() + 100.0, rtol=1e-6)
    np.testing.assert_allclose(raised["y_hi"] - raised["y_hat"], (short["y_hi"] - short["y_hat"]).to_numpy(), rtol=1e-6)
    # `predict` reads the rows the latest run kept of it
    latest = subprocess.run(command, env=env, capture_output=True, text=True, timeout=200)
    assert latest.returncode == 0, latest.stderr[-3000:]
    latest_table = pd.read_parquet(json.loads(latest.stdout.strip().splitlines()[-1])["forecast"])
    np.testing.assert_allclose(latest_table.query("unique_id == 'short'")["y_hat"], raised["y_hat"], rtol=1e-6)


@pytest.mark.parametrize(
    "settings",
    [{"horizon": 13}, {"horizon": 1}, {"horizon": 24, "baseline_sample": 2}, {"horizon": 6, "ensemble": 3}],
)
def test_a_global_run_s_config_of_a_series_is_its_sizing_under_the_shared_settings(settings: dict[str, Any]) -> None:
    """`panel_configs` lays the shared settings over each series' one sized config: the same config as sizing the
    series again under them, as long as no sized field the shared settings leave depends on one they set."""
    from lstm_forecast.flows.plan import panel_configs
    from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
    from lstm_forecast.tasks.core.defaults import global_settings, series_facts, sized_config, statistical_sample

    config = ForecastConfig(**settings)
    rng = np.random.default_rng(0)
    hours = pd.Series(pd.date_range("2024-01-01", periods=24 * 7 * 6, freq="h"))
    weeks = pd.Series(pd.date_range("2015-01-04", periods=260, freq="W"))
    step = np.arange(len(hours))
    series = {  # hourly with daily and weekly cycles, weekly with a yearly one, numeric time without a cycle
        "hourly": (hours, 50 + 10 * np.sin(2 * np.pi * step[: len(hours)] / 24) + rng.normal(size=len(hours))),
        "weekly": (weeks, 100 + 20 * np.sin(2 * np.pi * step[:260] / 52) + rng.normal(size=260)),
        "walk": (pd.Series(np.arange(300.0)), 10 + np.cumsum(rng.normal(size=300))),
        "short": (pd.Series(np.arange(120.0)), 5 + rng.normal(size=120)),
    }
    facts = {i: series_facts(config, ds, y) for i, (ds, y) in series.items()}
    sized = {i: sized_config(with_fields(config, series_id=i), own) for i, own in facts.items()}
    shared = global_settings(config, list(sized.values()), [int(own["points"]) for own in facts.values()])
    sampled = statistical_sample(list(facts), config.baseline_sample, config.seed)
    outside = {"train_forecasts": False} | ({} if shared["baselines"] == "naive" else {"baselines": "naive"})
    for series_id, own in panel_configs(config, shared, sized).items():
        resized = sized_config(
            with_fields(config, series_id=series_id, **(shared | ({} if series_id in sampled else outside))),
            facts[series_id],
        )
        assert own.model_dump() == resized.model_dump(), series_id
    if config.baseline_sample < len(facts):  # both kinds checked: series in the sample and outside it
        assert 0 < len(sampled) < len(facts)
