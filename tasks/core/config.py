"""The one typed config of the pipeline, its presets, and loading from files.

`ForecastConfig` is the flow's only parameter: Prefect draws its form from it
and rejects bad values before a run starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lstm_forecast.tasks.core.errors import InputError, quoted
from lstm_forecast.tasks.core.graph import FILE_FIELDS, STAGE, SYNTHETIC_FIELDS

# NumPy takes seeds from 0 to 2**32 - 1; training also uses seed + 1 and seed * 1000 + 999 (kept in 64 bits).
MAX_SEED = 2**31 - 1


class ForecastConfig(BaseModel):
    """Everything one forecasting run depends on. Frozen: derive changes with `with_fields`."""

    # allow_inf_nan=False: `inf` or `nan` in a YAML file, a flag or a served run's form is refused like any
    # value out of its bounds (an infinite time_step passes `gt=0`).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # --- source -------------------------------------------------------------
    input: str | None = Field(
        None, description="CSV or Parquet file to forecast; empty means the built-in synthetic series."
    )
    time_column: str = Field("ds", description="Column of the input file holding the time (dates or numbers).")
    value_column: str = Field("y", description="Column of the input file holding the values.")
    id_column: str = Field(
        "unique_id", description="Column naming each series of a long-format input (one pipeline per series)."
    )
    series_id: str | None = Field(
        None, description="The one series of a long-format input to forecast; empty: the input has one series."
    )
    scope: Literal["auto", "global", "local"] = Field(
        "auto",
        description="A long-format input: one network trained across all its series ('global'; 'auto' "
        "chooses it for more than one series) or one network per series ('local').",
    )
    nan_policy: Literal["interpolate", "drop", "error"] = Field(
        "interpolate",
        description="What to do with missing values: fill linearly (inside the series; rows before its first"
        " value or after its last are dropped), drop the rows, or stop.",
    )
    duplicate_policy: Literal["error", "last", "mean"] = Field(
        "error", description="What to do with repeated timestamps: stop, keep the last value, or average them."
    )
    n_points: int = Field(10_000, ge=2, le=10_000_000, description="Synthetic series: number of points.")
    time_step: float = Field(0.1, gt=0, le=1e6, description="Synthetic series: step between points (time units).")
    frequency: float = Field(
        1.0, gt=0, le=1e6, description="Synthetic series: angular frequency of sin(frequency * t)."
    )
    noise_scale: float = Field(
        0.5, ge=0, le=1e6, description="Synthetic series: standard deviation of the Gaussian noise."
    )
    series_seed: int = Field(0, ge=0, le=MAX_SEED, description="Synthetic series: NumPy seed of the noise.")
    series_end: int | None = Field(
        None,
        ge=2,
        le=10_000_000,
        description="Use only the first N points (backtests cut the series this way); empty: all.",
    )
    series_keep: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Use only the first fraction of each series' points (backtests of many series cut them "
        "this way); 1: all.",
    )
    read_retries: int = Field(3, ge=0, le=10, description="Retries of a failed file read.")
    read_retry_delay_s: float = Field(1.0, ge=0, le=60, description="First retry delay; doubles on each retry.")
    lock_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        description="Longest wait for a stage another run is computing (its lock), in seconds; then a clear error.",
    )

    # --- split and scaling --------------------------------------------------
    train_fraction: float = Field(0.8, gt=0, lt=1, description="Share of points before the test split.")
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Tail share of the training part held out for early stopping (0: none)."
    )
    scaler: Literal["minmax"] = Field("minmax", description="Scaler fitted on the training part only.")
    transform: Literal["auto", "none", "level", "diff"] = Field(
        "auto",
        description="Model the values ('none'), each window relative to its level ('level', for trends and level "
        "shifts: the series' smoothed level for a network of its own, the window's last value for a global one) "
        "or first differences ('diff'); 'auto' chooses 'level' when an ADF test on the training "
        "part does not reject a unit root at 1 %.",
    )
    log: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="Model log values (multiplicative seasons and growth); 'auto': positive series whose "
        "training range spans a factor of 2 or more.",
    )
    seasons: tuple[Annotated[int, Field(ge=2, le=100_000)], ...] | None = Field(
        None,
        description="Season lengths removed before the LSTM (MSTL on the training part) and added back; "
        "empty: those of the calendar frequency (hourly 24 and 168, daily 7, weekly 52, monthly 12, quarterly 4) "
        "that the training part's autocorrelation confirms (on numeric time: the calendar cycles it shows); past "
        "the training part refitted once a cycle on the rows before; [] (on the command line: none) for none.",
    )
    freq: str | None = Field(
        None,
        description="Calendar frequency of the timestamps as a pandas alias (MS, W-SUN, D, B, h); "
        "empty: inferred from the timestamps.",
    )

    # --- covariates ---------------------------------------------------------
    future_columns: tuple[str, ...] = Field(
        (),
        description="Columns of the input known in advance (price, promotion, a temperature forecast): the "
        "network reads them for the look-back and the steps ahead; their values after the data come from "
        "--future.",
    )
    past_columns: tuple[str, ...] = Field(
        (), description="Columns of the input observed only up to now (sensor readings): read for the look-back."
    )
    static_columns: tuple[str, ...] = Field(
        (),
        description="Columns of a long-format input constant within each series (a store's size, a 0/1 column "
        "per category): a global model reads them to tell series apart, as asinh(value).",
    )
    future: str | None = Field(
        None,
        description="CSV or Parquet file of the future columns' values after the data (unique_id, ds, columns), "
        "covering at least the horizon; needed with --future-columns.",
    )
    calendar: tuple[Annotated[int, Field(ge=2, le=100_000)], ...] | None = Field(
        None,
        description="Calendar cycles (in steps) whose position the network reads (sine and cosine: hour of the "
        "day, day of the week, week of the year); empty: the seasons in use when the horizon is over one step "
        "(for many series, those most of them confirm); [] (on the command line: none) for none.",
    )
    holidays: str | None = Field(
        None,
        description="Country code (US, GB, DE, AU, …) whose public holidays the network is told of (a 0/1 "
        "feature, from the holidays package); empty: none. Needs dates.",
    )

    # --- windows ------------------------------------------------------------
    look_back: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Past values the model sees for each target; empty: sized from the data "
        "(four seasons, two once seasons are removed, 4 to 32 with no cycle; within a quarter of the "
        "rows before validation).",
    )
    horizon: int = Field(1, ge=1, le=1000, description="Steps ahead the model forecasts at once (direct multi-output).")

    # --- model and training -------------------------------------------------
    cell: Literal["lstm", "gru"] = Field("lstm", description="Recurrent cell.")
    units: int = Field(32, ge=1, le=1024, description="Units per recurrent layer.")
    layers: int = Field(1, ge=1, le=4, description="Stacked recurrent layers.")
    ensemble: int | None = Field(
        None,
        ge=1,
        le=20,
        description="Networks trained side by side from different initial weights, forecasts "
        "averaged; empty: 5 when there are fewer than 2,000 training windows, else 1.",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each recurrent layer.")
    patch: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Consecutive values fed to the cell per time step (look_back / patch steps); "
        "empty: 8 for look-backs of 128 or more, 4 from 64, else 1.",
    )
    epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Maximum training epochs; empty: at least 60, more for small data (about 1,500 optimizer steps).",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=65_536,
        description="Windows per optimizer step; empty: about 1/30 of the training windows, 16 to 256 "
        "(one model across series, once its step budget binds: to 128).",
    )
    learning_rate: float = Field(0.005, gt=0, le=1, description="Adam learning rate.")
    patience: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="Early-stopping patience in epochs (0: no early stopping); empty: 5, or about 100 "
        "optimizer steps when epochs are short.",
    )
    ema_momentum: float = Field(
        0.99,
        ge=0,
        lt=1,
        description="Final weights = moving average of the weights with this momentum (about 1/(1-m) steps; "
        "0: the best epoch's weights). Use 0 for runs of only a few dozen steps.",
    )
    series_embedding: int = Field(
        0,
        ge=0,
        le=256,
        description="A global model: each training series' own learned vector of this many values, read beside "
        "every step's values (a series it was not trained on reads a shared one); 0: none. Local models ignore it.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of weight initialisation and shuffling.")

    # --- forecasts and baselines -------------------------------------------
    interval_level: float = Field(0.9, gt=0, lt=1, description="Nominal coverage of the prediction intervals.")
    season_length: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Season of the seasonal-naive baseline; empty: detected from the training part.",
    )
    arima_order: tuple[int, int, int] | None = Field(
        None, description="(p, d, q) of the ARIMA baseline; empty: (2, 0, 2), or (2, 1, 2) when a unit root was found."
    )
    arima_fit_points: int = Field(
        2000, ge=50, le=100_000, description="ARIMA baseline: fit on this many last training points."
    )
    baselines: Literal["auto", "all", "statistical", "naive"] = Field(
        "auto",
        description="Baselines scored next to the LSTM: 'all' (naive, seasonal naive, ARIMA, AutoETS, "
        "AutoARIMA), 'statistical' (all but the fixed-order ARIMA), 'naive' (the two naive forecasts: "
        "seconds less per series); 'auto': 'all' for one series, 'statistical' for a global model's series.",
    )
    forecast_model: Literal["auto", "lstm", "combined"] = Field(
        "auto",
        description="The model of the run's forecast table: 'lstm', or 'combined' (half the LSTM, half the mean of "
        "AutoETS and AutoARIMA; a series without statistical baselines keeps the LSTM's forecast); 'auto': "
        "'combined' for a series with its own network, unless it reads covariates or holidays, else 'lstm'.",
    )
    baseline_sample: int = Field(
        100,
        ge=0,
        le=10_000_000,
        description="A global model over more series than this scores the statistical baselines (AutoETS, "
        "AutoARIMA: about a second per series) and forecasts the train split's windows (the in-sample fit) on "
        "this many of them, a sample fixed by the series ids and the seed; the naive baselines and the "
        "validation and test forecasts on every series. 0: all of it on every series.",
    )
    train_forecasts: bool = Field(
        True,
        description="Forecast the train split's windows too (the in-sample fit: the predictions' and metrics' "
        "train rows). A global model over more than `baseline_sample` series forecasts them for that sample "
        "only; a series without a validation split keeps them (its intervals are calibrated on them).",
    )
    plots: Literal["shown", "all"] = Field(
        "shown",
        description="Many series: plot only the handful of series the Prefect UI shows ('shown': the LSTM's "
        "best and worst), or every series ('all'). A single series is always plotted.",
    )

    # --- store --------------------------------------------------------------
    artifacts_dir: str = Field("artifacts", description="Root folder of the artifact store.")

    @field_validator("arima_order")
    @classmethod
    def _arima_order_in_range(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and not (0 <= value[0] <= 10 and 0 <= value[1] <= 2 and 0 <= value[2] <= 10):
            raise ValueError("arima_order (p, d, q) needs p and q from 0 to 10 and d from 0 to 2")
        return value

    @field_validator("freq")
    @classmethod
    def _known_frequency(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from lstm_forecast.tasks.core.calendar import normalize_freq

        try:
            return normalize_freq(value)
        except InputError as error:
            raise ValueError(f"{error.problem}; {error.fix}") from error

    @model_validator(mode="after")
    def _check_columns(self) -> ForecastConfig:
        if len({self.time_column, self.value_column, self.id_column}) < 3:
            raise ValueError("time_column, value_column and id_column must differ")
        covariates = [*self.future_columns, *self.past_columns, *self.static_columns]
        if len(set(covariates)) < len(covariates):
            raise ValueError("a column is named twice in future_columns, past_columns and static_columns")
        if set(covariates) & {self.time_column, self.value_column, self.id_column}:
            raise ValueError("covariate columns must not name the time, value or id column")
        if self.future and not self.future_columns:
            raise ValueError("future (a file of future values) needs future_columns naming its columns")
        if self.look_back is not None and self.patch is not None and self.look_back % self.patch:
            raise ValueError(f"look_back ({self.look_back}) must be a multiple of patch ({self.patch})")
        return self


# The commands' numeric options outside the config, each bounded once: the command line checks them as it
# parses (`check_option`), and the flows annotate their own parameters with them, so Prefect refuses a bad
# value from a served run's form or `prefect deployment run` before the run starts.
Folds = Annotated[int, Field(ge=1, le=100, description="Rolling-origin folds.")]
Trials = Annotated[int, Field(ge=1, le=10_000, description="Tuning trials: pipeline runs to try.")]
Workers = Annotated[int, Field(ge=1, le=1024, description="Local Dask worker processes.")]
IntervalSeconds = Annotated[
    float, Field(ge=1, le=366 * 86400, allow_inf_nan=False, description="Seconds between scheduled retrainings.")
]


def check_option(flag: str, bound: Any, value: Any) -> Any:
    """`value` of a command's option `flag`, checked against its annotated type `bound`; `InputError` naming
    the flag and its bounds otherwise."""
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(bound).validate_python(value)
    except ValidationError as error:
        limits = {
            name: getattr(constraint, name)
            for field in bound.__metadata__
            for constraint in field.metadata
            for name in ("ge", "gt", "le")
            if hasattr(constraint, name)
        }
        low = f"{limits['ge']:g}" if "ge" in limits else f"above {limits['gt']:g}"
        raise InputError(
            f"{flag} {value}: {error.errors()[0]['msg']}", f"pass {flag} from {low} to {limits['le']:,}"
        ) from error


def with_fields(config: ForecastConfig, **fields: Any) -> ForecastConfig:
    """`config` with some fields changed, validated (pydantic's `model_copy` does not validate)."""
    return ForecastConfig.model_validate({**config.model_dump(), **fields})


def with_series_ids(config: ForecastConfig, ids: list[Any]) -> dict[Any, ForecastConfig]:
    """`with_fields(config, series_id=i)` of each id (text or None): validated once, on the first, and copied with
    each other id (no check reads a series id). A panel's 10,000 configs: about 0.07 s against 0.19 s."""
    if not ids:
        return {}
    if any(i is not None and not isinstance(i, str) for i in ids):
        return {i: with_fields(config, series_id=i) for i in ids}  # validated each: pydantic refuses a number
    checked = with_fields(config, series_id=ids[0])
    return {i: checked.model_copy(update={"series_id": i}) for i in ids}


# The fields `ForecastConfig._check_columns` reads together: a config's own values of the others pass it alike.
CROSS_CHECKED = ("time_column", "value_column", "id_column", "future_columns", "past_columns", "static_columns")
CROSS_CHECKED += ("future", "look_back", "patch")


def with_same_fields(configs: dict[Any, ForecastConfig], **fields: Any) -> dict[Any, ForecastConfig]:
    """`with_fields(config, **fields)` of each config (by key): the fields validated once, on the first, and copied
    into each other config whose cross-checked fields they leave as the first's (`CROSS_CHECKED`), which then
    passes the same checks; any other is validated in full. A panel's 10,000 configs: about 0.07 s against 0.24 s."""
    if not configs:
        return {}
    first_key, first = next(iter(configs.items()))
    checked = with_fields(first, **fields)
    validated = {name: getattr(checked, name) for name in fields}
    compared = [name for name in CROSS_CHECKED if name not in fields]
    return {
        key: checked
        if key == first_key
        else config.model_copy(update=validated)
        if all(getattr(config, name) == getattr(first, name) for name in compared)
        else with_fields(config, **fields)
        for key, config in configs.items()
    }


PRESETS: dict[str, dict[str, Any]] = {
    # The article's hyperparameters exactly, on the leak-free pipeline.
    "seed": dict(
        look_back=1,
        patch=1,
        units=50,
        epochs=5,
        batch_size=1,
        learning_rate=0.001,
        ensemble=1,
        seasons=(),
        log="no",
        train_fraction=0.8,
        validation_fraction=0.0,
        patience=0,
        transform="none",
        ema_momentum=0.0,
    ),
    # What a user should get: a rule, not numbers. Seasons, look_back, patch, batch size and epochs
    # are sized from the series (tasks/core/defaults.py); on the built-in series that is a window of four
    # sine periods (~63 points each, 256 values), 8 values per LSTM step, batches of 256, 60 epochs.
    "default": dict(),
    # Tiny and quick: for tests and a first look.
    "smoke": dict(
        n_points=600,
        look_back=8,
        patch=2,
        units=8,
        epochs=1,
        batch_size=32,
        patience=0,
        ensemble=1,
        ema_momentum=0.0,
        arima_fit_points=200,
    ),
}


def preset(name: str) -> ForecastConfig:
    """The config of a named preset; `InputError` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in PRESETS:
        raise InputError(
            f"unknown preset {quoted(name)}",
            f"choose one of: {', '.join(PRESETS)}",
        )
    return ForecastConfig(**PRESETS[name])


CONFIG_FILE_BYTES = 256 * 1024  # a config file holds a few dozen fields: anything larger is refused unread
PROBLEMS_SHOWN = 5  # an invalid config names this many of its problems


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (`*name`): a few hundred bytes of nested aliases expand to
    gigabytes in whatever walks the loaded value (an alias bomb). Without them, what is loaded is no
    larger than the file."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases are not accepted", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Field values from a YAML or JSON file (a mapping of field names to values). The file must be small
    (`CONFIG_FILE_BYTES`), and YAML aliases are refused."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist", "pass the path of a YAML or JSON file")
    with path.open("rb") as stream:
        raw = stream.read(CONFIG_FILE_BYTES + 1)
    if len(raw) > CONFIG_FILE_BYTES:
        raise InputError(
            f"config file {path} is too large (over {CONFIG_FILE_BYTES // 1024} KiB)",
            "a config holds a few dozen `field: value` lines: pass that file",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"config file {path} is not UTF-8 text (byte {error.start})", "save it as UTF-8 YAML or JSON"
        ) from error
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_NoAliasLoader)
    except yaml.composer.ComposerError as error:
        if error.problem != "aliases are not accepted":
            raise InputError(f"config file {path} cannot be parsed{_line(error)}", "fix its YAML syntax") from error
        raise InputError(
            f"config file {path} uses a YAML alias{_line(error)}",
            "write each value out in full: aliases (*name) are not accepted",
        ) from error
    except (ValueError, yaml.YAMLError) as error:
        raise InputError(f"config file {path} cannot be parsed{_line(error)}", "fix its YAML/JSON syntax") from error
    except RecursionError as error:
        raise InputError(f"config file {path} nests values too deeply", "write plain `field: value` lines") from error
    if data is None:
        data = {}
    if not isinstance(data, dict) or not all(isinstance(name, str) for name in data):
        raise InputError(
            f"config file {path} does not hold a mapping of field names", "write it as `field: value` lines"
        )
    return data


def _line(error: Exception) -> str:
    """` (line N)` of a YAML or JSON parse error, when it names one."""
    where = getattr(error, "problem_mark", None) or getattr(error, "lineno", None)
    return f" (line {where.line + 1})" if hasattr(where, "line") else f" (line {where})" if where else ""


def _field_name(part: Any) -> str:
    """One part of a pydantic error's location (a field name from the user's file, or an index), shown bounded."""
    if isinstance(part, int) or (isinstance(part, str) and part.isidentifier() and len(part) <= 40):
        return str(part)
    return quoted(part, 40)


def build_config(
    preset_name: str = "default",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ForecastConfig:
    """Preset, then the file's fields (which may name their own `preset`), then explicit overrides."""
    file_fields = read_config_file(config_file) if config_file else {}
    preset_name = file_fields.pop("preset", preset_name)
    preset(preset_name)  # validates the name
    fields = {**PRESETS[preset_name], **file_fields, **(overrides or {})}
    try:
        return ForecastConfig(**fields)
    except ValidationError as error:
        errors = error.errors(include_url=False, include_input=False)
        problems = "; ".join(
            f"{'.'.join(_field_name(p) for p in e['loc']) or 'config'}: {e['msg'][:200]}"
            for e in errors[:PROBLEMS_SHOWN]
        )
        more = f"; and {len(errors) - PROBLEMS_SHOWN} more" if len(errors) > PROBLEMS_SHOWN else ""
        raise InputError(f"invalid configuration: {problems}{more}", "correct these fields") from error


