"""Issue 22, a hostile user: a YAML alias bomb, links under `_prefect/`, registry files of the wrong shape,
served paths each under its own root, a crash between a decision and the registry, a read-only store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lstm_forecast.flows import cli
from lstm_forecast.tasks.core.config import build_config, preset
from lstm_forecast.tasks.core.errors import InputError


def alias_bomb(levels: int) -> str:
    """YAML whose `preset` expands to 9**levels strings: a few hundred bytes that a loader keeps shared, and
    anything that walks or prints the value expands."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"preset: *a{levels}"]) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once_and_no_user_value_is_echoed_unbounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for levels in (6, 9):
        bomb = tmp_path / f"bomb{levels}.yaml"
        bomb.write_text(alias_bomb(levels))
        started = time.monotonic()
        with pytest.raises(InputError, match="alias") as refused:
            build_config("default", bomb)
        assert time.monotonic() - started < 5 and len(str(refused.value)) < 500
        assert cli.main(["run", "--config", str(bomb), "--artifacts-dir", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "alias" in err and "fix:" in err and len(err) < 1000

    # Without aliases, a long or control-laden value is still shown bounded and printable.
    long_name = tmp_path / "long.yaml"
    long_name.write_text("preset: " + "x" * 200_000 + "\n")
    with pytest.raises(InputError, match="unknown preset") as refused:
        build_config("default", long_name)
    assert len(refused.value.problem) < 200
    with pytest.raises(InputError, match="unknown preset") as refused:
        preset("\x1b[2J\x1b[31mred\nline")
    assert "\x1b" not in refused.value.problem and "\n" not in refused.value.problem
    nested = tmp_path / "nested.yaml"
    nested.write_text("preset: " + "[" * 50 + "1" + "]" * 50 + "\n")
    with pytest.raises(InputError, match="unknown preset") as refused:
        build_config("default", nested)
    assert len(refused.value.problem) < 200
    unknown_field = tmp_path / "field.yaml"
    unknown_field.write_text('? "' + "y" * 100_000 + '\\e"\n: 1\n')  # an explicit key, ending in an escape
    with pytest.raises(InputError, match="invalid configuration") as refused:
        build_config("default", unknown_field)
    assert len(refused.value.problem) < 300 and "\x1b" not in refused.value.problem

    # Nesting past Python's recursion limit, in YAML or JSON, is refused as such.
    for suffix in (".yaml", ".json"):
        deep = tmp_path / f"deep{suffix}"
        deep.write_text('{"epochs": ' + "[" * 100_000 + "]" * 100_000 + "}")
        with pytest.raises(InputError, match="nests values too deeply"):
            build_config("default", deep)

    # A config file is small: a huge one is refused before it is parsed.
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * 200_000 + "epochs: 3\n")
    with pytest.raises(InputError, match="too large"):
        build_config("default", huge)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("planted", ["_prefect/records", "_prefect"])
def test_a_symbolic_link_under_prefect_is_refused_and_nothing_is_written_or_removed_outside(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str], planted: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bystander = outside / "notes.txt"  # not a stage key: the store's clean-up would remove it through a link
    bystander.write_text("keep me")
    store = tmp_path / "store"
    (store / planted).parent.mkdir(parents=True, exist_ok=True)
    (store / planted).symlink_to(outside, target_is_directory=True)

    code = cli.main(["run", "--preset", "smoke", "--artifacts-dir", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and "is a symbolic link" in err and "fix:" in err, err[-2000:]
    assert sorted(p.name for p in outside.rglob("*")) == ["notes.txt"]

    # The store's own clean-ups never reach through the link either.
    from lstm_forecast.tasks.core.store import Store, fingerprint

    (outside / "records").mkdir(exist_ok=True)
    for folder in (outside, outside / "records"):
        (folder / "x.txt").write_text("keep me too")
    Store(store).drop_failure_records()
    key = fingerprint("a key")
    for folder in (outside, outside / "records"):
        (folder / key).write_text("{}")
    Store(store).discard("split", key)
    with pytest.raises(InputError, match="symbolic link"):
        Store(store).check_record(key)
    assert bystander.read_text() == "keep me"
    assert all((folder / name).exists() for folder in (outside, outside / "records") for name in ("x.txt", key))


class Warnings:
    """Stands in for the store's and the registry's loggers: keeps their warnings (Prefect's logging setup
    drops the handlers a test adds to its loggers)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, message: str, *args: object) -> None:
        self.messages.append(message % args)

    def info(self, message: str, *args: object) -> None:
        pass


@pytest.fixture
def warnings_logged(monkeypatch: pytest.MonkeyPatch) -> Warnings:
    from lstm_forecast.tasks.core import store
    from lstm_forecast.tasks.operations import registry

    kept = Warnings()
    monkeypatch.setattr(store, "log", kept)
    monkeypatch.setattr(registry, "log", kept)
    return kept


def registry_entry(key: str, created: str = "2026-01-01T00:00:00+00:00") -> dict[str, object]:
    return {"key": key, "series_id": "", "created": created, "test_rmse": 1.0, "test_mae": 1.0,
            "naive_test_rmse": 1.0, "test_mase": 1.0, "naive_test_mase": 1.0, "data_fingerprint": "d",
            "series": "s", "input": "", "config": "{}"}  # fmt: skip


def listed_models(store: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert cli.main(["models", "--artifacts-dir", str(store), "--json"]) == 0
    return {row["key"]: row["status"] for row in json.loads(capsys.readouterr().out.splitlines()[-1])}


def test_registry_files_of_the_wrong_shape_are_skipped_or_set_aside_and_the_registry_is_rebuilt(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str], warnings_logged: Warnings
) -> None:
    import pandas as pd

    from lstm_forecast.tasks.core.store import Store, fingerprint
    from lstm_forecast.tasks.operations.ahead import global_members, models_by_series
    from lstm_forecast.tasks.operations.registry import empty_registry, load_registry, record_model

    store = Store(tmp_path)
    first, second = fingerprint("first"), fingerprint("second")
    record_model(store, registry_entry(first))
    folder = store.registration_path(first).parent
    planted = {
        "list": "[]",
        "empty": "{}",
        "other-key": json.dumps(registry_entry(fingerprint("x"))),
        "bad-types": json.dumps(registry_entry(fingerprint("bad-types")) | {"created": [], "test_rmse": "a"}),
    }
    for name, text in planted.items():
        (folder / f"{fingerprint(name)}.json").write_text(text)

    # Every registration that is not a model's entry is left out, with a warning; the others rebuild it.
    store.registry_path.unlink()
    assert listed_models(tmp_path, capsys) == {first: "champion"}
    assert sum("left out" in message for message in warnings_logged.messages) == len(planted)
    assert record_model(store, registry_entry(second, "2026-01-02T00:00:00+00:00")) == "challenger"  # as `run` does

    # A registry that reads back but is not a registry (wrong columns, wrong values, no rows) is set aside
    # and rebuilt from the registrations.
    expected = {first: "champion", second: "challenger"}
    good = pd.read_parquet(store.registry_path)
    wrong = {
        "columns": pd.DataFrame({"a": [1, 2]}),
        "no rows": empty_registry(),
        "statuses": good.assign(status="boss"),
        "keys": good.assign(key=["../../etc/passwd", first]),
        "types": good.assign(test_rmse=["a", "b"]),
    }
    for name, frame in wrong.items():
        frame.to_parquet(store.registry_path)
        warnings_logged.messages.clear()
        assert listed_models(tmp_path, capsys) == expected, name
        assert any("is not a registry" in message for message in warnings_logged.messages), name
        assert pd.read_parquet(store.registry_path)[["key", "status"]].equals(good[["key", "status"]]), name
        champions = models_by_series(load_registry(store), "champion", [], global_members(store))
        assert champions == {"": first}  # `predict` finds the champion
    assert len(list(tmp_path.glob("registry.parquet.damaged-*"))) == len(wrong)

    # Decisions of the wrong shape are set aside too, and the rebuild goes on without them.
    pd.DataFrame({"a": [1]}).to_parquet(store.decisions_path)
    store.registry_path.unlink()
    assert listed_models(tmp_path, capsys) == expected
    assert not store.decisions_path.exists() and list(tmp_path.glob("decisions.parquet.damaged-*"))


def test_each_served_path_is_fenced_under_its_own_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lstm_forecast.flows.serve import SERVED_ROOTS, check_served_paths, served_roots
    from lstm_forecast.tasks.core.config import ForecastConfig

    store, data = tmp_path / "served" / "store", tmp_path / "served" / "data"
    served = ForecastConfig(artifacts_dir=str(store), input=str(data / "a.csv"))
    monkeypatch.setenv(SERVED_ROOTS, json.dumps(served_roots(served)))
    check_served_paths(ForecastConfig(artifacts_dir=str(store / "sub"), input=str(data / "b.csv")))
    with pytest.raises(InputError, match="artifacts_dir only under"):  # a whole store written into the data
        check_served_paths(ForecastConfig(artifacts_dir=str(data / "store"), input=str(data / "a.csv")))
    with pytest.raises(InputError, match="input only under"):  # the store's own files read as input
        check_served_paths(ForecastConfig(artifacts_dir=str(store), input=str(store / "registry.csv")))
    outside = ForecastConfig(
        artifacts_dir=str(store), input=str(data / "a.csv"), future_columns=("t",), future=str(tmp_path / "f.csv")
    )
    with pytest.raises(InputError, match="future only under"):  # a future file outside the data's folder
        check_served_paths(outside)

    without_input = ForecastConfig(artifacts_dir=str(store))
    monkeypatch.setenv(SERVED_ROOTS, json.dumps(served_roots(without_input)))
    check_served_paths(without_input)
    with pytest.raises(InputError, match="takes no input file"):
        check_served_paths(ForecastConfig(artifacts_dir=str(store), input=str(store / "a.csv")))


class SimulatedCrashError(Exception):
    """Stands for the process dying: nothing after the point where it is raised runs."""


def test_a_crash_between_the_decision_and_the_registry_is_replayed_and_never_decided_twice(
    tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from lstm_forecast.tasks.core.store import Store
    from tests.test_operations import STRONG, WEAK, retrain_once, write_series

    store_dir, source = tmp_path / "store", tmp_path / "series.csv"
    store = Store(store_dir)
    write_series(source, 400)
    weak = retrain_once(store_dir, source, WEAK)["stages"]["train"]["key"]

    # The data grew: a better challenger is trained and decided, and the process dies right after the real
    # `record_decision` wrote decisions.parquet, before it writes the registry.
    write_decisions = Store.write_decisions

    def crash_after_writing(self: Store, decisions: pd.DataFrame) -> Path:
        write_decisions(self, decisions)
        raise SimulatedCrashError("killed between the decision and the registry")

    monkeypatch.setattr(Store, "write_decisions", crash_after_writing)
    write_series(source, 480)
    with pytest.raises(Exception, match="killed between"):
        retrain_once(store_dir, source, STRONG)
    monkeypatch.undo()
    crashed = pd.read_parquet(store.registry_path).set_index("key")
    decisions = pd.read_parquet(store.decisions_path)
    strong = decisions["challenger"].iloc[0]
    assert decisions["outcome"].tolist() == ["promoted"] and decisions["champion"].tolist() == [weak]
    assert crashed.loc[weak, "status"] == "champion" and crashed.loc[strong, "status"] == "challenger"  # the crash

    # The next retraining (same data: every stage cached) replays the decision and decides nothing again.
    again = retrain_once(store_dir, source, STRONG)
    assert again["stages"]["train"] == {"key": strong, "status": "cached"}
    assert again["retrain"]["outcome"] == "unchanged" and again["retrain"]["champion"] == strong, again["retrain"]
    assert pd.read_parquet(store.decisions_path)["challenger"].tolist() == [strong]  # no duplicate
    healed = pd.read_parquet(store.registry_path).set_index("key")
    assert healed.loc[strong, "status"] == "champion" and healed.loc[weak, "status"] == "retired"
    assert healed.loc[strong, "decision"].startswith("promoted")
    assert listed_models(store_dir, capsys) == {weak: "retired", strong: "champion"}


def test_a_decision_recorded_twice_is_kept_once_and_a_read_replays_it(tmp_path: Path) -> None:
    import pandas as pd

    from lstm_forecast.tasks.core.store import Store, fingerprint
    from lstm_forecast.tasks.operations.registry import load_registry, record_decision, record_models

    store = Store(tmp_path)
    first, second = fingerprint("first"), fingerprint("second")
    record_models(store, [registry_entry(first), registry_entry(second, "2026-01-02T00:00:00+00:00")])
    before = pd.read_parquet(store.registry_path)
    decision = {"decided": "now", "challenger": second, "champion": first, "holdout_rows": 10, "holdout_start": 90}
    assert record_decision(store, decision, 0.5, 0.7) == "promoted"
    assert record_decision(store, decision, 0.9, 0.7) == "promoted"  # the one recorded, not a second one
    assert len(pd.read_parquet(store.decisions_path)) == 1

    before.to_parquet(store.registry_path)  # the registry as a crash before its write leaves it
    registry = load_registry(store).set_index("key")  # a plain read replays the decision and writes it
    assert (registry.loc[first, "status"], registry.loc[second, "status"]) == ("retired", "champion")
    assert pd.read_parquet(store.registry_path).set_index("key").loc[second, "status"] == "champion"


def without_write_override() -> None:
    """In a child process before it executes the CLI: as root, drop the capabilities that let root write
    whatever the file modes say (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the bounding set;
    root's capabilities after exec are that set, so the CLI obeys the modes as any user does. Another user
    obeys them already."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode | 0o200 if writable else mode & ~0o222)


def test_a_fully_cached_run_reads_a_read_only_store_and_one_that_must_write_says_how(
    tmp_path: Path, prefect_server: str, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    from tests.helpers import BIN, quiet_env, store_snapshot

    store = tmp_path / "store"
    args = ["run", "--preset", "smoke", "--artifacts-dir", str(store), "--json"]
    assert cli.main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    env = quiet_env(tmp_path / "home", prefect_server)

    def as_reader(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=300, preexec_fn=without_write_override
        )

    set_writable(store, False)
    try:
        probe = as_reader(sys.executable, "-c", f"open({str(store / 'probe')!r}, 'w')")
        if probe.returncode == 0:
            pytest.skip("this machine lets the test's processes write whatever the file modes say")
        assert "PermissionError" in probe.stderr
        before = store_snapshot(store)

        cached = as_reader(str(BIN / "lstm-forecast"), *args)
        assert cached.returncode == 0, cached.stderr[-3000:]
        again = json.loads(cached.stdout.strip().splitlines()[-1])
        assert set(again["stages"].values()) == {"cached"} and again["metrics"] == first["metrics"]

        listed = as_reader(str(BIN / "lstm-forecast"), "models", "--artifacts-dir", str(store), "--json")
        assert listed.returncode == 0 and first["keys"]["train"] in listed.stdout, listed.stderr[-3000:]

        must_train = as_reader(str(BIN / "lstm-forecast"), *args[:-1], "--epochs", "2")
        assert must_train.returncode == 2, must_train.stderr[-3000:]
        assert "cannot be written" in must_train.stderr and "fix:" in must_train.stderr
        assert "Traceback" not in must_train.stderr.split("error:")[-1]
        assert store_snapshot(store) == before  # nothing written
    finally:
        set_writable(store, True)
