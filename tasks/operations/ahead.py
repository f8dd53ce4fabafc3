"""Forecasting past the end of the data: the forecast table of every series (`lstm-forecast predict`, and
the table a run or a retraining publishes).

The table follows Nixtla's long format, one row per series and step: `unique_id, ds, y_hat, y_lo,
y_hi, model`, plus `model_key` (the registry key that made the row) and `made_at` (UTC, ISO 8601).
`y_lo, y_hi` is the split-conformal interval the predict stage calibrated for the model, series and
step; steps past the model's own horizon (a recursive forecast) have none.
"""

from __future__ import annotations

import io
import math
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task

from lstm_forecast.tasks.core.calendar import future_times
from lstm_forecast.tasks.core.config import ForecastConfig, covariate_columns, feature_width
from lstm_forecast.tasks.core.covariates import model_features
from lstm_forecast.tasks.core.defaults import adapt_config, confirmed_seasons, published_model
from lstm_forecast.tasks.core.errors import InputError, TooShortError
from lstm_forecast.tasks.core.intervals import naive_scale, pooled_scaled_widths, since_first_change
from lstm_forecast.tasks.core.networks import SavedModel, load_saved
from lstm_forecast.tasks.core.space import ModelSpace, constant_space, fit_model_space, read_model_space
from lstm_forecast.tasks.core.store import KEY_COLUMN, Store, fingerprint, frame_digest
from lstm_forecast.tasks.core.windows import least_context
from lstm_forecast.tasks.operations.registry import GLOBAL_SERIES, load_registry, utc_now, with_series_ids
from lstm_forecast.tasks.stages.evaluate import COMBINED, combined_future
from lstm_forecast.tasks.stages.generate import clean_series, future_rows, long_input, long_series, with_covariates
from lstm_forecast.tasks.stages.predict import HELD_OUT_SPLITS, predict_many

FORECAST_COLUMNS = ("unique_id", "ds", "y_hat", "y_lo", "y_hi", "model", "model_key", "made_at")
MODEL_NAME = "lstm"  # the `model` column, as Nixtla's tables name the model that made a row
SINGLE_SERIES = "series"  # the unique_id of a single-series input without a name of its own
MAX_PREDICT_STEPS = 10_000
NAMED_IN_ERRORS = 5  # an error about many series names this many of them
_PROGRESS_EVERY_S = 5.0


def series_label(config: dict[str, Any]) -> str:
    """The unique_id of a single-series model's rows: its `series_id`, else its input file's name, else
    `series` (the built-in series)."""
    return str(config.get("series_id") or (Path(config["input"]).stem if config.get("input") else SINGLE_SERIES))


def named(ids: list[str]) -> str:
    """A few ids for a message: `a, b, c and 7 more`."""
    shown = ", ".join(repr(i) for i in ids[:NAMED_IN_ERRORS])
    return shown + (f" and {len(ids) - NAMED_IN_ERRORS} more" if len(ids) > NAMED_IN_ERRORS else "")


# --- which model forecasts which series ------------------------------------------------------------


def models_by_series(
    registry: pd.DataFrame,
    reference: str,
    series_ids: list[str],
    global_members: Callable[[str], list[str]],
    skip_missing: bool = False,
    any_named: bool = False,
) -> dict[str, str]:
    """Series id -> the registry key of the model that forecasts it ("" is a single-series input's series).

    Args:
        registry: the model registry.
        reference: `champion` (each series' own champion, else the global champion's) or a (prefix of a) key.
        series_ids: the series wanted; empty for every series the chosen model(s) know.
        global_members: a global model's series ids, by its key.
        skip_missing: leave out the named series without a champion instead of refusing them.
        any_named: a global model also forecasts named series it was not trained on (their data is given).
    """
    registry = with_series_ids(registry)
    if reference == "champion":
        champions = registry.loc[registry["status"] == "champion"]
        own = {str(s): str(k) for s, k in zip(champions["series_id"], champions["key"], strict=True)}
        global_key = own.pop(GLOBAL_SERIES, None)
        members = global_members(global_key) if global_key else []
        if not series_ids:
            if not members and set(own) - {""}:
                own.pop("", None)  # a long-format store: its series, not a single-series champion beside them
            series_ids = list(dict.fromkeys([*members, *own])) if (members or own) else []
        known = set(members)
        chosen = {i: own.get(i) or (global_key if i in known or any_named else None) for i in series_ids}
        missing = [i for i, key in chosen.items() if key is None]
        if skip_missing:
            chosen, missing = {i: key for i, key in chosen.items() if key is not None}, []
        if missing or not chosen:
            raise InputError(
                f"the registry has no champion for series {named(missing)}"
                if missing
                else "the registry has no champion",
                "run `lstm-forecast run` or `retrain` on the input first (`lstm-forecast models` lists the models)",
            )
        return {i: str(key) for i, key in chosen.items()}
    matches = registry.loc[registry["key"].str.startswith(reference), ["key", "series_id"]]
    if len(matches) != 1:
        raise InputError(
            f"model {reference[:40]!r} matches {len(matches)} registered models",
            "pass `champion` or a key listed by `lstm-forecast models`",
        )
    key, own_series = str(matches["key"].iloc[0]), str(matches["series_id"].iloc[0])
    known = global_members(key) if own_series == GLOBAL_SERIES else [own_series]
    unknown = [i for i in series_ids if i not in set(known) and not (any_named and own_series == GLOBAL_SERIES)]
    if unknown:
        raise InputError(
            f"model {key} does not forecast series {named(unknown)}",
            "name series it was trained on with --series-id (`lstm-forecast models` lists its input)",
        )
    return {i: key for i in series_ids or known}


