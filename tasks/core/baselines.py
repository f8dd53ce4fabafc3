"""Statistical baselines: statsforecast's AutoETS and AutoARIMA scored on exactly the LSTM's targets.

Pure functions, numpy in and numpy out (no Prefect, no files). Protocol, the same as the project's ARIMA
baseline: parameters are fitted once on the fit part `y[fit_start:fit_stop]` (capped to its last `MAX_FIT_POINTS`
points), then only filtered over the rest of the series, so a forecast made at origin `row` uses `y[:row]` and the
fitted parameters, never a later value. Which model is fitted depends on the seasons and the length of the fit part:

- one season `s` with at least `MIN_SEASONS` full seasons in the fit part: seasonal `AutoETS(season_length=s)` when
  `s <= ETS_MAX_SEASON`, seasonal `AutoARIMA(season_length=s)` when `s <= ARIMA_MAX_SEASON`;
- a longer season, or several: `MSTL` deseasonalises the fit part once (shared by both models), its seasonal profile
  is frozen (continued as the last season, like `MSTL.predict`), and a non-seasonal `AutoETS(model="ZZN")` /
  `AutoARIMA()` is fitted to and filtered over `y - profile`;
- seasons that do not fit `MIN_SEASONS` times in the fit part are dropped; no season left: the non-seasonal model.

A fit or filter that fails (statsforecast raises on odd data, or a multiplicative model meets a zero) falls back to the
non-seasonal model; if that fails too the baseline is left out of the forecasts and its description says why.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

NAMES = ("auto_ets", "auto_arima")
MAX_FIT_POINTS = 2_000  # fit part cap: keeps both fits on long (24, 168)-seasonal hourly data to seconds
ETS_MAX_SEASON = 24  # statsforecast's AutoETS refuses longer seasons
ARIMA_MAX_SEASON = 12  # seasonal AutoARIMA's search grows steeply with the season: longer ones use MSTL
MIN_SEASONS = 2  # full seasons the fit part needs before a season is modelled (STL needs 2)
ARIMA_APPROXIMATE_ABOVE = 150  # points; like R's auto.arima, CSS approximation in the order search (much faster)
ARIMA_MAX_HEAD = 512  # rows at the start of an ARIMA filter pass that may need an exact one-step forecast
CHECKED_ROWS = 3  # fast multi-step forecasts are checked against `forward` at first, middle and last origin


@dataclass(frozen=True)
class _Plan:
    """What to fit for one baseline: `kind` is "plain" (no season), "seasonal" (season `seasons[0]`) or "mstl"."""

    kind: str
    seasons: tuple[int, ...] = ()

    def label(self, name: str) -> str:
        """How the plan reads in descriptions, e.g. "AutoETS(season 12)" or "MSTL(24, 168) + AutoARIMA"."""
        model = "AutoETS" if name == "auto_ets" else "AutoARIMA"
        if self.kind == "seasonal":
            return f"{model}(season {self.seasons[0]})"
        if self.kind == "mstl":
            return f"MSTL({', '.join(map(str, self.seasons))}) + {model}"
        return model


@dataclass
class _Fitted:
    """A fitted trend/level model and the frozen additive seasonal profile `season_at(t)` (zero unless MSTL)."""

    model: Any
    x: np.ndarray  # the series the model filters: y minus the seasonal profile, (n,)
    start: int  # first point of the fit part; filtering of rows >= start begins here
    season_at: Callable[[np.ndarray], np.ndarray]
    summary: str


def statistical_forecasts(
    y: np.ndarray,
    rows: np.ndarray,
    horizon: int,
    fit_start: int,
    fit_stop: int,
    seasons: tuple[int, ...],
    eval_from: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Forecasts of `auto_ets` and `auto_arima`, each (len(rows), horizon): row i holds the forecasts of
    y[rows[i]], ..., y[rows[i] + horizon - 1] made with only y[:rows[i]] known (rows[i] is the first target
    of origin i). Model parameters are fitted once on y[fit_start:fit_stop] and then only filtered over later
    data (no refitting), like statsforecast's `forward(y, h, fitted=True)`.
    `seasons`: season lengths, longest last ((): no season / (12,): monthly / (24, 168): hourly).
    For horizon 1 every row gets a value (the in-sample one-step 'fitted' values of forward over the whole y).
    For horizon > 1 only rows >= eval_from (the test origins) are forecast, one `forward(y[:row], h)` per row
    (or something faster that gives the same numbers); other rows are NaN.
    Returns (forecasts by name, a short description by name of what was fitted, e.g. "AutoETS(season 12): MAM" or
    "MSTL(24, 168) + AutoARIMA: ARIMA(2,1,1)").

    Details: the fit part is capped to its last `MAX_FIT_POINTS` points. Rows inside the fit part get in-sample
    values; rows before the (capped) fit part are filtered separately from y[0] with the same parameters. ARIMA's
    'fitted' values at the start of a filter pass are replaced by true one-step forecasts (`forward` on the points
    so far), NaN for the first d + D * season points where there are none. Rows with too few points before them
    for the model are NaN; every forecast after the fit part must be finite, or the model counts as failed.
    `eval_from=None` forecasts every row. A baseline whose fits all fail is absent from the forecasts; its
    description starts with "omitted:".
    """
    y = np.asarray(y, dtype="float64")
    rows = np.asarray(rows, dtype="int64")
    n = len(y)
    if y.ndim != 1 or horizon < 1 or not 0 <= fit_start < fit_stop <= n:
        raise ValueError(
            f"need 1-d y, horizon >= 1 and 0 <= fit_start < fit_stop <= len(y); got {y.shape}, "
            f"{horizon}, {fit_start}, {fit_stop}"
        )
    if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() > n)):
        raise ValueError(f"rows must be 1-d origins in [0, {n}]")
    if any(int(s) < 1 for s in seasons):
        raise ValueError(f"season lengths must be >= 1, got {seasons}")
    start = max(fit_start, fit_stop - MAX_FIT_POINTS)
    wanted = np.ones(len(rows), bool) if horizon == 1 or eval_from is None else rows >= eval_from
    forecasts: dict[str, np.ndarray] = {}
    descriptions: dict[str, str] = {}
    if not np.isfinite(y).all():
        return {}, {name: "omitted: y has missing or infinite values" for name in NAMES}
    if not wanted.any():  # e.g. eval_from after every origin: nothing to fit for
        return (
            {name: np.full((len(rows), horizon), np.nan) for name in NAMES},
            {name: "not fitted: no origin to forecast" for name in NAMES},
        )
    scale = fit_scale(y[start:fit_stop])
    y = y / scale  # statsforecast's searches are not scale-free: 1e-9 and 1e9 chose different models
    with _quiet():
        decompositions: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray]] = {}
        for name in NAMES:
            failures: list[str] = []
            for plan in _plans(_usable_seasons(seasons, fit_stop - start), name):
                try:
                    fitted = _fit(name, plan, y, start, fit_stop, decompositions)
                    values = _forecast(fitted, rows, horizon, wanted)
                    if not np.isfinite(values[wanted & (rows >= fit_stop)]).all():
                        raise FloatingPointError("non-finite forecasts after the fit part")
                    values[~np.isfinite(values)] = np.nan
                except Exception as error:  # statsforecast raises many types on odd data; try the next plan
                    failures.append(f"{plan.label(name)} failed ({type(error).__name__}: {str(error)[:80]})")
                    continue
                forecasts[name] = values * scale
                fallback = f" [fallback; {'; '.join(failures)}]" if failures else ""
                descriptions[name] = f"{plan.label(name)}: {fitted.summary}, fit on y[{start}:{fit_stop}]{fallback}"
                break
            else:
                descriptions[name] = "omitted: " + "; ".join(failures)
    return forecasts, descriptions


