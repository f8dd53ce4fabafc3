"""The model space: how a series' values map to what the network sees, and back.

Fitted on the training part only (`fit_model_space`): the log choice, the seasonal profiles (MSTL),
then the kind ('none', 'level' or 'diff') and its scaler. Past the training part the seasonal profiles
are refitted once a cycle (of the longest season) on the rows before it, and a forecast uses those in
force at its origin, as the seasonal naive forecast follows a drifting season. normalize stores it with
the scaled series; train, predict, evaluate and `predict` read it back (`read_model_space`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_forecast.tasks.core.errors import ConstantSeriesError
from lstm_forecast.tasks.core.stl import profile_matrix, stl_windows
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.core.windows import window_inputs, window_targets_matrix

# 'none' cannot forecast outside the training range, so it is chosen only on strong evidence of a
# stationary series: an ADF p-value under 1 % (at 5 %, a short falling interest-rate series passed and
# its LSTM test RMSE was 2.4 x the naive forecast's; 1.3 x with 'level').
ADF_P_VALUE = 0.01


# Log scale when max / min of the (positive) training values is at least this: on a monthly
# equipment-orders series spanning a factor of 2, log took the LSTM's test RMSE from 2.20 to 2.03.
LOG_RATIO = 2.0


# A seasonal profile averages the last cycles of its MSTL component. The deseasonalised last value alone, one step
# ahead on the real series' test parts, against the last cycle alone: geometric mean of RMSE 0.947 over 3 cycles
# (no series worse), 0.937 over 4 (two worse: drifting seasons), 1.001 over 12.
PROFILE_CYCLES = 3
SEASONAL_FIT_CYCLES = 12  # MSTL sees at most this many cycles of the longest season (its cost grows with length)
# One season's profile is a cached matrix product (`stl.profile_matrix`) up to this many entries in the matrix
# (season x points: 12 weekly cycles are 32,448): about 2 ms to build once per length (25 ms at 624 weekly points),
# against MSTL's 1 ms a call. Longer parts, and several seasons, run statsmodels' MSTL.
PROFILE_MATRIX_SIZE = 65_536
SMOOTHING_FIT_ROWS = 5000  # the level's smoothing weight is fitted on at most this many of the last training rows


@dataclass(frozen=True)
class MinMaxParams:
    """`scaled = (v - data_min) / (data_max - data_min)`."""

    data_min: float
    data_max: float

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype="float64") - self.data_min) / (self.data_max - self.data_min)

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype="float64") * (self.data_max - self.data_min) + self.data_min


@dataclass(frozen=True)
class ModelSpace:
    """How values map to what the model sees, and back.

    `v = log(y) (if log) - seasonal component of the row`; then per `kind` the model sees
    `scale(v)` ('none'), `scale(diff v)` ('diff') or `scale(v) - scale(L[last row of the window])`
    ('level'), where `L` is `v`'s level by simple exponential smoothing with weight `smoothing` on the newest
    value (1: `v` itself, the window's last value). `offset` is the number of leading rows without a
    model-space value.
    """

    kind: str  # "none", "diff" or "level"
    scaler: MinMaxParams
    log: bool = False
    seasonal: tuple[tuple[float, ...], ...] = field(default=())  # per season: its value at phase `row % length`
    refits: tuple[tuple[int, tuple[tuple[float, ...], ...]], ...] = field(default=())  # (first row, profiles)
    smoothing: float = 1.0  # 'level': the newest value's weight in the reference level
    constant: float | None = None  # every forecast, for a series constant on every row (`constant_space`; not stored)

    @property
    def offset(self) -> int:
        return 1 if self.kind == "diff" else 0

    @property
    def seasons(self) -> tuple[int, ...]:
        return tuple(len(profile) for profile in self.seasonal)

    def season_at(self, rows: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
        """The summed seasonal components at `rows` (any shape, any row, past the end too), by the profiles in
        force at rows `known` (broadcast to `rows`; default: `rows` themselves): the last refit starting at or
        before them, so that a forecast made at row `known` uses only the rows before it."""
        rows = np.asarray(rows)
        total = np.zeros(rows.shape)
        for profile in self.seasonal:
            total += np.asarray(profile)[rows % len(profile)]
        if self.refits:
            at = np.broadcast_to(rows if known is None else np.asarray(known), rows.shape)
            for start, profiles in self.refits:
                later = at >= start
                total[later] = 0.0
                for profile in profiles:
                    total[later] += np.asarray(profile)[rows[later] % len(profile)]
        return total

    def adjusted(self, y: np.ndarray) -> np.ndarray:
        """`v`: log (if chosen) minus the seasonal components, (n,)."""
        y = np.asarray(y, dtype="float64")
        base = np.log(np.maximum(y, 1e-12)) if self.log else y
        return base - self.season_at(np.arange(len(y))) if self.seasonal else base

    def reference(self, values: np.ndarray) -> np.ndarray:
        """Each row's reference level (n,) for 'level', in the units of `values` (`v`, or its scaled `z`: the
        smoothing commutes with the scaler): `values` themselves when `smoothing` is 1."""
        values = np.asarray(values, dtype="float64")
        return values if self.smoothing >= 1.0 or not len(values) else smoothed_level(values, self.smoothing)

    def encode(self, y: np.ndarray) -> np.ndarray:
        """Model-space values (n,), NaN where undefined; 'level' windows subtract their reference level later."""
        v = self.adjusted(y)
        return self.scaler.scale(np.concatenate([[np.nan], np.diff(v)]) if self.kind == "diff" else v)

    def inputs(
        self, z: np.ndarray, rows: np.ndarray, look_back: int, patch: int = 1, features: np.ndarray | None = None
    ) -> np.ndarray:
        """Model inputs (len(rows), look_back / patch, patch * (1 + F)) float32 for origin rows of encoded `z`,
        with each row's F `features` (n, F) beside its value (`window_inputs`)."""
        reference = self.reference(z) if self.kind == "level" else None
        return window_inputs(z, rows, look_back, patch, reference=reference, features=features)

    def targets(self, z: np.ndarray, rows: np.ndarray, horizon: int) -> np.ndarray:
        """Training targets (len(rows), horizon) float32: `z[row + h]`, minus the reference `L[row - 1]` for 'level'."""
        reference = self.reference(z) if self.kind == "level" else None
        return window_targets_matrix(z, rows, horizon, reference=reference)

    def decode(self, z_hat: np.ndarray, y: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """Values (m, H) from model-space forecasts `z_hat` (m, H) made at origin rows (m,).

        Row `origins[i]` is the first forecast target of row i; `y[: origins[i]]` is known when forecasting.
        """
        origins = np.asarray(origins)
        z_hat = np.asarray(z_hat, dtype="float64").reshape(len(origins), -1)
        if self.constant is not None:
            return np.full(z_hat.shape, self.constant)
        v = self.adjusted(y)
        last = (self.reference(v) if self.kind == "level" else v)[origins - 1][:, None]
        if self.kind == "diff":
            adjusted = last + np.cumsum(self.scaler.unscale(z_hat), axis=1)
        elif self.kind == "level":
            adjusted = last + (self.scaler.unscale(z_hat) - self.scaler.unscale(0.0))
        else:
            adjusted = self.scaler.unscale(z_hat)
        if self.seasonal:
            adjusted = adjusted + self.season_at(origins[:, None] + np.arange(z_hat.shape[1]), origins[:, None])
        return np.exp(adjusted) if self.log else adjusted

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "data_min": self.scaler.data_min,
            "data_max": self.scaler.data_max,
            "log": self.log,
            "seasonal": [list(profile) for profile in self.seasonal],
            "refits": [[start, [list(profile) for profile in profiles]] for start, profiles in self.refits],
            "smoothing": self.smoothing,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpace:
        return cls(
            data.get("kind", "none"),
            MinMaxParams(data["data_min"], data["data_max"]),
            bool(data.get("log", False)),
            tuple(tuple(p) for p in data.get("seasonal", ())),
            tuple((int(start), tuple(tuple(p) for p in profiles)) for start, profiles in data.get("refits", ())),
            float(data.get("smoothing", 1.0)),
        )


def smoothed_level(values: np.ndarray, weight: float) -> np.ndarray:
    """Simple exponential smoothing of `values` (n,): `L[t] = weight * values[t] + (1 - weight) * L[t - 1]`,
    `L[0] = values[0]`."""
    from scipy.signal import lfilter

    values = np.asarray(values, dtype="float64")
    return lfilter([weight], [1.0, weight - 1.0], values, zi=[(1.0 - weight) * values[0]])[0]


def fit_smoothing(train_values: np.ndarray) -> float:
    """The weight (0.01 to 1) whose smoothed level best forecasts each next training value (least squares, as
    simple exponential smoothing is fitted), on the last `SMOOTHING_FIT_ROWS`; 1 (the last value) unless a
    smaller weight forecasts better."""
    from scipy.optimize import minimize_scalar

    values = np.asarray(train_values, dtype="float64")[-SMOOTHING_FIT_ROWS:]
    if len(values) < 3:
        return 1.0

    def squared_errors(weight: float) -> float:
        return float(np.sum((values[1:] - smoothed_level(values, weight)[:-1]) ** 2))

    found = minimize_scalar(squared_errors, bounds=(0.01, 1.0), method="bounded", options={"xatol": 1e-3}).x
    return min((float(found), 1.0), key=squared_errors)


def fit_minmax(train_values: np.ndarray) -> MinMaxParams:
    """Min and max of the training values; `ConstantSeriesError` if they are all equal."""
    values = np.asarray(train_values, dtype="float64")
    values = values[np.isfinite(values)]
    low, high = float(np.min(values)), float(np.max(values))
    if not high > low:  # the message does not echo the value: it comes from the user's file
        raise ConstantSeriesError(
            "the training part of the series is constant: there is nothing to learn",
            "check the value column, or forecast a series that varies",
        )
    return MinMaxParams(low, high)


def constant_space(y: np.ndarray) -> ModelSpace | None:
    """For a series whose finite values `y` (n,) are all equal: a 'level' space (a network reads windows of
    zeros) whose every forecast decodes to the constant itself. None otherwise."""
    values = np.asarray(y, dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values) or np.ptp(values) > 0:
        return None
    return ModelSpace("level", MinMaxParams(0.0, 1.0), constant=float(values[0]))


def has_unit_root(train_values: np.ndarray) -> bool:
    """ADF test (constant, up to 12 lags) on the training values: True if a unit root is not rejected."""
    from statsmodels.tsa.stattools import adfuller

    values = np.asarray(train_values, dtype="float64")[-5000:]
    lags = int(min(12, max(0, len(values) // 4 - 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-deficient designs on near-exact series: the p-value still decides
        p_value = adfuller(values, maxlag=lags, regression="c", autolag=None, result_object=False)[1]
    return bool(p_value > ADF_P_VALUE)


def use_log(train_values: np.ndarray, choice: str) -> bool:
    """'yes'/'no', or for 'auto': positive values spanning a factor of `LOG_RATIO` or more."""
    if choice != "auto":
        return choice == "yes"
    values = np.asarray(train_values, dtype="float64")
    return bool(values.min() > 0 and values.max() / values.min() >= LOG_RATIO)


def seasonal_profiles(values: np.ndarray, seasons: tuple[int, ...]) -> tuple[tuple[float, ...], ...]:
    """One profile per season (length = the season) from MSTL on `values` (n,); phase = row % length.

    Seasons with two cycles or fewer in `values` are left out (MSTL needs more). The profile is the mean of the
    last `PROFILE_CYCLES` cycles of the season's MSTL component, centred: STL lets seasonality drift slowly, but
    its last cycle alone, fitted at the end of the rows by a one-sided loess, is noisy.
    """
    seasons = tuple(sorted(s for s in set(seasons) if s >= 2 and len(values) > 2 * s))  # MSTL drops s >= n / 2
    if not seasons:
        return ()
    n = len(values)
    start = max(0, n - SEASONAL_FIT_CYCLES * max(seasons))
    part = np.asarray(values[start:], dtype="float64")
    if len(seasons) == 1 and seasons[0] * len(part) <= PROFILE_MATRIX_SIZE and np.isfinite(part).all():
        season = seasons[0]
        profile = profile_matrix(len(part), season, min(PROFILE_CYCLES, len(part) // season)) @ part
        return (tuple(float(v) for v in np.roll(profile, start % season)),)  # the matrix's phases count from `start`
    from statsmodels.tsa.seasonal import MSTL

    # Each loess smoother evaluated at every tenth of its window and interpolated between, as R's `stl` does by
    # default (statsmodels' evaluates every point): about 6 times faster on a 200-week series, the profile within
    # about 1 % of the exact one. The jumps come from the shortest season's windows; longer seasons' are wider.
    windows = stl_windows(seasons[0])
    jumps = {name: windows[name] for name in ("seasonal_jump", "trend_jump", "low_pass_jump")}
    fitted = MSTL(part, periods=seasons, stl_kwargs=jumps).fit()
    components = np.asarray(fitted.seasonal).reshape(n - start, -1)
    profiles = []
    for column, season in enumerate(seasons):
        cycles = min(PROFILE_CYCLES, (n - start) // season)
        rows = np.arange(n - cycles * season, n)
        profile = np.zeros(season)
        np.add.at(profile, rows % season, components[rows - start, column])
        profile /= cycles
        profiles.append(tuple(float(v) for v in profile - profile.mean()))
    return tuple(profiles)


def fit_model_space(
    y: np.ndarray,
    fit_stop: int,
    transform: str,
    seasons: tuple[int, ...] = (),
    log: str = "no",
    smooth_level: bool = False,
    season_stop: int | None = None,
) -> ModelSpace:
    """Choose log, seasons and kind (for 'auto') and fit them on rows `[0, fit_stop)` only; the seasonal
    profiles on rows `[0, season_stop)` (default `fit_stop`), then again on the rows before, for the rows from
    there: at `season_stop` + k x the longest season (k >= 1) up to `fit_stop`, and at `fit_stop` + k x the longest
    season (k >= 0; k >= 1 when `season_stop` is `fit_stop`), so the test split's are those of a space fitted on
    the rows before it. A `season_stop` at the end of the train split keeps the validation rows out of the
    profiles they are read with (`normalize.season_stop_for`). `smooth_level`: 'level' windows relative to a
    smoothed level whose weight is fitted (`fit_smoothing`), not to their last value.

    The profile is the current cycle of a season that may drift: frozen over a long test part it went stale
    (quarterly beer production: the LSTM's one-step test RMSE 1.005 x the seasonal naive's, 0.88 x refitted).
    """
    train = np.asarray(y, dtype="float64")[:fit_stop]
    fit_minmax(train)  # refuses a constant training part, whatever the transform
    logged = use_log(train, log)
    base = np.log(train) if logged else train
    seasons_from = fit_stop if season_stop is None else min(season_stop, fit_stop)
    profiles = seasonal_profiles(base[:seasons_from], tuple(seasons))
    refits: list[tuple[int, tuple[tuple[float, ...], ...]]] = []
    if profiles and seasons_from < len(y):
        full = np.asarray(y, dtype="float64")
        full = np.log(np.maximum(full, 1e-12)) if logged else full
        cycle = max(len(p) for p in profiles)
        starts = [*range(seasons_from + cycle, fit_stop, cycle), *range(fit_stop, len(y), cycle)]
        for start in starts[1:] if seasons_from == fit_stop else starts:  # the first fit already ends at fit_stop
            refits.append((start, seasonal_profiles(full[:start], tuple(len(p) for p in profiles))))
    space = ModelSpace("none", MinMaxParams(0.0, 1.0), logged, profiles, tuple(refits))
    adjusted = space.adjusted(train)
    kind = transform if transform != "auto" else ("level" if has_unit_root(adjusted) else "none")
    smoothing = 1.0
    if kind == "level":
        # Window-relative values: a unit of model space is a few typical one-step moves.
        steps = np.diff(adjusted)
        spread = float(np.std(steps)) or float(np.ptp(adjusted))
        scaler = MinMaxParams(0.0, 4.0 * spread)
        if smooth_level:
            smoothing = fit_smoothing(adjusted)
    else:
        scaler = fit_minmax(np.diff(adjusted) if kind == "diff" else adjusted)
    return ModelSpace(kind, scaler, logged, profiles, tuple(refits), smoothing)


def fixed_kind(transform: str) -> str | None:
    """The model space's kind that a config's `transform` fixes (`fit_model_space` keeps any but 'auto'), known
    without reading the space normalize stored; None for 'auto'."""
    return None if transform == "auto" else transform


def read_model_space(store: Store, normalize_key: str, forecaster: bool = False) -> ModelSpace:
    """The transform and scaler stored with a normalize output, fitted before the test split; or
    (`forecaster`) the same choices refitted on every row."""
    return stored_model_space(store.read_table_metadata("normalize", normalize_key), forecaster)


def stored_model_space(metadata: dict[str, Any], forecaster: bool = False) -> ModelSpace:
    """`read_model_space` from a normalize output's metadata already read (`Store.read_metadata`)."""
    return ModelSpace.from_dict(metadata["forecaster"] if forecaster else metadata)
