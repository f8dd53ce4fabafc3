"""Defaults sized from the data: the `default` preset is a rule, not fixed numbers.

Config fields left empty (`None`) are filled from the series before any stage after
`generate` runs; fields a user set stay as they are. The filled config is what enters the
stages' keys and the model's metadata.

- `freq`: the calendar frequency pandas infers from the timestamps (None for numeric time).
- `seasons`: the calendar's seasons (hourly 24 and 168, monthly 12, …) with at least two cycles
  in the training part that its autocorrelation confirms; they are removed before the LSTM.
  With no calendar frequency (numeric time, or none inferred) and no `seasons` set, the
  autocorrelation of the training part picks the calendar (`cycle_seasons`): each calendar's
  seasons form a family whose first cycle identifies it, 4 (quarterly), 5 (business days),
  7 (daily), 12 (monthly), 52 (weekly), 24 then 168 (hourly), 48 then 336 (half-hourly),
  96 then 672 (15 minutes). A first cycle s counts when the series holds two of them, its
  detrended autocorrelation at lag s (`season_evidence`) is at least `SEASON_EVIDENCE`, it is a
  genuine peak (no lag within s ± max(1, s // 12) is higher: a sine of period 63 is high at 52
  but higher at 53), and it repeats: the autocorrelation at 2s and 3s, where the detrended
  series holds one cycle beyond the lag, is at least `SEASON_EVIDENCE` too (a cycle of 4.4
  steps, or the damped ripple a moving average leaves in a smooth series, fades by then). Of the
  first cycles that count, the one with the highest autocorrelation wins, unless a shorter one
  that divides it comes within `SEASON_EVIDENCE` of it: then the longer one is its repeat (a
  12-step cycle shows at 24 and 48 as well) and the shorter one wins. The seasons are then those
  the winner's calendar confirms (as above): 24 with 168 for an hourly series, never 12 with them.
- `season_length` (seasonal-naive baseline): the shortest of those (or of the confirmed calendar
  seasons when `seasons` is set), else the first autocorrelation peak of the training part
  (the built-in sine: 63).
- `look_back`: two seasons once seasons are removed (at least 16), four autocorrelation seasons
  otherwise (at least 32); with no cycle at all 16 training windows per value of the window, from 4
  to 32 (nothing asks for a long memory, and short windows leave more of them to learn from); at
  least the horizon (every step ahead sees as much past, and known-future columns ride in the window);
  never more than a quarter of the rows before the validation split.
- `patch`: 8 values per LSTM step from a look-back of 128, 4 from 64, else 1.
- `batch_size`: about 1/30 of the training windows, a power of two from 16 to 256 (a global model whose step
  budget binds: to 128, `GLOBAL_MAX_BATCH`).
- `epochs`: at least 60, or enough epochs for about 1,500 optimizer steps (up to 400); a global model
  trains for at most about 6,000 optimizer steps (`GLOBAL_OPTIMIZER_STEPS`).
- `ensemble`: 5 networks averaged when there are fewer than 2,000 training windows, else 1.
- `patience`: 5 epochs, or about 100 optimizer steps when epochs are short.
- `validation_fraction`: raised when the validation tail would hold fewer than `horizon` + 2 rows.
- `forecast_model`: 'auto' is the combination with AutoETS and AutoARIMA for a series with its own network
  and no covariates or holidays, the LSTM alone otherwise (`published_model`).
- `calendar`: a model that forecasts more than one step reads its position in each season in use (for a
  global model: in each season that at least half of the series confirm).
"""

from __future__ import annotations

import hashlib
import math
from types import EllipsisType
from typing import Any

import numpy as np
import pandas as pd

from lstm_forecast.tasks.core.calendar import calendar_seasons, infer_frequency
from lstm_forecast.tasks.core.config import ForecastConfig, covariate_columns, with_fields
from lstm_forecast.tasks.core.errors import TooShortError
from lstm_forecast.tasks.core.space import LOG_RATIO
from lstm_forecast.tasks.core.windows import GLOBAL_MIN_CONTEXT, split_starts

