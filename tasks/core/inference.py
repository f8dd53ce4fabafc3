"""A saved network applied with numpy alone, so that forecasting from a stored model never imports TensorFlow.

When a model is saved, `network_arrays` turns it into a small graph of the layers this project builds (LSTM
and GRU layers, TensorFlow's fused LSTM included, ensembles' member layers, the series embedding, Dense, cropping,
concatenation, the members' mean or median) and their weights: one `.npz` file beside the `.keras` one.
`NumpyNetwork` reads that file and computes the same outputs with numpy, up to float32 rounding (about 1e-6
of the outputs' scale).

Why: a Dask worker or a `predict` process that only forecasts paid about 5 s of CPU to import TensorFlow and
most of a second to load each model, more than the forward pass of thousands of series. On one core numpy's
LSTM loop runs about as fast as TensorFlow's fused kernel: each step is one matrix product and one `tanh`
over all four gates (the sigmoid gates' weights are halved when the file is read, as sigmoid(z) =
(1 + tanh(z / 2)) / 2).

A network with any other layer or setting (an activation other than the ones Keras' LSTM and GRU default to)
gets no file (`network_arrays` returns None) and is applied by Keras, as before.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GRAPH_KEY = "graph"
FORMAT_VERSION = 1
FORWARD_WINDOWS = 512  # windows per pass: one pass's gates (512 x 4 units x members) stay in the CPU's cache

_LSTM_CLASSES = {"FusedLSTM", "LSTM", "MemberLSTM"}
_IDENTITY_CLASSES = {"InputLayer", "Dropout"}
_CLASSES = (
    _LSTM_CLASSES
    | _IDENTITY_CLASSES
    | {
        "GRU",
        "Dense",
        "MemberDense",
        "MemberMean",
        "MemberMedian",
        "Cropping1D",
        "Concatenate",
        "SeriesEmbedding",
    }
)


class UnsupportedNetworkError(ValueError):
    """A layer or setting that numpy inference does not implement: the network is applied by Keras."""


def network_arrays(model: Any) -> dict[str, np.ndarray] | None:
    """A Keras model (Sequential or Functional, built by `train.build_model`) as the arrays that
    `save_network_arrays` writes: its graph as JSON under `GRAPH_KEY`, and each layer's weights as
    'layer/weight'. None when a layer is not one numpy inference implements."""
    try:
        nodes = _graph_nodes(model)
    except UnsupportedNetworkError:
        return None
    one_window = np.zeros((1, *model.inputs[0].shape[1:]), dtype="float32")
    with warnings.catch_warnings():  # Keras warns that a Functional model's input came as a tensor, not a list
        warnings.simplefilter("ignore", UserWarning)
        outputs = int(np.asarray(model(one_window)).shape[-1])
    graph = {"format": FORMAT_VERSION, "outputs": outputs, "nodes": nodes}
    arrays: dict[str, np.ndarray] = {GRAPH_KEY: np.array(json.dumps(graph))}
    for layer in model.layers:
        for weight in layer.weights:
            arrays[f"{layer.name}/{weight.name}"] = np.asarray(weight.numpy(), dtype="float32")
    return arrays


def save_network_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `network_arrays` to `path` (an uncompressed .npz)."""
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def _graph_nodes(model: Any) -> list[dict[str, Any]]:
    """Each layer in the order of computation: name, class, the settings it is applied with, and the names of the
    layers it reads (none for the input). Raises `UnsupportedNetworkError`."""
    description = model.get_config()
    layers = description["layers"]
    nodes: list[dict[str, Any]] = []
    previous: str | None = None
    for layer in layers:
        name = layer["config"]["name"]
        if "inbound_nodes" in layer:  # a Functional model: each layer names what it reads
            inbound = layer["inbound_nodes"]
            if len(inbound) > 1:
                raise UnsupportedNetworkError(f"layer {name} is applied more than once")
            inputs = [] if not inbound else _input_names(inbound[0]["args"])
        else:  # Sequential: each layer reads the one before
            inputs = [] if previous is None else [previous]
        nodes.append({"name": name, "class": layer["class_name"], "settings": _settings(layer), "inputs": inputs})
        previous = name
    if "output_layers" in description:
        outputs = description["output_layers"]
        outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
        if len(outputs) != 1 or outputs[0][0] != nodes[-1]["name"]:
            raise UnsupportedNetworkError("the model's output is not its last layer")
    if sum(not node["inputs"] for node in nodes) != 1 or nodes[0]["class"] != "InputLayer":
        raise UnsupportedNetworkError("the model has more than one input")
    return nodes