def stage_fields(stage: str, config: ForecastConfig) -> dict[str, Any]:
    """The config values that `stage`'s output depends on (the input file's own bytes excluded)."""
    names = STAGE[stage].fields
    reads_input = STAGE[stage].reads_input
    if reads_input:
        names = FILE_FIELDS if config.input else SYNTHETIC_FIELDS
    fields = {name: getattr(config, name) for name in names}
    if reads_input and config.series_keep < 1:  # only a cut series differs: whole ones keep their keys
        fields["series_keep"] = config.series_keep
    if stage == "predict" and not config.train_forecasts:  # likewise: predictions of every window keep theirs
        fields["train_forecasts"] = False
    if reads_input and covariate_columns(config):  # the series carries them
        fields.update(
            future_columns=config.future_columns,
            past_columns=config.past_columns,
            static_columns=config.static_columns,
        )
    if stage == "normalize" and has_features(config):  # the features' leads are the horizon
        fields.update(
            future_columns=config.future_columns,
            past_columns=config.past_columns,
            static_columns=config.static_columns,
            calendar=config.calendar,
            holidays=config.holidays,
            horizon=config.horizon,
        )
    if stage == "train" and config.series_embedding and config.scope == "global":  # off: the keys stay as they were
        fields["series_embedding"] = config.series_embedding
    if stage in ("normalize", "window"):  # a global model's level, profiles and windows differ (`smooth_level`)
        fields["scope"] = "global" if config.scope == "global" else "local"
    return fields


# The forecast model of runs that publish no forecast (backtest folds, tuning trials): the combination is scored
# all the same, and its statistical models are not refitted on every row for a table nobody reads.
NOT_PUBLISHED = "lstm"


def covariate_columns(config: ForecastConfig) -> tuple[str, ...]:
    """The input's covariate columns a series carries: past-only, known-future, static."""
    return (*config.past_columns, *config.future_columns, *config.static_columns)


def has_features(config: ForecastConfig) -> bool:
    """Whether the network reads anything beside the values (covariates, calendar cycles, holidays)."""
    return bool(covariate_columns(config) or config.calendar or config.holidays)


def feature_width(config: ForecastConfig) -> int:
    """Feature channels per row the network reads beside the value (`covariates.CovariateSpace.width`)."""
    return (
        len(config.future_columns)
        + len(config.past_columns)
        + 2 * len(config.calendar or ())
        + int(config.holidays is not None)
        + len(config.static_columns)
    )
