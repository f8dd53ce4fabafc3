"""The `lstm-forecast` command line."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tasks.config import PRESETS, ForecastConfig, build_config, with_fields
from tasks.errors import InputError
from tasks.store import STAGES

# flag -> config field, for flags that override one field each
_FIELD_FLAGS: dict[str, tuple[str, type | str]] = {
    "--input": ("input", str),
    "--time-column": ("time_column", str),
    "--value-column": ("value_column", str),
    "--id-column": ("id_column", str),
    "--series-id": ("series_id", str),
    "--scope": ("scope", str),
    "--nan-policy": ("nan_policy", str),
    "--duplicate-policy": ("duplicate_policy", str),
    "--look-back": ("look_back", int),
    "--units": ("units", int),
    "--epochs": ("epochs", int),
    "--batch-size": ("batch_size", int),
    "--learning-rate": ("learning_rate", float),
    "--train-fraction": ("train_fraction", float),
    "--horizon": ("horizon", int),
    "--transform": ("transform", str),
    "--cell": ("cell", str),
    "--layers": ("layers", int),
    "--dropout": ("dropout", float),
    "--patch": ("patch", int),
    "--season-length": ("season_length", int),
    "--baselines": ("baselines", str),
    "--ensemble": ("ensemble", int),
    "--seasons": ("seasons", "seasons"),
    "--freq": ("freq", str),
    "--log": ("log", str),
    "--seed": ("seed", int),
    "--artifacts-dir": ("artifacts_dir", str),
}


def parse_seasons(text: str) -> tuple[int, ...]:
    """`--seasons 24,168` -> (24, 168); `--seasons none` -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of season lengths, e.g. 24,168 or none"
        ) from error


def _add_config_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    command.add_argument("--config", help="YAML or JSON file of config fields (flags override it)")
    for flag, (field, kind) in _FIELD_FLAGS.items():
        description = ForecastConfig.model_fields[field].description
        command.add_argument(
            flag, dest=field, type=parse_seasons if kind == "seasons" else kind, default=None, help=description
        )


def _add_cluster_options(command: argparse.ArgumentParser) -> None:
    where = command.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="run the tasks on a local Dask cluster of N worker processes")
    where.add_argument("--dask-address", help="run the tasks on an existing Dask cluster (tcp://HOST:PORT)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-forecast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the forecasting pipeline once")
    _add_config_options(run)
    run.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")
    _add_cluster_options(run)

    retrain = commands.add_parser("retrain", help="run the pipeline, then champion against challenger")
    _add_config_options(retrain)
    retrain.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")
    _add_cluster_options(retrain)

    backtest = commands.add_parser("backtest", help="rolling-origin evaluation over K folds")
    _add_config_options(backtest)
    backtest.add_argument("--folds", type=int, default=3, help="folds (default 3)")
    backtest.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")

    tune = commands.add_parser("tune", help="search hyperparameters (Optuna TPE) by validation RMSE")
    _add_config_options(tune)
    tune.add_argument("--trials", type=int, default=20, help="pipeline runs to try (default 20)")
    tune.add_argument("--output", help="also copy the best config to this YAML file")
    tune.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")
    _add_cluster_options(tune)

    serve = commands.add_parser("serve", help="serve the ad hoc and the scheduled retraining deployments")
    _add_config_options(serve)
    when = serve.add_mutually_exclusive_group()
    when.add_argument("--cron", help="retraining schedule, cron syntax (default: '0 2 * * *', nightly)")
    when.add_argument("--interval", type=float, help="retraining schedule: every SECONDS")

    models = commands.add_parser("models", help="list the model registry")
    models.add_argument("--artifacts-dir", default="artifacts", help="root folder of the artifact store")
    models.add_argument("--json", action="store_true", help="print the registry as JSON records")

    predict = commands.add_parser("predict", help="forecast past the end of the data with a registered model")
    predict.add_argument("--model", default="champion", help="`champion` or a model key (default: champion)")
    predict.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    predict.add_argument(
        "--series-id",
        default="",
        help="the series of a long-format input to forecast: with "
        "`champion`, its own champion, else the global model's; needed for a global model",
    )
    predict.add_argument("--input", help="CSV/Parquet series to continue (default: the model's training data)")
    predict.add_argument("--time-column", help="time column of --input (default: the model's)")
    predict.add_argument("--value-column", help="value column of --input (default: the model's)")
    predict.add_argument("--artifacts-dir", default="artifacts", help="root folder of the artifact store")
    predict.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")
    return parser


