"""How Prefect decides a stage is Cached: the store's content key, checked against the store.

A stage's Prefect cache key is its store key. Before Prefect looks up its record,
the policy checks that the output itself is still complete in the store and newer
than its inputs (as `make` does); if it was deleted, damaged, or an input was rebuilt
since, the record is dropped, so the stage runs again and rebuilds it.
A file lock per key (SERIALIZABLE isolation) makes concurrent identical runs compute
each stage once: the second waits, then finds the first one's record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import Task
from prefect.cache_policies import CachePolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

from tasks.config import ForecastConfig
from tasks.store import Store, file_digest, stage_key


@dataclass
class StageCache(CachePolicy):
    """Cache key = the stage's store key; a missing or damaged output is a miss."""

    stage: str = ""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        config: ForecastConfig = inputs["config"]
        upstream = {name: value for name, value in inputs.items() if name != "config"}
        extra = ""
        if self.stage == "generate" and config.input:
            try:
                extra = file_digest(config.input)
            except OSError:
                return None  # unreadable now: run the stage, which retries and reports
        key = stage_key(self.stage, config, upstream, extra)
        store = Store(config.artifacts_dir)
        if not store.is_complete(self.stage, key) or store.is_older_than_inputs(self.stage, key, upstream):
            (store.records_dir / key).unlink(missing_ok=True)
        return key


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
        lock_manager=FileSystemLockManager(lock_files_directory=store.locks_dir),
    )
    options: dict[str, Any] = dict(
        cache_policy=policy, result_storage=store.records_dir, persist_result=True,
        on_failure=[_drop_failure_records(store)],
    )
    if stage_task.name == "generate":
        options.update(
            retries=config.read_retries,
            retry_delay_seconds=[config.read_retry_delay_s * 2**attempt for attempt in range(config.read_retries)]
            or 0,
            on_completion=[_drop_failure_records(store)],  # after failed attempts that were retried
        )
    return stage_task.with_options(**options)
