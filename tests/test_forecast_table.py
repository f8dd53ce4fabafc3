"""The forecast table: which model forecasts which series, the table's shape, its intervals and its files.
Pure functions, without Prefect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.flows.serve import merged_config
from lstm_forecast.tasks.core.config import ForecastConfig, build_config, with_fields
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.networks import SavedModel
from lstm_forecast.tasks.core.store import KEY_COLUMN, Store, export_table
from lstm_forecast.tasks.operations.ahead import (
    FORECAST_COLUMNS,
    POOLED,
    History,
    forecast_table,
    interval_widths,
    models_by_series,
    own_config,
    pooled_rows,
    pooled_widths_for,
    published_combined,
    series_label,
    series_space,
    spread_sample,
    table_from_predictions,
)
from lstm_forecast.tasks.operations.registry import register
from tests.test_defaults import hourly_like

GLOBAL_KEY, LOCAL_KEY, OTHER_KEY = "a" * 24, "b" * 24, "c" * 24


def registry_of(*entries: tuple[str, str]) -> pd.DataFrame:
    registry = None
    for key, series_id in entries:
        registry = register(registry, {"key": key, "series_id": series_id, "test_rmse": 1.0})
    return registry


def members(key: str) -> list[str]:
    return {GLOBAL_KEY: ["x", "y", "z"]}.get(key, [])


def test_champion_forecasts_every_series_each_by_its_own_champion_else_the_global_one() -> None:
    registry = registry_of((GLOBAL_KEY, "*"), (LOCAL_KEY, "y"))
    assert models_by_series(registry, "champion", [], members) == {"x": GLOBAL_KEY, "y": LOCAL_KEY, "z": GLOBAL_KEY}
    assert models_by_series(registry, "champion", ["z"], members) == {"z": GLOBAL_KEY}
    with pytest.raises(InputError, match="no champion for series 'w'"):
        models_by_series(registry, "champion", ["x", "w"], members)
    assert models_by_series(registry, "champion", ["x", "w"], members, skip_missing=True) == {"x": GLOBAL_KEY}
    # given the data of a series it was not trained on, the global champion forecasts it
    assert models_by_series(registry, "champion", ["w", "y"], members, any_named=True) == {
        "w": GLOBAL_KEY,
        "y": LOCAL_KEY,
    }


def test_a_model_key_forecasts_its_own_series_and_refuses_others() -> None:
    registry = registry_of((GLOBAL_KEY, "*"), (LOCAL_KEY, "y"))
    assert models_by_series(registry, GLOBAL_KEY[:8], [], members) == dict.fromkeys(["x", "y", "z"], GLOBAL_KEY)
    assert models_by_series(registry, LOCAL_KEY, [], members) == {"y": LOCAL_KEY}
    with pytest.raises(InputError, match="does not forecast series 'x'"):
        models_by_series(registry, LOCAL_KEY, ["x"], members)
    with pytest.raises(InputError, match="does not forecast series 'x'"):  # a model of its own: only its series
        models_by_series(registry, LOCAL_KEY, ["x"], members, any_named=True)
    assert models_by_series(registry, GLOBAL_KEY, ["w"], members, any_named=True) == {"w": GLOBAL_KEY}
    with pytest.raises(InputError, match="does not forecast series 'w'"):
        models_by_series(registry, GLOBAL_KEY, ["w"], members)
    with pytest.raises(InputError, match="matches 0 registered models"):
        models_by_series(registry, OTHER_KEY, [], members)


def test_a_single_series_store_has_one_series_named_after_its_input() -> None:
    assert models_by_series(registry_of((LOCAL_KEY, "")), "champion", [], members) == {"": LOCAL_KEY}
    assert series_label({"series_id": None, "input": "data/sales.csv"}) == "sales"
    assert series_label({"series_id": None, "input": None}) == "series"
    assert series_label({"series_id": "W7", "input": "m4.parquet"}) == "W7"


def test_the_table_has_nixtla_s_columns_and_intervals_only_where_calibrated() -> None:
    rows = pd.DataFrame(
        {
            "unique_id": ["x", "x", "x"],
            "ds": [10.0, 11.0, 12.0],
            "step": [1, 2, 3],
            "y_hat": [1.0, 2.0, 3.0],
            "model_key": GLOBAL_KEY,
        }
    )
    widths = pd.DataFrame({"unique_id": "x", "model_key": GLOBAL_KEY, "step": [1, 2], "half_width": [0.5, 0.25]})
    table = forecast_table(rows, widths, "2026-12-01T00:00:00+00:00")
    nixtla = ("unique_id", "ds", "y_hat", "y_lo", "y_hi", "model")
    assert tuple(table.columns) == FORECAST_COLUMNS == (*nixtla, "model_key", "made_at")
    assert table["y_lo"].tolist()[:2] == [0.5, 1.75] and np.isnan(table["y_hi"].iloc[2])  # past the model's horizon
    assert (table["model"] == "lstm").all()
    kept = interval_widths(table)  # what a run keeps is what a later predict reads back, with the model named
    assert kept.drop(columns="model").equals(widths) and (kept["model"] == "lstm").all()
    assert published_combined(kept) == set() and published_combined(None) == set()


def test_a_series_published_combined_gets_the_combination_s_interval_and_the_lstm_its_own() -> None:
    rows = pd.DataFrame(
        {
            "unique_id": ["x", "x", "y"],
            "ds": [10.0, 11.0, 10.0],
            "step": [1, 2, 1],
            "y_hat": [1.0, 2.0, 3.0],
            "model": ["combined", "combined", "lstm"],
            "model_key": GLOBAL_KEY,
        }
    )
    widths = pd.DataFrame(
        {
            "unique_id": ["x", "x", "x", "y"],
            "model_key": GLOBAL_KEY,
            "model": ["lstm", "combined", "combined", "lstm"],
            "step": [1, 1, 2, 1],
            "half_width": [9.0, 0.5, 0.25, 1.0],
        }
    )
    table = forecast_table(rows, widths, "now")
    assert table["model"].tolist() == ["combined", "combined", "lstm"]
    np.testing.assert_allclose(table["y_hi"] - table["y_hat"], [0.5, 0.25, 1.0])
    assert published_combined(widths) == {"x"}


def test_a_run_s_table_is_its_predict_outputs_forecast_rows() -> None:
    predictions = pd.DataFrame(
        {
            "ds": [1.0, 2.0, 3.0, 1.0, 2.0],
            "y": [0.0, np.nan, np.nan, 0.0, np.nan],
            "y_hat": [0.1, 0.2, 0.3, 0.4, 0.5],
            "y_lo": [0.0, 0.1, 0.2, 0.3, 0.4],
            "y_hi": [0.2, 0.3, 0.4, 0.5, 0.6],
            "split": ["test", "forecast", "forecast", "test", "forecast"],
            "step": [1, 1, 2, 1, 1],
            KEY_COLUMN: ["p1", "p1", "p1", "p2", "p2"],
        }
    )
    table = table_from_predictions(predictions, {"p1": ("x", GLOBAL_KEY), "p2": ("y", LOCAL_KEY)}, "now")
    assert table[["unique_id", "ds", "y_hat", "model_key"]].values.tolist() == [
        ["x", 2.0, 0.2, GLOBAL_KEY],
        ["x", 3.0, 0.3, GLOBAL_KEY],
        ["y", 2.0, 0.5, LOCAL_KEY],
    ]
    # --forecast-model combined: the series with a combined forecast carry it, with its own interval
    combined = {"p1": ([1.0, 2.0], [0.5, 0.75])}
    table = table_from_predictions(predictions, {"p1": ("x", GLOBAL_KEY), "p2": ("y", LOCAL_KEY)}, "now", combined)
    assert table["model"].tolist() == ["combined", "combined", "lstm"]
    np.testing.assert_allclose(table["y_hat"], [1.0, 2.0, 0.5])
    np.testing.assert_allclose(table["y_lo"], [0.5, 1.25, 0.4])
    np.testing.assert_allclose(table["y_hi"], [1.5, 2.75, 0.6])
    assert predictions["y_hat"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]  # the predict outputs are left as they were


def test_a_global_model_s_series_are_combined_with_statistical_models_of_their_own_seasons() -> None:
    config = ForecastConfig(horizon=24).model_dump()
    frame = pd.DataFrame({"ds": np.arange(1200.0), "y": hourly_like()})
    global_model = SavedModel("g", None, None, look_back=96, patch=8, horizon=24, config=config)
    assert global_model.forecast_config.seasons is None  # one network's config: the seasons are each series'
    assert own_config(global_model, History(frame, None)).seasons == (24, 168)  # as evaluate sized them
    local = with_fields(ForecastConfig(horizon=24), seasons=(24,)).model_dump()
    own = SavedModel("l", None, object(), look_back=96, patch=8, horizon=24, config=local)
    assert own_config(own, History(frame, None)).seasons == (24,)  # a model of one series: its own config


def test_output_is_parquet_or_csv_by_its_suffix_and_nothing_else(tmp_path: Path) -> None:
    table = pd.DataFrame({"unique_id": ["x"], "ds": [1.0], "y_hat": [2.0]})
    assert pd.read_csv(export_table(table, tmp_path / "f.csv")).equals(table)
    assert pd.read_parquet(export_table(table, tmp_path / "f.parquet")).equals(table)
    with pytest.raises(InputError, match="neither .parquet nor .csv"):
        export_table(table, tmp_path / "f.xlsx")
    with pytest.raises(InputError, match="does not exist"):
        export_table(table, tmp_path / "missing" / "f.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "f.parquet"]  # no temporary file left


def test_the_latest_table_is_replaced_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first, second = "1" * 24, "2" * 24
    store.write_forecast_table(first, pd.DataFrame({"y_hat": [1.0]}))
    store.write_forecast_table(second, pd.DataFrame({"y_hat": [2.0, 3.0]}))
    assert pd.read_parquet(store.publish_latest_forecasts(first))["y_hat"].tolist() == [1.0]
    assert pd.read_parquet(store.publish_latest_forecasts(second))["y_hat"].tolist() == [2.0, 3.0]
    kept = sorted(p.name for p in (store.root / "forecasts").iterdir())
    assert kept == [f"{first}.parquet", f"{second}.parquet", "latest.parquet"]


def test_a_served_run_changes_only_the_fields_its_parameter_gives() -> None:
    served = build_config("smoke", overrides={"input": "/data/x.csv", "epochs": 7}).model_dump(mode="json")
    merged = merged_config(served, ForecastConfig.model_validate({"units": 4}))
    assert (merged.units, merged.epochs, merged.input, merged.n_points) == (4, 7, "/data/x.csv", served["n_points"])
    assert merged_config(served, ForecastConfig()).model_dump(mode="json") == served  # no fields: the served config


def test_a_reader_never_sees_a_part_of_the_latest_table_while_it_is_replaced(tmp_path: Path) -> None:
    import threading

    store = Store(tmp_path / "store")
    small, large = "1" * 24, "2" * 24
    store.write_forecast_table(small, pd.DataFrame({"y_hat": [1.0]}))
    store.write_forecast_table(large, pd.DataFrame({"y_hat": np.arange(200_000, dtype="float64")}))
    store.publish_latest_forecasts(small)
    done = threading.Event()

    def publish() -> None:
        for round_ in range(40):
            store.publish_latest_forecasts(large if round_ % 2 == 0 else small)
        done.set()

    writer = threading.Thread(target=publish)
    writer.start()
    lengths = set()
    while not done.is_set():  # a second reader, as a downstream job polling the path
        lengths.add(len(pd.read_parquet(store.latest_forecasts_path)))
    writer.join()
    assert lengths <= {1, 200_000} and lengths  # every read is one whole table, never a part of one


def test_the_calibration_sample_reads_few_packs_spread_over_the_panel() -> None:
    packs = {f"k{n:04d}": Path(f"pack{n // 1000:02d}.parquet") for n in range(10_000)}  # ten packs of 1,000
    chosen = spread_sample(packs, 1000)
    assert len(chosen) == 1000 == len(set(chosen))
    assert sorted({packs[k].name for k in chosen}) == [f"pack{n:02d}.parquet" for n in (0, 2, 4, 6)]
    own_files = {f"k{n}": Path(f"k{n}.parquet") for n in range(30)}  # one file each: every key, up to `most`
    assert sorted(spread_sample(own_files, 1000)) == sorted(own_files)
    assert len(spread_sample(own_files, 10)) == 10
    few = {f"k{n}": Path("one.parquet") for n in range(5)}
    assert sorted(spread_sample(few, 1000)) == sorted(few)


def test_a_series_without_widths_of_its_own_gets_the_pooled_ones_in_its_own_units() -> None:
    own = pd.DataFrame({"unique_id": "x", "model_key": GLOBAL_KEY, "model": "lstm", "step": [1, 2], "half_width": 9.0})
    calibration = pd.concat([own, pooled_rows(GLOBAL_KEY, np.array([0.5, 1.0]))], ignore_index=True)
    assert (calibration.loc[calibration["model"] == POOLED, "unique_id"] == "").all()
    histories = {"x": pd.DataFrame({"y": [0.0, 1.0]}), "new": pd.DataFrame({"y": [0.0, 4.0, 0.0]})}
    widths = pooled_widths_for(calibration, histories)  # "new" moves 4 a step on average: widths 2 and 4
    assert widths["unique_id"].tolist() == ["new", "new"] and widths["model"].tolist() == ["lstm", "lstm"]
    assert widths["half_width"].tolist() == [2.0, 4.0] and widths["step"].tolist() == [1, 2]
    assert pooled_widths_for(own, histories).empty  # kept before pooled widths were: none


def test_a_series_too_short_to_be_scored_is_read_with_the_model_s_calendar_cycles_it_confirms() -> None:
    short = pd.DataFrame({"ds": np.arange(120.0), "y": hourly_like(120)})  # five days: no 48-step test split
    panel = build_config(overrides={"horizon": 48, "transform": "level"}).model_dump(mode="json")
    hourly = series_space(panel | {"calendar": [24, 168]}, short)  # 24 held twice and confirmed; 168 not held
    assert [len(profile) for profile in hourly.seasonal] == [24]
    assert series_space(panel | {"calendar": []}, short).seasonal == ()  # a panel without cycles: none
    noise = short.assign(y=100 + np.random.RandomState(3).normal(size=120))
    assert series_space(panel | {"calendar": [24, 168]}, noise).seasonal == ()  # its own rows do not confirm 24