def config_from_args(args: argparse.Namespace) -> ForecastConfig:
    overrides = {field: getattr(args, field) for field, _ in _FIELD_FLAGS.values() if getattr(args, field) is not None}
    return build_config(args.preset, args.config, overrides)


def _import_tensorflow() -> None:
    import keras  # noqa: F401 - imports TensorFlow, the backend


def prefetch_tensorflow_while_prefect_starts() -> None:
    """Without a server, Prefect starts a temporary one (seconds of waiting): import TensorFlow
    meanwhile on the other core, so training does not pay for it afterwards. With a running server
    nothing is prefetched, and a fully cached run never imports TensorFlow."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        threading.Thread(target=_import_tensorflow, name="prefetch-tensorflow", daemon=True).start()


def check_prefect_server(
    required: bool = False,
    why: str = "serving needs a running Prefect server: the temporary one never fires schedules",
) -> None:
    """If `PREFECT_API_URL` names a server, it must answer; otherwise a temporary one is started,
    unless `required` (then `why` says why it will not do)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        if required:
            raise InputError(
                why,
                "start one with `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`",
            )
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise InputError(
            f"cannot reach the Prefect server at {url} ({type(problem).__name__})",
            "start it with `prefect server start`, or unset PREFECT_API_URL to use a temporary local server",
        )


