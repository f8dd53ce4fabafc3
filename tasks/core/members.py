"""Keras layers for ensembles: members that run side by side in one network.

An ensemble of N LSTMs reading the same window runs as one `MemberLSTM` layer: each member keeps its
own weights (kernel (N, features, 4 units), recurrent kernel (N, units, 4 units), bias (N, 4 units)),
the input projection of every step is computed before the loop, and one loop over the steps updates
every member with one batched matrix product. Separate LSTM layers would run N loops one after another:
on 2 CPU cores five members trained about 1.5 times slower per epoch that way, and tracing their
training step took about three times longer. `MemberDense` is each member's own output layer.

The classes are built on first use (Keras is imported late) and registered, so saved models that use
them load in safe mode. Their arithmetic is Keras' `LSTMCell`'s (gates i, f, c, o; sigmoid and tanh; a
forget-gate bias of 1): with the same weights a member gives what a separate LSTM layer gives.

On CPU a network of one member uses `FusedLSTM`, Keras' LSTM as TensorFlow's fused kernel (on a GPU, Keras'
own LSTM, which runs cuDNN's): a 13-step global model's epoch (100,000 windows, one thread) about 16 % faster
than Keras' loop, its forward pass 2.5 times faster.
"""

from __future__ import annotations

import functools
from typing import Any


def per_member(initializer: Any, seeds: list[int]) -> Any:
    """An initializer of (members, *shape) weights: each member's slice from `initializer`'s class with its own seed,
    so every member starts as a separate layer with that seed would."""

    def initialize(shape: tuple[int, ...], dtype: Any = None) -> Any:
        import keras

        return keras.ops.stack([initializer(seed=seed)(shape[1:], dtype=dtype) for seed in seeds])

    return initialize


