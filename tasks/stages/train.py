"""Stage 5, train: one network per series, or one across a panel's series (`train_global`), fitted by
`tasks/core/fitting.py` in the run's training process when it started one; its epochs logged here and shown in the
Prefect UI's progress artifact.

Two models come out of the stage, in one model folder:
- `model.keras`, trained on the train split only: the one that predicts every split and is
  scored on the test split (the metrics are its metrics);
- `forecaster.keras`, the forecaster for the future: that model trained further on every row
  (test split included) for a tenth of the epochs early stopping kept, warm-started, in a
  model space refitted on every row (seasonal profiles up to the last cycle). It makes the
  `forecast` rows and `lstm-forecast predict`'s forecasts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from lstm_forecast.tasks.core.config import ForecastConfig, feature_width
from lstm_forecast.tasks.core.covariates import feature_columns, read_features
from lstm_forecast.tasks.core.defaults import GLOBAL_VALIDATION_BUDGET, local_window_cap, window_cap
from lstm_forecast.tasks.core.embedding import (
    UNKNOWN_ROW,
    UNKNOWN_SHARE,
    embedding_rows,
    series_row,
    training_rows,
    with_series_channel,
)
from lstm_forecast.tasks.core.fitting import (
    EpochReport,
    TrainingJob,
    WarmUp,
    fit_and_save,
    member_look_backs,
    training_arrays,
    warm_up,
)
from lstm_forecast.tasks.core.space import ModelSpace, read_model_space, stored_model_space
from lstm_forecast.tasks.core.store import (
    Store,
    fingerprint,
)
from lstm_forecast.tasks.core.training_process import ahead_in_training_process, in_training_process
from lstm_forecast.tasks.core.windows import (
    SeriesLayout,
    cut_in_blocks,
    window_inputs,
    window_targets_matrix,
)


def training_progress(config: ForecastConfig) -> tuple[EpochReport, Callable[[], None]]:
    """An epoch report that logs the losses and moves the Prefect UI's progress artifact along, and
    the call that marks training done (early stopping may end before the last epoch)."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, key="lstm-forecast-training", description="Training epochs done")

    def report(epoch: int, logs: dict[str, float], seconds: float) -> None:
        losses = "  ".join(f"{name} {value:.5f}" for name, value in logs.items() if "loss" in name)
        logger.info("epoch %d/%d  %s  (%.1f s)", epoch, config.epochs, losses, seconds)
        update_progress_artifact(progress, 100.0 * epoch / config.epochs)

    return report, lambda: update_progress_artifact(progress, 100.0)


def fit_with_forecaster(job: TrainingJob) -> dict[str, Any]:
    """`fit_and_save` in the training process when the run started one (else here), its epochs logged here and
    shown in the Prefect UI's progress artifact. Returns what the metadata records of the fit."""
    logger = get_run_logger()
    x_train, x_val = job.train_set[0], job.validation_set[0]
    logger.info("training on %d windows (validation %d), up to %d epochs", len(x_train), len(x_val), job.config.epochs)
    report, done = training_progress(job.config)
    fit = in_training_process(fit_and_save, job, report)
    forecaster = fit["forecaster"]
    logger.info("forecaster: trained %d more epochs on all %d windows", forecaster["epochs"], forecaster["windows"])
    done()
    return fit


@task(name="train", result_serializer="json")
def train(config: ForecastConfig, series: str, normalize: str, window: str, key: str) -> str:
    """Fit the model on the train split and its forecaster on every row; returns the model key."""
    store = Store(config.artifacts_dir)
    upstream = {"series": series, "normalize": normalize, "window": window}
    normalized = store.read_table("normalize", normalize)
    scaled, features = normalized["y_scaled"].to_numpy(), read_features(normalized, feature_width(config))
    targets = store.read_table("window", window)
    space, full_space = read_model_space(store, normalize), read_model_space(store, normalize, forecaster=True)
    y = store.read_table("generate", series)["y"].to_numpy()
    cap = local_window_cap(config.look_back, 1 + feature_width(config))
    metadata = {
        "key": key,
        "scope": "local",
        "config": config.model_dump(mode="json"),
        "model_space": space.to_dict(),
        "covariates": store.read_table_metadata("normalize", normalize).get("covariates"),
        "data_fingerprint": series,
        "upstream": upstream,
    }
    fit_with_forecaster(
        TrainingJob(
            training_arrays(scaled, targets, config, "train", space, features, cap),
            training_arrays(scaled, targets, config, "validation", space, features, cap),
            training_arrays(full_space.encode(y), targets, config, None, full_space, features, cap),
            config,
            store.root,
            key,
            metadata,
            forecaster_details={"model_space": full_space.to_dict()},
        )
    )
    return key


