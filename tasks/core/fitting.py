"""Fitting a network: a Keras `LSTM(units) + Dense(horizon)` built, compiled and trained with MSE and Adam (the
LSTM in TensorFlow's fused kernel, `members.FusedLSTM`; an ensemble's members side by side in one loop,
`members.MemberLSTM`), then saved with its forecaster (`fit_and_save`, the job the training process runs).

Windows are reshuffled every epoch; the optimizer keeps a moving average of the weights, which is what validation
losses judge and what training keeps. Early stopping watches the validation split (the tail of the training part).
Seeds and op determinism make CPU runs repeatable. TensorFlow is imported only inside the functions that need it.
No Prefect here: the training process imports this module, and Prefect's import cost it about 0.9 s of CPU while the
run's stages wanted the cores (the train stage, `tasks/stages/train.py`, logs and shows the epochs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lstm_forecast.tasks.core.config import ForecastConfig, feature_width
from lstm_forecast.tasks.core.embedding import (
    embedding_layer,
)
from lstm_forecast.tasks.core.inference import network_arrays, save_network_arrays
from lstm_forecast.tasks.core.members import member_layers
from lstm_forecast.tasks.core.networks import import_keras
from lstm_forecast.tasks.core.space import ModelSpace
from lstm_forecast.tasks.core.store import (
    FORECASTER_ARRAYS_FILE,
    FORECASTER_FILE,
    MODEL_ARRAYS_FILE,
    MODEL_FILE,
    Store,
)

EpochReport = Callable[[int, dict[str, float], float], None]


def training_arrays(
    scaled: np.ndarray,
    targets: Any,
    config: ForecastConfig,
    split_name: str | None,
    space: ModelSpace,
    features: np.ndarray | None = None,
    cap: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, look_back / patch, patch * (1 + F)) and targets (n, horizon) of one split (None: all),
    float32, at most `cap` windows spread evenly over it when given (the newest and the oldest kept: a network
    that reads values, not changes, must see every level the series went through); `features` (rows, F) are read
    beside the values."""
    rows = (
        targets["row"].to_numpy()
        if split_name is None
        else targets.loc[targets["split"] == split_name, "row"].to_numpy()
    )
    if cap and len(rows) > cap:
        rows = rows[np.linspace(0, len(rows) - 1, cap).round().astype("int64")]
    inputs = space.inputs(scaled, rows, config.look_back, config.patch, features)
    return inputs, space.targets(scaled, rows, config.horizon)


@dataclass(frozen=True)
class Architecture:
    """All that `build_model` reads of a config, and so the key compiled networks are kept by."""

    cell: str
    units: int
    layers: int
    dropout: float
    look_back: int
    patch: int
    horizon: int
    seed: int
    learning_rate: float
    ema_momentum: float
    member_look_backs: tuple[int, ...]
    features: int = 0
    series_rows: int = 0  # rows of the series embedding table (training series + the unknown row); 0: none
    series_embedding: int = 0  # values per row

    @classmethod
    def of(cls, config: ForecastConfig, series_rows: int = 0) -> Architecture:
        derived = ("member_look_backs", "features", "series_rows", "series_embedding")
        names = [field.name for field in fields(cls) if field.name not in derived]
        embedded = series_rows > 0 and config.series_embedding > 0
        return cls(
            **{name: getattr(config, name) for name in names},
            member_look_backs=tuple(member_look_backs(config)),
            features=feature_width(config),
            series_rows=series_rows if embedded else 0,
            series_embedding=config.series_embedding if embedded else 0,
        )