def fit_scale(part: np.ndarray) -> float:
    """The mean absolute value of a fit part, the unit a model is fitted in (1.0 for an all-zero part), so that
    a fit does not depend on the series' units."""
    scale = float(np.mean(np.abs(part))) if len(part) else 0.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _usable_seasons(seasons: tuple[int, ...], fit_points: int) -> tuple[int, ...]:
    """The seasons (> 1) that fit `MIN_SEASONS` times in the fit part, ascending and without repeats."""
    return tuple(sorted({int(s) for s in seasons if 1 < int(s) and MIN_SEASONS * int(s) <= fit_points}))


def _plans(seasons: tuple[int, ...], name: str) -> list[_Plan]:
    """Models to try in order for baseline `name` with usable `seasons`: the seasonal choice, then the plain one."""
    limit = ETS_MAX_SEASON if name == "auto_ets" else ARIMA_MAX_SEASON
    if not seasons:
        return [_Plan("plain")]
    if len(seasons) == 1 and seasons[0] <= limit:
        return [_Plan("seasonal", seasons), _Plan("plain")]
    return [_Plan("mstl", seasons), _Plan("plain")]


def _fit(
    name: str,
    plan: _Plan,
    y: np.ndarray,
    start: int,
    stop: int,
    decompositions: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray]],
) -> _Fitted:
    """Fit baseline `name` following `plan` on y[start:stop] (points)."""
    from statsforecast.models import AutoARIMA, AutoETS

    season = plan.seasons[0] if plan.kind == "seasonal" else 1
    if name == "auto_ets":
        model = AutoETS(season_length=season, model="ZZN" if plan.kind == "mstl" else "ZZZ")
    else:
        approximate = stop - start > ARIMA_APPROXIMATE_ABOVE or season > 12  # R's auto.arima rule
        model = AutoARIMA(season_length=season, approximation=approximate)
    if plan.kind == "mstl":
        if plan.seasons not in decompositions:
            decompositions[plan.seasons] = _seasonal_profile(y[start:stop], plan.seasons, start)
        season_at = decompositions[plan.seasons]
    else:
        season_at = _no_season
    x = y - season_at(np.arange(len(y)))
    model.fit(x[start:stop])
    return _Fitted(model, x, start, season_at, _summary(name, model))


