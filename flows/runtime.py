"""What the command needs around a flow: the Prefect server, TensorFlow imported on the side, Dask,
quiet logs for bad input, and a fast exit."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from lstm_forecast.tasks.core.errors import InputError


def set_environment_defaults() -> None:
    """No analytics from a temporary Prefect server, no TensorFlow start-up chatter."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow() -> None:
    from lstm_forecast.tasks.core.networks import import_keras

    import_keras()


def prefetch_tensorflow_while_prefect_starts() -> None:
    """Without a server, Prefect starts a temporary one (seconds of waiting): import TensorFlow
    meanwhile on the other core, so training does not pay for it afterwards. With a running server
    nothing is prefetched, and a fully cached run never imports TensorFlow."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        threading.Thread(target=_import_tensorflow, name="prefetch-tensorflow", daemon=True).start()


def prefect_server_known() -> bool:
    """Whether `PREFECT_API_URL` names a server (else a run starts a temporary one)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def check_prefect_server(
    required: bool = False,
    why: str = "serving needs a running Prefect server: the temporary one never fires schedules",
) -> None:
    """If `PREFECT_API_URL` names a server, it must answer; otherwise a temporary one is started,
    unless `required` (then `why` says why it will not do)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        if required:
            raise InputError(
                why,
                "start one with `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`",
            )
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise InputError(
            f"cannot reach the Prefect server at {url} ({type(problem).__name__})",
            "start it with `prefect server start`, or unset PREFECT_API_URL to use a temporary local server",
        )


_interrupts = threading.Event()  # set once Ctrl-C reached a running flow (`interrupt_at_once`)


def interrupt_at_once(signum: int, frame: Any) -> None:
    """SIGINT raises KeyboardInterrupt where the main thread is, as Python's default handler does. Set while a
    flow runs: asyncio.run's own handler only cancels the flow's task, which a flow busy in a synchronous stage
    (training) sees at its next `await`, after it has trained on and registered its model."""
    _interrupts.set()
    raise KeyboardInterrupt


def was_interrupted() -> bool:
    """Whether Ctrl-C reached a flow of this process. A KeyboardInterrupt raised inside Prefect's machinery can
    reach the command as another exception (a failed state, a cancelled future): the run still ended because
    the user stopped it."""
    return _interrupts.is_set()


@contextlib.contextmanager
def ctrl_c_stops_the_flow() -> Any:
    """While inside (in the main thread), Ctrl-C interrupts the running stage at once (`interrupt_at_once`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupts.clear()  # a new run: an earlier run's Ctrl-C is not this one's
    previous = signal.signal(signal.SIGINT, interrupt_at_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# Prefect's own wait is 20 s; on a busy machine, with TensorFlow importing beside it, starting took longer.
TEMPORARY_SERVER_START_S = 120


def _own_session_server() -> Any:
    """Prefect's temporary server (`SubprocessASGIServer`), its process in a session of its own: Ctrl-C reaches
    a terminal's whole process group, and a server in this one stopped at once, before the run could report
    how it ended (the run then waited minutes on a dead API). It is stopped with this process instead
    (`atexit`, or the watcher of `stop_with_this_process`)."""
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class OwnSessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect 3.9.1's command, with start_new_session
            return subprocess.Popen(
                args=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env={
                    **os.environ,
                    "PREFECT_UI_ENABLED": "0",
                    "PREFECT__SERVER_EPHEMERAL": "1",
                    "PREFECT__SERVER_FINAL": "1",
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                },
                start_new_session=True,
            )

    running = SubprocessASGIServer._instances.get(None)
    if running is not None and running.running:
        return running
    SubprocessASGIServer._instances.pop(None, None)
    # Kept as Prefect's own instance: its clients (logs, events) that start "their" temporary server get this one.
    return OwnSessionServer()


def start_temporary_server() -> None:
    """Without a running server, start Prefect's temporary one now (the instance its own client would
    start) and name it in the environment that Dask worker processes inherit (each would otherwise
    start a temporary server of its own). A watcher process stops it if this process is killed."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    server = _own_session_server()
    try:
        server.start(timeout=TEMPORARY_SERVER_START_S)
    except RuntimeError as error:
        raise InputError(
            f"Prefect's temporary server did not start within {TEMPORARY_SERVER_START_S} s",
            "rerun when the machine is less busy, or start a server with `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`",
        ) from error
    os.environ["PREFECT_API_URL"] = server.api_url
    if server.server_process is not None:
        stop_with_this_process(server.server_process.pid, "prefect.server.api.server:create_app")


# Run by `python -I -S -c`: waits for the parent to end, then stops the server if it is still the same process.
_WATCHER = """
import os, signal, sys, time
parent, server, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
while True:
    time.sleep(0.5)
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
try:
    with open(f"/proc/{server}/cmdline", "rb") as handle:
        if marker in handle.read():
            os.kill(server, signal.SIGTERM)
except OSError:
    pass
"""


def stop_with_this_process(pid: int, marker: str) -> None:
    """Start a small watcher that terminates process `pid` (if its command line still holds `marker`)
    once this process has ended, however it ended: kill -9 leaves no temporary server behind."""
    if not Path(f"/proc/{pid}/cmdline").exists():  # no /proc: the watcher could not check the pid
        return
    subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHER, str(os.getpid()), str(pid), marker],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped by a Ctrl-C meant for this process
    )


class _HideInputErrorTraceback(logging.Filter):
    """A bad-input failure is logged as one line: its traceback says nothing the message does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InputError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_input_error_tracebacks() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideInputErrorTraceback) for f in logger.filters):
            logger.addFilter(_HideInputErrorTraceback())


def prepare_runtime(workers: int | None = None, dask_address: str | None = None) -> Any:
    """Get ready to run a flow: the Prefect server checked, or the temporary one started (shared with
    local Dask workers, stopped with this process), TensorFlow imported on the side while it starts,
    bad-input tracebacks quieted. Returns the Dask task runner `workers`/`dask_address`
    ask for (None: in process)."""
    from lstm_forecast.flows.cluster import dask_task_runner, is_loopback

    task_runner = dask_task_runner(dask_address, workers)
    check_prefect_server(
        required=dask_address is not None and not is_loopback(dask_address),
        why="Dask workers on other machines cannot reach this machine's temporary Prefect server",
    )
    # With Dask, workers that train import it themselves and predict needs none (numpy applies the saved arrays);
    # a global network, trained in this process, imports it when it is built (prefetched beside the prepare
    # chunks, it gained nothing: both cores are busy then).
    if task_runner is None:
        prefetch_tensorflow_while_prefect_starts()
    start_temporary_server()
    quiet_input_error_tracebacks()
    return task_runner


def exit_now(code: int) -> NoReturn:
    """End the process: exit handlers (Prefect's log and event flushes, logging's) run as usual; the
    interpreter's teardown of every imported module's objects is skipped (everything is already
    written and reported by then, and the teardown was a large part of a cached run's time)."""
    if "prefect.logging.handlers" in sys.modules:  # send the last logs while the server still runs
        from prefect.logging.handlers import APILogHandler

        with contextlib.suppress(Exception):
            APILogHandler().flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)
