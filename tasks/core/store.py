"""The artifact store: every path, key and write of the pipeline lives here.

Layout under the root (default `artifacts/`):

    <stage>/<key>.parquet        generate, split, normalize, window, predict, evaluate
    sources/<key>.json           which generate key an input file (its digest and settings) gave
    models/<key>/model.keras     train (plus models/<key>/metadata.json)
    plots/<key>.png              plot (and <key>.small.png, the copy shown in the Prefect UI)
    forecasts/<key>.parquet      a forecast table of every series: `lstm-forecast predict` (and <key>.png,
                                 the plot of one series), a run, a retraining
    forecasts/latest.parquet     the table the last retraining published (replaced atomically)
    forecasts/calibration/<key>.parquet  a model's interval half-widths per series and step
    forecasts/unscored/<key>.parquet     the series a global model's last run forecast without scoring them
                                 (too short), as that run read them: `predict` forecasts them from these
    summaries/<key>.parquet      one row per series of a long-format input (many-series runs)
    tuning/<key>.parquet         the trials of `lstm-forecast tune`; tuning/<key>.yaml its best config
    registry.parquet             every model, its metrics and status (champion, challenger, retired)
    registrations/<key>.json     each registered model's entry: the registry is rebuilt from these
    decisions.parquet            every retraining decision
    <stage>/packs/<key>.parquet  many series' outputs of one table stage in one file (a chunk of a panel),
                                 one row block per output, column `_key` naming it
    sources/packs/<key>.parquet  many series' `sources` records in one file
    _prefect/records/<key>       Prefect's cache records (small JSON: the key a stage returned)
    _prefect/locks/              Prefect's lock files while a stage computes

A stage's key hashes its name, its code version, its own config fields and its
upstream keys, so changing `epochs` changes the train key and everything after
it, and nothing before. A series read from a file is keyed by its own cleaned values:
editing one series of a long-format file (or adding one) leaves the others' keys alone.
Every write goes to a temporary name in the same folder and is renamed into place,
so a file under its final name is always complete.

A panel's per-series stages run in chunks of series inside `Store.batched()`: each output is
held in memory and the chunk's outputs of one stage are written as one pack file when the
chunk ends, so a store holds a file per stage and chunk, not per series. Keys stay per series:
an output is found by its key wherever it lies (its own file, a pack, or the current batch).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lstm_forecast.tasks.core.config import ForecastConfig, stage_fields
from lstm_forecast.tasks.core.errors import InputError, shown
from lstm_forecast.tasks.core.graph import INPUT_STAGES, STAGE, STAGES

log = logging.getLogger("prefect.lstm_forecast.store")  # Prefect's `get_logger` name, without importing Prefect

MODEL_FILE = "model.keras"
FORECASTER_FILE = "forecaster.keras"  # the same network trained further on every row
# Each network again as numpy arrays (inference.py), applied without TensorFlow; absent: Keras applies the network.
MODEL_ARRAYS_FILE = "model.npz"
FORECASTER_ARRAYS_FILE = "forecaster.npz"
METADATA_FILE = "metadata.json"
_METADATA_KEY = b"lstm_forecast"
_KEYS_KEY = b"lstm_forecast.keys"  # a pack's keys alone (`_pack_keys`)


KEY_LENGTH = 24

# The only cache record the store accepts: a stage key as JSON, written with Prefect's JSON serializer.
# Prefect reads a record back with whatever serializer it names (pickle too): anything else is refused.
RECORD_SERIALIZER = {
    "type": "json",
    "jsonlib": "json",
    "object_encoder": "prefect.serializers.prefect_json_object_encoder",
    "object_decoder": "prefect.serializers.prefect_json_object_decoder",
    "dumps_kwargs": {},
    "loads_kwargs": {},
}

REGISTRY_LOCK_TIMEOUT_S = 600.0  # the registry lock is held for one read-modify-write
_LOCK_POLL_S = 0.1
_LOCK_FIRST_NOTICE_S = 5.0  # a wait longer than this is logged, naming the holder
_LOCK_NOTICE_EVERY_S = 60.0


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~_umask()


def _folder_mode() -> int:
    return 0o777 & ~_umask()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (`KEY_LENGTH` hex digits)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:KEY_LENGTH]


def bytes_digest(data: bytes) -> str:
    """SHA-256 of some bytes (hex), the same as `file_digest` of a file holding them."""
    return hashlib.sha256(data).hexdigest()


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 (hex) of a table's column names, dtypes and values, row order included."""
    return columns_digest((name, column.to_numpy()) for name, column in frame.items())


def columns_digest(columns: Iterable[tuple[Any, np.ndarray]]) -> str:
    """`frame_digest` of the table of these columns, (name, values) in order, without making the table."""
    digest = hashlib.sha256()
    for name, column in columns:
        values = np.ascontiguousarray(column)
        digest.update(f"{name}:{values.dtype}:{len(values)};".encode())
        digest.update(values.tobytes() if values.dtype != object else json.dumps(values.tolist(), default=str).encode())
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), for keys that must change when the file does."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_key(stage: str, config: ForecastConfig, upstream: Mapping[str, str | list[str]], extra: str = "") -> str:
    """Content key of one stage's output.

    Args:
        stage: one of `STAGES`.
        config: the run's config; only `stage_fields(stage, config)` enter the key.
        upstream: name -> key of each input stage.
        extra: anything else the output depends on (the input file's digest).
    """
    fields = stage_fields(stage, config)
    if STAGE[stage].reads_input and config.future:  # the future columns' values after the data are part of the series
        extra = f"{extra} future {future_file_digest(config.future)}"
    return fingerprint(stage, STAGE[stage].version, fields, dict(sorted(upstream.items())), extra)


_FUTURE_DIGESTS: dict[tuple[str, int, int], str] = {}


def future_file_digest(path: str) -> str:
    """`file_digest` of a future file, kept per process while its modification time and size stay the same
    (every series of a panel is keyed with it); "missing" when it cannot be read (generate then says why)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return "missing"
    key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _FUTURE_DIGESTS:
        try:
            _FUTURE_DIGESTS[key] = file_digest(path)
        except OSError:
            return "missing"
    return _FUTURE_DIGESTS[key]


def upstream_keys(stage: str, keys: Mapping[str, str]) -> dict[str, str]:
    """`stage`'s inputs (argument name -> key) from the keys of the stages run so far (stage -> key)."""
    return {name: keys[source] for name, source in STAGE[stage].inputs.items()}


def planned_key(stage: str, config: ForecastConfig, keys: Mapping[str, str]) -> str:
    """The key `stage` will have, given the keys of the stages before it (stage -> key)."""
    return stage_key(stage, config, upstream_keys(stage, keys))


_TEXT_TYPES = (pa.types.is_dictionary, pa.types.is_string, pa.types.is_large_string)