def build_model(config: ForecastConfig, series_rows: int = 0) -> Any:
    """A compiled stack of `layers` LSTM (or GRU) layers of `units` + Dense(horizon), MSE and Adam.

    Inputs (batch, look_back / patch, patch * (1 + features)); outputs (batch, horizon), one per step ahead. With
    `ensemble` N > 1: N such stacks side by side, each from its own initial weights, outputs
    (batch, N * horizon) trained on N copies of the targets (each member's loss is its own);
    `inference_model` averages them. With `series_rows` and a `series_embedding`: one more input channel, the
    series' row of a learned (series_rows, series_embedding) table (`embedding.SeriesEmbedding`).
    """
    net = Architecture.of(config, series_rows)
    keras = import_keras()
    init = keras.initializers
    # Every random initial weight gets its own seed from the config's `seed`. Keras would otherwise draw
    # them from Python's global `random`, which other threads of the process (Prefect's and Dask's)
    # also draw from: the same config then trained differently on a Dask worker.
    seeds = iter(range(net.seed * 1000, net.seed * 1000 + 1000))
    count = len(net.member_look_backs)
    per_layer = 3 if net.dropout > 0 else 2  # kernel, recurrent kernel, dropout
    member_seeds = [[next(seeds) for _ in range(net.layers * per_layer + 1)] for _ in range(count)]
    # On CPU TensorFlow's fused kernel; on a GPU Keras' own LSTM, which runs cuDNN's.
    lstm = member_layers()["FusedLSTM"] if training_device() == "CPU" else keras.layers.LSTM
    cell = {"lstm": lstm, "gru": keras.layers.GRU}[net.cell]

    def member(own_seeds: list[int]) -> list[Any]:
        stack: list[Any] = []
        for layer in range(net.layers):
            at = layer * per_layer
            stack.append(
                cell(
                    net.units,
                    return_sequences=layer < net.layers - 1,
                    kernel_initializer=init.GlorotUniform(seed=own_seeds[at]),
                    recurrent_initializer=init.Orthogonal(seed=own_seeds[at + 1]),
                )
            )
            if net.dropout > 0:
                stack.append(keras.layers.Dropout(net.dropout, seed=own_seeds[at + 2]))
        stack.append(keras.layers.Dense(net.horizon, kernel_initializer=init.GlorotUniform(seed=own_seeds[-1])))
        return stack

    def side_by_side(tensor: Any) -> Any:
        """Every member in one `MemberLSTM` loop per layer (members with the same look-back)."""
        layers = member_layers()
        for layer in range(net.layers):
            at = layer * per_layer
            tensor = layers["MemberLSTM"](
                count,
                net.units,
                shared_input=layer == 0,
                return_sequences=layer < net.layers - 1,
                kernel_seeds=[own[at] for own in member_seeds],
                recurrent_seeds=[own[at + 1] for own in member_seeds],
            )(tensor)
            if net.dropout > 0:
                tensor = keras.layers.Dropout(net.dropout, seed=member_seeds[0][at + 2])(tensor)
        return layers["MemberDense"](count, net.horizon, [own[-1] for own in member_seeds], name="members")(tensor)

    steps = net.look_back // net.patch
    inputs = keras.Input(shape=(steps, net.patch * (1 + net.features) + int(net.series_embedding > 0)))
    # The series' vector joins every step (embedding.py says why); its seed is past every member's.
    embedded = (
        [embedding_layer()(net.series_rows, net.series_embedding, seed=net.seed * 1000 + 999, name="series")]
        if net.series_embedding
        else []
    )
    look_backs = net.member_look_backs
    name = f"{net.cell}_ensemble_of_{count}"
    if count == 1:
        model = keras.Sequential([inputs, *embedded, *member(member_seeds[0])], name=f"{net.cell}_forecaster")
    elif net.cell == "lstm" and len(set(look_backs)) == 1:
        model = keras.Model(inputs, side_by_side(embedded[0](inputs) if embedded else inputs), name=name)
    else:
        read = embedded[0](inputs) if embedded else inputs
        outputs = []
        for look_back, own_seeds in zip(look_backs, member_seeds, strict=True):
            tensor = read
            if look_back < net.look_back:  # this member reads only the window's most recent values
                tensor = keras.layers.Cropping1D((steps - look_back // net.patch, 0))(tensor)
            for layer in member(own_seeds):
                tensor = layer(tensor)
            outputs.append(tensor)
        model = keras.Model(inputs, keras.layers.Concatenate(name="members")(outputs), name=name)
    # Weight averaging (an exponential moving average of the weights, kept by the optimizer and
    # swapped in when training ends): the last steps' SGD noise averages out of the final weights.
    # On the built-in series: test RMSE 0.496-0.497 over seeds 0-2, below ARIMA's 0.499.
    averaging = net.ema_momentum > 0
    model.compile(
        loss="mean_squared_error",
        optimizer=keras.optimizers.Adam(
            learning_rate=net.learning_rate, use_ema=averaging, ema_momentum=net.ema_momentum or 0.99
        ),
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


# Batches per call of the compiled training (and validation) step: Keras' Python work between steps is paid once
# per 16 batches. The same weights and losses; one epoch of a global model (100,000 windows, batches of 256, one
# TensorFlow thread) 13 % faster (benchmarks/README.md).
STEPS_PER_EXECUTION = 16


# The members of a global model's ensemble read windows of different lengths: the input window divided by
# these, in turn (with an input of twice the base look-back: the base, twice it, half of it, the base…),
# as N-BEATS ensembles look-backs of several lengths; their forecasts are combined by the median.
MEMBER_LOOK_BACK_DIVISORS = (2, 1, 4)


def member_look_backs(config: ForecastConfig) -> list[int]:
    """The look-back of each ensemble member (whole patches): all `look_back` for a local model."""
    count = config.ensemble or 1
    if config.scope != "global" or count == 1:
        return [config.look_back] * count
    return [
        max(config.patch, round(config.look_back / MEMBER_LOOK_BACK_DIVISORS[i % 3] / config.patch) * config.patch)
        for i in range(count)
    ]


def inference_model(model: Any, combine: str = "mean") -> Any:
    """The model that forecasts: `model` itself, or for an ensemble the `combine` ('mean' or 'median')
    of its members' outputs (batch, horizon), sharing their weights."""
    last = model.layers[-1]
    if last.name != "members":
        return model
    count = last.members if hasattr(last, "members") else len(last.input)  # MemberDense or Concatenate
    combined = member_layers()["MemberMedian" if combine == "median" else "MemberMean"](
        count, name=f"ensemble_{combine}"
    )(last.output)
    return import_keras().Model(model.inputs, combined, name=model.name)


def ensemble_targets(y: np.ndarray, config: ForecastConfig) -> np.ndarray:
    """Targets (n, horizon) repeated for each ensemble member: (n, ensemble * horizon)."""
    return np.tile(y, (1, config.ensemble or 1))


def training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None) -> Any:
    """A `tf.data` pipeline of (inputs, targets) batches, reshuffled each epoch when `seed` is given.

    It runs on one private thread with autotuning off and no prefetching: Keras' own pipeline for
    arrays prefetches on TensorFlow's shared pools, which made two trainings side by side (two Dask
    workers on 2 cores) each much slower than one alone; with this one they barely slow each other.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    # The window numbers are shuffled and each batch gathered from the arrays: a shuffle buffer of the windows
    # themselves held one more copy of them (gigabytes for a long series' wide windows), and filled it window
    # by window each epoch. The same seed gives the same order, so the same batches, as before.
    inputs, targets = tf.constant(x), tf.constant(y)
    data = tf.data.Dataset.range(len(x))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).map(lambda rows: (tf.gather(inputs, rows), tf.gather(targets, rows)))
    if tf.config.list_physical_devices("GPU"):
        data = data.prefetch(1)  # let the CPU cut the next batch while the GPU runs this one
    return data.with_options(options)


# Tracing a network's training step costs about 10 s on CPU for an ensemble of five LSTMs: more than
# training most short series. Each process keeps its last few compiled networks by architecture and
# restores one to the state a fresh build has (every model and optimizer variable) for the next fit,
# so a model trained on a kept network is the model a fresh one would give.
KEPT_NETWORKS = 4


@dataclass
class CompiledNetwork:
    """A compiled network and the value of each of its variables (model's, then optimizer's) as built."""

    model: Any
    built: list[np.ndarray]

    def variables(self) -> list[Any]:
        return [*self.model.variables, *self.model.optimizer.variables]

    def restore_built(self, optimizer_only: bool = False) -> None:
        """Every variable (or only the optimizer's: a fresh optimizer on the current weights) as built."""
        skip = len(self.model.variables) if optimizer_only else 0
        for variable, value in zip(self.variables()[skip:], self.built[skip:], strict=True):
            variable.assign(value)

    def detached(self) -> Any:
        """An uncompiled copy of the model with its current weights (the kept network trains on)."""
        copy = import_keras().models.clone_model(self.model)
        copy.set_weights(self.model.get_weights())
        return copy


_kept_networks: dict[Architecture, list[CompiledNetwork]] = {}
_kept_lock = threading.Lock()


@contextmanager
def compiled_network(config: ForecastConfig, series_rows: int = 0) -> Iterator[CompiledNetwork]:
    """A network for `config`'s architecture (`series_rows`: of its series embedding) in its as-built state: a
    kept one, else a new build.

    A network is lent to one caller at a time; it is kept again (the newest `KEPT_NETWORKS`) after.
    """
    architecture = Architecture.of(config, series_rows)
    with _kept_lock:
        idle = _kept_networks.pop(architecture, [])
        network = idle.pop() if idle else None
        if idle:
            _kept_networks[architecture] = idle
    if network is None:
        model = build_model(config, series_rows)
        model.optimizer.build(model.trainable_variables)
        network = CompiledNetwork(
            model, [variable.numpy() for variable in [*model.variables, *model.optimizer.variables]]
        )
    else:
        network.restore_built()
    try:
        yield network
    finally:
        with _kept_lock:
            _kept_networks.setdefault(architecture, []).append(network)
            while sum(len(networks) for networks in _kept_networks.values()) > KEPT_NETWORKS:
                oldest = next(iter(_kept_networks))
                _kept_networks[oldest].pop(0)
                if not _kept_networks[oldest]:
                    del _kept_networks[oldest]


def train_network(
    network: CompiledNetwork,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: ForecastConfig,
    on_epoch: EpochReport | None = None,
) -> dict[str, list[float]]:
    """Fit `network` from its as-built state; returns its per-epoch history (`loss`, maybe `val_loss`)."""
    import tensorflow as tf

    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    callbacks: list[keras.callbacks.Callback] = []
    has_validation = len(x_val) > 0
    if config.ema_momentum > 0:
        # Validation losses (and so early stopping) judge the averaged weights, the ones kept.
        callbacks.append(keras.callbacks.SwapEMAWeights())
    if has_validation and config.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=config.ema_momentum == 0
            )  # else: the average
        )
    if on_epoch is not None:
        callbacks.append(_EpochReporter(on_epoch))
    y_train, y_val = ensemble_targets(y_train, config), ensemble_targets(y_val, config)
    history = network.model.fit(
        training_dataset(x_train, y_train, config.batch_size, seed=config.seed),
        validation_data=training_dataset(x_val, y_val, config.batch_size, seed=None) if has_validation else None,
        epochs=config.epochs,
        shuffle=False,  # the dataset reshuffles itself
        verbose=0,
        callbacks=callbacks,
    )
    return {name: [float(v) for v in values] for name, values in history.history.items()}


def fit_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: ForecastConfig,
    on_epoch: EpochReport | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """Train a fresh model; returns it (uncompiled; for training: `inference_model` forecasts) and its
    per-epoch history."""
    with compiled_network(config) as network:
        history = train_network(network, x_train, y_train, x_val, y_val, config, on_epoch)
        return network.detached(), history


@dataclass(frozen=True)
class WarmUp:
    """The network a training job will fit, known before its windows are: its config and `series_rows`."""

    config: ForecastConfig
    series_rows: int = 0


def warm_up(job: WarmUp, report: EpochReport | None = None) -> None:
    """Build `job`'s network and trace its training and validation steps on a batch of zeros, then keep it as
    built (`compiled_network` restores every variable): the fit that follows with the same architecture skips
    both (about half a second of a panel's first epoch, spent while the run assembles its windows)."""
    config = job.config.model_copy(update={"epochs": 1})
    with compiled_network(config, job.series_rows) as network:
        x = np.zeros((config.batch_size, *network.model.input_shape[1:]), dtype="float32")
        y = np.zeros((len(x), config.horizon), dtype="float32")
        train_network(network, x, y, x, y, config)


def refit_epochs(epochs_run: int, patience: int, global_model: bool = False) -> int:
    """Epochs of the warm-started refit on every row: a tenth of the epochs that early stopping kept, at
    least 2 for a network of its own and 1 for a global model (the refit only has to take in the newest rows;
    one pass over a panel's windows is thousands of steps)."""
    return max(1 if global_model else 2, round((epochs_run - patience) / 10))


def train_further(
    network: CompiledNetwork, x_all: np.ndarray, y_all: np.ndarray, config: ForecastConfig, epochs: int
) -> None:
    """Train `network`'s current weights on every window (test split included) for `epochs`, with a fresh
    optimizer (no early stopping: there is no held-out tail left)."""
    keras = import_keras()
    keras.utils.set_random_seed(config.seed + 1)
    network.restore_built(optimizer_only=True)
    network.model.fit(
        training_dataset(x_all, ensemble_targets(y_all, config), config.batch_size, seed=config.seed + 1),
        epochs=epochs,
        shuffle=False,
        verbose=0,
    )


def training_device() -> str:
    """Where TensorFlow trains: the first GPU's name, or CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU ({details.get('device_name', gpus[0].name)})"


def _EpochReporter(report: EpochReport) -> Any:  # noqa: N802 - a class built lazily, keras imported late
    import keras

    class EpochReporter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            report(epoch + 1, {k: float(v) for k, v in (logs or {}).items()}, time.perf_counter() - self._started)

    return EpochReporter()


@dataclass(frozen=True)
class TrainingJob:
    """Everything fitting a network and its forecaster takes, sent whole to the training process
    (`training_process.py`): the windows (inputs, targets) of the train split, the validation split and every
    row; the config; `series_rows` (the rows of a series embedding: the inputs then end with each window's row);
    where the models go (the store, the model key, how an ensemble is combined) and the metadata written with
    them, to which the fit's own is added (`forecaster_details` into its `forecaster` entry)."""

    train_set: tuple[np.ndarray, np.ndarray]
    validation_set: tuple[np.ndarray, np.ndarray]
    every_window: tuple[np.ndarray, np.ndarray]
    config: ForecastConfig
    artifacts_dir: Path
    key: str
    metadata: dict[str, Any]
    combine: str = "mean"
    series_rows: int = 0
    forecaster_details: dict[str, Any] = field(default_factory=dict)


def fit_and_save(job: TrainingJob, report: EpochReport) -> dict[str, Any]:
    """Fit a model on the train split (early stopping on validation), then its forecaster on every window, and
    write both to the store with the job's metadata; `report` is called after each epoch. Returns what the
    metadata records of the fit (history, epochs, times)."""
    config = job.config
    (x_train, y_train), (x_val, y_val) = job.train_set, job.validation_set
    started = time.perf_counter()
    with compiled_network(config, job.series_rows) as network:
        history = train_network(network, x_train, y_train, x_val, y_val, config, on_epoch=report)
        model = network.detached()
        fit_seconds = time.perf_counter() - started
        epochs_run = len(history["loss"])
        extra_epochs = refit_epochs(epochs_run, config.patience if len(x_val) else 0, config.scope == "global")
        train_further(network, *job.every_window, config, extra_epochs)
        forecaster = network.detached()
    fit = {
        "history": history,
        "epochs_run": epochs_run,
        "device": training_device(),
        "fit_seconds": round(fit_seconds, 3),
        "forecaster": {
            "epochs": extra_epochs,
            "windows": len(job.every_window[0]),
            "fit_seconds": round(time.perf_counter() - started - fit_seconds, 3),
            **job.forecaster_details,
        },
    }
    Store(job.artifacts_dir).write_model(job.key, save_models(model, forecaster, job.combine), job.metadata | fit)
    return fit


def save_models(model: Any, forecaster: Any, combine: str = "mean") -> Callable[[Path], None]:
    """What `Store.write_model` calls to write both networks (ensembles combined by `combine`), each as a Keras
    file and, where numpy can apply it, as arrays (`inference.network_arrays`)."""

    def save_both(folder: Path) -> None:
        for network, keras_file, arrays_file in (
            (model, MODEL_FILE, MODEL_ARRAYS_FILE),
            (forecaster, FORECASTER_FILE, FORECASTER_ARRAYS_FILE),
        ):
            applied = inference_model(network, combine)
            applied.save(folder / keras_file)
            if (arrays := network_arrays(applied)) is not None:
                save_network_arrays(folder / arrays_file, arrays)

    return save_both