def _input_names(arguments: Any) -> list[str]:
    """The layer names of the Keras tensors in a serialised call's arguments (nested lists included)."""
    if isinstance(arguments, dict):
        if arguments.get("class_name") == "__keras_tensor__":
            return [arguments["config"]["keras_history"][0]]
        return [name for value in arguments.values() for name in _input_names(value)]
    if isinstance(arguments, (list, tuple)):
        return [name for value in arguments for name in _input_names(value)]
    return []


def _settings(layer: dict[str, Any]) -> dict[str, Any]:
    """What applying one serialised layer needs of its config; raises `UnsupportedNetworkError` for anything else."""
    kind, config = layer["class_name"], layer["config"]
    if kind not in _CLASSES:
        raise UnsupportedNetworkError(f"layer {config['name']} is a {kind}")
    if kind in ("LSTM", "GRU"):
        expected = {
            "activation": "tanh",
            "recurrent_activation": "sigmoid",
            "use_bias": True,
            "go_backwards": False,
            "return_state": False,
            **({"reset_after": True} if kind == "GRU" else {}),
        }
        if any(config.get(key, value) != value for key, value in expected.items()):
            raise UnsupportedNetworkError(f"layer {config['name']} is a {kind} with other settings")
    if kind == "Dense" and config.get("activation") not in (None, "linear"):
        raise UnsupportedNetworkError(f"layer {config['name']} has an activation")
    if kind == "Concatenate" and config.get("axis", -1) != -1:
        raise UnsupportedNetworkError(f"layer {config['name']} concatenates another axis")
    keep = ("return_sequences", "members", "shared_input", "cropping")
    return {key: config[key] for key in keep if key in config}


@dataclass(frozen=True)
class _Node:
    name: str
    kind: str
    inputs: tuple[str, ...]
    settings: dict[str, Any]
    weights: dict[str, np.ndarray]


class NumpyNetwork:
    """A saved network's forward pass in numpy: `network(inputs)` for inputs (n, steps, channels) float32 gives
    outputs (n, outputs), as the Keras model `network_arrays` was made from gives them."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        graph = json.loads(str(arrays[GRAPH_KEY]))
        if graph.get("format") != FORMAT_VERSION:
            raise UnsupportedNetworkError(f"numpy network format {graph.get('format')}")
        self.nodes = []
        for node in graph["nodes"]:
            prefix = node["name"] + "/"
            weights = {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
            if node["class"] in _LSTM_CLASSES:
                weights = _lstm_weights(node["class"], weights)
            self.nodes.append(_Node(node["name"], node["class"], tuple(node["inputs"]), node["settings"], weights))
        self.output_width = int(graph["outputs"])

    @classmethod
    def load(cls, path: Path) -> NumpyNetwork:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(dict(arrays))

    def __call__(self, inputs: np.ndarray, batch: int = FORWARD_WINDOWS) -> np.ndarray:
        inputs = np.asarray(inputs, dtype="float32")
        outputs = np.empty((len(inputs), self.output_width), dtype="float32")
        for start in range(0, len(inputs), batch):
            outputs[start : start + batch] = self._apply(inputs[start : start + batch])
        return outputs

    def _apply(self, inputs: np.ndarray) -> np.ndarray:
        values: dict[str, np.ndarray] = {}
        for node in self.nodes:
            read = [values[name] for name in node.inputs] or [inputs]
            values[node.name] = _apply_layer(node, read)
        return values[self.nodes[-1].name]


def _lstm_weights(kind: str, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An LSTM layer's kernel (M, F, 4U), recurrent kernel (M, U, 4U) and bias (M, 1, 4U) for M members (one for
    a plain LSTM), gates reordered from Keras' i, f, c, o to i, f, o, c and the sigmoid gates' columns halved:
    one `tanh` over a step's pre-activations then gives every gate."""
    kernel, recurrent, bias = weights["kernel"], weights["recurrent_kernel"], weights["bias"]
    if kind != "MemberLSTM":
        kernel, recurrent, bias = kernel[None], recurrent[None], bias[None]
    units = recurrent.shape[1]
    order = np.r_[0 : 2 * units, 3 * units : 4 * units, 2 * units : 3 * units]
    scale = np.r_[np.full(3 * units, 0.5), np.ones(units)].astype("float32")
    return {
        "kernel": np.ascontiguousarray(kernel[..., order] * scale),
        "recurrent": np.ascontiguousarray(recurrent[..., order] * scale),
        "bias": np.ascontiguousarray((bias[..., order] * scale)[:, None, :]),
    }


