"""Faults: a run killed mid-training leaves nothing that is read as finished, and no lock that blocks."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lstm_forecast.flows import cli
from tests.helpers import BIN, quiet_env


def test_kill_during_training_then_rerun_reuses_finished_stages(
    tmp_path: Path, prefect_server: str, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    args = ["run", "--preset", "smoke", "--epochs", "150", "--artifacts-dir", str(store), "--json"]
    victim = subprocess.Popen(
        [str(BIN / "lstm-forecast"), *args],
        env=quiet_env(tmp_path / "home", prefect_server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        "generate": "cached",
        "normalize": "cached",
        "split": "cached",
        "window": "cached",
        "train": "computed",
        "predict": "computed",
        "evaluate": "computed",
        "plot": "computed",
    }
    for lock in locks.glob("*.lock"):  # the files stay (never deleted under a waiter); none is held
        with open(lock, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finished = [p for p in (store / "models").iterdir() if not p.name.startswith(".")]
    assert [p.name for p in finished] == [result["keys"]["train"]]


def test_persistent_read_failure_exhausts_retries_and_leaves_the_store_as_it_was(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lstm_forecast.tasks.stages import generate as generate_stage
    from tests.helpers import store_snapshot

    source = tmp_path / "series.csv"
    source.write_text("ds,y\n" + "".join(f"{i},{i % 7}\n" for i in range(300)))
    attempts = []

    def broken_read(path: str | Path) -> tuple[bytes, str]:
        attempts.append(path)
        raise OSError("input/output error (injected)")

    monkeypatch.setattr(generate_stage, "read_input_file", broken_read)
    store = tmp_path / "store"
    settings = tmp_path / "fast.yaml"
    settings.write_text("preset: smoke\nread_retries: 2\nread_retry_delay_s: 0.05\n")
    code = cli.main(["run", "--config", str(settings), "--input", str(source), "--artifacts-dir", str(store)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(attempts) == 3  # the first try and two retries
    assert "error: the run failed: OSError: input/output error (injected)" in err
    assert store_snapshot(store) == {}


def _register_many(root: str, prefix: str, count: int) -> None:
    from lstm_forecast.tasks.core.store import Store, fingerprint
    from lstm_forecast.tasks.operations.registry import record_model

    for i in range(count):
        record_model(
            Store(root),
            {
                "key": fingerprint(prefix, i),
                "created": "now",
                "test_rmse": 1.0,
                "test_mae": 1.0,
                "naive_test_rmse": 1.0,
                "data_fingerprint": "d",
                "series": "s",
                "input": "",
                "config": "{}",
            },
        )


def test_concurrent_registry_writers_lose_no_entry(tmp_path: Path) -> None:
    import multiprocessing

    from lstm_forecast.tasks.core.store import Store

    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_register_many, args=(str(tmp_path), name, 15)) for name in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    registry = Store(tmp_path).read_registry()
    assert len(registry) == 30 and registry["key"].is_unique
    assert (registry["status"] == "champion").sum() == 1


def test_models_load_in_safe_mode(tmp_path: Path) -> None:
    import keras

    from lstm_forecast.tasks.core.networks import load_model

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(path)  # arbitrary code in a model file is refused


def test_predict_refuses_a_model_reference_that_is_not_registered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lstm_forecast.tasks.core.store import Store
    from lstm_forecast.tasks.operations.registry import record_model

    record_model(
        Store(tmp_path),
        {
            "key": "0" * 24,
            "created": "now",
            "test_rmse": 1.0,
            "test_mae": 1.0,
            "naive_test_rmse": 1.0,
            "data_fingerprint": "d",
            "series": "s",
            "input": "",
            "config": "{}",
        },
    )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = cli.main(["predict", "--model", "../../etc/passwd", "--horizon", "3", "--artifacts-dir", str(tmp_path)])
    assert code == 2
    assert "matches 0 registered models" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_prefect_server_gone_mid_run_fails_clearly_and_keeps_the_store(tmp_path: Path) -> None:
    from tests.helpers import free_port, store_snapshot

    port = free_port()
    env = quiet_env(tmp_path / "server-home", None) | {"PREFECT_UI_ENABLED": "false"}
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        import urllib.request

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        store = tmp_path / "store"
        run = subprocess.Popen(
            [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--epochs", "150", "--artifacts-dir", str(store)],
            # Prefect's client retries a refused request 5 times over about a minute by default; one retry takes
            # the same path to the same failure in seconds (a user can set this too)
            env=quiet_env(tmp_path / "home", url) | {"PREFECT_CLIENT_MAX_RETRIES": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((store / "window").glob("*.parquet")):
            time.sleep(0.2)
        server.kill()  # the server disappears while the run trains
        server.wait()
        _, err = run.communicate(timeout=300)
    finally:
        if server.poll() is None:
            server.kill()
    assert run.returncode == 1
    assert "error: the run failed:" in err and "Traceback" not in err.split("error: the run failed:")[-1]
    # Whatever was written is complete: every file under its final name reads back.
    import pyarrow.parquet as pq

    for path in store.rglob("*.parquet"):
        if not path.name.startswith("."):
            pq.read_metadata(path)
    assert store_snapshot(store)  # the finished stages are still there


def test_predict_reports_a_damaged_model_and_a_bad_input_as_run_does(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    run = ["run", "--preset", "smoke", "--artifacts-dir", str(store), "--json"]
    assert cli.main(run) == 0
    model = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["keys"]["train"]
    predict = ["predict", "--horizon", "3", "--artifacts-dir", str(store)]

    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text("ds,y\n" + "".join(f"{i},{i % 7}\n" for i in range(300)) + '300,"5\n')
    errors = {}
    for command in (predict, run):
        code = cli.main([*command, "--input", str(unclosed)])
        errors[command[0]] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2, errors
    assert errors["predict"] == errors["run"] and "cannot be read as csv" in errors["run"][0]

    (store / "models" / model / "forecaster.npz").write_bytes(b"not a numpy file")  # what predict reads
    before = sorted(str(p) for p in store.rglob("*"))
    assert cli.main(predict) == 2
    err = capsys.readouterr().err
    assert f"error: model {model} cannot be loaded: forecaster.npz is damaged" in err, err[-2000:]
    assert "fix: rerun the `lstm-forecast run` that trained it" in err
    assert "File not found" not in err and "the run failed" not in err and "Traceback" not in err
    assert sorted(str(p) for p in store.rglob("*")) == before
    assert cli.main(run) == 0  # as the fix says: the run trains the damaged model again ...
    capsys.readouterr()
    assert cli.main(predict) == 0  # ... and predict works again


@pytest.mark.parametrize("server", ["temporary", "own"])
def test_ctrl_c_during_training_stops_within_seconds_registers_nothing_and_a_rerun_reuses_the_stages(
    server: str, tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real SIGINT to the process group of a real `lstm-forecast run`, as Ctrl-C in a terminal sends it."""
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    store, log = tmp_path / "store", tmp_path / "stderr.txt"
    run = subprocess.Popen(
        [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--epochs", "3000", "--artifacts-dir", str(store)],
        env=quiet_env(tmp_path / "home", prefect_api if server == "own" else None),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,  # a group of its own, as a terminal's foreground job (and not pytest's)
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and "epoch 3/3000" not in log.read_text() and run.poll() is None:
        time.sleep(0.1)
    assert "epoch 3/3000" in log.read_text(), log.read_text()[-3000:]
    os.killpg(run.pid, signal.SIGINT)
    interrupted = time.monotonic()
    code = run.wait(timeout=120)
    seconds, err = time.monotonic() - interrupted, log.read_text()
    assert code == 130 and seconds < 20, (code, seconds, err[-8000:])
    assert "interrupted: finished stages are kept" in err and "Error logging to API" not in err
    last_epoch = max(int(n) for n in re.findall(r"epoch (\d+)/3000", err))
    assert last_epoch < 3000 and "forecaster: trained" not in err  # training stopped where it was
    assert not (store / "registry.parquet").exists() and not list(store.glob("models/*/metadata.json"))
    if server == "own":  # the server knows the run ended
        name = re.search(r"Beginning flow run '([^']+)'", err).group(1)
        with get_client(sync_client=True) as client:
            (flow_run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        assert flow_run.state.name in ("Crashed", "Cancelled"), flow_run.state
    capsys.readouterr()
    rerun = ["run", "--preset", "smoke", "--epochs", "1", "--artifacts-dir", str(store), "--json"]
    assert cli.main(rerun) == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    assert [stages[s] for s in ("generate", "split", "normalize", "window", "train")] == ["cached"] * 4 + ["computed"]
