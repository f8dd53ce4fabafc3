"""The stages' pure functions on tiny arrays, without Prefect.

Each test named `test_fix_*` fails on the article's behaviour (described in its docstring).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.tasks.core.calendar import future_time_values, future_times
from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.errors import ConstantSeriesError, InputError
from lstm_forecast.tasks.core.space import MinMaxParams, ModelSpace, constant_space, fit_minmax
from lstm_forecast.tasks.core.windows import forecast_origins, split_bounds, window_inputs, window_targets
from lstm_forecast.tasks.stages.evaluate import (
    SeriesToEvaluate,
    combined_predictions,
    combined_widths,
    error_metrics,
    evaluate_predictions,
    naive_predictions,
)
from lstm_forecast.tasks.stages.generate import clean_series, synthetic_series
from lstm_forecast.tasks.stages.normalize import scale_series
from lstm_forecast.tasks.stages.plot import draw_figure
from lstm_forecast.tasks.stages.predict import SeriesToPredict, assemble_predictions, forecast_columns


def tiny_series(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"ds": np.arange(n) * 0.5, "y": np.arange(n, dtype="float64") ** 1.5})


def tiny_bounds() -> pd.DataFrame:
    return pd.DataFrame({"split": ["train", "validation", "test"], "start": [0, 12, 16], "stop": [12, 16, 20]})


def test_synthetic_series_is_the_articles_data_bit_for_bit() -> None:
    np.random.seed(0)
    timesteps = np.arange(0, 1000, 0.1)
    article = np.sin(timesteps) + np.random.normal(scale=0.5, size=len(timesteps))
    series = synthetic_series(10_000, 0.1, 1.0, 0.5, 0)
    assert list(series.columns) == ["ds", "y"]
    np.testing.assert_array_equal(series["y"].to_numpy(), article)
    np.testing.assert_allclose(series["ds"].to_numpy(), timesteps, rtol=0, atol=1e-9)


def test_split_bounds_of_the_article_series() -> None:
    bounds = split_bounds(10_000, 0.8, 0.1)
    assert bounds.to_dict("records") == [
        {"split": "train", "start": 0, "stop": 7200},
        {"split": "validation", "start": 7200, "stop": 8000},
        {"split": "test", "start": 8000, "stop": 10000},
    ]
    assert split_bounds(10_000, 0.8, 0.0)["stop"].tolist() == [8000, 8000, 10000]


def test_fix_scaler_is_fitted_on_the_training_part_only() -> None:
    """The article fits MinMaxScaler on the whole series: its max would be the test part's 100."""
    series = pd.DataFrame({"ds": np.arange(6.0), "y": [0.0, 2.0, 4.0, 1.0, 50.0, 100.0]})
    scaled, space = scale_series(series, fit_stop=4)
    assert (space.kind, space.scaler.data_min, space.scaler.data_max) == ("none", 0.0, 4.0)
    np.testing.assert_allclose(scaled["y_scaled"], [0.0, 0.5, 1.0, 0.25, 12.5, 25.0])
    np.testing.assert_allclose(space.scaler.unscale(scaled["y_scaled"].to_numpy()), series["y"])


def test_a_task_logs_the_cleaning_notes_of_a_few_series_then_says_it_logs_no_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from lstm_forecast.tasks.stages import generate

    generate._noted_series.pop("", None)  # outside a run: one count for the process
    logger = logging.getLogger("lstm_forecast.test_notes")
    with caplog.at_level(logging.WARNING, logger="lstm_forecast.test_notes"):
        for number in range(generate.NOTED_SERIES_PER_TASK + 3):
            generate.log_input_notes(logger, "panel.csv", f"s{number}", ["3 step(s) differ", "1 missing value(s)"])
        generate.log_input_notes(logger, "panel.csv", "clean", [])
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 * generate.NOTED_SERIES_PER_TASK + 1
    assert lines[0] == "input panel.csv, series 's0': 3 step(s) differ"
    assert lines[-1] == "input panel.csv: more series were cleaned alike; this task logs no more of them"


