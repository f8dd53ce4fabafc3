"""Networks: the one place Keras is imported, and a trained model loaded back with what applying it needs
(its numpy arrays where it has them: then without Keras).

TensorFlow is imported only when a function here is called: a fully cached run never pays for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.embedding import embedding_layer, series_row, with_series_channel
from lstm_forecast.tasks.core.heap import freeze_loaded_modules
from lstm_forecast.tasks.core.inference import NumpyNetwork
from lstm_forecast.tasks.core.members import member_layers
from lstm_forecast.tasks.core.space import ModelSpace
from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.core.windows import least_context

# TensorFlow threads per process. These recurrent nets' per-step matrices are too small to split:
# one thread fitted a default-sized LSTM no slower than TensorFlow's default pools (measured on 2 cores),
# and Dask workers on one thread each do not fight over the cores. LSTM_FORECAST_TF_THREADS=0 lets
# TensorFlow choose.
TF_THREADS_VARIABLE = "LSTM_FORECAST_TF_THREADS"


# TensorFlow's C++ libraries log a few INFO lines to stderr as they load ("oneDNN custom operations are on",
# "Could not find cuda drivers"), each library once, before absl's logging is initialised: TF_CPP_MIN_LOG_LEVEL
# does not reach them. They are dropped while TensorFlow loads; every other line passes.
_TF_LOAD_CHATTER = re.compile(
    rb"(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:. ]+ +\d+ [\w.]+:\d+\] .*)\r?\n?"
)


_IMPORT_LOCK = threading.Lock()

# Optional parts of Keras that this project never uses, and that Keras imports with itself when it can: its
# scikit-learn wrappers (scikit-learn and much of SciPy: about 0.9 s of a 4 s import) and its image-gallery plots
# (matplotlib's pyplot: about 0.25 s). Each is left out of Keras as it would be were it not installed.
KERAS_OPTIONAL_MODULES = ("sklearn", "matplotlib.pyplot")


@contextlib.contextmanager
def modules_left_out(names: tuple[str, ...]) -> Iterator[None]:
    """While inside, importing a module of `names` not imported yet raises ImportError (a None in `sys.modules`
    is Python's own mark of a module that cannot be imported); afterwards it imports as usual. Another thread
    importing one of them meanwhile would fail as well: nothing in this project imports these two."""
    left_out = [name for name in names if name not in sys.modules]
    for name in left_out:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in left_out:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@contextlib.contextmanager
def stderr_without(chatter: re.Pattern[bytes]) -> Iterator[None]:
    """While inside, file descriptor 2 feeds a pipe whose lines are copied to the real stderr unless they match
    `chatter`. The copying thread lives on until every writer is gone: a process started meanwhile (it inherits
    the pipe) keeps its stderr."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def copy() -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if not chatter.fullmatch(line):
                    with contextlib.suppress(OSError):
                        os.write(real, line)
        os.close(real)

    threading.Thread(target=copy, name="stderr-filter", daemon=True).start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer in this process is gone: the copy ends at its end


def import_keras() -> Any:
    """Keras (and TensorFlow behind it), with TensorFlow's thread pools sized once per process. This is the one
    place that imports them: quietly (`TF_CPP_MIN_LOG_LEVEL`, and `_TF_LOAD_CHATTER` dropped from stderr)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _IMPORT_LOCK, stderr_without(_TF_LOAD_CHATTER), modules_left_out(KERAS_OPTIONAL_MODULES):
            import keras  # noqa: F401
        freeze_loaded_modules()
    import keras
    import tensorflow as tf

    threads = int(os.environ.get(TF_THREADS_VARIABLE, "1"))
    if threads > 0 and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already ran an op in this process: its pools are fixed
            pass
    return keras


def load_model(path: Path, arrays: Path | None = None) -> Any:
    """A saved network: its numpy arrays (`inference.NumpyNetwork`) when `arrays` exists, which needs no
    TensorFlow; else the Keras file, loaded in Keras safe mode (no arbitrary code from the file). Kept per
    process while the file is unchanged: a global model predicts every series, and each Keras load and first
    prediction costs most of a second."""
    if arrays is not None and arrays.exists():
        return _load_arrays(Path(arrays), Path(arrays).stat().st_mtime_ns)
    return _load_model(Path(path), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_arrays(path: Path, modified_ns: int) -> NumpyNetwork:
    return NumpyNetwork.load(path)


@functools.lru_cache(maxsize=4)
def _load_model(path: Path, modified_ns: int) -> Any:
    member_layers()  # registered before an ensemble's file names them
    embedding_layer()  # and before a series embedding's
    return import_keras().saving.load_model(path, compile=False, safe_mode=True)


FORWARD_BATCH = 4096  # windows per forward pass


def forward(model: Any, inputs: np.ndarray, batch: int = FORWARD_BATCH) -> np.ndarray:
    """A model's outputs (n, outputs) for inputs (n, steps, channels): a `NumpyNetwork`'s own pass, or a Keras
    model called eagerly `batch` windows at a time.

    Keras' `predict` traces a function at its first call in each process (about half a second per model) and
    cost about 20 % more per window on CPU (a 13-step global model, 170,000 windows: 1.12 s against 0.93 s).
    """
    if isinstance(model, NumpyNetwork):
        return model(inputs)
    if len(inputs) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype="float32")
    parts = [np.asarray(model(inputs[start : start + batch], training=False)) for start in range(0, len(inputs), batch)]
    return np.concatenate(parts)


@dataclass(frozen=True)
class SavedModel:
    """A trained model with what it needs to be applied to a series."""

    key: str
    model: Any
    space: ModelSpace | None  # None for a global model: each series brings its own
    look_back: int
    patch: int
    horizon: int
    config: dict[str, Any] = field(default_factory=dict)  # the config it was trained with (its metadata's)
    series_rows: dict[str, int] = field(default_factory=dict)  # its series embedding's rows by id; empty: none

    @functools.cached_property
    def forecast_config(self) -> ForecastConfig:
        """`config` validated (once per loaded model, not once per series it forecasts)."""
        return ForecastConfig.model_validate(self.config)

    def series_inputs(self, series_id: str | None, inputs: np.ndarray) -> np.ndarray:
        """Inputs (m, steps, C) of one series as the model reads them: with its series embedding's row as a
        last channel (a series it was not trained on: the unknown row) when it has one; else unchanged."""
        if not self.series_rows:
            return inputs
        return with_series_channel(inputs, series_row(self.series_rows, series_id))

    def embedding_rows(self, series_ids: list[str | None]) -> np.ndarray | None:
        """The rows (len(series_ids),) those series read of its series embedding (`series_inputs`); None without
        one."""
        if not self.series_rows:
            return None
        return np.array([series_row(self.series_rows, series_id) for series_id in series_ids], dtype=np.int64)

    @property
    def is_global(self) -> bool:
        return self.space is None

    @property
    def first_origin(self) -> int:
        """The first row it can forecast (a local model needs `look_back` model-space values before it)."""
        if self.space is None:
            return least_context(self.look_back)
        return self.look_back + self.space.offset


def load_saved(store: Store, key: str, forecaster: bool = False) -> SavedModel:
    """A model of the store with its model space and window settings (from its metadata).

    `forecaster`: the model trained on every row (for forecasts past the end of the data) when the
    folder has one; otherwise the model trained on the train split (for scoring on held-out rows).
    """
    metadata = store.read_model_metadata(key)
    config = metadata["config"]
    use_forecaster = forecaster and "forecaster" in metadata and store.forecaster_file(key).exists()
    space = metadata["forecaster"].get("model_space") if use_forecaster else metadata.get("model_space")
    path = store.forecaster_file(key) if use_forecaster else store.model_file(key)
    return SavedModel(
        key,
        load_model(path, store.arrays_file(path)),
        ModelSpace.from_dict(space) if space else None,
        int(config["look_back"]),
        int(config.get("patch", 1)),
        int(config.get("horizon", 1)),
        config,
        {str(i): int(row) for i, row in metadata.get("series_embedding", {}).get("rows", {}).items()},
    )
