"""A global model's learned series embedding (`--series-embedding DIM`): each series of the training panel
gets a row of a trainable (series + 1, DIM) table, and its row's vector is read beside every step's values.

The row travels inside the network's one input, as its last channel (`with_series_channel`): every place that
builds inputs for a model adds one channel, and the first layer (`SeriesEmbedding`) swaps it for the vector.
The vector joins every step rather than the dense head: the recurrent cell then reads the series' identity
at each step (a per-series bias of its gates: how fast it forgets, how much it trusts the last values),
where the head could only shift the outputs; and every layer after the first is the same with or without it.

Row 0 is the unknown series: a series the model was not trained on reads it. It is trained, not left at its
initial values: a fixed, seeded `UNKNOWN_SHARE` of each series' training windows read row 0 instead of their
own (dropping the id, as dropout drops a unit), so row 0 learns what fits any series.

The series -> row map is stored in the model's metadata (`series_embedding.rows`); every forecast of the
model (the predict stage, `lstm-forecast predict` on stored or new data, a retraining's challenge) reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

UNKNOWN_ROW = 0
UNKNOWN_SHARE = 0.1  # of each series' training windows, read as the unknown series


def embedding_rows(series_ids: Sequence[str]) -> dict[str, int]:
    """Series id -> its row of the embedding table: 1, 2, … in training order (row 0: unknown)."""
    return {str(series_id): row for row, series_id in enumerate(series_ids, start=UNKNOWN_ROW + 1)}


def series_row(rows: Mapping[str, int], series_id: str | None) -> int:
    """The row a series reads: its own, or `UNKNOWN_ROW` for a series the model was not trained on."""
    return int(rows.get(str(series_id), UNKNOWN_ROW))


def training_rows(row: int, count: int, seed: int) -> np.ndarray:
    """The rows (count,) that a series' `count` training windows read: `row`, except a fixed, seeded
    `UNKNOWN_SHARE` of them that read `UNKNOWN_ROW` (the same windows in every epoch and run)."""
    dropped = np.random.default_rng([seed, row]).random(count) < UNKNOWN_SHARE
    return np.where(dropped, UNKNOWN_ROW, row)


def with_series_channel(inputs: np.ndarray, rows: int | np.ndarray) -> np.ndarray:
    """Model inputs (m, steps, C) with each window's embedding row (an int, or (m,)) as one more channel at
    every step: (m, steps, C + 1) float32 (rows are exact in float32 up to 2**24)."""
    inputs = np.asarray(inputs, dtype="float32")
    channel = np.broadcast_to(np.asarray(rows, dtype="float32").reshape(-1, 1, 1), (*inputs.shape[:2], 1))
    return np.concatenate([inputs, channel], axis=2)


@functools.cache
def embedding_layer() -> Any:
    """The `SeriesEmbedding` layer class (built on first use: Keras is imported late), registered so saved
    models that use it load in safe mode."""
    from lstm_forecast.tasks.core.networks import import_keras  # networks imports this module

    keras = import_keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="lstm_forecast")
    class SeriesEmbedding(keras.layers.Layer):
        """Inputs (batch, steps, C + 1) whose last channel is the series' row; outputs (batch, steps, C + dim):
        the other channels, then the row's trainable vector."""

        def __init__(self, rows: int, dim: int, seed: int | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.rows, self.dim, self.seed = rows, dim, seed

        def build(self, input_shape: Any) -> None:
            self.embeddings = self.add_weight(
                shape=(self.rows, self.dim),
                initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=self.seed),  # Keras' Embedding's
                name="embeddings",
            )

        def call(self, inputs: Any) -> Any:
            rows = ops.cast(ops.round(inputs[..., -1]), "int32")
            return ops.concatenate([inputs[..., :-1], ops.take(self.embeddings, rows, axis=0)], axis=-1)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (*input_shape[:-1], input_shape[-1] - 1 + self.dim)

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"rows": self.rows, "dim": self.dim}

    return SeriesEmbedding