def test_constant_training_part_is_refused() -> None:
    with pytest.raises(ConstantSeriesError, match="constant"):
        fit_minmax(np.ones(10))


def test_a_constant_series_space_decodes_any_network_output_to_its_constant() -> None:
    assert constant_space(np.array([1.0, 2.0, 1.0])) is None
    space = constant_space(np.array([3.5, np.nan, 3.5, 3.5]))
    assert space is not None and space.kind == "level"
    z = space.encode(np.full(8, 3.5))
    inputs = space.inputs(z, np.array([8]), look_back=4)
    assert inputs.shape == (1, 4, 1) and not inputs.any()  # the network reads a window of zeros
    np.testing.assert_array_equal(space.decode(np.array([[0.7, -2.0]]), np.full(8, 3.5), np.array([8])), [[3.5, 3.5]])


def test_without_train_forecasts_only_a_series_with_a_validation_split_drops_its_train_origins() -> None:
    splits = np.array(["train"] * 5 + ["validation"] * 2 + ["test"] * 3, dtype=object)
    assert forecast_origins(splits, True).all()
    assert forecast_origins(splits, False).tolist() == [False] * 5 + [True] * 5
    # without a validation split its train errors calibrate its intervals: every origin is kept
    no_validation = np.array(["train"] * 5 + ["test"] * 3, dtype=object)
    assert forecast_origins(no_validation, False).all()


def test_fix_no_window_is_dropped_and_every_test_point_is_forecast() -> None:
    """The article's create_dataset makes len - look_back - 1 windows per split (8 train, 0 test here)."""
    series = tiny_series()
    targets = window_targets(series["ds"], tiny_bounds(), look_back=3)
    counts = targets["split"].value_counts().to_dict()
    assert counts == {"train": 9, "validation": 4, "test": 4}  # train rows 3..11: 12 - 3 windows
    assert targets["row"].tolist() == list(range(3, 20))  # every row that has 3 predecessors, once
    assert targets.loc[targets["split"] == "test", "row"].tolist() == [16, 17, 18, 19]
    np.testing.assert_array_equal(targets["ds"], series["ds"].to_numpy()[3:])


def test_fix_test_windows_use_the_preceding_values_as_context() -> None:
    """The article's test windows start inside the test chunk; here they reach back into training."""
    values = np.arange(20, dtype="float64")
    inputs = window_inputs(values, np.array([16, 19]), look_back=3)
    assert inputs.shape == (2, 3, 1) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[:, :, 0], [[13, 14, 15], [16, 17, 18]])
    forecast_input = window_inputs(values, np.array([20]), look_back=3)
    np.testing.assert_array_equal(forecast_input[0, :, 0], [17, 18, 19])


def test_series_too_short_for_look_back_is_refused() -> None:
    with pytest.raises(InputError, match="too few for look_back 13"):
        window_targets(tiny_series()["ds"], tiny_bounds(), look_back=13)


