"""Statistical baselines (tasks/core/baselines.py; evaluate's ARIMA) without Prefect: layout, causality, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

import lstm_forecast.tasks.core.baselines as baselines
from lstm_forecast.tasks.core.baselines import statistical_forecasts
from lstm_forecast.tasks.stages.evaluate import arima_predictions

N, FIT_STOP, HORIZON = 120, 96, 4  # ten seasons of 12, the last 20 % held out


def seasonal_series(n: int = N, seed: int = 0) -> np.ndarray:
    """10 + sin(2 pi t / 12) plus small Gaussian noise (n,)."""
    t = np.arange(n)
    return 10 + np.sin(2 * np.pi * t / 12) + np.random.RandomState(seed).normal(scale=0.1, size=n)


Run = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, str]]


def run(horizon: int, y: np.ndarray | None = None) -> Run:
    """(y, rows, forecasts, descriptions) for every origin of the seasonal series, test origins from FIT_STOP."""
    y = seasonal_series() if y is None else y
    rows = np.arange(1, N - horizon + 1)
    forecasts, descriptions = statistical_forecasts(y, rows, horizon, 0, FIT_STOP, (12,), eval_from=FIT_STOP)
    return y, rows, forecasts, descriptions


@pytest.fixture(scope="module")
def one_step() -> Run:
    return run(1)


@pytest.fixture(scope="module")
def multi_step() -> Run:
    return run(HORIZON)


def test_horizon_one_gives_every_row_a_value(one_step) -> None:
    _, rows, forecasts, descriptions = one_step
    assert set(forecasts) == {"auto_ets", "auto_arima"}
    assert descriptions["auto_ets"].startswith("AutoETS(season 12): ")
    assert descriptions["auto_arima"].startswith("AutoARIMA(season 12): ARIMA(")
    for values in forecasts.values():
        assert values.shape == (len(rows), 1)
    assert np.isfinite(forecasts["auto_ets"]).all()
    # ARIMA's first d + D * 12 points have no one-step forecast (diffuse start); after those every row has one
    assert np.isfinite(forecasts["auto_arima"][rows >= 14]).all()
    assert np.isnan(forecasts["auto_arima"][0, 0])


def test_both_baselines_beat_naive_on_a_clean_seasonal_series(one_step) -> None:
    y, rows, forecasts, _ = one_step
    test = rows >= FIT_STOP
    truth = y[rows[test]]
    naive = np.sqrt(np.mean((y[rows[test] - 1] - truth) ** 2))
    for name, values in forecasts.items():
        rmse = np.sqrt(np.mean((values[test, 0] - truth) ** 2))
        assert rmse < 0.5 * naive, (name, rmse, naive)
        assert rmse < 0.2, (name, rmse)  # noise is 0.1


def test_multi_step_forecasts_only_test_origins_and_match_a_fresh_fit(multi_step) -> None:
    from statsforecast.models import AutoETS

    y, rows, forecasts, _ = multi_step
    for values in forecasts.values():
        assert values.shape == (len(rows), HORIZON)
        assert np.isnan(values[rows < FIT_STOP]).all()
        assert np.isfinite(values[rows >= FIT_STOP]).all()
        truth = y[rows[rows >= FIT_STOP, None] + np.arange(HORIZON)]
        assert np.sqrt(np.mean((values[rows >= FIT_STOP] - truth) ** 2)) < 0.2
    # at the first test origin the filtered model is exactly the fitted one: its forecast is statsforecast's own
    fresh = AutoETS(season_length=12).fit(y[:FIT_STOP]).predict(HORIZON)["mean"]
    np.testing.assert_allclose(forecasts["auto_ets"][rows == FIT_STOP][0], fresh, rtol=1e-10)


def test_one_step_values_are_the_first_step_of_the_multi_step_forecasts(one_step, multi_step) -> None:
    rows_1, forecasts_1 = one_step[1], one_step[2]
    rows_h, forecasts_h = multi_step[1], multi_step[2]
    test = rows_h[rows_h >= FIT_STOP]
    for name in ("auto_ets", "auto_arima"):
        first_step = forecasts_h[name][np.isin(rows_h, test), 0]
        np.testing.assert_allclose(forecasts_1[name][np.isin(rows_1, test), 0], first_step, rtol=1e-6)


def test_fast_multi_step_paths_equal_one_forward_per_origin(multi_step, monkeypatch) -> None:
    fast = multi_step[2]
    monkeypatch.setattr(baselines, "_agrees", lambda *args: False)  # refuse the fast paths: forward per origin
    slow = run(HORIZON)[2]
    for name in ("auto_ets", "auto_arima"):
        np.testing.assert_allclose(fast[name], slow[name], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fixture", ["one_step", "multi_step"])
def test_a_forecast_depends_only_on_the_past(fixture: str, request: pytest.FixtureRequest) -> None:
    y, rows, before, _ = request.getfixturevalue(fixture)
    cut = 105  # after the fit part: the parameters stay the same, only the filtered data change
    changed = y.copy()
    changed[cut:] += 5.0
    after = run(before["auto_ets"].shape[1], changed)[2]
    for name in ("auto_ets", "auto_arima"):
        np.testing.assert_array_equal(before[name][rows <= cut], after[name][rows <= cut])
        assert (np.abs(before[name][rows > cut] - after[name][rows > cut]) > 1e-6).all()  # later origins see it


def test_long_and_multiple_seasons_go_through_mstl() -> None:
    t = np.arange(400)
    noise = np.random.RandomState(3).normal(scale=0.2, size=400)
    y = 50 + 3 * np.sin(2 * np.pi * t / 8) + 2 * np.sin(2 * np.pi * t / 40) + noise
    rows = np.arange(300, 400)
    forecasts, descriptions = statistical_forecasts(y, rows, 1, 0, 300, (8, 40), eval_from=300)
    assert descriptions["auto_ets"].startswith("MSTL(8, 40) + AutoETS: ")
    assert descriptions["auto_arima"].startswith("MSTL(8, 40) + AutoARIMA: ARIMA(")
    naive = np.sqrt(np.mean((y[rows - 1] - y[rows]) ** 2))
    for values in forecasts.values():
        assert np.sqrt(np.mean((values[:, 0] - y[rows]) ** 2)) < 0.5 * naive


def test_a_too_short_series_drops_its_season() -> None:
    y = seasonal_series(n=20)
    rows = np.arange(1, 20)
    forecasts, descriptions = statistical_forecasts(y, rows, 1, 0, 16, (12,))  # 16 points: not 2 seasons
    assert descriptions["auto_ets"].startswith("AutoETS: ")
    assert descriptions["auto_arima"].startswith("AutoARIMA: ")
    for values in forecasts.values():
        assert values.shape == (19, 1)
        assert np.isfinite(values[rows >= 16]).all()


def test_a_constant_series_does_not_raise() -> None:
    y = np.full(60, 7.0)
    rows = np.arange(1, 58)
    forecasts, descriptions = statistical_forecasts(y, rows, 3, 0, 48, (12,), eval_from=48)
    assert set(descriptions) == {"auto_ets", "auto_arima"}
    assert forecasts, descriptions  # at least one baseline copes, and it forecasts the constant
    for values in forecasts.values():
        np.testing.assert_allclose(values[rows >= 48], 7.0, atol=1e-6)


@pytest.mark.parametrize("unit", [1e-6, 1e9])
def test_the_forecasts_do_not_depend_on_the_series_unit(unit: float) -> None:
    t = np.arange(N)
    y = (1 + 0.002 * t + 0.05 * np.sin(2 * np.pi * t / 12)) * np.exp(np.random.RandomState(0).normal(0, 0.01, N))
    rows = np.arange(1, N - HORIZON + 1)
    forecasts, descriptions = statistical_forecasts(y, rows, HORIZON, 0, FIT_STOP, (12,), FIT_STOP)
    scaled, scaled_descriptions = statistical_forecasts(y * unit, rows, HORIZON, 0, FIT_STOP, (12,), FIT_STOP)
    assert scaled_descriptions == descriptions  # the same models chosen (in 1e-6 units AutoARIMA chose no ARMA)
    for name, values in forecasts.items():
        np.testing.assert_allclose(scaled[name] / unit, values, rtol=1e-6)
    # statsmodels' ARIMA(2,1,2) lands on nearby optima at float rounding's touch; unscaled, 1e-6 units were 3.5 % off
    last = rows[-3:]
    plain = arima_predictions(y, last, 2, 0, FIT_STOP, (2, 1, 2))
    np.testing.assert_allclose(arima_predictions(y * unit, last, 2, 0, FIT_STOP, (2, 1, 2)) / unit, plain, rtol=0.02)


def test_a_failing_seasonal_fit_falls_back_and_a_failing_model_is_omitted(monkeypatch) -> None:
    real_fit = baselines._fit

    def flaky_fit(name, plan, *args):
        if name == "auto_arima" or plan.kind == "seasonal":
            raise ValueError("refused for the test")
        return real_fit(name, plan, *args)

    monkeypatch.setattr(baselines, "_fit", flaky_fit)
    y = seasonal_series()
    forecasts, descriptions = statistical_forecasts(y, np.arange(1, N), 1, 0, FIT_STOP, (12,))
    assert set(forecasts) == {"auto_ets"}
    assert descriptions["auto_ets"].startswith("AutoETS: ")
    assert "fallback" in descriptions["auto_ets"] and "refused for the test" in descriptions["auto_ets"]
    assert descriptions["auto_arima"].startswith("omitted: AutoARIMA(season 12) failed (ValueError")
    assert np.isfinite(forecasts["auto_ets"]).all()


def test_missing_values_omit_both_and_bad_arguments_raise() -> None:
    y = seasonal_series()
    y[50] = np.nan
    forecasts, descriptions = statistical_forecasts(y, np.arange(1, N), 1, 0, FIT_STOP, (12,))
    assert forecasts == {} and all(text.startswith("omitted:") for text in descriptions.values())
    with pytest.raises(ValueError):
        statistical_forecasts(seasonal_series(), np.arange(1, N), 0, 0, FIT_STOP, (12,))
    with pytest.raises(ValueError):
        statistical_forecasts(seasonal_series(), np.arange(1, N + 2), 1, 0, FIT_STOP, (12,))


def test_rows_before_the_fit_part_are_filtered_in_phase() -> None:
    y = seasonal_series(seed=4)
    rows = np.arange(1, N)
    fit_start = 37  # not a whole number of seasons: ETS's initial seasonal states must be shifted to y[0]
    forecasts, descriptions = statistical_forecasts(y, rows, 1, fit_start, FIT_STOP, (12,))
    assert descriptions["auto_ets"].startswith("AutoETS(season 12): ") and f"y[{fit_start}:" in descriptions["auto_ets"]
    before = (rows > 12) & (rows < fit_start)  # ARIMA has no forecast before 13 points (seasonal differencing)
    for name, values in forecasts.items():
        rmse = np.sqrt(np.mean((values[before, 0] - y[rows[before]]) ** 2))
        assert rmse < 0.25, (name, rmse)  # 0.11 here; 0.40 with unshifted seasonal states
