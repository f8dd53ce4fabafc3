"""The model registry: every trained model, its metrics, and which one is the champion.

Pure functions over DataFrames; `Store` reads and writes them under its registry lock.
Statuses: `champion` (exactly one per series once any model of it exists), `challenger`
(trained, not promoted), `retired` (a former champion). Models of a long-format input are
grouped by `series_id` (their `unique_id`); a single-series input has series_id "".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.logging import get_logger

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.store import KEY_COLUMN, KEY_LENGTH, Store, StoreNotWritableError, is_key
from lstm_forecast.tasks.stages.evaluate import pooled_test_metrics

COLUMNS = (
    "key",
    "series_id",
    "created",
    "status",
    "test_rmse",
    "test_mae",
    "naive_test_rmse",
    "test_mase",
    "naive_test_mase",
    "data_fingerprint",
    "series",
    "input",
    "config",
    "decision",
)
# Columns added after the first registries were written: a registry may lack them (they read as empty).
LATER_COLUMNS = ("series_id", "test_mase", "naive_test_mase")
METRIC_COLUMNS = tuple(name for name in COLUMNS if name.split("_")[-1] in ("rmse", "mae", "mase"))
TEXT_COLUMNS = tuple(name for name in COLUMNS if name not in METRIC_COLUMNS)
STATUSES = ("champion", "challenger", "retired")
DECISION_COLUMNS = ("challenger", "challenger_rmse", "champion_rmse", "outcome")  # what replaying one reads
GLOBAL_SERIES = "*"  # the series_id of a global model: every series of its input
log = get_logger("lstm_forecast.registry")


def utc_now() -> str:
    """Now, as an ISO 8601 UTC timestamp to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def pending_champion(registry: pd.DataFrame | None, model: str) -> tuple[str | None, str]:
    """The champion `model` must be compared with, or None and why there is nothing to decide."""
    if registry is None:
        return None, "no champion yet"
    current = champion(registry, series_of(registry, model))
    if current is None:
        return None, "no champion yet"
    if current == model:
        return None, f"model {model} is the champion already"
    row = registry.loc[registry["key"] == model]
    if len(row) and row["decision"].iloc[0]:
        return None, f"model {model} was decided before ({row['decision'].iloc[0]})"
    return current, f"challenger {model} against champion {current}"


def series_of(registry: pd.DataFrame, model: str) -> str:
    """The series_id a listed model was trained on ("" when unknown or single-series)."""
    registry = with_series_ids(registry)
    rows = registry.loc[registry["key"] == model, "series_id"]
    return str(rows.iloc[0]) if len(rows) else ""


def with_series_ids(registry: pd.DataFrame) -> pd.DataFrame:
    """The registry with a `series_id` column (registries written before it existed lack one)."""
    if "series_id" not in registry:
        registry = registry.assign(series_id="")
    return registry.assign(series_id=registry["series_id"].fillna("").astype(str))


def empty_registry() -> pd.DataFrame:
    return pd.DataFrame(
        {
            name: pd.Series(dtype="float64" if name.split("_")[-1] in ("rmse", "mae", "mase") else "object")
            for name in COLUMNS
        }
    )


def register(registry: pd.DataFrame | None, entry: dict[str, Any]) -> pd.DataFrame:
    """Add a model (or refresh its metrics if it is listed). The first model becomes the champion."""
    registry = empty_registry() if registry is None else with_series_ids(registry)
    if (registry["key"] == entry["key"]).any():
        index = registry.index[registry["key"] == entry["key"]][0]
        for name in ("test_rmse", "test_mae", "naive_test_rmse", "test_mase", "naive_test_mase"):
            registry.loc[index, name] = entry[name]
        return registry
    same_series = registry["series_id"] == entry.get("series_id", "")
    status = "challenger" if (same_series & (registry["status"] == "champion")).any() else "champion"
    row = {name: entry.get(name) for name in COLUMNS} | {
        "status": status,
        "decision": "" if status == "challenger" else "first model",
    }
    return pd.concat([registry, pd.DataFrame([row])], ignore_index=True)


def champion(registry: pd.DataFrame | None, series_id: str = "") -> str | None:
    """The key of the champion of one series (`series_id` "" for a single-series input), or None."""
    if registry is None:
        return None
    registry = with_series_ids(registry)
    keys = registry.loc[(registry["status"] == "champion") & (registry["series_id"] == series_id), "key"]
    return str(keys.iloc[0]) if len(keys) else None