def perfect_predictions(series: pd.DataFrame, look_back: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    targets = window_targets(series["ds"], tiny_bounds(), look_back)
    y_hat = series["y"].to_numpy()[targets["row"]][:, None]
    return targets, assemble_predictions(series, targets, y_hat, np.array([0.5]), np.array([0.1]))


def test_fix_every_prediction_sits_on_its_own_timestamp() -> None:
    """The article pads both prediction lines with zeros(train_size): off by look_back, train drawn on test."""
    series = tiny_series()
    targets, predictions = perfect_predictions(series)
    fitted = predictions[predictions["split"] != "forecast"]
    np.testing.assert_array_equal(fitted["ds"], series["ds"].to_numpy()[3:])
    np.testing.assert_allclose(fitted["y_hat"], fitted["y"])  # a perfect model matches row for row
    assert fitted["split"].tolist() == targets["split"].tolist()
    last = predictions.iloc[-1]
    assert last["split"] == "forecast" and last["ds"] == pytest.approx(10.0) and np.isnan(last["y"])


def test_fix_plot_draws_predictions_at_their_timestamps() -> None:
    series = tiny_series()
    _, predictions = perfect_predictions(series)
    figure = draw_figure(series, predictions, {"loss": [0.3, 0.2], "val_loss": [0.4, 0.3]})
    overview = figure.axes[0]
    lines = {line.get_label(): line for line in overview.get_lines()}
    for split_name in ("train", "validation", "test"):
        part = predictions[predictions["split"] == split_name]
        np.testing.assert_array_equal(lines[f"{split_name} prediction"].get_xdata(), part["ds"])
        np.testing.assert_allclose(lines[f"{split_name} prediction"].get_ydata(), part["y_hat"])
    assert len(figure.axes) == 3
    assert [line.get_label() for line in figure.axes[2].get_lines()] == ["loss", "val_loss"]


def test_future_times_continue_numbers_and_dates() -> None:
    assert future_times(pd.Series([0.0, 0.5, 1.0]), 1).iloc[0] == pytest.approx(1.5)
    dates = pd.Series(pd.date_range("2024-01-01", periods=3, freq="D"))
    assert future_times(dates, 1).iloc[0] == pd.Timestamp("2024-01-04")
    month_ends = pd.Series(pd.date_range("2023-10-31", periods=3, freq="ME").astype("datetime64[s]"))
    zoned = pd.Series(pd.date_range("2024-03-29", periods=3, freq="B", tz="Europe/Paris"))
    for times, freq in [
        (pd.Series([0.0, np.nan, 1.0, 2.5]), None),
        (pd.Series([3, 5, 9], dtype="int32"), None),
        (dates, None),
        (dates, "D"),
        (month_ends, "ME"),  # the cached dates: month ends stay month ends, in the times' own unit
        (zoned, "B"),
    ]:
        expected = future_times(times, 4, freq).to_numpy()
        for given in (times, times.to_numpy()):  # a chunk passes its times as an array
            np.testing.assert_array_equal(future_time_values(given, 4, freq), expected)
            assert future_time_values(given, 4, freq).dtype == expected.dtype
    with pytest.raises(InputError):
        future_time_values(pd.Series([0.0, 1.0]), 2, freq="not-a-frequency")


def test_error_metrics_exact_values() -> None:
    metrics = error_metrics(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 1.0]), mase_scale=2.0)
    assert metrics["rmse"] == pytest.approx(np.sqrt(10 / 3))
    assert metrics["mae"] == pytest.approx(4 / 3)
    assert metrics["smape"] == pytest.approx(100 * (2 / 3 + 0 + 6 / 5) / 3)
    assert metrics["mase"] == pytest.approx(2 / 3)


def test_naive_baseline_and_evaluation_share_targets() -> None:
    series = tiny_series()
    np.testing.assert_array_equal(
        naive_predictions(series["y"].to_numpy(), np.array([3, 4]))[:, 0], series["y"][[2, 3]]
    )
    targets, predictions = perfect_predictions(series)
    y = series["y"].to_numpy()
    baselines = {"naive": naive_predictions(y, targets["row"].to_numpy())}
    metrics = evaluate_predictions(y, targets, predictions, baselines).query("step == 0")
    lstm_test = metrics.query("split == 'test' and model == 'lstm' and metric == 'rmse'")["value"].item()
    naive_test = metrics.query("split == 'test' and model == 'naive' and metric == 'mae'")["value"].item()
    coverage = metrics.query("split == 'test' and model == 'lstm' and metric == 'coverage'")["value"].item()
    assert coverage == 1.0
    assert lstm_test == pytest.approx(0.0, abs=1e-9)
    assert naive_test == pytest.approx(np.mean(np.abs(y[16:20] - y[15:19])))
    assert set(metrics["split"]) == {"train", "validation", "test"}