def read_metrics(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evaluate output as `[split][model][metric]` (all steps pooled) and, per step, lists."""
    import pandas as pd

    metrics = pd.read_parquet(path).dropna(subset=["value"])
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


def share_temporary_server_with_workers() -> None:
    """Without a running server, start the temporary one now and name it in the environment that
    Dask worker processes inherit; each would otherwise start a temporary server of its own."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's own client would start
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url


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


def verdict(test: dict[str, dict[str, float]]) -> str:
    """One plain sentence: does the LSTM beat every baseline on the test split (RMSE)?"""
    baselines = {name: values["rmse"] for name, values in test.items() if name != "lstm"}
    best = min(baselines, key=baselines.__getitem__)
    lstm = test["lstm"]["rmse"]
    if lstm < baselines[best]:
        return f"The LSTM wins on the test split: RMSE {lstm:.4f}, best baseline {best} {baselines[best]:.4f}."
    return (
        f"A baseline beats the LSTM on the test split: {best} RMSE {baselines[best]:.4f} against the "
        f"LSTM's {lstm:.4f}. Prefer {best} for this series, or tune the LSTM (--look-back, --epochs)."
    )


def print_summary(summary: dict[str, Any], seconds: float) -> None:
    print()
    print("Metrics (every model forecasts the same targets; all steps ahead pooled):")
    print(f"  {'split':<11}{'model':<16}{'rmse':>9}{'mae':>9}{'smape%':>9}{'mase':>8}{'coverage':>10}")
    for split_name, models in summary["metrics"].items():
        for model, values in models.items():
            coverage = f"{values['coverage']:>10.3f}" if "coverage" in values else ""
            print(
                f"  {split_name:<11}{model:<16}{values['rmse']:>9.4f}{values['mae']:>9.4f}"
                f"{values['smape']:>9.2f}{values['mase']:>8.3f}{coverage}"
            )
    if "lstm" in summary["metrics"].get("test", {}):
        print("  " + verdict(summary["metrics"]["test"]))
    steps = summary["metrics_by_step"].get("test", {}).get("lstm", {}).get("rmse", [])
    if len(steps) > 1:
        print("  LSTM test RMSE per step ahead: " + " ".join(f"{value:.4f}" for value in steps))
    print("Stages: " + ", ".join(f"{stage} {status}" for stage, status in summary["stages"].items()))
    for name in ("plot", "model", "predictions"):
        print(f"{name.capitalize():<12} {summary['artifacts'][name]}")
    print(f"Finished in {seconds:.1f} s")


class _HideInputErrorTraceback(logging.Filter):
    """A bad-input failure is logged as one line: its traceback says nothing the message does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InputError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_input_error_tracebacks() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideInputErrorTraceback) for f in logger.filters):
            logger.addFilter(_HideInputErrorTraceback())


def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.input and config.series_id is None:
        from tasks.generate import read_series_ids

        if series_ids := read_series_ids(config):
            return run_many_command(args, config, series_ids)
    check_prefect_server()
    prefetch_tensorflow_while_prefect_starts()
    _quiet_input_error_tracebacks()
    if args.command == "retrain":
        from flows.retrain import retrain as flow_function
    else:
        from flows.forecast import forecast as flow_function

    started = time.perf_counter()
    result = asyncio.run(flow_function(config=config))
    summary = summarize(result)
    print_summary(summary, time.perf_counter() - started)
    summary["tensorflow_imported"] = "tensorflow" in sys.modules  # a fully cached run never needs it
    if "retrain" in result:
        summary["retrain"] = result["retrain"]
        print(f"Retraining: {describe_decision(result['retrain'])}")
    if args.json:
        print(json.dumps(summary))
    return 0


def describe_decision(decision: dict[str, Any]) -> str:
    """One line of a retraining decision: its outcome, why or the two scores, and the champion."""
    scores = (
        f" ({decision['reason']})"
        if "reason" in decision
        else f" (challenger {decision['challenger_rmse']:.4f} vs champion {decision['champion_rmse']:.4f} "
        f"{decision.get('metric', 'RMSE')})"
    )
    return f"{decision['outcome']}{scores}; champion {decision['champion']}"


def run_many_command(args: argparse.Namespace, config: ForecastConfig, series_ids: list[str]) -> int:
    """A long-format input: one pipeline per series, on Dask when asked; exit 1 if any series failed."""
    task_runner = prepare_task_runner(args)
    from flows.many import chosen_scope, forecast_many
    from flows.retrain import retrain

    flow_function = retrain if args.command == "retrain" else forecast_many
    if task_runner is not None:
        flow_function = flow_function.with_options(task_runner=task_runner)
    where = (
        "one after another in this process"
        if task_runner is None
        else f"on Dask ({args.dask_address or f'{args.workers} local workers'})"
    )
    shape = "one network across them" if chosen_scope(config, len(series_ids)) == "global" else "one network each"
    print(f"{len(series_ids)} series in {config.input}: {shape}, per-series stages {where}.", flush=True)
    started = time.perf_counter()
    result = asyncio.run(
        flow_function(config=config)
        if args.command == "retrain"
        else flow_function(config=config, series_ids=series_ids)
    )
    import pandas as pd

    summary = pd.read_parquet(result["summary"])
    print("\nTest metrics per series (all steps pooled):")
    shown = summary.drop(columns=["error"]).dropna(axis="columns", how="all")
    with pd.option_context("display.width", 200):
        print(shown.to_string(index=False, float_format="%.4f"))
    failed = summary.loc[summary["status"] == "failed"]
    for row in failed.itertuples(index=False):
        print(f"  series {row.unique_id!r} failed: {row.error}")
    print(f"Summary      {result['summary']}\nFinished in {time.perf_counter() - started:.1f} s")
    output: dict[str, Any] = {
        "flow_run_id": result["flow_run_id"],
        "summary": result["summary"],
        "failed": failed["unique_id"].tolist(),
        "metrics": {},
        "series": result["series"],
    }
    for series_id, detail in result["series"].items():
        if detail["status"] == "completed":
            output["metrics"][series_id] = read_metrics(detail["artifacts"]["metrics"])[0]
            detail["winner"] = str(summary.loc[summary["unique_id"] == series_id, "winner"].iloc[0])
            detail["stages"] = {stage: detail["stages"][stage]["status"] for stage in STAGES}
    output["tensorflow_imported"] = "tensorflow" in sys.modules
    output["scope"], output["model"] = result.get("scope"), result.get("model")
    if "retrain" in result:
        output["retrain"] = result["retrain"]
        decisions = result["retrain"] if result.get("scope") == "local" else {"all series": result["retrain"]}
        for series_id, decision in decisions.items():
            print(f"Retraining ({series_id}): {describe_decision(decision)}")
    if args.json:
        print(json.dumps(output))
    if len(failed):
        print(
            f"error: {len(failed)} of {len(summary)} series failed: {', '.join(failed['unique_id'])}\n"
            "  fix: see each one's message above; the other series' results are in the store",
            file=sys.stderr,
        )
        return 1
    return 0


def prepare_task_runner(args: argparse.Namespace) -> Any:
    """The Dask task runner `--workers`/`--dask-address` ask for (None: in process), with the Prefect
    server the tasks will report to checked or started."""
    from flows.cluster import dask_task_runner, is_loopback

    task_runner = dask_task_runner(args.dask_address, args.workers)
    check_prefect_server(
        required=args.dask_address is not None and not is_loopback(args.dask_address),
        why="Dask workers on other machines cannot reach this machine's temporary Prefect server",
    )
    if task_runner is None:
        prefetch_tensorflow_while_prefect_starts()
    else:
        share_temporary_server_with_workers()
    _quiet_input_error_tracebacks()
    return task_runner


def backtest_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_prefect_server()
    prefetch_tensorflow_while_prefect_starts()
    _quiet_input_error_tracebacks()
    from flows.backtest import backtest

    result = asyncio.run(backtest(config=config, folds=args.folds))
    import pandas as pd

    summary = pd.DataFrame(result["summary"])
    print(f"\nTest metrics over {args.folds} rolling-origin folds:")
    print(summary.to_string(index=False, float_format="%.4f"))
    if args.json:
        print(json.dumps({"summary": result["summary"]}))
    return 0


def tune_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.trials < 1:
        raise InputError(f"--trials {args.trials} is not a positive number", "pass --trials 1 or more")
    task_runner = prepare_task_runner(args)
    from flows.tune import tune

    flow_function = tune if task_runner is None else tune.with_options(task_runner=task_runner)
    result = asyncio.run(flow_function(config=config, trials=args.trials))
    import pandas as pd

    trials = pd.read_parquet(result["trials"])
    print(f"\n{args.trials} trials, scored by the LSTM's validation RMSE (the test split is not used):")
    with pd.option_context("display.width", 200):
        print(trials.drop(columns=["model"]).to_string(index=False, float_format="%.5g"))
    if args.output:
        Path(args.output).write_text(Path(result["config"]).read_text(encoding="utf-8"), encoding="utf-8")
        result["config_copy"] = str(Path(args.output).resolve())
    print(
        f"Best trial   {result['best_trial']}: {result['best']}\nConfig       {result['config']}"
        f"\nUse it with  lstm-forecast run --config {args.output or result['config']}"
    )
    if args.json:
        print(json.dumps(result))
    return 0


def serve_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    absolute = {"artifacts_dir": str(Path(config.artifacts_dir).resolve())}  # runs start in other processes
    if config.input:
        absolute["input"] = str(Path(config.input).resolve())
    config = with_fields(config, **absolute)
    check_prefect_server(required=True)
    from flows.serve import serve

    schedule = f"every {args.interval:g} s" if args.interval else f"cron '{args.cron or '0 2 * * *'}'"
    print(f"Serving 'lstm-forecast/ad-hoc' and 'lstm-retrain/retrain' ({schedule}); Ctrl-C stops.", flush=True)
    serve(config, cron=args.cron, interval=args.interval)
    return 0


def models_command(args: argparse.Namespace) -> int:
    from tasks.store import Store

    registry = Store(args.artifacts_dir).read_registry()
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
    shown = registry.reindex(columns=columns)  # registries written before a column existed lack it
    with pd.option_context("display.width", 220, "display.max_colwidth", 70):
        print(shown.to_string(index=False, float_format="%.4f"))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from tasks.future import forecast_with_model
    from tasks.store import Store

    result = forecast_with_model(
        Store(args.artifacts_dir),
        args.model,
        args.horizon,
        args.input,
        args.time_column,
        args.value_column,
        args.series_id,
    )
    print(f"Model        {result['model']}\nForecast     {result['forecast']}\nPlot         {result['plot']}")
    if args.json:
        print(json.dumps(result))
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


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as error:
        print(f"error: {error.problem}\n  fix: {error.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept in the store; rerun to continue", file=sys.stderr)
        return 130
    except Exception as error:  # a failed stage: say what failed; Prefect's log holds the traceback
        print(
            f"error: the run failed: {type(error).__name__}: {error}\n"
            "  finished stages are kept in the store and reused when you rerun",
            file=sys.stderr,
        )
        return 1


def console_main() -> NoReturn:
    """The `lstm-forecast` command: `main`, its exit handlers, then the end of the process.

    Exit handlers (Prefect's log and event flushes, logging's) run as usual; the interpreter's
    teardown of every imported module's objects is skipped: after a cached run against a server
    it took about 0.5 s of a 2.8 s run, with everything already written and reported.
    """
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