@functools.cache
def member_layers() -> dict[str, Any]:
    """The layer classes by name: `FusedLSTM`, `MemberLSTM`, `MemberDense`, `MemberMedian`, `MemberMean`."""
    from lstm_forecast.tasks.core.networks import import_keras  # networks imports this module

    keras = import_keras()
    ops = keras.ops

    def forget_gate_ones(shape: tuple[int, ...], dtype: Any = None) -> Any:
        """A bias whose last axis holds the gates i, f, c, o (`shape[-1] // 4` units each): 1 for the forget gate,
        0 for the others (Keras' `unit_forget_bias`), for every leading index."""
        units = shape[-1] // 4
        row = ops.concatenate([ops.zeros(units), ops.ones(units), ops.zeros(2 * units)])
        return ops.cast(ops.broadcast_to(row, shape), dtype or "float32")

    class MemberLSTMCell(keras.layers.Layer):
        """One step of every member: inputs (batch, members * 4 units) already projected."""

        def __init__(self, members: int, units: int, recurrent_seeds: list[int] | None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.members, self.units, self.recurrent_seeds = members, units, recurrent_seeds
            self.state_size = [members * units, members * units]
            self.output_size = members * units

        def build(self, input_shape: Any) -> None:
            seeds = self.recurrent_seeds or [None] * self.members
            self.recurrent_kernel = self.add_weight(
                shape=(self.members, self.units, 4 * self.units),
                initializer=per_member(keras.initializers.Orthogonal, seeds),
                name="recurrent_kernel",
            )

        def call(self, projected: Any, states: list[Any]) -> tuple[Any, list[Any]]:
            h, c = states
            batch = ops.shape(projected)[0]
            per_member_h = ops.transpose(ops.reshape(h, (batch, self.members, self.units)), (1, 0, 2))
            recurrent = ops.transpose(ops.matmul(per_member_h, self.recurrent_kernel), (1, 0, 2))
            z = ops.reshape(projected, (batch, self.members, 4 * self.units)) + recurrent
            z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
            c = ops.reshape(c, (batch, self.members, self.units))
            c = ops.sigmoid(z_f) * c + ops.sigmoid(z_i) * ops.tanh(z_c)
            width = self.members * self.units  # static, as the loop needs
            h = ops.reshape(ops.sigmoid(z_o) * ops.tanh(c), (batch, width))
            c = ops.reshape(c, (batch, width))
            return h, [h, c]

    @keras.saving.register_keras_serializable(package="lstm_forecast")
    class MemberLSTM(keras.layers.Layer):
        """`members` LSTMs of `units` in one loop. Inputs (batch, steps, features), read whole by every
        member (`shared_input`), or (batch, steps, members * features), member m reading its own slice
        (a stacked layer). Outputs (batch, members * units), or per step with `return_sequences`."""

        def __init__(
            self,
            members: int,
            units: int,
            shared_input: bool = True,
            return_sequences: bool = False,
            kernel_seeds: list[int] | None = None,
            recurrent_seeds: list[int] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.members, self.units = members, units
            self.shared_input, self.return_sequences = shared_input, return_sequences
            self.kernel_seeds, self.recurrent_seeds = kernel_seeds, recurrent_seeds
            self.loop = keras.layers.RNN(
                MemberLSTMCell(members, units, recurrent_seeds), return_sequences=return_sequences
            )

        def build(self, input_shape: Any) -> None:
            features = input_shape[-1] if self.shared_input else input_shape[-1] // self.members
            self.kernel = self.add_weight(
                shape=(self.members, features, 4 * self.units),
                initializer=per_member(keras.initializers.GlorotUniform, self.kernel_seeds or [None] * self.members),
                name="kernel",
            )

            self.bias = self.add_weight(shape=(self.members, 4 * self.units), initializer=forget_gate_ones, name="bias")
            self.loop.build((input_shape[0], input_shape[1], self.members * 4 * self.units))

        def call(self, inputs: Any) -> Any:
            batch, steps = ops.shape(inputs)[0], ops.shape(inputs)[1]
            if self.shared_input:
                projected = ops.einsum("bsf,mfo->bsmo", inputs, self.kernel)
            else:
                per_member_inputs = ops.reshape(inputs, (batch, steps, self.members, -1))
                projected = ops.einsum("bsmf,mfo->bsmo", per_member_inputs, self.kernel)
            projected = ops.reshape(projected + self.bias, (batch, steps, self.members * 4 * self.units))
            return self.loop(projected)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            if self.return_sequences:
                return (input_shape[0], input_shape[1], self.members * self.units)
            return (input_shape[0], self.members * self.units)

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {
                "members": self.members,
                "units": self.units,
                "shared_input": self.shared_input,
                "return_sequences": self.return_sequences,
            }

    @keras.saving.register_keras_serializable(package="lstm_forecast")
    class MemberDense(keras.layers.Layer):
        """Each member's own Dense(outputs): inputs (batch, members * features), outputs (batch, members * outputs)."""

        def __init__(self, members: int, outputs: int, seeds: list[int] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.members, self.outputs, self.seeds = members, outputs, seeds

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(
                shape=(self.members, input_shape[-1] // self.members, self.outputs),
                initializer=per_member(keras.initializers.GlorotUniform, self.seeds or [None] * self.members),
                name="kernel",
            )
            self.bias = self.add_weight(shape=(self.members, self.outputs), initializer="zeros", name="bias")

        def call(self, inputs: Any) -> Any:
            per_member_inputs = ops.reshape(inputs, (ops.shape(inputs)[0], self.members, -1))
            outputs = ops.einsum("bmf,mfo->bmo", per_member_inputs, self.kernel) + self.bias
            return ops.reshape(outputs, (ops.shape(inputs)[0], self.members * self.outputs))

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (input_shape[0], self.members * self.outputs)

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"members": self.members, "outputs": self.outputs}

    @keras.saving.register_keras_serializable(package="lstm_forecast")
    class MemberMedian(keras.layers.Layer):
        """The median over members of (batch, members * horizon) outputs, as (batch, horizon)."""

        def __init__(self, members: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.members = members

        def call(self, outputs: Any) -> Any:
            per_member = ops.reshape(outputs, (-1, self.members, outputs.shape[-1] // self.members))
            return ops.median(per_member, axis=1)

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"members": self.members}

    @keras.saving.register_keras_serializable(package="lstm_forecast")
    class MemberMean(MemberMedian):
        """The mean over members of (batch, members * horizon) outputs, as (batch, horizon)."""

        def call(self, outputs: Any) -> Any:
            per_member = ops.reshape(outputs, (-1, self.members, outputs.shape[-1] // self.members))
            return ops.mean(per_member, axis=1)

    @keras.saving.register_keras_serializable(package="lstm_forecast")
    class FusedLSTM(keras.layers.Layer):
        """Keras' `LSTM(units)` as TensorFlow's fused `BlockLSTM` kernel: the whole sequence, and its gradient, in
        one op instead of a loop of small ones. The same weights (kernel (features, 4 units), recurrent kernel
        (units, 4 units), bias (4 units), gates i, f, c, o), the same arithmetic up to float32 rounding.
        Inputs (batch, steps, features); outputs (batch, units), or (batch, steps, units) with `return_sequences`."""

        def __init__(
            self,
            units: int,
            return_sequences: bool = False,
            kernel_initializer: Any = "glorot_uniform",
            recurrent_initializer: Any = "orthogonal",
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.units, self.return_sequences = units, return_sequences
            self.kernel_initializer = keras.initializers.get(kernel_initializer)
            self.recurrent_initializer = keras.initializers.get(recurrent_initializer)

        def build(self, input_shape: Any) -> None:
            units = self.units
            self.kernel = self.add_weight(
                shape=(input_shape[-1], 4 * units), initializer=self.kernel_initializer, name="kernel"
            )
            self.recurrent_kernel = self.add_weight(
                shape=(units, 4 * units), initializer=self.recurrent_initializer, name="recurrent_kernel"
            )
            self.bias = self.add_weight(shape=(4 * units,), initializer=forget_gate_ones, name="bias")

        def call(self, inputs: Any) -> Any:
            import tensorflow as tf

            # `BlockLSTM` wants gates in the order i, c, f, o (and adds `forget_bias` itself: 0 here, the bias holds
            # it). Not `BlockLSTMV2`, whose layout is Keras': TensorFlow registers the first op's gradient for it
            # too, which is wrong for it.
            kernel = tf.concat([self.kernel, self.recurrent_kernel], axis=0)
            i, f, c, o = tf.split(kernel, 4, axis=1)
            bias_i, bias_f, bias_c, bias_o = tf.split(self.bias, 4)
            start = tf.zeros((tf.shape(inputs)[0], self.units), inputs.dtype)
            no_peephole = tf.zeros((self.units,), inputs.dtype)
            h = tf.raw_ops.BlockLSTM(
                seq_len_max=tf.cast(tf.shape(inputs)[1], tf.int64),
                x=tf.transpose(inputs, (1, 0, 2)),  # time-major
                cs_prev=start,
                h_prev=start,
                w=tf.concat([i, c, f, o], axis=1),
                wci=no_peephole,
                wcf=no_peephole,
                wco=no_peephole,
                b=tf.concat([bias_i, bias_c, bias_f, bias_o], axis=0),
                forget_bias=0.0,
                cell_clip=0.0,  # no clipping of the cell state
                use_peephole=False,
            )[6]
            return tf.transpose(h, (1, 0, 2)) if self.return_sequences else h[-1]

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            if self.return_sequences:
                return (input_shape[0], input_shape[1], self.units)
            return (input_shape[0], self.units)

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {
                "units": self.units,
                "return_sequences": self.return_sequences,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            }

    return {
        "FusedLSTM": FusedLSTM,
        "MemberLSTM": MemberLSTM,
        "MemberDense": MemberDense,
        "MemberMedian": MemberMedian,
        "MemberMean": MemberMean,
    }
