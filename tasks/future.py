"""Forecasting past the end of the data with a registered model (`lstm-forecast predict`)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from tasks.errors import InputError
from tasks.generate import clean_series, parse_table, read_input_file
from tasks.normalize import MinMaxParams
from tasks.predict import future_times, recursive_forecast
from tasks.registry import champion
from tasks.store import Store, bytes_digest, fingerprint
from tasks.train import load_model


def resolve_model(store: Store, reference: str) -> str:
    """A registry key from `champion` or a key (or a unique key prefix)."""
    registry = store.read_registry()
    if registry is None or registry.empty:
        raise InputError(f"the store {store.root} has no registered model", "train one with `lstm-forecast run`")
    if reference == "champion":
        key = champion(registry)
        if key is None:
            raise InputError("the registry has no champion", "run `lstm-forecast retrain` or `run` first")
        return key
    matches = registry.loc[registry["key"].str.startswith(reference), "key"].tolist()
    if len(matches) != 1:
        raise InputError(f"model {reference!r} matches {len(matches)} registered models",
                         "pass `champion` or a key listed by `lstm-forecast models`")
    return str(matches[0])


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
    time_column: str | None = None, value_column: str | None = None,
) -> dict[str, str]:
    """Forecast `horizon` steps past the end of the data with a registered model; returns paths and key."""
    if horizon < 1:
        raise InputError(f"horizon {horizon} is not a positive number of steps", "pass --horizon 1 or more")
    key = resolve_model(store, reference)
    metadata = store.read_model_metadata(key)
    config = metadata["config"]
    if input_path:
        data, suffix = read_input_file(input_path)
        history, _ = clean_series(parse_table(data, suffix), time_column or config["time_column"],
                                  value_column or config["value_column"], config["nan_policy"],
                                  config["duplicate_policy"])
        source = bytes_digest(data)
    else:
        history = store.read_table("generate", metadata["upstream"]["series"])
        source = metadata["upstream"]["series"]
    look_back = int(config["look_back"])
    if len(history) < look_back:
        raise InputError(f"the series has {len(history)} points; the model needs {look_back}",
                         "pass a longer --input")
    scaler = MinMaxParams(metadata["scaler"]["data_min"], metadata["scaler"]["data_max"])
    scaled = recursive_forecast(load_model(store.model_file(key)), scaler.scale(history["y"].to_numpy()),
                                look_back, horizon)
    frame = forecast_frame(history, scaler.unscale(scaled)).assign(model=key)
    name = fingerprint("forecast", key, source, horizon)
    table, plot = store.write_forecast(name, frame, render_forecast(history, frame, f"model {key}"))
    return {"model": key, "forecast": str(table), "plot": str(plot)}


