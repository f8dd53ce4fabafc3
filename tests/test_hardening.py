"""Hardening: nothing from the store is unpickled, locks the kernel releases, a registry that heals,
links never followed, file modes from the umask, no file contents in messages, served paths fenced."""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from lstm_forecast.flows.serve import SERVED_ROOTS, check_served_paths
from lstm_forecast.tasks.core.caching import StoreLockManager
from lstm_forecast.tasks.core.config import ForecastConfig, build_config
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.store import RECORD_SERIALIZER, Store, fingerprint
from tests.helpers import BIN, quiet_env


def json_record(key: str) -> bytes:
    return json.dumps({"metadata": {"serializer": RECORD_SERIALIZER}, "result": json.dumps(key)}).encode()


class TouchOnLoad:
    """Unpickling this creates a file: proof that a record was deserialised by pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def pickle_record(marker: Path) -> bytes:
    """A cache record as Prefect writes one with its pickle serializer, whose payload touches `marker`."""
    serializer = {"type": "pickle", "picklelib": "pickle", "picklelib_version": None}
    payload = base64.b64encode(pickle.dumps(TouchOnLoad(marker))).decode()
    return json.dumps({"metadata": {"serializer": serializer}, "result": payload}).encode()


def test_a_record_that_is_not_a_stage_key_in_json_is_removed_unread(tmp_path: Path) -> None:
    from prefect.results import ResultRecord

    store = Store(tmp_path)
    marker = tmp_path / "unpickled"
    planted = pickle_record(marker)
    ResultRecord.deserialize(planted)  # Prefect itself would run the payload...
    assert marker.exists()
    marker.unlink()

    good, bad, odd = fingerprint("good"), fingerprint("bad"), fingerprint("odd")
    store.records_dir.mkdir(parents=True)
    (store.records_dir / good).write_bytes(json_record(good))
    (store.records_dir / bad).write_bytes(planted)
    (store.records_dir / odd).write_bytes(json_record("not a key"))
    for key in (good, bad, odd):
        store.check_record(key)
    assert sorted(p.name for p in store.records_dir.iterdir()) == [good]  # ...the store never lets it
    assert not marker.exists()


def test_a_planted_pickle_record_is_not_run_by_a_cached_run(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    args = ["run", "--preset", "smoke", "--artifacts-dir", str(store), "--json"]
    assert cli.main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    marker = tmp_path / "unpickled"
    plot_key = first["keys"]["plot"]
    (store / "_prefect" / "records" / plot_key).write_bytes(pickle_record(marker))

    assert cli.main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not marker.exists()
    assert again["stages"]["plot"] == "computed" and again["stages"]["evaluate"] == "cached"
    record = json.loads((store / "_prefect" / "records" / plot_key).read_bytes())
    assert record["metadata"]["serializer"] == RECORD_SERIALIZER  # the rerun wrote a JSON record again


HOLD = """
import fcntl, json, os, sys, time
handle = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX)
os.write(handle, json.dumps({"holder": "x", "pid": os.getpid(), "host": "h", "since": time.time()}).encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_waited_for_then_refused_naming_the_holder(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.locks_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store.locks_dir / "k.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        manager = StoreLockManager(store, timeout=1.0)
        assert manager.is_locked("k")
        started = time.monotonic()
        with pytest.raises(InputError, match=f"held by process {holder.pid} on h"):
            manager.acquire_lock("k", "me")
        assert 1.0 <= time.monotonic() - started < 10
        assert manager.acquire_lock("k", "me", acquire_timeout=0) is False
    finally:
        holder.kill()
        holder.wait()
    # its process gone, the kernel released the lock: the file (whatever it holds) does not block
    (store.locks_dir / "k.lock").write_bytes(b"\x00garbage")
    manager = StoreLockManager(store, timeout=1.0)
    assert not manager.is_locked("k")
    assert manager.acquire_lock("k", "me") and manager.is_lock_holder("k", "me")
    manager.release_lock("k", "me")
    assert not manager.is_locked("k")


def test_two_threads_never_hold_one_lock_at_once(tmp_path: Path) -> None:
    manager = StoreLockManager(Store(tmp_path), timeout=30)
    inside: list[int] = []
    overlaps: list[int] = []

    def contend(name: str) -> None:
        for _ in range(20):
            manager.acquire_lock("k", name)
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.002)
            inside.pop()
            manager.release_lock("k", name)

    threads = [threading.Thread(target=contend, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not overlaps and not inside


def test_a_symbolic_link_in_the_store_is_refused_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = Store(tmp_path / "store")
    store.locks_dir.mkdir(parents=True)
    (store.locks_dir / "k.lock").symlink_to(outside / "created.lock")
    with pytest.raises(InputError, match="symbolic link"):
        StoreLockManager(store, timeout=1).acquire_lock("k", "me")
    (store.root / "models").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        store.write_model(fingerprint("m"), lambda folder: None, {})
    (store.root / "split").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        store.write_table("split", fingerprint("s"), pd.DataFrame({"a": [1]}))
    assert list(outside.iterdir()) == []


def test_a_damaged_or_deleted_registry_is_rebuilt_from_the_registrations(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    args = ["run", "--preset", "smoke", "--artifacts-dir", str(store), "--json"]
    assert cli.main(args) == 0
    model = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["keys"]["train"]
    original = pd.read_parquet(store / "registry.parquet")
    (store / "registry.parquet").write_bytes(b"not a parquet file")

    assert cli.main(["models", "--artifacts-dir", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(entry["key"], entry["status"]) for entry in listed] == [(model, "champion")]
    assert [p.name.split("-")[0] for p in store.glob("registry.parquet.damaged-*")] == ["registry.parquet.damaged"]
    columns = ["key", "status", "created", "test_rmse"]
    assert pd.read_parquet(store / "registry.parquet")[columns].equals(original[columns])

    (store / "registry.parquet").unlink()
    code = cli.main(["predict", "--horizon", "3", "--artifacts-dir", str(store), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == model


def test_a_rebuilt_registry_replays_the_retraining_decisions() -> None:
    from lstm_forecast.tasks.operations.registry import rebuild_registry

    def entry(key: str, created: str) -> dict[str, object]:
        return {"key": key, "series_id": "", "created": created, "test_rmse": 1.0, "test_mae": 1.0,
                "naive_test_rmse": 1.0, "test_mase": 1.0, "naive_test_mase": 1.0}  # fmt: skip

    first, second, third = fingerprint("a"), fingerprint("b"), fingerprint("c")
    decisions = pd.DataFrame(
        [
            {"challenger": second, "challenger_rmse": 0.5, "champion_rmse": 0.7},  # promoted
            {"challenger": third, "challenger_rmse": 0.9, "champion_rmse": 0.5},  # kept out
        ]
    )
    entries = [entry(third, "2026-01-03"), entry(first, "2026-01-01"), entry(second, "2026-01-02")]
    registry = rebuild_registry(entries, decisions)
    assert registry is not None
    assert dict(zip(registry["key"], registry["status"], strict=True)) == {
        first: "retired",
        second: "champion",
        third: "challenger",
    }
    assert registry.set_index("key").loc[third, "decision"].startswith("kept out")


def test_store_files_take_their_mode_from_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        store = Store(tmp_path)
        table = store.write_table("split", fingerprint("t"), pd.DataFrame({"a": [1]}))
        folder = store.write_model(fingerprint("m"), lambda f: (f / "model.keras").write_bytes(b"x"), {})
    finally:
        os.umask(previous)
    assert table.stat().st_mode & 0o777 == 0o664
    assert folder.stat().st_mode & 0o777 == 0o775
    assert (folder / "metadata.json").stat().st_mode & 0o777 == 0o664


def test_messages_about_a_file_never_quote_its_contents(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-token"
    text_file = tmp_path / "notes.txt"
    text_file.write_text(f"{secret}\n1\n2\n")
    bad_value = tmp_path / "values.csv"
    bad_value.write_text("ds,y\n" + "".join(f"{i},{i}\n" for i in range(50)) + f"50,{secret}\n")
    bad_time = tmp_path / "times.csv"
    bad_time.write_text("ds,y\n2024-01-01,1\n" + f"{secret},2\n")
    no_column = tmp_path / "header.csv"
    no_column.write_text(f"{secret},other\n1,2\n")
    for source, expected in (
        (text_file, "neither .csv nor .parquet"),
        (bad_value, "first in data row 51"),
        (bad_time, "first in data row 2"),
        (no_column, "not in the input's header (2 columns)"),
    ):
        code = cli.main(["run", "--preset", "smoke", "--input", str(source), "--artifacts-dir", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert code == 2 and expected in err, (source.name, err[-2000:])
        assert secret not in err


def test_a_malformed_config_file_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "preset.yaml": (b"preset: [smoke]\n", "unknown preset"),
        "bytes.yaml": (b"epochs: 3\n\xff\n", "not UTF-8"),
        "syntax.yaml": (b"epochs: [3\n", "cannot be parsed (line"),
        "keys.yaml": (b"1: 2\n", "mapping of field names"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError, match=expected.replace("(", r"\(")):
            build_config("default", path)
        assert cli.main(["run", "--config", str(path), "--artifacts-dir", str(tmp_path / "s")]) == 2
        assert "fix:" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_served_run_reads_and_writes_only_under_the_roots_fixed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    roots = {"artifacts_dir": str(served / "store"), "input": str(served / "data")}
    monkeypatch.setenv(SERVED_ROOTS, json.dumps(roots))
    check_served_paths(ForecastConfig(artifacts_dir=str(served / "store" / "sub"), input=str(served / "data/a.csv")))
    with pytest.raises(InputError, match="artifacts_dir only under"):
        check_served_paths(ForecastConfig(artifacts_dir=str(tmp_path / "elsewhere")))
    with pytest.raises(InputError, match="input only under"):
        check_served_paths(ForecastConfig(artifacts_dir=str(served / "store"), input="/etc/passwd.csv"))
    with pytest.raises(InputError, match="artifacts_dir only under"):
        check_served_paths(ForecastConfig(artifacts_dir=str(served / "store" / ".." / ".." / "x")))
    monkeypatch.delenv(SERVED_ROOTS)
    check_served_paths(ForecastConfig(artifacts_dir=str(tmp_path / "elsewhere")))  # not served: any folder


def test_predict_refuses_a_horizon_beyond_its_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["predict", "--horizon", "10001", "--artifacts-dir", str(tmp_path / "s")])
    assert code == 2 and "between 1 and 10,000" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_killing_a_run_stops_its_temporary_server(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = subprocess.Popen(
        [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--epochs", "200", "--artifacts-dir", str(store)],
        env=quiet_env(tmp_path / "home", None),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.txt").open("wb"),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "epoch 2/200" not in (tmp_path / "stderr.txt").read_text():
        time.sleep(0.2)  # training: every Prefect client (logs, events) of the run has started by now
    servers = [child for child in _children(run.pid) if b"uvicorn" in _command_line(child)]
    errors = [line for line in (tmp_path / "stderr.txt").read_text().splitlines() if "rror" in line]
    assert len(servers) == 1, (servers, run.poll(), errors[-5:])  # one server, shared by every client
    assert os.getsid(servers[0]) == servers[0]  # in a session of its own: a Ctrl-C to the run does not reach it
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(servers[0]):
        time.sleep(0.2)
    assert not _alive(servers[0])


def test_a_bad_input_with_the_temporary_server_exits_2_with_every_log_delivered(tmp_path: Path) -> None:
    source = tmp_path / "text-value.csv"  # found by generate, inside the flow (a missing column is found before)
    source.write_text("ds,y\n" + "".join(f"{i},{i}\n" for i in range(300)) + "300,high\n")
    done = subprocess.run(
        [str(BIN / "lstm-forecast"), "run", "--preset", "smoke", "--input", str(source)],
        env=quiet_env(tmp_path / "home", None),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "first in data row 301" in done.stderr and "fix:" in done.stderr
    assert "Error logging to API" not in done.stderr  # the logs were sent before the server stopped


def test_values_from_data_and_files_reach_messages_escaped_and_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lstm_forecast.tasks.core.errors import shown
    from lstm_forecast.tasks.core.space import fit_minmax
    from lstm_forecast.tasks.operations.registry import record_model

    red = "\x1b[31mred\x1b[0m\u202e\n"
    assert shown(red) == "\\x1b[31mred\\x1b[0m\\u202e\\n" and len(shown("x" * 500)) == 80
    with pytest.raises(InputError) as caught:
        fit_minmax(np.full(10, 3.25))
    assert "3.25" not in str(caught.value)  # the series' value is not echoed

    store = Store(tmp_path)  # a lock file whose host field holds escape codes
    handle = store.open_lock("generate-x.lock")
    os.pwrite(handle, json.dumps({"holder": "x", "pid": 1, "host": red, "since": 0}).encode(), 0)
    assert "\x1b" not in store.lock_holder(handle) and "\\x1b[31mred" in store.lock_holder(handle)
    os.close(handle)

    entry = {"key": "0" * 24, "created": "now", "test_rmse": 1.0, "test_mae": 1.0, "naive_test_rmse": 1.0}
    record_model(
        store, entry | {"data_fingerprint": "d", "series": "s", "input": red, "config": "{}", "series_id": red}
    )
    assert cli.main(["models", "--artifacts-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[31mred" in out
