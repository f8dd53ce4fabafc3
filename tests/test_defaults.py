"""Defaults sized from the data: pure functions, no Prefect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.config import build_config
from tasks.defaults import adapt_config, confirmed_seasons
from tasks.errors import InputError
from tasks.generate import synthetic_series


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
