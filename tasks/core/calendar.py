"""Calendar time: the frequency of a series' timestamps, the seasons it implies, and the timestamps that follow.

Pure functions, pandas/numpy in and out. Datetimes follow the calendar (month starts stay month starts, business
days skip weekends); numeric time, and datetimes with no regular frequency, step by the median step as before.
Frequencies are pandas offset aliases ('MS', 'ME', 'W-SUN', 'D', 'B', 'h', '30min', 'QS-OCT', 'YS-JAN', ...).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset

from lstm_forecast.tasks.core.errors import InputError, quoted

# Fallback inference (pd.infer_freq fails on a series with missing rows): the share of steps that must be
# exactly one step of the candidate frequency.
MIN_REGULAR_SHARE = 0.9

_FREQ_EXAMPLES = "'MS' (month starts), 'ME' (month ends), 'W-SUN', 'D', 'B' (business days), 'h', '30min', 'QS', 'YS'"
_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY = pd.Timedelta(days=1)
_WEEK = pd.Timedelta(days=7)
_MONTHLY = (pd.offsets.MonthBegin, pd.offsets.MonthEnd, pd.offsets.BusinessMonthBegin, pd.offsets.BusinessMonthEnd)
_QUARTERLY = (pd.offsets.QuarterBegin, pd.offsets.QuarterEnd, pd.offsets.BQuarterBegin, pd.offsets.BQuarterEnd)


def normalize_freq(freq: str | None) -> str | None:
    """The canonical pandas alias of a frequency string ('M' -> 'ME', 'H' -> 'h', 'W' -> 'W-SUN'); None stays None.

    Raises InputError for a string pandas does not accept, or a step that is not positive.
    """
    if freq is None:
        return None
    return _offset(freq).freqstr


def infer_frequency(ds: pd.Series, ordered: bool = False) -> str | None:
    """The calendar frequency of datetime timestamps as a pandas offset alias, or None.

    None for numeric time, fewer than 3 distinct timestamps, or when no regular frequency explains them. Tolerates
    gaps: when pd.infer_freq fails on the whole series (missing rows), the candidate comes from the most common step
    and must be exactly one step for at least 90 % of the steps (anchored ones, such as 'MS' or 'B', must also hold
    every timestamp). Business days: steps of 1 day, and of 3 days over weekends. `ordered`: the timestamps are
    known to be strictly increasing, none missing (a clean chunk's), so they are not deduplicated and sorted again.
    """
    if not pd.api.types.is_datetime64_any_dtype(ds):
        return None
    times = pd.DatetimeIndex(ds) if ordered else pd.DatetimeIndex(ds.dropna().unique()).sort_values()
    if len(times) < 3:
        return None
    try:
        inferred = pd.infer_freq(times)
    except (TypeError, ValueError):
        inferred = None
    if inferred is not None:
        return normalize_freq(inferred)
    steps = times[1:] - times[:-1]
    common = pd.Series(steps).mode().iloc[0]  # the smallest of the most common steps
    for candidate in _candidates(common, times[0]):
        offset = to_offset(candidate)
        if _on_offset(times, offset).all() and np.mean(_one_step(times, offset)) >= MIN_REGULAR_SHARE:
            return offset.freqstr
    return None


def calendar_seasons(freq: str | None) -> tuple[int, ...]:
    """Season lengths (in steps) a calendar frequency implies, shortest first; () for yearly, None or no cycle.

    Hourly -> (24, 168), half-hourly -> (48, 336), 15-min -> (96, 672): a day and a week. Daily -> (7,),
    business daily -> (5,), weekly -> (52,), monthly -> (12,), quarterly -> (4,). Multiples divide them
    ('2h' -> (12, 84), '3MS' -> (4,)) when they do so evenly. Raises InputError for an invalid freq string.
    """
    if freq is None:
        return ()
    offset = _offset(freq)
    n = offset.n
    if isinstance(offset, pd.offsets.Day) and n == 1:
        # A day's cycle is the week. Not 365 as well: a yearly season needs several years of daily rows (two
        # seasons at least, 730+ rows, before a seasonal baseline or decomposition sees it once to learn from and
        # once to check), longer than most daily series here, and a look-back that long dwarfs the weekly cycle.
        return (7,)
    if isinstance(offset, pd.offsets.Day) and n == 7:
        return (52,)
    if isinstance(offset, pd.offsets.Tick) and not isinstance(offset, pd.offsets.Day):
        step = pd.Timedelta(offset)  # a day's and a week's worth of steps, where they are whole
        return tuple(period // step for period in (_DAY, _WEEK) if not period % step and period // step > 1)
    if isinstance(offset, pd.offsets.BusinessDay) and not isinstance(offset, pd.offsets.CustomBusinessDay):
        return _divided(5, n)
    if isinstance(offset, pd.offsets.Week):
        return _divided(52, n)
    if isinstance(offset, (pd.offsets.SemiMonthBegin, pd.offsets.SemiMonthEnd)):
        return _divided(24, n)
    if isinstance(offset, _MONTHLY):
        return _divided(12, n)
    if isinstance(offset, _QUARTERLY):
        return _divided(4, n)
    return ()


def future_times(ds: pd.Series, steps: int, freq: str | None = None) -> pd.Series:
    """The `steps` timestamps after the last one, with the dtype (and name) of `ds`.

    Datetimes continue the calendar with `freq` (given, or inferred): month starts stay month starts, month ends
    stay month ends, business days skip weekends. Numeric time, or datetimes with no inferable frequency:
    last + median step * i (the old behaviour). A `freq` given with numeric time is checked, then not used.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    offset = _offset(freq) if freq is not None else None
    if steps == 0:
        return pd.Series([], name=ds.name, dtype=ds.dtype)
    if _numeric_time(ds.dtype):  # numpy: a tenth of the time
        return pd.Series(_numbers_after(ds.to_numpy(), steps), name=ds.name).astype(ds.dtype)
    values = ds.dropna()
    if len(values) == 0:
        raise ValueError("future_times needs at least one timestamp")
    last = values.iloc[-1]
    if pd.api.types.is_datetime64_any_dtype(ds):
        if offset is None:
            inferred = infer_frequency(ds)
            offset = to_offset(inferred) if inferred is not None else None
        if offset is not None:
            times = pd.date_range(start=last + offset, periods=steps, freq=offset)
            return pd.Series(times, name=ds.name).astype(ds.dtype)
    if len(values) < 2:
        raise ValueError("future_times needs two timestamps, or a calendar frequency, to know the step")
    step = values.diff().median()
    return (pd.Series(np.arange(1, steps + 1), name=ds.name) * step + last).astype(ds.dtype)


def future_time_values(ds: pd.Series | np.ndarray, steps: int, freq: str | None = None) -> np.ndarray:
    """`future_times(ds, steps, freq).to_numpy()` of times given as a Series or an array, without a pandas Series
    for numeric time or for dates with a frequency (a chunk of series asks once per series; a panel's series
    mostly end on the same date, whose next dates are computed once)."""
    values = ds.to_numpy() if isinstance(ds, pd.Series) else np.asarray(ds)
    if steps > 0 and values.dtype.kind in "iuf":  # numeric time
        if freq is not None:
            _offset(freq)  # checked, as `future_times` checks it
        return _numbers_after(values, steps).astype(values.dtype)
    if steps > 0 and freq is not None and values.dtype.kind == "M" and len(values) and not np.isnat(values[-1]):
        return _dates_after(values[-1], steps, freq, values.dtype).copy()
    return future_times(ds if isinstance(ds, pd.Series) else pd.Series(values), steps, freq).to_numpy()


@functools.lru_cache(maxsize=256)
def _dates_after(last: np.datetime64, steps: int, freq: str, dtype: np.dtype) -> np.ndarray:
    """The `steps` dates after `last` on the calendar of `freq`, as `future_times` gives them (in `dtype`)."""
    offset = _offset(freq)
    return pd.date_range(start=pd.Timestamp(last) + offset, periods=steps, freq=offset).to_numpy().astype(dtype)


def _numeric_time(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _numbers_after(numbers: np.ndarray, steps: int) -> np.ndarray:
    """Numeric time's next `steps` values (steps,): last + median step * i (NaNs skipped), before any cast back to
    the times' dtype."""
    numbers = numbers[~np.isnan(numbers)] if numbers.dtype.kind == "f" else numbers
    if len(numbers) < 2:
        raise ValueError("future_times needs two timestamps, or a calendar frequency, to know the step")
    step = np.median(np.diff(numbers))
    return np.arange(1, steps + 1) * step + numbers[-1]


def time_gaps(ds: pd.Series, freq: str | None) -> int:
    """How many steps between consecutive timestamps are not exactly one `freq` step (0 when regular).

    For numeric time or freq None: steps that differ from the median step (floats within a relative 1e-6, so that
    `arange(n) * 0.1` counts as regular). Raises InputError for an invalid freq string.
    """
    offset = _offset(freq) if freq is not None else None
    if len(ds) < 2:
        return 0
    if offset is not None and pd.api.types.is_datetime64_any_dtype(ds):
        return int(np.sum(~_one_step(pd.DatetimeIndex(ds), offset)))
    if pd.api.types.is_float_dtype(ds):  # numeric time: what the pandas steps below compute, on the array
        steps_array = np.diff(ds.to_numpy())
        return int(np.sum(~np.isclose(steps_array, np.nanmedian(steps_array), rtol=1e-6, atol=0.0)))
    steps = ds.diff().iloc[1:]
    median = steps.median()
    if pd.api.types.is_float_dtype(steps):
        same = np.isclose(steps.to_numpy(), median, rtol=1e-6, atol=0.0)
    else:
        same = (steps == median).to_numpy()
    return int(np.sum(~same))


def many_time_gaps(ds: list[pd.Series], freqs: list[str | None]) -> list[int]:
    """`time_gaps` of many series: those of dates with a frequency checked together, all the series of one frequency
    as one index (a chunk's series mostly share theirs), the others one by one."""
    gaps = [0] * len(ds)
    dated: dict[str, list[int]] = {}
    for number, (times, freq) in enumerate(zip(ds, freqs, strict=True)):
        if freq is not None and isinstance(times.dtype, np.dtype) and times.dtype.kind == "M" and len(times) >= 2:
            dated.setdefault(freq, []).append(number)
        else:
            gaps[number] = time_gaps(times, freq)
    for freq, numbers in dated.items():
        lengths = np.array([len(ds[number]) for number in numbers])
        joined = pd.DatetimeIndex(np.concatenate([ds[number].to_numpy() for number in numbers]))
        steps = _one_step(joined, _offset(freq))  # each pair of rows in a row, a series' last with the next's first
        owner = np.repeat(np.arange(len(numbers)), lengths)[1:]
        inside = owner == np.repeat(np.arange(len(numbers)), lengths)[:-1]
        counts = np.bincount(owner[inside], weights=~steps[inside], minlength=len(numbers))
        for number, count in zip(numbers, counts, strict=True):
            gaps[number] = int(count)
    return gaps


def _offset(freq: str) -> BaseOffset:
    """A pandas offset from a user's frequency string, deprecated aliases included; InputError when invalid."""
    if not isinstance(freq, str):
        raise InputError(f"frequency {quoted(freq)} is not a pandas offset alias", f"pass one such as {_FREQ_EXAMPLES}")
    return _parsed_offset(freq)


@functools.lru_cache(maxsize=64)
def _parsed_offset(freq: str) -> BaseOffset:
    """`_offset` of a string, parsed once per process (a chunk of series asks for each one; offsets do not change)."""
    invalid = InputError(f"frequency {quoted(freq)} is not a pandas offset alias", f"pass one such as {_FREQ_EXAMPLES}")
    if not freq.strip():
        raise invalid
    try:
        with warnings.catch_warnings():
            # Deprecated aliases ('M', 'H', 'T', 'Q', 'Y', 'A') still parse; the canonical alias is what is kept.
            warnings.simplefilter("ignore", FutureWarning)
            offset = to_offset(freq.strip())
    except ValueError as error:
        raise invalid from error
    if offset.n <= 0:
        raise InputError(
            f"frequency {quoted(freq)} does not step forward", f"pass a positive one such as {_FREQ_EXAMPLES}"
        )
    return offset


def _on_offset(times: pd.DatetimeIndex, offset: BaseOffset) -> np.ndarray:
    """Per timestamp, whether it lies on the offset (a month start for 'MS', a weekday for 'B'); fixed steps: all."""
    if isinstance(offset, pd.offsets.Tick):
        return np.ones(len(times), dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)  # offsets without a vectorised add
        return np.asarray(times - offset + offset == times)  # one back then one forward: lands where it began


def _one_step(times: pd.DatetimeIndex, offset: BaseOffset) -> np.ndarray:
    """Per consecutive pair, whether the second is exactly one `offset` step after the first."""
    if isinstance(offset, pd.offsets.Tick):
        if isinstance(offset, pd.offsets.Day) and times.tz is not None:
            times = times.tz_localize(None)  # days by the wall clock: the day a clock change falls on is no gap
        return np.asarray((times[1:] - times[:-1]) == pd.Timedelta(offset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)  # offsets without a vectorised add
        return np.asarray((times[:-1] + offset) == times[1:])


def _candidates(common: pd.Timedelta, first: pd.Timestamp) -> list[str]:
    """Frequencies that could explain a series whose most common step is `common`, most likely first."""
    days = common / _DAY
    weekday, month = _WEEKDAYS[first.dayofweek], _MONTHS[first.month - 1]
    # Quarters are named after their last-in-year month, as pd.infer_freq does: Jan/Apr/Jul/Oct -> 'QS-OCT'.
    quarter = _MONTHS[9 + (first.month - 1) % 3]
    if days == 1:
        return ["B", "D"]  # 'B' only where every timestamp is a weekday
    if days == 7:
        return [f"W-{weekday}"]
    if 13 <= days <= 16:
        return ["SMS", "SME"]
    if 28 <= days <= 31:
        return ["MS", "ME", "BMS", "BME"]
    if 89 <= days <= 92:
        return [f"QS-{quarter}", f"QE-{quarter}", f"BQS-{quarter}", f"BQE-{quarter}"]
    if 365 <= days <= 366:
        return [f"YS-{month}", f"YE-{month}"]
    if common > pd.Timedelta(0) and (days < 1 or days == int(days)):
        return [to_offset(common).freqstr]  # fixed steps: '30min', 'h', '2D'
    return []


def _divided(period: int, n: int) -> tuple[int, ...]:
    """(period / n,) when n divides the period into more than one step, else ()."""
    return (period // n,) if period % n == 0 and period // n > 1 else ()
