"""The model registry: every trained model, its metrics, and which one is the champion.

Pure functions over DataFrames; `Store` reads and writes them under its registry lock.
Statuses: `champion` (exactly one once any model exists), `challenger` (trained, not
promoted), `retired` (a former champion).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from tasks.store import Store

COLUMNS = ("key", "created", "status", "test_rmse", "test_mae", "naive_test_rmse", "data_fingerprint",
           "series", "input", "config", "decision")
DECISION_COLUMNS = ("decided", "challenger", "champion", "challenger_rmse", "champion_rmse", "holdout_rows",
                    "holdout_start", "outcome")


def utc_now() -> str:
    """Now, as an ISO 8601 UTC timestamp to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def pending_champion(registry: pd.DataFrame | None, model: str) -> tuple[str | None, str]:
    """The champion `model` must be compared with, or None and why there is nothing to decide."""
    current = champion(registry)
    if current is None or registry is None:
        return None, "no champion yet"
    if current == model:
        return None, f"model {model} is the champion already"
    row = registry.loc[registry["key"] == model]
    if len(row) and row["decision"].iloc[0]:
        return None, f"model {model} was decided before ({row['decision'].iloc[0]})"
    return current, f"challenger {model} against champion {current}"


def empty_registry() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="float64" if name.endswith("rmse") or name.endswith("mae")
                                         else "object") for name in COLUMNS})


def register(registry: pd.DataFrame | None, entry: dict[str, Any]) -> pd.DataFrame:
    """Add a model (or refresh its metrics if it is listed). The first model becomes the champion."""
    registry = empty_registry() if registry is None else registry
    if (registry["key"] == entry["key"]).any():
        index = registry.index[registry["key"] == entry["key"]][0]
        for name in ("test_rmse", "test_mae", "naive_test_rmse"):
            registry.loc[index, name] = entry[name]
        return registry
    status = "challenger" if (registry["status"] == "champion").any() else "champion"
    row = {name: entry.get(name) for name in COLUMNS} | {"status": status,
                                                         "decision": "" if status == "challenger" else "first model"}
    return pd.concat([registry, pd.DataFrame([row])], ignore_index=True)


def champion(registry: pd.DataFrame | None) -> str | None:
    """The champion's key, or None."""
    if registry is None:
        return None
    keys = registry.loc[registry["status"] == "champion", "key"]
    return str(keys.iloc[0]) if len(keys) else None


def decide(registry: pd.DataFrame, challenger: str, challenger_rmse: float, champion_rmse: float) -> tuple[
        pd.DataFrame, str]:
    """Promote the challenger if its holdout RMSE is lower than the champion's; returns (registry, outcome)."""
    registry = registry.copy()
    current = champion(registry)
    is_challenger = registry["key"] == challenger
    if challenger_rmse < champion_rmse:
        registry.loc[registry["key"] == current, "status"] = "retired"
        registry.loc[is_challenger, "status"] = "champion"
        outcome = "promoted"
    else:
        outcome = "kept out"
    registry.loc[is_challenger, "decision"] = (
        f"{outcome}: holdout RMSE {challenger_rmse:.4f} vs champion {current} {champion_rmse:.4f}"
    )
    return registry, outcome


def model_entry(store: Store, model_key: str, metrics: pd.DataFrame, created: str) -> dict[str, Any]:
    """The registry entry of a trained model, from its metadata and its evaluation."""
    metadata = store.read_model_metadata(model_key)

    def test(model: str, metric: str) -> float:
        rows = metrics[(metrics["split"] == "test") & (metrics["model"] == model) & (metrics["metric"] == metric)
                       & (metrics["step"] == 0)]
        return float(rows["value"].iloc[0])

    return {
        "key": model_key,
        "created": created,
        "test_rmse": test("lstm", "rmse"),
        "test_mae": test("lstm", "mae"),
        "naive_test_rmse": test("naive", "rmse"),
        "data_fingerprint": metadata["data_fingerprint"],
        "series": metadata["upstream"]["series"],
        "input": metadata["config"].get("input") or "",
        "config": json.dumps(metadata["config"], sort_keys=True),
    }


def record_model(store: Store, entry: dict[str, Any]) -> str:
    """Add a model to the store's registry (atomic, locked); returns its status."""
    with store.registry_lock():
        registry = register(store.read_registry(), entry)
        store.write_registry(registry)
    return str(registry.loc[registry["key"] == entry["key"], "status"].iloc[0])


def record_decision(store: Store, decision: dict[str, Any], challenger_rmse: float, champion_rmse: float) -> str:
    """Apply and log a champion/challenger decision (atomic, locked); returns the outcome."""
    with store.registry_lock():
        registry, outcome = decide(store.read_registry(), decision["challenger"], challenger_rmse, champion_rmse)
        decisions = store.read_decisions()
        row = pd.DataFrame([{**decision, "challenger_rmse": challenger_rmse, "champion_rmse": champion_rmse,
                             "outcome": outcome}])
        store.write_decisions(row if decisions is None else pd.concat([decisions, row], ignore_index=True))
        store.write_registry(registry)
    return outcome
