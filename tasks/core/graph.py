"""The stage graph: each of the eight stages declared once.

The flows wire stages from this table, the store keys and places their outputs by it, the cache
policy checks completeness by each output's kind, the config names the fields that enter each
stage's key, and the CLI prints stages in its order. Adding a stage is one entry here (and its task).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

OutputKind = Literal["table", "model", "image"]  # a Parquet file, a folder of Keras files, a PNG file


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline. Its task takes the config, its inputs' keys and (all but generate,
    which keys its output by the series it reads) its own `key`, computed once by the flow.

    Attributes:
        name: the stage's name, also its Prefect task's name and its folder in the store.
        task: `module:attribute` of its Prefect task (imported when a flow runs it).
        inputs: argument name -> the stage whose output it is, in the task's argument order.
        fields: the config fields its output depends on; they, and nothing else, enter its key.
        version: bump when the code changes what it writes: its key changes, old outputs are not reused.
        output: what it writes.
        chunk: `module:function` that runs it for many series at once, where that is faster than one
            by one (one batched model call, inputs read once per chunk): it takes `(config, inputs' keys,
            key)` per series and returns each one's error or None (the stage that reads the input: its error, or
            its output's key and `series_facts`). Empty: a chunk runs the task's function per series.
        ahead: `module:function` for the part of it that reads no model, which a global run computes on its
            cluster while the network trains: it takes `(config, inputs' keys so far, series id)` per series
            and returns its results by id, which the chunk function then takes (`ahead=`, per series).
        reads_input: it reads the run's input (a file, or the built-in series): it keys its output by the
            series it reads (the flow computes no key for it), an input file by its digest, and it retries
            a failed read.
    """

    name: str
    task: str
    inputs: dict[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    version: int = 1
    output: OutputKind = "table"
    chunk: str = ""
    ahead: str = ""
    reads_input: bool = False


# generate's fields depend on its source (a file or the built-in series): see config.stage_fields.
SYNTHETIC_FIELDS = ("n_points", "time_step", "frequency", "noise_scale", "series_seed", "series_end")
FILE_FIELDS = ("time_column", "value_column", "id_column", "series_id", "nan_policy", "duplicate_policy", "series_end")

_STAGES = "lstm_forecast.tasks.stages"

# Versions: generate 2 missing values before a series' first value or after its last dropped, not filled. train 2
# seeded initializers; 3 its own tf.data pipeline, averaged weights validated; 4 (normalize 2)
# seasons, log and window-level model spaces, the forecaster refitted on every row; 7 (normalize 4, window 3)
# global models across series, the forecaster's space stored by normalize; 8 the members of a local ensemble
# in one loop (`MemberLSTM`); 9 a single network's LSTM in the fused kernel (`FusedLSTM`). normalize 5: seasonal
# profiles from STL's loess with R's default jumps; 6 'level' windows relative to a smoothed level; 7 seasonal
# profiles the mean of three cycles (a network of its own's fitted on the train split, refitted from its end).
# predict 3: the forecast's interval calibrated on the validation and test errors. evaluate 7: the statistical
# baselines fitted in the series' own unit (its fit part's mean absolute value). train 11: a network of its own
# trains on at most `LOCAL_WINDOW_BYTES` of windows per split; 12 a global model's refit at least one epoch (was two).
STAGE_TABLE: tuple[Stage, ...] = (
    Stage(
        "generate",
        f"{_STAGES}.generate:generate",
        reads_input=True,
        version=2,
        chunk=f"{_STAGES}.generate:generate_chunk",
    ),
    Stage(
        "split",
        f"{_STAGES}.split:split",
        {"series": "generate"},
        ("train_fraction", "validation_fraction"),
        chunk=f"{_STAGES}.split:split_chunk",
    ),
    Stage(
        "normalize",
        f"{_STAGES}.normalize:normalize",
        {"series": "generate", "split": "split"},
        ("scaler", "transform", "log", "seasons"),
        version=7,
        chunk=f"{_STAGES}.normalize:normalize_chunk",
    ),
    Stage(
        "window",
        f"{_STAGES}.window:window",
        {"series": "generate", "split": "split", "normalize": "normalize"},
        ("look_back", "horizon", "scope"),
        version=3,
        chunk=f"{_STAGES}.window:window_chunk",
    ),
    Stage(
        "train",
        f"{_STAGES}.train:train",
        {"series": "generate", "normalize": "normalize", "window": "window"},
        (
            "cell",
            "units",
            "layers",
            "ensemble",
            "dropout",
            "patch",
            "epochs",
            "batch_size",
            "learning_rate",
            "patience",
            "ema_momentum",
            "seed",
        ),
        version=12,
        output="model",
    ),
    Stage(
        "predict",
        f"{_STAGES}.predict:predict",
        {"series": "generate", "normalize": "normalize", "window": "window", "model": "train"},
        ("interval_level", "freq"),
        version=3,
        chunk=f"{_STAGES}.predict:predict_chunk",
    ),
    Stage(
        "evaluate",
        f"{_STAGES}.evaluate:evaluate",
        {
            "series": "generate",
            "normalize": "normalize",
            "window": "window",
            "predictions": "predict",
            "model": "train",
        },
        ("season_length", "arima_order", "arima_fit_points", "baselines", "forecast_model"),
        version=7,
        chunk=f"{_STAGES}.evaluate:evaluate_chunk",
        ahead=f"{_STAGES}.evaluate:statistical_ahead",
    ),
    Stage(
        "plot",
        f"{_STAGES}.plot:plot",
        {"series": "generate", "predictions": "predict", "model": "train"},
        output="image",
    ),
)

STAGE: dict[str, Stage] = {stage.name: stage for stage in STAGE_TABLE}
STAGES: tuple[str, ...] = tuple(STAGE)  # in run order
# The phases a flow runs: a series' stages before its model, and after it (train sits between).
PREPARE_STAGES: tuple[str, ...] = STAGES[1 : STAGES.index("train")]
FINISH_STAGES: tuple[str, ...] = STAGES[STAGES.index("train") + 1 :]
# Name of each stage's output when another stage takes it as input.
INPUT_STAGES: dict[str, str] = {name: source for stage in STAGE_TABLE for name, source in stage.inputs.items()}


def stages_until(stages: tuple[str, ...], last_stage: str) -> tuple[str, ...]:
    """`stages` up to and including `last_stage` (all of them when it is not one of them)."""
    return stages[: stages.index(last_stage) + 1] if last_stage in stages else stages


def stage_task(name: str) -> Any:
    """The Prefect task of stage `name` (importing its module: train's pulls in nothing heavy until it runs)."""
    return _imported(STAGE[name].task)


def stage_chunk_function(name: str) -> Any | None:
    """The function that runs stage `name` for many series at once (`Stage.chunk`), or None."""
    return _imported(STAGE[name].chunk) if STAGE[name].chunk else None


def stage_ahead_function(name: str) -> Any | None:
    """The function that computes ahead the part of stage `name` that reads no model (`Stage.ahead`), or None."""
    return _imported(STAGE[name].ahead) if STAGE[name].ahead else None


class Unwalked(Mapping[str, Any]):
    """A read-only mapping that is not a dict, for a flow's or a task's large values. Prefect walks a flow's return
    value and a task's arguments into every dict, list and model looking for futures (a flow's return value again
    for each parent flow): for 10,000 series' details that took 2.7 s of the flow process at the end of a run, and
    a panel's publication tasks 0.36 s for their 10,000 keys. It does not walk into this."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._values)} entries)"


class UnwalkedList(Sequence[Any]):
    """A read-only sequence that is not a list, for a task's long arguments (`Unwalked`): a global model's train
    task takes four lists of 10,000 keys, which Prefect walked twice as the task started (0.9 s of the flow
    process, while the network waited for its windows)."""

    __slots__ = ("_values",)

    def __init__(self, values: Sequence[Any]) -> None:
        self._values = values

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._values[index]

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._values)} items)"


def stage_logger() -> Any:
    """The current Prefect run's logger, or outside a run (a stage's function called directly) the package's."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("lstm_forecast")


def _imported(reference: str) -> Any:
    module, attribute = reference.split(":")
    return getattr(importlib.import_module(module), attribute)
