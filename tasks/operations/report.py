"""What a run shows in the Prefect UI: the metrics table, the plot and the model's registry entry.

Published by the flow after its stages, from the store, so a fully cached run shows
them too. Artifact keys are lowercase letters, digits and dashes.
"""

from __future__ import annotations

import base64

import pandas as pd
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from lstm_forecast.tasks.core.store import Store
from lstm_forecast.tasks.operations.registry import load_registry
from lstm_forecast.tasks.stages.evaluate import metrics_table


def table_records(frame: pd.DataFrame) -> list[dict]:
    """Rows of a table artifact: JSON has no NaN, so missing values become None (an empty cell)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def significant(frame: pd.DataFrame, digits: int = 5) -> pd.DataFrame:
    """`frame` with its floats rounded to `digits` decimals, or below 1 to `digits` significant digits (decimals
    alone would zero a series in 1e-9 units)."""

    def rounded(value: float) -> float:
        return round(value, digits) if abs(value) >= 1 else float(f"{value:.{digits}g}")

    return frame.assign(**{name: frame[name].map(rounded) for name in frame.select_dtypes("floating").columns})


def registry_markdown(registry: pd.DataFrame | None, model: str) -> str:
    """A markdown table of one model's registry entry."""
    if registry is None or not (registry["key"] == model).any():
        return f"Model `{model}` is not in the registry."
    row = registry.loc[registry["key"] == model].iloc[0]
    lines = ["| field | value |", "|---|---|"]
    for name in (
        "key",
        "status",
        "created",
        "test_rmse",
        "test_mae",
        "naive_test_rmse",
        "data_fingerprint",
        "input",
        "decision",
    ):
        value = row[name]
        lines.append(f"| {name} | {value:.5g} |" if isinstance(value, float) else f"| {name} | {value} |")
    return "\n".join(lines)


async def publish_run(store: Store, evaluate_key: str, plot_key: str, model_key: str) -> None:
    """Create the run's artifacts in the current flow run."""
    metrics = store.read_table("evaluate", evaluate_key)
    await acreate_table_artifact(
        key="lstm-forecast-metrics",
        table=significant(metrics_table(metrics)).to_dict("records"),
        description="Error metrics per split and model, on the same targets.",
    )
    thumbnail = base64.b64encode(store.thumbnail_path(plot_key).read_bytes()).decode()
    await acreate_markdown_artifact(
        key="lstm-forecast-plot",
        markdown=f"![forecast plot](data:image/png;base64,{thumbnail})\n\nFull size: `{store.path('plot', plot_key)}`",
        description="Series, aligned predictions, test zoom and loss curve.",
    )
    await acreate_markdown_artifact(
        key="lstm-forecast-model",
        markdown=registry_markdown(load_registry(store), model_key),
        description="The trained model's registry entry.",
    )


FORECAST_ARTIFACT_ROWS = 20  # the table artifact shows this many rows; the file holds every one


async def publish_forecast_table(path: str, description: str, key: str = "lstm-forecast-forecasts") -> None:
    """A table artifact of a forecast table's first rows; its description names the file, the models and
    how many series it holds."""
    table = pd.read_parquet(path)
    models = ", ".join(sorted(table["model_key"].unique()))
    await acreate_table_artifact(
        key=key,
        table=table_records(table.head(FORECAST_ARTIFACT_ROWS).astype({"ds": str})),
        description=f"{description} {table['unique_id'].nunique()} series by {models}; every row in `{path}`.",
    )
