"""The artifact store: every path, key and write of the pipeline lives here.

Layout under the root (default `artifacts/`):

    <stage>/<key>.parquet        generate, split, normalize, window, predict, evaluate
    sources/<key>.json           which generate key an input file (its digest and settings) gave
    models/<key>/model.keras     train (plus models/<key>/metadata.json)
    plots/<key>.png              plot (and <key>.small.png, the copy shown in the Prefect UI)
    forecasts/<key>.parquet      `lstm-forecast predict` (and <key>.png)
    summaries/<key>.parquet      one row per series of a long-format input (many-series runs)
    tuning/<key>.parquet         the trials of `lstm-forecast tune`; tuning/<key>.yaml its best config
    registry.parquet             every model, its metrics and status (champion, challenger, retired)
    decisions.parquet            every retraining decision
    _prefect/records/<key>       Prefect's cache records (small JSON: the key a stage returned)
    _prefect/locks/              Prefect's lock files while a stage computes

A stage's key hashes its name, its code version, its own config fields and its
upstream keys, so changing `epochs` changes the train key and everything after
it, and nothing before. A series read from a file is keyed by its own cleaned values:
editing one series of a long-format file (or adding one) leaves the others' keys alone.
Every write goes to a temporary name in the same folder and is renamed into place,
so a file under its final name is always complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect.logging import get_logger

from tasks.config import ForecastConfig, stage_fields

log = get_logger("lstm_forecast.store")

# Each stage's inputs, in run order: argument name -> the stage whose output it is. The flows pass each
# stage its inputs' keys from this table, and the keys of a run can be planned from it without running it.
STAGE_INPUTS: dict[str, dict[str, str]] = {
    "generate": {},
    "split": {"series": "generate"},
    "normalize": {"series": "generate", "split": "split"},
    "window": {"series": "generate", "split": "split", "normalize": "normalize"},
    "train": {"series": "generate", "normalize": "normalize", "window": "window"},
    "predict": {"series": "generate", "normalize": "normalize", "window": "window", "model": "train"},
    "evaluate": {
        "series": "generate",
        "normalize": "normalize",
        "window": "window",
        "predictions": "predict",
        "model": "train",
    },
    "plot": {"series": "generate", "predictions": "predict", "model": "train"},
}
STAGES = tuple(STAGE_INPUTS)

# Bump a stage's version when its code changes what it writes: its key changes, so
# old outputs are not reused. train 2: seeded initializers; 3: own tf.data pipeline, averaged weights validated;
# 4 (and normalize 2 …): seasons, log and window-level model spaces, the forecaster refitted on every row;
# 7 (normalize 4, window 3): global models across series, the forecaster's space stored by normalize.
STAGE_VERSIONS: dict[str, int] = {stage: 1 for stage in STAGES} | {
    "train": 7,
    "normalize": 4,
    "window": 3,
    "predict": 2,
    "evaluate": 4,
}

# Name of each stage's output when another stage takes it as input.
INPUT_STAGES = {name: stage for inputs in STAGE_INPUTS.values() for name, stage in inputs.items()}

MODEL_FILE = "model.keras"
FORECASTER_FILE = "forecaster.keras"  # the same network trained further on every row
METADATA_FILE = "metadata.json"
_METADATA_KEY = b"lstm_forecast"


KEY_LENGTH = 24


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (`KEY_LENGTH` hex digits)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:KEY_LENGTH]


def bytes_digest(data: bytes) -> str:
    """SHA-256 of some bytes (hex), the same as `file_digest` of a file holding them."""
    return hashlib.sha256(data).hexdigest()


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 (hex) of a table's column names, dtypes and values, row order included."""
    digest = hashlib.sha256()
    for name, column in frame.items():
        values = np.ascontiguousarray(column.to_numpy())
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
    return fingerprint(stage, STAGE_VERSIONS[stage], fields, dict(sorted(upstream.items())), extra)


def upstream_keys(stage: str, keys: Mapping[str, str]) -> dict[str, str]:
    """`stage`'s inputs (argument name -> key) from the keys of the stages run so far (stage -> key)."""
    return {name: keys[source] for name, source in STAGE_INPUTS[stage].items()}


def planned_key(stage: str, config: ForecastConfig, keys: Mapping[str, str]) -> str:
    """The key `stage` will have, given the keys of the stages before it (stage -> key)."""
    return stage_key(stage, config, upstream_keys(stage, keys))


def _parquet_bytes(frame: pd.DataFrame, metadata: dict[str, Any] | None = None) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        merged = {**(table.schema.metadata or {}), _METADATA_KEY: json.dumps(metadata).encode()}
        table = table.replace_schema_metadata(merged)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _is_stage_key(name: str) -> bool:
    return len(name) == KEY_LENGTH and all(c in "0123456789abcdef" for c in name)


