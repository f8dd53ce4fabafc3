"""The `lstm-forecast` command line: one handler per command, each running a flow through `run_flow`
and printing its result. Arguments are in `arguments.py`, the server, Dask and exit in `runtime.py`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lstm_forecast.flows.arguments import build_parser, check_command_options, config_from_args
from lstm_forecast.flows.runtime import (
    check_prefect_server,
    ctrl_c_stops_the_flow,
    exit_now,
    prefect_server_known,
    prepare_runtime,
    set_environment_defaults,
    was_interrupted,
)
from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.errors import InputError, shown
from lstm_forecast.tasks.core.graph import STAGES
from lstm_forecast.tasks.core.heap import collect_less_often, freeze_loaded_modules
from lstm_forecast.tasks.core.training_process import start_training_process, training_process_started


def tensorflow_imported() -> bool:
    """Whether this command imported TensorFlow: here, or in the training process it started."""
    return "tensorflow" in sys.modules or training_process_started()


def readable(value: float) -> str:
    """A metric or a forecast for people: four decimals at everyday magnitudes, a whole-number part and one
    decimal from 100,000 up, five significant digits below 0.01 (a series in 1e-9 units is not all zeros)."""
    size = abs(value)
    if 0.01 <= size < 1e5 or size == 0 or size != size or size == float("inf"):
        return f"{value:.4f}"
    return f"{value:.1f}" if size >= 1e5 else f"{value:.5g}"


def run_flow(args: argparse.Namespace, flow_function: Any, on_cluster: bool = True, **parameters: Any) -> Any:
    """Run a flow with what it needs (`prepare_runtime`): on the Dask cluster that --workers or
    --dask-address ask for when `on_cluster`; returns its result."""
    if on_cluster:
        task_runner = prepare_runtime(getattr(args, "workers", None), getattr(args, "dask_address", None))
    else:
        task_runner = prepare_runtime()
    if task_runner is not None:
        flow_function = flow_function.with_options(task_runner=task_runner)
    freeze_loaded_modules()  # Prefect and what the command imported live as long as the process
    collect_less_often()
    with ctrl_c_stops_the_flow():
        return asyncio.run(flow_function(**parameters))


def printable(frame: Any, limit: int = 70) -> Any:
    """A table to print: its text cells (ids, paths, reasons from the user's data or the store) through `shown`."""
    text = frame.select_dtypes(include=["object", "string"]).columns
    return frame.assign(
        **{column: frame[column].map(lambda v: shown(v, limit) if isinstance(v, str) else v) for column in text}
    )


def emit_json(args: argparse.Namespace, payload: Any) -> None:
    """With --json, end stdout with one JSON line."""
    if getattr(args, "json", False):
        print(json.dumps(payload))


def read_metrics(path_or_table: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evaluate output (its file, or the table) as `[split][model][metric]` (all steps pooled) and, per
    step, lists."""
    import pandas as pd

    metrics = path_or_table if isinstance(path_or_table, pd.DataFrame) else pd.read_parquet(path_or_table)
    metrics = metrics.dropna(subset=["value"])
    pooled: dict[str, dict[str, dict[str, float]]] = {}
    by_step: dict[str, dict[str, dict[str, list[float]]]] = {}
    for row in metrics.sort_values("step", kind="stable").itertuples(index=False):
        if row.step == 0:
            pooled.setdefault(row.split, {}).setdefault(row.model, {})[row.metric] = float(row.value)
        else:
            by_step.setdefault(row.split, {}).setdefault(row.model, {}).setdefault(row.metric, []).append(
                float(row.value)
            )
    return pooled, by_step


def pooled_metrics(stacked: Any) -> dict[str, dict[str, Any]]:
    """Evaluate tables stacked (`Store.read_tables`) as `[key][split][model][metric]`, all steps pooled."""
    from lstm_forecast.tasks.core.store import KEY_COLUMN

    if stacked.empty:
        return {}
    pooled = stacked[(stacked["step"] == 0) & stacked["value"].notna()]
    nested: dict[str, dict[str, Any]] = {}
    columns = (pooled[name].tolist() for name in (KEY_COLUMN, "split", "model", "metric", "value"))
    for key, split, model, metric, value in zip(*columns, strict=True):  # lists: a third of itertuples' time
        nested.setdefault(str(key), {}).setdefault(split, {}).setdefault(model, {})[metric] = float(value)
    return nested


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The flow's result with its metrics: `metrics[split][model][metric]` pools all steps ahead;
    `metrics_by_step[split][model][metric]` lists one value per step."""
    pooled, by_step = read_metrics(result["artifacts"]["metrics"])
    model_metadata = Path(result["artifacts"]["model"]) / "metadata.json"
    return {
        "flow_run_id": result["flow_run_id"],
        "trained_on": json.loads(model_metadata.read_text()).get("device", "unknown"),
        "metrics": pooled,
        "metrics_by_step": by_step,
        "stages": {stage: result["stages"][stage]["status"] for stage in STAGES},
        "keys": {stage: result["stages"][stage]["key"] for stage in STAGES},
        "artifacts": result["artifacts"],
    }


def verdict(test: dict[str, dict[str, float]], published: str = "lstm") -> str:
    """One plain sentence: does the LSTM beat every baseline on the test split (RMSE)? And a second one that
    names the combination with the statistical baselines when the forecast table carries it (`published`), or
    when it beats the LSTM and every baseline."""
    from lstm_forecast.tasks.stages.evaluate import BASELINES, COMBINED

    baselines = {name: values["rmse"] for name, values in test.items() if name in BASELINES}
    best = min(baselines, key=baselines.__getitem__)
    lstm = test["lstm"]["rmse"]
    combined = test.get(COMBINED, {}).get("rmse", float("nan"))
    also = ""
    if published == COMBINED:
        also = (
            f" The forecast table carries half the LSTM and half AutoETS/AutoARIMA (test RMSE {readable(combined)});"
            " --forecast-model lstm publishes the LSTM alone."
        )
    elif combined < min(lstm, baselines[best]):
        also = (
            f" Half the LSTM and half AutoETS/AutoARIMA scores {readable(combined)}:"
            " --forecast-model combined publishes it."
        )
    if lstm < baselines[best]:
        return (
            f"The LSTM wins on the test split: RMSE {readable(lstm)}, best baseline {best} {readable(baselines[best])}."
            + also
        )
    return (
        f"A baseline beats the LSTM on the test split: {best} RMSE {readable(baselines[best])} against the "
        f"LSTM's {readable(lstm)}. Prefer {best} for this series, or tune the LSTM (--look-back, --epochs)." + also
    )


def print_summary(summary: dict[str, Any], seconds: float) -> None:
    import pandas as pd

    print()
    print("Metrics (every model forecasts the same targets; all steps ahead pooled):")
    rows = [
        [split_name, model, readable(values["rmse"]), readable(values["mae"]), f"{values['smape']:.2f}"]
        + [f"{values['mase']:.3f}", f"{values['coverage']:.3f}" if "coverage" in values else ""]
        for split_name, models in summary["metrics"].items()
        for model, values in models.items()
    ]
    header = ["split", "model", "rmse", "mae", "smape%", "mase", "coverage"]
    widths = [max(len(row[column]) for row in [header, *rows]) + 1 for column in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        print(
            "  "
            + "".join(cells + [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]).rstrip()
        )
    if "lstm" in summary["metrics"].get("test", {}):
        published = pd.read_parquet(summary["artifacts"]["forecasts"], columns=["model"])["model"]
        print("  " + verdict(summary["metrics"]["test"], str(published.iloc[0]) if len(published) else "lstm"))
    steps = summary["metrics_by_step"].get("test", {}).get("lstm", {}).get("rmse", [])
    if len(steps) > 1:
        print("  LSTM test RMSE per step ahead: " + " ".join(readable(value) for value in steps))
    print("Stages: " + ", ".join(f"{stage} {status}" for stage, status in summary["stages"].items()))
    for name in ("plot", "model", "predictions", "forecasts"):
        print(f"{name.capitalize():<12} {summary['artifacts'][name]}")
    print(f"Finished in {seconds:.1f} s")


def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.input and config.series_id is None:
        from lstm_forecast.tasks.stages.generate import is_long_format, read_series_ids

        if args.workers and not args.dask_address and is_long_format(config) and prefect_server_known():
            from lstm_forecast.flows.cluster import start_local_cluster
            from lstm_forecast.tasks.core.store import Store

            start_local_cluster(args.workers)  # its workers start while this process reads the ids and plans
            if config.scope != "local" and not Store(config.artifacts_dir).holds_models():
                start_training_process()  # a first run into this store trains its network: import TensorFlow now
        if series_ids := read_series_ids(config):
            return run_many_command(args, config, series_ids)
    if args.command == "retrain":
        from lstm_forecast.flows.retrain import retrain as flow_function
    else:
        from lstm_forecast.flows.forecast import forecast as flow_function

    started = time.perf_counter()
    result = run_flow(args, flow_function, on_cluster=False, config=config)  # one series: its stages in process
    summary = summarize(result)
    print_summary(summary, time.perf_counter() - started)
    summary["tensorflow_imported"] = tensorflow_imported()  # a fully cached run never needs it
    if "retrain" in result:
        summary["retrain"], summary["latest"] = result["retrain"], result["latest"]
        print(f"Retraining: {describe_decision(result['retrain'])}")
        print(f"{'Published':<12} {result['latest']['latest']} (the champion's forecast of every series)")
    emit_json(args, summary)
    return 0


def describe_decision(decision: dict[str, Any]) -> str:
    """One line of a retraining decision: its outcome, why or the two scores, and the champion."""
    scores = (
        f" ({decision['reason']})"
        if "reason" in decision
        else f" (challenger {readable(decision['challenger_rmse'])} vs champion {readable(decision['champion_rmse'])} "
        f"{decision.get('metric', 'RMSE')})"
    )
    return f"{decision['outcome']}{scores}; champion {decision['champion']}"


PRINTED_SERIES = 20  # a many-series run prints this many rows of its summary (the file holds every one)
PRINTED_FAILURES = 5  # ... and names this many failed series


def run_many_command(args: argparse.Namespace, config: ForecastConfig, series_ids: list[str]) -> int:
    """A long-format input: one pipeline per series, on Dask when asked; exit 1 if any series failed."""
    from lstm_forecast.flows.many import chosen_scope, forecast_many

    where = (
        f"on Dask ({args.dask_address or f'{args.workers} local workers'})"
        if args.dask_address or args.workers
        else "one after another in this process"
    )
    shape = "one network across them" if chosen_scope(config, len(series_ids)) == "global" else "one network each"
    print(f"{len(series_ids)} series in {config.input}: {shape}, per-series stages {where}.", flush=True)
    started = time.perf_counter()
    if args.command == "retrain":
        from lstm_forecast.flows.retrain import retrain  # a flow made at import: its parameter schema costs 0.2 s

        result = run_flow(args, retrain, config=config)
    else:
        result = run_flow(args, forecast_many, config=config)
    import pandas as pd

    summary = pd.read_parquet(result["summary"])
    listed = summary if len(summary) <= PRINTED_SERIES else summary.head(PRINTED_SERIES)
    print(f"\nTest metrics per series (all steps pooled){'' if listed is summary else ', the first few'}:")
    table = printable(listed.drop(columns=["error"]).dropna(axis="columns", how="all"))
    with pd.option_context("display.width", 200):
        print(table.to_string(index=False, float_format=readable))
    if listed is not summary:
        print(f"  … {len(summary) - len(listed)} more series in the summary file")
    failed = summary.loc[summary["status"] == "failed"]
    for row in failed.head(PRINTED_FAILURES).itertuples(index=False):
        print(f"  series '{shown(row.unique_id)}' failed: {shown(row.error, 400)}")
    if len(failed) > PRINTED_FAILURES:
        print(f"  … {len(failed) - PRINTED_FAILURES} more failed series: each one and its error in the summary file")
    unscored = summary.loc[summary["status"] == "forecast_only", "unique_id"]
    if len(unscored):
        first = ", ".join(shown(i) for i in unscored.head(PRINTED_FAILURES))
        more = f" and {len(unscored) - PRINTED_FAILURES} more" if len(unscored) > PRINTED_FAILURES else ""
        print(
            f"  {len(unscored)} series too short for a test split of their own, or constant before it ({first}"
            f"{more}): forecast by the global model and not scored (status 'forecast_only' in the summary)"
        )
    print(f"Summary      {result['summary']}")
    if result.get("forecasts"):
        print(f"Forecasts    {result['forecasts']}")
    if result.get("latest"):
        print(f"Published    {result['latest']['latest']} (each series' champion's forecast)")
    print(f"Finished in {time.perf_counter() - started:.1f} s")
    output: dict[str, Any] = {
        "flow_run_id": result["flow_run_id"],
        "summary": result["summary"],
        "forecasts": result.get("forecasts"),
        "failed": failed["unique_id"].tolist(),
        "metrics": {},
        "series": dict(result["series"]),
    }
    from lstm_forecast.flows.plan import evaluate_rows
    from lstm_forecast.tasks.core.store import Store

    winners = dict(zip(summary["unique_id"], summary["winner"], strict=True))
    completed = {i: d["stages"]["evaluate"]["key"] for i, d in result["series"].items() if d["status"] == "completed"}
    pooled = pooled_metrics(evaluate_rows(Store(config.artifacts_dir), list(completed.values())))
    for series_id, detail in result["series"].items():
        if detail["status"] == "completed":
            output["metrics"][series_id] = pooled.get(completed[series_id], {})
            detail["winner"] = str(winners[series_id])
            detail["keys"] = {s: detail["stages"][s]["key"] for s in STAGES if s in detail["stages"]}
            detail["stages"] = {s: detail["stages"][s]["status"] for s in STAGES if s in detail["stages"]}
    output["tensorflow_imported"] = tensorflow_imported()
    output["scope"], output["model"] = result.get("scope"), result.get("model")
    if "retrain" in result:
        output["retrain"], output["latest"] = result["retrain"], result.get("latest")
        decisions = result["retrain"] if result.get("scope") == "local" else {"all series": result["retrain"]}
        for series_id, decision in decisions.items():
            print(f"Retraining ({shown(series_id)}): {describe_decision(decision)}")
    emit_json(args, output)
    if len(failed):
        first = ", ".join(shown(i) for i in failed["unique_id"].head(PRINTED_FAILURES))
        more = f" and {len(failed) - PRINTED_FAILURES} more" if len(failed) > PRINTED_FAILURES else ""
        print(
            f"error: {len(failed)} of {len(summary)} series failed: {first}{more}\n"
            f"  fix: see the messages above; every failed series and its error is in {result['summary']} "
            "(status 'failed'); the other series' results are in the store",
            file=sys.stderr,
        )
        return 1
    return 0


def backtest_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from lstm_forecast.flows.backtest import backtest

    result = run_flow(args, backtest, on_cluster=False, config=config, folds=args.folds)
    import pandas as pd

    summary = pd.DataFrame(result["summary"])
    print(f"\nTest metrics over {args.folds} rolling-origin folds:")
    print(summary.to_string(index=False, float_format=readable))
    emit_json(args, {"summary": result["summary"]})
    return 0


def tune_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from lstm_forecast.flows.tune import tune

    result = run_flow(args, tune, config=config, trials=args.trials)
    import pandas as pd

    trials = pd.read_parquet(result["trials"])
    score = "mean validation MASE over the series" if result["score"] == "validation_mase" else "validation RMSE"
    print(f"\n{args.trials} trials, scored by the LSTM's {score} (the test split is not used):")
    with pd.option_context("display.width", 200):
        print(trials.drop(columns=["model"]).to_string(index=False, float_format="%.5g"))
    if args.output:
        Path(args.output).write_text(Path(result["config"]).read_text(encoding="utf-8"), encoding="utf-8")
        result["config_copy"] = str(Path(args.output).resolve())
    print(
        f"Best trial   {result['best_trial']}: {result['best']}\nConfig       {result['config']}"
        f"\nUse it with  lstm-forecast run --config {args.output or result['config']}"
    )
    emit_json(args, result)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    absolute = {"artifacts_dir": str(Path(config.artifacts_dir).resolve())}  # runs start in other processes
    if config.input:
        absolute["input"] = str(Path(config.input).resolve())
    config = with_fields(config, **absolute)
    check_prefect_server(required=True)
    from lstm_forecast.flows.serve import checked_notify_url, serve

    notify = checked_notify_url(args.notify) if args.notify else None
    schedule = f"every {args.interval:g} s" if args.interval else f"cron '{args.cron or '0 2 * * *'}'"
    print(f"Serving 'lstm-forecast/ad-hoc' and 'lstm-retrain/retrain' ({schedule}); Ctrl-C stops.", flush=True)
    if notify:
        print("Failed or crashed runs are notified through Apprise.", flush=True)
    serve(config, cron=args.cron, interval=args.interval, notify=notify)
    return 0


def models_command(args: argparse.Namespace) -> int:
    from lstm_forecast.tasks.core.store import Store
    from lstm_forecast.tasks.operations.registry import load_registry

    registry = load_registry(Store(args.artifacts_dir))
    if registry is None or registry.empty:
        print(f"No models in {Store(args.artifacts_dir).root} yet: train one with `lstm-forecast run`.")
        return 0
    if args.json:
        print(registry.to_json(orient="records"))
        return 0
    import pandas as pd

    columns = [
        "key",
        "series_id",
        "status",
        "created",
        "test_rmse",
        "naive_test_rmse",
        "test_mase",
        "input",
        "decision",
    ]
    table = printable(registry.reindex(columns=columns))  # registries written before a column existed lack it
    with pd.option_context("display.width", 220, "display.max_colwidth", 70):
        print(table.to_string(index=False, float_format=readable))
    return 0


PRINTED_FORECAST_ROWS = 10  # `predict` prints this many rows of its table (the file holds every one)


def predict_command(args: argparse.Namespace) -> int:
    from lstm_forecast.tasks.core.store import Store, export_table
    from lstm_forecast.tasks.operations.ahead import predict_table

    series_ids = [part.strip() for part in args.series_id.split(",") if part.strip()]
    result = predict_table(
        Store(args.artifacts_dir),
        args.model,
        args.horizon,
        series_ids,
        args.input,
        args.time_column,
        args.value_column,
        args.future,
    )
    table = result.pop("table")
    if args.output:
        result["output"] = str(export_table(table, args.output))
    import pandas as pd

    with pd.option_context("display.width", 200):
        print(table.head(PRINTED_FORECAST_ROWS).to_string(index=False, float_format=readable))
    if len(table) > PRINTED_FORECAST_ROWS:
        print(f"  … {len(table) - PRINTED_FORECAST_ROWS} more rows in the table")
    models = result["model"] if isinstance(result["model"], str) else f"{len(result['model'])} models"
    print(f"{result['series']} series, {args.horizon} steps each, by {models}")
    print(f"Forecast     {result['forecast']}")
    for name in ("output", "plot"):
        if result.get(name):
            print(f"{name.capitalize():<12} {result[name]}")
    result["tensorflow_imported"] = tensorflow_imported()  # numpy applies a saved network's arrays
    emit_json(args, result)
    return 0


COMMANDS = {
    "run": run_command,
    "retrain": run_command,
    "backtest": backtest_command,
    "tune": tune_command,
    "serve": serve_command,
    "models": models_command,
    "predict": predict_command,
}


# An unexpected error, by command: what failed, and what it leaves in the store.
UNEXPECTED_FAILURE = {
    "run": ("the run", "finished stages are kept in the store and reused when you rerun"),
    "predict": ("predict", "nothing was written to the store"),
    "models": ("listing the models", "nothing was written to the store"),
    "serve": ("serving", "runs that finished are kept in the store"),
}


INTERRUPTED = "interrupted: finished stages are kept in the store; rerun to continue"

# What `lstm-forecast --help` says before the commands (the module's docstring is for its readers).
DESCRIPTION = (
    "Turn a time series, or a panel of many in long format, into a trained Keras LSTM forecaster with Prefect: "
    "generate, split, normalize, window, train, predict, evaluate and plot, each stage's output cached in the "
    "store by its content. `lstm-forecast COMMAND --help` lists a command's options."
)


def main(argv: Sequence[str] | None = None) -> int:
    set_environment_defaults()
    args = build_parser(DESCRIPTION).parse_args(argv)
    try:
        check_command_options(args)
        return COMMANDS[args.command](args)
    except InputError as error:
        print(f"error: {shown(error.problem, 2000)}\n  fix: {shown(error.fix, 2000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as error:  # a failed stage: say what failed; Prefect's log holds the traceback
        if was_interrupted():
            print(INTERRUPTED, file=sys.stderr)
            return 130
        what, kept = UNEXPECTED_FAILURE.get(args.command, UNEXPECTED_FAILURE["run"])
        print(f"error: {what} failed: {type(error).__name__}: {shown(error, 2000)}\n  {kept}", file=sys.stderr)
        return 1


def console_main() -> NoReturn:
    """The `lstm-forecast` command: `main`, then a fast end of the process (`exit_now`)."""
    exit_now(main())


if __name__ == "__main__":
    console_main()
