"""The worker side of `KeptContextsTaskRunner`: a thread's Prefect settings and API client, kept across task runs
(the runner itself runs every end-to-end test on Dask in tests/test_many.py)."""

from __future__ import annotations

import threading

from prefect.context import SettingsContext
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from lstm_forecast.flows.dask_runner import kept_contexts


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