class Store:
    """Paths and atomic reads/writes under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # --- paths --------------------------------------------------------------
    def path(self, stage: str, key: str) -> Path:
        """Where `stage`'s output for `key` lives (a folder for `train`)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        if not _is_stage_key(key):
            raise ValueError(f"invalid store key {key!r}")
        if stage == "train":
            return self.root / "models" / key
        if stage == "plot":
            return self.root / "plots" / f"{key}.png"
        return self.root / stage / f"{key}.parquet"

    def thumbnail_path(self, key: str) -> Path:
        return self.path("plot", key).with_suffix(".small.png")

    def forecast_path(self, key: str, suffix: str) -> Path:
        if not _is_stage_key(key) or suffix not in (".parquet", ".png"):
            raise ValueError(f"invalid forecast name {key!r}{suffix!r}")
        return self.root / "forecasts" / f"{key}{suffix}"

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
        """True when the output exists and its structure reads back; damaged files are removed."""
        path = self.path(stage, key)
        if not path.exists():
            return False
        try:
            if stage == "train":
                json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
                for name in (MODEL_FILE, FORECASTER_FILE):
                    if name == FORECASTER_FILE and not (path / name).exists():
                        continue  # a model folder written before forecasters existed
                    with zipfile.ZipFile(path / name) as archive:
                        if archive.testzip() is not None:
                            raise zipfile.BadZipFile("corrupt member")
            elif stage == "plot":
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
        path = self.path(stage, key)
        if stage == "train":
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

    def drop_failure_records(self) -> None:
        """Remove what Prefect saved of failed attempts: records not named by a stage key."""
        if not self.records_dir.is_dir():
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
        if stage == "plot":
            self.thumbnail_path(key).unlink(missing_ok=True)
        (self.records_dir / key).unlink(missing_ok=True)

    # --- sources --------------------------------------------------------------
    def write_source(self, key: str, series_key: str) -> Path:
        """Record that the input behind `key` (a file digest and its settings) gave series `series_key`."""
        if not _is_stage_key(series_key):
            raise ValueError(f"invalid series key {series_key!r}")
        return self._write_bytes(self.source_path(key), json.dumps({"series": series_key}).encode())

    def read_source(self, key: str) -> str | None:
        """The series key recorded for input `key`, or None when there is none (or it is unreadable)."""
        try:
            series_key = json.loads(self.source_path(key).read_text(encoding="utf-8"))["series"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return series_key if isinstance(series_key, str) and _is_stage_key(series_key) else None

    # --- tables -------------------------------------------------------------
    def write_table(self, stage: str, key: str, frame: pd.DataFrame, metadata: dict[str, Any] | None = None) -> Path:
        """Write a DataFrame as Parquet, with optional JSON metadata in the file's schema."""
        return self._write_bytes(self.path(stage, key), _parquet_bytes(frame, metadata))

    def read_table(self, stage: str, key: str) -> pd.DataFrame:
        return pq.read_table(self.path(stage, key)).to_pandas()

    def read_table_metadata(self, stage: str, key: str) -> dict[str, Any]:
        schema_metadata = pq.read_schema(self.path(stage, key)).metadata or {}
        return json.loads(schema_metadata.get(_METADATA_KEY, b"{}"))

    # --- models and plots ---------------------------------------------------
    def write_model(self, key: str, save_models: Callable[[Path], None], metadata: dict[str, Any]) -> Path:
        """Save a model folder atomically: `save_models(folder)` writes `model.keras` (and maybe
        `forecaster.keras`) into a temp folder."""
        final = self.path("train", key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
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

    def read_model_metadata(self, key: str) -> dict[str, Any]:
        return json.loads((self.path("train", key) / METADATA_FILE).read_text(encoding="utf-8"))

    def write_png(self, key: str, png: bytes, thumbnail: bytes | None = None) -> Path:
        if thumbnail is not None:
            self._write_bytes(self.thumbnail_path(key), thumbnail)
        return self._write_bytes(self.path("plot", key), png)

    def write_forecast(self, key: str, frame: pd.DataFrame, png: bytes) -> tuple[Path, Path]:
        table = self._write_bytes(self.forecast_path(key, ".parquet"), _parquet_bytes(frame))
        return table, self._write_bytes(self.forecast_path(key, ".png"), png)

    def write_summary(self, key: str, frame: pd.DataFrame) -> Path:
        return self._write_bytes(self.summary_path(key), _parquet_bytes(frame))

    def write_tuning(self, key: str, trials: pd.DataFrame, best_config_yaml: str) -> tuple[Path, Path]:
        table = self._write_bytes(self.tuning_path(key, ".parquet"), _parquet_bytes(trials))
        return table, self._write_bytes(self.tuning_path(key, ".yaml"), best_config_yaml.encode())

    # --- registry -----------------------------------------------------------
    @contextlib.contextmanager
    def registry_lock(self) -> Iterator[None]:
        """Hold an exclusive lock for a read-modify-write of the registry (across processes)."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with open(self.locks_dir / "registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_registry(self) -> pd.DataFrame | None:
        return pq.read_table(self.registry_path).to_pandas() if self.registry_path.exists() else None

    def write_registry(self, registry: pd.DataFrame) -> Path:
        return self._write_bytes(self.registry_path, _parquet_bytes(registry))

    def read_decisions(self) -> pd.DataFrame | None:
        return pq.read_table(self.decisions_path).to_pandas() if self.decisions_path.exists() else None

    def write_decisions(self, decisions: pd.DataFrame) -> Path:
        return self._write_bytes(self.decisions_path, _parquet_bytes(decisions))

    # --- the one primitive --------------------------------------------------
    @staticmethod
    def _write_bytes(path: Path, data: bytes) -> Path:
        """Write to a temp file in the same folder, fsync, then rename over `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
