"""The table across the series of a long-format input: each series' test metrics and winner.

`series_summary` is pure (metrics frames in, one row per series out); `publish_summary`
writes it to the store and shows it in the Prefect UI.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from prefect.artifacts import acreate_table_artifact

from tasks.evaluate import MODELS
from tasks.report import table_records
from tasks.store import Store, fingerprint

ID = "unique_id"


@dataclass(frozen=True)
class SeriesOutcome:
    """What one series' pipeline gave: its evaluate metrics (long format), or why it failed."""

    series_id: str
    metrics: pd.DataFrame | None = None
    metrics_key: str = ""
    error: str = ""


def series_summary(outcomes: list[SeriesOutcome]) -> pd.DataFrame:
    """One row per series: status, test RMSE and MAE of each model (all steps pooled), the winner.

    Returns:
        columns `unique_id, status, winner, <model>_rmse…, <model>_mae…, error`; `winner` is the
        model with the lowest test RMSE; failed series have NaN metrics and their error.
    """
    rows = []
    for outcome in outcomes:
        row: dict[str, object] = {
            ID: outcome.series_id,
            "status": "failed" if outcome.error else "completed",
            "winner": "",
        }
        if outcome.metrics is not None:
            test = outcome.metrics[(outcome.metrics["split"] == "test") & (outcome.metrics["step"] == 0)]
            values = test.pivot_table(index="model", columns="metric", values="value")
            for model in MODELS:
                for metric in ("rmse", "mae"):
                    present = model in values.index and metric in values.columns
                    row[f"{model}_{metric}"] = float(values.loc[model, metric]) if present else None
            row["winner"] = str(values["rmse"].idxmin())
        row["error"] = outcome.error
        rows.append(row)
    columns = [ID, "status", "winner", *(f"{m}_{k}" for k in ("rmse", "mae") for m in MODELS), "error"]
    return pd.DataFrame(rows).reindex(columns=columns)


def summary_key(outcomes: list[SeriesOutcome]) -> str:
    """Content key of a summary: its series and each one's metrics key or error."""
    return fingerprint("summary", [(o.series_id, o.metrics_key, o.error) for o in outcomes])


async def publish_summary(store: Store, outcomes: list[SeriesOutcome]) -> tuple[pd.DataFrame, str]:
    """Write the summary table to the store and as a Prefect table artifact; returns it and its path."""
    summary = series_summary(outcomes)
    path = store.write_summary(summary_key(outcomes), summary)
    failed = int((summary["status"] == "failed").sum())
    await acreate_table_artifact(
        key="lstm-forecast-series",
        table=table_records(summary.round(5)),
        description=f"Test metrics and winning model of each of {len(summary)} series ({failed} failed).",
    )
    return summary, str(path)
