"""Covariates: known-future and past-only columns, calendar cycles and holidays as the network's feature channels.

Pure functions first (phases, leads, scaling on training rows only, window layout, refusals), then one end-to-end
run of the command line: a series driven by a known-future column is forecast far better with it than without,
`predict` reads the future values from `--future`, and bad covariates get exit 2 with the store untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows import cli
from lstm_forecast.tasks.core.config import ForecastConfig, feature_width
from lstm_forecast.tasks.core.covariates import (
    CovariateSpace,
    cycle_phases,
    fit_covariate_space,
    holiday_flags,
)
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.windows import window_inputs
from lstm_forecast.tasks.stages.generate import check_covariate_columns
from tests.helpers import store_snapshot, task_runs


def test_calendar_phases_are_anchored_to_the_clock_and_the_year() -> None:
    monday = pd.Series(pd.date_range("2024-01-01 00:00", periods=30, freq="h"))  # 2024-01-01 is a Monday
    phases = cycle_phases(monday, (24, 168), "h")
    assert np.allclose(phases[:, 0], (np.arange(30) % 24) / 24)  # hour of the day
    assert np.allclose(phases[:, 1], np.arange(30) / 168)  # hour of the week, from Monday midnight
    later = pd.Series(pd.date_range("2024-01-03 05:00", periods=2, freq="h"))  # another series, same clock
    assert np.allclose(cycle_phases(later, (24,), "h")[:, 0], [5 / 24, 6 / 24])
    months = pd.Series(pd.date_range("2023-01-01", periods=13, freq="MS"))
    year = cycle_phases(months, (12,), "MS")[:, 0]
    assert year[0] == 0 and year[12] == 0 and np.all(np.diff(year[:12]) > 0)  # January again a year on
    numbers = pd.Series(np.arange(1.0, 50.0))
    assert np.allclose(cycle_phases(numbers, (24,), None)[:, 0], (np.arange(1, 50) % 24) / 24)


def test_future_columns_lead_by_the_horizon_past_columns_do_not_and_both_are_scaled_on_training_rows() -> None:
    n, lead, fit_stop = 12, 3, 8
    values = pd.DataFrame({"sensor": np.arange(n, dtype=float), "price": 100.0 + np.arange(n)})
    space = fit_covariate_space(values, fit_stop, ("sensor",), ("price",), (), None, None, lead)
    later = pd.DataFrame({"price": [200.0, 201.0, 202.0]})
    features = space.features(pd.Series(np.arange(n, dtype=float)), values, later, n)
    train = np.arange(fit_stop, dtype=float)
    assert np.allclose(features[:, 0], (np.arange(n) - train.mean()) / train.std())  # row q: sensor[q]
    prices = np.r_[100.0 + np.arange(n), 200.0, 201.0, 202.0]
    assert np.allclose(features[:, 1], (prices[lead : n + lead] - (100 + train.mean())) / train.std())  # price[q + 3]
    edited = values.assign(price=values["price"].where(values.index < fit_stop, -1e6))  # rows after the fit
    assert fit_covariate_space(edited, fit_stop, ("sensor",), ("price",), (), None, None, lead) == space
    with pytest.raises(InputError, match="need values for the 3 steps"):
        space.features(pd.Series(np.arange(n, dtype=float)), values, later.iloc[:2], n)
    with pytest.raises(InputError, match="past-only columns 'sensor' are not known"):
        space.features(pd.Series(np.arange(n, dtype=float)), values, later, n + 1)


def test_each_lstm_step_holds_its_patch_of_values_then_their_features() -> None:
    values = np.arange(10, dtype=float)
    features = np.stack([100 + values, 200 + values], axis=1)  # (n, 2)
    x = window_inputs(values, np.array([6]), look_back=4, patch=2, features=features)
    assert x.shape == (1, 2, 2 * (1 + 2))
    assert x[0, 0].tolist() == [2, 3, 102, 202, 103, 203]  # values of rows 2, 3, then each row's features
    assert x[0, 1].tolist() == [4, 5, 104, 204, 105, 205]
    assert np.array_equal(window_inputs(values, np.array([6]), 4, 2), x[:, :, :2])  # no features: as before


def test_holidays_are_flagged_by_country_and_need_dates() -> None:
    days = pd.Series(pd.to_datetime(["2024-12-25 10:00", "2024-12-24 00:00", "2024-07-04 00:00"]))
    assert holiday_flags(days, "US").tolist() == [1.0, 0.0, 1.0]
    assert holiday_flags(days, "DE").tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(InputError, match="no public-holiday calendar"):
        holiday_flags(days, "XX")
    with pytest.raises(InputError, match="need dates"):
        holiday_flags(pd.Series([1.0, 2.0]), "US")


def test_bad_covariate_columns_are_named_with_their_row() -> None:
    raw = pd.DataFrame({"ds": range(4), "y": 1.0, "a": [1, 2, None, 4], "b": ["1", "x", "3", "4"], "c": 2.0})
    with pytest.raises(InputError, match="'a' has 1 missing value.*data row 3"):
        check_covariate_columns(raw, ("a",), {})
    with pytest.raises(InputError, match="'b' holds 1 value.*not numbers.*data row 2"):
        check_covariate_columns(raw, ("b",), {})
    with pytest.raises(InputError, match="'c' holds 1 value.*infinite or beyond.*data row 4"):
        check_covariate_columns(raw.assign(c=[1.0, 2.0, 3.0, np.inf]), ("c",), {})
    with pytest.raises(InputError, match="'z' is not in the input's header"):
        check_covariate_columns(raw, ("z",), {})
    with pytest.raises(InputError, match="'c' is constant before the test split"):
        fit_covariate_space(raw.assign(c=2.0), 3, (), ("c",), (), None, None, 1)
    shared = fit_covariate_space(raw.assign(c=2.0), 3, (), ("c",), (), None, None, 1, allow_constant=True)
    assert shared.spread == (1.0,)  # a global model keeps it: it may change in other series


def test_the_config_counts_feature_channels_and_refuses_clashing_columns() -> None:
    config = ForecastConfig(future_columns=("price",), past_columns=("load",), calendar=(24, 168), holidays="US")
    assert feature_width(config) == 1 + 1 + 2 * 2 + 1
    assert feature_width(ForecastConfig()) == 0
    assert CovariateSpace(("load",), ("price",), (0, 0), (1, 1), (24, 168), None, "US", 1).width == 7
    with pytest.raises(ValueError, match="named twice"):
        ForecastConfig(future_columns=("a",), past_columns=("a",))
    with pytest.raises(ValueError, match="time, value or id column"):
        ForecastConfig(future_columns=("y",))
    with pytest.raises(ValueError, match="needs future_columns"):
        ForecastConfig(future="f.csv")


def driven_series(n: int, extra: int, seed: int = 0) -> pd.DataFrame:
    """y = 3 · price + small noise, with price known in advance; `extra` rows of price after the series."""
    rng = np.random.default_rng(seed)
    price = rng.normal(size=n + extra)
    y = 3 * price[:n] + 0.2 * rng.normal(size=n)
    return pd.DataFrame(
        {"ds": np.arange(n + extra, dtype=float), "y": np.r_[y, np.full(extra, np.nan)], "price": price}
    )


def test_a_known_future_column_drives_the_forecast_predict_reads_it_and_bad_ones_are_refused(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = driven_series(400, 2)
    frame.iloc[:400].to_csv(tmp_path / "sales.csv", index=False)
    frame.iloc[400:][["ds", "price"]].to_csv(tmp_path / "future.csv", index=False)
    store = tmp_path / "store"
    common = ["--preset", "smoke", "--horizon", "2", "--epochs", "40", "--units", "16", "--artifacts-dir", str(store)]
    source = ["--input", str(tmp_path / "sales.csv")]
    covariates = ["--future-columns", "price", "--future", str(tmp_path / "future.csv")]

    def last_json() -> dict:
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert cli.main(["run", *common, *source, "--json"]) == 0
    without = last_json()["metrics"]["test"]["lstm"]["rmse"]
    assert cli.main(["run", *common, *source, *covariates, "--json"]) == 0
    result = last_json()
    with_price = result["metrics"]["test"]["lstm"]["rmse"]
    assert with_price < 0.5 * without, (with_price, without)  # y is 3 · price: only the price tells it

    # predict continues new data with its future values, as the run forecast the same data
    run_rows = pd.read_parquet(result["artifacts"]["forecasts"])
    model = ["--model", result["keys"]["train"], "--artifacts-dir", str(store)]  # a challenger: the first is champion
    assert cli.main(["predict", "--horizon", "2", *source, "--future", covariates[3], *model]) == 0
    capsys.readouterr()
    tables = sorted((store / "forecasts").glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    new_rows = pd.read_parquet(tables[-1])
    assert np.allclose(new_rows["y_hat"], run_rows["y_hat"])
    assert np.allclose(new_rows["y_hat"], 3 * frame["price"].iloc[400:], atol=1.0)

    before = store_snapshot(store)
    gap = frame.iloc[400:][["ds", "price"]].assign(ds=[401.0, 403.0])
    gap.to_csv(tmp_path / "gap.csv", index=False)
    cases = {
        "no future file": (["run", *common, *source, "--future-columns", "price"], "need values for the 2 steps"),
        "missing column": (["run", *common, *source, "--future-columns", "promo"], "'promo' is not in the input"),
        "future file with a gap": (
            ["run", *common, *source, "--future-columns", "price", "--future", str(tmp_path / "gap.csv")],
            "does not continue the series",
        ),
        "predict without --future": (
            ["predict", "--horizon", "2", *source, *model],
            "reads the future columns price",
        ),
        "predict past the future file": (
            ["predict", "--horizon", "4", *source, "--future", covariates[3], *model],
            "need values for the 4 steps",
        ),
    }
    for name, (args, expected) in cases.items():
        assert cli.main(args) == 2, name
        err = capsys.readouterr().err
        message = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(message) == 1 and expected in message[0], (name, err[-800:])
    assert store_snapshot(store) == before


def test_static_columns_are_one_constant_channel_per_series_and_must_not_change_within_one() -> None:
    from lstm_forecast.tasks.stages.generate import with_covariates

    values = pd.DataFrame({"size": [50.0] * 6})
    space = fit_covariate_space(values, 4, (), (), (), None, None, 2, allow_constant=True, static=("size",))
    features = space.features(pd.Series(np.arange(6.0)), values, None, 6)
    assert space.width == 1 and np.allclose(features[:, 0], np.arcsinh(50.0))
    config = ForecastConfig(input="panel.csv", series_id="a", scope="global", static_columns=("size",))
    raw = pd.DataFrame({"ds": [0.0, 1.0, 2.0], "y": [1.0, 2.0, 3.0], "size": [1.0, 1.0, 2.0]})
    series = raw[["ds", "y"]]
    with pytest.raises(InputError, match="static column 'size' changes within series 'a'"):
        with_covariates(series, raw, config, ("size",))
    kept = with_covariates(series, raw.assign(size=3.0), config, ("size",))
    assert kept["size"].tolist() == [3.0, 3.0, 3.0]


def test_a_panel_reads_each_series_future_values_by_id_and_predict_repeats_the_run(
    tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    rows, later = [], []
    for number in range(3):
        n = 120 + 10 * number
        price = rng.normal(size=n + 2)
        times = pd.date_range("2024-01-01", periods=n + 2, freq="D")
        y = 3 * price[:n] + number + 0.1 * rng.normal(size=n)
        rows.append(pd.DataFrame({"unique_id": f"s{number}", "ds": times[:n], "y": y, "price": price[:n]}))
        later.append(pd.DataFrame({"unique_id": f"s{number}", "ds": times[n:], "price": price[n:]}))
    pd.concat(rows).to_csv(tmp_path / "panel.csv", index=False)
    pd.concat(later).sample(frac=1.0, random_state=0).to_csv(tmp_path / "future.csv", index=False)  # any order
    store = str(tmp_path / "store")
    covariates = ["--future-columns", "price", "--future", str(tmp_path / "future.csv"), "--holidays", "US"]
    args = ["--preset", "smoke", "--horizon", "2", "--epochs", "2", "--artifacts-dir", store]
    assert cli.main(["run", "--input", str(tmp_path / "panel.csv"), *covariates, *args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["scope"] == "global" and not result["failed"]
    run_rows = pd.read_parquet(result["forecasts"]).sort_values(["unique_id", "ds"], ignore_index=True)
    assert run_rows["unique_id"].tolist() == ["s0", "s0", "s1", "s1", "s2", "s2"]
    # the same run again: answered from the store, with no stage's task run, the same model and keys
    assert cli.main(["run", "--input", str(tmp_path / "panel.csv"), *covariates, *args, "--json"]) == 0
    warm = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert warm["model"] == result["model"] and warm["series"] == {
        i: done | {"stages": dict.fromkeys(done["stages"], "cached")} for i, done in result["series"].items()
    }
    assert sorted(r.name.rsplit("-", 1)[0] for r in task_runs(warm["flow_run_id"])) == ["forecast-table", "register"]

    again = tmp_path / "again.csv"  # the stored data and future values: the run's table
    assert cli.main(["predict", "--horizon", "2", "--output", str(again), "--artifacts-dir", store]) == 0
    fresh = tmp_path / "fresh.csv"  # the same data read anew, its future values from --future
    new_data = ["--input", str(tmp_path / "panel.csv"), "--future", str(tmp_path / "future.csv")]
    assert cli.main(["predict", "--horizon", "2", *new_data, "--output", str(fresh), "--artifacts-dir", store]) == 0
    for path in (again, fresh):
        table = pd.read_csv(path).sort_values(["unique_id", "ds"], ignore_index=True)
        assert np.allclose(table["y_hat"], run_rows["y_hat"], atol=1e-6), path.name
