"""Where tasks run: in this process, on a local Dask cluster, or on an existing one."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.training_process import KEPT_MEMORY

# One thread per worker process: two workers on two cores each computing with two threads would
# fight over the cores. (TensorFlow uses one thread per process anyway: see tasks/stages/train.py.)
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Dask's worker profiler samples every thread's stack with sys._current_frames() every 10 ms; on
# Python 3.11 that can deadlock with a thread that is exiting (CPython issue 106883): a worker hung
# for good that way here, mid-run. It also costs CPU. Off for the clusters this project starts
# (the workers of a local cluster take their Dask config from the process that starts it).
NO_PROFILER = {"distributed.worker.profile.enabled": False}


def _workers_environ() -> dict[str, Any]:
    """Dask's setting for its workers' environment, set before their process starts: one thread per worker
    (`_ONE_THREAD`, read as numpy loads), and glibc's freed memory kept as the training process keeps it
    (`KEPT_MEMORY`). Dask's default hands freed blocks above 64 kB back to the kernel: a chunk's arrays were
    faulted in afresh task after task, and the two workers of a 10,000-series run spent 7.4 s of CPU in the
    kernel (4.7 s kept)."""
    import dask

    spawn_environ = "distributed.nanny.pre-spawn-environ"
    return {spawn_environ: dask.config.get(spawn_environ) | KEPT_MEMORY | _ONE_THREAD}


# What a chunk task's pickle imports in a worker (Prefect, pandas, pyarrow and this project's stages: about 1.3 s of
# CPU): imported once, by the process a local cluster's workers are forked from (`FORKED_WORKERS`), not by each
# worker when the run's first task arrives. Dask's `preload` of it as a worker starts finds it imported.
WORKER_PRELOAD = "lstm_forecast.flows.many"

# A local cluster's workers forked from one server process (multiprocessing's forkserver) that imported
# `WORKER_PRELOAD` once, not each started afresh to import it: one import instead of one per worker, on cores that
# are busy then (this process's own imports and plan, the training process's TensorFlow). A cold 10,000-series
# run on two cores began training 0.9 s sooner. The server is this process's child; it reads its environment
# when the first worker starts (Dask sets `_workers_environ` in this process just before).
FORKED_WORKERS = {"distributed.worker.multiprocessing-method": "forkserver"}


def _forked_workers() -> dict[str, Any]:
    """`FORKED_WORKERS` where this platform has a forkserver (not on Windows: Dask's default there)."""
    import multiprocessing

    return FORKED_WORKERS if "forkserver" in multiprocessing.get_all_start_methods() else {}


def _fork_workers_from_an_imported_server() -> None:
    """Have the forkserver import what the workers need (`WORKER_PRELOAD`) beside Dask's own list, before it
    starts (a server already running keeps what it imported)."""
    from distributed.utils import get_mp_context

    context = get_mp_context()  # sets Dask's list (distributed and its packages) the first time: ours replaces it
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["distributed", "numpy", "pandas", WORKER_PRELOAD])


def local_cluster_options(workers: int) -> dict[str, Any]:
    """`distributed.LocalCluster` arguments: `workers` processes on 127.0.0.1, one thread each (and one for numpy:
    `_workers_environ`), which hold what a chunk task needs as they start (`WORKER_PRELOAD`)."""
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "preload": [WORKER_PRELOAD],
    }


def _parse_address(address: str) -> Any:
    return urlparse(address if "://" in address else f"tcp://{address}")


