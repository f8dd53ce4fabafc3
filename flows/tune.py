"""Hyperparameter search: Optuna's TPE proposes configs; each trial is a cached pipeline run."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from flows.cluster import cluster_slots, runs_on_cluster
from flows.forecast import DEFAULT_CONFIG, run_pipeline, sized_config
from tasks.config import ForecastConfig, with_fields
from tasks.errors import InputError
from tasks.report import table_records
from tasks.store import Store, fingerprint
from tasks.tune import TUNED_FIELDS, check_tunable, config_file_text, suggest_config, validation_score


@flow(name="lstm-tune")
async def tune(config: ForecastConfig = DEFAULT_CONFIG, trials: int = 20) -> dict[str, Any]:
    """Search look_back, units, layers, learning rate and batch size by validation RMSE.

    On a Dask task runner as many trials run at once as the cluster has worker threads; otherwise
    one at a time. Writes the trials table and the best config (YAML for `lstm-forecast run
    --config`) to the store.
    """
    import optuna

    check_tunable(config)
    config = sized_config(config)  # the search space is around the data-sized settings
    logger = get_run_logger()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # constant_liar: trials asked while others still run are steered away from those.
    sampler = optuna.samplers.TPESampler(
        seed=config.seed, n_startup_trials=min(10, max(2, trials // 3)), constant_liar=True
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    parallel = runs_on_cluster()
    batch = cluster_slots()
    rows: list[dict[str, Any]] = []
    store = Store(config.artifacts_dir)

    async def score(trial: Any) -> None:
        trial_config = suggest_config(trial, config)
        row = {"trial": trial.number, **{name: getattr(trial_config, name) for name in TUNED_FIELDS}}
        try:
            stages = await run_pipeline(trial_config, on_cluster=parallel, last_stage="evaluate")
        except Exception as error:  # a config the series cannot hold: the trial fails, the search goes on
            reason = error.problem if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
            logger.warning("trial %d failed: %s", trial.number, reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rows.append({**row, "validation_rmse": None, "train": "failed", "model": "", "note": reason})
            return
        value = validation_score(store.read_table("evaluate", stages["evaluate"]["key"]))
        study.tell(trial, value)
        logger.info("trial %d: validation RMSE %.5f  %s", trial.number, value, row)
        rows.append(
            {
                **row,
                "validation_rmse": value,
                "train": stages["train"]["status"],
                "model": stages["train"]["key"],
                "note": "",
            }
        )

    while len(rows) < trials:
        asked = [study.ask() for _ in range(min(batch, trials - len(rows)))]
        await asyncio.gather(*(score(trial) for trial in asked))

    table = pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)
    completed = table.dropna(subset=["validation_rmse"])
    if completed.empty:
        raise InputError("every trial failed (see the log for why)", "check that the series fits the search space")
    best_row = completed.loc[completed["validation_rmse"].idxmin()]
    best = with_fields(config, **{name: best_row[name].item() for name in TUNED_FIELDS})  # numpy → Python
    key = fingerprint("tune", config.model_dump(mode="json"), trials, table.to_dict("records"))
    comment = (
        f"best of {trials} trials by validation RMSE {best_row['validation_rmse']:.5f} "
        f"(lstm-forecast tune, flow run {flow_run.id})"
    )
    table_path, config_path = store.write_tuning(key, table, config_file_text(best, comment))
    await acreate_table_artifact(
        key="lstm-tune-trials",
        table=table_records(table),
        description=f"{trials} trials by validation RMSE; best: trial {int(best_row['trial'])}, config "
        f"`{config_path}`.",
    )
    logger.info(
        "best trial %d: validation RMSE %.5f; config %s", best_row["trial"], best_row["validation_rmse"], config_path
    )
    return {
        "flow_run_id": str(flow_run.id),
        "best": {name: getattr(best, name) for name in TUNED_FIELDS},
        "best_validation_rmse": float(best_row["validation_rmse"]),
        "best_trial": int(best_row["trial"]),
        "config": str(config_path),
        "trials": str(table_path),
    }
