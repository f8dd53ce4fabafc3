"""Forecast quality pieces without Prefect: baselines, multi-step windows, intervals, differencing, models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.tasks.core import fitting
from lstm_forecast.tasks.core.baselines import fit_scale
from lstm_forecast.tasks.core.config import ForecastConfig, build_config, with_fields
from lstm_forecast.tasks.core.defaults import detect_season
from lstm_forecast.tasks.core.fitting import (
    build_model,
    fit_model,
    inference_model,
    training_arrays,
    training_dataset,
)
from lstm_forecast.tasks.core.intervals import conformal_widths, naive_scale, pooled_scaled_widths, since_first_change
from lstm_forecast.tasks.core.networks import load_model
from lstm_forecast.tasks.core.space import ModelSpace, fit_model_space
from lstm_forecast.tasks.core.windows import split_bounds, window_targets, window_targets_matrix
from lstm_forecast.tasks.stages.evaluate import arima_predictions, seasonal_naive_predictions
from lstm_forecast.tasks.stages.normalize import scale_series
from lstm_forecast.tasks.stages.predict import forecast_all


def test_multi_step_windows_keep_every_target_inside_its_split() -> None:
    ds = pd.Series(np.arange(20.0))
    bounds = pd.DataFrame({"split": ["train", "validation", "test"], "start": [0, 12, 16], "stop": [12, 16, 20]})
    targets = window_targets(ds, bounds, look_back=3, horizon=2)
    assert targets.loc[targets["split"] == "test", "row"].tolist() == [16, 17, 18]  # 18 forecasts rows 18, 19
    assert targets.loc[targets["split"] == "train", "row"].tolist() == list(range(3, 11))
    matrix = window_targets_matrix(np.arange(20.0), np.array([16, 18]), horizon=2)
    np.testing.assert_array_equal(matrix, [[16, 17], [18, 19]])


def test_differenced_model_space_round_trips() -> None:
    y = np.array([10.0, 12.0, 11.0, 15.0, 14.0, 20.0])
    space = fit_model_space(y, fit_stop=5, transform="diff")
    assert space.kind == "diff" and space.offset == 1
    z = space.encode(y)
    assert np.isnan(z[0])
    rows = np.array([2, 4])  # origins; two steps ahead each: rows 2-3 and 4-5
    z_true = np.stack([z[2:4], z[4:6]])
    np.testing.assert_allclose(space.decode(z_true, y, rows), [[11.0, 15.0], [14.0, 20.0]])


def test_auto_transform_scales_a_random_walk_by_window_level_not_a_sine() -> None:
    rng = np.random.RandomState(3)
    walk = np.cumsum(rng.normal(size=3000))
    sine = np.sin(np.arange(3000) / 10.0) + rng.normal(scale=0.3, size=3000)
    assert fit_model_space(walk, 2400, "auto").kind == "level"
    assert fit_model_space(sine, 2400, "auto").kind == "none"


def test_level_windows_are_relative_to_their_last_value_and_decode_back() -> None:
    y = np.array([10.0, 12.0, 11.0, 15.0, 14.0, 18.0, 17.0])
    space = replace(fit_model_space(y, 5, "level", log="no"), smoothing=1.0)
    z = space.encode(y)
    rows = np.array([3, 5])
    inputs = space.inputs(z, rows, look_back=3)
    np.testing.assert_allclose(inputs[:, -1, 0], 0.0)  # the level itself
    np.testing.assert_allclose(inputs[0, :, 0], space.scaler.scale(y[0:3]) - space.scaler.scale(y[2]), rtol=1e-6)
    targets = space.targets(z, rows, horizon=2)
    # Decoding the true targets gives the true values back: step h is the level plus one output, no cumsum.
    np.testing.assert_allclose(space.decode(targets, y, rows), [[15.0, 14.0], [18.0, 17.0]], rtol=1e-5)


def test_level_windows_of_a_noisy_level_are_relative_to_its_smoothed_level_and_decode_back() -> None:
    rng = np.random.RandomState(7)
    walk = np.cumsum(rng.normal(size=400))
    noisy = 50 + np.repeat(rng.normal(size=4), 100) + rng.normal(scale=3.0, size=400)  # level shifts under noise
    # A walk is forecast about as well by its last value; without `smooth_level` (a global model) it is the last value.
    assert fit_model_space(walk, 320, "level", log="no", smooth_level=True).smoothing > 0.8
    assert fit_model_space(noisy, 320, "level", log="no").smoothing == 1.0
    space = fit_model_space(noisy, 320, "level", log="no", smooth_level=True)
    assert 0.01 <= space.smoothing < 0.3
    level, weight = [noisy[0]], space.smoothing
    for value in noisy[1:]:
        level.append(weight * value + (1 - weight) * level[-1])
    np.testing.assert_allclose(space.reference(noisy), level)
    z = space.encode(noisy)
    rows = np.array([330, 390])
    inputs = space.inputs(z, rows, look_back=4)
    np.testing.assert_allclose(
        inputs[:, :, 0],
        space.scaler.scale(noisy[rows[:, None] + np.arange(-4, 0)])
        - space.scaler.scale(np.asarray(level)[rows - 1])[:, None],
        rtol=1e-5,
        atol=1e-6,
    )
    targets = space.targets(z, rows, horizon=3)
    np.testing.assert_allclose(space.decode(targets, noisy, rows), noisy[rows[:, None] + np.arange(3)], rtol=1e-5)
    restored = ModelSpace.from_dict(space.to_dict())
    assert restored == space


def test_seasonal_profile_and_log_are_fitted_on_the_training_part_and_added_back() -> None:
    t = np.arange(120)
    y = 100 * 1.02**t * (1 + 0.3 * np.sin(2 * np.pi * t / 12))  # multiplicative season, growth x10
    space = fit_model_space(y, 96, "auto", seasons=(12,), log="auto")
    assert space.log and space.seasons == (12,) and space.kind == "level"
    # On the log scale the season is exact: the adjusted series is a straight line plus MSTL's small error.
    adjusted = space.adjusted(y)
    assert np.std(np.diff(adjusted[:96])) < 0.02
    # Known targets round-trip through encode, targets and decode, past the training part too.
    rows = np.array([100, 110])
    decoded = space.decode(space.targets(space.encode(y), rows, 6), y, rows)
    np.testing.assert_allclose(decoded, y[rows[:, None] + np.arange(6)], rtol=1e-5)
    assert ModelSpace.from_dict(space.to_dict()) == space
    with pytest.raises(AssertionError):  # the seasons are really used: a space without them decodes differently
        np.testing.assert_allclose(replace(space, seasonal=()).season_at(rows), space.season_at(rows))


def test_seasonal_profile_is_refitted_once_a_cycle_past_the_training_part_from_earlier_rows_only() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(200)
    y = 100 + 0.1 * t + (5 + 0.05 * t) * np.sin(2 * np.pi * t / 4) + rng.normal(0, 1, len(t))  # a growing season
    space = fit_model_space(y, 160, "level", seasons=(4,))
    assert [start for start, _ in space.refits] == list(range(164, 200, 4))
    assert ModelSpace.from_dict(space.to_dict()) == space
    later = space.season_at(np.array([198]))[0] - space.season_at(np.array([198]), np.array([160]))[0]
    assert abs(later) > 0.1  # the profile in force at row 198 differs from the training part's
    # A forecast made at row r (targets r, r + 1, r + 2) does not change when rows r onwards do.
    for origin in (161, 164, 170, 197):
        changed = y.copy()
        changed[origin:] += 50.0
        other = fit_model_space(changed, 160, "level", seasons=(4,))
        z_hat = np.full((1, 3), 0.1)
        np.testing.assert_allclose(
            other.decode(z_hat, changed, np.array([origin])), space.decode(z_hat, y, np.array([origin]))
        )


def test_validation_rows_are_deseasonalised_by_profiles_fitted_on_earlier_rows_only() -> None:
    """The space is fitted on the rows before the test split (160), its profiles on the train split's (128): a
    profile fitted on the validation rows would forecast them with their own noise."""
    rng = np.random.default_rng(1)
    t = np.arange(200)
    y = 100 + 0.1 * t + 5 * np.sin(2 * np.pi * t / 4) + rng.normal(0, 1, len(t))
    space = fit_model_space(y, 160, "level", seasons=(4,), season_stop=128)
    assert [start for start, _ in space.refits] == [132, 136, 140, 144, 148, 152, 156, *range(160, 200, 4)]
    unstopped = fit_model_space(y, 160, "level", seasons=(4,))  # the test split's profiles are the same
    np.testing.assert_allclose(space.season_at(np.arange(160, 200)), unstopped.season_at(np.arange(160, 200)))
    noisier = y.copy()
    noisier[128:160] += rng.normal(0, 5, 32)  # the validation rows
    rows = np.arange(128, 160)
    other = fit_model_space(noisier, 160, "level", seasons=(4,), season_stop=128)
    for origin in (128, 131, 140, 156):  # a forecast's season uses no row from its origin on
        changed = y.copy()
        changed[origin:] = noisier[origin:]
        moved = fit_model_space(changed, 160, "level", seasons=(4,), season_stop=128)
        np.testing.assert_allclose(moved.season_at(rows, origin), space.season_at(rows, origin))
    # without the stop the validation rows' own values move the profile they are read with
    assert not np.allclose(
        fit_model_space(noisier, 160, "level", seasons=(4,)).season_at(rows),
        fit_model_space(y, 160, "level", seasons=(4,)).season_at(rows),
    )
    assert not np.allclose(other.season_at(rows[-4:]), space.season_at(rows[-4:]))  # refitted from earlier rows


def test_season_is_detected_from_the_training_part() -> None:
    t = np.arange(0, 800, 0.1)
    y = np.sin(t) + np.random.RandomState(0).normal(scale=0.5, size=len(t))
    assert detect_season(y) in (62, 63, 64)  # the period is 2 pi / 0.1 = 62.8 samples
    assert detect_season(np.random.RandomState(1).normal(size=5000)) == 1


def test_seasonal_naive_looks_one_season_back_from_the_origin() -> None:
    y = np.arange(30.0)
    forecasts = seasonal_naive_predictions(y, np.array([20]), horizon=5, season=3)
    np.testing.assert_array_equal(forecasts, [[17, 18, 19, 17, 18]])


def test_arima_one_step_equals_statsmodels_in_sample_predictions() -> None:
    from statsmodels.tsa.arima.model import ARIMA

    y = np.sin(np.arange(600) / 5.0) + np.random.RandomState(2).normal(scale=0.3, size=600)
    rows = np.arange(500, 600)
    ours = arima_predictions(y, rows, horizon=3, fit_start=100, fit_stop=500, order=(2, 0, 1))
    unit = fit_scale(y[100:500])  # the baseline is fitted in the series' own unit
    fitted = ARIMA(y[100:500] / unit, order=(2, 0, 1), trend="c").fit()
    reference = fitted.apply(y / unit)
    np.testing.assert_allclose(ours[:, 0], unit * reference.fittedvalues[rows], rtol=1e-6, atol=1e-9)
    # Three steps ahead from origin 550 equal the model's own out-of-sample forecast from there.
    from_550 = unit * fitted.apply(y[:550] / unit).forecast(3)
    np.testing.assert_allclose(ours[50], from_550, rtol=1e-6, atol=1e-9)


def test_conformal_widths_cover_the_calibration_errors() -> None:
    errors = np.arange(1, 101, dtype="float64")[:, None]
    widths = conformal_widths(np.zeros_like(errors), errors, level=0.9)
    assert widths.tolist() == [91.0]  # ceil(101 * 0.9) / 100 = 0.91 quantile, "higher"
    assert np.mean(errors[:, 0] <= widths[0]) >= 0.9


def test_conformal_widths_are_numpy_s_inverted_cdf_quantile_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    for count in [*range(1, 140), 1000]:
        for level in (0.05, 0.5, 0.8, 0.9, 0.95, 0.99):
            errors = rng.standard_normal((count, 3)) * rng.integers(1, 3, size=(count, 3))  # ties too
            errors[rng.integers(count), 2] = np.nan if count % 3 == 0 else errors[0, 2]  # a NaN: NaN, as numpy's
            quantile = min(1.0, np.ceil((count + 1) * level) / count)
            expected = np.quantile(np.abs(errors), quantile, axis=0, method="inverted_cdf")
            got = conformal_widths(errors, np.zeros_like(errors), level)
            assert np.array_equal(got, expected, equal_nan=True), (count, level)


def test_pooled_widths_are_a_quantile_of_errors_in_each_series_own_units() -> None:
    # a: step-1 actuals 0, 2, 4 (mean one-step change 2), errors 2 and 4 at step 1 and 2 (scaled 1, 2);
    # b: actuals 0, 10, 20 (change 10), errors 10 and 30 (scaled 1, 3); c: constant, no scale, left out
    calibration = pd.DataFrame(
        {
            "_key": ["a"] * 6 + ["b"] * 6 + ["c"] * 2,
            "step": [1, 2] * 7,
            "y": np.array([0, 2, 2, 4, 4, 6, 0, 10, 10, 20, 20, 30, 5, 5], dtype="float64"),
            "y_hat": np.array([2, 4, 2, 2, 4, 10, 10, 40, 10, 20, 20, 30, 0, 0], dtype="float64"),
        }
    )
    # scaled errors: step 1: a 1, 0, 0 and b 1, 0, 0; step 2: a 1, 1, 2 and b 3, 0, 0
    widths = pooled_scaled_widths(calibration, level=0.5)
    assert widths is not None and widths.tolist() == [0.0, 1.0]  # the 4th of 6 (ceil(7 * 0.5) / 6)
    assert pooled_scaled_widths(calibration, level=0.99).tolist() == [1.0, 3.0]
    assert pooled_scaled_widths(calibration.loc[calibration["_key"] == "c"], 0.9) is None
    assert naive_scale(np.array([1.0, 3.0, np.nan, 2.0])) == 2.0 and np.isnan(naive_scale(np.array([1.0])))
    # a late launch is measured from its first change; a series that never changes keeps every row
    np.testing.assert_array_equal(since_first_change(np.array([0.0, 0.0, 0.0, 4.0, 2.0])), [0.0, 4.0, 2.0])
    np.testing.assert_array_equal(since_first_change(np.array([5.0, 5.0])), [5.0, 5.0])


def train_small(series: pd.DataFrame, tmp_path: Path, **overrides: object) -> dict[str, float]:
    """Train on a series with a tiny config; test RMSE of the LSTM and the naive forecast."""
    config = build_config(
        "smoke",
        overrides={
            "epochs": 30,
            "units": 16,
            "look_back": 16,
            "patch": 4,
            "learning_rate": 0.01,
            "batch_size": 32,
            "patience": 5,
            "artifacts_dir": str(tmp_path),
            **overrides,
        },
    )
    bounds = split_bounds(len(series), config.train_fraction, config.validation_fraction)
    scaled, space = scale_series(
        series, int(bounds["start"].iloc[-1]), config.transform, tuple(config.seasons or ()), config.log
    )
    targets = window_targets(series["ds"], bounds, config.look_back, config.horizon, space.offset)
    z = scaled["y_scaled"].to_numpy()
    model, _ = fit_model(
        *training_arrays(z, targets, config, "train", space),
        *training_arrays(z, targets, config, "validation", space),
        config,
    )
    y = series["y"].to_numpy()
    y_hat, _ = forecast_all(model, space, y, targets, config.look_back, config.patch)
    test = (targets["split"] == "test").to_numpy()
    rows = targets["row"].to_numpy()[test]
    return {
        "lstm": float(np.sqrt(np.mean((y_hat[test, 0] - y[rows]) ** 2))),
        "naive": float(np.sqrt(np.mean((y[rows - 1] - y[rows]) ** 2))),
    }


def test_trending_series_needs_differencing_and_auto_chooses_it(tmp_path: Path) -> None:
    t = np.arange(1200)
    y = 0.05 * t + np.sin(t / 4.0) + np.random.RandomState(4).normal(scale=0.2, size=len(t))
    series = pd.DataFrame({"ds": t.astype("float64"), "y": y})
    levels = train_small(series, tmp_path, transform="none")
    auto = train_small(series, tmp_path, transform="auto")
    # On levels, MinMax fitted on the training part cannot reach the test period's higher values.
    assert levels["lstm"] > 2 * levels["naive"]
    assert auto["lstm"] < levels["lstm"] / 3
    assert auto["lstm"] < auto["naive"]


def test_stacked_gru_with_dropout_and_horizon_saves_and_loads(tmp_path: Path) -> None:
    config = build_config(
        "smoke", overrides={"cell": "gru", "layers": 2, "dropout": 0.2, "horizon": 3, "look_back": 12, "patch": 3}
    )
    model = build_model(config)
    assert [type(layer).__name__ for layer in model.layers] == ["GRU", "Dropout", "GRU", "Dropout", "Dense"]
    inputs = np.random.RandomState(0).random_sample((5, 4, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    assert loaded.output_shape == (None, 3)
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), rtol=1e-6)


def test_model_space_survives_its_dict() -> None:
    space = fit_model_space(np.array([1.0, 3.0, 2.0, 6.0]), 4, "diff")
    assert ModelSpace.from_dict(space.to_dict()) == space


def test_backtest_folds_test_consecutive_chunks_of_the_last_part() -> None:
    from lstm_forecast.tasks.operations.backtesting import backtest_folds, summarize_folds

    plans = backtest_folds(1000, 0.8, 4)
    assert [end for end, _ in plans] == [850, 900, 950, 1000]
    for end, fraction in plans:
        bounds = split_bounds(end, fraction, 0.1)
        assert bounds.loc[2, "start"] == end - 50 and bounds.loc[2, "stop"] == end
    summary = summarize_folds([{"lstm": {"rmse": 1.0}}, {"lstm": {"rmse": 3.0}}])
    row = summary.iloc[0]
    assert (row["model"], row["metric"], row["mean"], row["min"], row["max"], row["folds"]) == (
        "lstm",
        "rmse",
        2.0,
        1.0,
        3.0,
        2,
    )
    assert row["std"] == pytest.approx(np.sqrt(2.0))


def test_recursive_forecast_in_level_space_feeds_absolute_values_back() -> None:
    from lstm_forecast.tasks.core.networks import SavedModel
    from lstm_forecast.tasks.operations.ahead import History, recursive_forecasts

    y = 50 + np.cumsum(np.random.RandomState(5).normal(size=200))
    space = fit_model_space(y, 160, "level", log="no")

    class OneStepUp:
        """A stand-in network: "one unit above the window's level", one step at a time."""

        def __call__(self, windows: np.ndarray, training: bool = False) -> np.ndarray:
            return np.full((len(windows), 1), space.scaler.scale(1.0))

    saved = SavedModel("k" * 24, OneStepUp(), space, look_back=8, patch=1, horizon=1)
    histories = [History(pd.DataFrame({"ds": np.arange(len(y)), "y": y}), space)] * 2
    forecasts = recursive_forecasts(saved, histories, steps=4)
    # Each step is one unit above the previous forecast: the level moves with what was fed back.
    for forecast in forecasts:  # two series in one call, each fed its own outputs
        np.testing.assert_allclose(forecast, y[-1] + np.arange(1, 5), rtol=1e-6)
    # Relative to a smoothed level: each step one unit above the level smoothed over what was fed back.
    smoothed = replace(space, smoothing=0.5)
    level, expected = smoothed.reference(y)[-1], []
    for _ in range(4):
        expected.append(level + 1.0)
        level = 0.5 * expected[-1] + 0.5 * level
    saved = SavedModel("k" * 24, OneStepUp(), smoothed, look_back=8, patch=1, horizon=1)
    (forecast,) = recursive_forecasts(saved, [History(pd.DataFrame({"ds": np.arange(len(y)), "y": y}), smoothed)], 4)
    np.testing.assert_allclose(forecast, expected, rtol=1e-6)


def test_a_kept_compiled_network_trains_exactly_as_a_fresh_build() -> None:
    config = build_config(
        "smoke",
        overrides={
            "ensemble": 2,
            "dropout": 0.2,
            "horizon": 2,
            "look_back": 8,
            "patch": 2,
            "epochs": 2,
            "batch_size": 8,
        },
    )
    random = np.random.RandomState(1)
    x, y = random.random_sample((40, 4, 2)).astype("float32"), random.random_sample((40, 2)).astype("float32")

    def fit_and_train_further() -> tuple[np.ndarray, np.ndarray, list[float]]:
        with fitting.compiled_network(config) as network:
            history = fitting.train_network(network, x[:32], y[:32], x[32:], y[32:], config)
            model = network.detached()
            fitting.train_further(network, x, y, config, epochs=2)
            return model.predict(x, verbose=0), network.detached().predict(x, verbose=0), history["val_loss"]

    fitting._kept_networks.clear()
    fresh = fit_and_train_further()
    kept = fit_and_train_further()  # the same network object, restored to its as-built state
    assert len(fitting._kept_networks) == 1
    fitting._kept_networks.clear()
    for first, second in zip(fresh, kept, strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("layers", [1, 2])
def test_ensemble_members_in_one_loop_compute_what_separate_lstm_layers_compute(tmp_path: Path, layers: int) -> None:
    import keras

    config = build_config(
        "smoke", overrides={"ensemble": 3, "layers": layers, "units": 5, "horizon": 2, "look_back": 12, "patch": 3}
    )
    model = build_model(config)
    assert [type(layer).__name__ for layer in model.layers[1:]] == ["MemberLSTM"] * layers + ["MemberDense"]
    inputs = np.random.RandomState(0).random_sample((7, 4, 3)).astype("float32")
    outputs = model.predict(inputs, verbose=0)
    weights = model.get_weights()  # per layer: kernel, bias, recurrent kernel (members first); then the heads
    assert not np.allclose(weights[0][0], weights[0][1])  # each member from its own seed
    for member in range(3):
        separate = keras.Sequential(
            [keras.Input((4, 3))]
            + [keras.layers.LSTM(5, return_sequences=layer < layers - 1) for layer in range(layers)]
            + [keras.layers.Dense(2)]
        )
        own = [
            w[member]
            for layer in range(layers)
            for w in (weights[3 * layer], weights[3 * layer + 2], weights[3 * layer + 1])
        ]
        separate.set_weights(own + [weights[-2][member], weights[-1][member]])
        np.testing.assert_allclose(
            separate.predict(inputs, verbose=0), outputs[:, 2 * member : 2 * member + 2], atol=1e-6
        )
    forecaster = inference_model(model)
    np.testing.assert_allclose(forecaster.predict(inputs, verbose=0), outputs.reshape(7, 3, 2).mean(axis=1), atol=1e-6)
    path = tmp_path / "model.keras"
    forecaster.save(path)
    np.testing.assert_allclose(
        load_model(path).predict(inputs, verbose=0), forecaster.predict(inputs, verbose=0), atol=1e-6
    )


def test_a_single_network_runs_keras_lstm_arithmetic_in_the_fused_kernel(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    config = build_config("smoke", overrides={"layers": 2, "units": 6, "horizon": 2, "look_back": 12, "patch": 3})
    model = build_model(config)
    lstm = "LSTM" if tf.config.list_physical_devices("GPU") else "FusedLSTM"  # cuDNN's on a GPU
    assert [type(layer).__name__ for layer in model.layers] == [lstm, lstm, "Dense"]
    inputs = tf.constant(np.random.RandomState(0).normal(size=(7, 4, 3)).astype("float32"))
    reference = keras.Sequential(
        [keras.Input((4, 3)), keras.layers.LSTM(6, return_sequences=True), keras.layers.LSTM(6), keras.layers.Dense(2)]
    )
    reference.set_weights(model.get_weights())  # the same weights, in the same layout
    gradients = []
    for network in (model, reference):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(network(inputs) ** 2)
        gradients.append(tape.gradient(loss, [inputs, *network.trainable_weights]))
    np.testing.assert_allclose(model.predict(inputs, verbose=0), reference.predict(inputs, verbose=0), atol=1e-6)
    for fused, loop in zip(*gradients, strict=True):
        np.testing.assert_allclose(fused.numpy(), loop.numpy(), atol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_allclose(load_model(path).predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "series_rows", "combine"),
    [
        ({"ensemble": 1}, 0, "mean"),  # a single network (the fused kernel on CPU)
        ({"ensemble": 1, "layers": 2}, 0, "mean"),  # stacked, the first returning sequences
        ({"ensemble": 3, "layers": 2, "dropout": 0.1}, 0, "median"),  # members side by side (MemberLSTM)
        ({"ensemble": 3, "scope": "global", "series_embedding": 2}, 5, "mean"),  # members on cropped look-backs
        ({"ensemble": 1, "cell": "gru", "layers": 2}, 0, "mean"),  # Keras' GRU, stacked
        ({"ensemble": 2, "cell": "gru"}, 0, "median"),  # GRU members, each its own stack
    ],
)
def test_a_saved_network_applied_by_numpy_gives_what_keras_gives(
    tmp_path: Path, overrides: dict[str, object], series_rows: int, combine: str
) -> None:
    from lstm_forecast.tasks.core.inference import NumpyNetwork, network_arrays, save_network_arrays
    from lstm_forecast.tasks.core.networks import forward

    config = build_config("smoke", overrides={"look_back": 32, "patch": 4, "horizon": 3, **overrides})
    model = inference_model(build_model(config, series_rows), combine)
    random = np.random.default_rng(0)  # weights away from their initial values, so every bias and gate counts
    model.set_weights([w + random.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    steps, channels = model.inputs[0].shape[1:]
    inputs = random.normal(size=(1500, steps, channels)).astype("float32")
    if series_rows:
        inputs[..., -1] = random.integers(0, series_rows, (1500, 1))  # each window's embedding row
    arrays = network_arrays(model)
    assert arrays is not None
    save_network_arrays(tmp_path / "model.npz", arrays)
    network = NumpyNetwork.load(tmp_path / "model.npz")
    expected = forward(model, inputs)
    np.testing.assert_allclose(network(inputs), expected, atol=2e-6 * np.abs(expected).max())
    assert network(inputs[:0]).shape == (0, expected.shape[1])


def test_a_network_numpy_cannot_apply_gets_no_arrays() -> None:
    import keras

    from lstm_forecast.tasks.core.inference import network_arrays

    other = keras.Sequential([keras.Input((4, 2)), keras.layers.LSTM(3, activation="relu"), keras.layers.Dense(2)])
    assert network_arrays(other) is None  # an activation the numpy LSTM does not implement: Keras applies it


def test_a_season_with_exactly_two_cycles_is_left_out_not_a_crash() -> None:
    from lstm_forecast.tasks.core.space import seasonal_profiles

    two_cycles = np.sin(np.arange(24) * np.pi / 6) + np.arange(24) * 0.1
    assert seasonal_profiles(two_cycles, (12,)) == ()  # MSTL drops a period of half the rows
    assert len(seasonal_profiles(np.append(two_cycles, 0.5), (12,))[0]) == 12


@pytest.mark.parametrize(
    ("points", "season"), [(200, 52), (151, 52), (624, 52), (105, 52), (48, 12), (30, 4), (9, 4), (84, 7), (301, 24)]
)
def test_a_seasonal_profile_from_the_cached_matrix_is_statsmodels_mstl_profile(points: int, season: int) -> None:
    """The matrix path (`stl.profile_matrix`) against statsmodels' MSTL with the same jumps, including a part that
    starts after the series' first row (301 points, 12 cycles of 24 kept) and jumps that leave a remainder."""
    from statsmodels.tsa.seasonal import MSTL

    from lstm_forecast.tasks.core import space as space_module
    from lstm_forecast.tasks.core.stl import profile_matrix, stl_windows

    rng = np.random.default_rng(points)
    y = rng.normal(size=points).cumsum() + 3 * np.sin(np.arange(points) * 2 * np.pi / season)
    start = max(0, points - space_module.SEASONAL_FIT_CYCLES * season)
    jumps = {name: value for name, value in stl_windows(season).items() if name.endswith("_jump")}
    component = np.asarray(MSTL(y[start:], periods=(season,), stl_kwargs=jumps).fit().seasonal)
    cycles = min(space_module.PROFILE_CYCLES, (points - start) // season)
    rows = np.arange(points - cycles * season, points)
    expected = np.zeros(season)
    np.add.at(expected, rows % season, component[rows - start] / cycles)
    expected -= expected.mean()

    profile_matrix.cache_clear()
    profile = np.array(space_module.seasonal_profiles(y, (season,))[0])
    assert profile_matrix.cache_info().currsize == 1  # the matrix path ran, not MSTL
    np.testing.assert_allclose(profile, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_the_training_batches_are_the_windows_shuffled_by_the_seed_and_a_cap_spreads_them_over_the_split() -> None:
    import tensorflow as tf

    x = np.arange(300, dtype="float32").reshape(100, 3, 1)
    y = np.arange(100, dtype="float32").reshape(100, 1)
    # the windows' numbers are shuffled and gathered: the same batches as shuffling the windows themselves
    windows = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(100, seed=7, reshuffle_each_iteration=True).batch(16)
    for (inputs, targets), (expected_inputs, expected_targets) in zip(
        training_dataset(x, y, 16, seed=7), windows, strict=True
    ):
        np.testing.assert_array_equal(inputs.numpy(), expected_inputs.numpy())
        np.testing.assert_array_equal(targets.numpy(), expected_targets.numpy())
    unshuffled = np.concatenate([targets.numpy() for _, targets in training_dataset(x, y, 16, seed=None)])
    np.testing.assert_array_equal(unshuffled, y)

    z = np.sin(np.arange(200) / 3.0)
    space = fit_model_space(z, fit_stop=160, transform="none")
    targets = pd.DataFrame({"row": np.arange(20, 150), "split": ["train"] * 130})
    config = with_fields(ForecastConfig(), look_back=8, patch=1, horizon=2)
    every, _ = training_arrays(space.encode(z), targets, config, "train", space)
    spread, _ = training_arrays(space.encode(z), targets, config, "train", space, cap=10)
    np.testing.assert_array_equal(spread, every[[0, 14, 29, 43, 57, 72, 86, 100, 115, 129]])


@pytest.mark.parametrize("embedded", [False, True])
def test_predict_cuts_many_series_windows_at_once_in_blocks_as_each_series_own(
    monkeypatch: pytest.MonkeyPatch, embedded: bool
) -> None:
    from lstm_forecast.tasks.core import windows
    from lstm_forecast.tasks.core.embedding import with_series_channel
    from lstm_forecast.tasks.core.networks import SavedModel
    from lstm_forecast.tasks.stages.predict import SeriesToPredict, model_outputs

    class Linear:
        """A stand-in network, linear in every input value: equal outputs mean equal windows."""

        def __init__(self, seed: int) -> None:
            self.weights = np.random.default_rng(seed).normal(size=(2 * (4 * 3 + int(embedded)), 3))  # 2 steps

        def __call__(self, inputs: np.ndarray, training: bool = False) -> np.ndarray:
            return np.asarray(inputs, dtype="float64").reshape(len(inputs), -1) @ self.weights

    steps = np.arange(150)
    ys = [10 + np.sin(steps / 4.0) + steps / 50, 3 + np.cos(steps[:97] / 3.0) ** 2, 50 + np.sin(steps[:120] / 6.0)]
    spaces = [
        fit_model_space(ys[0], fit_stop=120, transform="level", seasons=(8,), smooth_level=True),
        fit_model_space(ys[1], fit_stop=80, transform="diff", log="yes"),
        fit_model_space(ys[2], fit_stop=96, transform="none"),
    ]
    series = []
    for number, (y, space) in enumerate(zip(ys, spaces, strict=True)):
        rows = np.arange(3 + number, len(y) - 1)  # the first windows are padded on the left
        features = np.stack([np.sin(np.arange(len(y)) + number), np.arange(len(y)) / 100.0], axis=1)
        refitted = fit_model_space(y, fit_stop=len(y), transform=space.kind, log="yes" if space.log else "no")
        series.append(
            SeriesToPredict(
                pd.Series(np.arange(len(y))), y, rows, np.array(["test"] * len(rows)), space, refitted, features
            )
        )
    ids = ["a", "b", "unseen"]
    embedding = {"a": 4, "b": 7} if embedded else {}
    saved = SavedModel("model", Linear(0), None, 8, 4, 1, series_rows=embedding)
    forecaster = SavedModel("model", Linear(1), None, 8, 4, 1, series_rows=embedding)
    monkeypatch.setattr(windows, "WINDOW_BLOCK", 50)  # several blocks, one of them across two series
    z_hat, z_next = model_outputs(saved, forecaster, series, ids, look_back=8, patch=4)
    assert z_hat.shape == (sum(len(s.rows) for s in series), 3) and z_next.shape == (3, 3)
    first = 0
    for number, (data, series_id) in enumerate(zip(series, ids, strict=True)):
        own = data.space.inputs(data.space.encode(data.y), data.rows, 8, 4, data.features)
        ahead = data.forecaster_space
        after = ahead.inputs(ahead.encode(data.y), np.array([len(data.y)]), 8, 4, data.features)
        if embedded:
            own, after = (with_series_channel(x, embedding.get(series_id, 0)) for x in (own, after))
        np.testing.assert_allclose(z_hat[first : first + len(data.rows)], saved.model(own), rtol=1e-6)
        np.testing.assert_allclose(z_next[number], forecaster.model(after)[0], rtol=1e-6)
        first += len(data.rows)


def test_a_module_left_out_cannot_be_imported_inside_and_imports_as_usual_after() -> None:
    """How Keras is imported without its optional scikit-learn wrappers and pyplot galleries (`import_keras`)."""
    import importlib
    import sys

    from lstm_forecast.tasks.core.networks import modules_left_out

    sys.modules.pop("wave", None)  # a standard module nothing here needs: not imported at the start
    with modules_left_out(("wave", "json")):
        with pytest.raises(ImportError):
            importlib.import_module("wave")
        assert importlib.import_module("json").dumps([1]) == "[1]"  # imported already: left as it is
    assert importlib.import_module("wave").open  # importable again


def test_a_fixed_transform_is_the_model_space_kind_window_and_evaluate_read_without_the_space() -> None:
    from lstm_forecast.tasks.core.space import fixed_kind

    y = 10 + np.sin(np.arange(100) / 3.0) + np.arange(100) / 20
    for transform in ("none", "diff", "level"):
        for seasons, log in (((), "no"), ((6,), "yes")):
            assert fit_model_space(y, 80, transform, seasons, log).kind == fixed_kind(transform) == transform
    assert fixed_kind("auto") is None  # normalize chooses: its stored space says which
