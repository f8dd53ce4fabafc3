"""The table across the series of a long-format input: each series' test metrics and winner.

`series_summary` is pure (metrics frames in, one row per series out); `publish_summary`
writes it to the store and shows it in the Prefect UI.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from lstm_forecast.tasks.core.store import Store, fingerprint
from lstm_forecast.tasks.operations.report import table_records
from lstm_forecast.tasks.stages.evaluate import BASELINES, MODELS, pooled_test_metrics

ID = "unique_id"
SHOWN_PLOTS = 4  # series whose plots a many-series run shows in the UI
TABLE_ROWS = 500  # rows of the summary shown as a UI table (the file holds every series)
FORECAST_ONLY = "forecast_only"  # a summary status: too short to be scored, forecast by one network across the panel


@dataclass(frozen=True)
class SeriesOutcome:
    """What one series' pipeline gave: its evaluate metrics (long format; or only their key, when the caller
    passes the metrics of every series as one wide table: `wide_test_metrics`), or why it failed."""

    series_id: str
    metrics: pd.DataFrame | None = None
    metrics_key: str = ""
    error: str = ""
    plot_key: str = ""
    forecast_only: bool = False  # too short to be scored: forecast by a global model, its reason in `error`

    @property
    def scored(self) -> bool:
        """True when the series has evaluate metrics: held here, or named by their key."""
        return self.metrics is not None or bool(self.metrics_key)


def stacked_metrics(outcomes: list[SeriesOutcome]) -> pd.DataFrame:
    """The evaluate tables of the outcomes that have one, stacked, column `unique_id` naming each one's."""
    scored = [outcome for outcome in outcomes if outcome.metrics is not None]
    if not scored:
        return pd.DataFrame(columns=[ID, "split", "model", "step", "metric", "value"])
    stacked = pd.concat([o.metrics for o in scored], keys=[o.series_id for o in scored], names=[ID, None])
    return stacked.reset_index(level=0)


def wide_test_metrics(outcomes: list[SeriesOutcome]) -> pd.DataFrame:
    """The pooled test metrics of the outcomes that have metrics, one row per series (`pooled_test_metrics`)."""
    return pooled_test_metrics(stacked_metrics(outcomes), ID)