def _no_season(t: np.ndarray) -> np.ndarray:
    """A zero seasonal profile at points `t`."""
    return np.zeros(len(t))


def _seasonal_profile(part: np.ndarray, seasons: tuple[int, ...], start: int) -> Callable[[np.ndarray], np.ndarray]:
    """MSTL's seasonal components of `part` (= y[start:stop]) as a function of the absolute point index.

    Inside the part the components themselves; after it each component's last season repeated (what `MSTL.predict`
    forecasts); before it each component's first season, phase-aligned.
    """
    from statsforecast.mstl import mstl

    decomposition = mstl(part, period=list(seasons))
    columns = [c for c in decomposition.columns if str(c).startswith("seasonal")]
    components = [(s, decomposition[c].to_numpy(dtype="float64")) for s, c in zip(seasons, columns, strict=True)]
    length = len(part)

    def season_at(t: np.ndarray) -> np.ndarray:
        relative = np.asarray(t, dtype="int64") - start
        total = np.zeros(len(relative))
        for season, component in components:
            after = length - season + (relative - length) % season
            before = relative % season
            index = np.where(relative >= length, after, np.where(relative < 0, before, relative))
            total += component[index]
        return total

    return season_at


def _summary(name: str, model: Any) -> str:
    """The fitted model in short: ETS components like "MAdM", or the ARIMA order like "ARIMA(2,1,1)(0,1,1)[12]"."""
    if name == "auto_ets":
        error, trend, season, damped = model.model_["components"][:4]
        return f"{error}{trend}{'d' if damped == 'D' else ''}{season}"
    from statsforecast.arima import arima_string

    return arima_string(model.model_).strip()


def _forecast(fitted: _Fitted, rows: np.ndarray, horizon: int, wanted: np.ndarray) -> np.ndarray:
    """Forecasts (len(rows), horizon) at the `wanted` rows, NaN elsewhere, in series units."""
    out = np.full((len(rows), horizon), np.nan)
    if not wanted.any():
        return out
    if horizon == 1:
        one_step = _one_step(fitted)
        out[wanted, 0] = one_step[rows[wanted]]
    else:
        for index, values in _multi_step(fitted, rows[wanted], horizon).items():
            out[np.flatnonzero(wanted)[index]] = values
    out[wanted] += fitted.season_at((rows[wanted, None] + np.arange(horizon)).ravel()).reshape(-1, horizon)
    return out


