"""A global model's learned series embedding (`--series-embedding`): the series -> row map and the unknown row,
the model key it enters only when on, and one run of the command line whose forecasts `predict` repeats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from lstm_forecast.tasks.core.config import ForecastConfig, stage_fields
from lstm_forecast.tasks.core.embedding import (
    UNKNOWN_ROW,
    UNKNOWN_SHARE,
    embedding_rows,
    series_row,
    training_rows,
    with_series_channel,
)
from lstm_forecast.tasks.core.networks import forward, load_saved
from lstm_forecast.tasks.core.store import Store


def test_each_series_gets_its_row_an_unknown_one_reads_row_0_and_training_drops_a_fixed_share_of_ids() -> None:
    rows = embedding_rows(["W7", "W1", "W30"])
    assert rows == {"W7": 1, "W1": 2, "W30": 3}  # training order; row 0 is kept for the unknown series
    assert [series_row(rows, i) for i in ("W1", "W30", "W999", None)] == [2, 3, UNKNOWN_ROW, UNKNOWN_ROW]

    drawn = training_rows(3, 5000, seed=0)
    assert set(np.unique(drawn)) == {UNKNOWN_ROW, 3}
    assert abs(np.mean(drawn == UNKNOWN_ROW) - UNKNOWN_SHARE) < 0.02
    assert np.array_equal(drawn, training_rows(3, 5000, seed=0))  # the same windows in every run
    assert not np.array_equal(drawn, training_rows(3, 5000, seed=1))

    inputs = np.arange(24, dtype="float32").reshape(2, 3, 4)  # (windows, steps, channels)
    read = with_series_channel(inputs, np.array([2, UNKNOWN_ROW]))
    assert read.shape == (2, 3, 5) and read.dtype == np.float32
    assert np.array_equal(read[..., :4], inputs)
    assert read[0, :, 4].tolist() == [2.0] * 3 and read[1, :, 4].tolist() == [0.0] * 3


def test_the_embedding_enters_a_global_models_key_only_when_on() -> None:
    off = ForecastConfig(scope="global")
    assert "series_embedding" not in stage_fields("train", off)  # existing runs keep their keys
    assert stage_fields("train", off.model_copy(update={"series_embedding": 8}))["series_embedding"] == 8
    assert "series_embedding" not in stage_fields("train", ForecastConfig(scope="local", series_embedding=8))


def test_a_global_run_with_an_embedding_stores_its_rows_and_predict_repeats_its_forecasts(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    times = pd.date_range("2024-01-01", periods=90, freq="D")
    panel = pd.concat(
        pd.DataFrame(
            {
                "unique_id": f"s{n}",
                "ds": times,
                "y": 10 * n + np.sin(np.arange(90) / (n + 2)) + rng.normal(size=90) / 10,
            }
        )
        for n in range(3)
    )
    panel.to_csv(tmp_path / "panel.csv", index=False)
    store = str(tmp_path / "store")
    args = ["--preset", "smoke", "--horizon", "2", "--epochs", "2", "--seasons", "none", "--baselines", "naive"]
    args += ["--artifacts-dir", store]
    run = ["run", "--input", str(tmp_path / "panel.csv"), "--series-embedding", "4", *args, "--json"]
    assert cli.main(run) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["scope"] == "global" and not result["failed"]
    run_rows = pd.read_parquet(result["forecasts"]).sort_values(["unique_id", "ds"], ignore_index=True)
    (key,) = run_rows["model_key"].unique()
    metadata = Store(store).read_model_metadata(key)
    assert metadata["config"]["series_embedding"] == 4
    assert metadata["series_embedding"]["rows"] == {"s0": 1, "s1": 2, "s2": 3}
    saved = load_saved(Store(store), key, forecaster=True)  # the same window read as each series, and unknown
    window = np.zeros((1, saved.look_back // saved.patch, saved.patch), dtype="float32")
    outputs = [forward(saved.model, saved.series_inputs(i, window)) for i in ("s0", "s1", "s2", "new")]
    assert len({tuple(np.round(out.ravel(), 6)) for out in outputs}) == 4  # each reads its own row

    again = tmp_path / "again.csv"  # the stored data: the run's table
    assert cli.main(["predict", "--horizon", "2", "--output", str(again), "--artifacts-dir", store]) == 0
    fresh = tmp_path / "fresh.csv"  # the same data read anew, each series by its id
    new_data = ["--input", str(tmp_path / "panel.csv"), "--output", str(fresh)]
    assert cli.main(["predict", "--horizon", "2", *new_data, "--artifacts-dir", store]) == 0
    for path in (again, fresh):
        table = pd.read_csv(path).sort_values(["unique_id", "ds"], ignore_index=True)
        assert np.allclose(table["y_hat"], run_rows["y_hat"], atol=1e-6), path.name