def test_combined_forecast_is_half_lstm_half_the_statistical_mean_and_missing_where_one_is() -> None:
    lstm = np.array([[2.0, 4.0], [6.0, 8.0]])
    statistical = {"auto_ets": np.array([[0.0, 2.0], [np.nan, 4.0]]), "auto_arima": np.array([[2.0, 2.0], [2.0, 0.0]])}
    combined = combined_predictions(lstm, statistical)
    np.testing.assert_array_equal(combined, [[1.5, 3.0], [np.nan, 5.0]])
    np.testing.assert_array_equal(combined_predictions(lstm, {"auto_ets": lstm + 2}), lstm + 1)
    assert combined_predictions(lstm, {}) is None


def test_the_combined_interval_is_calibrated_on_the_combination_s_own_test_errors() -> None:
    y = np.arange(30, dtype="float64")
    rows = np.arange(10, 30)
    splits = np.array(["train"] * 12 + ["validation"] * 3 + ["test"] * 5)
    errors = np.array([[0.0], [0.0], [0.0], [0.0], [0.0]] * 3 + [[1.0], [-2.0], [3.0], [-4.0], [np.nan]])
    combined = y[rows][:, None] + errors
    data = SeriesToEvaluate(y, rows, splits, {}, "level", np.zeros(1))
    config = ForecastConfig(interval_level=0.5)  # 4 scored test errors 1, 2, 3, 4: the 3rd smallest covers half
    np.testing.assert_array_equal(combined_widths(config, data, combined), [3.0])


# --- cleaning the user's file -------------------------------------------------


def test_clean_sorts_and_parses_dates() -> None:
    raw = pd.DataFrame({"when": ["2024-01-03", "2024-01-01", "2024-01-02"], "v": [3, 1, 2]})
    series, notes = clean_series(raw, "when", "v")
    assert series["ds"].dtype.kind == "M"
    assert series["y"].tolist() == [1.0, 2.0, 3.0]
    assert any("sorted" in note for note in notes)


def test_a_datetime_column_is_read_as_dates() -> None:
    """A Parquet file's timestamp column arrives as datetime64, which pd.to_numeric turns into integers."""
    when = pd.date_range("2014-01-01", periods=4, freq="30min")
    series, _ = clean_series(pd.DataFrame({"ds": when, "y": [1.0, 2.0, 3.0, 4.0]}), "ds", "y")
    assert series["ds"].tolist() == when.tolist()
    offset = pd.DataFrame({"ds": when.tz_localize("Australia/Melbourne"), "y": [1.0, 2.0, 3.0, 4.0]})
    assert (
        clean_series(offset, "ds", "y")[0]["ds"].tolist()
        == when.tz_localize("Australia/Melbourne").tz_convert(None).tolist()
    )