def _one_step(fitted: _Fitted) -> np.ndarray:
    """One-step forecasts of x at every origin 0..n (n + 1 values; NaN where no forecast can be made)."""
    x, start = fitted.x, fitted.start
    values = np.full(len(x) + 1, np.nan)
    after = fitted.model.forward(x[start:], h=1, fitted=True)
    values[start:-1] = after["fitted"]
    values[-1] = after["mean"][0]
    if start > 0:
        with contextlib.suppress(Exception):  # too short for the model's differencing: those rows stay NaN
            values[:start] = _before_fit(fitted).forward(x[:start], h=1, fitted=True)["fitted"]
    if "components" not in fitted.model.model_:
        for first, stop in ((start, len(x)), (0, start)):
            _arima_head(fitted, first, stop, values)
    return values


def _arima_head(fitted: _Fitted, first: int, stop: int, values: np.ndarray) -> None:
    """Replace ARIMA's 'fitted' values at the start of a filter pass over x[first:stop] by true one-step forecasts.

    statsforecast's fitted value is x minus the standardised innovation: under the diffuse prior of the differenced
    states (the first d + D * season points) it is almost the observation itself, and later it is off until the
    Kalman gain settles. Rows from `first` on get `forward(x[first:row], 1)` until that agrees with the fitted value
    (NaN where forward cannot run); the head doubles while it does not, up to `ARIMA_MAX_HEAD` rows.
    """
    if stop <= first:
        return
    state = fitted.model.model_["model"]
    head = min(stop - first, 2 * (len(state["delta"]) + len(state["a"])) + 8)
    done = first
    while True:
        for row in range(done, min(first + head, stop)):
            values[row] = _arima_one_step(fitted, first, row)
        done = min(first + head, stop)
        if done >= stop or head >= ARIMA_MAX_HEAD:
            return
        exact = _arima_one_step(fitted, first, done)
        if np.isfinite(exact) and abs(exact - values[done]) <= 1e-6 * (1 + abs(exact)):
            return
        head *= 2


def _arima_one_step(fitted: _Fitted, first: int, row: int) -> float:
    """`forward(x[first:row], 1)` of the ARIMA model, NaN where it cannot run (too few points)."""
    try:
        return float(fitted.model.forward(fitted.x[first:row], h=1)["mean"][0])
    except Exception:
        return float("nan")


def _before_fit(fitted: _Fitted) -> Any:
    """The model to filter x from point 0 (before the fit part): ETS gets its initial seasonal states phase-shifted."""
    model = fitted.model
    components = model.model_.get("components", "")
    if not components or components[2] == "N" or fitted.start % model.model_["m"] == 0:
        return model
    shifted = model.new()
    parameters = np.array(model.model_["par"], dtype="float64")
    m = model.model_["m"]
    # par = alpha, beta, gamma, phi, level, [trend], seasonal states s_t, s_{t-1}, ..., s_{t-m+1}
    seasonal = slice(len(parameters) - m, len(parameters))
    parameters[seasonal] = np.roll(parameters[seasonal], -(fitted.start % m))
    shifted.model_ = {**model.model_, "par": parameters}
    return shifted


def _multi_step(fitted: _Fitted, origins: np.ndarray, horizon: int) -> dict[int, np.ndarray]:
    """Forecasts of x (horizon,) by position in `origins`, each as `forward(x[:origin], horizon)` would give.

    Fast paths filter once and forecast from the stored states (ETS) or step the Kalman filter from origin to origin
    (ARIMA, origins after the fit start); they are used when they agree with `forward` at `CHECKED_ROWS` origins.
    """
    is_ets = "components" in fitted.model.model_
    try:
        if is_ets:
            fast, positions = _ets_from_states(fitted, origins, horizon), np.arange(len(origins))
        else:
            positions = np.flatnonzero(origins >= fitted.start)
            fast = _arima_from_states(fitted, origins[positions], horizon)
    except Exception:  # an unexpected model layout: the plain path below
        fast, positions = None, np.arange(0)
    results: dict[int, np.ndarray] = {}
    if fast is not None and _agrees(fitted, origins[positions], horizon, fast):
        results = {int(p): values for p, values in zip(positions, fast, strict=True) if np.isfinite(values).all()}
    for i, origin in enumerate(origins):
        if i not in results:
            with contextlib.suppress(Exception):  # too few points to filter: NaN (the caller checks the test rows)
                results[i] = _slow(fitted, origin, horizon)
    return results


