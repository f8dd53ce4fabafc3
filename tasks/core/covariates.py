"""Covariates: what the network reads beside a series' own values.

Per row `q` of a series the network reads, next to its value, a feature vector `features[q]` of
`CovariateSpace.width` channels (`window_inputs` puts them beside the values of the window):

- the past-only columns (`past_columns`) at row `q`: observed up to now, so read for the look-back only;
- the known-future columns (`future_columns`) at row `q + lead`, `lead` being the model's horizon: the last
  `lead` rows of a window carry the values of the rows it forecasts (a price, a promotion, a temperature
  forecast), so the network reads them for the steps ahead as well as for the look-back;
- the calendar at row `q + lead`: for each cycle the series' seasons give (a day, a week, a year), the sine
  and cosine of the row's position in it, anchored to the calendar (hour of the day, day of the week, week
  of the year), so every series of a panel reads the same phase at the same time; on numeric time, the row's
  position counted from 0;
- a public-holiday flag for a country (`holidays`), at row `q + lead`;
- the static columns of a panel's series (`static_columns`: constant per series, such as a store's size or a
  0/1 column per category), the same on every row, as `asinh(value)` (about the value near 0, its log beyond):
  the network of many series reads what tells them apart.

Columns are standardised with the mean and standard deviation of the rows before the test split only.
Pure functions: pandas and numpy in and out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from lstm_forecast.tasks.core.errors import InputError, quoted, shown

FEATURE_PREFIX = "x_"  # the feature columns of a normalize output: x_0, x_1, …
_EPOCH = pd.Timestamp("1970-01-05")  # a Monday at midnight: positions in a day or a week count from it
_YEAR = pd.Timedelta(days=365.2425)


def feature_columns(width: int) -> list[str]:
    """The names of a normalize output's feature columns."""
    return [f"{FEATURE_PREFIX}{i}" for i in range(width)]


def read_features(table: Any, width: int) -> np.ndarray | None:
    """The feature channels (n, width) float32 of a normalize output (a table or its columns); None for none."""
    if not width:
        return None
    return np.stack([np.asarray(table[name], dtype="float32") for name in feature_columns(width)], axis=1)