def is_loopback(address: str) -> bool:
    """True for a scheduler address on this machine's loopback interface."""
    host = _parse_address(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def runs_on_cluster() -> bool:
    """True when the current flow run's task runner is not the in-process default (it is Dask)."""
    context = FlowRunContext.get()
    return context is not None and not isinstance(context.task_runner, ThreadPoolTaskRunner)


def on_same_cluster(flow_function: Any) -> Any:
    """`flow_function` to call as a subflow on the current flow run's Dask cluster: a subflow otherwise
    starts a task runner of its own and would run its tasks in this process."""
    if not runs_on_cluster():
        return flow_function
    from lstm_forecast.flows.dask_runner import KeptContextsTaskRunner

    address = FlowRunContext.get().task_runner.client.scheduler.address
    return flow_function.with_options(task_runner=KeptContextsTaskRunner(address=address))


def _run_after(function: Callable[[Any], Any], argument: Any, previous: Any) -> Any:
    """`function(argument)`; `previous` (the result of the task before it, unused) makes Dask start it after."""
    return function(argument)


def submit_in_turn(function: Callable[[Any], Any], arguments: list[Any]) -> list[Any]:
    """`function(argument)` for each of `arguments` on the flow run's Dask cluster as plain Dask tasks, one at a
    time in order (each waits for the one before: one core of the cluster works on them, whichever is free);
    returns their futures (hold them: a released future's task may be dropped). None off a cluster."""
    if not runs_on_cluster():
        return []
    client = FlowRunContext.get().task_runner.client
    futures: list[Any] = []
    previous = None
    for argument in arguments:
        previous = client.submit(_run_after, function, argument, previous, pure=False)
        futures.append(previous)
    return futures


def run_on_workers(function: Callable[[], Any]) -> None:
    """`function()` on every worker of the flow run's Dask cluster, in a thread beside the worker's task thread, not
    waited for; nothing off a cluster. For work that only saves time later: its failure is no one's (a worker that
    did not do it does it when it needs it)."""
    if runs_on_cluster():
        with contextlib.suppress(Exception):
            FlowRunContext.get().task_runner.client.run(_in_a_thread, function, wait=False)


async def _in_a_thread(function: Callable[[], Any]) -> None:
    """`function()` off the worker's event loop (`Client.run` waits for nothing only with a coroutine function)."""
    with contextlib.suppress(Exception):
        await asyncio.to_thread(function)


def take_finished(futures: list[Any]) -> list[Any]:
    """The results of those of `futures` (from `submit_in_turn`) that have finished; they leave the list."""
    finished: list[Any] = []
    running: list[Any] = []
    for future in futures:
        (finished if future.status == "finished" else running).append(future)
    futures[:] = running
    return [future.result() for future in finished]


def cancel_futures(futures: list[Any]) -> None:
    """Cancel `futures` (from `submit_in_turn`) on the flow run's Dask cluster, finished or not."""
    if futures:
        FlowRunContext.get().task_runner.client.cancel(futures)


def cluster_slots() -> int:
    """How many tasks the flow run's Dask cluster runs at once (its worker threads); 1 off a cluster."""
    if not runs_on_cluster():
        return 1
    client = FlowRunContext.get().task_runner.client
    return max(1, sum(client.nthreads().values()))


def check_scheduler_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address that is not `tcp://HOST:PORT` or where nothing listens."""
    parsed = _parse_address(address)
    if parsed.scheme != "tcp" or not parsed.hostname or not parsed.port:
        raise InputError(
            f"Dask address {address!r} is not of the form tcp://HOST:PORT",
            "pass the scheduler's address as `dask scheduler` prints it",
        )
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s).close()
    except OSError as error:
        raise InputError(
            f"cannot reach the Dask scheduler at {address} ({error.strerror or error})",
            "start one (`dask scheduler`, then `dask worker ADDRESS`), or use --workers N for a local cluster",
        ) from error


def dask_task_runner(address: str | None, workers: int | None) -> Any:
    """A `DaskTaskRunner` (`KeptContextsTaskRunner`) for an existing scheduler or `workers` local processes
    (those `start_local_cluster` started, if it did: taken once the run first needs them); None for neither."""
    if address is None and workers is None:
        return None
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers} is not a positive number", "pass --workers 1 or more")
    if address is not None:
        check_scheduler_reachable(address)
    from lstm_forecast.flows.dask_runner import KeptContextsTaskRunner

    configure_dask()
    if address is None and workers in _starting:
        return KeptContextsTaskRunner(starting=_starting.pop(workers))
    if address is not None:
        return KeptContextsTaskRunner(address=address)
    return KeptContextsTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_options(workers)
    )


def configure_dask() -> None:
    """Dask's settings for this project's clusters (no profiler; a local cluster's workers forked from a server that
    imported what they need, in their environment: `FORKED_WORKERS`), and its logs at warnings: its own INFO lines
    (about 35 a run: nannies, workers, comms) and, at shutdown, a closed comm's traceback logged at INFO would end
    a successful run's stderr."""
    import dask
    import distributed  # noqa: F401 - its import sets its loggers' levels from its config: set ours after it

    dask.config.set(NO_PROFILER | _forked_workers() | _workers_environ())
    _fork_workers_from_an_imported_server()
    logging.getLogger("distributed").setLevel(logging.WARNING)


# Local clusters being started ahead of their run (`start_local_cluster`), by number of workers; each is
# closed with this process.
_starting: dict[int, concurrent.futures.Future[Any]] = {}


def start_local_cluster(workers: int) -> None:
    """Start a local Dask cluster of `workers` processes in a thread now: its workers start (about 2 s on two idle
    cores, a process each) while this process gets the run ready, and the run's `dask_task_runner` takes it. It is
    closed when this process ends."""
    if workers < 1 or workers in _starting:
        return

    def started() -> Any:
        from distributed import LocalCluster

        configure_dask()  # here: importing Dask's packages takes a while, and this thread waits anyway
        return LocalCluster(**local_cluster_options(workers))

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="local-cluster")
    starting = _starting[workers] = pool.submit(started)
    pool.shutdown(wait=False)  # its thread ends once the cluster is up
    atexit.register(_close_once_started, starting)  # also when the command fails before its run takes the cluster


def _close_once_started(starting: concurrent.futures.Future[Any]) -> None:
    """Close a cluster `start_local_cluster` started, once it is up (a failed start has nothing to close)."""
    with contextlib.suppress(Exception):
        starting.result().close()
