"""Prefect's `DaskTaskRunner`, paying less of Prefect's own work per task run.

A panel's run hands out one task per stage and chunk: about 66 on 10,000 series. On two cores each of Prefect's
task runs cost about 0.17 s of a worker's core before and after its function, whatever the function did (60
no-op tasks: 10 s of the workers' CPU). Most of it is rebuilt for every task run and never changes within a
flow run: the flow's Prefect settings, validated again from their serialized form (about 30 ms), and two new
API clients, each loading the CA certificates for its TLS context (about 20 ms each) and opening its own
connection to the server. Here each worker thread keeps the settings and one open client while the settings it
is sent stay the same, and Dask does not hash each submission (its key is the task run's id, which is unique).
The flow in each submission's context is sent by its import path (`FlowPath`), and the flow's settings are serialized
once, not for every submission (`settings_serialized_once`). Everything else is Prefect's own engine
(`run_task_sync`): the same task runs, states and logs.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import importlib
import sys
import threading
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from distributed import Client, Future
from prefect.context import SettingsContext, SyncClientContext, serialize_context
from prefect.task_engine import run_task_sync
from prefect.utilities.engine import collect_task_run_inputs_sync
from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture
from pydantic import PrivateAttr

_kept = threading.local()  # per worker thread: (the settings sent, their context, an open client's context)


def kept_contexts(settings: dict[str, Any]) -> tuple[SettingsContext, SyncClientContext]:
    """This thread's Prefect settings context for the serialized `settings`, and an API client opened with them:
    built the first time, and again only when the settings sent differ."""
    kept = getattr(_kept, "contexts", None)
    if kept is None or kept[0] != settings:
        if kept is not None:
            kept[2].client.__exit__(None, None, None)
        settings_context = SettingsContext(**settings)
        # In a context of its own: a client context current where this is called (the one replaced) is not reused.
        client_context = contextvars.Context().run(opened_client, settings_context)
        kept = _kept.contexts = (settings, settings_context, client_context)
    return kept[1], kept[2]


def opened_client(settings_context: SettingsContext) -> SyncClientContext:
    """A client context for an API client opened with `settings_context`'s settings (its URL and options), the
    server's version checked; it stays open."""
    with settings_context:
        client_context = SyncClientContext()
        client_context.__enter__()
    return client_context


_flows_with_runner: dict[tuple[str, str], tuple[Any, Any]] = {}  # per process: the last runner, its flow


def imported_flow(module: str, name: str, task_runner: Any) -> Any:
    """The flow `name` of the module `module` with `task_runner`: the module's own flow where its runner is equal,
    else a copy with this one, made once per runner's settings."""
    flow = getattr(importlib.import_module(module), name)
    kept = _flows_with_runner.get((module, name))
    if kept is None or kept[0] != task_runner:
        kept = (task_runner, flow if flow.task_runner == task_runner else flow.with_options(task_runner=task_runner))
        _flows_with_runner[module, name] = kept
    return kept[1]


class FlowPath(NamedTuple):
    """A flow as its module, its name there and its task runner (`imported_flow`): what a submission's context
    holds in place of the flow run's flow, which pickle cannot write by reference (its module attribute is the
    `Flow`, not the function the flow wraps). Dask then pickled the whole submission, the chunk's configs
    included, with cloudpickle after two failed passes, for the task and again for its graph (and the scheduler
    once more to send it on): about 60 ms of the flow process's time per task run on 10,000 series."""

    module: str
    name: str
    task_runner: Any


_PACKAGE = __name__.split(".")[0]  # this project's package, which every worker imports


def with_flow_by_path(context: dict[str, Any]) -> dict[str, Any]:
    """`context` (`serialize_context`'s) with its flow run's flow as a `FlowPath`, where that flow is one of this
    project's modules' flows (same name and function), maybe with another task runner
    (`Flow.with_options(task_runner=...)`); unchanged otherwise, pickled by value as Prefect does: a flow made at
    run time, or one of a module a worker may not import by that name (Prefect loads a deployment's flow file as
    a module named after the file)."""
    flow_run = context.get("flow_run_context") or {}
    flow = flow_run.get("flow")
    function = getattr(flow, "fn", None)
    module = getattr(function, "__module__", None) or ""
    own = getattr(sys.modules.get(module), getattr(function, "__name__", ""), None)
    ours = module.startswith(f"{_PACKAGE}.")  # False without a flow (no function, no module)
    if not ours or getattr(own, "fn", None) is not function or own.name != flow.name:
        return context
    by_path = FlowPath(module, function.__name__, flow.task_runner.duplicate())
    return context | {"flow_run_context": flow_run | {"flow": by_path}}


def with_flow_imported(context: dict[str, Any]) -> dict[str, Any]:
    """`context` with a `FlowPath` (`with_flow_by_path`) back as its flow."""
    flow_run = context.get("flow_run_context") or {}
    path = flow_run.get("flow")
    if not isinstance(path, FlowPath):
        return context
    return context | {"flow_run_context": flow_run | {"flow": imported_flow(*path)}}