def test_times_with_different_offsets_become_utc() -> None:
    raw = pd.DataFrame({"ds": ["2024-01-01T01:00:00+01:00", "2024-01-01T01:00:00+00:00"], "y": [1.0, 2.0]})
    series, _ = clean_series(raw, "ds", "y")
    assert series["ds"].tolist() == [pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-01-01 01:00")]


def test_clean_nan_policies() -> None:
    raw = pd.DataFrame({"ds": [1, 2, 3, 4], "y": [1.0, np.nan, 3.0, 4.0]})
    filled, notes = clean_series(raw, "ds", "y", nan_policy="interpolate")
    assert filled["y"].tolist() == [1.0, 2.0, 3.0, 4.0] and "1 missing" in notes[0]
    dropped, _ = clean_series(raw, "ds", "y", nan_policy="drop")
    assert dropped["ds"].tolist() == [1.0, 3.0, 4.0]
    with pytest.raises(InputError, match="1 missing value"):
        clean_series(raw, "ds", "y", nan_policy="error")


def test_missing_values_before_the_first_value_or_after_the_last_are_dropped_not_made_up() -> None:
    raw = pd.DataFrame({"ds": [1, 2, 3, 4, 5, 6], "y": [np.nan, 1.0, np.nan, 3.0, np.nan, np.nan]})
    series, notes = clean_series(raw, "ds", "y", nan_policy="interpolate")
    assert series["ds"].tolist() == [2.0, 3.0, 4.0] and series["y"].tolist() == [1.0, 2.0, 3.0]
    assert notes == [
        "3 missing value(s) before its first value or after its last: rows dropped",
        "1 missing value(s) filled by linear interpolation",
    ]


def test_clean_duplicate_policies() -> None:
    raw = pd.DataFrame({"ds": [1, 2, 2, 3], "y": [1.0, 2.0, 4.0, 5.0]})
    with pytest.raises(InputError, match="1 repeated timestamp"):
        clean_series(raw, "ds", "y")
    assert clean_series(raw, "ds", "y", duplicate_policy="mean")[0]["y"].tolist() == [1.0, 3.0, 5.0]
    assert clean_series(raw, "ds", "y", duplicate_policy="last")[0]["y"].tolist() == [1.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (pd.DataFrame({"ds": [1, 2], "value": [1, 2]}), "column 'y' is not in the input"),
        (pd.DataFrame({"ds": [1, 2], "y": ["1.5", "abc"]}), "non-numeric"),
        (pd.DataFrame({"ds": ["2024-01-01", "not a date"], "y": [1, 2]}), "neither numbers nor dates"),
        (pd.DataFrame({"ds": [1, 2], "y": [1.0, np.inf]}), "infinite"),
    ],
)
def test_clean_refuses_bad_columns(raw: pd.DataFrame, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        clean_series(raw, "ds", "y")
    assert caught.value.fix  # every refusal says how to fix it


def test_a_bad_value_is_named_by_its_own_data_row_even_in_one_series_of_a_long_file() -> None:
    from lstm_forecast.tasks.stages.generate import long_series, parse_table

    numbers = pd.DataFrame({"ds": [str(i) for i in range(300)], "y": np.sin(np.arange(300.0))})
    numbers.loc[200, "ds"] = "2O0"  # a letter O typed for a zero in a numeric time column
    with pytest.raises(InputError, match="time column 'ds' .* the first in data row 201"):
        clean_series(numbers, "ds", "y")
    dates = pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=60).astype(str), "y": np.arange(60.0)})
    dates.loc[50, "ds"] = "2024-02-3O"
    with pytest.raises(InputError, match="data row 51"):
        clean_series(dates, "ds", "y")
    # series 'b' is every second row of the file: its 3rd value is the file's 6th data row
    text = "unique_id,ds,y\n" + "".join(f"{s},{i},{i}\n" for i in range(4) for s in "ab")
    table = parse_table(text.replace("b,2,2", "b,2,x").encode(), ".csv", "unique_id")
    rows = table.groupby("unique_id").indices
    with pytest.raises(InputError, match="value column 'y' .* the first in data row 6"):
        clean_series(long_series(table, rows, "unique_id", "b"), "ds", "y")


@pytest.mark.parametrize(
    "ids",
    [
        ["b", "a", "b", "c", "a", "a"],  # text, in order of first appearance
        [7, 3, 7, 7, 10, 3],  # numbers: their text
        ["x", None, "x", np.nan, "y", "y"],  # missing ids: the texts 'None' and 'nan'
        [1, "1", 2, "2", 1, 1.5],  # values that read as the same text: one series each
    ],
)
def test_a_long_file_s_rows_by_id_are_those_of_grouping_its_ids_as_text(ids: list) -> None:
    from lstm_forecast.tasks.stages.generate import rows_by_id

    column = pd.Series(ids, dtype=object)
    expected = column.groupby(column.astype(str), sort=False).indices
    found = rows_by_id(column)
    assert list(found) == list(expected)
    for text, positions in expected.items():
        np.testing.assert_array_equal(found[text], positions)