@dataclass(frozen=True)
class MemberSeries:
    """One series of a global model: its values, window origins and model spaces."""

    y: np.ndarray
    targets: Any  # `row` and `split` of its window origins (from `window_targets`): a table or its columns
    space: ModelSpace
    full_space: ModelSpace
    features: np.ndarray | None = None  # (n, F) channels read beside the values
    series_row: int = 0  # its row of the series embedding (0: the model has none)

    def split_mask(self, split_name: str) -> np.ndarray:
        return np.asarray(self.targets["split"]) == split_name


def stacked_splits(
    members: list[MemberSeries], config: ForecastConfig, caps: dict[str | None, int]
) -> dict[str | None, tuple[np.ndarray, np.ndarray]]:
    """Inputs (m, look_back / patch, channels) and targets (m, horizon), float32, of each split in `caps` (a split's
    name, or None: every window, in the forecaster's space) from the last `cap` windows of each member, one member
    after another. Each space is encoded once per member, and a split's windows are cut in one pass: the members'
    encoded values lie end to end, each after `look_back` copies of its first finite value (the pad
    `window_inputs` gives a window near a series' start), their reference levels and features laid out alike (zero
    levels for a member not read relative to one). With a series embedding each window ends with its member's row
    (`embedding.training_rows` outside the validation split). The layout and each split's origins are found for all
    members at once (10,000 members: about 0.6 s less than member by member)."""
    look_back = config.look_back
    layout = SeriesLayout(np.array([len(m.y) for m in members], dtype=np.int64), look_back)
    values: dict[bool, np.ndarray] = {}
    levels: dict[bool, np.ndarray | None] = {}
    for full in sorted({split is None for split in caps}):  # False: the model's space, True: the forecaster's
        own = [m.full_space if full else m.space for m in members]
        values[full], levels[full] = layout.encoded(own, [m.y for m in members])
    features = [m.features for m in members if m.features is not None]
    channels = layout.laid_out(features, np.stack([f[0] for f in features])) if features else None
    origins = np.concatenate([np.asarray(m.targets["row"], dtype=np.int64) for m in members] or [np.zeros(0, int)])
    splits = np.concatenate([np.asarray(m.targets["split"]) for m in members] or [np.zeros(0, str)])
    owner = np.repeat(np.arange(len(members)), [len(m.targets["row"]) for m in members])
    embedded = any(m.series_row for m in members)
    stacked: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}
    for split, cap in caps.items():
        chosen = last_of_each(np.arange(len(origins)) if split is None else np.flatnonzero(splits == split), owner, cap)
        full = split is None
        z, at = values[full], layout.positions(owner[chosen], origins[chosen])
        reference = levels[full]
        cut = functools.partial(window_inputs, z, look_back=look_back, patch=config.patch, reference=reference)
        inputs = cut_in_blocks(functools.partial(cut, features=channels), at)
        target = functools.partial(window_targets_matrix, z, horizon=config.horizon, reference=reference)
        if embedded:
            counts = np.bincount(owner[chosen], minlength=len(members))
            rows = [
                np.full(count, m.series_row)
                if split == "validation"
                else training_rows(m.series_row, int(count), config.seed)
                for m, count in zip(members, counts, strict=True)
            ]
            inputs = with_series_channel(inputs, np.concatenate(rows))
        targets = cut_in_blocks(target, at)
        stacked[split] = inputs, targets
    return stacked


