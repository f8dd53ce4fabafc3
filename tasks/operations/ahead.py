"""Forecasting past the end of the data with a registered model (`lstm-forecast predict`)."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from lstm_forecast.tasks.core.calendar import future_times
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.store import Store, bytes_digest, fingerprint
from lstm_forecast.tasks.operations.registry import GLOBAL_SERIES, champion, load_registry
from lstm_forecast.tasks.stages.generate import clean_series, parsed_table, read_input_file, select_series
from lstm_forecast.tasks.stages.normalize import ModelSpace, fit_model_space
from lstm_forecast.tasks.stages.train import SavedModel, load_saved


def resolve_model(store: Store, reference: str, series_id: str = "") -> str:
    """A registry key from `champion` (of `series_id`'s models) or a key (or a unique key prefix)."""
    registry = load_registry(store)
    if registry is None or registry.empty:
        raise InputError(f"the store {store.root} has no registered model", "train one with `lstm-forecast run`")
    if reference == "champion":
        key = champion(registry, series_id)
        if key is None and series_id:  # a global model forecasts every series it was trained on
            key = champion(registry, GLOBAL_SERIES)
        if key is None:
            which = f" for series {series_id!r}" if series_id else " for a single-series input"
            raise InputError(
                f"the registry has no champion{which}",
                "run `lstm-forecast retrain` or `run` first, or name the series with --series-id",
            )
        return key
    matches = registry.loc[registry["key"].str.startswith(reference), "key"].tolist()
    if len(matches) != 1:
        raise InputError(
            f"model {reference!r} matches {len(matches)} registered models",
            "pass `champion` or a key listed by `lstm-forecast models`",
        )
    return str(matches[0])


def recursive_forecast(
    saved: SavedModel,
    space: ModelSpace,
    z: np.ndarray,
    steps: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Model-space forecasts (steps,) past the end of encoded `z` (in `space`), as `ModelSpace.decode` takes
    them from the origin `len(z)`: `horizon` at a time, each chunk fed back as input for the next.
    `progress(done, steps)` is called after each chunk."""
    history = np.asarray(z, dtype="float64")[-saved.look_back :]
    level = space.kind == "level"
    start = len(history)
    while len(history) < start + steps:
        window = space.inputs(history, np.array([len(history)]), saved.look_back, saved.patch)
        chunk = np.asarray(saved.model(window, training=False), dtype="float64").reshape(-1)
        history = np.append(history, chunk + history[-1] if level else chunk)  # back to absolute model space
        if progress is not None:
            progress(min(len(history) - start, steps), steps)
    outputs = history[start : start + steps]
    return outputs - history[start - 1] if level else outputs


MAX_PREDICT_STEPS = 10_000
_PROGRESS_EVERY_S = 5.0


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
    """A global model's space for one series (`ds, y`): its seasons and log choice, fitted on every row,
    as the global model's training fitted them for its forecaster."""
    from lstm_forecast.tasks.core.config import ForecastConfig
    from lstm_forecast.tasks.core.defaults import adapt_config

    sized = adapt_config(ForecastConfig.model_validate(config), history["ds"], history["y"].to_numpy())
    y = history["y"].to_numpy()
    return fit_model_space(y, len(y), sized.transform, tuple(sized.seasons or ()), sized.log)


def forecast_frame(history: pd.DataFrame, predictions: np.ndarray, freq: str | None = None) -> pd.DataFrame:
    """`ds, y_hat` of the steps after `history` (`ds, y`), at the calendar's next timestamps."""
    return pd.DataFrame({"ds": future_times(history["ds"], len(predictions), freq), "y_hat": predictions})


def render_forecast(history: pd.DataFrame, forecast: pd.DataFrame, title: str) -> bytes:
    """PNG: the last part of the history and the forecast after it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots()
    tail = history.tail(max(5 * len(forecast), 200))
    axes.plot(tail["ds"], tail["y"], color="0.5", linewidth=0.8, label="history")
    axes.plot(forecast["ds"], forecast["y_hat"], color="tab:red", marker=".", label="forecast")
    axes.set_title(title)
    axes.legend(loc="upper left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def damaged_model(key: str, name: str, error: Exception) -> InputError:
    """The error of a registered model whose file `name` does not load."""
    return InputError(
        f"model {key} cannot be loaded: {name} is damaged or unreadable ({type(error).__name__})",
        "rerun the `lstm-forecast run` that trained it (its config is in the model's metadata.json): a damaged "
        "model is trained again; or pass another --model (`lstm-forecast models` lists them)",
    )


def load_model_for_forecasts(store: Store, key: str) -> SavedModel:
    """`load_saved` of the model trained on every row; a file that does not load is an `InputError` naming it
    (Keras reports a garbled file as "File not found")."""
    try:
        return load_saved(store, key, forecaster=True)
    except (ValueError, OSError, KeyError, TypeError) as error:
        tried = store.forecaster_file(key) if store.forecaster_file(key).exists() else store.model_file(key)
        raise damaged_model(key, tried.name, error) from error


def forecast_with_model(
    store: Store,
    reference: str,
    horizon: int,
    input_path: str | None = None,
    time_column: str | None = None,
    value_column: str | None = None,
    series_id: str = "",
) -> dict[str, str]:
    """Forecast `horizon` steps past the end of the data with a registered model; returns paths and key."""
    if not 1 <= horizon <= MAX_PREDICT_STEPS:
        raise InputError(
            f"horizon {horizon} is not between 1 and {MAX_PREDICT_STEPS:,} steps",
            f"pass --horizon from 1 to {MAX_PREDICT_STEPS} (forecasts that far ahead feed on their own outputs)",
        )
    key = resolve_model(store, reference, series_id)
    try:
        metadata = store.read_model_metadata(key)
    except (ValueError, OSError) as error:
        raise damaged_model(key, "metadata.json", error) from error
    config = metadata["config"]
    is_global = metadata.get("scope") == "global"
    if is_global and series_id not in metadata.get("series_ids", []):
        raise InputError(
            f"model {key} is a global model of {metadata.get('series_count', 0)} series: "
            f"{'no series was named' if not series_id else f'{series_id!r} is not one of them'}",
            "name one of its series with --series-id (`lstm-forecast models` lists the inputs)",
        )
    wanted = series_id if is_global else config.get("series_id")
    if input_path:
        data, suffix = read_input_file(input_path)
        id_column = config.get("id_column", "unique_id")
        raw = select_series(parsed_table(data, suffix, id_column, input_path), id_column, wanted)  # as `run` reads it
        history, _ = clean_series(
            raw,
            time_column or config["time_column"],
            value_column or config["value_column"],
            config["nan_policy"],
            config["duplicate_policy"],
        )
        source = bytes_digest(data)
    else:
        upstream = metadata["upstream"]["series"]
        source = upstream[metadata["series_ids"].index(series_id)] if is_global else upstream
        history = store.read_table("generate", source)
    saved = load_model_for_forecasts(store, key)
    if len(history) < saved.first_origin:
        raise InputError(
            f"the series has {len(history)} points; the model needs {saved.first_origin}", "pass a longer --input"
        )
    y = history["y"].to_numpy()
    space = saved.space or series_space(config, history)
    z_hat = recursive_forecast(saved, space, space.encode(y), horizon, ProgressLine())
    values = space.decode(z_hat.reshape(1, -1), y, np.array([len(y)]))[0]
    frame = forecast_frame(history, values, config.get("freq")).assign(model=key)
    name = fingerprint("forecast", key, source, horizon)
    table, plot = store.write_forecast(name, frame, render_forecast(history, frame, f"model {key}"))
    return {"model": key, "forecast": str(table), "plot": str(plot)}
