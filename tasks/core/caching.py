"""How Prefect decides a stage is Cached: the store's content key, checked against the store.

A stage's Prefect cache key is its store key. Before Prefect looks up its record,
the policy checks that the output itself is still complete in the store and newer
than its inputs (as `make` does); if it was deleted, damaged, or an input was rebuilt
since, the record is dropped, so the stage runs again and rebuilds it.
A file lock per key (SERIALIZABLE isolation, `flock`) makes concurrent identical runs compute
each stage once: the second waits, then finds the first one's record. Prefect reads a record
back with the serializer it names; the store removes any record that is not a stage key in
JSON before Prefect looks, so nothing in the store is ever unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.transactions import IsolationLevel

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.graph import STAGE
from lstm_forecast.tasks.core.store import Store, file_digest, stage_key


class StoreLockManager:
    """Prefect's lock manager protocol (`prefect.locking.protocol.LockManager`) on the store's lock files:
    `fcntl.flock` on an open file, so the kernel releases a lock when its holder's process ends (kill -9,
    power loss) and no one ever deletes a lock file that another process may be waiting on; a lock file
    that is a symbolic link is refused. A wait names the holder in the log and gives up after `timeout`
    seconds with a clear error."""

    def __init__(self, store: Store, timeout: float | None) -> None:
        self.store = store
        self.timeout = timeout
        self._held: dict[str, tuple[str, int]] = {}  # key -> (holder, open lock file)
        self._guard = threading.Lock()

    def acquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        """Hold `key`'s lock for `holder`. With no `acquire_timeout`, a wait past the store's timeout raises
        an `InputError` (Prefect does not look at a False here, and would compute without the lock)."""
        with self._guard:
            if key in self._held and self._held[key][0] == holder:
                return True
        name = f"{key}.lock"
        handle = self.store.open_lock(name)
        timeout = self.timeout if acquire_timeout is None else acquire_timeout
        try:
            if handle >= 0 and not self.store.hold_lock(handle, name, holder, timeout):
                if acquire_timeout is not None:
                    os.close(handle)
                    return False
                raise self.store.lock_timeout(name, handle, timeout or 0.0)
            if not self.store.is_writable_lock(handle) and not (self.store.records_dir / key).exists():
                # A store this process may only read, and no cached output of this key (once any writer holding
                # the lock is done): say so now, before the stage computes what it could not keep.
                raise self.store.not_writable(self.store.records_dir / key, "not stored, and this process may not")
        except BaseException:
            if handle >= 0:
                with contextlib.suppress(OSError):
                    os.close(handle)
            raise
        with self._guard:
            self._held[key] = (holder, handle)
        return True

    async def aacquire_lock(
        self, key: str, holder: str, acquire_timeout: float | None = None, hold_timeout: float | None = None
    ) -> bool:
        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            held = self._held.get(key)
            if held is None or held[0] != holder:
                return
            del self._held[key]
        if held[1] >= 0:
            os.close(held[1])  # closing the file releases its flock

    def is_locked(self, key: str) -> bool:
        with self._guard:
            if key in self._held:
                return True
        handle = self.store.open_lock(f"{key}.lock", create=False)
        if handle < 0:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(handle)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._guard:
            return key in self._held and self._held[key][0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until `key` is not locked; False if it still is after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout)


@dataclass
class StageCache(CachePolicy):
    """Cache key = the stage's store key (for an input file: of its digest and settings; `sources/`
    names the series it gave). A missing or damaged output is a miss."""

    stage: str = ""

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        config: ForecastConfig = inputs["config"]
        upstream = {name: value for name, value in inputs.items() if name not in ("config", "key")}
        key, output = stored_output(self.stage, config, upstream, key=inputs.get("key"))
        if key is not None:
            store = Store(config.artifacts_dir)
            if output is None:
                store.drop_record(key)
            else:
                store.check_record(key)  # only a stage key in JSON is ever read back
        return key


def stored_output(
    stage: str,
    config: ForecastConfig,
    upstream: dict[str, Any],
    digest: str | None = None,
    key: str | None = None,
    store: Store | None = None,
) -> tuple[str | None, str | None]:
    """A stage's cache key, and its output's key when that output is complete in the store and newer
    than its inputs (None: it must run). `key`: the stage's key when the flow computed it already.
    For an input file the cache key is of the file's digest and settings, the output's key of the
    series it gave (`sources/`); `digest`: the file's, if known. The cache key is None when the file
    cannot be read now (the stage runs, retries and reports). `store`: `config`'s, when the caller holds it."""
    reads_file = STAGE[stage].reads_input and bool(config.input)
    extra = ""
    if reads_file:
        try:
            extra = digest or file_digest(config.input or "")
        except OSError:
            return None, None
    if key is None or reads_file:
        key = stage_key(stage, config, upstream, extra)
    store = store or Store(config.artifacts_dir)
    if reads_file:  # the series is stored under the key its values gave
        series_key = store.read_source(key)
        return key, series_key if series_key is not None and store.is_complete(stage, series_key) else None
    valid = store.is_complete(stage, key) and not store.is_older_than_inputs(stage, key, upstream)
    return key, key if valid else None


class _HookRunsAtDebug(logging.Filter):
    """Prefect logs two INFO lines each time a task's state hook runs ("Running hook
    'drop_failed_attempt_records' …", "… finished running successfully"): two lines per task, on the console
    and in the UI. Ours are kept at DEBUG: shown only when Prefect logs at DEBUG (PREFECT_LOGGING_LEVEL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str) or _HOOK_NAME not in record.msg:
            return True
        if not record.msg.startswith(("Running hook ", "Hook ")):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_HOOK_NAME = "'drop_failed_attempt_records'"


def keep_hook_logs_at_debug() -> None:
    """Install `_HookRunsAtDebug` on Prefect's task-run logger (once per process)."""
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _HookRunsAtDebug) for f in logger.filters):
        logger.addFilter(_HookRunsAtDebug())


keep_hook_logs_at_debug()  # in every process that runs the stages: the one that starts a run, and Dask workers


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
        lock_manager=StoreLockManager(store, config.lock_timeout_s),
    )
    options: dict[str, Any] = dict(
        cache_policy=policy,
        result_storage=store.records_folder(),  # refused if it is (or lies under) a symbolic link
        persist_result=True,
        on_failure=[_drop_failure_records(store)],
    )
    if STAGE[stage_task.name].reads_input:
        options.update(
            retries=config.read_retries,
            retry_delay_seconds=[config.read_retry_delay_s * 2**attempt for attempt in range(config.read_retries)] or 0,
            on_completion=[_drop_failure_records(store)],  # after failed attempts that were retried
        )
    return stage_task.with_options(**options)