def footer_json(raw: bytes) -> Any:
    """A Parquet footer's JSON (written by `json.dumps`), parsed by orjson: a normalize pack's footer holds a
    thousand model spaces (1 MB), 3 times faster. The standard parser takes what orjson refuses: the `NaN` and
    `Infinity` that `json.dumps` writes, integers beyond 64 bits."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _pack_keys(schema_metadata: Mapping[bytes, bytes]) -> list[str]:
    """A pack's output keys, from its footer: from their own entry (a normalize pack's footer also holds a thousand
    model spaces, parsed again by whoever reads them), or for a pack written before there was one, from the whole
    footer."""
    if _KEYS_KEY in schema_metadata:
        return footer_json(schema_metadata[_KEYS_KEY])
    return footer_json(schema_metadata[_METADATA_KEY])["keys"]


def _parquet_bytes(frame: pd.DataFrame, metadata: dict[str, Any] | None = None) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        merged = {**(table.schema.metadata or {}), _METADATA_KEY: json.dumps(metadata).encode()}
        if "keys" in metadata:  # a pack's keys on their own too: a folder's index reads them alone (`_pack_keys`)
            merged[_KEYS_KEY] = json.dumps(metadata["keys"]).encode()
        table = table.replace_schema_metadata(merged)
    buffer = io.BytesIO()
    # Dictionary pages only for text columns: tried on floats, whose values barely repeat, they doubled the time
    # of writing a chunk's predictions (475,000 rows: 66 ms against 32 ms) and made the file larger.
    textual = [f.name for f in table.schema if any(is_type(f.type) for is_type in _TEXT_TYPES)]
    pq.write_table(table, buffer, use_dictionary=textual)
    return buffer.getvalue()


def _is_stage_key(name: str) -> bool:
    return len(name) == KEY_LENGTH and all(c in "0123456789abcdef" for c in name)


def is_key(value: Any) -> bool:
    """True for a store key: a string of `KEY_LENGTH` hex digits (anything else, of any type: False)."""
    return isinstance(value, str) and _is_stage_key(value)


LATEST_FORECASTS = "latest.parquet"
PLOTS = "plots"  # the folder of the plot stage's images
MODELS = "models"  # the folder of the train stage's model folders
PACKS = "packs"  # the folder of a stage's packs, inside the stage's folder
KEY_COLUMN = "_key"  # the column of a pack naming the output each row belongs to
_PACKS_KEPT = 4  # decoded packs kept per process (a chunk's stage reads the same pack for each series)


@dataclass(frozen=True)
class _Rows:
    """Rows `start:stop` of `table`, a table that holds many outputs of one stage one after another
    (`Store.write_tables`): an output held in a batch without a table of its own."""

    table: pd.DataFrame
    start: int
    stop: int

    def frame(self) -> pd.DataFrame:
        return self.table.iloc[self.start : self.stop].reset_index(drop=True)


@dataclass
class _Batch:
    """Outputs written inside `Store.batched()`, not yet on disk: stage -> key -> (frame or its rows of a
    shared table, metadata, when written in ns), and input key -> series key for `sources`."""

    tables: dict[str, dict[str, tuple[pd.DataFrame | _Rows, dict[str, Any] | None, int]]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    listed: dict[Path, frozenset[str]] = field(default_factory=dict)  # folder -> its names, as first listed
    indexes: dict[Path, dict[str, Path]] = field(default_factory=dict)  # pack folder -> its index, as first read


_batches: ContextVar[dict[Path, _Batch] | None] = ContextVar("lstm_forecast_store_batches", default=None)
# pack folder -> (its mtime in ns, output key -> the newest pack holding it, pack -> (its mtime in ns, its keys))
_pack_index: dict[Path, tuple[int, dict[str, Path], dict[Path, tuple[int, list[str]]]]] = {}
# (pack, mtime ns) -> (its table, output key -> row positions, output key -> metadata)
_pack_tables: OrderedDict[tuple[Path, int], tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]] = OrderedDict()


ChunkWork = list[tuple[ForecastConfig, dict[str, str], str]]  # a chunk function's series: (config, inputs' keys, key)


def by_store(work: ChunkWork) -> dict[str, list[int]]:
    """The positions in a chunk's `work` of the series of each store."""
    roots: dict[str, list[int]] = {}
    for index, (config, _, _) in enumerate(work):
        roots.setdefault(config.artifacts_dir, []).append(index)
    return roots


ChunkInputs = Mapping[str, tuple[str, tuple[str, ...]]]  # input argument -> (its stage, the columns needed)
# One series of a chunk: (store, config, inputs' keys, key, each input's columns) -> how to log what it wrote.
ChunkColumns = dict[str, dict[str, Any]]  # input argument -> its columns (a described input: its metadata)
SeriesOfChunk = Callable[["Store", ForecastConfig, dict[str, str], str, ChunkColumns], Callable[[], None]]


def each_series_of_chunk(
    work: ChunkWork, inputs: ChunkInputs, one: SeriesOfChunk, described: Mapping[str, str] | None = None
) -> list[Exception | None]:
    """A stage's chunk function: `one` for each series of `work`, given its inputs' columns, read once per pack
    for the whole chunk (`Store.read_columns`), and the metadata of its `described` inputs (input argument ->
    its stage), read once per pack too (`Store.read_metadata`). `one` writes the series' output and returns how
    to log it: only the first series logs. Returns, per series, None or the error it failed with (it fails
    alone)."""
    errors: list[Exception | None] = [None] * len(work)
    logged = False
    for root, indices in by_store(work).items():
        store = Store(root)
        read = {
            name: store.read_columns(stage, [work[i][1][name] for i in indices], columns)
            for name, (stage, columns) in inputs.items()
        }
        metadata = {
            name: store.read_metadata(stage, [work[i][1][name] for i in indices], missing_ok=True)
            for name, stage in (described or {}).items()
        }
        for index in indices:
            config, upstream, key = work[index]
            try:
                own = {
                    name: store.read_own_columns(stage, upstream[name], columns, read[name])
                    for name, (stage, columns) in inputs.items()
                }
                for name, stage in (described or {}).items():
                    found = metadata[name].get(upstream[name])
                    own[name] = found if found is not None else store.read_table_metadata(stage, upstream[name])
                log = one(store, config, upstream, key, own)
                if not logged:
                    log()
                    logged = True
            except Exception as error:  # reported per series: it fails alone
                errors[index] = error
    return errors


class ChunkTables:
    """A chunk's outputs of one table stage as columns (`Store.write_columns`), added series by series and
    written as one table per store when the chunk's series are done."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.outputs: dict[Path, list[tuple[str, Mapping[str, np.ndarray], dict[str, Any] | None]]] = {}

    def add(self, store: Store, key: str, columns: Mapping[str, np.ndarray], metadata: dict | None = None) -> None:
        self.outputs.setdefault(store.root, []).append((key, columns, metadata))

    def write(self, dtypes: Mapping[str, Any] | None = None) -> None:
        for root, outputs in self.outputs.items():
            Store(root).write_columns(self.stage, outputs, dtypes)


def pack_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Many outputs of one stage as one table: their rows in order, column `_key` naming each row's output.
    Columns of strings are held as categoricals (named in `attrs["strings"]`): Parquet writes and reads
    them as a dictionary, several times faster than a string per row (a pack holds millions of rows)."""
    packed = pd.concat(list(frames.values()), ignore_index=True)
    return packed_table(packed, list(frames), [len(frame) for frame in frames.values()])


def packed_table(packed: pd.DataFrame, keys: list[str], lengths: list[int]) -> pd.DataFrame:
    """`pack_table` of outputs already one after another in `packed` (modified in place), `lengths[i]` rows
    of output `keys[i]` each."""
    strings = [
        str(name)
        for name in packed.columns
        if packed[name].dtype == object and pd.api.types.infer_dtype(packed[name], skipna=False) == "string"
    ]
    for name in strings:
        packed[name] = packed[name].astype("category")
    packed.attrs["strings"] = strings
    categories = sorted({key for key, length in zip(keys, lengths, strict=True) if length})  # as astype("category")
    codes = np.repeat(np.searchsorted(categories, keys), lengths)
    packed[KEY_COLUMN] = pd.Categorical.from_codes(codes, categories=categories)
    return packed


def schema_groups(frames: Mapping[str, pd.DataFrame]) -> list[list[str]]:
    """The keys of `frames` grouped by column names and dtypes (one pack per group), in first-seen order."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for key, frame in frames.items():
        groups.setdefault(tuple((str(c), str(t)) for c, t in frame.dtypes.items()), []).append(key)
    return list(groups.values())


def _pack_tables_of(
    outputs: Mapping[str, tuple[pd.DataFrame | _Rows, dict[str, Any] | None, int]],
) -> Iterator[tuple[list[str], pd.DataFrame]]:
    """A batch's outputs of one stage as packs: (their keys, the pack's table). Outputs that are every row of
    one shared table, in order (`Store.write_tables`), are packed from it as it is; the rest by column layout."""
    shared: dict[int, list[tuple[str, _Rows]]] = {}
    for key, (held, _, _) in outputs.items():
        if isinstance(held, _Rows):
            shared.setdefault(id(held.table), []).append((key, held))
    whole: set[str] = set()
    for parts in shared.values():
        keys, rows = [key for key, _ in parts], [held for _, held in parts]
        table = rows[0].table
        in_order = all(a.stop == b.start for a, b in zip(rows, rows[1:], strict=False))
        if in_order and rows[0].start == 0 and rows[-1].stop == len(table):
            whole.update(keys)
            yield keys, packed_table(table.copy(deep=False), keys, [held.stop - held.start for held in rows])
    rest = {
        key: held.frame() if isinstance(held, _Rows) else held
        for key, (held, _, _) in outputs.items()
        if key not in whole
    }
    for keys in schema_groups(rest):
        yield keys, pack_table({key: rest[key] for key in keys})


def _column_kind(name: str, values: np.ndarray) -> tuple[str, str, str]:
    """A column's name, dtype and, for objects, its first value's type: columns of one kind concatenate."""
    first = type(values[0]).__name__ if values.dtype == object and len(values) else ""
    return name, values.dtype.str, first


def _consecutive(positions: np.ndarray) -> np.ndarray | slice:
    """Row positions (ascending) as a slice when they are consecutive, as an output's rows in its pack are: a
    view of a pack's column instead of a copy (a chunk takes one per series and column: about 30 times faster)."""
    if len(positions) and positions[-1] - positions[0] == len(positions) - 1:
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _read_only(values: np.ndarray) -> np.ndarray:
    """`values`, not writable: a view of a cached pack's column must not be changed through it."""
    values.flags.writeable = False
    return values


def _taken(table: pd.DataFrame, name: str, positions: np.ndarray) -> Any:
    """The values of column `name` of a pack's table at `positions`, strings as an object array (as written)."""
    column = table[name]
    if name in table.attrs.get("strings", ()):
        return column.cat.categories.to_numpy(dtype=object)[column.cat.codes.to_numpy()[positions]]
    return column.array.take(positions)


_READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)  # what writing to a store one may only read gives


class StoreNotWritableError(InputError):
    """A run needs to write in a store this process may only read (exit 2, with the fix)."""


# A panel's stages ask for a few hundred thousand paths and open a store per series: pathlib takes microseconds to
# build each path, and resolving a root takes system calls. Both are remembered (a relative root per working folder);
# the paths only as many as a few chunks ask for again, so that the cache stays a few MB whatever the panel.
@functools.lru_cache(maxsize=64)
def _resolved_root(root: str, working_folder: str) -> Path:
    return Path(root).expanduser().resolve()


@functools.lru_cache(maxsize=8192)
def _output_path(root: Path, stage: str, key: str) -> Path:
    output = STAGE[stage].output
    if output == "model":
        return root / MODELS / key
    if output == "image":
        return root / PLOTS / f"{key}.png"
    return root / stage / f"{key}.parquet"


@functools.lru_cache(maxsize=256)
def _packs_path(root: Path, stage: str) -> Path:
    return root / stage / PACKS