@dataclass(frozen=True)
class CovariateSpace:
    """How a series' covariates become the network's feature channels, fitted on its training rows.

    `center` and `spread` standardise the past, then the future columns; `cycles` are the calendar cycles
    (in steps) of the series' `freq` (None: numeric time); `lead` is the model's horizon.
    """

    past: tuple[str, ...] = ()
    future: tuple[str, ...] = ()
    center: tuple[float, ...] = ()
    spread: tuple[float, ...] = ()
    cycles: tuple[int, ...] = ()
    freq: str | None = None
    holidays: str | None = None
    lead: int = 1
    static: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Feature channels per row."""
        return (
            len(self.past) + len(self.future) + 2 * len(self.cycles) + int(self.holidays is not None) + len(self.static)
        )

    def features(self, ds: pd.Series, values: pd.DataFrame, ahead: pd.DataFrame | None, rows: int) -> np.ndarray:
        """Features (rows, width) float32 of rows `[0, rows)` of a series.

        Args:
            ds: the series' times (n,), n <= rows.
            values: its covariate columns (n rows; at least `columns`).
            ahead: the future columns' values for the steps after the series (at least `rows - n + lead`).
        Raises:
            InputError when the future columns' values do not reach `rows + lead - 1`, or past columns are asked
            beyond the series.
        """
        n = len(ds)
        parts: list[np.ndarray] = []
        if self.past:
            if rows > n:
                raise InputError(
                    f"past-only columns {', '.join(map(quoted, self.past))} are not known after the series' end",
                    "forecast at most the model's horizon with a model that reads past-only columns",
                )
            parts.append(self._standardised(values[list(self.past)].to_numpy(dtype="float64"), 0))
        if self.future:
            needed = rows + self.lead - n
            known = values[list(self.future)].to_numpy(dtype="float64")
            later = np.empty((0, len(self.future))) if ahead is None else ahead[list(self.future)].to_numpy("float64")
            if len(later) < needed:
                raise InputError(
                    f"the future columns {', '.join(map(quoted, self.future))} need values for the {needed} steps "
                    f"after the series' last row; {len(later)} given",
                    "pass --future FILE (columns unique_id, ds and the future columns) covering those steps",
                )
            stacked = np.concatenate([known, later[:needed]])[self.lead : rows + self.lead]
            parts.append(self._standardised(stacked, len(self.past)))
        if self.cycles or self.holidays:
            times = pd.concat([pd.Series(np.asarray(ds)), _later_times(ds, rows + self.lead - n, self.freq)])
            times = times.iloc[self.lead : rows + self.lead].reset_index(drop=True)
            if self.cycles:
                phases = cycle_phases(times, self.cycles, self.freq)
                parts.extend([np.sin(2 * np.pi * phases), np.cos(2 * np.pi * phases)])
            if self.holidays:
                parts.append(holiday_flags(times, self.holidays)[:, None])
        if self.static:
            constants = np.arcsinh(values[list(self.static)].to_numpy(dtype="float64")[:1])
            parts.append(np.repeat(constants, rows, axis=0))
        if not parts:
            return np.zeros((rows, 0), dtype="float32")
        return np.concatenate(parts, axis=1).astype("float32")

    def _standardised(self, values: np.ndarray, first: int) -> np.ndarray:
        count = values.shape[1]
        center = np.asarray(self.center[first : first + count])
        spread = np.asarray(self.spread[first : first + count])
        return (values - center) / spread

    def to_dict(self) -> dict[str, Any]:
        return {
            "past": list(self.past),
            "future": list(self.future),
            "center": list(self.center),
            "spread": list(self.spread),
            "cycles": list(self.cycles),
            "freq": self.freq,
            "holidays": self.holidays,
            "lead": self.lead,
            "static": list(self.static),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CovariateSpace:
        """The space a `to_dict` stored; an empty space (no channels) for outputs written before covariates."""
        if not data:
            return cls()
        return cls(
            tuple(data["past"]),
            tuple(data["future"]),
            tuple(float(v) for v in data["center"]),
            tuple(float(v) for v in data["spread"]),
            tuple(int(v) for v in data["cycles"]),
            data.get("freq"),
            data.get("holidays"),
            int(data.get("lead", 1)),
            tuple(data.get("static", ())),
        )


def fit_covariate_space(
    values: pd.DataFrame,
    fit_stop: int,
    past: tuple[str, ...],
    future: tuple[str, ...],
    cycles: tuple[int, ...],
    freq: str | None,
    holidays: str | None,
    lead: int,
    allow_constant: bool = False,
    static: tuple[str, ...] = (),
) -> CovariateSpace:
    """Standardise the covariate columns of `values` on rows `[0, fit_stop)`.

    A column constant on those rows is refused (InputError naming it) unless `allow_constant` (a global
    model: a flag that never changes in one series may change in others); it then reads as zeros there.
    """
    columns = [*past, *future]
    train = values[columns].to_numpy(dtype="float64")[:fit_stop] if columns else np.zeros((fit_stop, 0))
    center = train.mean(axis=0) if len(train) else np.zeros(len(columns))
    spread = train.std(axis=0) if len(train) else np.ones(len(columns))
    for column, value in zip(columns, spread, strict=True):
        if not value > 0 and not allow_constant:
            raise InputError(
                f"covariate column {quoted(column)} is constant before the test split: it tells the model nothing",
                "drop it from --future-columns / --past-columns, or pass a column that varies",
            )
    spread = np.where(spread > 0, spread, 1.0)
    return CovariateSpace(
        past,
        future,
        tuple(map(float, center)),
        tuple(map(float, spread)),
        tuple(cycles),
        freq,
        holidays,
        lead,
        tuple(static),
    )


def config_features(
    config: Any, frame: Mapping[str, Any], fit_stop: int, future: dict[str, list] | None, rows: int | None = None
) -> tuple[np.ndarray, CovariateSpace]:
    """The feature channels (rows, width) of a series for a config's model, and their space fitted on rows
    `[0, fit_stop)`.

    Args:
        config: a sized `ForecastConfig` (its covariate columns, calendar cycles, holidays, freq, horizon).
        frame: the series' columns: `ds` and the covariate columns (n rows).
        future: the future columns' values after the series (generate's metadata `future`).
        rows: how many rows to give features for (default n; more for forecasts fed back past the horizon).
    """
    columns = (*config.past_columns, *config.future_columns, *config.static_columns)
    values = pd.DataFrame({name: np.asarray(frame[name]) for name in columns})
    covariates = fit_covariate_space(
        values,
        fit_stop,
        tuple(config.past_columns),
        tuple(config.future_columns),
        tuple(config.calendar or ()),
        config.freq,
        config.holidays,
        config.horizon,
        allow_constant=config.scope == "global",
        static=tuple(config.static_columns),
    )
    ahead = pd.DataFrame(future) if future else None
    ds = pd.Series(np.asarray(frame["ds"]))
    return covariates.features(ds, values, ahead, len(ds) if rows is None else rows), covariates


def model_features(
    model_config: Any, frame: pd.DataFrame, future: dict[str, list] | None, rows: int | None = None
) -> np.ndarray | None:
    """The feature channels (rows, F) a model trained with `model_config` (a `ForecastConfig`) reads for a
    series `frame` (`ds`, `y`, covariate columns) it reads anew, scaled on the frame's rows before its test
    split; None for a model that reads none."""
    from lstm_forecast.tasks.core.calendar import infer_frequency
    from lstm_forecast.tasks.core.config import feature_width, with_fields
    from lstm_forecast.tasks.core.windows import split_rows

    if not feature_width(model_config):
        return None
    sized = with_fields(model_config, freq=model_config.freq or infer_frequency(frame["ds"]))
    fit_stop = split_rows(len(frame), sized.train_fraction, 0.0)["start"][2]
    return config_features(sized, frame, fit_stop, future, rows)[0]


def cycle_phases(times: pd.Series, cycles: tuple[int, ...], freq: str | None) -> np.ndarray:
    """Position of each time in each cycle, in [0, 1): (len(times), len(cycles)).

    Datetimes with a fixed step (hours, minutes, days): whole steps since a Monday midnight, modulo the cycle
    (hour of the day, hour of the week, day of the week). Business days with a cycle of 5: the weekday. Other
    calendar frequencies whose cycle is about a year (weeks: 52, months: 12, quarters: 4): the fraction of
    the year. Numeric time: whole median steps since 0, modulo the cycle.
    """
    times = pd.Series(times).reset_index(drop=True)
    out = np.empty((len(times), len(cycles)))
    if not len(times):
        return out
    if pd.api.types.is_datetime64_any_dtype(times):
        offset = to_offset(freq) if freq else None
        stamps = pd.DatetimeIndex(times)
        step = _fixed_step(offset, stamps)
        for column, cycle in enumerate(cycles):
            if isinstance(offset, pd.offsets.BusinessDay) and cycle == 5:
                out[:, column] = stamps.dayofweek.to_numpy() / 5
            elif step is not None and not (step * cycle >= _YEAR * 0.9 and offset is not None and step >= _DAY):
                positions = np.floor((stamps - _EPOCH) / step).to_numpy()
                out[:, column] = np.mod(positions, cycle) / cycle
            else:
                start = pd.DatetimeIndex(stamps.year.astype(str) + "-01-01")
                days = np.where(stamps.is_leap_year, 366.0, 365.0)
                out[:, column] = ((stamps - start) / pd.Timedelta(days=1)).to_numpy() / days
        return out
    numbers = times.to_numpy(dtype="float64")
    differences = np.diff(numbers)
    step = float(np.median(differences)) if len(differences) else 1.0
    positions = np.round(numbers / (step if step > 0 else 1.0))
    for column, cycle in enumerate(cycles):
        out[:, column] = np.mod(positions, cycle) / cycle
    return out


_DAY = pd.Timedelta(days=1)


def _fixed_step(offset: Any, stamps: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The fixed length of one step (an hour, a day), or None for calendar steps (months, business days)."""
    if offset is not None:
        return pd.Timedelta(offset) if isinstance(offset, pd.offsets.Tick) else None
    if len(stamps) < 2:
        return None
    return pd.Series(stamps).diff().median()


