"""Shared fixtures: one real Prefect server for the session, and store helpers.

The server is `prefect server start` on a free loopback port with its own
PREFECT_HOME; in-process flows reach it through `temporary_settings`, subprocesses
through PREFECT_API_URL.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import BIN, free_port, quiet_env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on 127.0.0.1; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = quiet_env(home, None)
    env["PREFECT_UI_ENABLED"] = "false"
    env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"  # schedules turn into runs quickly
    log = open(home / "server.log", "wb")
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
    else:
        process.kill()
        raise RuntimeError("prefect server did not become healthy in 90 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def prefect_api(prefect_server: str) -> Iterator[str]:
    """In-process Prefect clients talk to the session's server."""
    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    # Prefect's console handler keeps the sys.stderr of the moment it is made: make it now,
    # outside any test's capsys, whose stream is closed when that test ends.
    setup_logging()
    with temporary_settings({PREFECT_API_URL: prefect_server, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        yield prefect_server
        APILogHandler().flush()  # send the last logs while the server is still up