def decide(
    registry: pd.DataFrame, challenger: str, challenger_rmse: float, champion_rmse: float, metric: str = "RMSE"
) -> tuple[pd.DataFrame, str]:
    """Promote the challenger if its holdout error (`metric`, lower is better) is lower than the champion's;
    returns (registry, outcome)."""
    registry = with_series_ids(registry)
    current = champion(registry, series_of(registry, challenger))
    is_challenger = registry["key"] == challenger
    if challenger_rmse < champion_rmse:
        registry.loc[registry["key"] == current, "status"] = "retired"
        registry.loc[is_challenger, "status"] = "champion"
        outcome = "promoted"
    else:
        outcome = "kept out"
    registry.loc[is_challenger, "decision"] = (
        f"{outcome}: holdout {metric} {challenger_rmse:.4f} vs champion {current} {champion_rmse:.4f}"
    )
    return registry, outcome


def model_entry(store: Store, model_key: str, metrics: pd.DataFrame, created: str) -> dict[str, Any]:
    """The registry entry of a trained model, from its metadata and its evaluation (the evaluate tables of
    its series stacked, column `_key` naming each one's; `Store.read_tables`).

    A global model is listed once, under series_id `GLOBAL_SERIES`, with its MASE averaged over its
    series (RMSE and MAE are in each series' units: they are left empty).
    """
    metadata = store.read_model_metadata(model_key)
    is_global = metadata.get("scope") == "global"
    per_series = pooled_test_metrics(metrics, KEY_COLUMN)

    def pooled(model: str, metric: str) -> float:
        column = f"{model}_{metric}"
        return float(np.mean(per_series[column].to_numpy())) if column in per_series else float("nan")

    return {
        "key": model_key,
        "series_id": GLOBAL_SERIES if is_global else metadata["config"].get("series_id") or "",
        "created": created,
        "test_rmse": float("nan") if is_global else pooled("lstm", "rmse"),
        "test_mae": float("nan") if is_global else pooled("lstm", "mae"),
        "naive_test_rmse": float("nan") if is_global else pooled("naive", "rmse"),
        "test_mase": pooled("lstm", "mase"),
        "naive_test_mase": pooled("naive", "mase"),
        "data_fingerprint": metadata["data_fingerprint"],
        "series": metadata["data_fingerprint"] if is_global else metadata["upstream"]["series"],
        "input": metadata["config"].get("input") or "",
        "config": json.dumps(metadata["config"], sort_keys=True),
    }


def rebuild_registry(entries: list[dict[str, Any]], decisions: pd.DataFrame | None) -> pd.DataFrame | None:
    """The registry from each registered model's entry (in the order they were first registered) and
    the retraining decisions replayed in order."""
    registry = None
    for entry in sorted(entries, key=lambda e: (str(e.get("created", "")), e["key"])):
        registry = register(registry, entry)
    if registry is None or decisions is None:
        return registry
    for row in decisions.to_dict("records"):
        if (registry["key"] == row["challenger"]).any():
            registry = apply_decision(registry, row)
    return registry


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool))


def _is_text(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, float) and np.isnan(value))


_NUMBERS = ("floating", "integer", "mixed-integer-float", "decimal", "empty")  # pandas' inferred kinds


def _numbers(column: pd.Series) -> bool:
    """Every value of `column` a number or empty (checked by pandas, not row by row)."""
    if pd.api.types.is_bool_dtype(column):
        return False
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.infer_dtype(column, skipna=True) in _NUMBERS


def _texts(column: pd.Series) -> bool:
    """Every value of `column` text or empty."""
    return column.isna().all() or pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty")


def registry_problem(registry: pd.DataFrame) -> str | None:
    """Why a table that read back is not a registry (None: it is one). A registry has every column of
    `COLUMNS` (but `LATER_COLUMNS`), at least one row, unique store keys, known statuses, numbers for its
    metrics, text elsewhere, and at most one champion per series."""
    missing = [name for name in COLUMNS if name not in registry and name not in LATER_COLUMNS]
    if missing:
        return f"no column {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}"
    if registry.empty:
        return "no rows"
    keys = registry["key"]
    well_formed = _texts(keys) and keys.notna().all() and keys.str.fullmatch(f"[0-9a-f]{{{KEY_LENGTH}}}").all()
    if not (well_formed and keys.is_unique):
        return "keys that are not unique store keys"
    if not registry["status"].isin(STATUSES).all():
        return f"statuses other than {', '.join(STATUSES)}"
    for name in METRIC_COLUMNS:
        if name in registry and not _numbers(registry[name]):
            return f"values of {name} that are not numbers"
    for name in TEXT_COLUMNS:
        if name in registry and not _texts(registry[name]):
            return f"values of {name} that are not text"
    champions = with_series_ids(registry).loc[lambda r: r["status"] == "champion", "series_id"]
    if not champions.is_unique:
        return "two champions of one series"
    return None


