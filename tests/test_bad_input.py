"""Bad input: one clear message naming the problem and the fix, exit code 2, the store left as it was."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from tests.helpers import BIN, free_port, quiet_env, store_snapshot


@pytest.fixture(scope="module")
def used_store(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    """A store that already holds one finished smoke run."""
    root = tmp_path_factory.mktemp("bad-input") / "store"
    assert cli.main(["run", "--preset", "smoke", "--artifacts-dir", str(root)]) == 0
    return root


def write_csv(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def sine_frame(n: int = 300) -> pd.DataFrame:
    return pd.DataFrame({"ds": np.arange(n), "y": np.sin(np.arange(n) / 4.0)})


def bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra CLI args, text the message must contain)."""
    frame = sine_frame()
    nan_frame = frame.assign(y=frame["y"].where(frame.index != 10))
    (tmp / "nan-error.yaml").write_text("preset: smoke\nnan_policy: error\n")
    (tmp / "broken.yaml").write_text("preset: smoke\nepochs: [1,\n")
    return {
        "missing file": (["--input", str(tmp / "nope.csv")], "does not exist"),
        "wrong file type": (["--input", write_csv(tmp / "data.xlsx", frame)], "neither .csv nor .parquet"),
        "missing column": (
            ["--input", write_csv(tmp / "a.csv", frame.rename(columns={"y": "v"}))],
            "column 'y' is not in the input",
        ),
        "missing id column": (
            ["--input", write_csv(tmp / "g.csv", frame), "--id-column", "store"],
            "id column 'store' is not in the input's header",
        ),
        "semicolon-separated file": (
            ["--input", _write_bytes(tmp / "semicolons.csv", b"ds;y\n1;0,5\n2;0,7\n")],
            "header (1 column)",
        ),
        "non-numeric column": (["--input", write_csv(tmp / "b.csv", frame.assign(y="high"))], "non-numeric"),
        "NaN under nan_policy error": (
            ["--config", str(tmp / "nan-error.yaml"), "--input", write_csv(tmp / "c.csv", nan_frame)],
            "1 missing value",
        ),
        "duplicate timestamps": (
            ["--input", write_csv(tmp / "d.csv", pd.concat([frame, frame.iloc[[5]]]))],
            "repeated timestamp",
        ),
        "series too short": (["--input", write_csv(tmp / "e.csv", sine_frame(9))], "too few"),
        "constant series": (["--input", write_csv(tmp / "f.csv", frame.assign(y=3.0))], "constant"),
        "unknown preset": (["--preset", "fastest"], "unknown preset 'fastest'"),
        "invalid field value": (["--epochs", "0"], "epochs: Input should be greater than or equal to 1"),
        "missing config file": (["--config", str(tmp / "none.yaml")], "does not exist"),
        "empty file": (["--input", _write_bytes(tmp / "empty.csv", b"")], "cannot be read as csv"),
        "header only": (["--input", _write_bytes(tmp / "header.csv", b"ds,y\n")], "the input has no values"),
        "non-UTF-8 bytes": (["--input", _write_bytes(tmp / "latin.csv", b"ds,y\n1,\xff\xfe\n")], "not UTF-8"),
        "broken config file": (["--config", str(tmp / "broken.yaml")], "cannot be parsed"),
    }


CASES = [
    "missing file",
    "wrong file type",
    "missing column",
    "missing id column",
    "semicolon-separated file",
    "non-numeric column",
    "NaN under nan_policy error",
    "duplicate timestamps",
    "series too short",
    "constant series",
    "unknown preset",
    "invalid field value",
    "missing config file",
    "broken config file",
    "empty file",
    "header only",
    "non-UTF-8 bytes",
]


def test_every_case_is_listed(tmp_path: Path) -> None:
    assert sorted(bad_cases(tmp_path)) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_clear_message_and_keeps_the_store(
    case: str, used_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = bad_cases(tmp_path)[case]
    if "--preset" not in args and "--config" not in args:
        args = ["--preset", "smoke", *args]
    before = store_snapshot(used_store)
    code = cli.main(["run", "--artifacts-dir", str(used_store), *args])
    err = capsys.readouterr().err
    assert code == 2
    message = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(message) == 1 and expected in message[0], err[-1500:]
    assert "fix: " in err
    assert "Traceback" not in err
    assert store_snapshot(used_store) == before


def test_unreachable_prefect_server_is_named_with_the_fix(used_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{free_port()}/api"
    before = store_snapshot(used_store)
    with temporary_settings({PREFECT_API_URL: url}):
        code = cli.main(["run", "--preset", "smoke", "--artifacts-dir", str(used_store)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot reach the Prefect server at {url}" in err and "prefect server start" in err
    assert store_snapshot(used_store) == before


def test_unsorted_times_are_sorted_and_logged(
    tmp_path: Path, prefect_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    shuffled = sine_frame().sample(frac=1.0, random_state=1)
    source = write_csv(tmp_path / "shuffled.csv", shuffled)
    code = cli.main(["run", "--preset", "smoke", "--input", source, "--artifacts-dir", str(tmp_path / "store")])
    assert code == 0
    assert any("sorted by time" in record.getMessage() for record in caplog.records)


def test_the_command_exits_non_zero_with_the_message_on_stderr(tmp_path: Path, prefect_server: str) -> None:
    done = subprocess.run(
        [
            str(BIN / "lstm-forecast"),
            "run",
            "--preset",
            "smoke",
            "--input",
            str(tmp_path / "missing.csv"),
            "--artifacts-dir",
            str(tmp_path / "store"),
        ],
        env=quiet_env(tmp_path / "home", prefect_server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "error: input file" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists() or store_snapshot(tmp_path / "store") == {}
