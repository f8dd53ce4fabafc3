"""Calendar time: inferred frequencies, their seasons, the timestamps after the data, and gaps."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.tasks.core.calendar import calendar_seasons, future_times, infer_frequency, normalize_freq, time_gaps
from lstm_forecast.tasks.core.errors import InputError


def dates(start: str, periods: int, freq: str) -> pd.Series:
    return pd.Series(pd.date_range(start, periods=periods, freq=freq), name="ds")


def stamps(*values: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(value) for value in values]


def test_monthly_forecast_stays_on_month_starts() -> None:
    ds = dates("2023-01-01", 12, "MS")  # ... 2023-12-01: the median step (31 days) would give 2024-01-01, 02-01, 03-03
    assert infer_frequency(ds) == "MS"
    future = future_times(ds, 3)
    assert future.tolist() == stamps("2024-01-01", "2024-02-01", "2024-03-01")
    assert future.dtype == ds.dtype and future.name == "ds"
    assert future_times(ds, 3, "MS").tolist() == future.tolist()
    assert time_gaps(ds, "MS") == 0


def test_month_ends_stay_month_ends_through_a_leap_february() -> None:
    ds = dates("2023-01-31", 12, "ME")
    assert infer_frequency(ds) == "ME"
    assert future_times(ds, 3).tolist() == stamps("2024-01-31", "2024-02-29", "2024-03-31")
    assert future_times(ds, 2, "M").tolist() == stamps("2024-01-31", "2024-02-29")  # deprecated alias accepted


def test_business_days_skip_the_weekend() -> None:
    ds = dates("2024-01-01", 10, "B")  # Mon 1 Jan ... Fri 12 Jan
    assert infer_frequency(ds) == "B"
    assert future_times(ds, 3).tolist() == stamps("2024-01-15", "2024-01-16", "2024-01-17")  # Mon, Tue, Wed
    assert time_gaps(ds, "B") == 0
    assert time_gaps(ds, None) == 1  # by the median step, Friday -> Monday is the odd one out


def test_business_days_with_a_holiday_are_still_business_days() -> None:
    ds = dates("2024-01-01", 30, "B").drop(index=5).reset_index(drop=True)  # Mon 8 Jan missing
    assert infer_frequency(ds) == "B"
    assert time_gaps(ds, "B") == 1
    assert future_times(ds, 1).tolist() == stamps("2024-02-12")  # after Fri 9 Feb


def test_hourly_with_one_missing_hour() -> None:
    ds = dates("2024-01-01", 48, "h").drop(index=10).reset_index(drop=True)
    assert pd.infer_freq(ds) is None  # pandas alone gives up on the gap
    assert infer_frequency(ds) == "h"
    assert time_gaps(ds, "h") == 1
    assert time_gaps(ds, None) == 1
    assert future_times(ds, 2).tolist() == stamps("2024-01-03 00:00", "2024-01-03 01:00")


def test_half_hourly() -> None:
    ds = dates("2024-01-01", 96, "30min")
    assert infer_frequency(ds) == "30min"
    assert future_times(ds, 2).tolist() == stamps("2024-01-03 00:00", "2024-01-03 00:30")


def test_weekly_sundays() -> None:
    ds = dates("2024-01-07", 20, "W-SUN")
    assert infer_frequency(ds) == "W-SUN"
    assert future_times(ds, 2).tolist() == stamps("2024-05-26", "2024-06-02")
    gappy = ds.drop(index=7).reset_index(drop=True)
    assert infer_frequency(gappy) == "W-SUN"
    assert time_gaps(gappy, "W") == 1


def test_quarterly_starts() -> None:
    ds = dates("2020-01-01", 12, "QS")
    assert infer_frequency(ds) == "QS-OCT"  # pandas names Jan/Apr/Jul/Oct quarters after October
    assert future_times(ds, 3).tolist() == stamps("2023-01-01", "2023-04-01", "2023-07-01")
    gappy = ds.drop(index=6).reset_index(drop=True)
    assert infer_frequency(gappy) == "QS-OCT"
    assert time_gaps(gappy, "QS") == 1


def test_yearly_starts() -> None:
    ds = dates("2000-01-01", 10, "YS")
    assert infer_frequency(ds) == "YS-JAN"
    assert future_times(ds, 2).tolist() == stamps("2010-01-01", "2011-01-01")


def test_numeric_time_falls_back_to_the_median_step() -> None:
    ds = pd.Series([0.0, 2.0, 4.0, 6.0, 10.0])
    assert infer_frequency(ds) is None
    assert future_times(ds, 3).tolist() == [12.0, 14.0, 16.0]
    assert future_times(ds, 3).dtype == np.float64
    assert time_gaps(ds, None) == 1
    assert time_gaps(ds, "D") == 1  # a freq means nothing for numeric time
    ints = pd.Series(np.arange(5, dtype="int64"))
    assert future_times(ints, 2).tolist() == [5, 6] and future_times(ints, 2).dtype == np.int64
    assert time_gaps(pd.Series(np.arange(1000) * 0.1), None) == 0  # float rounding is not a gap


def test_irregular_datetimes_fall_back_to_the_median_step() -> None:
    ds = pd.Series(pd.to_datetime(["2024-01-01", "2024-01-04", "2024-01-05", "2024-01-09", "2024-01-11"]))
    assert infer_frequency(ds) is None
    assert future_times(ds, 2).tolist() == stamps("2024-01-13 12:00", "2024-01-16")  # median step 2.5 days
    assert time_gaps(ds, None) == 4


def test_too_many_gaps_is_no_frequency() -> None:
    ds = dates("2024-01-01", 20, "h").drop(index=[3, 7, 12]).reset_index(drop=True)  # 13 of 16 steps hourly
    assert infer_frequency(ds) is None
    assert time_gaps(ds, "h") == 3


def test_a_given_freq_wins_over_the_inferred_one() -> None:
    ds = dates("2024-01-01", 10, "D")
    assert infer_frequency(ds) == "D"
    assert future_times(ds, 2, "B").tolist() == stamps("2024-01-11", "2024-01-12")
    assert future_times(dates("2024-01-05", 1, "D"), 2, "B").tolist() == stamps("2024-01-08", "2024-01-09")


def test_zero_steps_is_empty() -> None:
    ds = dates("2024-01-01", 5, "MS")
    assert len(future_times(ds, 0)) == 0 and future_times(ds, 0).dtype == ds.dtype


def test_calendar_seasons_table() -> None:
    assert calendar_seasons("h") == (24, 168)
    assert calendar_seasons("30min") == (48, 336)
    assert calendar_seasons("15min") == (96, 672)
    assert calendar_seasons("D") == (7,)
    assert calendar_seasons("B") == (5,)
    assert calendar_seasons("W-SUN") == (52,)
    assert calendar_seasons("MS") == (12,)
    assert calendar_seasons("ME") == (12,)
    assert calendar_seasons("QS-OCT") == (4,)
    assert calendar_seasons("QE-DEC") == (4,)
    assert calendar_seasons("YS-JAN") == ()
    assert calendar_seasons(None) == ()
    assert calendar_seasons("2h") == (12, 84)
    assert calendar_seasons("3MS") == (4,)
    assert calendar_seasons("5h") == ()


def test_normalize_accepts_what_pandas_accepts() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # deprecated aliases are accepted without a warning
        assert normalize_freq("M") == "ME"
        assert normalize_freq("H") == "h"
        assert normalize_freq("W") == "W-SUN"
        assert normalize_freq("QS") == "QS-JAN"
        assert normalize_freq(" MS ") == "MS"
    assert normalize_freq(None) is None


@pytest.mark.parametrize("freq", ["monthly", "", "0D", "-1h"])
def test_invalid_freq_raises_input_error(freq: str) -> None:
    with pytest.raises(InputError) as caught:
        calendar_seasons(freq)
    assert repr(freq) in caught.value.problem
    assert "'MS'" in caught.value.fix and "'h'" in caught.value.fix
    with pytest.raises(InputError):
        future_times(dates("2024-01-01", 5, "MS"), 2, freq)
    with pytest.raises(InputError):
        time_gaps(dates("2024-01-01", 5, "MS"), freq)


def test_many_series_gaps_are_each_series_own_and_ordered_times_infer_the_same_frequency() -> None:
    from lstm_forecast.tasks.core.calendar import many_time_gaps

    rng = np.random.default_rng(3)
    series, freqs = [], []
    for number in range(120):
        freq = ["D", "W-SUN", "MS", "h", "B", None][number % 6]
        start = pd.Timestamp("2021-01-03") + pd.Timedelta(days=int(rng.integers(0, 60)) * 7)
        times = pd.Series(pd.date_range(start, periods=int(rng.integers(2, 40)), freq=freq or "D"))
        if number % 4 == 0 and len(times) > 3:  # a gap: a row left out
            times = times.drop(index=int(rng.integers(1, len(times) - 1))).reset_index(drop=True)
        if number % 10 == 9:  # numbers, not dates
            times = pd.Series(np.arange(len(times), dtype="float64") * 0.5)
        series.append(times)
        freqs.append(freq if number % 10 != 9 else None)
        assert infer_frequency(times, ordered=True) == infer_frequency(times)
    gaps = many_time_gaps(series, freqs)
    assert gaps == [time_gaps(times, freq) for times, freq in zip(series, freqs, strict=True)]
    assert 10 < sum(count > 0 for count in gaps) < 60  # both kinds are there
    assert many_time_gaps([], []) == []
