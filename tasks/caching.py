"""How Prefect decides a stage is Cached: the store's content key, checked against the store.

A stage's Prefect cache key is its store key. Before Prefect looks up its record,
the policy checks that the output itself is still complete in the store and newer
than its inputs (as `make` does); if it was deleted, damaged, or an input was rebuilt
since, the record is dropped, so the stage runs again and rebuilds it.
A file lock per key (SERIALIZABLE isolation) makes concurrent identical runs compute
each stage once: the second waits, then finds the first one's record.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

from tasks.config import ForecastConfig
from tasks.store import Store, file_digest, stage_key


class ProcessFileLockManager(FileSystemLockManager):
    """Prefect's file locks, made safe across processes.

    Prefect creates a lock file empty and fills it afterwards, so a process reading it in
    between fails on empty JSON. Here a lock file appears complete in one step (written
    under a temporary name, then hard-linked into place, which fails if the lock exists),
    and it names the holder's process: a lock left by a process that died (kill -9, power
    loss) is free again instead of making every later run wait forever.
    """

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        self._ensure_lock_files_directory_exists()
        path = self._lock_path_for_key(key)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            expiration = None if hold_timeout is None else datetime.now(UTC) + timedelta(seconds=hold_timeout)
            info = {
                "holder": holder,
                "expiration": expiration and str(expiration),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
            if _create_complete_file(path, json.dumps(info).encode()):
                self._locks[key] = {"holder": holder, "expiration": expiration, "path": path}
                return True
            if self.is_lock_holder(key, holder):
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if not self.wait_for_lock(key, remaining):
                return False

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def _get_lock_info(self, key: str, use_cache: bool = True) -> Any:
        try:
            return super()._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # not written by this class: held by someone unknown
            return {"holder": None, "expiration": None, "path": self._lock_path_for_key(key)}

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        if not super().is_locked(key, use_cache=use_cache):
            return False
        info = self._get_lock_info(key, use_cache=use_cache) or {}
        if info.get("host") == socket.gethostname() and "pid" in info and not _process_alive(info["pid"]):
            info["path"].unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return True


def _create_complete_file(path: Path, content: bytes) -> bool:
    """Create `path` holding `content` in one step; False if it exists already."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StageCache(CachePolicy):
    """Cache key = the stage's store key (for an input file: of its digest and settings; `sources/`
    names the series it gave). A missing or damaged output is a miss."""

    stage: str = ""

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        config: ForecastConfig = inputs["config"]
        upstream = {name: value for name, value in inputs.items() if name != "config"}
        key, output = stored_output(self.stage, config, upstream)
        if key is not None and output is None:
            (Store(config.artifacts_dir).records_dir / key).unlink(missing_ok=True)
        return key


def stored_output(
    stage: str, config: ForecastConfig, upstream: dict[str, Any], digest: str | None = None
) -> tuple[str | None, str | None]:
    """A stage's cache key, and its output's key when that output is complete in the store and newer
    than its inputs (None: it must run). For an input file the cache key is of the file's digest and
    settings, the output's key of the series it gave (`sources/`); `digest`: the file's, if known.
    The cache key is None when the file cannot be read now (the stage runs, retries and reports)."""
    reads_file = stage == "generate" and bool(config.input)
    extra = ""
    if reads_file:
        try:
            extra = digest or file_digest(config.input or "")
        except OSError:
            return None, None
    key = stage_key(stage, config, upstream, extra)
    store = Store(config.artifacts_dir)
    if reads_file:  # the series is stored under the key its values gave
        series_key = store.read_source(key)
        return key, series_key if series_key is not None and store.is_complete(stage, series_key) else None
    valid = store.is_complete(stage, key) and not store.is_older_than_inputs(stage, key, upstream)
    return key, key if valid else None


def _drop_failure_records(store: Store) -> Any:
    """A state hook: Prefect saves each failed attempt's exception beside the cache records; drop them."""

    def drop_failed_attempt_records(task: Any, task_run: Any, state: Any) -> None:
        store.drop_failure_records()

    return drop_failed_attempt_records


def with_store_cache(stage_task: Task[Any, str], config: ForecastConfig) -> Task[Any, str]:
    """The stage's task, cached in the store of `config` and locked per key."""
    store = Store(config.artifacts_dir)
    policy = StageCache(stage=stage_task.name).configure(
        isolation_level=IsolationLevel.SERIALIZABLE,
        lock_manager=ProcessFileLockManager(lock_files_directory=store.locks_dir),
    )
    options: dict[str, Any] = dict(
        cache_policy=policy,
        result_storage=store.records_dir,
        persist_result=True,
        on_failure=[_drop_failure_records(store)],
    )
    if stage_task.name == "generate":
        options.update(
            retries=config.read_retries,
            retry_delay_seconds=[config.read_retry_delay_s * 2**attempt for attempt in range(config.read_retries)] or 0,
            on_completion=[_drop_failure_records(store)],  # after failed attempts that were retried
        )
    return stage_task.with_options(**options)
