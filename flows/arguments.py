"""The command line's arguments: shared parent parsers, one subcommand each, and the config they give."""

from __future__ import annotations

import argparse

from lstm_forecast.tasks.core.config import (
    PRESETS,
    Folds,
    ForecastConfig,
    IntervalSeconds,
    Trials,
    Workers,
    build_config,
    check_option,
)

# flag -> config field, for flags that override one field each
FIELD_FLAGS: dict[str, tuple[str, type | str]] = {
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
    "--baseline-sample": ("baseline_sample", int),
    "--forecast-model": ("forecast_model", str),
    "--plots": ("plots", str),
    "--ensemble": ("ensemble", int),
    "--seasons": ("seasons", "seasons"),
    "--freq": ("freq", str),
    "--log": ("log", str),
    "--future-columns": ("future_columns", "columns"),
    "--past-columns": ("past_columns", "columns"),
    "--static-columns": ("static_columns", "columns"),
    "--series-embedding": ("series_embedding", int),
    "--future": ("future", str),
    "--calendar": ("calendar", "seasons"),
    "--holidays": ("holidays", str),
    "--seed": ("seed", int),
    "--artifacts-dir": ("artifacts_dir", str),
}

# the commands' numeric options outside the config: dest -> (flag, its bounded type)
COMMAND_OPTIONS: dict[str, tuple[str, object]] = {
    "folds": ("--folds", Folds),
    "trials": ("--trials", Trials),
    "workers": ("--workers", Workers),
    "interval": ("--interval", IntervalSeconds),
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


def parse_columns(text: str) -> tuple[str, ...]:
    """`--future-columns price,promo` -> ('price', 'promo'); `none` or empty -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of column names, e.g. price,promo")
    return names


PARSERS = {"seasons": parse_seasons, "columns": parse_columns}


def config_options() -> argparse.ArgumentParser:
    """--preset, --config and one flag per config field (`FIELD_FLAGS`)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--preset", default="default", help=f"one of {', '.join(PRESETS)} (default: default)")
    parent.add_argument("--config", help="YAML or JSON file of config fields (flags override it)")
    for flag, (field, kind) in FIELD_FLAGS.items():
        description = (ForecastConfig.model_fields[field].description or "").replace("%", "%%")  # not a format
        parent.add_argument(flag, dest=field, type=PARSERS.get(kind, kind), default=None, help=description)
    return parent


def json_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="end stdout with one JSON line of results")
    return parent


def cluster_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="run the tasks on a local Dask cluster of N worker processes")
    where.add_argument("--dask-address", help="run the tasks on an existing Dask cluster (tcp://HOST:PORT)")
    return parent


def store_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--artifacts-dir", default="artifacts", help="root folder of the artifact store")
    return parent


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The `lstm-forecast` parser: one subcommand per operation."""
    config, output, cluster, store = config_options(), json_option(), cluster_options(), store_option()
    parser = argparse.ArgumentParser(prog="lstm-forecast", description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", parents=[config, output, cluster], help="run the forecasting pipeline once")
    commands.add_parser(
        "retrain", parents=[config, output, cluster], help="run the pipeline, then champion against challenger"
    )
    backtest = commands.add_parser("backtest", parents=[config, output], help="rolling-origin evaluation over K folds")
    backtest.add_argument("--folds", type=int, default=3, help="folds (default 3)")
    tune = commands.add_parser(
        "tune", parents=[config, output, cluster], help="search hyperparameters (Optuna TPE) by validation RMSE"
    )
    tune.add_argument("--trials", type=int, default=20, help="pipeline runs to try (default 20)")
    tune.add_argument("--output", help="also copy the best config to this YAML file")

    serve = commands.add_parser(
        "serve", parents=[config], help="serve the ad hoc and the scheduled retraining deployments"
    )
    when = serve.add_mutually_exclusive_group()
    when.add_argument("--cron", help="retraining schedule, cron syntax (default: '0 2 * * *', nightly)")
    when.add_argument("--interval", type=float, help="retraining schedule: every SECONDS")
    serve.add_argument(
        "--notify",
        help="an Apprise URL told when a served run fails or crashes (slack://…, mailto://…, json://host/path)",
    )

    models = commands.add_parser("models", parents=[store], help="list the model registry")
    models.add_argument("--json", action="store_true", help="print the registry as JSON records")

    predict = commands.add_parser(
        "predict",
        parents=[store, output],
        help="forecast every series past the end of its data with a registered model: one table",
    )
    predict.add_argument("--model", default="champion", help="`champion` or a model key (default: champion)")
    predict.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    predict.add_argument(
        "--series-id",
        default="",
        help="only these series of a long-format input, comma-separated (default: every series the model, "
        "or each series' champion, forecasts)",
    )
    predict.add_argument("--output", help="also write the forecast table to this .parquet or .csv file")
    predict.add_argument("--input", help="CSV/Parquet series to continue (default: the model's training data)")
    predict.add_argument(
        "--future",
        help="CSV/Parquet of the future columns' values after --input's data (unique_id, ds, columns), covering "
        "the horizon: needed by a model trained with --future-columns",
    )
    predict.add_argument("--time-column", help="time column of --input (default: the model's)")
    predict.add_argument("--value-column", help="value column of --input (default: the model's)")
    return parser


def config_from_args(args: argparse.Namespace) -> ForecastConfig:
    """The run's config: the preset, then the --config file, then each field flag given; its input's header
    checked."""
    overrides = {field: getattr(args, field) for field, _ in FIELD_FLAGS.values() if getattr(args, field) is not None}
    config = build_config(args.preset, args.config, overrides)
    from lstm_forecast.tasks.stages.generate import check_input_header

    check_input_header(config)  # a missing column refused before a Prefect server or a Dask cluster starts
    return config


def check_command_options(args: argparse.Namespace) -> None:
    """Refuse, before anything runs, a command option out of its bounds (`COMMAND_OPTIONS`): `InputError`."""
    for dest, (flag, bound) in COMMAND_OPTIONS.items():
        if getattr(args, dest, None) is not None:
            check_option(flag, bound, getattr(args, dest))