def holiday_flags(times: pd.Series, country: str) -> np.ndarray:
    """1.0 where a time falls on a public holiday of `country` (an ISO code such as US, DE, AU), else 0.0."""
    stamps = pd.Series(times)
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        raise InputError(
            "public holidays need dates, and the time column holds numbers",
            "drop --holidays, or give the time column as dates (2024-01-31)",
        )
    days = pd.DatetimeIndex(stamps).normalize()
    calendar = country_holidays(country, sorted(set(days.year)))
    return np.isin(days.date, list(calendar)).astype("float64")


def country_holidays(country: str, years: list[int]) -> Any:
    """The `holidays` package's public holidays of `country` in `years`; InputError for an unknown code."""
    import holidays

    try:
        return holidays.country_holidays(country, years=years)
    except (NotImplementedError, KeyError) as error:
        raise InputError(
            f"no public-holiday calendar for country {quoted(country)}",
            "pass an ISO 3166 country code the holidays package knows, such as US, GB, DE, FR or AU",
        ) from error


def _later_times(ds: pd.Series, steps: int, freq: str | None) -> pd.Series:
    """`steps` times after `ds` (the calendar's next timestamps; the median step for numeric time)."""
    from lstm_forecast.tasks.core.calendar import future_times

    if steps <= 0:
        return pd.Series([], dtype=pd.Series(np.asarray(ds)).dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        return future_times(pd.Series(np.asarray(ds)), steps, freq).reset_index(drop=True)


def describe(space: CovariateSpace) -> str:
    """One log line of what the network reads beside the values."""
    parts = []
    if space.past:
        parts.append(f"past-only {', '.join(shown(c) for c in space.past)}")
    if space.future:
        parts.append(f"known-future {', '.join(shown(c) for c in space.future)}")
    if space.cycles:
        parts.append(f"calendar cycles {list(space.cycles)}")
    if space.holidays:
        parts.append(f"holidays {shown(space.holidays)}")
    if space.static:
        parts.append(f"static {', '.join(shown(c) for c in space.static)}")
    return "features: " + ("; ".join(parts) if parts else "none")