def _agrees(fitted: _Fitted, origins: np.ndarray, horizon: int, fast: np.ndarray) -> bool:
    """Whether `fast` (len(origins), horizon) equals `forward` at `CHECKED_ROWS` origins spread over `origins`."""
    for i in np.unique(np.linspace(0, len(origins) - 1, CHECKED_ROWS).astype(int)) if len(origins) else []:
        if not np.isfinite(fast[i]).all():  # left to forward anyway
            continue
        try:
            slow = _slow(fitted, int(origins[i]), horizon)
        except Exception:  # forward cannot run there (e.g. no point to filter): nothing to compare
            continue
        if not np.allclose(fast[i], slow, rtol=1e-8, atol=1e-8 * (1 + np.abs(slow).max()), equal_nan=True):
            return False
    return True


def _slow(fitted: _Fitted, origin: int, horizon: int) -> np.ndarray:
    """`forward(x[first:origin], horizon)` of the model that filters the origin's part (after or before the fit)."""
    if origin >= fitted.start:
        return fitted.model.forward(fitted.x[fitted.start : origin], h=horizon)["mean"]
    return _before_fit(fitted).forward(fitted.x[:origin], h=horizon)["mean"]


def _ets_from_states(fitted: _Fitted, origins: np.ndarray, horizon: int) -> np.ndarray:
    """ETS forecasts (len(origins), horizon) from the states of one filter pass (after the fit) or two (before)."""
    from statsforecast.ets import forecast_ets, forward_ets

    x, start = fitted.x, fitted.start
    passes = {True: forward_ets(fitted.model.model_, x[start:])}
    if (origins < start).any():
        passes[False] = forward_ets(_before_fit(fitted).model_, x[:start])
    out = np.full((len(origins), horizon), np.nan)
    for i, origin in enumerate(origins):
        after = bool(origin >= start)
        state = origin - start if after else origin
        model = passes[after]
        out[i] = forecast_ets({**model, "states": model["states"][state : state + 1]}, h=horizon)["mean"]
    return out


def _arima_from_states(fitted: _Fitted, origins: np.ndarray, horizon: int) -> np.ndarray:
    """ARIMA forecasts (len(origins), horizon) at origins >= start: `forward` up to the first origin, then the same
    Kalman filter stepped one observation at a time, forecasting from its state at each origin."""
    from statsforecast.arima import arima_like, forward_arima

    x, first = fitted.x, fitted.start
    out = np.full((len(origins), horizon), np.nan)
    if not len(origins):
        return out
    order = np.argsort(origins, kind="stable")
    for tries, i in enumerate(order):  # the first origins may have too few points for forward (differencing)
        position = int(origins[i])
        try:
            model = forward_arima(fitted.model.model_, y=x[first:position])
            break
        except ValueError:
            if tries >= 64:
                raise
    else:
        return out
    space = model["model"]
    a, P = np.array(space["a"], dtype="float64"), np.array(space["P"], dtype="float64")
    T, V, Z = space["T"], space["V"], space["Z"]
    coefficients = dict(list(model["coef"].items())[sum(model["arma"][:4]) :])
    if set(coefficients) - {"intercept", "drift"}:
        raise NotImplementedError(f"regressors {sorted(coefficients)}")
    intercept, drift = coefficients.get("intercept", 0.0), coefficients.get("drift", 0.0)  # drift at point j: j + 1
    for i in order[tries:]:
        origin = int(origins[i])
        for point in range(position, origin):
            observation = np.array([x[point] - intercept - drift * (point - first + 1)])
            arima_like(observation, space["phi"], space["theta"], space["delta"], a, P, T @ P @ T.T + V, 0, False)
        position = max(position, origin)
        if np.ptp(x[first:origin]) == 0:  # forecast_arima repeats a constant series: leave it to forward
            continue
        state = a.copy()
        for step in range(horizon):
            state = T @ state
            out[i, step] = state @ Z + intercept + drift * (origin - first + 1 + step)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence statsforecast's warnings (convergence, numba absent) and numpy's floating-point chatter."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield
