"""Stage 1, generate: the series to forecast, as columns `ds` (time) and `y` (value).

Either the article's synthetic series `sin(frequency * t) + N(0, noise_scale²)` or
the user's CSV/Parquet file, cleaned by a stated policy:
- rows are sorted by time;
- repeated timestamps: `duplicate_policy` (error, keep the last, or average);
- missing values: `nan_policy` (linear interpolation, drop, or error), counted in the log;
- gaps in the time axis are kept as they are: consecutive observations are treated as
  consecutive steps (the log says how many irregular steps there are).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any, cast

import numpy as np
import pandas as pd
from prefect import task

from lstm_forecast.tasks.core.calendar import future_times, infer_frequency, many_time_gaps, time_gaps
from lstm_forecast.tasks.core.config import ForecastConfig, covariate_columns
from lstm_forecast.tasks.core.covariates import fit_covariate_space
from lstm_forecast.tasks.core.errors import InputError, quoted
from lstm_forecast.tasks.core.graph import stage_logger
from lstm_forecast.tasks.core.space import fit_minmax
from lstm_forecast.tasks.core.store import (
    ChunkTables,
    ChunkWork,
    Store,
    bytes_digest,
    columns_digest,
    frame_digest,
    stage_key,
)
from lstm_forecast.tasks.core.windows import origin_ranges, split_rows

TIME, VALUE = "ds", "y"


def synthetic_series(n_points: int, time_step: float, frequency: float, noise_scale: float, seed: int) -> pd.DataFrame:
    """The article's series: `ds = 0, step, 2·step, …` (numeric) and `y = sin(f·ds) + noise`.

    With the defaults (10,000 points, step 0.1, seed 0) it equals the article's data bit for bit.
    """
    rng = np.random.RandomState(seed)  # the legacy generator behind the article's np.random.seed(0)
    ds = np.arange(n_points) * time_step
    y = np.sin(frequency * ds) + rng.normal(scale=noise_scale, size=n_points)
    return pd.DataFrame({TIME: ds, VALUE: y})


def parse_table(data: bytes, suffix: str, id_column: str | None = None) -> pd.DataFrame:
    """The raw table of a CSV or Parquet file's bytes; a CSV's `id_column` read as text (ids `01` and `1`
    stay two series)."""
    if suffix == ".parquet":
        return parquet_table(data, id_column)
    # round_trip: a value written with 17 significant digits reads back as the same float (pandas' fast
    # parser can be one unit in the last place off), so a file saved again keeps its series' key.
    return pd.read_csv(io.BytesIO(data), float_precision="round_trip", dtype={id_column: str} if id_column else None)


def parquet_table(data: bytes, id_column: str | None = None) -> pd.DataFrame:
    """A Parquet file's table, as `pandas.read_parquet` reads it but for a text `id_column`, read as a dictionary
    (categorical): each distinct id decoded once, not once per row (2 million rows of 10,000 ids: the table and
    `rows_by_id` 0.88 -> 0.34 s of CPU in a fresh process, as in a worker). Where an id is missing, all of it as
    pandas reads it (None, not NaN)."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data), read_dictionary=[id_column] if id_column else None)
    if id_column in table.column_names and table.column(id_column).null_count:
        return pd.read_parquet(io.BytesIO(data))
    return table.to_pandas()


# The last long-format file read in this process: (path, mtime ns, size, id column) -> (its digest, its table,
# its rows per id). Each of its series is generated from it, so it is read, hashed and parsed once per
# process rather than once per series (for a panel of 10,000 series in a 30 MB file, that is the difference
# between seconds and hours).
_LONG_TABLES: dict[tuple[str, int, int, str], tuple[str, pd.DataFrame, dict[str, Any]]] = {}


def long_input(path: str | Path, id_column: str) -> tuple[str, pd.DataFrame, dict[str, Any]]:
    """A long-format file's SHA-256, its raw table and the row positions of each id (as text), kept per
    process while the file's modification time and size stay the same."""
    checked_suffix(path)  # a missing file or another format: one clear error
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, id_column)
    if key not in _LONG_TABLES:
        data, suffix = read_input_file(path)
        table = parsed_table(data, suffix, id_column, path)
        rows = rows_by_id(table[id_column]) if id_column in table else {}
        _LONG_TABLES.clear()
        _LONG_TABLES[key] = bytes_digest(data), table, rows
    return _LONG_TABLES[key]


def rows_by_id(ids: pd.Series) -> dict[str, np.ndarray]:
    """The row positions (ascending) of each id of a long-format table's id column, ids as text, in order of first
    appearance: what `groupby(ids.astype(str), sort=False).indices` gives, in a sixth of its time on 2 million
    rows of text ids."""
    codes, uniques = pd.factorize(ids)
    texts = [str(value) for value in uniques]
    # Missing ids (None reads 'None', NaN 'nan') and values that read as the same text (1 and '1': one series)
    # keep the grouping.
    if ids.isna().any() or len(set(texts)) < len(texts):
        return ids.groupby(ids.astype(str), sort=False).indices
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return {text: order[start:stop] for text, start, stop in zip(texts, bounds[:-1], bounds[1:], strict=True)}


def parsed_table(data: bytes, suffix: str, id_column: str, path: str | Path) -> pd.DataFrame:
    """`parse_table`, its failures as one clear error naming the file (and the line, when known)."""
    try:
        return parse_table(data, suffix, id_column)
    except UnicodeDecodeError as error:
        raise InputError(f"input {path} is not UTF-8 text ({error})", "save it as UTF-8 CSV, or as Parquet") from error
    except (ValueError, OSError) as error:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise InputError(
            f"input {path} cannot be read as {suffix[1:]} ({type(error).__name__}{file_line(error)})",
            "check that the file is a complete CSV with a header row, or a Parquet file",
        ) from error


def long_series(table: pd.DataFrame, rows: dict[str, Any], id_column: str, series_id: str) -> pd.DataFrame:
    """`select_series` of one series of a parsed long-format table whose rows per id are `rows`."""
    if series_id not in rows:
        return select_series(table, id_column, series_id)  # its error names what is missing
    return table.iloc[rows[series_id]]  # its rows keep their labels: messages name the file's rows


def select_series(raw: pd.DataFrame, id_column: str, series_id: str | None) -> pd.DataFrame:
    """The rows of one series of a long-format table (`series_id`), or the whole single-series table.

    Args:
        raw: a table; long format when it has `id_column`.
        series_id: the id to keep (compared as text); None for a single-series table.
    """
    if series_id is None:
        if id_column in raw.columns and raw[id_column].nunique() > 1:
            raise InputError(
                f"the input holds {raw[id_column].nunique()} series (column {id_column!r})",
                "run it with `lstm-forecast run`, which forecasts each series, or pick one with series_id",
            )
        return raw
    if id_column not in raw.columns:
        raise InputError(
            f"series {series_id!r} was asked for, but the input has no column {id_column!r}",
            "name the series column with --id-column",
        )
    rows = raw[raw[id_column].astype(str) == series_id]
    if rows.empty:
        raise InputError(
            f"series {series_id!r} is not in column {id_column!r} of the input",
            "list the ids with the file's unique_id column and pass one of them",
        )
    return rows  # its rows keep their labels: messages name the file's rows


def series_ids(raw: pd.DataFrame, id_column: str) -> list[str]:
    """The ids of a long-format table in order of first appearance (as text); [] without `id_column`.

    Raises:
        InputError naming the rows (file lines) whose id is missing.
    """
    if id_column not in raw.columns:
        return []
    # Factorized first, each distinct id then checked once: a panel's file has millions of rows, a few thousand ids.
    codes, uniques = pd.factorize(raw[id_column])
    texts = [str(value) for value in uniques]
    missing = codes < 0  # NaN or None
    if blank := [number for number, text in enumerate(texts) if not text.strip()]:
        missing |= np.isin(codes, blank)
    if missing.any():
        lines = (raw.index[missing][:5] + 2).tolist()  # + header line, 1-based
        raise InputError(
            f"{int(missing.sum())} row(s) have no {id_column!r} (file lines {lines}"
            f"{', …' if missing.sum() > 5 else ''})",
            f"give every row its series id in column {id_column!r}, or remove those rows",
        )
    return texts


def clean_series(
    raw: pd.DataFrame,
    time_column: str,
    value_column: str,
    nan_policy: str = "interpolate",
    duplicate_policy: str = "error",
) -> tuple[pd.DataFrame, list[str]]:
    """Columns `ds`, `y` from a raw table, sorted, with duplicates and NaN handled.

    Args:
        raw: any table holding `time_column` and `value_column`.
    Returns:
        (series with `ds` datetime64 or float and `y` float64, notes for the log)
    """
    check_columns(raw.columns, time_column, value_column)
    return clean_numbers(raw, time_column, value_column) or clean_any(
        raw, time_column, value_column, nan_policy, duplicate_policy
    )


def check_columns(header: Sequence[str], time_column: str, value_column: str) -> None:
    """Refuse a header without the time or the value column; for a header that reads as one column, name the
    separator it seems to use (never the header's names: a message must not echo a file's contents)."""
    for column, flag in ((time_column, "--time-column"), (value_column, "--value-column")):
        if column in header:
            continue
        fix = f"name the right column with {flag} (the header is the file's first line)"
        separator = next((mark for mark in (";", "\t", "|") if len(header) == 1 and mark in str(header[0])), None)
        if separator:
            fix = f"save the file with commas between columns (its header looks separated by {separator!r})"
        count = f"{len(header)} column{'s' if len(header) != 1 else ''}"
        raise InputError(f"column {column!r} is not in the input's header ({count})", fix)


def input_header(config: ForecastConfig) -> list[str] | None:
    """The column names of the input file; None without one, or for a file that cannot be read (generate names
    what is wrong with it)."""
    if not config.input:
        return None
    path = Path(config.input)
    if path.suffix.lower() not in (".csv", ".parquet") or not path.is_file():
        return None  # generate names a missing file or another format
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path).names
        return pd.read_csv(path, nrows=0).columns.tolist()
    except (ValueError, OSError, UnicodeDecodeError):
        return None


def is_long_format(config: ForecastConfig) -> bool:
    """Whether the input file holds an id column (one or more series), from its header alone."""
    return config.id_column in (input_header(config) or ())


def check_input_header(config: ForecastConfig) -> None:
    """`check_columns` and the covariate columns on the input file's header alone, before a run starts anything;
    a file that cannot be read is left to generate, which names what is wrong with it."""
    if (header := input_header(config)) is None:
        return
    check_columns(header, config.time_column, config.value_column)
    default_id = type(config).model_fields["id_column"].default
    if config.id_column != default_id and config.id_column not in header:  # named, so meant: not one series
        raise InputError(
            f"id column {config.id_column!r} is not in the input's header",
            "name the column that holds each row's series with --id-column (a file of one series needs none)",
        )
    flags = covariate_flags(config)
    check_covariate_columns(pd.DataFrame(columns=header), tuple(flags), flags)


def clean_numbers(raw: pd.DataFrame, time_column: str, value_column: str) -> tuple[pd.DataFrame, list[str]] | None:
    """`clean_series` of the common case, checked with numpy: numeric time and values, in time order, without
    repeated times or missing, infinite or huge values. None for anything else (`clean_any` cleans, notes and
    refuses it)."""
    time, value = raw[time_column], raw[value_column]
    if not all(isinstance(c.dtype, np.dtype) and c.dtype.kind in "iuf" for c in (time, value)) or not len(raw):
        return None
    ds, y = time.to_numpy(dtype="float64"), value.to_numpy(dtype="float64")
    within = (np.abs(ds) <= MAX_MAGNITUDE).all() and (np.abs(y) <= MAX_MAGNITUDE).all()  # finite, not huge
    if not (within and (ds[1:] > ds[:-1]).all()):
        return None
    series = pd.DataFrame({TIME: ds, VALUE: y})
    return series, gap_notes(series[TIME], None)  # numeric time has no calendar frequency


def gap_notes(ds: pd.Series, freq: str | None, irregular: int | None = None) -> list[str]:
    """The note on a cleaned series' times (n,) whose steps are not all one `freq` step (or, without one, the
    usual step): gaps are kept. `irregular`: their `time_gaps`, when counted already."""
    irregular = time_gaps(ds, freq) if irregular is None else irregular
    every = f"one {freq} step" if freq else "the usual time step"
    return [f"{irregular} step(s) differ from {every}: gaps are kept, not filled"] if irregular else []


def as_numbers(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """A file's column as float numbers (empty cells NaN), and where a cell held something that is not one."""
    values = pd.to_numeric(column, errors="coerce")
    return values, (values.isna() & column.notna()).to_numpy()


def clean_any(
    raw: pd.DataFrame, time_column: str, value_column: str, nan_policy: str, duplicate_policy: str
) -> tuple[pd.DataFrame, list[str]]:
    """`clean_series` of any table holding both columns: parsed, sorted, repeats and gaps handled by policy."""
    notes: list[str] = []
    y, non_numeric = as_numbers(raw[value_column])
    if non_numeric.any():
        raise InputError(
            f"value column {value_column!r} has {int(non_numeric.sum())} non-numeric value(s), "
            f"the first in data row {first_data_row(raw.index, non_numeric)}",
            "clean the file or choose the numeric column with --value-column",
        )
    check_magnitude(y.to_numpy(dtype="float64"), raw.index, f"value column {value_column!r}")
    ds = _parse_times(raw[time_column], time_column)
    if not pd.api.types.is_datetime64_any_dtype(ds):
        check_magnitude(ds.to_numpy(dtype="float64"), raw.index, f"time column {time_column!r}")
    series = pd.DataFrame({TIME: ds.to_numpy(), VALUE: y.to_numpy(dtype="float64")})

    if series[TIME].isna().any():
        raise InputError(
            f"time column {time_column!r} has {int(series[TIME].isna().sum())} empty value(s)",
            "fill or remove those rows",
        )
    if not series[TIME].is_monotonic_increasing:
        series = series.sort_values(TIME, kind="stable").reset_index(drop=True)
        notes.append("rows were not in time order: sorted by time")

    duplicated = series[TIME].duplicated(keep=False)
    if duplicated.any():
        count = int(series[TIME].duplicated().sum())
        if duplicate_policy == "error":
            raise InputError(
                f"{count} repeated timestamp(s) in {time_column!r}, first at {series[TIME][duplicated].iloc[0]}",
                "remove them, or pass duplicate_policy 'last' or 'mean' (--duplicate-policy)",
            )
        how = "last" if duplicate_policy == "last" else "mean"
        series = series.groupby(TIME, as_index=False, sort=True)[VALUE].agg(how)
        notes.append(f"{count} repeated timestamp(s) merged by taking the {how}")

    missing = int(series[VALUE].isna().sum())
    if missing:
        if nan_policy == "error":
            raise InputError(
                f"value column {value_column!r} has {missing} missing value(s)",
                "fill them, or pass nan_policy 'interpolate' or 'drop' (--nan-policy)",
            )
        if nan_policy == "drop":
            series = series.dropna(subset=[VALUE]).reset_index(drop=True)
            notes.append(f"{missing} missing value(s) dropped")
        else:  # inside the series only: no value is made up before its first or after its last
            present = np.flatnonzero(series[VALUE].notna().to_numpy())
            if len(present):
                edges = len(series) - (present[-1] + 1 - present[0])
                series = series.iloc[present[0] : present[-1] + 1].reset_index(drop=True)
                if edges:
                    notes.append(f"{edges} missing value(s) before its first value or after its last: rows dropped")
                if missing > edges:
                    series[VALUE] = series[VALUE].interpolate()
                    notes.append(f"{missing - edges} missing value(s) filled by linear interpolation")
    if series[VALUE].isna().all() or len(series) == 0:
        raise InputError("the input has no values", "pass a file with at least a few hundred rows")

    return series, notes + gap_notes(series[TIME], infer_frequency(series[TIME]))


def with_covariates(
    series: pd.DataFrame, raw: pd.DataFrame, config: ForecastConfig, columns: tuple[str, ...]
) -> pd.DataFrame:
    """`series` (`ds, y`, cleaned) with the covariate `columns` of its raw rows, matched by time (repeated
    times merged as `duplicate_policy` merges the values; rows dropped with their value dropped)."""
    if not columns:
        return series
    values = check_covariate_columns(raw, columns, covariate_flags(config))
    varying = [c for c in config.static_columns if values[c].nunique() > 1]
    if varying:
        raise InputError(
            f"static column {quoted(varying[0])} changes within series {quoted(config.series_id or '')}",
            "pass columns constant per series with --static-columns (others with --past-columns or --future-columns)",
        )
    times = _parse_times(raw[config.time_column], config.time_column).to_numpy()
    merged = (
        values.assign(_time=times)
        .groupby("_time", sort=True)
        .agg("last" if config.duplicate_policy == "last" else "mean")
    )
    aligned = merged.reindex(series[TIME].to_numpy())
    return series.assign(**{column: aligned[column].to_numpy() for column in columns})


def future_rows(config: ForecastConfig, series: pd.DataFrame) -> pd.DataFrame | None:
    """The future columns' values for the steps after `series` from the `future` file (rows of this series,
    in time order), or None without one. Refuses a file whose times do not continue the series' own."""
    if not config.future:
        return None
    data, suffix = read_input_file(config.future)
    raw = parsed_table(data, suffix, config.id_column, config.future)
    if config.id_column in raw.columns and config.series_id is not None:
        raw = raw[raw[config.id_column].astype(str) == config.series_id]
    if config.time_column not in raw.columns:
        raise InputError(
            f"the future file {config.future} has no time column {config.time_column!r}",
            "give it the input's time column, the series id column and the future columns",
        )
    flags = dict.fromkeys(config.future_columns, "--future-columns")
    values = check_covariate_columns(raw, config.future_columns, flags)
    times = _parse_times(raw[config.time_column], config.time_column)
    later = values.assign(ds=times.to_numpy()).sort_values("ds", kind="stable")
    later = later[later["ds"] > series[TIME].iloc[-1]].reset_index(drop=True)
    expected = future_times(series[TIME], len(later), config.freq).to_numpy()
    same = (
        np.isclose(later["ds"].to_numpy(dtype="float64"), expected.astype("float64"), rtol=1e-9, atol=0)
        if not pd.api.types.is_datetime64_any_dtype(series[TIME])
        else later["ds"].to_numpy() == expected
    )
    if len(later) and not same.all():
        step = int(np.flatnonzero(~same)[0]) + 1
        raise InputError(
            f"the future file {config.future} does not continue the series step by step: its row {step} after the "
            f"series' end is at {time_text(later['ds'].iloc[step - 1])}, not {time_text(expected[step - 1])}",
            "give one row per step after the series' last timestamp, without gaps",
        )
    return later[list(config.future_columns)]


def check_series_fits(
    series: pd.DataFrame, config: ForecastConfig, future: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Refuse, before anything is written, a series this config cannot split, window or scale; returns its
    `series_facts` (what its data-sized settings read from it)."""
    facts, config, bounds = sized_split(config, series["ds"], series["y"].to_numpy())
    if config.future_columns and (future is None or len(future) < config.horizon):
        given = 0 if future is None else len(future)
        raise InputError(
            f"the future columns {', '.join(map(quoted, config.future_columns))} need values for the "
            f"{config.horizon} steps after the series' last row; {given} given",
            "pass --future FILE (unique_id, ds and the future columns) covering the horizon",
        )
    if config.static_columns and config.scope != "global":
        raise InputError(
            "static columns tell the series of a panel apart, and this run trains one model per series",
            "drop --static-columns, or run a long-format file of several series with one global model",
        )
    if config.future_columns or config.past_columns:
        fit_covariate_space(
            series,
            int(bounds["start"][-1]),
            config.past_columns,
            config.future_columns,
            (),
            None,
            None,
            config.horizon,
            allow_constant=config.scope == "global",
        )
    check_windows_fit(series["y"].to_numpy(), config, bounds)
    return facts


def sized_split(
    config: ForecastConfig, ds: pd.Series, y: np.ndarray, inferred: str | None | EllipsisType = ...
) -> tuple[dict[str, Any], ForecastConfig, dict[str, Any]]:
    """A series' `series_facts` (`inferred`: its inferred frequency, when known), the config sized by them and
    its split rows (`split_rows`)."""
    from lstm_forecast.tasks.core.defaults import series_facts, sized_config

    facts = series_facts(config, ds, y, inferred)
    config = sized_config(config, facts)
    return facts, config, split_rows(len(y), config.train_fraction, config.validation_fraction)


def check_windows_fit(y: np.ndarray, config: ForecastConfig, bounds: dict[str, Any]) -> None:
    """Refuse a series' values `y` (n,) of which a split would keep no window origin, or whose training part
    cannot be scaled (`config`: sized; `bounds`: its split rows)."""
    origin_ranges(
        len(y), bounds, config.look_back, config.horizon, int(config.transform == "diff"), config.scope == "global"
    )
    fit_minmax(y[: int(bounds["start"][-1])])


# The largest magnitude an input value may have. The pipeline squares differences of values (RMSE, variances,
# the baselines' likelihoods) and sums them over up to 10 million points: (2 · 1e150)² · 1e7 = 4e307 stays
# below the largest 64-bit float (1.8e308); values near 1e300 overflowed to inf, and evaluate failed with a
# LinAlgError. No measured quantity comes near 1e150 in any unit.
MAX_MAGNITUDE = 1e150


def check_magnitude(values: np.ndarray, index: pd.Index, what: str) -> None:
    """Refuse values (in file order, labels `index`) that are infinite or beyond ±`MAX_MAGNITUDE`, naming the
    first one's data row."""
    beyond = np.abs(values) > MAX_MAGNITUDE  # NaN compares False: missing values have their own policy
    if beyond.any():
        kind = "infinite or " if np.isinf(values[beyond]).any() else ""
        raise InputError(
            f"{what} holds {int(beyond.sum())} value(s) {kind}beyond ±{MAX_MAGNITUDE:g}, the first in data row "
            f"{first_data_row(index, beyond)}",
            "replace infinite values with numbers or leave them empty, and rescale the column (divide it by a "
            "power of ten): squares and sums of larger values overflow 64-bit floats",
        )


def covariate_flags(config: ForecastConfig) -> dict[str, str]:
    """Each covariate column of `config` -> the flag that named it (for messages)."""
    return (
        dict.fromkeys(config.past_columns, "--past-columns")
        | dict.fromkeys(config.future_columns, "--future-columns")
        | dict.fromkeys(config.static_columns, "--static-columns")
    )


def check_covariate_columns(raw: pd.DataFrame, columns: tuple[str, ...], flag_of: dict[str, str]) -> pd.DataFrame:
    """The covariate columns of an input table as float64, refusing, with one message naming the column,
    one that is missing, non-numeric, empty somewhere or infinite.

    Args:
        raw: the input's rows (labels: file rows).
        flag_of: column -> the flag that named it (for the message).
    """
    out = {}
    for column in columns:
        flag = flag_of.get(column, "--future-columns")
        if column not in raw.columns:
            raise InputError(
                f"covariate column {quoted(column)} is not in the input's header",
                f"name an existing column with {flag}",
            )
        values, bad = as_numbers(raw[column])
        if bad.any():
            raise InputError(
                f"covariate column {quoted(column)} holds {int(bad.sum())} value(s) that are not numbers, the first "
                f"in data row {first_data_row(raw.index, bad)}",
                "encode it as numbers (0/1 for a flag, one column per category), or drop it from " + flag,
            )
        missing = values.isna().to_numpy()
        if missing.any():
            raise InputError(
                f"covariate column {quoted(column)} has {int(missing.sum())} missing value(s), the first in data row "
                f"{first_data_row(raw.index, missing)}",
                "fill them in the file (a covariate is not interpolated: its gaps may mean something)",
            )
        array = values.to_numpy(dtype="float64")
        check_magnitude(array, raw.index, f"covariate column {quoted(column)}")
        out[column] = array
    return pd.DataFrame(out, index=raw.index)


def time_text(value: Any) -> str:
    """A time for a message: a numeric one to 10 significant digits (0.1 · 9999 is 999.9, not 999.9000000000001)."""
    return f"{value:.10g}" if isinstance(value, (float, np.floating)) else str(value)


def first_data_row(index: pd.Index, bad: np.ndarray) -> int:
    """The 1-based data row (of the file, header not counted) of the first True in `bad`: a table's row labels
    are its file positions (one series of a long-format file keeps its rows' labels)."""
    position = int(np.flatnonzero(bad)[0])
    label = index[position]
    return int(label) + 1 if isinstance(label, (int, np.integer)) else position + 1


def _parse_times(column: pd.Series, name: str) -> pd.Series:
    """Numbers stay numbers; anything else must parse as dates. A column of mostly numbers is a numeric
    column: its values that are not numbers are named as such (never tried as dates)."""
    numeric = pd.to_numeric(column, errors="coerce")  # datetimes become integers: they are dates, not numbers
    present = column.notna().to_numpy()
    not_numbers = present & numeric.isna().to_numpy()
    is_datetime = pd.api.types.is_datetime64_any_dtype(column)  # e.g. a Parquet timestamp column
    if not not_numbers.any() and not is_datetime:
        return numeric.astype("float64")
    fix = "use ISO dates (2024-01-31) or numbers, or choose the time column with --time-column"
    # the messages name the row, never the value: an error must not echo a file's contents
    if not is_datetime and 2 * int(numeric.notna().sum()) > int(present.sum()):
        raise InputError(
            f"time column {name!r} holds numbers and {int(not_numbers.sum())} value(s) that are not numbers, "
            f"the first in data row {first_data_row(column.index, not_numbers)}",
            fix,
        )
    try:  # utc=True: times with offsets (even different ones) become UTC; times without stay as they are
        parsed = pd.to_datetime(column, errors="raise", format="mixed", utc=True)
    except (ValueError, TypeError) as error:
        bad = np.array([present[i] and not _parses_as_time(value) for i, value in enumerate(column.tolist())])
        where = f", the first in data row {first_data_row(column.index, bad)}" if bad.any() else ""
        raise InputError(f"time column {name!r} holds values that are neither numbers nor dates{where}", fix) from error
    return parsed.dt.tz_localize(None)


def _parses_as_time(value: object) -> bool:
    try:
        pd.to_datetime(pd.Series([value]), errors="raise", format="mixed", utc=True)
        return True
    except (ValueError, TypeError):
        return False


def file_line(error: Exception) -> str:
    """`, line N` when a parser's message names the line it failed on; the message itself may quote the file."""
    found = re.search(r"\bline (\d+)", str(error))
    return f", line {found.group(1)}" if found else ""


def checked_suffix(path: str | Path) -> str:
    """The lowercase suffix of an existing CSV or Parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"input {path} is neither .csv nor .parquet", "convert it to CSV or Parquet")
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", "check the path passed with --input")
    return suffix


def read_input_file(path: str | Path) -> tuple[bytes, str]:
    """The bytes and lowercase suffix of a CSV or Parquet file."""
    suffix = checked_suffix(path)
    return Path(path).read_bytes(), suffix


def long_format_ids(config: ForecastConfig) -> list[str]:
    """The series of a long-format input when no one series is chosen (`series_id`); else []."""
    return [] if config.series_id else read_series_ids(config)


def read_series_ids(config: ForecastConfig) -> list[str]:
    """The series ids of `config.input` ([] for a single-series file or the synthetic series). Remembered per
    process while the file is unchanged: the command line and the flow both ask (1 s for 10,000 series)."""
    if not config.input:
        return []
    try:
        found = Path(config.input).stat()
    except OSError:
        return []  # the generate stage reports what is wrong with the file
    return list(_series_ids_of(config.input, config.id_column, found.st_size, found.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _series_ids_of(input_path: str, column: str, size: int, modified_ns: int) -> tuple[str, ...]:
    """`read_series_ids` of a file as it is (its size and mtime key the answer)."""
    path = Path(input_path)
    try:  # only the id column; the generate stage reads (with retries) and checks the whole file
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            if column not in pq.read_schema(path).names:
                return ()
            # as a dictionary: each distinct text decoded once, not once per row (ignored for numbers)
            ids = pq.read_table(path, columns=[column], read_dictionary=[column]).to_pandas()
        else:
            ids = pd.read_csv(
                path, usecols=lambda name: name == column, dtype=str, keep_default_na=False, na_values=[""]
            )
    except (ValueError, OSError, UnicodeDecodeError):
        return ()  # the generate stage reports what is wrong with the file
    return tuple(series_ids(ids, column))


def _retry_on_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    """Retry reads that failed for a passing reason, never bad input."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, OSError)


# Its retries (`read_retries`, doubling delays from `read_retry_delay_s`) come from the config, set where the
# A chunk task generates up to a thousand series: it logs the notes of the first few that have any (gaps, filled
# values), then says that it logs no more, instead of a line per series.
NOTED_SERIES_PER_TASK = 5
_noted_series: dict[str, int] = {}  # task (or flow) run id -> series whose notes it logged


def log_input_notes(logger: Any, input_path: str, series_id: str | None, notes: list[str]) -> None:
    """Log what cleaning a series changed (`clean_series`' notes) as warnings, for at most
    `NOTED_SERIES_PER_TASK` series per task run."""
    if not notes:
        return
    from prefect.runtime import flow_run, task_run

    run = str(task_run.id or flow_run.id or "")  # a stage run inline counts against its flow run
    noted = _noted_series.get(run, 0)
    _noted_series[run] = noted + 1
    name = f"input {input_path}" + (f", series {quoted(series_id)}" if series_id is not None else "")
    if noted < NOTED_SERIES_PER_TASK:
        for note in notes:
            logger.warning("%s: %s", name, note)
    elif noted == NOTED_SERIES_PER_TASK:
        logger.warning("input %s: more series were cleaned alike; this task logs no more of them", input_path)


# stage is run (`tasks/caching.py: with_store_cache`); only transient read errors are retried.
@task(name="generate", retry_condition_fn=_retry_on_transient, result_serializer="json")
def generate(config: ForecastConfig) -> str:
    """Read or synthesise the series; returns its store key."""
    store = Store(config.artifacts_dir)
    logger = stage_logger()
    source_key = None
    if config.input:
        if config.series_id is None:
            data, suffix = read_input_file(config.input)
            digest, raw = bytes_digest(data), parsed_table(data, suffix, config.id_column, config.input)
        else:
            digest, table, rows = long_input(config.input, config.id_column)
            raw = long_series(table, rows, config.id_column, config.series_id)
        source_key = stage_key("generate", config, {}, extra=digest)
        if config.series_id is None:
            raw = select_series(raw, config.id_column, None)
        series, notes = clean_series(
            raw, config.time_column, config.value_column, config.nan_policy, config.duplicate_policy
        )
        series = with_covariates(series, raw, config, covariate_columns(config))
        log_input_notes(logger, str(config.input), config.series_id, notes)
        source = {"input": str(config.input), "series_id": config.series_id}
    else:
        if covariate_columns(config):
            raise InputError(
                "covariate columns were named, but the built-in series has none", "pass --input with those columns"
            )
        key = stage_key("generate", config, {})
        series = synthetic_series(
            config.n_points, config.time_step, config.frequency, config.noise_scale, config.series_seed
        )
        source = {"synthetic": True}
    whole = series
    if config.series_end is not None:
        series = series.iloc[: config.series_end].reset_index(drop=True)
    if config.series_keep < 1:
        series = series.iloc[: max(2, int(len(series) * config.series_keep))].reset_index(drop=True)
    # The future columns after the data: the rows a backtest cut off, else the future file's.
    future = whole.iloc[len(series) :][list(config.future_columns)] if len(whole) > len(series) else None
    if config.future_columns and future is None:
        future = future_rows(config, series)
    source = source | {"facts": check_series_fits(series, config, future)}  # sizing reads them from here
    if source_key is not None:
        # Keyed by the series itself, not the file: a change elsewhere in the file (another series
        # edited or added) gives this series the same key, and its later stages stay cached.
        ahead = f" future {frame_digest(future.reset_index(drop=True))}" if config.future_columns else ""
        key = stage_key("generate", config, {}, extra=f"series {frame_digest(series)}{ahead}")
    if config.future_columns:
        source = source | {"future": {c: future[c].tolist() for c in config.future_columns}}
    if not store.is_complete("generate", key):  # rewriting it would make every later stage look stale
        store.write_table("generate", key, series, metadata=source)
    if source_key is not None:
        store.write_source(source_key, key)
    log_series_span(logger, config, series[TIME])
    return key


def log_series_span(logger: Any, config: ForecastConfig, ds: pd.Series) -> None:
    """Log a generated series' length and its first and last times `ds` (n,)."""
    name = f"series {config.series_id!r}" if config.series_id else "series"
    logger.info("%s: %d points, %s to %s", name, len(ds), time_text(ds.iloc[0]), time_text(ds.iloc[-1]))


def generate_chunk(work: ChunkWork) -> list[Exception | tuple[str, dict[str, Any]]]:
    """`generate` of many series at once, each `(config, {}, the key of its input and settings)`. The series of
    a long-format file that need no cleaning (numeric values, times in order, nothing missing) are read from
    the file's table and checked as arrays for the whole chunk, their times parsed at once; the others, and a
    built-in or single-series input, as `generate` reads them. Returns, per series, the error it failed with,
    or its output's key and `series_facts`."""
    outcomes: list[Exception | tuple[str, dict[str, Any]] | None] = [None] * len(work)
    tables = ChunkTables("generate")
    first = True
    for indices, digest, columns in clean_chunk_columns(work):
        freqs = [infer_frequency(ds, ordered=True) for ds, _, _ in columns]
        uneven = [number for number, (_, _, even) in enumerate(columns) if not even]
        counted = many_time_gaps([columns[n][0] for n in uneven], [freqs[n] for n in uneven])
        gaps = [0] * len(columns)  # none where the times are numbers one same step apart
        for number, count in zip(uneven, counted, strict=True):
            gaps[number] = count
        for number, (index, (ds, y, _)) in enumerate(zip(indices, columns, strict=True)):
            config = work[index][0]
            try:
                source_key = stage_key("generate", config, {}, extra=digest)  # as `generate` keys it
                found = (freqs[number], gaps[number])
                outcomes[index] = generated_series(config, source_key, ds, y, tables, first, found)
                first = False
            except Exception as error:  # reported per series: it fails alone
                outcomes[index] = error
    tables.write()
    from lstm_forecast.tasks.core.defaults import stored_facts

    for index, outcome in enumerate(outcomes):  # the rest, one by one: they are cleaned (or refused) as they come
        if outcome is None:
            config = work[index][0]
            try:
                key = generate.fn(config)
                outcomes[index] = key, stored_facts(config, Store(config.artifacts_dir), key)
            except Exception as error:
                outcomes[index] = error
    return cast(list[Exception | tuple[str, dict[str, Any]]], outcomes)


def clean_chunk_columns(
    work: ChunkWork,
) -> Iterator[tuple[list[int], str, list[tuple[pd.Series, np.ndarray, bool]]]]:
    """The series of a chunk that need no cleaning, by long-format file: their positions in `work`, the file's
    digest, and each one's times (a Series) and values (n,), as `clean_series` would give them, and whether its
    times are numbers one same step apart (`evenly_spaced`)."""
    by_file: dict[tuple[str, str, str, str], list[int]] = {}
    for index, (config, _, _) in enumerate(work):
        plain = config.series_end is None and config.series_keep >= 1 and not covariate_columns(config)
        if config.input and config.series_id is not None and plain:
            by_file.setdefault((config.input, config.id_column, config.time_column, config.value_column), []).append(
                index
            )
    for (path, id_column, time_column, value_column), indices in by_file.items():
        try:
            digest, table, rows = long_input(path, id_column)
        except (InputError, OSError):
            continue  # each series reports it on its own
        if time_column not in table or value_column not in table:
            continue
        present = [i for i in indices if work[i][0].series_id in rows]
        positions = [rows[work[i][0].series_id] for i in present]
        found = plain_columns(table[time_column], table[value_column], positions) if present else None
        if found is not None:
            ds, y, bounds, plain = found
            kept = np.flatnonzero(plain)
            even = evenly_spaced(ds, bounds)
            series = [(pd.Series(ds[bounds[i] : bounds[i + 1]]), y[bounds[i] : bounds[i + 1]], even[i]) for i in kept]
            yield [present[i] for i in kept], digest, series


def evenly_spaced(times: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per series of times laid end to end (series i in rows `bounds[i]:bounds[i + 1]`), whether they are numbers
    each one same step after the one before (such a series has no gaps: `time_gaps` is 0); (len(bounds) - 1,)."""
    count, lengths = len(bounds) - 1, np.diff(bounds)
    if times.dtype.kind not in "iuf" or len(times) < 2:
        return np.zeros(count, dtype=bool)
    steps = np.diff(times)
    row_owner = np.repeat(np.arange(count), lengths)
    inside = row_owner[1:] == row_owner[:-1]  # the steps between two rows of one series
    owner = row_owner[1:][inside]
    first_step = steps[np.minimum(bounds[:-1], len(steps) - 1)]  # a series' first step (of those with two rows)
    differs = np.bincount(owner, weights=steps[inside] != first_step[owner], minlength=count)
    return (lengths >= 2) & (differs == 0) & np.isfinite(first_step)


def plain_columns(
    time: pd.Series, value: pd.Series, positions: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The times and values of many series of a long table (their rows `positions`, each ascending) as
    `clean_series` reads them: (times, values, each series' row bounds in them (count + 1,), whether each series
    needs no cleaning: numbers within ±`MAX_MAGNITUDE`, times strictly increasing). None when the chunk's times
    do not all read as one kind: numbers, or dates with no number among them."""
    rows = np.concatenate(positions)
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in positions])])
    time, value = time.take(rows), value.take(rows)
    numeric_time = isinstance(time.dtype, np.dtype) and time.dtype.kind in "iuf"
    if numeric_time:
        ds = time.to_numpy(dtype="float64")
        fine = np.abs(ds) <= MAX_MAGNITUDE
    else:
        dated = pd.api.types.is_datetime64_any_dtype(time)
        if not dated and (not isinstance(time.dtype, np.dtype) or pd.to_numeric(time, errors="coerce").notna().any()):
            return None  # numbers among other values, or an unusual kind: each series is read on its own
        try:
            ds = _parse_times(time, str(time.name)).to_numpy()
        except InputError:
            return None
        fine = ~pd.isna(ds)
    values, non_numeric = as_numbers(value)
    y = values.to_numpy(dtype="float64")
    unordered = np.r_[False, ~(ds[1:] > ds[:-1])]  # NaN and NaT compare False
    unordered[bounds[:-1]] = False  # a series' first row has no step before it
    bad = ~fine | non_numeric | ~(np.abs(y) <= MAX_MAGNITUDE) | unordered  # NaN values: missing, cleaned by policy
    return ds, y, bounds, np.add.reduceat(bad, bounds[:-1]) == 0


def generated_series(
    config: ForecastConfig,
    source_key: str,
    ds: pd.Series,
    y: np.ndarray,
    tables: ChunkTables,
    logs: bool,
    timing: tuple[str | None, int] | None = None,
) -> tuple[str, dict[str, Any]]:
    """`generate` of one series of a long-format file that needs no cleaning, given its times `ds` and values
    `y` (n,): checked, keyed by its values and added to the chunk's `tables` (unless stored already); its source
    recorded under `source_key`; `timing`: its frequency (`infer_frequency`) and `time_gaps`, when known. Returns
    its key and facts."""
    store = Store(config.artifacts_dir)
    freq, gaps = timing if timing is not None else (infer_frequency(ds), None)
    if notes := gap_notes(ds, freq, gaps):
        log_input_notes(stage_logger(), str(config.input), config.series_id, notes)
    facts, sized, bounds = sized_split(config, ds, y, freq)
    check_windows_fit(y, sized, bounds)
    columns = {TIME: ds.to_numpy(), VALUE: y}
    key = stage_key("generate", config, {}, extra=f"series {columns_digest(columns.items())}")
    if not store.is_complete("generate", key):  # its id is in its key: no other series of the chunk has it
        tables.add(store, key, columns, {"input": str(config.input), "series_id": config.series_id, "facts": facts})
    store.write_source(source_key, key)
    if logs:
        log_series_span(stage_logger(), config, ds)
    return key, facts
