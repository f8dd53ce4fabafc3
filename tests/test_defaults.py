"""Defaults sized from the data: pure functions, no Prefect."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.tasks.core.config import ForecastConfig, build_config, with_fields
from lstm_forecast.tasks.core.defaults import adapt_config, confirmed_seasons, cycle_seasons
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.stages.generate import synthetic_series


def monthly(n: int, seed: int = 0) -> pd.DataFrame:
    """A trending multiplicative monthly series (month starts)."""
    t = np.arange(n)
    noise = np.random.RandomState(seed).normal(scale=0.02, size=n)
    y = 100 * 1.01**t * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) * (1 + noise)
    return pd.DataFrame({"ds": pd.date_range("2000-01-01", periods=n, freq="MS"), "y": y})


def test_the_built_in_series_keeps_its_former_settings() -> None:
    series = synthetic_series(10_000, 0.1, 1.0, 0.5, 0)
    config = adapt_config(build_config("default"), series["ds"], series["y"].to_numpy())
    assert (config.look_back, config.patch, config.batch_size, config.epochs) == (256, 8, 256, 60)
    assert (config.ensemble, config.patience, config.season_length) == (1, 5, 63)
    assert config.freq is None and config.seasons == ()


def test_a_short_monthly_series_gets_its_calendar_season_and_a_window_that_fits() -> None:
    series = monthly(144)
    config = adapt_config(build_config("default"), series["ds"], series["y"].to_numpy())
    assert config.freq == "MS" and config.seasons == (12,) and config.season_length == 12
    assert config.look_back == 24 and config.patch == 1
    assert config.batch_size == 16 and config.ensemble == 5
    assert config.epochs > 60  # few windows: more epochs for about the same number of optimizer steps


def test_a_window_reads_at_most_a_quarter_of_the_rows_before_validation() -> None:
    series = monthly(72)  # 57 training rows, 52 before the validation tail
    config = adapt_config(build_config("default"), series["ds"], series["y"].to_numpy())
    assert config.seasons == (12,) and config.look_back == 13  # two seasons (24) would leave 28 windows


def momentum_walk(n: int, seed: int = 0) -> np.ndarray:
    """A random walk whose steps are strongly autocorrelated (AR(1) of 0.8): no cycle, as WWWusage."""
    rng = np.random.RandomState(seed)
    steps = np.zeros(n)
    for i in range(1, n):
        steps[i] = 0.8 * steps[i - 1] + rng.normal()
    return 100 + np.cumsum(steps)


def test_a_series_without_a_cycle_gets_a_short_window_sized_by_its_rows() -> None:
    for n, look_back in ((100, 4), (203, 8), (400, 16), (2000, 32)):  # 16 windows per value, from 4 to 32
        y = momentum_walk(n)
        config = adapt_config(build_config("default"), pd.Series(np.arange(float(n))), y)
        assert (config.seasons, config.season_length) == ((), 1)
        assert config.look_back == look_back
    # Forecasting 13 steps, a window holds at least 13 values (a quarter of the rows before validation allows it).
    short = momentum_walk(100)
    ahead = adapt_config(build_config("default", overrides={"horizon": 13}), pd.Series(np.arange(100.0)), short)
    assert ahead.look_back == 13


def test_the_calendar_cycles_are_the_seasons_for_a_multi_step_model_and_none_for_one_step() -> None:
    series = monthly(144)
    one_step = adapt_config(build_config("default"), series["ds"], series["y"].to_numpy())
    assert one_step.calendar == ()
    ahead = adapt_config(build_config("default", overrides={"horizon": 6}), series["ds"], series["y"].to_numpy())
    assert ahead.seasons == (12,) and ahead.calendar == (12,)
    chosen = adapt_config(build_config("default", overrides={"calendar": (12,)}), series["ds"], series["y"].to_numpy())
    assert chosen.calendar == (12,)  # a user's cycles are kept, one step ahead too


def test_fields_a_user_sets_are_kept() -> None:
    series = monthly(144)
    config = adapt_config(
        build_config("default", overrides={"look_back": 12, "seasons": (), "epochs": 7}),
        series["ds"],
        series["y"].to_numpy(),
    )
    assert (config.look_back, config.seasons, config.epochs) == (12, (), 7)
    assert config.patch == 1 and config.season_length == 12  # the seasonal naive still uses the calendar's


def test_a_calendar_season_without_evidence_is_dropped() -> None:
    noise = np.random.RandomState(1).normal(size=400)
    assert confirmed_seasons(noise, (12,)) == ()
    assert confirmed_seasons(monthly(144)["y"].to_numpy()[:115], (12,)) == (12,)
    assert confirmed_seasons(monthly(20)["y"].to_numpy(), (12,)) == ()  # fewer than two cycles


def test_validation_grows_to_hold_a_horizon_and_a_too_short_series_names_the_minimum() -> None:
    series = monthly(60)
    config = adapt_config(build_config("default", overrides={"horizon": 6}), series["ds"], series["y"].to_numpy())
    assert int(48 * config.validation_fraction) >= 8
    six_ahead = build_config("default", overrides={"horizon": 6})
    with pytest.raises(InputError, match="at least 26 points"):
        tiny = monthly(20)
        adapt_config(six_ahead, tiny["ds"], tiny["y"].to_numpy())
    least = monthly(26)
    assert adapt_config(six_ahead, least["ds"], least["y"].to_numpy()).look_back >= 1
    # 50 points, 13 ahead: the 20 % test split (10 points) cannot hold a horizon; the fix names a train
    # fraction with which they fit (not a larger one, which would shrink the test split further) ...
    fifty, thirteen_ahead = monthly(50), build_config("default", overrides={"horizon": 13})
    with pytest.raises(InputError, match=r"at least 61 points") as refused:
        adapt_config(thirteen_ahead, fifty["ds"], fifty["y"].to_numpy())
    assert "--train-fraction 0.75, with which they fit" in refused.value.fix
    fitted = adapt_config(with_fields(thirteen_ahead, train_fraction=0.75), fifty["ds"], fifty["y"].to_numpy())
    validation_start = int(50 * 0.75) - int(int(50 * 0.75) * fitted.validation_fraction)
    assert validation_start >= fitted.look_back + 13  # a train target before validation
    # ... and none when no fraction leaves a horizon to test, one to validate and one to train on
    forty = monthly(40)
    with pytest.raises(InputError) as refused:
        adapt_config(thirteen_ahead, forty["ds"], forty["y"].to_numpy())
    assert refused.value.fix == "pass a longer series or a smaller --horizon"


def test_window_cap_takes_the_same_number_from_every_long_series_within_the_budget() -> None:
    from lstm_forecast.tasks.core.defaults import window_cap

    assert window_cap([10, 20, 30], budget=100) == 30  # all fit
    cap = window_cap([10, 500, 1000], budget=300)
    assert cap == 145 and 10 + 2 * cap <= 300 < 10 + 2 * (cap + 1)


def test_a_network_of_its_own_trains_on_a_bounded_number_of_bytes_of_windows() -> None:
    from lstm_forecast.tasks.core.defaults import LOCAL_WINDOW_BYTES, local_window_cap

    assert local_window_cap(576, 5) == 46_603  # five-minute values: a look-back of 576, four calendar channels
    assert local_window_cap(576, 5) * 576 * 5 * 4 <= LOCAL_WINDOW_BYTES < (local_window_cap(576, 5) + 1) * 576 * 20
    assert local_window_cap(256, 1) > 500_000  # the built-in sine's 7,000 windows are far below it
    assert local_window_cap(10**9, 1) == 1


def test_global_settings_see_four_horizons_in_a_dozen_lstm_steps_and_share_one_network() -> None:
    from lstm_forecast.tasks.core.defaults import global_settings

    base = with_fields(ForecastConfig(), horizon=13)
    sized = [with_fields(base, look_back=32, season_length=1, seasons=())] * 3
    shared = global_settings(base, sized, [400, 800, 1200])
    assert shared["transform"] == "level" and shared["ensemble"] == 1
    assert shared["look_back"] == 52 and shared["patch"] == 4  # max(32, 4 x 13), 13 steps of 4
    three = global_settings(with_fields(base, ensemble=3), sized, [400, 800, 1200])
    assert three["look_back"] == 104 and three["patch"] == 4  # members read 52, 104 and 24


def test_a_global_model_on_a_full_window_budget_trains_for_a_bounded_number_of_optimizer_steps() -> None:
    from lstm_forecast.tasks.core.defaults import (
        GLOBAL_MAX_BATCH,
        GLOBAL_OPTIMIZER_STEPS,
        GLOBAL_WINDOW_BUDGET,
        global_settings,
    )

    base = with_fields(ForecastConfig(), horizon=13)
    many = [with_fields(base, look_back=32, season_length=1, seasons=())] * 2000
    shared = global_settings(base, many, [400] * 2000)  # 2,000 x 300 windows: the budget binds
    steps = math.ceil(GLOBAL_WINDOW_BUDGET / shared["batch_size"])
    assert shared["batch_size"] == GLOBAL_MAX_BATCH == 128  # one series' rule would take 256 here
    assert shared["epochs"] == math.ceil(GLOBAL_OPTIMIZER_STEPS / steps) < 60
    mid = global_settings(base, many[:40], [400] * 40)  # 12,000 windows: 60 epochs of 256 stay under the budget
    assert (mid["batch_size"], mid["epochs"]) == (256, 60)
    own = global_settings(with_fields(base, batch_size=512), many, [400] * 2000)
    own_steps = math.ceil(GLOBAL_WINDOW_BUDGET / 512)  # a user's batch size stays theirs
    assert own["batch_size"] == 512 and own["epochs"] == math.ceil(GLOBAL_OPTIMIZER_STEPS / own_steps)
    few = [with_fields(base, look_back=32, season_length=1, seasons=())] * 3
    assert global_settings(base, few, [400, 800, 1200])["epochs"] == 60  # short epochs: the usual rule
    assert global_settings(with_fields(base, epochs=40), many, [400] * 2000)["epochs"] == 40  # a user's own


def test_auto_baselines_are_all_for_one_series_and_statistical_for_a_global_model() -> None:
    from lstm_forecast.tasks.core.defaults import global_settings

    times, y = pd.Series(np.arange(500.0)), np.sin(np.arange(500) / 7.0) + np.arange(500) * 0.01
    assert adapt_config(ForecastConfig(), times, y).baselines == "all"
    assert adapt_config(ForecastConfig(baselines="naive"), times, y).baselines == "naive"
    sized = [with_fields(ForecastConfig(), look_back=32, season_length=1, seasons=())] * 2
    assert global_settings(ForecastConfig(), sized, [400, 800])["baselines"] == "statistical"
    assert global_settings(ForecastConfig(baselines="all"), sized, [400, 800])["baselines"] == "all"


def test_auto_publishes_the_combination_for_a_network_of_one_series_without_covariates_or_holidays() -> None:
    from lstm_forecast.tasks.core.defaults import global_settings

    times, y = pd.Series(np.arange(500.0)), np.sin(np.arange(500) / 7.0) + np.arange(500) * 0.01
    assert adapt_config(ForecastConfig(), times, y).forecast_model == "combined"
    assert adapt_config(ForecastConfig(forecast_model="lstm"), times, y).forecast_model == "lstm"
    assert adapt_config(ForecastConfig(past_columns=("price",)), times, y).forecast_model == "lstm"
    dates = pd.Series(pd.date_range("2020-01-01", periods=500, freq="D"))
    assert adapt_config(ForecastConfig(holidays="US"), dates, y).forecast_model == "lstm"
    sized = [with_fields(ForecastConfig(), look_back=32, season_length=1, seasons=())] * 2
    assert global_settings(ForecastConfig(), sized, [400, 800])["forecast_model"] == "lstm"
    assert global_settings(ForecastConfig(forecast_model="combined"), sized, [400, 800])["forecast_model"] == "combined"


def hourly_like(n: int = 1200, seed: int = 0) -> np.ndarray:
    """Numeric-time hourly-like values: a daily cycle, quieter weekends (a weekly cycle), a trend and noise."""
    t = np.arange(n)
    rng = np.random.RandomState(seed)
    daily = 10 * np.sin(2 * np.pi * t / 24) + 4 * np.sin(4 * np.pi * t / 24)
    return 100 + 0.01 * t + daily * np.where(t % 168 >= 120, 0.5, 1.0) + rng.normal(scale=1.0, size=n)


def test_numeric_time_takes_the_calendar_cycles_its_autocorrelation_confirms() -> None:
    assert cycle_seasons(hourly_like()) == (24, 168)
    t = np.arange(240)
    period_12 = 50 + 0.1 * t + 5 * np.sin(2 * np.pi * t / 12) + np.random.RandomState(2).normal(size=240)
    assert cycle_seasons(period_12) == (12,)  # its repeats at 24 and 48 do not make it hourly
    assert cycle_seasons(np.random.RandomState(1).normal(size=1000)) == ()  # white noise
    sine = synthetic_series(10_000, 0.1, 1.0, 0.5, 0)["y"].to_numpy()
    assert cycle_seasons(sine[:8000]) == ()  # its peak is 63, no calendar's cycle: high at 52, higher at 53
    t = np.arange(600)
    drifting = np.sin(2 * np.pi * t / 4.4) + np.random.RandomState(3).normal(scale=0.3, size=600)
    assert cycle_seasons(drifting) == ()  # a cycle of 4.4 steps peaks at 4, but has faded at 12: no 4-step season


def test_numeric_time_seasons_size_the_run_as_calendar_seasons_do() -> None:
    y = hourly_like()
    config = adapt_config(build_config("default"), pd.Series(np.arange(len(y))), y)
    assert config.freq is None and config.seasons == (24, 168) and config.season_length == 24
    assert config.look_back == 48  # two of the shortest season, as for a calendar's
    kept = adapt_config(build_config("default", overrides={"seasons": ()}), pd.Series(np.arange(len(y))), y)
    assert kept.seasons == ()  # a user's seasons stay as they are


def test_sizing_from_stored_facts_equals_sizing_from_the_series_and_other_bases_recompute(tmp_path) -> None:
    from lstm_forecast.tasks.core.defaults import config_for_series, series_facts, sized_config
    from lstm_forecast.tasks.core.store import KEY_LENGTH, Store

    series = monthly(144)
    config = build_config("default")
    facts = series_facts(config, series["ds"], series["y"].to_numpy())
    assert facts["freq"] == "MS" and facts["calendar"] == [12] and facts["points"] == 144
    for variant in (config, with_fields(config, horizon=3, scope="global", look_back=36)):
        assert sized_config(variant, facts) == adapt_config(variant, series["ds"], series["y"].to_numpy())

    store, KEY = Store(tmp_path), "a" * KEY_LENGTH
    stale = facts | {"calendar": [], "season": 6}  # facts a generate stage stored for this series under the same basis
    store.write_table("generate", KEY, series, metadata={"facts": stale})
    assert config_for_series(config, store, KEY).season_length == 6  # read, not computed again
    other = with_fields(config, train_fraction=0.7)  # another basis: computed from the series
    assert config_for_series(other, store, KEY) == adapt_config(other, series["ds"], series["y"].to_numpy())


def test_the_refit_on_every_window_takes_a_tenth_of_the_kept_epochs_at_least_two_or_one_for_a_global_model() -> None:
    from lstm_forecast.tasks.core.fitting import refit_epochs

    assert refit_epochs(60, 5) == refit_epochs(60, 5, global_model=True) == 6  # a tenth of the 55 kept, rounded
    assert refit_epochs(8, 5) == 2  # a network of its own: at least two passes over its few hundred windows
    assert refit_epochs(8, 5, global_model=True) == 1  # a panel's windows: one pass is thousands of steps