class Store:
    """Paths and atomic reads/writes under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = _resolved_root(str(root), os.getcwd())

    # --- paths --------------------------------------------------------------
    def path(self, stage: str, key: str) -> Path:
        """Where `stage`'s output for `key` lives (a folder for `train`)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if not _is_stage_key(key):
            raise ValueError(f"invalid store key {key!r}")
        return _output_path(self.root, stage, key)

    def holds_models(self) -> bool:
        """Whether any model folder is in the store (a first run into it will train)."""
        with contextlib.suppress(OSError):
            return any(not entry.name.startswith(".") for entry in os.scandir(self.root / MODELS))
        return False

    def thumbnail_path(self, key: str) -> Path:
        return self.path("plot", key).with_suffix(".small.png")

    def forecast_path(self, key: str, suffix: str) -> Path:
        if not _is_stage_key(key) or suffix not in (".parquet", ".png"):
            raise ValueError(f"invalid forecast name {key!r}{suffix!r}")
        return self.root / "forecasts" / f"{key}{suffix}"

    def forecast_table_path(self, key: str) -> Path:
        """A forecast table of every series (`operations/ahead.py`), kept by its key."""
        return self.forecast_path(key, ".parquet")

    @property
    def latest_forecasts_path(self) -> Path:
        """The table the last retraining published: replaced whole, never written in place."""
        return self.root / "forecasts" / LATEST_FORECASTS

    def calibration_path(self, model_key: str) -> Path:
        """A model's interval half-widths per series and step (from the forecast rows of its run)."""
        if not _is_stage_key(model_key):
            raise ValueError(f"invalid model key {model_key!r}")
        return self.root / "forecasts" / "calibration" / f"{model_key}.parquet"

    def unscored_series_path(self, model_key: str) -> Path:
        """The series a global model's last run forecast without scoring them (`write_unscored_series`)."""
        if not _is_stage_key(model_key):
            raise ValueError(f"invalid model key {model_key!r}")
        return self.root / "forecasts" / "unscored" / f"{model_key}.parquet"

    def source_path(self, key: str) -> Path:
        """Which series an input file's contents gave (`generate` keys its output by the series itself)."""
        if not _is_stage_key(key):
            raise ValueError(f"invalid source key {key!r}")
        return self.root / "sources" / f"{key}.json"

    def summary_path(self, key: str) -> Path:
        if not _is_stage_key(key):
            raise ValueError(f"invalid summary name {key!r}")
        return self.root / "summaries" / f"{key}.parquet"

    def tuning_path(self, key: str, suffix: str) -> Path:
        if not _is_stage_key(key) or suffix not in (".parquet", ".yaml"):
            raise ValueError(f"invalid tuning name {key!r}{suffix!r}")
        return self.root / "tuning" / f"{key}{suffix}"

    @property
    def plots_dir(self) -> Path:
        return self.root / PLOTS

    def registration_path(self, key: str) -> Path:
        """One registered model's entry (`registrations/<key>.json`): the registry is rebuilt from these."""
        if not _is_stage_key(key):
            raise ValueError(f"invalid model key {key!r}")
        return self.root / "registrations" / f"{key}.json"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.parquet"

    @property
    def decisions_path(self) -> Path:
        return self.root / "decisions.parquet"

    @property
    def records_dir(self) -> Path:
        return self.root / "_prefect" / "records"

    @property
    def locks_dir(self) -> Path:
        return self.root / "_prefect" / "locks"

    # --- validity -----------------------------------------------------------
    def is_complete(self, stage: str, key: str) -> bool:
        """True when the output exists and its structure reads back (in its own file, a pack, or the
        current batch); damaged files are removed."""
        path = self.path(stage, key)
        output = STAGE[stage].output
        if not (self._has_own_file(path) if output == "table" else path.exists()):
            batch = self._batch()
            if batch is not None and key in batch.tables.get(stage, {}):
                return True
            return output == "table" and self._in_pack(self._packs_dir(stage), key) is not None
        try:
            if output == "model":
                json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
                for name in (MODEL_FILE, FORECASTER_FILE, MODEL_ARRAYS_FILE, FORECASTER_ARRAYS_FILE):
                    if name != MODEL_FILE and not (path / name).exists():
                        continue  # a model folder written before forecasters (or arrays) existed
                    with zipfile.ZipFile(path / name) as archive:
                        if archive.testzip() is not None:
                            raise zipfile.BadZipFile("corrupt member")
            elif output == "image":
                if path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
                    raise ValueError("not a PNG file")
            else:
                pq.read_metadata(path)
        except Exception as error:  # any damage means: rebuild
            log.warning("store: %s is damaged (%s); it will be rebuilt", path, error)
            self.discard(stage, key)
            return False
        return True

    def written_at(self, stage: str, key: str) -> int | None:
        """When an output was written (ns since the epoch), or None if it is absent."""
        batch = self._batch()
        if batch is not None and key in batch.tables.get(stage, {}):
            return batch.tables[stage][key][2]
        path = self.location(stage, key)
        if STAGE[stage].output == "model":
            path = path / METADATA_FILE
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None

    def is_older_than_inputs(self, stage: str, key: str, inputs: Mapping[str, str | list[str]]) -> bool:
        """True when an input named in `INPUT_STAGES` was written after this output (it was rebuilt)."""
        written = self.written_at(stage, key)
        if written is None:
            return False
        for name, input_keys in inputs.items():  # a global model's inputs are lists of keys, one per series
            if name not in INPUT_STAGES:
                continue  # not another stage's output (a global model's series ids)
            for input_key in [input_keys] if isinstance(input_keys, str) else input_keys:
                input_written = self.written_at(INPUT_STAGES[name], input_key)
                if input_written is not None and input_written > written:
                    return True
        return False

    def records_folder(self) -> Path:
        """`_prefect/records`, where Prefect keeps its cache records (created); `InputError` if it, or a
        folder above it in the store, is a symbolic link: Prefect would write the records wherever it points."""
        self._make_folder(self.records_dir)
        return self.records_dir

    def drop_failure_records(self) -> None:
        """Remove what Prefect saved of failed attempts: records not named by a stage key (never through a
        symbolic link: that would remove files outside the store)."""
        if self._link_in(self.records_dir) is not None or not self.records_dir.is_dir():
            return
        for record in self.records_dir.iterdir():
            if not _is_stage_key(record.name):
                record.unlink(missing_ok=True)

    def discard(self, stage: str, key: str) -> None:
        """Remove a stage output and its Prefect cache record."""
        path = self.path(stage, key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if STAGE[stage].output == "image":
            self.thumbnail_path(key).unlink(missing_ok=True)
        self.drop_record(key)

    def drop_record(self, key: str) -> None:
        """Remove the Prefect cache record of `key` (a miss: the stage runs again), never through a link."""
        if self._link_in(self.records_dir) is None:
            (self.records_dir / key).unlink(missing_ok=True)

    # --- sources --------------------------------------------------------------
    def write_source(self, key: str, series_key: str) -> Path:
        """Record that the input behind `key` (a file digest and its settings) gave series `series_key`."""
        if not _is_stage_key(series_key):
            raise ValueError(f"invalid series key {series_key!r}")
        path = self.source_path(key)
        batch = self._batch()
        if batch is not None:
            batch.sources[key] = series_key
            return path
        return self._write_bytes(path, json.dumps({"series": series_key}).encode())

    def read_source(self, key: str) -> str | None:
        """The series key recorded for input `key`, or None when there is none (or it is unreadable)."""
        path = self.source_path(key)
        batch = self._batch()
        try:
            if batch is not None and key in batch.sources:
                series_key = batch.sources[key]
            elif not self._has_own_file(path) and (pack := self._in_pack(self._sources_packs_dir, key)) is not None:
                table, rows, _ = self._read_pack(pack)
                series_key = table["series"].iloc[rows[key][-1]]
            else:
                series_key = json.loads(path.read_text(encoding="utf-8"))["series"]
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None
        return series_key if isinstance(series_key, str) and _is_stage_key(series_key) else None

    # --- tables -------------------------------------------------------------
    def write_table(self, stage: str, key: str, frame: pd.DataFrame, metadata: dict[str, Any] | None = None) -> Path:
        """Write a DataFrame as Parquet, with optional JSON metadata in the file's schema (inside
        `batched()`: held until the batch ends, then written in its stage's pack)."""
        path = self.path(stage, key)
        batch = self._batch()
        if batch is not None:
            batch.tables.setdefault(stage, {})[key] = (frame, metadata, time.time_ns())
            return path
        return self._write_bytes(path, _parquet_bytes(frame, metadata))

    def write_tables(
        self,
        stage: str,
        keys: list[str],
        table: pd.DataFrame,
        lengths: list[int],
        metadata: list[dict[str, Any] | None] | None = None,
    ) -> None:
        """Many outputs of a table stage at once: `lengths[i]` rows of `table`, in order, are output `keys[i]`,
        with `metadata[i]` if given. Inside `batched()` the table is held whole and becomes the chunk's pack as it
        is, with no table per output; outside, each output is written on its own."""
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
        if len(table) != bounds[-1] or len(keys) != len(lengths):
            raise ValueError(f"{len(keys)} outputs of {bounds[-1]} rows in all given {len(table)} rows")
        batch = self._batch()
        described = metadata or [None] * len(keys)
        for key, start, stop, own in zip(keys, bounds[:-1], bounds[1:], described, strict=True):
            rows = _Rows(table, int(start), int(stop))
            if batch is None:
                self.write_table(stage, key, rows.frame(), metadata=own)
            else:
                batch.tables.setdefault(stage, {})[key] = (rows, own, time.time_ns())

    def write_columns(
        self,
        stage: str,
        outputs: list[tuple[str, Mapping[str, np.ndarray], dict[str, Any] | None]],
        dtypes: Mapping[str, Any] | None = None,
    ) -> None:
        """Many outputs of a table stage given as columns, each `(key, its columns, its metadata)`: one table for
        all those whose columns have the same names and kinds (`write_tables`), its columns cast to `dtypes`
        where given."""
        groups: dict[tuple[tuple[str, str, str], ...], list[int]] = {}
        for index, (_, columns, _) in enumerate(outputs):
            groups.setdefault(tuple(_column_kind(name, np.asarray(v)) for name, v in columns.items()), []).append(index)
        for indices in groups.values():
            group = [outputs[index] for index in indices]
            names = list(group[0][1])
            table = pd.DataFrame(
                {name: np.concatenate([np.asarray(columns[name]) for _, columns, _ in group]) for name in names},
                copy=False,  # new arrays: a copy of a chunk's millions of rows would be waste
            )
            for name, dtype in (dtypes or {}).items():
                if table[name].dtype != dtype:
                    table[name] = table[name].astype(dtype)
            lengths = [len(columns[names[0]]) for _, columns, _ in group]
            self.write_tables(stage, [key for key, _, _ in group], table, lengths, [own for _, _, own in group])

    def read_table(self, stage: str, key: str) -> pd.DataFrame:
        batch = self._batch()
        if batch is not None and key in batch.tables.get(stage, {}):
            held = batch.tables[stage][key][0]
            return held.frame() if isinstance(held, _Rows) else held.copy()
        path = self.path(stage, key)
        if path.exists() or (pack := self._pack_of(self._packs_dir(stage), key)) is None:
            return pq.read_table(path).to_pandas()  # absent from every pack: FileNotFoundError
        table, rows, _ = self._read_pack(pack)
        positions = rows[key]  # each column taken on its own: a third faster than a row slice less the key
        return pd.DataFrame({name: _taken(table, name, positions) for name in table.columns if name != KEY_COLUMN})

    def read_table_metadata(self, stage: str, key: str) -> dict[str, Any]:
        batch = self._batch()
        if batch is not None and key in batch.tables.get(stage, {}):
            return dict(batch.tables[stage][key][1] or {})
        path = self.path(stage, key)
        if path.exists() or (pack := self._pack_of(self._packs_dir(stage), key)) is None:
            schema_metadata = pq.read_schema(path).metadata or {}
            return footer_json(schema_metadata.get(_METADATA_KEY, b"{}"))
        return dict(self._read_pack(pack)[2].get(key) or {})

    def read_metadata(self, stage: str, keys: list[str], missing_ok: bool = False) -> dict[str, dict[str, Any]]:
        """The metadata of many outputs of a table stage (`read_table_metadata` of each): for those in packs,
        one look at the stage's folder and each pack's footer read once, not its table (a chunk wants the
        metadata of a thousand outputs, and per output the look-ups cost about 80 us). `missing_ok`: outputs
        that are in no pack are left out (the caller reads them on its own, as a single read reports what is
        missing), else each is read on its own."""
        in_packs = self._in_packs(stage, list(dict.fromkeys(keys)))
        footers: dict[Path, dict[str, Any]] = {}
        found: dict[str, dict[str, Any]] = {}
        for key in keys:
            pack = in_packs.get(key)
            if pack is None:
                if not missing_ok:
                    found[key] = self.read_table_metadata(stage, key)
                continue
            if pack not in footers:
                footers[pack] = self._pack_metadata(pack)
            found[key] = dict(footers[pack].get(key) or {})
        return found

    def future_values(self, series_key: str) -> dict[str, list[float]] | None:
        """The future columns' values after a generated series (its metadata `future`), or None."""
        return self.read_table_metadata("generate", series_key).get("future")

    def read_tables(
        self,
        stage: str,
        keys: list[str],
        where: Mapping[str, Any] | None = None,
        columns: tuple[str, ...] | None = None,
    ) -> pd.DataFrame:
        """Many outputs of a table stage as one table, column `_key` naming each row's output (in the order
        of `keys`): each pack is read once, not once per output. `where`: only the rows whose columns equal
        these values, or one of a tuple's (taken before the outputs are put together, so the result stays small).
        `columns`: only these columns (and `_key`), the others not read from a pack that is not read already.

        Raises:
            FileNotFoundError: an output that is in no file, pack or batch.
        """

        def matching(frame: pd.DataFrame) -> np.ndarray:
            mask = np.ones(len(frame), dtype=bool)
            for column, value in (where or {}).items():
                mask &= (frame[column].isin(value) if isinstance(value, tuple) else frame[column] == value).to_numpy()
            return mask

        def kept(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[matching(frame)] if where else frame

        def chosen(frame: pd.DataFrame) -> pd.DataFrame:
            return frame if columns is None else frame[[*columns, KEY_COLUMN]]

        def as_text(frame: pd.DataFrame, strings: list[str]) -> pd.DataFrame:
            """`frame` with its text columns (those of a pack's `strings` it holds) as Python strings."""
            return frame.astype(dict.fromkeys([name for name in strings if name in frame], object))

        wanted = pd.Index(keys)
        parts: list[pd.DataFrame] = []
        by_pack: dict[Path, list[str]] = {}
        in_packs = self._in_packs(stage, keys)
        for key in keys:
            pack = in_packs.get(key)
            if pack is None:
                parts.append(chosen(kept(self.read_table(stage, key)).assign(**{KEY_COLUMN: key})))
            else:
                by_pack.setdefault(pack, []).append(key)
        for pack, pack_keys in by_pack.items():
            if where and not self._pack_is_read(pack):  # only the rows `where` keeps are read and converted
                part = self._read_pack_rows(pack, where, None if columns is None else (*columns, KEY_COLUMN))
                if len(pack_keys) < part[KEY_COLUMN].nunique():
                    part = part[part[KEY_COLUMN].isin(pack_keys).to_numpy()]
                parts.append(as_text(part, part.attrs.get("strings", [])))
                continue
            table, rows, _ = self._read_pack(pack)
            if len(pack_keys) == len(rows):  # every output of the pack: no rows to pick (a run reads them all)
                part = kept(table)
            else:  # the rows `where` keeps picked first: a pack holds millions of rows, a run wants a few
                positions = np.sort(np.concatenate([rows[key] for key in pack_keys]))
                part = table.iloc[positions[matching(table)[positions]] if where else positions]
            parts.append(as_text(chosen(part), table.attrs.get("strings", [])))
        if not parts:
            return pd.DataFrame({KEY_COLUMN: pd.Series([], dtype=str)})
        combined = pd.concat(parts, ignore_index=True)
        combined[KEY_COLUMN] = pd.Categorical(combined[KEY_COLUMN].astype(str), categories=wanted.unique())
        return combined.sort_values(KEY_COLUMN, kind="stable", ignore_index=True)

    def read_columns(self, stage: str, keys: list[str], columns: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
        """Some columns of the outputs of a table stage that lie in packs, each pack read once: key -> column ->
        that output's values in its row order. Outputs elsewhere (their own file, the current batch) or
        nowhere are left out: a chunk's series read those on their own (`read_own_columns`), which reports
        what is missing as a single read does."""
        by_pack: dict[Path, list[str]] = {}
        for key, pack in self._in_packs(stage, list(dict.fromkeys(keys))).items():
            by_pack.setdefault(pack, []).append(key)
        read: dict[str, dict[str, np.ndarray]] = {}
        for pack, pack_keys in by_pack.items():
            try:
                table, rows, _ = self._read_pack(pack)
                arrays = {name: table[name].to_numpy() for name in columns}
            except (OSError, KeyError, pa.ArrowException):
                continue  # read on their own, each reports what is wrong
            for key in pack_keys:
                rows_of_key = _consecutive(rows[key])
                read[key] = {name: _read_only(values[rows_of_key]) for name, values in arrays.items()}
        return read

    def read_own_columns(
        self, stage: str, key: str, columns: tuple[str, ...], read: Mapping[str, dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """One output's columns: from a chunk's `read_columns` when it is there, else read on its own."""
        if key in read:
            return read[key]
        table = self.read_table(stage, key)
        return {name: table[name].to_numpy() for name in columns}

    def location(self, stage: str, key: str) -> Path:
        """The file (or model folder) that holds an output: its own, or the pack it was written in."""
        return self.locations(stage, [key])[key]

    def locations(self, stage: str, keys: list[str]) -> dict[str, Path]:
        """`location` of many outputs of one stage: a table in a pack is found in the folder's index (its own
        file, if it also has one, holds the same content: a key names it), the others by their own path."""
        if STAGE[stage].output != "table":
            return {key: self.path(stage, key) for key in keys}
        index = self._packs_index(self._packs_dir(stage))  # once: a lookup each stats the folder
        return {key: index.get(key) or self.path(stage, key) for key in keys}

    # --- batches and packs ------------------------------------------------------
    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Hold every table output and source record written inside it in memory (readable as if
        written), then write them as one pack per stage when it ends without an error. An error
        leaves the store as it was; nested, the outer batch writes."""
        current = _batches.get() or {}
        if self.root in current:
            yield
            return
        batch = _Batch()
        token = _batches.set({**current, self.root: batch})
        try:
            yield
        finally:
            _batches.reset(token)
        self.write_batch(batch)

    def _batch(self) -> _Batch | None:
        return (_batches.get() or {}).get(self.root)

    def write_batch(self, batch: _Batch) -> list[Path]:
        """Write a batch's outputs: one pack per stage (per column layout), then its sources' pack."""
        written = []
        for stage, outputs in batch.tables.items():
            for keys, table in _pack_tables_of(outputs):
                metadata = {
                    "keys": keys,
                    "metadata": {k: outputs[k][1] for k in keys if outputs[k][1] is not None},
                    "strings": table.attrs["strings"],
                }
                written.append(self._write_pack(self._packs_dir(stage), keys, _parquet_bytes(table, metadata)))
        if batch.sources:
            keys = list(batch.sources)
            table = pd.DataFrame({KEY_COLUMN: keys, "series": [batch.sources[k] for k in keys]})
            written.append(self._write_pack(self._sources_packs_dir, keys, _parquet_bytes(table, {"keys": keys})))
        return written

    def _write_pack(self, folder: Path, keys: list[str], data: bytes) -> Path:
        path = self._write_bytes(folder / f"{fingerprint('pack', keys, bytes_digest(data))}.parquet", data)
        if (known := _pack_index.get(folder)) is not None:  # looked at again even within the folder's mtime tick
            _pack_index[folder] = (-1, *known[1:])
        return path

    def _packs_dir(self, stage: str) -> Path:
        return _packs_path(self.root, stage)

    @property
    def _sources_packs_dir(self) -> Path:
        return self.root / "sources" / PACKS

    def _has_own_file(self, path: Path) -> bool:
        """Whether a table output's or a source record's own file `path` exists. Inside a batch, from one listing of
        its folder per batch: a chunk asks about a thousand outputs that do not exist yet, and these files are
        written only outside batches (a batch writes packs when it ends)."""
        batch = self._batch()
        if batch is None:
            return path.exists()
        names = batch.listed.get(path.parent)
        if names is None:
            try:
                names = frozenset(entry.name for entry in os.scandir(path.parent))
            except OSError:
                names = frozenset()
            batch.listed[path.parent] = names
        return path.name in names

    def _in_pack(self, folder: Path, key: str) -> Path | None:
        """`_pack_of`; inside a batch, from the folder's index as the batch first read it: a chunk asks about its
        own series, whose outputs no other task writes meanwhile, and their inputs' packs were written before
        its task began."""
        batch = self._batch()
        if batch is None:
            return self._pack_of(folder, key)
        index = batch.indexes.get(folder)
        if index is None:
            index = batch.indexes[folder] = self._packs_index(folder)
        return index.get(key)

    def _pack_of(self, folder: Path, key: str) -> Path | None:
        """The newest pack in `folder` holding output `key`, or None."""
        return self._packs_index(folder).get(key)

    def _packs_index(self, folder: Path) -> dict[str, Path]:
        """Output key -> the newest pack in `folder` holding it. The index (the keys in each pack's footer) is
        kept per process until the folder changes; then only the packs not read before are read (a pack never
        changes under its name): the chunks of a stage each look for their outputs while the others add packs,
        and reading every footer again each time grew with the square of the number of chunks."""
        try:
            changed = folder.stat().st_mtime_ns
        except OSError:
            return {}
        known = _pack_index.get(folder)
        if known is None or known[0] != changed:
            read = known[2] if known is not None else {}
            packs: dict[Path, tuple[int, list[str]]] = {}
            for pack in folder.glob("*.parquet"):
                try:
                    written = pack.stat().st_mtime_ns
                except OSError:
                    continue
                if pack in read and read[pack][0] == written:
                    packs[pack] = read[pack]
                    continue
                try:
                    packs[pack] = (written, _pack_keys(pq.read_schema(pack).metadata or {}))
                except Exception as error:  # a damaged pack holds nothing: its outputs are rebuilt
                    log.warning("store: pack %s is damaged (%s); it is removed", pack, type(error).__name__)
                    pack.unlink(missing_ok=True)
            index: dict[str, Path] = {}
            for pack, (_, keys) in sorted(packs.items(), key=lambda item: (item[1][0], item[0])):
                index.update(dict.fromkeys(keys, pack))
            known = _pack_index[folder] = (changed, index, packs)
        return known[1]

    def _in_packs(self, stage: str, keys: list[str]) -> dict[str, Path]:
        """The pack of each of `keys` read from a pack: not held in the current batch, without a file of its
        own, and in a pack of the stage's folder. One listing of the folder and one look at its packs for all
        of them: a chunk asks for a thousand outputs at once."""
        batch = self._batch()
        held = batch.tables.get(stage, {}) if batch is not None else {}
        folder = self.root / stage
        try:
            own = {entry.name for entry in os.scandir(folder)}
        except OSError:
            own = set()
        index = self._packs_index(self._packs_dir(stage))
        found: dict[str, Path] = {}
        for key in keys:
            if key not in held and f"{key}.parquet" not in own and (pack := index.get(key)) is not None:
                found[key] = pack
        return found

    @staticmethod
    def _pack_is_read(pack: Path) -> bool:
        """True when `_read_pack` holds the pack's current table."""
        return (pack, pack.stat().st_mtime_ns) in _pack_tables

    @staticmethod
    def _read_pack_rows(pack: Path, where: Mapping[str, Any], columns: tuple[str, ...] | None = None) -> pd.DataFrame:
        """The rows of a pack whose columns equal `where`'s values (one of a tuple's), filtered as the file is read
        (not cached); `columns`: only these."""
        filters = [(c, "in", list(v)) if isinstance(v, tuple) else (c, "=", v) for c, v in where.items()]
        table = pq.read_table(pack, columns=None if columns is None else list(columns), filters=filters)
        footer = footer_json((table.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
        frame = table.to_pandas()
        frame.attrs["strings"] = footer.get("strings", [])
        return frame

    @staticmethod
    def _pack_metadata(pack: Path) -> dict[str, Any]:
        """Each output's metadata in a pack (output key -> metadata): from `_read_pack`'s cache when it holds the
        pack, else from the file's footer alone."""
        cache_key = (pack, pack.stat().st_mtime_ns)
        if cache_key in _pack_tables:
            return _pack_tables[cache_key][2]
        footer = footer_json((pq.read_schema(pack).metadata or {}).get(_METADATA_KEY, b"{}"))
        return footer.get("metadata", {})

    @staticmethod
    def _read_pack(pack: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]:
        """A pack's table, the row positions of each output in it, and each output's metadata (cached)."""
        cache_key = (pack, pack.stat().st_mtime_ns)
        if cache_key in _pack_tables:
            _pack_tables.move_to_end(cache_key)
            return _pack_tables[cache_key]
        table = pq.read_table(pack)
        footer = footer_json((table.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
        metadata = footer.get("metadata", {})
        frame = table.to_pandas()
        frame.attrs["strings"] = footer.get("strings", [])  # held as categoricals, read back as strings
        rows = {str(key): positions for key, positions in frame.groupby(KEY_COLUMN, observed=True).indices.items()}
        _pack_tables[cache_key] = (frame, rows, metadata)
        while len(_pack_tables) > _PACKS_KEPT:
            _pack_tables.popitem(last=False)
        return frame, rows, metadata

    # --- models and plots ---------------------------------------------------
    def write_model(self, key: str, save_models: Callable[[Path], None], metadata: dict[str, Any]) -> Path:
        """Save a model folder atomically: `save_models(folder)` writes `model.keras` (and maybe
        `forecaster.keras`) into a temp folder."""
        final = self.path("train", key)
        self._make_folder(final.parent)
        with self._writing(final):
            if final.is_symlink():
                final.unlink()
            staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            os.chmod(staging, _folder_mode())
            save_models(staging)
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1, default=str), encoding="utf-8")
            if final.exists():  # being rebuilt: move the old folder aside, then swap the new one in
                retired = Path(tempfile.mkdtemp(prefix=f".{key}.old.", dir=final.parent))
                os.replace(final, retired / key)
                os.replace(staging, final)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def model_file(self, key: str) -> Path:
        return self.path("train", key) / MODEL_FILE

    def forecaster_file(self, key: str) -> Path:
        return self.path("train", key) / FORECASTER_FILE

    def arrays_file(self, network_file: Path) -> Path:
        """The numpy arrays file of a model folder's network file (`model_file` or `forecaster_file`)."""
        return network_file.with_name(MODEL_ARRAYS_FILE if network_file.name == MODEL_FILE else FORECASTER_ARRAYS_FILE)

    def read_model_metadata(self, key: str) -> dict[str, Any]:
        return json.loads((self.path("train", key) / METADATA_FILE).read_text(encoding="utf-8"))

    def write_png(self, key: str, png: bytes, thumbnail: bytes | None = None) -> Path:
        if thumbnail is not None:
            self._write_bytes(self.thumbnail_path(key), thumbnail)
        return self._write_bytes(self.path("plot", key), png)

    def write_forecast_table(self, key: str, table: pd.DataFrame) -> Path:
        return self._write_bytes(self.forecast_table_path(key), _parquet_bytes(table))

    def write_forecast_plot(self, key: str, png: bytes) -> Path:
        return self._write_bytes(self.forecast_path(key, ".png"), png)

    def publish_latest_forecasts(self, key: str) -> Path:
        """Make the table kept under `key` the latest (`latest.parquet`): a copy renamed over the old one,
        so a reader opens the previous table or this one, whole, never a part."""
        return self._write_bytes(self.latest_forecasts_path, self.forecast_table_path(key).read_bytes())

    def write_calibration(self, model_key: str, widths: pd.DataFrame) -> Path:
        return self._write_bytes(self.calibration_path(model_key), _parquet_bytes(widths))

    def read_calibration(self, model_key: str) -> pd.DataFrame | None:
        """A model's interval half-widths (`write_calibration`), or None when no run of it kept them."""
        path = self.calibration_path(model_key)
        return pd.read_parquet(path) if path.exists() else None

    def write_unscored_series(self, model_key: str, frames: Mapping[str, pd.DataFrame]) -> Path:
        """Replace the series a run of the global model `model_key` forecast without scoring them (id -> its rows
        `ds, y` and covariate columns, `attrs["future"]` the future columns' values after them, if any): one
        long table (`unique_id` first), the future values in its footer. An empty mapping leaves an empty table."""
        parts = [frame.assign(unique_id=series_id) for series_id, frame in frames.items()]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"ds": [], "y": []}).assign(unique_id="")
        table = table.loc[:, ["unique_id", *(c for c in table.columns if c != "unique_id")]]
        future = {i: f.attrs.get("future") for i, f in frames.items() if f.attrs.get("future") is not None}
        return self._write_bytes(self.unscored_series_path(model_key), _parquet_bytes(table, {"future": future}))

    def read_unscored_series(self, model_key: str, series_ids: list[str] | None = None) -> dict[str, pd.DataFrame]:
        """`write_unscored_series`' frames (those of `series_ids`, or all), each with `attrs["future"]` (None when
        its model reads no future columns); empty when no run of the model kept any."""
        path = self.unscored_series_path(model_key)
        if not path.exists():
            return {}
        table = pq.read_table(path)
        future = footer_json((table.schema.metadata or {}).get(_METADATA_KEY, b"{}")).get("future", {})
        frame = table.to_pandas()
        wanted = None if series_ids is None else set(series_ids)
        found = {}
        for series_id, rows in frame.groupby("unique_id", sort=False):
            if wanted is None or series_id in wanted:
                found[str(series_id)] = rows.drop(columns="unique_id").reset_index(drop=True)
                found[str(series_id)].attrs["future"] = future.get(str(series_id))
        return found

    def unscored_series_ids(self, model_key: str) -> list[str]:
        """The ids of `read_unscored_series` (reads that column alone)."""
        path = self.unscored_series_path(model_key)
        if not path.exists():
            return []
        return [str(i) for i in dict.fromkeys(pq.read_table(path, columns=["unique_id"]).column(0).to_pylist())]

    def write_summary(self, key: str, frame: pd.DataFrame) -> Path:
        return self._write_bytes(self.summary_path(key), _parquet_bytes(frame))

    def write_tuning(self, key: str, trials: pd.DataFrame, best_config_yaml: str) -> tuple[Path, Path]:
        table = self._write_bytes(self.tuning_path(key, ".parquet"), _parquet_bytes(trials))
        return table, self._write_bytes(self.tuning_path(key, ".yaml"), best_config_yaml.encode())

    # --- registry -----------------------------------------------------------
    @contextlib.contextmanager
    def registry_lock(self) -> Iterator[None]:
        """Hold an exclusive lock for a read-modify-write of the registry (across processes)."""
        handle = self.open_lock("registry.lock")
        if handle < 0:  # a store this process cannot write, without the lock file: nothing to exclude
            yield
            return
        try:
            if not self.hold_lock(handle, "registry.lock", "registry", REGISTRY_LOCK_TIMEOUT_S):
                raise self.lock_timeout("registry.lock", handle, REGISTRY_LOCK_TIMEOUT_S)
            yield
        finally:
            os.close(handle)  # closing releases the flock

    def read_registry(self) -> pd.DataFrame | None:
        """The registry file, or None when there is none. One that does not read back is moved aside
        (logged) and reads as none (`operations/registry.py: load_registry` rebuilds it)."""
        return self._read_or_set_aside(self.registry_path)

    def _read_or_set_aside(self, path: Path) -> pd.DataFrame | None:
        if not path.exists():
            return None
        try:
            return pq.read_table(path).to_pandas()
        except (OSError, pa.ArrowException) as error:
            self.set_aside(path, f"did not read back ({type(error).__name__})")
            return None

    def set_aside(self, path: Path, why: str) -> None:
        """Move a damaged file of the store aside (`<name>.damaged-<time>`, never over an earlier one) and log
        `why`; on a read-only store it stays where it is (logged)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        for number in range(2, 1000):
            if not aside.exists():
                break
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{number}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:  # another process set it aside first
            return
        except OSError as error:
            log.warning("store: %s %s; it cannot be moved aside (%s)", path, why, error.strerror)
            return
        log.warning("store: %s %s; moved to %s", path, why, aside.name)

    def write_registry(self, registry: pd.DataFrame) -> Path:
        return self._write_bytes(self.registry_path, _parquet_bytes(registry))

    def read_decisions(self) -> pd.DataFrame | None:
        return self._read_or_set_aside(self.decisions_path)

    def write_registration(self, entry: dict[str, Any]) -> Path:
        return self._write_bytes(self.registration_path(entry["key"]), json.dumps(entry, default=str).encode())

    def read_registration(self, key: str) -> dict[str, Any] | None:
        """A registered model's entry, or None when it is absent, does not read back or is not a mapping of
        this key (`operations/registry.py` checks its fields)."""
        try:
            entry = json.loads(self.registration_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def read_registrations(self, quiet: bool = False) -> list[dict[str, Any]]:
        """Every registered model's entry (one that does not read back, or is not a mapping of its file's key,
        is left out, and logged unless `quiet`)."""
        folder = self.registration_path("0" * KEY_LENGTH).parent
        entries = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            entry = self.read_registration(path.stem) if _is_stage_key(path.stem) else None
            if entry is None:
                if not quiet:
                    log.warning("store: registration %s is not a model's entry; left out", path)
            else:
                entries.append(entry)
        return entries

    def write_decisions(self, decisions: pd.DataFrame) -> Path:
        return self._write_bytes(self.decisions_path, _parquet_bytes(decisions))

    # --- locks --------------------------------------------------------------
    def open_lock(self, name: str, create: bool = True) -> int:
        """A descriptor on lock file `name` under `_prefect/locks/` (created unless `create` is False,
        then -1 when absent). A symbolic link there is refused, never followed.

        In a store this process may only read (file modes, a read-only mount) an existing lock file is opened
        for reading, which `flock` takes all the same (a writer computing the output is waited for; the
        holder's name is not written), and a missing one is not created: -1, no lock. Such a run can only
        read outputs, and outputs are replaced atomically: it needs no lock of its own."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"invalid lock name {name!r}")
        path = self.locks_dir / name
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            self._make_folder(self.locks_dir)
            return os.open(path, flags, _file_mode())
        except StoreNotWritableError:
            pass  # no locks folder, and none can be made
        except FileNotFoundError:
            if create:
                raise
            return -1
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise self._linked_lock(path) from error
            if error.errno not in _READ_ONLY_ERRNOS:
                raise
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return -1
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise self._linked_lock(path) from error
            raise

    @staticmethod
    def _linked_lock(path: Path) -> InputError:
        return InputError(f"the lock file {path} is a symbolic link", "remove it: the store never follows links")

    @staticmethod
    def is_writable_lock(handle: int) -> bool:
        """False for what `open_lock` gives in a store this process may only read (-1, or a file opened for
        reading)."""
        return handle >= 0 and fcntl.fcntl(handle, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR

    def hold_lock(self, handle: int, name: str, holder: str, timeout: float | None) -> bool:
        """Take the exclusive `flock` on an open lock file, waiting while another process (or thread)
        holds it: the wait is logged with the holder's name; False after `timeout` seconds (None:
        no limit). The kernel releases the lock when its holder's process ends, however it ends."""
        started = time.monotonic()
        notice = started + _LOCK_FIRST_NOTICE_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            now = time.monotonic()
            if timeout is not None and now - started >= timeout:
                return False
            if now >= notice:
                log.warning("store: waiting for %s, held by %s", name, self.lock_holder(handle))
                notice = now + _LOCK_NOTICE_EVERY_S
            time.sleep(_LOCK_POLL_S)
        about = {"holder": holder, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        if self.is_writable_lock(handle):  # else opened for reading: a store this process may only read
            os.ftruncate(handle, 0)
            os.pwrite(handle, json.dumps(about).encode(), 0)
        return True

    @staticmethod
    def lock_holder(handle: int) -> str:
        """Who wrote the lock file last (its holder while it is held), in words."""
        try:
            about = json.loads(os.pread(handle, 4096, 0))
            since = time.strftime("%H:%M:%S", time.localtime(float(about["since"])))
            return f"process {int(about['pid'])} on {shown(about['host'], 64)} since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def lock_timeout(self, name: str, handle: int, timeout: float) -> InputError:
        return InputError(
            f"{name} in {self.locks_dir} is still held by {self.lock_holder(handle)} after {timeout:g} s",
            "wait for that run to finish or stop it, then rerun (a config's lock_timeout_s sets the wait)",
        )

    # --- cache records ----------------------------------------------------------
    def check_record(self, key: str) -> None:
        """Remove the Prefect cache record of `key` unless it is exactly a stage key written with Prefect's
        JSON serializer (`RECORD_SERIALIZER`): Prefect would deserialise any other with the serializer it
        names, pickle included. Removed, the record is a cache miss and the stage runs again. `InputError` if
        the records' folder is a symbolic link (`records_folder`)."""
        path = self.records_folder() / key
        try:
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError:
            log.warning("store: cache record %s is not a plain file; it is removed", path)
            path.unlink(missing_ok=True)
            return
        with os.fdopen(handle, "rb") as stream:
            raw = stream.read(64 * 1024)
        try:
            record = json.loads(raw)
            value = json.loads(record["result"])
            safe = (
                set(record) == {"metadata", "result"}
                and record["metadata"]["serializer"] == RECORD_SERIALIZER
                and isinstance(value, str)
                and _is_stage_key(value)
            )
        except (ValueError, KeyError, TypeError):
            safe = False
        if not safe:
            log.warning("store: cache record %s is not a stage key in JSON; it is removed (never read)", path)
            path.unlink(missing_ok=True)

    # --- the one primitive --------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn a refused write under the root (file modes, a read-only mount) into `StoreNotWritableError`."""
        try:
            yield
        except OSError as error:
            if error.errno not in _READ_ONLY_ERRNOS:
                raise
            raise self.not_writable(path, error.strerror) from error

    def not_writable(self, path: Path, why: str) -> StoreNotWritableError:
        """The error of a run that needs to write `path` in a store it may only read, with the fix."""
        where = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        return StoreNotWritableError(
            f"the store {self.root} cannot be written ({where}: {why})",
            "this command needs to write in the store (a run: outputs it does not hold yet): rerun it with "
            "--artifacts-dir set to a folder you can write, or ask the store's owner to; a run whose outputs are "
            "all stored only reads the store",
        )

    def _make_folder(self, folder: Path) -> None:
        """Create `folder` (and its parents) under the root; refuse if any of them is a symbolic link,
        so a planted link cannot make the store write outside its root. `StoreNotWritableError` when a folder
        cannot be created."""
        inside = folder.relative_to(self.root)  # ValueError for a folder outside the root
        current = self.root
        for part in inside.parts:
            current = current / part
            if current.is_symlink():
                raise InputError(
                    f"{current} in the store is a symbolic link",
                    "remove it: the store never follows links (point --artifacts-dir at the real folder instead)",
                )
            if not current.is_dir():
                with self._writing(current):
                    current.mkdir(mode=_folder_mode(), parents=True, exist_ok=True)

    def _link_in(self, folder: Path) -> Path | None:
        """The first of `folder` and the folders above it, inside the root, that is a symbolic link (or None)."""
        current = self.root
        for part in folder.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink():
                return current
        return None

    def _write_bytes(self, path: Path, data: bytes) -> Path:
        """Write to a temp file in the same folder, fsync, then rename over `path`. The file gets the
        mode the umask gives (a store shared by a group stays readable to it)."""
        self._make_folder(path.parent)
        with self._writing(path):
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.fchmod(handle, _file_mode())
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path


EXPORT_FORMATS = (".parquet", ".csv")


def export_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a table to a user's file outside the store (`--output`), as Parquet or CSV by its suffix:
    to a temporary name in the same folder, then renamed over it, so a reader never sees a part.

    Raises:
        InputError: another suffix, or a folder that does not exist.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise InputError(
            f"--output {str(path)[:200]!r} is neither .parquet nor .csv",
            "name the file with a .parquet or .csv suffix",
        )
    if not target.parent.is_dir():
        raise InputError(f"the folder of --output {str(path)[:200]!r} does not exist", "create it, or choose another")
    data = _parquet_bytes(frame) if suffix == ".parquet" else frame.to_csv(index=False).encode()
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target.resolve()