def entry_problem(entry: dict[str, Any]) -> str | None:
    """Why a registration (a mapping of its own key, `Store.read_registrations`) is not a model's entry."""
    if not isinstance(entry.get("created"), str):
        return "no creation time"
    for name in METRIC_COLUMNS:
        if not _is_number(entry.get(name)):
            return f"{name} is not a number"
    for name in TEXT_COLUMNS:
        if name not in ("status", "decision") and not _is_text(entry.get(name)):
            return f"{name} is not text"
    return None


def decisions_problem(decisions: pd.DataFrame) -> str | None:
    """Why a table that read back is not the decisions file (None: it is)."""
    missing = [name for name in DECISION_COLUMNS if name not in decisions]
    if missing:
        return f"no column {', '.join(missing)}"
    if not decisions["challenger"].map(is_key).all():
        return "challengers that are not store keys"
    if not all(_numbers(decisions[name]) for name in ("challenger_rmse", "champion_rmse")):
        return "scores that are not numbers"
    return None


def read_decisions(store: Store, repair: bool = True) -> pd.DataFrame | None:
    """The decisions file; one that is not a decisions file reads as none (with `repair`: it is moved aside)."""
    decisions = store.read_decisions() if repair else _peek(store.decisions_path)
    if decisions is not None and (problem := decisions_problem(decisions)) is not None:
        if repair:
            store.set_aside(store.decisions_path, f"is not a decisions file ({problem})")
        return None
    return decisions


def current_registry(store: Store, repair: bool) -> tuple[pd.DataFrame | None, bool]:
    """The registry, and whether its file must be written again. A file that does not read back, or is not a
    registry (`registry_problem`), is set aside; the registry is then rebuilt from the registrations (those
    that are not a model's entry left out) and the decisions. Without `repair`, nothing is moved or logged:
    the registry is only computed."""
    registry = store.read_registry() if repair else _peek(store.registry_path)
    if registry is not None and (problem := registry_problem(registry)) is not None:
        if repair:
            store.set_aside(store.registry_path, f"is not a registry ({problem})")
        registry = None
    if registry is not None:
        registry, replayed = replay_pending(registry, read_decisions(store, repair))
        if replayed and repair:
            log.warning("registry: %d decision(s) recorded before the registry was written, replayed", replayed)
        return registry, bool(replayed)
    entries = []
    for entry in store.read_registrations(quiet=not repair):
        if (problem := entry_problem(entry)) is None:
            entries.append(entry)
        elif repair:
            log.warning("registration of model %s: %s; left out", entry["key"], problem)
    if not entries:
        return None, False
    registry = rebuild_registry(entries, read_decisions(store, repair))
    if repair:
        log.warning("registry rebuilt from %d registered models and their decisions", len(entries))
    return registry, True


def _peek(path: Any) -> pd.DataFrame | None:
    """A Parquet file, or None when it is absent or does not read back (nothing moved, nothing logged)."""
    try:
        return pd.read_parquet(path)
    except Exception:
        return None