SEASON_EVIDENCE = 0.2  # least autocorrelation at the season's lag, after removing the trend, to keep a season
# Numeric time: each calendar's seasons (its first cycle identifies it), for the autocorrelation to choose from.
CYCLE_FAMILIES = ((4,), (5,), (7,), (12,), (24, 168), (48, 336), (52,), (96, 672))
PEAK_WINDOW = 12  # a cycle s is a peak when no lag within s ± max(1, s // PEAK_WINDOW) has a higher autocorrelation
# A window reads at most a quarter of the rows before validation: at least three times as many training windows
# as values in a window (half let a short series train on fewer windows than a window's length: 28 windows of 24
# months on 72 monthly deaths, the LSTM no better than the seasonal naive; a third and a fifth scored worse over
# the real series than a quarter: benchmarks/README.md).
LOOK_BACK_SHARE = 4
# With no cycle at all, training windows per value of the window (a look-back of 4 to 32): on 100 minutes
# of Internet users (WWWusage) 32 values scored 2.2 x ARIMA's test RMSE, 8 values 1.3 x, 4 values 1.02 x.
CYCLELESS_WINDOWS_PER_VALUE = 16
OPTIMIZER_STEPS = 1500
MIN_TRAIN_ROWS = 8  # rows before the test split beyond one horizon: a few windows and a validation tail
SMALL_DATA_WINDOWS, SMALL_DATA_ENSEMBLE = 2000, 5  # small data: average 5 networks (cheap there, less variance)
PATIENCE_STEPS = 100  # about the span of the weight average (momentum 0.99): judge it once it has moved
# A global model trains on at most this many windows per epoch: each series' most recent ones, the same
# number from every series that has that many (M4 Weekly's 359 series: about 300 each). It bounds the
# time per epoch and the memory whatever the number of series.
GLOBAL_WINDOW_BUDGET = 100_000
# A network of its own trains on at most this many bytes of input windows per split, spread over it: a
# long series' wide windows (100,000 five-minute values, look-back 576, four calendar channels: 11.5 kB each)
# otherwise fill gigabytes, held twice while training. Every series of the benchmarks is far below it.
LOCAL_WINDOW_BYTES = 512 * 2**20
# Early stopping judges a global model on at most this many validation windows, each series' most recent ones:
# every series keeps at least one, and an epoch's validation pass stays a fraction of its training (on 10,000
# short series, 42,878 validation windows took an epoch 1.48 s, 20,000 took it 1.37 s: benchmarks/README.md).
GLOBAL_VALIDATION_BUDGET = 20_000
# A global model takes at most about this many optimizer steps before its refit (16 epochs of a full window
# budget): past them the validation loss of a large panel gains little that shows in its forecasts (10,000 M4
# Weekly crops: 16 epochs against 33 early-stopped, sMAPE 6.882 against 6.869, training 47.9 s against 76.5 s;
# M4 Weekly and M4 Hourly stop earlier on their own: benchmarks/README.md).
GLOBAL_OPTIMIZER_STEPS = 6_000
# A global model whose optimizer-step budget binds trains in batches of at most this many windows: the batch size
# then sets how many windows it reads, and 6,000 steps of 128 windows read half of 256's and forecast as well (10,000
# M4 Weekly crops: sMAPE 6.500 against 6.530, training 28.2 s against 41.0 s; M4 Weekly and M4 Hourly within their
# seeds' spread: benchmarks/README.md). Smaller batches than 128 cost more per window and gained little more. Where
# the budget does not bind, smaller batches would only take more steps over the same windows.
GLOBAL_MAX_BATCH = 128
# A global model sees at least this many horizons of past (N-BEATS looks back 2 to 7 horizons): a series'
# own look-back is sized for one step ahead.
GLOBAL_HORIZONS_SEEN = 4
GLOBAL_LSTM_STEPS = 12
# One network for a global model: on M4 Weekly three members of look-backs base, 2 x base and base / 2
# (combined by the median, `--ensemble 3`) scored OWA 0.751 against one network's 0.727, at twice the time.
GLOBAL_ENSEMBLE = 1