# --- forecasts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """One series to forecast: its rows `ds, y` (and covariate columns), the model space its model reads it
    in, and the feature channels its model reads beside the values (rows, F), reaching past the end as far as
    the forecast needs."""

    frame: pd.DataFrame
    space: ModelSpace
    features: np.ndarray | None = None


def recursive_forecasts(
    saved: SavedModel,
    histories: list[History],
    steps: int,
    progress: Callable[[int, int], None] | None = None,
    series_ids: list[str] | None = None,
) -> list[np.ndarray]:
    """Forecasts in original units (steps,) after the end of each history, all series in one model call
    per `saved.horizon` steps: each call's outputs are fed back as inputs of the next.
    `progress(done, steps)` is called after each call. `series_ids`: each history's id (the row of a series
    embedding it reads; None: no ids, the unknown row)."""
    level = [h.space.kind == "level" for h in histories]
    ys = [h.frame["y"].to_numpy() for h in histories]
    zs = [np.asarray(h.space.encode(y), dtype="float64") for h, y in zip(histories, ys, strict=True)]
    start = [len(z) for z in zs]
    done = 0
    while done < steps:
        windows = [
            saved.series_inputs(i, h.space.inputs(z, np.array([len(z)]), saved.look_back, saved.patch, h.features))
            for i, h, z in zip(series_ids or [None] * len(histories), histories, zs, strict=True)
        ]
        outputs = predict_many(saved.model, windows)
        zs = [  # back to absolute model space: plus the reference level at the call's origin
            np.append(z, out.reshape(-1) + h.space.reference(z)[-1] if is_level else out.reshape(-1))
            for h, z, out, is_level in zip(histories, zs, outputs, level, strict=True)
        ]
        done = min(done + outputs[0].shape[1] if outputs else steps, steps)
        if progress is not None:
            progress(done, steps)
    forecasts = []
    for history, y, z, first, is_level in zip(histories, ys, zs, start, level, strict=True):
        z_hat = z[first : first + steps] - (history.space.reference(z[:first])[-1] if is_level else 0.0)
        forecasts.append(history.space.decode(z_hat.reshape(1, -1), y, np.array([len(y)]))[0])
    return forecasts


class ProgressLine:
    """Every few seconds of a long forecast, one line on stderr: how many steps are done."""

    def __init__(self, every_s: float = _PROGRESS_EVERY_S) -> None:
        self.every_s = every_s
        self.last = time.monotonic()

    def __call__(self, done: int, steps: int) -> None:
        now = time.monotonic()
        if done < steps and now - self.last >= self.every_s:
            self.last = now
            print(f"forecast: {done:,} of {steps:,} steps", file=sys.stderr, flush=True)


def series_space(config: dict[str, Any], history: pd.DataFrame) -> ModelSpace:
    """A global model's space for one series (`ds, y`) it reads anew: its seasons and log choice, fitted on
    every row, as the global model's training fitted them for its forecaster. A series too short for a test
    split of its own has its seasons judged on every row: those of the model's calendar cycles (the seasons most
    of its panel confirmed) that it holds two cycles of and confirms itself (the network read its members'
    windows with those seasons removed). A series constant on every row is forecast as that constant
    (`constant_space`)."""
    y = history["y"].to_numpy()
    if (constant := constant_space(y)) is not None:
        return constant
    own = ForecastConfig.model_validate(config)
    try:
        sized = adapt_config(own, history["ds"], y)
    except TooShortError:
        seasons = own.seasons if own.seasons is not None else confirmed_seasons(y, tuple(own.calendar or ()))
        return fit_model_space(y, len(y), own.transform, tuple(seasons), own.log)
    return fit_model_space(y, len(y), sized.transform, tuple(sized.seasons or ()), sized.log)


def forecast_rows(
    series_id: str,
    history: pd.DataFrame,
    y_hat: np.ndarray,
    model_key: str,
    freq: str | None = None,
    model: str = MODEL_NAME,
) -> pd.DataFrame:
    """`unique_id, ds, step, y_hat, model, model_key` of the steps after `history` (`ds, y`), at the
    calendar's next timestamps; `model`: what made them (the LSTM, or its combination)."""
    return pd.DataFrame(
        {
            "unique_id": series_id,
            "ds": future_times(history["ds"], len(y_hat), freq),
            "step": np.arange(1, len(y_hat) + 1),
            "y_hat": y_hat,
            "model": model,
            "model_key": model_key,
        }
    )


WIDTH_KEYS = ["unique_id", "model_key", "model", "step"]  # an interval half-width is a model's, per series and step