def replay_pending(registry: pd.DataFrame, decisions: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    """The registry with every recorded decision applied whose challenger it still lists as undecided (a
    decision is written before the registry: a crash between the two leaves this), and how many were."""
    if decisions is None or decisions.empty:
        return registry, 0
    undecided = registry["decision"].fillna("").astype(str) == ""
    pending = set(registry.loc[undecided & (registry["status"] == "challenger"), "key"])
    replayed = 0
    for row in decisions.to_dict("records"):
        if row["challenger"] in pending:
            registry = apply_decision(registry, row)
            pending.discard(row["challenger"])
            replayed += 1
    return registry, replayed


def apply_decision(registry: pd.DataFrame, decision: dict[str, Any]) -> pd.DataFrame:
    """The registry with a recorded decision (a row of decisions.parquet) applied again."""
    metric = decision.get("metric") if isinstance(decision.get("metric"), str) else "RMSE"  # older rows lack it
    scores = decision["challenger_rmse"], decision["champion_rmse"]
    registry, _ = decide(registry, decision["challenger"], *scores, metric)
    return registry


def load_registry(store: Store, locked: bool = False) -> pd.DataFrame | None:
    """The store's registry. When the file is missing, does not read back or is not a registry but models
    were registered, it is rebuilt from their registrations and the decisions, and written again under the
    registry lock (`locked`: the caller holds it). On a store that cannot be written, the registry rebuilt
    in memory is returned (logged)."""
    if locked:
        registry, changed = current_registry(store, repair=True)
        if changed:
            store.write_registry(registry)
        return registry
    registry, changed = current_registry(store, repair=False)
    if not changed:
        return registry
    try:
        with store.registry_lock():
            return load_registry(store, locked=True)
    except (OSError, StoreNotWritableError) as error:
        log.warning("registry: not written back (%s); using the registry rebuilt in memory", error)
        return registry


def record_model(store: Store, entry: dict[str, Any]) -> str:
    """Add a model to the store's registry (atomic, locked); returns its status."""
    return record_models(store, [entry])[entry["key"]]


def record_models(store: Store, entries: list[dict[str, Any]]) -> dict[str, str]:
    """Add models to the store's registry in one locked write (none when nothing changed: a cached run
    writes nothing); returns each one's status."""
    if not entries:
        return {}
    with store.registry_lock():
        before = load_registry(store, locked=True)
        registry = before
        for entry in entries:
            registry = register(registry, entry)
            save_registration(store, entry)
        if before is None or not registry.equals(with_series_ids(before)):
            store.write_registry(registry)
    return {entry["key"]: str(registry.loc[registry["key"] == entry["key"], "status"].iloc[0]) for entry in entries}


def save_registration(store: Store, entry: dict[str, Any]) -> None:
    """Keep a model's entry beside the registry (first registration time, current metrics): written only
    when it is new or its metrics changed, so a cached run writes nothing."""
    stored = store.read_registration(entry["key"])
    if stored is not None:
        entry = entry | {"created": stored.get("created", entry["created"])}
        if json.dumps(stored, sort_keys=True, default=str) == json.dumps(entry, sort_keys=True, default=str):
            return
    store.write_registration(entry)


@task(name="register", result_serializer="json")
def register_models(config: ForecastConfig, evaluations: Mapping[str, list[str]]) -> dict[str, str]:
    """List models in the registry (or refresh their metrics): model key -> the evaluate keys of its
    series. Returns each model's status. Run by the flows that mean it (a run, a retraining), never by
    tuning trials or backtest folds."""
    store = Store(config.artifacts_dir)
    created = utc_now()
    entries = [
        model_entry(store, model, store.read_tables("evaluate", keys, where={"split": "test", "step": 0}), created)
        for model, keys in evaluations.items()
    ]
    statuses = record_models(store, entries)
    logger = get_run_logger()
    for model, status in statuses.items():
        logger.info("registry: model %s is %s", model, status)
    return statuses


def record_decision(store: Store, decision: dict[str, Any], challenger_rmse: float, champion_rmse: float) -> str:
    """Apply and log a champion/challenger decision (atomic, locked); returns the outcome. The decision is
    written first, then the registry: after a crash between the two, reading the registry replays it
    (`replay_pending`). A challenger decided before is not decided again: its recorded outcome is returned."""
    with store.registry_lock():
        registry = load_registry(store, locked=True)  # replays a decision a crash left unapplied
        decisions = read_decisions(store)
        if decisions is not None and (earlier := decisions["challenger"] == decision["challenger"]).any():
            outcome = str(decisions.loc[earlier, "outcome"].iloc[-1])
            log.warning("challenger %s was decided before (%s); not decided again", decision["challenger"], outcome)
            return outcome
        registry, outcome = decide(
            registry,
            decision["challenger"],
            challenger_rmse,
            champion_rmse,
            decision.get("metric", "RMSE"),
        )
        row = pd.DataFrame(
            [{**decision, "challenger_rmse": challenger_rmse, "champion_rmse": champion_rmse, "outcome": outcome}]
        )
        store.write_decisions(row if decisions is None else pd.concat([decisions, row], ignore_index=True))
        store.write_registry(registry)
    return outcome
