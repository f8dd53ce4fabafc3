"""The worker side of `KeptContextsTaskRunner`: a thread's Prefect settings and API client, kept across task runs,
and the flow sent by its import path (the runner itself runs every end-to-end test on Dask in tests/test_many.py)."""

from __future__ import annotations

import functools
import pickle
import sys
import threading
import time
from pathlib import Path

from prefect import flow
from prefect.context import SettingsContext, serialize_context
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from lstm_forecast.flows.cluster import run_on_workers
from lstm_forecast.flows.dask_runner import (
    KeptContextsTaskRunner,
    kept_contexts,
    settings_serialized_once,
    with_flow_by_path,
    with_flow_imported,
)
from lstm_forecast.flows.many import forecast_many


def serialized_settings(values: dict) -> dict:
    """What a flow sends its task runs: its settings context (with `values`: setting -> value), serialized."""
    with temporary_settings(values):
        return SettingsContext.get().serialize()


def test_a_thread_keeps_its_settings_and_client_while_the_settings_sent_stay_the_same(prefect_server: str) -> None:
    sent = serialized_settings({PREFECT_API_URL: prefect_server})
    settings, client = kept_contexts(sent)
    assert client.client.api_url.host == "127.0.0.1" and str(client.client.api_url).startswith(prefect_server)
    assert settings.settings.api.url == prefect_server
    assert client.client.hello().status_code == 200  # open, and answering
    again = kept_contexts(serialized_settings({PREFECT_API_URL: prefect_server}))  # equal, sent anew
    assert again[0] is settings and again[1] is client

    other_thread: list[tuple] = []
    thread = threading.Thread(target=lambda: other_thread.append(kept_contexts(sent)))
    thread.start()
    thread.join()
    assert other_thread[0][1] is not client  # one client per thread: a thread runs one task at a time

    changed = serialized_settings({PREFECT_API_URL: prefect_server, PREFECT_CLIENT_MAX_RETRIES: 2})
    settings_after, client_after = kept_contexts(changed)
    assert settings_after is not settings and client_after is not client
    assert settings_after.settings.client.max_retries == 2
    assert client.client._closed and not client_after.client._closed  # the one it replaced is closed


def test_a_modules_flow_is_sent_by_its_path_with_its_task_runner_and_comes_back_as_that_flow() -> None:
    runner = KeptContextsTaskRunner(address="tcp://127.0.0.1:8786")
    running = forecast_many.with_options(task_runner=runner)  # the CLI's copy, as the flow run's context holds it
    context = {"flow_run_context": {"flow": running, "log_prints": True}, "tags_context": {}}
    sent = pickle.dumps(with_flow_by_path(context))  # plain pickle: no cloudpickle fallback over the whole payload
    assert len(sent) < 2000 and context["flow_run_context"]["flow"] is running  # its own dict is left as it was
    received = with_flow_imported(pickle.loads(sent))
    flow_there = received["flow_run_context"]["flow"]
    assert flow_there.fn is forecast_many.fn and flow_there.name == forecast_many.name
    assert flow_there.task_runner == runner and flow_there.task_runner is not forecast_many.task_runner
    assert received["flow_run_context"]["log_prints"] is True and received["tags_context"] == {}
    again = with_flow_imported(pickle.loads(sent))["flow_run_context"]["flow"]
    assert again is flow_there  # the copy with that runner is made once per process

    @flow(name="made-at-run-time")
    def made_here() -> None:
        return None

    local = {"flow_run_context": {"flow": made_here}}
    assert with_flow_by_path(local) is local  # not importable: sent by value, as Prefect does
    test_module = sys.modules[__name__]
    test_module.made_here = made_here  # a module's flow, but not of the project's package: a worker may lack it
    try:
        assert with_flow_by_path(local) is local
    finally:
        del test_module.made_here


def test_a_settings_context_is_serialized_once_and_again_only_for_other_settings() -> None:
    current = SettingsContext.get()
    once = settings_serialized_once(current)
    token = SettingsContext.__var__.set(once)
    try:
        sent = serialize_context()["settings_context"]  # what a submission sends, through the copy
    finally:
        SettingsContext.__var__.reset(token)
    assert sent == current.serialize() and once.settings is current.settings
    assert settings_serialized_once(current) is once and settings_serialized_once(current).serialize() is sent
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        changed = settings_serialized_once(SettingsContext.get())
        assert changed is not once and changed.serialize()["settings"]["api"]["url"] == "http://127.0.0.1:9/api"
    assert once.serialize(include_secrets=False) == current.serialize(include_secrets=False)


def touch_later(path: Path) -> None:
    time.sleep(2)
    path.touch()


def test_work_on_the_workers_is_not_waited_for_and_its_failure_fails_nothing(prefect_api: str, tmp_path: Path) -> None:
    marker = tmp_path / "done"

    @flow(task_runner=KeptContextsTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False}))
    def on_a_cluster() -> tuple[float, bool]:
        run_on_workers(functools.partial(Path.read_text, tmp_path / "missing"))  # fails there: no one's failure
        started = time.monotonic()
        run_on_workers(functools.partial(touch_later, marker))
        returned = time.monotonic() - started
        deadline = started + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return returned, marker.exists()

    returned, done = on_a_cluster()
    assert returned < 1.5 and done  # back before the function's 2 s, which then ran to its end