def last_of_each(positions: np.ndarray, owner: np.ndarray, cap: int) -> np.ndarray:
    """The last `cap` of `positions` (ascending, each group's together) of each group (`owner[positions]`)."""
    groups = owner[positions]
    ends = np.cumsum(np.bincount(groups, minlength=int(owner.max(initial=-1)) + 1))
    return positions[ends[groups] - np.arange(len(positions)) <= cap]


def global_embedding_rows(config: ForecastConfig, series_ids: Sequence[str]) -> dict[str, int]:
    """The rows of `train_global`'s series embedding (series id -> row; the unknown row is one more), or {}."""
    return embedding_rows(list(series_ids)) if config.series_embedding else {}


def warm_up_global(config: ForecastConfig, series_ids: Sequence[str]) -> None:
    """Have the training process, if the run started one, build and trace the network `train_global` is about to
    fit across `series_ids`, while this process assembles its windows (`fitting.warm_up`)."""
    rows = global_embedding_rows(config, series_ids)
    ahead_in_training_process(warm_up, WarmUp(config, len(rows) + 1 if rows else 0))


@task(name="train", result_serializer="json")
def train_global(
    config: ForecastConfig,
    series: Sequence[str],
    normalize: Sequence[str],
    window: Sequence[str],
    series_ids: Sequence[str],
    key: str,
) -> str:
    """One model across every series (each window in its own series' model space); returns the model key.

    The sequences hold each series' keys and id, in the same order. Early stopping watches every series'
    validation windows together.
    """
    series, normalize, window, series_ids = (list(keys) for keys in (series, normalize, window, series_ids))
    store = Store(config.artifacts_dir)
    upstream = {"series": series, "normalize": normalize, "window": window}
    values = store.read_columns("generate", series, ("y",))  # each pack read once, not once per series
    origins = store.read_columns("window", window, ("row", "split"))
    width = feature_width(config)
    channels = tuple(feature_columns(width))
    scaled = store.read_columns("normalize", normalize, channels) if width else {}
    rows = global_embedding_rows(config, series_ids)
    spaces = store.read_metadata("normalize", normalize)  # each pack's footer read once, not its table
    members = [
        MemberSeries(
            store.read_own_columns("generate", s, ("y",), values)["y"],
            store.read_own_columns("window", w, ("row", "split"), origins),
            stored_model_space(spaces[n]),
            stored_model_space(spaces[n], forecaster=True),
            read_features(store.read_own_columns("normalize", n, channels, scaled), width) if width else None,
            series_row(rows, i) if rows else 0,
        )
        for s, n, w, i in zip(series, normalize, window, series_ids, strict=True)
    ]
    del values, origins, scaled, spaces
    cap = window_cap([int(m.split_mask("train").sum()) for m in members])
    validation_cap = window_cap([int(m.split_mask("validation").sum()) for m in members], GLOBAL_VALIDATION_BUDGET)
    get_run_logger().info(
        "one model across %d series, at most %d training and %d validation windows from each",
        len(members),
        cap,
        validation_cap,
    )
    stacked = stacked_splits(members, config, {"train": cap, "validation": validation_cap, None: cap})
    del members
    metadata = {
        "key": key,
        "scope": "global",
        "config": config.model_dump(mode="json"),
        "series_count": len(series),
        "series_ids": series_ids,
        "window_cap": cap,
        "validation_window_cap": validation_cap,
        "data_fingerprint": fingerprint("global", series),
        "upstream": upstream,
        "member_look_backs": member_look_backs(config),
        **(
            {"series_embedding": {"rows": rows, "unknown_row": UNKNOWN_ROW, "unknown_share": UNKNOWN_SHARE}}
            if rows
            else {}
        ),
    }
    fit_with_forecaster(
        TrainingJob(
            stacked["train"],
            stacked["validation"],
            stacked[None],
            config,
            store.root,
            key,
            metadata,
            "median",
            len(rows) + 1 if rows else 0,
        )
    )
    return key