def series_summary(outcomes: list[SeriesOutcome], wide: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per series: status, test RMSE and MAE of each model (all steps pooled), the winner; `wide`:
    the outcomes' `wide_test_metrics` when they were computed already.

    Returns:
        columns `unique_id, status, winner, <model>_rmse…, <model>_mae…, baselines, error`; `winner` is
        the model with the lowest test RMSE; `baselines` names the baselines scored on the series (a
        large panel scores the statistical ones on a sample); failed series have NaN metrics and their
        error, series forecast only (too short to be scored) NaN metrics and the reason.
    """
    wide = wide_test_metrics(outcomes) if wide is None else wide
    rmse = wide[[f"{model}_rmse" for model in MODELS if f"{model}_rmse" in wide]]
    winners = rmse.idxmin(axis=1, skipna=True).str.removesuffix("_rmse") if len(rmse.columns) else None
    columns = [ID, "status", "winner", *(f"{m}_{k}" for k in ("rmse", "mae") for m in MODELS), "error"]
    summary = pd.DataFrame(
        {
            ID: [outcome.series_id for outcome in outcomes],
            "status": [outcome_status(outcome) for outcome in outcomes],
            "error": [outcome.error for outcome in outcomes],
        }
    )
    found = wide.reindex(summary[ID])
    for column in columns[3:-1]:
        summary[column] = found[column].to_numpy() if column in found else None
    summary["winner"] = winners.reindex(summary[ID]).fillna("").to_numpy() if winners is not None else ""
    scored = pd.DataFrame({m: summary[f"{m}_rmse"].notna() for m in BASELINES})
    summary["baselines"] = [",".join(scored.columns[row]) for row in scored.to_numpy()]
    return summary.reindex(columns=[*columns[:-1], "baselines", "error"])


def outcome_status(outcome: SeriesOutcome) -> str:
    """`completed`, `failed`, or `forecast_only` (too short to be scored, forecast by a global model)."""
    return FORECAST_ONLY if outcome.forecast_only else "failed" if outcome.error else "completed"


def summary_key(outcomes: list[SeriesOutcome]) -> str:
    """Content key of a summary: its series and each one's metrics key or error (and status)."""
    return fingerprint("summary", [(o.series_id, o.metrics_key, o.error, outcome_status(o)) for o in outcomes])


def series_to_show(
    outcomes: list[SeriesOutcome],
    count: int = SHOWN_PLOTS,
    plotted_only: bool = True,
    wide: pd.DataFrame | None = None,
) -> list[tuple[SeriesOutcome, str]]:
    """A handful of completed (and, with `plotted_only`, plotted) series to show in the UI, each with a
    label: the LSTM's best and worst by test MASE (half each), or every one when there are no more than
    `count`. `wide`: `wide_test_metrics` of the outcomes (or more) when they were computed already."""
    candidates = {o.series_id: o for o in outcomes if o.scored and (o.plot_key or not plotted_only)}
    wide = wide_test_metrics(list(candidates.values())) if wide is None else wide
    mase = wide["lstm_mase"] if "lstm_mase" in wide else pd.Series(float("nan"), index=wide.index)
    scores = [(series_id, float(mase.get(series_id, float("nan")))) for series_id in candidates]
    return [(candidates[series_id], label) for series_id, label in shown_by_mase(scores, count)]


def shown_by_mase(scores: list[tuple[Any, float]], count: int = SHOWN_PLOTS) -> list[tuple[Any, str]]:
    """`series_to_show` of series given as (id, LSTM test MASE) in order (NaN: not shown): each shown id with
    its label, the best first."""
    scored = sorted(((mase, i) for i, mase in scores if math.isfinite(mase)), key=lambda pair: pair[0])
    if len(scored) <= count:
        return [(series_id, f"LSTM test MASE {mase:.3f}") for mase, series_id in scored]
    best, worst = scored[: count // 2], scored[len(scored) - (count - count // 2) :]
    return [(i, f"among the best: LSTM test MASE {m:.3f}") for m, i in best] + [
        (i, f"among the worst: LSTM test MASE {m:.3f}") for m, i in worst
    ]


def plots_markdown(store: Store, outcomes: list[SeriesOutcome], wide: pd.DataFrame | None = None) -> str:
    """Markdown of the chosen series' plots (thumbnails inline) and where every series' plot is; `wide`: the
    outcomes' `wide_test_metrics` when they were computed already."""
    shown = series_to_show(outcomes, wide=wide)
    parts = []
    for outcome, label in shown:
        thumbnail = base64.b64encode(store.thumbnail_path(outcome.plot_key).read_bytes()).decode()
        parts.append(f"### {outcome.series_id}: {label}\n\n![{outcome.series_id}](data:image/png;base64,{thumbnail})")
    plotted = sum(1 for outcome in outcomes if outcome.plot_key)
    parts.append(
        f"{len(shown)} of {plotted} plotted series shown. Every series' plot is under "
        f"`{store.plots_dir}` (its path is in the run's JSON: `series.<id>.artifacts.plot`)."
    )
    return "\n\n".join(parts)


async def publish_summary(
    store: Store, outcomes: list[SeriesOutcome], wide: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, str]:
    """Write the summary table to the store and as a Prefect table artifact; returns it and its path. `wide`:
    the outcomes' `wide_test_metrics` when they were computed already."""
    if wide is None:  # once for the table and the plots shown (100,000 series: seconds each)
        wide = wide_test_metrics(outcomes)
    summary = series_summary(outcomes, wide)
    path = store.write_summary(summary_key(outcomes), summary)
    failed = int((summary["status"] == "failed").sum())
    unscored = int((summary["status"] == FORECAST_ONLY).sum())
    shown = summary if len(summary) <= TABLE_ROWS else summary.head(TABLE_ROWS)
    statistical = int(summary["baselines"].str.contains("auto_").sum())
    listed = "each" if shown is summary else f"the first {len(shown)}"
    await acreate_table_artifact(
        key="lstm-forecast-series",
        table=table_records(shown.round(5)),
        description=f"Test metrics and winning model of {listed} of {len(summary)} series ({failed} failed, "
        f"{unscored} too short to be scored and forecast only; "
        f"statistical baselines scored on {statistical} of them, a fixed sample when there are many: "
        f"--baseline-sample); every series: `{path}`.",
    )
    if any(outcome.plot_key for outcome in outcomes):
        await acreate_markdown_artifact(
            key="lstm-forecast-series-plots",
            markdown=plots_markdown(store, outcomes, wide),
            description="Plots of a handful of series (the LSTM's best and worst by test MASE); where the rest are.",
        )
    return summary, str(path)
