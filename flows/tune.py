"""Hyperparameter search: Optuna's TPE proposes configs; each trial is a cached pipeline run."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from lstm_forecast.flows.cluster import cluster_slots, on_same_cluster, runs_on_cluster
from lstm_forecast.flows.forecast import DEFAULT_CONFIG, run_pipeline, sized_series_config
from lstm_forecast.flows.many import forecast_many, shared_config
from lstm_forecast.tasks.core.config import NOT_PUBLISHED, ForecastConfig, Trials, with_fields
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.store import Store, fingerprint
from lstm_forecast.tasks.operations.report import table_records
from lstm_forecast.tasks.operations.tuning import (
    TUNED_FIELDS,
    check_tunable,
    config_file_text,
    mean_validation_mase,
    suggest_config,
    validation_score,
)
from lstm_forecast.tasks.stages.generate import long_format_ids


async def global_trial(config: ForecastConfig, ids: list[str]) -> tuple[list[dict[str, Any]], str]:
    """One tuning trial on many series: one global model across them, up to `evaluate`, not registered.
    Returns the completed series' stages and a note on any that failed."""
    many = on_same_cluster(forecast_many)
    result = await many(config=config, last_stage="evaluate", to_registry=False)
    completed = [d["stages"] for d in result["series"].values() if d["status"] == "completed"]
    if not completed:
        raise InputError("no series completed with this trial's settings", "see each series' error in the log")
    failed = len(ids) - len(completed)
    return completed, f"{failed} of {len(ids)} series failed" if failed else ""


@flow(name="lstm-tune")
async def tune(config: ForecastConfig = DEFAULT_CONFIG, trials: Trials = 20) -> dict[str, Any]:
    """Search look_back, units, layers, learning rate and batch size by validation RMSE.

    On a Dask task runner as many trials run at once as the cluster has worker threads; otherwise
    one at a time. Writes the trials table and the best config (YAML for `lstm-forecast run
    --config`) to the store.
    """
    import optuna

    check_tunable(config)
    # Many series: each trial is one global model across them, scored by the mean of the series'
    # validation MASE (RMSE would weigh series by their scale). The space is around the shared settings.
    ids = long_format_ids(config)
    config = await shared_config(config, ids) if ids else await sized_series_config(config)
    score_column = "validation_mase" if ids else "validation_rmse"
    score_name = score_column.replace("_", " ").replace("rmse", "RMSE").replace("mase", "MASE")
    logger = get_run_logger()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # constant_liar: trials asked while others still run are steered away from those.
    sampler = optuna.samplers.TPESampler(
        seed=config.seed, n_startup_trials=min(10, max(2, trials // 3)), constant_liar=True
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    parallel = runs_on_cluster()
    batch = 1 if ids else cluster_slots()  # a global trial spreads its own series over the cluster
    rows: list[dict[str, Any]] = []
    store = Store(config.artifacts_dir)

    async def score(trial: Any) -> None:
        trial_config = with_fields(suggest_config(trial, config), forecast_model=NOT_PUBLISHED)
        row = {"trial": trial.number, **{name: getattr(trial_config, name) for name in TUNED_FIELDS}}
        try:
            if ids:
                stages, note = await global_trial(trial_config, ids)
                value = mean_validation_mase([store.read_table("evaluate", s["evaluate"]["key"]) for s in stages])
                stages = stages[0]
            else:
                stages, note = await run_pipeline(trial_config, on_cluster=parallel, last_stage="evaluate"), ""
                value = validation_score(store.read_table("evaluate", stages["evaluate"]["key"]))
        except Exception as error:  # a config the series cannot hold: the trial fails, the search goes on
            reason = error.problem if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
            logger.warning("trial %d failed: %s", trial.number, reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rows.append({**row, score_column: None, "train": "failed", "model": "", "note": reason})
            return
        study.tell(trial, value)
        logger.info("trial %d: %s %.5f  %s", trial.number, score_name, value, row)
        rows.append(
            {
                **row,
                score_column: value,
                "train": stages["train"]["status"],
                "model": stages["train"]["key"],
                "note": note,
            }
        )

    while len(rows) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(rows)))]
        await asyncio.gather(*(score(trial) for trial in asked))

    table = pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)
    completed = table.dropna(subset=[score_column])
    if completed.empty:
        raise InputError("every trial failed (see the log for why)", "check that the series fits the search space")
    best_row = completed.loc[completed[score_column].idxmin()]
    best = with_fields(config, **{name: best_row[name].item() for name in TUNED_FIELDS})  # numpy → Python
    key = fingerprint("tune", config.model_dump(mode="json"), trials, table.to_dict("records"))
    comment = (
        f"best of {trials} trials by {score_name} {best_row[score_column]:.5f} "
        f"(lstm-forecast tune, flow run {flow_run.id})"
    )
    table_path, config_path = store.write_tuning(key, table, config_file_text(best, comment))
    await acreate_table_artifact(
        key="lstm-tune-trials",
        table=table_records(table),
        description=f"{trials} trials by {score_name}; best: trial {int(best_row['trial'])}, config `{config_path}`.",
    )
    logger.info("best trial %d: %s %.5f; config %s", best_row["trial"], score_name, best_row[score_column], config_path)
    return {
        "flow_run_id": str(flow_run.id),
        "best": {name: getattr(best, name) for name in TUNED_FIELDS},
        f"best_{score_column}": float(best_row[score_column]),
        "score": score_column,
        "best_trial": int(best_row["trial"]),
        "config": str(config_path),
        "trials": str(table_path),
    }
