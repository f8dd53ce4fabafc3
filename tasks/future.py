"""Forecasting past the end of the data with a registered model (`lstm-forecast predict`)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from tasks.errors import InputError
from tasks.generate import clean_series, parse_table, read_input_file, select_series
from tasks.predict import future_times
from tasks.registry import champion
from tasks.store import Store, bytes_digest, fingerprint
from tasks.train import SavedModel, load_saved


def resolve_model(store: Store, reference: str, series_id: str = "") -> str:
    """A registry key from `champion` (of `series_id`'s models) or a key (or a unique key prefix)."""
    registry = store.read_registry()
    if registry is None or registry.empty:
        raise InputError(f"the store {store.root} has no registered model", "train one with `lstm-forecast run`")
    if reference == "champion":
        key = champion(registry, series_id)
        if key is None:
            which = f" for series {series_id!r}" if series_id else " for a single-series input"
            raise InputError(f"the registry has no champion{which}",
                             "run `lstm-forecast retrain` or `run` first, or name the series with --series-id")
        return key
    matches = registry.loc[registry["key"].str.startswith(reference), "key"].tolist()
    if len(matches) != 1:
        raise InputError(f"model {reference!r} matches {len(matches)} registered models",
                         "pass `champion` or a key listed by `lstm-forecast models`")
    return str(matches[0])


def recursive_forecast(saved: SavedModel, z: np.ndarray, steps: int) -> np.ndarray:
    """Model-space forecasts (steps,) past the end of `z`: `horizon` at a time, each fed back as input."""
    history = list(np.asarray(z, dtype="float32")[-saved.look_back:])
    outputs: list[float] = []
    while len(outputs) < steps:
        window = np.asarray(history[-saved.look_back:], dtype="float32")
        chunk = saved.model(window.reshape(1, saved.look_back // saved.patch, saved.patch), training=False)
        values = [float(v) for v in np.asarray(chunk).reshape(-1)]
        outputs += values
        history += values
    return np.asarray(outputs[:steps])


def forecast_frame(history: pd.DataFrame, predictions: np.ndarray) -> pd.DataFrame:
    """`ds, y_hat` of the steps after `history` (`ds, y`)."""
    return pd.DataFrame({"ds": future_times(history["ds"], len(predictions)), "y_hat": predictions})


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


def forecast_with_model(
    store: Store, reference: str, horizon: int, input_path: str | None = None,
    time_column: str | None = None, value_column: str | None = None, series_id: str = "",
) -> dict[str, str]:
    """Forecast `horizon` steps past the end of the data with a registered model; returns paths and key."""
    if horizon < 1:
        raise InputError(f"horizon {horizon} is not a positive number of steps", "pass --horizon 1 or more")
    key = resolve_model(store, reference, series_id)
    metadata = store.read_model_metadata(key)
    config = metadata["config"]
    if input_path:
        data, suffix = read_input_file(input_path)
        raw = select_series(parse_table(data, suffix), config.get("id_column", "unique_id"), config.get("series_id"))
        history, _ = clean_series(raw, time_column or config["time_column"],
                                  value_column or config["value_column"], config["nan_policy"],
                                  config["duplicate_policy"])
        source = bytes_digest(data)
    else:
        history = store.read_table("generate", metadata["upstream"]["series"])
        source = metadata["upstream"]["series"]
    saved = load_saved(store, key)
    if len(history) < saved.first_origin:
        raise InputError(f"the series has {len(history)} points; the model needs {saved.first_origin}",
                         "pass a longer --input")
    y = history["y"].to_numpy()
    z_hat = recursive_forecast(saved, saved.space.encode(y), horizon)
    values = saved.space.decode(z_hat.reshape(1, -1), y, np.array([len(y)]))[0]
    frame = forecast_frame(history, values).assign(model=key)
    name = fingerprint("forecast", key, source, horizon)
    table, plot = store.write_forecast(name, frame, render_forecast(history, frame, f"model {key}"))
    return {"model": key, "forecast": str(table), "plot": str(plot)}