def autocorrelation(values: np.ndarray, lag: int) -> float:
    """Sample autocorrelation of `values` (n,) at `lag` (0 for a constant or too short series)."""
    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x)]
    if lag >= len(x) - 1:
        return 0.0
    x = x - x.mean()
    denominator = float(np.dot(x, x))
    return float(np.dot(x[lag:], x[:-lag]) / denominator) if denominator > 0 else 0.0


def _centred(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finite values of `values` (n,) less their mean, and their running sums from 0 (n + 1,)."""
    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x)]
    x = x - x.mean() if len(x) else x
    return x, np.cumsum(np.concatenate([[0.0], x]))


def _residual(x: np.ndarray, sums: np.ndarray, season: int) -> np.ndarray:
    window = season + (season + 1) % 2
    if len(x) < window:
        return np.empty(0)
    half = window // 2
    return x[half : len(x) - half] - (sums[window:] - sums[:-window]) / window


def detrended(values: np.ndarray, season: int) -> np.ndarray:
    """`values` (n,) less their centred moving average over one season (an odd window: season + 1 when it is
    even), where the window fits: (n - window + 1,)."""
    return _residual(*_centred(values), season)


def season_evidence(values: np.ndarray, season: int) -> float:
    """Autocorrelation at lag `season` after removing a centred moving average of one season (the trend)."""
    return autocorrelation(detrended(values, season), season)


def _judged(train_y: np.ndarray) -> np.ndarray:
    """The values seasons are judged on: multiplicative seasons on the log scale."""
    values = np.asarray(train_y, dtype="float64")
    if values.min() > 0 and values.max() / values.min() >= LOG_RATIO:
        values = np.log(values)
    return values


def confirmed_seasons(train_y: np.ndarray, candidates: tuple[int, ...]) -> tuple[int, ...]:
    """The candidate seasons with two or more cycles in `train_y` (n,) and autocorrelation evidence."""
    values = _judged(train_y)
    return tuple(
        s for s in candidates if s >= 2 and len(values) >= 2 * s and season_evidence(values, s) >= SEASON_EVIDENCE
    )


def _cycle_evidence(x: np.ndarray, sums: np.ndarray, season: int) -> float | None:
    """`season_evidence` at `season` of the centred values `x` (n,) with running sums `sums` (`_centred`) when
    it is a genuine cycle there (the module's docstring: two cycles, the evidence, a peak at lag s, and the
    evidence again at 2s and 3s where the series holds them), else None."""
    if season < 2 or len(x) < 2 * season:
        return None
    residual = _residual(x, sums, season)
    r = residual - residual.mean()
    energy = float(np.dot(r, r))

    def at(lag: int) -> float:  # `autocorrelation(residual, lag)`, its centring and energy computed once
        return float(np.dot(r[lag:], r[:-lag])) / energy if energy > 0 and lag < len(r) - 1 else 0.0

    evidence = at(season)
    if evidence < SEASON_EVIDENCE:
        return None
    width = max(1, season // PEAK_WINDOW)
    if any(at(lag) > evidence for lag in range(season - width, season + width + 1)):
        return None
    for repeat in (2, 3):  # the cycle repeats, where one more cycle of the detrended series follows the lag
        if len(r) >= (repeat + 1) * season and at(repeat * season) < SEASON_EVIDENCE:
            return None
    return evidence


def cycle_seasons(train_y: np.ndarray, families: tuple[tuple[int, ...], ...] = CYCLE_FAMILIES) -> tuple[int, ...]:
    """The seasons of `train_y` (n,), the training part of a series without a calendar: those of the calendar
    whose first cycle its autocorrelation confirms (the module's docstring); () when none does."""
    x, sums = _centred(_judged(train_y))  # once for every candidate
    firsts = {family[0]: _cycle_evidence(x, sums, family[0]) for family in families}
    found = {season: evidence for season, evidence in firsts.items() if evidence is not None}
    if not found:
        return ()
    best = max(found, key=lambda s: (found[s], -s))
    repeated = [s for s in sorted(found) if s < best and best % s == 0 and found[best] - found[s] < SEASON_EVIDENCE]
    best = repeated[0] if repeated else best  # the longer cycle only repeats the shorter one
    family = next(family for family in families if family[0] == best)
    # the calendar's longer seasons as `confirmed_seasons` confirms them (two cycles, the evidence)
    longer = [s for s in family[1:] if len(x) >= 2 * s and autocorrelation(_residual(x, sums, s), s) >= SEASON_EVIDENCE]
    return (best, *longer)


def detect_season(train_y: np.ndarray, max_lag: int = 1000) -> int:
    """The first autocorrelation peak after the first zero crossing (1 when there is no clear one)."""
    values = np.asarray(train_y, dtype="float64")[-10_000:]
    nlags = min(len(values) // 3, max_lag)
    if nlags < 4:
        return 1
    x = values - values.mean()
    spectrum = np.fft.rfft(x, n=2 * len(x))
    correlations = np.fft.irfft(spectrum * np.conj(spectrum))[: nlags + 1]
    correlations = correlations / correlations[0] if correlations[0] > 0 else correlations
    negative = np.flatnonzero(correlations < 0)
    if not len(negative):
        return 1
    lag = int(negative[0] + np.argmax(correlations[negative[0] :]))
    return lag if correlations[lag] > 0.1 else 1


def auto_patch(look_back: int) -> int:
    return 8 if look_back >= 128 else 4 if look_back >= 64 else 1


def facts_basis(config: ForecastConfig) -> dict[str, Any]:
    """The config fields `series_facts` reads: facts stored with a series serve every config that agrees on them."""
    return {"freq": config.freq, "seasons_given": config.seasons is not None, "train_fraction": config.train_fraction}


def series_facts(
    config: ForecastConfig, ds: pd.Series, y: np.ndarray, inferred: str | None | EllipsisType = ...
) -> dict[str, Any]:
    """What the data-sized settings read from the series `ds` (n,), `y` (n,): its length, its frequency, the
    seasons its training part confirms and (when it confirms none) its autocorrelation's season. The
    one costly part of sizing (autocorrelations, the frequency's inference), computed once per series and
    stored with it by `generate` (JSON: plain numbers, strings and lists); `sized_config` does the rest.
    `inferred`: what `infer_frequency(ds)` gives, when the caller has it already.

    Raises:
        TooShortError: the series is too short for the config's split and horizon.
    """
    y = np.asarray(y, dtype="float64")
    check_long_enough(len(y), config)
    train_y = y[: split_starts(len(y), config.train_fraction)[1]]
    freq = config.freq or (infer_frequency(ds) if inferred is ... else inferred)
    if freq is not None:
        calendar = confirmed_seasons(train_y, calendar_seasons(freq))
    else:  # no calendar: the cycles the autocorrelation confirms, unless the user set the seasons
        calendar = cycle_seasons(train_y) if config.seasons is None else ()
    return {
        "points": len(y),
        "freq": freq,
        "calendar": [int(s) for s in calendar],
        "season": None if calendar else detect_season(train_y),
        "basis": facts_basis(config),
    }


def adapt_config(config: ForecastConfig, ds: pd.Series, y: np.ndarray) -> ForecastConfig:
    """`config` with every empty data-dependent field filled from the series `ds` (n,), `y` (n,)."""
    return sized_config(config, series_facts(config, ds, y))


def sized_config(config: ForecastConfig, facts: dict[str, Any]) -> ForecastConfig:
    """`config` with every empty data-dependent field filled from its series' `series_facts` (computed with a
    config of the same `facts_basis`)."""
    n = int(facts["points"])
    test_start = check_long_enough(n, config)
    fields: dict[str, Any] = {"freq": facts["freq"]}
    calendar = tuple(facts["calendar"])
    seasons = calendar if config.seasons is None else config.seasons
    fields["seasons"] = tuple(seasons)
    season_length = config.season_length or min(seasons or calendar or (facts["season"],))
    fields["season_length"] = season_length
    fields["calendar"] = calendar_cycles(config, tuple(seasons)) if config.calendar is None else config.calendar

    validation_fraction = held_validation_fraction(config.validation_fraction, test_start, config.horizon)
    fields["validation_fraction"] = validation_fraction
    validation_start = split_starts(n, config.train_fraction, validation_fraction)[0]

    look_back = config.look_back
    longest = max(1, validation_start // LOOK_BACK_SHARE)
    if look_back is None:
        if seasons:
            look_back = max(2 * min(seasons), 16)
        elif season_length > 1:
            look_back = max(4 * season_length, 32)
        else:  # no cycle asks for a long memory: a short window, and more windows to learn from
            look_back = min(max(validation_start // (CYCLELESS_WINDOWS_PER_VALUE + 1), 4), 32)
        # At least the horizon: every step ahead sees as much past (and its known-future values, which lead by H).
        # One model per M4 Weekly series (13 steps), 16-series sample: OWA 0.887 -> 0.873 (windows of 4 values).
        look_back = max(look_back, config.horizon)
        look_back = max(1, min(look_back, longest))
    patch = config.patch or auto_patch(look_back)
    if config.look_back is None:  # a whole number of patches, within a quarter of the rows before validation
        look_back = min(math.ceil(look_back / patch) * patch, max(patch, longest // patch * patch))
    elif config.patch is None:
        while look_back % patch:  # a user's look_back with an automatic patch
            patch //= 2
    fields.update(look_back=look_back, patch=patch)

    fields.update(training_settings(config, max(1, validation_start - look_back)))
    fields["baselines"] = "all" if config.baselines == "auto" else config.baselines
    fields["forecast_model"] = published_model(config, global_model=False)
    return with_fields(config, **fields)


def published_model(config: ForecastConfig, global_model: bool) -> str:
    """The model of a series' rows in the run's forecast table: `config.forecast_model`, with 'auto' resolved.

    'auto' is the combination with AutoETS and AutoARIMA for a series with its own network: a network fitted
    to one series varies from fit to fit, and the statistical models pull it toward a steadier forecast (real
    series 1.021 -> 0.981 of the best baseline; one network per M4 Weekly series, OWA 0.963 -> 0.855 on 48 of
    them). A global model's network is steadier: the LSTM alone (M4 Weekly 0.729 against 0.741 combined), and
    no statistical fit per series at scale. A network that reads covariates or holidays keeps its own forecast:
    the statistical models do not see them, and half of their effect would be lost."""
    if config.forecast_model != "auto":
        return config.forecast_model
    return "lstm" if global_model or covariate_columns(config) or config.holidays else "combined"


def training_settings(config: ForecastConfig, windows: int, max_batch: int = 256) -> dict[str, int]:
    """`batch_size` (at most `max_batch`), `epochs`, `patience` and `ensemble` for `windows` training windows
    (those not set)."""
    batch_size = config.batch_size or min(max(2 ** round(math.log2(max(windows / 30, 1))), 16), max_batch)
    steps = math.ceil(windows / batch_size)
    epochs = config.epochs or min(max(math.ceil(OPTIMIZER_STEPS / steps), 60), 400)
    patience = config.patience if config.patience is not None else max(5, math.ceil(PATIENCE_STEPS / steps))
    ensemble = config.ensemble or (SMALL_DATA_ENSEMBLE if windows < SMALL_DATA_WINDOWS else 1)
    return {"batch_size": batch_size, "epochs": epochs, "patience": patience, "ensemble": ensemble}


def local_window_cap(look_back: int, channels: int) -> int:
    """The most windows of `look_back` steps of `channels` float32 values each (the value and its features) that
    a network of its own trains on per split: `LOCAL_WINDOW_BYTES` of them, at least one."""
    return max(1, LOCAL_WINDOW_BYTES // (4 * look_back * channels))


def window_cap(counts: list[int], budget: int = GLOBAL_WINDOW_BUDGET) -> int:
    """The largest per-series window count c with sum(min(count, c)) <= budget (at least 1)."""
    counts_array = np.asarray(counts, dtype="int64")
    if len(counts_array) == 0 or counts_array.sum() <= budget:
        return int(counts_array.max(initial=1))
    low, high = 1, int(counts_array.max())
    while low < high:
        middle = (low + high + 1) // 2
        if np.minimum(counts_array, middle).sum() <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def global_settings(config: ForecastConfig, sized: list[ForecastConfig], lengths: list[int]) -> dict[str, Any]:
    """The fields one network shares across series (those `config` leaves empty), from each series' own
    sized config and length.

    - `transform`: 'level' for 'auto' (every window relative to its own last value and scaled by its
      series' typical step: series of any magnitude share the network);
    - `look_back`: the median of the series' own look-backs (a whole number of patches);
    - `baselines`: 'statistical' for 'auto' (AutoARIMA per series, no fixed-order ARIMA);
    - `batch_size`, `epochs`, `patience`, `ensemble`: the single-series rule on the windows the network
      trains on (each series' most recent, at most `window_cap` from each), with at most
      `GLOBAL_OPTIMIZER_STEPS` optimizer steps' worth of epochs, in batches of at most `GLOBAL_MAX_BATCH` windows
      where that budget binds.
    Seasons, `season_length`, `freq` and `validation_fraction` stay each series' own.
    """
    fields: dict[str, Any] = {"transform": "level" if config.transform == "auto" else config.transform}
    fields["forecast_model"] = published_model(config, global_model=True)
    # Across many series AutoARIMA (searched per series) stands for ARIMA; the fixed-order ARIMA(2, d, 2)
    # of a single run would cost about as much again per long series and tell nothing more.
    fields["baselines"] = "statistical" if config.baselines == "auto" else config.baselines
    context = GLOBAL_MIN_CONTEXT
    windows = [
        max(1, split_starts(n, c.train_fraction, c.validation_fraction)[0] - context - c.horizon + 1)
        for c, n in zip(sized, lengths, strict=True)
    ]
    cap = window_cap(windows)
    trained_windows = int(np.minimum(windows, cap).sum())
    training = training_settings(config, trained_windows)
    if config.epochs is None:
        if training["epochs"] * math.ceil(trained_windows / training["batch_size"]) > GLOBAL_OPTIMIZER_STEPS:
            training = training_settings(config, trained_windows, GLOBAL_MAX_BATCH)  # the step budget binds
        steps = math.ceil(trained_windows / training["batch_size"])
        training["epochs"] = min(training["epochs"], max(1, math.ceil(GLOBAL_OPTIMIZER_STEPS / steps)))
    ensemble = config.ensemble or GLOBAL_ENSEMBLE
    look_back = config.look_back
    if look_back is None:
        base = max(int(np.median([c.look_back for c in sized])), GLOBAL_HORIZONS_SEEN * config.horizon)
        look_back = 2 * base if ensemble > 1 else base  # members read the base, twice it and half of it
    base = look_back // 2 if ensemble > 1 else look_back
    # As many values per LSTM step as keep a dozen steps or more: a global model trains on many windows,
    # and an LSTM's steps run one after another (on M4 Weekly a patch of 4 trained several times faster
    # than 1 and forecast no worse: benchmarks/README.md).
    patch = config.patch or next(p for p in (8, 4, 2, 1) if base // p >= GLOBAL_LSTM_STEPS or p == 1)
    if config.look_back is None:
        look_back = max(patch, round(look_back / patch) * patch)
    while look_back % patch:
        patch //= 2
    fields.update(training, look_back=look_back, patch=patch, ensemble=ensemble)
    if config.calendar is None:  # one network reads one set of cycles: those most series confirm
        counts: dict[int, int] = {}
        for sized_config in sized:
            for season in sized_config.seasons or ():
                counts[season] = counts.get(season, 0) + 1
        common = tuple(sorted(s for s, count in counts.items() if 2 * count >= len(sized)))
        fields["calendar"] = calendar_cycles(config, common)
    return fields


def calendar_cycles(config: ForecastConfig, seasons: tuple[int, ...]) -> tuple[int, ...]:
    """The calendar cycles the network reads by default: the seasons in use, for a model that forecasts more
    than one step. A one-step model reads where it is in each cycle from its own window (the seasons are
    removed from it and added back); on the half-hourly taylor series the features only let it overfit
    (test RMSE 231 without them, 542 with the day's cycle), while 48 steps ahead on half-hourly demand
    they took the RMSE from 0.426 to 0.353 (benchmarks/README.md)."""
    return seasons if config.horizon > 1 else ()


def statistical_sample(ids: list[str], size: int, seed: int) -> set[str]:
    """The series of a panel on which the statistical baselines are scored: every one when `size` is 0 or
    covers them all, else the `size` ids whose seeded hashes are smallest. Membership depends on the id
    alone, so adding or removing a series moves at most one other in or out of the sample."""
    if size == 0 or len(ids) <= size:
        return set(ids)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    return set(ranked[:size])


def held_validation_fraction(validation_fraction: float, test_start: int, horizon: int) -> float:
    """`validation_fraction`, grown (up to a half) so that the validation split of the `test_start` rows before
    the test split holds a horizon and two more rows."""
    if validation_fraction > 0 and test_start * validation_fraction < horizon + 2:
        return min(0.5, (horizon + 2) / test_start)
    return validation_fraction


def _fits(n: int, horizon: int, train_fraction: float, validation_fraction: float) -> bool:
    """Whether `n` points hold a horizon in the test split, a horizon and `MIN_TRAIN_ROWS` before it, and a train
    target before the validation split with the longest window the sizing may choose (a quarter of the rows)."""
    test_start = split_starts(n, train_fraction)[1]
    if test_start < horizon + MIN_TRAIN_ROWS or n - test_start < horizon:
        return False
    held = held_validation_fraction(validation_fraction, test_start, horizon)
    validation_start = split_starts(n, train_fraction, held)[0]
    return validation_start - max(1, validation_start // LOOK_BACK_SHARE) >= horizon


def fitting_train_fraction(n: int, horizon: int, validation_fraction: float) -> float | None:
    """The largest `--train-fraction` of 0.5, 0.55, …, 0.95 with which `n` points fit a horizon (`_fits`), or None."""
    fractions = [round(0.95 - 0.05 * step, 2) for step in range(10)]
    return next((f for f in fractions if _fits(n, horizon, f, validation_fraction)), None)


def check_long_enough(n: int, config: ForecastConfig) -> int:
    """The test split's first row of a series of `n` points; `TooShortError` naming the least length that fits
    when it is too short for the config's split and horizon, and the train fraction that would fit it."""
    horizon, fraction, validation = config.horizon, config.train_fraction, config.validation_fraction
    if not _fits(n, horizon, fraction, validation):
        least = next(
            length
            for length in range(n, 100 * (horizon + MIN_TRAIN_ROWS))
            if _fits(length, horizon, fraction, validation)
        )
        fitting = fitting_train_fraction(n, horizon, validation)
        # a test split too short for a horizon needs a smaller train fraction; too few rows before it, a larger one
        other = f", or --train-fraction {fitting:g}, with which they fit" if fitting is not None else ""
        raise TooShortError(
            f"the series has {n} points: too few for a {1 - fraction:.0%} test split and horizon "
            f"{horizon} (at least {least} points are needed)",
            f"pass a longer series{' or a smaller --horizon' if horizon > 1 else ''}{other}",
        )
    return split_starts(n, fraction)[1]


def stored_facts(config: ForecastConfig, store: Any, series_key: str) -> dict[str, Any]:
    """The `series_facts` of the series a generate stage stored under `series_key` (in `store`, a `Store`):
    those stored with it, or computed from it when they were computed for another `facts_basis`."""
    facts = store.read_table_metadata("generate", series_key).get("facts")
    if facts is None or facts.get("basis") != facts_basis(config):
        series = store.read_table("generate", series_key)
        facts = series_facts(config, series["ds"], series["y"].to_numpy())
    return facts


def config_for_series(config: ForecastConfig, store: Any, series_key: str) -> ForecastConfig:
    """`adapt_config` for the series a generate stage stored under `series_key` (in `store`, a `Store`)."""
    return sized_config(config, stored_facts(config, store, series_key))


def describe_adapted(config: ForecastConfig) -> str:
    """One log line of the data-sized settings."""
    return (
        f"settings sized from the data: freq {config.freq}, seasons {list(config.seasons or ())}, "
        f"seasonal-naive season {config.season_length}, look_back {config.look_back}, patch {config.patch}, "
        f"batch_size {config.batch_size}, epochs {config.epochs}, patience {config.patience}, "
        f"ensemble {config.ensemble}, calendar cycles {list(config.calendar or ())}"
    )