class SerializedSettingsContext(SettingsContext):
    """A settings context whose `serialize` (with secrets, as `serialize_context` asks) is what was computed once
    for the context it copies (`settings_serialized_once`)."""

    _serialized: dict[str, Any] = PrivateAttr(default_factory=dict)

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        return self._serialized if include_secrets else super().serialize(include_secrets=include_secrets)


_serialized_settings: list[tuple[SettingsContext, SerializedSettingsContext]] = []  # the last context, its copy


def settings_serialized_once(current: SettingsContext) -> SerializedSettingsContext:
    """`current`'s copy whose serialized form is computed once while `current` is the settings context: Prefect
    serializes the flow's settings for every task run it submits (`serialize_context`), about 24 ms of the flow
    process each on an idle core and 3 s over a 10,000-series run, and a context's settings do not change."""
    if not _serialized_settings or _serialized_settings[0][0] is not current:
        copy = SerializedSettingsContext.model_construct(profile=current.profile, settings=current.settings)
        copy._serialized = current.serialize()
        _serialized_settings[:] = [(current, copy)]
    return _serialized_settings[0][1]


def run_in_kept_contexts(*, context: dict[str, Any], **run_task_kwargs: Any) -> Any:
    """Prefect's `run_task_sync` for one task run on a worker, in this thread's kept settings and client
    (`kept_contexts`): the engine finds them current and builds neither again."""
    context = with_flow_imported(context)
    settings = context.get("settings_context")
    if not settings:
        return run_task_sync(context=context, **run_task_kwargs)
    settings_context, client_context = kept_contexts(settings)
    settings_token = SettingsContext.__var__.set(settings_context)
    client_token = SyncClientContext.__var__.set(client_context)
    try:
        return run_task_sync(context={**context, "settings_context": {}}, **run_task_kwargs)
    finally:
        SyncClientContext.__var__.reset(client_token)
        SettingsContext.__var__.reset(settings_token)


class KeptContextsTaskRunner(DaskTaskRunner):
    """A `DaskTaskRunner` whose synchronous task runs use `run_in_kept_contexts` on the workers. It submits what
    prefect-dask's client submits for a task (the task, its run's id, parameters, dependencies and serialized
    context), under a key of its own.

    `starting`: a local cluster still starting (`start_local_cluster`), whose scheduler the runner connects to
    when the run first needs its client: the flow run is created, and the run planned, while the workers start
    (the command's main thread waited about 1.3 s for them at a 10,000-series run's start)."""

    def __init__(self, *args: Any, starting: concurrent.futures.Future[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starting = starting

    def _take_started(self) -> None:
        """The started cluster's scheduler as this runner's address (waiting for it, once)."""
        if self._starting is not None:
            self.address = self._starting.result().scheduler_address
            self._starting = None

    @property
    def client(self) -> Any:
        self._take_started()
        return super().client

    def duplicate(self) -> KeptContextsTaskRunner:
        if self._starting is not None and self._starting.done():
            self._take_started()
        if self._starting is None:
            return super().duplicate()
        return type(self)(
            starting=self._starting,
            client_kwargs=self.client_kwargs,
            performance_report_path=self.performance_report_path,
        )

    def __eq__(self, other: object) -> bool:
        starting = getattr(other, "_starting", None)
        return super().__eq__(other) and (self._starting is starting)

    def __getstate__(self) -> dict[str, Any]:
        self._take_started()  # a future does not pickle; the address does
        return dict(self.__dict__)

    def submit(  # type: ignore[override]
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectDaskFuture[Any]] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectDaskFuture[Any]:
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        client = self.client  # the cluster started (`starting`) before the flow's runner is copied into the context
        if task.isasync:
            return super().submit(task, parameters, wait_for, dependencies)
        parameters = self._optimize_futures(parameters)
        waits = self._optimize_futures(wait_for) if wait_for else None
        task_run_id = uuid.uuid4()
        inputs = {name: collect_task_run_inputs_sync(value, future_cls=Future) for name, value in parameters.items()}
        if dependencies:
            inputs = {name: found | dependencies.get(name, set()) for name, found in inputs.items()}
        current = SettingsContext.get()
        swapped = SettingsContext.__var__.set(settings_serialized_once(current)) if current is not None else None
        try:
            context = serialize_context(
                asset_ctx_kwargs={
                    "task": task,
                    "task_run_id": task_run_id,
                    "task_inputs": inputs,
                    "copy_to_child_ctx": True,
                }
            )
        finally:
            if swapped is not None:
                SettingsContext.__var__.reset(swapped)
        context = with_flow_by_path(context)
        future = Client.submit(
            client,
            run_in_kept_contexts,
            key=f"{task.name}-{task_run_id.hex}",
            pure=False,
            task=task,
            task_run_id=task_run_id,
            parameters=parameters,
            wait_for=waits,
            dependencies=inputs,
            context=context,
            return_type="state",
        )
        return PrefectDaskFuture(wrapped_future=future, task_run_id=task_run_id)
