"""The `lstm-forecast` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from tasks.config import PRESETS, ForecastConfig, build_config
from tasks.errors import InputError
from tasks.store import STAGES

# flag -> config field, for flags that override one field each
_FIELD_FLAGS: dict[str, tuple[str, type]] = {
    "--input": ("input", str),
    "--time-column": ("time_column", str),
    "--value-column": ("value_column", str),
    "--nan-policy": ("nan_policy", str),
    "--duplicate-policy": ("duplicate_policy", str),
    "--look-back": ("look_back", int),
    "--units": ("units", int),
    "--epochs": ("epochs", int),
    "--batch-size": ("batch_size", int),
    "--learning-rate": ("learning_rate", float),
    "--train-fraction": ("train_fraction", float),
    "--seed": ("seed", int),
    "--artifacts-dir": ("artifacts_dir", str),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-forecast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the forecasting pipeline once")
    run.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    run.add_argument("--config", help="YAML or JSON file of config fields (flags override it)")
    for flag, (field, kind) in _FIELD_FLAGS.items():
        description = ForecastConfig.model_fields[field].description
        run.add_argument(flag, dest=field, type=kind, default=None, help=description)
    run.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")
    return parser


def config_from_args(args: argparse.Namespace) -> ForecastConfig:
    overrides = {field: getattr(args, field) for field, _ in _FIELD_FLAGS.values() if getattr(args, field) is not None}
    return build_config(args.preset, args.config, overrides)


def check_prefect_server() -> None:
    """If `PREFECT_API_URL` names a server, it must answer; otherwise a temporary one is started."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise InputError(
            f"cannot reach the Prefect server at {url} ({type(problem).__name__})",
            "start it with `prefect server start`, or unset PREFECT_API_URL to use a temporary local server",
        )


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Add the metrics (nested split -> model -> metric) to the flow's result."""
    import pandas as pd

    metrics = pd.read_parquet(result["artifacts"]["metrics"])
    nested: dict[str, dict[str, dict[str, float]]] = {}
    for row in metrics.itertuples(index=False):
        nested.setdefault(row.split, {}).setdefault(row.model, {})[row.metric] = float(row.value)
    return {
        "flow_run_id": result["flow_run_id"],
        "metrics": nested,
        "stages": {stage: result["stages"][stage]["status"] for stage in STAGES},
        "keys": {stage: result["stages"][stage]["key"] for stage in STAGES},
        "artifacts": result["artifacts"],
    }


def print_summary(summary: dict[str, Any], seconds: float) -> None:
    print()
    print("Metrics (same targets for every model):")
    header = f"  {'split':<11}{'model':<8}{'rmse':>9}{'mae':>9}{'smape%':>9}{'mase':>8}"
    print(header)
    for split_name, models in summary["metrics"].items():
        for model, values in models.items():
            print(f"  {split_name:<11}{model:<8}{values['rmse']:>9.4f}{values['mae']:>9.4f}"
                  f"{values['smape']:>9.2f}{values['mase']:>8.3f}")
    test = summary["metrics"].get("test", {})
    if "lstm" in test and "naive" in test:
        verdict = "beats" if test["lstm"]["rmse"] < test["naive"]["rmse"] else "does NOT beat"
        print(f"  -> on the test split the LSTM {verdict} the naive baseline (RMSE).")
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
    check_prefect_server()
    _quiet_input_error_tracebacks()
    from flows.forecast import forecast

    started = time.perf_counter()
    result = forecast(config=config)
    summary = summarize(result)
    print_summary(summary, time.perf_counter() - started)
    if args.json:
        print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    try:
        return run_command(args)
    except InputError as error:
        print(f"error: {error.problem}\n  fix: {error.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept in the store; rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