def forecast_table(rows: pd.DataFrame, widths: pd.DataFrame | None, made_at: str) -> pd.DataFrame:
    """The forecast table (`FORECAST_COLUMNS`) from `forecast_rows` of many series and the interval
    half-widths `unique_id, model_key, model, step, half_width` (rows without one get no interval; widths
    kept before they named their model are the LSTM's)."""
    if "model" not in rows:
        rows = rows.assign(model=MODEL_NAME)
    if widths is not None and len(widths):
        widths = widths if "model" in widths else widths.assign(model=MODEL_NAME)
        rows = rows.merge(widths[[*WIDTH_KEYS, "half_width"]], on=WIDTH_KEYS, how="left", validate="one_to_one")
    else:
        rows = rows.assign(half_width=np.nan)
    table = rows.assign(
        y_lo=rows["y_hat"] - rows["half_width"], y_hi=rows["y_hat"] + rows["half_width"], made_at=made_at
    )
    return table.loc[:, list(FORECAST_COLUMNS)].reset_index(drop=True)


def interval_widths(table: pd.DataFrame) -> pd.DataFrame:
    """`unique_id, model_key, model, step, half_width` of a forecast table with intervals (steps numbered per
    series, model key and model in row order)."""
    step = table.groupby(["unique_id", "model_key", "model"], sort=False).cumcount() + 1
    return pd.DataFrame(
        {
            "unique_id": table["unique_id"].to_numpy(),
            "model_key": table["model_key"].to_numpy(),
            "model": table["model"].to_numpy(),
            "step": step.to_numpy(),
            "half_width": (table["y_hi"] - table["y_hat"]).to_numpy(),
        }
    ).dropna(subset=["half_width"])


# The predict columns `table_from_predictions` reads.
FORECAST_READ = ("split", "step", "ds", "y_hat", "y_lo", "y_hi")


def table_from_predictions(
    stacked: pd.DataFrame,
    series_of_key: dict[str, tuple[str, str]],
    made_at: str,
    combined: dict[str, tuple[list[float], list[float]]] | None = None,
) -> pd.DataFrame:
    """The forecast table of a run: its predict outputs' `forecast` rows (stacked by `Store.read_tables`,
    column `_key`), each predict key naming its `(unique_id, model key)`. `combined`: predict key -> the
    combined forecast of its steps and their interval half-widths (evaluate's `combined_forecast` and
    `combined_widths`); those series' rows carry them, model `combined`."""
    forecasts = stacked.loc[stacked["split"] == "forecast"]
    keys = forecasts[KEY_COLUMN].astype(str)
    y_hat = forecasts["y_hat"].to_numpy("float64").copy()
    y_lo, y_hi = forecasts["y_lo"].to_numpy("float64").copy(), forecasts["y_hi"].to_numpy("float64").copy()
    model = np.full(len(forecasts), MODEL_NAME, dtype=object)
    if combined:
        steps = forecasts["step"].to_numpy()
        for index in np.flatnonzero(keys.isin(list(combined)).to_numpy()):
            values, widths = combined[keys.iat[index]]
            y_hat[index] = values[steps[index] - 1]
            y_lo[index], y_hi[index] = y_hat[index] - widths[steps[index] - 1], y_hat[index] + widths[steps[index] - 1]
            model[index] = COMBINED
    rows = pd.DataFrame(
        {
            "unique_id": keys.map(lambda k: series_of_key[k][0]).to_numpy(),
            "ds": forecasts["ds"].to_numpy(),
            "y_hat": y_hat,
            "y_lo": y_lo,
            "y_hi": y_hi,
            "model": model,
            "model_key": keys.map(lambda k: series_of_key[k][1]).to_numpy(),
            "made_at": made_at,
        }
    )
    return rows.loc[:, list(FORECAST_COLUMNS)]