@pytest.mark.parametrize(
    "ids",
    [
        ["b", "a", "b", "c", "a", "a"],  # text: read as a dictionary
        [7, 3, 7, 7, 10, 3],  # numbers: as they are
        ["x", None, "x", "y"],  # a missing id: the whole column as pandas reads it
    ],
)
def test_a_parquet_file_reads_as_pandas_reads_it_its_ids_grouped_alike(ids: list) -> None:
    import io

    from lstm_forecast.tasks.stages.generate import parse_table, rows_by_id

    frame = pd.DataFrame({"unique_id": ids, "ds": pd.date_range("2024-01-01", periods=len(ids)), "y": 1.0})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    expected = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    table = parse_table(buffer.getvalue(), ".parquet", "unique_id")
    assert isinstance(table["unique_id"].dtype, pd.CategoricalDtype) == (ids[0] == "b")  # only text, none missing
    pd.testing.assert_frame_equal(table.astype({"unique_id": expected["unique_id"].dtype}), expected)
    found, grouped = rows_by_id(table["unique_id"]), rows_by_id(expected["unique_id"])
    assert list(found) == list(grouped)
    for text, positions in grouped.items():
        np.testing.assert_array_equal(found[text], positions)


def test_values_whose_squares_would_overflow_are_refused_naming_the_column_and_row() -> None:
    from lstm_forecast.tasks.stages.generate import MAX_MAGNITUDE

    n = 300
    raw = pd.DataFrame({"ds": np.arange(n), "y": np.sin(np.arange(n) / 4.0)})
    assert clean_series(raw.assign(y=raw["y"] * MAX_MAGNITUDE), "ds", "y")[0]["y"].abs().max() <= MAX_MAGNITUDE
    huge = raw.assign(y=raw["y"] * 1e300)
    with pytest.raises(
        InputError, match="value column 'y' holds 2.. value.s. beyond ±1e\\+150, the first in data row 2"
    ):
        clean_series(huge, "ds", "y")
    with pytest.raises(InputError, match="time column 'ds' .* the first in data row 300"):
        clean_series(raw.assign(ds=np.r_[np.arange(n - 1.0), 1e300]), "ds", "y")
    with pytest.raises(InputError, match="infinite .* data row 3") as caught:
        clean_series(raw.assign(y=np.r_[0.0, 1.0, -np.inf, raw["y"].to_numpy()[3:]]), "ds", "y")
    assert "rescale" in caught.value.fix


def test_no_stage_module_imports_another() -> None:
    import ast
    from pathlib import Path

    import lstm_forecast.tasks.stages as stages_package

    folder = Path(stages_package.__file__).parent
    modules = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # imports inside functions too
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not any(name.endswith(f"tasks.stages.{m}") for m in modules if m != path.stem), (path, name)


def test_the_forecast_interval_is_calibrated_on_every_held_out_error_and_each_origin_on_validation() -> None:
    # 'none' space with the identity scaler: the model's outputs are the forecasts themselves
    space = ModelSpace("none", MinMaxParams(0.0, 1.0))
    y = np.zeros(40)
    rows = np.arange(10, 39)  # one step ahead; 19 train, 5 validation and 5 test origins
    splits = np.array(["train"] * 19 + ["validation"] * 5 + ["test"] * 5, dtype=object)
    errors = np.concatenate([np.full(19, 5.0), np.full(5, 0.1), np.full(5, 1.0)])  # a calm validation split
    data = SeriesToPredict(pd.Series(np.arange(40.0)), y, rows, splits, space, space)
    config = ForecastConfig(interval_level=0.5)
    found = data.forecasts(errors[:, None], np.array([[2.0]]), config)
    columns, lengths = forecast_columns([data], [found], [config])
    half = columns["y_hi"] - columns["y_hat"]
    assert lengths == [len(rows) + 1] == [len(half)]
    np.testing.assert_allclose(half[:-1], 0.1)  # every origin, the test split's included: validation's errors
    np.testing.assert_allclose(half[-1], 1.0)  # the forecast: the 6th of validation's and test's 10 errors
    assert found.forecast_widths.tolist() == [1.0] and found.forecast.tolist() == [2.0]
    assert found.calibration == "validation and test"