def _apply_layer(node: _Node, read: list[np.ndarray]) -> np.ndarray:
    kind, settings, weights = node.kind, node.settings, node.weights
    x = read[0]
    if kind in _IDENTITY_CLASSES:
        return x
    if kind in _LSTM_CLASSES:
        return _lstm(x, weights, settings.get("shared_input", True), settings.get("return_sequences", False))
    if kind == "GRU":
        return _gru(x, weights, settings.get("return_sequences", False))
    if kind == "Dense":
        return x @ weights["kernel"] + weights.get("bias", 0.0)
    if kind == "MemberDense":
        members = settings["members"]
        per_member = x.reshape(len(x), members, -1).transpose(1, 0, 2)  # (M, n, F)
        outputs = np.matmul(per_member, weights["kernel"]) + weights["bias"][:, None, :]  # (M, n, O)
        return outputs.transpose(1, 0, 2).reshape(len(x), -1)
    if kind in ("MemberMean", "MemberMedian"):
        per_member = x.reshape(len(x), settings["members"], -1)
        return per_member.mean(axis=1) if kind == "MemberMean" else np.median(per_member, axis=1)
    if kind == "Cropping1D":
        before, after = settings["cropping"]
        return x[:, before : x.shape[1] - after]
    if kind == "Concatenate":
        return np.concatenate(read, axis=-1)
    if kind == "SeriesEmbedding":
        rows = np.rint(x[..., -1]).astype(np.int64)
        return np.concatenate([x[..., :-1], weights["embeddings"][rows]], axis=-1)
    raise UnsupportedNetworkError(f"layer {node.name} is a {kind}")


def _lstm(x: np.ndarray, weights: dict[str, np.ndarray], shared_input: bool, return_sequences: bool) -> np.ndarray:
    """LSTM layers of M members over inputs (n, T, F) read by every member, or (n, T, M * F) with member m reading
    its slice; outputs (n, M * U), or (n, T, M * U) with `return_sequences` (member-major, as Keras lays them)."""
    kernel, recurrent, bias = weights["kernel"], weights["recurrent"], weights["bias"]
    members, units = recurrent.shape[0], recurrent.shape[1]
    n, steps = x.shape[0], x.shape[1]
    time_major = np.ascontiguousarray(x.transpose(1, 0, 2))  # (T, n, F or M * F)
    if shared_input:
        projected = np.matmul(time_major[:, None], kernel)  # (T, M, n, 4U)
    else:
        projected = np.matmul(time_major.reshape(steps, n, members, -1).transpose(0, 2, 1, 3), kernel)
    projected += bias
    h = np.zeros((members, n, units), dtype="float32")
    c = np.zeros((members, n, units), dtype="float32")
    gates = np.empty((members, n, 4 * units), dtype="float32")
    scratch = np.empty((members, n, units), dtype="float32")
    sequence = np.empty((steps, members, n, units), dtype="float32") if return_sequences else None
    for step in range(steps):
        np.matmul(h, recurrent, out=gates)
        gates += projected[step]
        np.tanh(gates, out=gates)
        sigmoid = gates[..., : 3 * units]
        sigmoid *= 0.5
        sigmoid += 0.5
        input_gate, forget_gate = gates[..., :units], gates[..., units : 2 * units]
        output_gate, candidate = gates[..., 2 * units : 3 * units], gates[..., 3 * units :]
        c *= forget_gate
        np.multiply(input_gate, candidate, out=scratch)
        c += scratch
        np.tanh(c, out=scratch)
        np.multiply(output_gate, scratch, out=h)
        if sequence is not None:
            sequence[step] = h
    if sequence is not None:
        return sequence.transpose(2, 0, 1, 3).reshape(n, steps, members * units)
    return h.transpose(1, 0, 2).reshape(n, members * units)


def _gru(x: np.ndarray, weights: dict[str, np.ndarray], return_sequences: bool) -> np.ndarray:
    """Keras' GRU (`reset_after`, gates z, r, h) over inputs (n, T, F): outputs (n, U), or (n, T, U)."""
    kernel, recurrent, bias = weights["kernel"], weights["recurrent_kernel"], weights["bias"]
    units = recurrent.shape[0]
    projected = np.matmul(x.transpose(1, 0, 2), kernel) + bias[0]  # (T, n, 3U)
    h = np.zeros((x.shape[0], units), dtype="float32")
    sequence = []
    for step in range(x.shape[1]):
        own = h @ recurrent + bias[1]
        update = 0.5 * np.tanh(0.5 * (projected[step, :, :units] + own[:, :units])) + 0.5  # sigmoid
        reset = 0.5 * np.tanh(0.5 * (projected[step, :, units : 2 * units] + own[:, units : 2 * units])) + 0.5
        candidate = np.tanh(projected[step, :, 2 * units :] + reset * own[:, 2 * units :])
        h = (update * h + (1 - update) * candidate).astype("float32")
        sequence.append(h)
    return np.stack(sequence, axis=1) if return_sequences else h