def render_forecast(history: pd.DataFrame, forecast: pd.DataFrame, title: str) -> bytes:
    """PNG: the last part of one series' history and its forecast (`ds, y_hat`, with `y_lo, y_hi`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots()
    tail = history.tail(max(5 * len(forecast), 200))
    axes.plot(tail["ds"], tail["y"], color="0.5", linewidth=0.8, label="history")
    if forecast["y_lo"].notna().any():
        axes.fill_between(forecast["ds"], forecast["y_lo"], forecast["y_hi"], color="tab:red", alpha=0.15)
    axes.plot(forecast["ds"], forecast["y_hat"], color="tab:red", marker=".", label="forecast")
    axes.set_title(title)
    axes.legend(loc="upper left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


# --- the store ---------------------------------------------------------------------------------------


def damaged_model(key: str, name: str, error: Exception) -> InputError:
    """The error of a registered model whose file `name` does not load."""
    return InputError(
        f"model {key} cannot be loaded: {name} is damaged or unreadable ({type(error).__name__})",
        "rerun the `lstm-forecast run` that trained it (its config is in the model's metadata.json): a damaged "
        "model is trained again; or pass another --model (`lstm-forecast models` lists them)",
    )


def model_for_forecasts(store: Store, key: str) -> tuple[dict[str, Any], SavedModel]:
    """A model's metadata and `load_saved` of its network trained on every row; a file that does not load is
    an `InputError` naming it (Keras reports a garbled file as "File not found")."""
    try:
        metadata = store.read_model_metadata(key)
    except (ValueError, OSError) as error:
        raise damaged_model(key, "metadata.json", error) from error
    try:
        return metadata, load_saved(store, key, forecaster=True)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as error:
        tried = store.forecaster_file(key) if store.forecaster_file(key).exists() else store.model_file(key)
        tried = store.arrays_file(tried) if store.arrays_file(tried).exists() else tried  # what was read
        raise damaged_model(key, tried.name, error) from error


def global_members(store: Store) -> Callable[[str], list[str]]:
    """A global model's series ids, by its key: those it was trained on (its metadata), then those its last run
    forecast without scoring them (too short: `Store.read_unscored_series`)."""

    def members(key: str) -> list[str]:
        trained = [str(i) for i in store.read_model_metadata(key).get("series_ids", [])]
        return list(dict.fromkeys([*trained, *store.unscored_series_ids(key)]))

    return members


def stored_histories(
    store: Store, metadata: dict[str, Any], series_ids: list[str], saved_space: ModelSpace | None
) -> dict[str, History]:
    """The series a model was trained on, as its training stored them, each with the forecaster's space
    of that training (what the run's predict stage used): a local model's own, a global model's per series.
    A global model's series too short to be scored are read as its last run kept them, each in a space fitted on
    its own rows (as the run forecast them)."""
    upstream = metadata["upstream"]
    future = metadata["config"].get("future_columns")
    if saved_space is not None:
        frame = store.read_table("generate", upstream["series"])
        frame.attrs["future"] = store.future_values(upstream["series"]) if future else None
        return {series_ids[0]: History(frame, saved_space)}
    position = {str(i): n for n, i in enumerate(metadata["series_ids"])}
    trained = [i for i in series_ids if i in position]
    others = [i for i in series_ids if i not in position]
    unscored = store.read_unscored_series(metadata["key"], others) if others else {}
    series_keys = [upstream["series"][position[i]] for i in trained]
    frames = store.read_tables("generate", series_keys) if series_keys else pd.DataFrame(columns=[KEY_COLUMN])
    by_key = {
        str(k): f.drop(columns=KEY_COLUMN).reset_index(drop=True) for k, f in frames.groupby(KEY_COLUMN, observed=True)
    }
    for key, frame in by_key.items():
        frame.attrs["future"] = store.future_values(key) if future else None
    histories = {
        i: History(by_key[key], read_model_space(store, upstream["normalize"][position[i]], forecaster=True))
        for i, key in zip(trained, series_keys, strict=True)
    }
    histories |= {i: History(f, series_space(metadata["config"], f)) for i, f in unscored.items()}
    return {i: histories[i] for i in series_ids if i in histories}


# (model metadata, ids) -> each series' `ds, y` and covariate columns; `frame.attrs["future"]` holds the future
# columns' values after it, when the model reads any.
FramesOf = Callable[[dict[str, Any], list[str]], dict[str, pd.DataFrame]]


def input_frames(
    input_path: str,
    time_column: str | None = None,
    value_column: str | None = None,
    future_path: str | None = None,
) -> FramesOf:
    """The series of a new input file (a single series: the whole file), cleaned as the model's config says,
    with the future columns' values after it from `future_path`."""

    def frames(metadata: dict[str, Any], series_ids: list[str]) -> dict[str, pd.DataFrame]:
        config = metadata["config"]
        id_column = config.get("id_column", "unique_id")
        _, table, rows = long_input(input_path, id_column)
        found = {}
        for series_id in series_ids:
            raw = long_series(table, rows, id_column, series_id) if id_column in table else table
            own = ForecastConfig.model_validate(
                config
                | {
                    "time_column": time_column or config["time_column"],
                    "value_column": value_column or config["value_column"],
                    "series_id": series_id or None,
                    "future": future_path if config.get("future_columns") else None,
                }
            )
            series, _ = clean_series(raw, own.time_column, own.value_column, own.nan_policy, own.duplicate_policy)
            series = with_covariates(series, raw, own, covariate_columns(own))
            if own.future_columns:
                if not future_path:
                    raise InputError(
                        f"model {metadata.get('key', '')} reads the future columns "
                        f"{', '.join(own.future_columns)}: their values after the data are needed",
                        "pass --future FILE (unique_id, ds and those columns) covering the horizon",
                    )
                series.attrs["future"] = future_rows(own, series).to_dict(orient="list")
            found[series_id] = series
        return found

    return frames


def generated_frames(store: Store, series_keys: dict[str, str]) -> FramesOf:
    """The series a run generated (series id -> its generate key): a retraining's current data."""

    def frames(metadata: dict[str, Any], series_ids: list[str]) -> dict[str, pd.DataFrame]:
        stacked = store.read_tables("generate", [series_keys[i] for i in series_ids])
        by_key = {str(k): f.drop(columns=KEY_COLUMN) for k, f in stacked.groupby(KEY_COLUMN, observed=True)}
        found = {i: by_key[series_keys[i]].reset_index(drop=True) for i in series_ids}
        if metadata["config"].get("future_columns"):
            for series_id, frame in found.items():
                frame.attrs["future"] = store.future_values(series_keys[series_id])
        return found

    return frames


def generated_and_input_frames(store: Store, series_keys: dict[str, str], config: ForecastConfig) -> FramesOf:
    """`generated_frames` for the series a run generated, and for the others (too short to be generated) the
    run's input file as `input_frames` reads it."""
    generated = generated_frames(store, series_keys)
    given = input_frames(str(config.input), future_path=config.future) if config.input else None

    def frames(metadata: dict[str, Any], series_ids: list[str]) -> dict[str, pd.DataFrame]:
        stored = [i for i in series_ids if i in series_keys]
        found = generated(metadata, stored) if stored else {}
        others = [i for i in series_ids if i not in series_keys]
        if others and given is not None:
            found |= given(metadata, others)
        return {i: found[i] for i in series_ids if i in found}

    return frames


def with_features(saved: SavedModel, series: dict[str, History], steps: int) -> dict[str, History]:
    """The histories with the feature channels `saved` reads (`model_features`), for every row a forecast of
    `steps` (fed back every `saved.horizon` steps) looks at; unchanged for a model that reads none."""
    if not feature_width(saved.forecast_config):
        return series
    out = {}
    for series_id, history in series.items():
        rows = len(history.frame) + (math.ceil(steps / saved.horizon) - 1) * saved.horizon
        features = model_features(saved.forecast_config, history.frame, history.frame.attrs.get("future"), rows)
        out[series_id] = History(history.frame, history.space, features)
    return out


def own_config(saved: SavedModel, history: History) -> ForecastConfig:
    """The config a series' statistical models read: a local model's own, or a global model's sized for the
    series (its seasons are each series' own, as evaluate's were)."""
    config = saved.forecast_config
    if not saved.is_global:
        return config
    return adapt_config(config, history.frame["ds"], history.frame["y"].to_numpy())


def published_combined(calibration: pd.DataFrame | None) -> set[str]:
    """The series whose run published the combination with the statistical models (their calibration holds
    its interval): `predict` forecasts them the same way, the statistical models refitted on the data given."""
    if calibration is None or "model" not in calibration:
        return set()
    return set(calibration.loc[calibration["model"] == COMBINED, "unique_id"].astype(str))


def forecast_every_series(
    store: Store,
    reference: str,
    horizon: int,
    series_ids: list[str] | None = None,
    frames_of: FramesOf | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The forecast table of every series the chosen model(s) forecast (`models_by_series`), `horizon`
    steps past the end of the data: the model's training data, or the series `frames_of` gives (a new
    input; a global model then reads each in a space fitted on its rows). One model call per model and
    `horizon` steps for all its series. Also returns each series' history (`ds, y`) by unique_id.

    Raises:
        InputError: a horizon out of bounds, no such model or series, or a series too short.
    """
    if not 1 <= horizon <= MAX_PREDICT_STEPS:
        raise InputError(
            f"horizon {horizon} is not between 1 and {MAX_PREDICT_STEPS:,} steps",
            f"pass --horizon from 1 to {MAX_PREDICT_STEPS} (forecasts that far ahead feed on their own outputs)",
        )
    registry = load_registry(store)
    if registry is None or registry.empty:
        raise InputError(f"the store {store.root} has no registered model", "train one with `lstm-forecast run`")
    # With new data a global model also forecasts series it was not trained on (too short to be scored, or new).
    assigned = models_by_series(
        registry, reference, list(series_ids or []), global_members(store), any_named=frames_of is not None
    )
    parts: list[pd.DataFrame] = []
    widths: list[pd.DataFrame] = []
    histories: dict[str, pd.DataFrame] = {}
    for key in dict.fromkeys(assigned.values()):
        ids = [i for i, k in assigned.items() if k == key]
        metadata, saved = model_for_forecasts(store, key)
        if frames_of is None:
            series = stored_histories(store, metadata, ids, saved.space)
        else:
            frames = frames_of(metadata, ids)
            series = {i: History(f, saved.space or series_space(metadata["config"], f)) for i, f in frames.items()}
        short = [i for i, h in series.items() if len(h.frame) < saved.first_origin]
        if short:
            raise InputError(
                f"series {named(short)} have fewer than the {saved.first_origin} points model {key} needs",
                "pass a longer --input, or leave those series out with --series-id",
            )
        series = with_features(saved, series, horizon)
        values = recursive_forecasts(saved, list(series.values()), horizon, progress, list(series))
        labels = {i: i or series_label(metadata["config"]) for i in ids}
        freq = metadata["config"].get("freq")
        calibration = store.read_calibration(key)
        combine = published_combined(calibration)
        for (series_id, history), y_hat in zip(series.items(), values, strict=True):
            model, label = MODEL_NAME, labels[series_id]
            mixed = combined_future(own_config(saved, history), history.frame["y"], y_hat) if label in combine else None
            if mixed is not None:
                model, y_hat = COMBINED, mixed
            parts.append(forecast_rows(label, history.frame, y_hat, key, freq, model))
            histories[label] = history.frame
        if calibration is not None:
            own = calibration.loc[calibration["unique_id"].isin(set(labels.values()))]
            widths.append(own.loc[own["model"] != POOLED] if "model" in own else own)
            # a series the model has no widths of (a new one): the panel's pooled widths in its own units
            labelled = {labels[i]: history.frame for i, history in series.items() if labels[i] not in combine}
            widths.append(pooled_widths_for(calibration, labelled))
    table = forecast_table(pd.concat(parts, ignore_index=True), pd.concat(widths) if widths else None, utc_now())
    return table, histories


def predict_table(
    store: Store,
    reference: str,
    horizon: int,
    series_ids: list[str] | None = None,
    input_path: str | None = None,
    time_column: str | None = None,
    value_column: str | None = None,
    future_path: str | None = None,
) -> dict[str, Any]:
    """`lstm-forecast predict`: `forecast_every_series`, written to the store (and a plot when it is one
    series); returns the table's path, its models and its series count. `future_path`: the future columns'
    values after `input_path`'s data, for models that read known-future columns."""
    if future_path and not input_path:
        raise InputError(
            "--future gives the future columns after new data, and no --input was given",
            "pass the data the forecast starts from with --input, and its future values with --future",
        )
    frames_of = input_frames(input_path, time_column, value_column, future_path) if input_path else None
    table, histories = forecast_every_series(store, reference, horizon, series_ids, frames_of, ProgressLine())
    models = sorted(table["model_key"].unique())
    made = table["made_at"].iloc[0]
    name = fingerprint("forecast", models, sorted(histories), horizon, input_path or "", future_path or "", made)
    path = store.write_forecast_table(name, table)
    plot = None
    if len(histories) == 1:
        ((series_id, history),) = histories.items()
        plot = store.write_forecast_plot(name, render_forecast(history, table, f"{series_id}: model {models[0]}"))
    return {
        "forecast": str(path),
        "plot": str(plot) if plot else None,
        "model": models[0] if len(models) == 1 else models,
        "series": len(histories),
        "rows": len(table),
        "table": table,
    }


def publish_table(
    store: Store,
    table: pd.DataFrame,
    key: str,
    calibrated: pd.DataFrame | None = None,
    pooled: pd.DataFrame | None = None,
) -> Path:
    """Keep a run's forecast table under `key` (written once: a cached run finds it) and each model's
    interval half-widths for later `predict` calls, from `calibrated` (forecast rows with intervals; default:
    the table's), with a global model's `pooled_rows`; returns the table's path."""
    path = store.forecast_table_path(key)
    if not path.exists():
        path = store.write_forecast_table(key, table)
        widths = interval_widths(table if calibrated is None else calibrated)
        if pooled is not None:
            widths = pd.concat([widths, pooled], ignore_index=True)
        for model_key, part in widths.groupby("model_key", sort=False):
            store.write_calibration(str(model_key), part.reset_index(drop=True))
    return path


def unscored_frames(
    config: ForecastConfig, model_key: str, series_ids: list[str]
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The series of a panel too short to be scored that its global model `model_key` can forecast (read from
    the run's input, cleaned as a run cleans them), and why it cannot forecast the others (fewer points than
    a window's least context). Reads no network."""
    metadata = Store(config.artifacts_dir).read_model_metadata(model_key)
    least = least_context(int(metadata["config"]["look_back"]))
    frames = input_frames(str(config.input), future_path=config.future)(metadata, series_ids)
    fewer = {i: f"fewer than the {least} points the global model reads at least" for i, f in frames.items()}
    return (
        {i: f for i, f in frames.items() if len(f) >= least},
        {i: why for i, why in fewer.items() if len(frames[i]) < least},
    )


# The series whose calibration errors size the intervals of series too short to be scored (and of new series
# `predict --input` forecasts): at most this many, from at most `CALIBRATION_PACKS` of the run's predict packs
# spread over the panel (each pack read is a whole file, and a 100,000-series run has a hundred of them).
UNSCORED_CALIBRATION_SERIES = 1000
CALIBRATION_PACKS = 4
# The `model` of a global model's calibration rows that hold its pooled widths in units of a series' naive scale
# (one per step, `unique_id` empty): the intervals of series it forecasts without widths of their own.
POOLED = "pooled"


def spread_sample(locations: dict[str, Path], most: int, files: int = CALIBRATION_PACKS) -> list[str]:
    """Up to `most` of the keys of `locations` (key -> the file that holds it), read from few files: `files` of
    them evenly spaced from the first (in path order), `most / files` keys from each, then the other files'
    keys in order until `most` are taken."""
    by_file: dict[Path, list[str]] = {}
    for key in sorted(locations):
        by_file.setdefault(locations[key], []).append(key)
    paths = sorted(by_file)
    spread = paths[:: max(1, len(paths) // files)][:files]
    per_file = math.ceil(most / max(1, len(spread)))
    chosen = [key for path in spread for key in by_file[path][:per_file]]
    if len(chosen) < most:
        taken = set(chosen)
        chosen += [key for path in paths for key in by_file[path] if key not in taken][: most - len(chosen)]
    return chosen[:most]


def unscored_widths(store: Store, predict_keys: list[str], level: float) -> np.ndarray | None:
    """Interval half-widths per step (horizon,), in units of a series' `naive_scale`, for the series that have
    no held-out errors of their own (too short to be scored, or new): the split-conformal quantile of the
    scored series' held-out errors (validation and test, as their own forecasts' intervals; train where there
    are none), pooled over a `spread_sample` of them, each error divided by its series' naive scale
    (`pooled_scaled_widths`)."""
    keys = spread_sample(store.locations("predict", predict_keys), UNSCORED_CALIBRATION_SERIES)
    columns = ("y", "y_hat", "step")  # what `pooled_scaled_widths` reads
    rows = store.read_tables("predict", keys, where={"split": HELD_OUT_SPLITS}, columns=columns)  # in time order
    if not len(rows):
        rows = store.read_tables("predict", keys, where={"split": "train"}, columns=columns)
    return pooled_scaled_widths(rows, level) if len(rows) else None


def own_scale(y: np.ndarray) -> float:
    """The unit a series without held-out errors of its own multiplies the pooled widths by: its `naive_scale`
    since its first change (a late launch's interval is not narrowed by its zeros before it)."""
    return naive_scale(since_first_change(y))


def pooled_rows(model_key: str, scaled_widths: np.ndarray) -> pd.DataFrame:
    """A global model's calibration rows (`POOLED`) for its pooled `scaled_widths` (horizon,)."""
    return pd.DataFrame(
        {
            "unique_id": "",
            "model_key": model_key,
            "model": POOLED,
            "step": np.arange(1, len(scaled_widths) + 1),
            "half_width": scaled_widths,
        }
    )


def pooled_widths_for(
    calibration: pd.DataFrame, histories: dict[str, pd.DataFrame], model: str = MODEL_NAME
) -> pd.DataFrame:
    """Interval half-widths (`WIDTH_KEYS`, `half_width`) for the series of `histories` (label -> frame with `y`)
    that have none in `calibration`: its `POOLED` widths times each series' own naive scale; empty when it
    has none (a model of one series, or kept before they were)."""
    pooled = calibration.loc[calibration["model"] == POOLED] if "model" in calibration else calibration.iloc[:0]
    own = set(calibration.loc[calibration["model"] != POOLED, "unique_id"].astype(str)) if len(pooled) else set()
    missing = [label for label in histories if label not in own]
    if pooled.empty or not missing:
        return calibration.iloc[:0]
    steps = pooled.sort_values("step")
    return pd.concat(
        [
            steps.assign(
                unique_id=label,
                model=model,
                half_width=steps["half_width"].to_numpy() * own_scale(histories[label]["y"].to_numpy()),
            )
            for label in missing
        ],
        ignore_index=True,
    )


def unscored_forecasts(
    store: Store,
    model_key: str,
    frames: dict[str, pd.DataFrame],
    made_at: str,
    scaled_widths: np.ndarray | None = None,
) -> pd.DataFrame:
    """The forecast table rows of series too short to be scored, by the global model `model_key` trained on
    every row: each read in a space fitted on its own rows, from a window padded with its first value as the
    model's training padded short windows. Their intervals are `scaled_widths` (`unscored_widths`) times each
    series' own naive scale; none where either is missing: there are no held-out errors of theirs."""
    metadata, saved = model_for_forecasts(store, model_key)
    histories = {i: History(f, series_space(metadata["config"], f)) for i, f in frames.items()}
    histories = with_features(saved, histories, saved.horizon)
    values = recursive_forecasts(saved, list(histories.values()), saved.horizon, series_ids=list(histories))
    freq = metadata["config"].get("freq")
    rows = pd.concat(
        [
            forecast_rows(i, h.frame, y_hat, model_key, freq)
            for (i, h), y_hat in zip(histories.items(), values, strict=True)
        ],
        ignore_index=True,
    )
    widths = None
    if scaled_widths is not None:
        scale = {i: own_scale(f["y"].to_numpy()) for i, f in frames.items()}
        widths = rows[WIDTH_KEYS].assign(
            half_width=rows["unique_id"].map(scale).to_numpy("float64") * scaled_widths[rows["step"].to_numpy() - 1]
        )
    return forecast_table(rows, widths, made_at)


@task(name="forecast-table", result_serializer="json")
def publish_forecasts(
    config: ForecastConfig,
    predictions: Mapping[str, list[str]],
    global_model: bool,
    unscored: tuple[str, dict[str, pd.DataFrame]] | None = None,
) -> str:
    """A run's forecast table from its predict outputs (predict key -> `[unique_id, model key, evaluate key]`),
    and with `unscored` (a global model's key, and the series too short to be scored it forecasts:
    `unscored_frames`) their rows; kept by a key of those outputs and series and the model it publishes
    (`published_model`): a cached run finds it and writes nothing. Returns its path."""
    store = Store(config.artifacts_dir)
    model = published_model(config, global_model)
    unscored_key = None
    if unscored is not None:
        # "pooled widths": their intervals, added later than their rows (a table kept without them is not reused)
        unscored_key = [unscored[0], sorted((i, frame_digest(f)) for i, f in unscored[1].items()), "pooled widths"]
    # a global model's calibration keeps its pooled widths, for the new series `predict --input` forecasts
    tags = [*([unscored_key] if unscored else []), *(["pooled widths kept"] if global_model else [])]
    key = fingerprint("forecast-table", sorted(predictions.items()), model, *tags)
    if global_model and predictions:  # what `predict` forecasts them from: this run's, whatever an earlier one kept
        model_key = str(next(iter(predictions.values()))[1])
        store.write_unscored_series(model_key, unscored[1] if unscored is not None else {})
    if store.forecast_table_path(key).exists():
        return str(store.forecast_table_path(key))
    stacked = store.read_tables("predict", list(predictions), where={"split": "forecast"}, columns=FORECAST_READ)
    series_of_key = {k: (str(v[0]), str(v[1])) for k, v in predictions.items()}
    made_at = utc_now()
    table = table_from_predictions(stacked, series_of_key, made_at)
    scaled_widths, pooled, extra = None, None, None
    if global_model and predictions:
        scaled_widths = unscored_widths(store, list(predictions), config.interval_level)
        pooled = pooled_rows(model_key, scaled_widths) if scaled_widths is not None else None
    if unscored is not None and unscored[1]:
        extra = unscored_forecasts(store, *unscored, made_at, scaled_widths)
    if extra is not None:
        table = pd.concat([table, extra], ignore_index=True)
    if model != COMBINED:
        return str(publish_table(store, table, key, pooled=pooled))
    found = {k: store.read_table_metadata("evaluate", v[2]) for k, v in predictions.items()}
    combined = {  # the series whose statistical baselines were fitted
        k: (meta["combined_forecast"], meta["combined_widths"])
        for k, meta in found.items()
        if meta.get("combined_forecast")
    }
    published = table_from_predictions(stacked, series_of_key, made_at, combined)
    if extra is not None:  # the network's forecast: there is no statistical fit of theirs to combine it with
        published = pd.concat([published, extra], ignore_index=True)
    # Both models' intervals are kept: `predict` forecasts a series with the model its run published.
    both = pd.concat([table, published.loc[published["model"] == COMBINED]], ignore_index=True)
    return str(publish_table(store, published, key, both, pooled))


@task(name="publish-forecasts", result_serializer="json")
def publish_latest(config: ForecastConfig, series_keys: dict[str, str], run_table: str | None) -> dict[str, Any]:
    """After a retraining: every series of the run forecast by the champion left in place, published as
    `forecasts/latest.parquet`. The series are those the run generated (series id -> its generate key) and those
    its table forecast without scoring them (too short: read from the run's input). When the champions are the
    run's own models that is the run's table (`run_table`); otherwise the champions forecast the run's data
    anew: a kept global champion also forecasts the series it was not trained on (new ones, too short ones),
    as `predict --input` does. Returns the paths, the champions and the number of series."""
    store = Store(config.artifacts_dir)
    registry = load_registry(store)
    run_rows = pd.DataFrame(columns=["unique_id", "model_key"])
    if run_table is not None:
        run_rows = pd.read_parquet(run_table, columns=["unique_id", "model_key"])
    run_ids = run_rows["unique_id"].unique()
    unscored = [str(i) for i in run_ids if str(i) not in series_keys] if config.input else []
    if registry is None or not (series_keys or unscored):
        raise InputError("nothing to publish: no series was forecast", "fix the errors above, then retrain")
    wanted = [*series_keys, *unscored]
    assigned = models_by_series(
        registry, "champion", wanted, global_members(store), skip_missing=True, any_named=bool(config.input)
    )
    if len(assigned) < len(wanted):
        get_run_logger().warning(
            "%d of %d series have no champion yet (new series the kept champions were not trained on): "
            "they are left out of the published table until a model of them is promoted",
            len(wanted) - len(assigned),
            len(wanted),
        )
    champions = sorted(set(assigned.values()))
    run_models = set(run_rows["model_key"])
    if run_table is not None and set(champions) <= run_models:
        path = Path(run_table)
    else:  # kept by a key of its champions and the run's series: a retraining that changed nothing reuses it
        run_data = [Path(run_table).stem] if unscored and run_table else []  # the unscored series' data, by the table
        key = fingerprint("published", sorted(assigned.items()), sorted(series_keys.items()), config.horizon, *run_data)
        path = store.forecast_table_path(key)
        if not path.exists():
            frames = generated_and_input_frames(store, series_keys, config)
            table, _ = forecast_every_series(store, "champion", config.horizon, list(assigned), frames)
            path = store.write_forecast_table(key, table)
    latest = store.publish_latest_forecasts(path.stem)
    get_run_logger().info("published the forecasts of %d series by %s: %s", len(assigned), ", ".join(champions), latest)
    return {"latest": str(latest), "table": str(path), "champions": champions, "series": len(assigned)}
