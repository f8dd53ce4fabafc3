"""Stage 5, train: a Keras `LSTM(units) + Dense(1)` fitted with MSE and Adam.

Early stopping watches the validation split (the tail of the training part) and
keeps the best weights. Seeds and op determinism make CPU runs repeatable.
TensorFlow is imported only inside the functions that need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from tasks.config import ForecastConfig
from tasks.normalize import read_scaler
from tasks.store import Store, stage_key
from tasks.window import window_inputs

EpochReport = Callable[[int, dict[str, float], float], None]


def training_arrays(
    scaled: np.ndarray, targets: Any, look_back: int, split_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, look_back, 1) and targets (n,) of one split, float32, from the scaled series."""
    rows = targets.loc[targets["split"] == split_name, "row"].to_numpy()
    return window_inputs(scaled, rows, look_back), np.asarray(scaled, dtype="float32")[rows]


def build_model(look_back: int, units: int, learning_rate: float) -> Any:
    """A compiled `LSTM(units) + Dense(1)` for inputs (batch, look_back, 1), outputs (batch, 1)."""
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(look_back, 1)), keras.layers.LSTM(units), keras.layers.Dense(1)],
        name="lstm_forecaster",
    )
    model.compile(loss="mean_squared_error", optimizer=keras.optimizers.Adam(learning_rate=learning_rate))
    return model


def fit_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: ForecastConfig,
    on_epoch: EpochReport | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """Train a fresh model; returns it and its per-epoch history (`loss`, maybe `val_loss`)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_model(x_train.shape[1], config.units, config.learning_rate)
    callbacks: list[keras.callbacks.Callback] = []
    has_validation = len(x_val) > 0
    if has_validation and config.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        )
    if on_epoch is not None:
        callbacks.append(_EpochReporter(on_epoch))
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val) if has_validation else None,
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    return model, {name: [float(v) for v in values] for name, values in history.history.items()}


def _EpochReporter(report: EpochReport) -> Any:  # noqa: N802 - a class built lazily, keras imported late
    import keras

    class EpochReporter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            report(epoch + 1, {k: float(v) for k, v in (logs or {}).items()}, time.perf_counter() - self._started)

    return EpochReporter()


@task(name="train", result_serializer="json")
def train(config: ForecastConfig, series: str, normalize: str, window: str) -> str:
    """Fit the model on the train split; returns the model key."""
    store = Store(config.artifacts_dir)
    key = stage_key("train", config, {"series": series, "normalize": normalize, "window": window})
    logger = get_run_logger()
    scaled = store.read_table("normalize", normalize)["y_scaled"].to_numpy()
    targets = store.read_table("window", window)
    x_train, y_train = training_arrays(scaled, targets, config.look_back, "train")
    x_val, y_val = training_arrays(scaled, targets, config.look_back, "validation")
    logger.info("training on %d windows (validation %d), up to %d epochs", len(x_train), len(x_val), config.epochs)

    progress = create_progress_artifact(0.0, key="lstm-forecast-training", description="Training epochs done")

    def report(epoch: int, logs: dict[str, float], seconds: float) -> None:
        losses = "  ".join(f"{name} {value:.5f}" for name, value in logs.items() if "loss" in name)
        logger.info("epoch %d/%d  %s  (%.1f s)", epoch, config.epochs, losses, seconds)
        update_progress_artifact(progress, 100.0 * epoch / config.epochs)

    started = time.perf_counter()
    model, history = fit_model(x_train, y_train, x_val, y_val, config, on_epoch=report)
    metadata = {
        "key": key,
        "config": config.model_dump(mode="json"),
        "scaler": {"kind": "minmax", **read_scaler(store, normalize).to_dict()},
        "data_fingerprint": series,
        "upstream": {"series": series, "normalize": normalize, "window": window},
        "history": history,
        "epochs_run": len(history["loss"]),
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    store.write_model(key, lambda path: model.save(path), metadata)
    update_progress_artifact(progress, 100.0)  # early stopping may end before the last epoch
    return key


def load_model(path: Path) -> Any:
    """A saved model, loaded in Keras safe mode (no arbitrary code from the file)."""
    import keras

    return keras.saving.load_model(path, compile=False, safe_mode=True)
