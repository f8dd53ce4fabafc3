"""Stage 8, plot: the series with every prediction on its own timestamp, a zoom on
the test period, and the training loss curve. Saved as PNG and shown in the Prefect UI.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.store import Store

ZOOM_POINTS = 300
THUMBNAIL_SCALE = 0.4  # the UI's copy: 480 x 400 pixels of the 1200 x 1000 plot


def import_plotting() -> None:
    """Import what drawing a plot needs (matplotlib's Figure on the Agg canvas, and PIL: about 0.3 s in a Dask
    worker), and draw a small figure: a process's first plot also builds matplotlib's mathtext parser (the loss
    axis' log-scale labels) and loads its fonts, 0.36 s against 0.19 s for the next one. A panel's run has its
    workers do it while the network trains, not before the UI's plots."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from PIL import Image  # noqa: F401

    axes = Figure(figsize=(2, 2)).subplots()
    axes.plot([1, 2], [0.1, 1.0], label="loss")
    axes.set_yscale("log")
    axes.legend(fontsize="small")
    axes.set_title("warm-up")
    axes.figure.savefig(io.BytesIO(), format="png", dpi=100)


def draw_figure(series: pd.DataFrame, predictions: pd.DataFrame, history: dict[str, list[float]]) -> Any:
    """A three-panel matplotlib Figure: overview, test zoom, loss curve.

    Args:
        series: `ds, y`.
        predictions: `ds, y, y_hat, split` (from `assemble_predictions`); drawn at their own `ds`.
        history: per-epoch `loss` and maybe `val_loss`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 10))
    # Fixed margins: a layout engine would lay the text out again on every save (a third of the time).
    figure.subplots_adjust(left=0.06, right=0.985, top=0.965, bottom=0.05, hspace=0.28)
    overview, zoom, losses = figure.subplots(3, 1, height_ratios=[2, 2, 1.2])
    colours = {"train": "tab:orange", "validation": "tab:purple", "test": "tab:green", "forecast": "tab:red"}

    one_step = predictions[(predictions["step"] == 1) | (predictions["split"] == "forecast")]
    overview.plot(series["ds"], series["y"], color="0.6", linewidth=0.6, label="series")
    for split_name, part in one_step.groupby("split", sort=False):
        style = {"marker": "o", "markersize": 3} if split_name == "forecast" else {"linewidth": 0.8}
        overview.plot(
            part["ds"], part["y_hat"], color=colours.get(split_name), label=f"{split_name} prediction", **style
        )
    test = one_step[one_step["split"].isin(["test", "forecast"])]
    if len(test):
        overview.axvline(test["ds"].iloc[0], color="k", linestyle=":", linewidth=1)
    overview.set_title("Series and one-step predictions, each on its own timestamp")
    overview.legend(loc="upper left", fontsize="small", ncols=5)

    tail = test.tail(ZOOM_POINTS)
    zoom.fill_between(
        tail["ds"], tail["y_lo"], tail["y_hi"], color=colours["test"], alpha=0.15, label="prediction interval"
    )
    zoom.plot(tail["ds"], tail["y"], color="0.4", marker=".", linewidth=0.6, label="actual")
    zoom.plot(tail["ds"], tail["y_hat"], color=colours["test"], linewidth=1.2, label="prediction")
    future = tail[tail["split"] == "forecast"]
    zoom.plot(future["ds"], future["y_hat"], color=colours["forecast"], marker="o", markersize=3, label="forecast")
    zoom.set_title(f"End of the test period and the forecast past the data, last {len(tail)} points")
    zoom.legend(loc="upper left", fontsize="small", ncols=4)

    for name, values in history.items():
        if "loss" in name:
            losses.plot(range(1, len(values) + 1), values, marker=".", label=name)
    losses.set_yscale("log")
    losses.set_xlabel("epoch")
    losses.set_title("Training loss (MSE on the scaled series)")
    losses.legend(fontsize="small")
    return figure


def render_plot(
    series: pd.DataFrame, predictions: pd.DataFrame, history: dict[str, list[float]], dpi: int = 100
) -> bytes:
    """`draw_figure` as PNG bytes."""
    buffer = io.BytesIO()
    draw_figure(series, predictions, history).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def thumbnail_png(png: bytes, scale: float = THUMBNAIL_SCALE) -> bytes:
    """A PNG scaled down (Lanczos): the copy shown in the Prefect UI. Resampling the rendered image is
    much faster than drawing the figure again at a lower resolution."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        buffer = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="png")
    return buffer.getvalue()


@task(name="plot", result_serializer="json")
def plot(config: ForecastConfig, series: str, predictions: str, model: str, key: str) -> str:
    """Draw the run's plot; returns the plot key."""
    store = Store(config.artifacts_dir)
    frames = store.read_table("generate", series), store.read_table("predict", predictions)
    history = store.read_model_metadata(model)["history"]
    full = render_plot(*frames, history)
    store.write_png(key, full, thumbnail=thumbnail_png(full))
    return key
