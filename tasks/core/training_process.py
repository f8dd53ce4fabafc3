"""A process of its own that trains a panel's network: it imports TensorFlow while the run prepares the data.

TensorFlow's import costs about 3 s of CPU, which a cold panel run used to pay in its flow process when the
network was built, with both cores waiting on it. A run that will train (`flows/plan.py: stored_run`) starts
this process first: a new Python (`python -m` this module) whose import thread runs at a low priority, so that
it takes the moments the stages leave a core idle rather than the stages' time. Training itself runs in the
process's main thread at the usual priority, in a session of its own (Linux's fair share between sessions),
and TensorFlow's thread pools, made at its first operation, are made there too.

`in_training_process` sends a job there (pickled through a pipe) and relays the epoch reports back while the
caller waits. Without a started process (a single series, whose stages before training take less time than
this process takes to import: it imports numpy, pandas and Prefect as well; a Dask worker training networks
of their own) the job runs in the calling process, as before. The process ends with the one that started it;
Ctrl-C reaches only the caller, which stops it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

Job = TypeVar("Job")
Report = Callable[..., None]

# The import thread's nice value (0 to 19: higher yields more): the stages' processes run at 0, and a thread at
# 19 gets about 1.5 % of a core that both want (Linux weighs 19 at 15 against 1024). At 10 (weight 110) a panel's
# first stage started 0.4 s later in turns, and the import was done before training either way.
IMPORT_NICENESS = 19
# glibc's malloc hands blocks above a threshold back to the kernel when freed and trims the heap's free top: a
# new process's training steps then fault in the same fresh pages step after step (a third of its compute
# thread's time was system time). Blocks up to 64 MB are kept in the process instead.
KEPT_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20)}
# A job is two messages: whether its caller waits for the answer (work sent ahead gets none), then the job.
_ANSWERED, _AHEAD = b"answered", b"ahead"
_WAIT_S = 0.2  # how often the caller looks whether the process is still there while it trains

_lock = threading.Lock()  # one job at a time; a caller that finds it busy trains in its own process
_starting = threading.Lock()
_process: TrainingProcess | None = None


class TrainingProcessError(RuntimeError):
    """The training process ended before it answered (killed, or out of memory)."""


class TrainingProcess:
    """The child process and the two ends of its pipes."""

    def __init__(self) -> None:
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_child), str(from_child)],
            pass_fds=(to_child, from_child),
            stdin=subprocess.DEVNULL,
            stdout=2,  # this process's stdout may carry a command's JSON: anything printed there goes to stderr
            env=os.environ | KEPT_MEMORY,
        )
        os.close(to_child)
        os.close(from_child)
        self.jobs = Connection(from_parent, readable=False)
        self.answers = Connection(to_parent, writable=False)

    def call(self, function: Callable[[Job, Report], Any], job: Job, report: Report) -> Any:
        """`function(job, report)` in the process; `report`'s calls there are made here, as they come."""
        self.send(function, job, answered=True)
        while True:
            if not self.answers.poll(_WAIT_S):
                if self.process.poll() is not None:
                    raise TrainingProcessError(f"the training process ended (exit code {self.process.returncode})")
                continue
            try:
                kind, payload = self.answers.recv()
            except EOFError as error:
                raise TrainingProcessError("the training process ended while training") from error
            if kind == "report":
                report(*payload)
            elif kind == "done":
                return payload
            else:
                raise payload

    def send(self, function: Callable[[Job, Report], Any], job: Job, answered: bool) -> None:
        """Send a job: pickled first, so that a job that does not pickle sends nothing."""
        payload = ForkingPickler.dumps((function, job))
        self.jobs.send_bytes(_ANSWERED if answered else _AHEAD)
        self.jobs.send_bytes(payload)

    def stop(self) -> None:
        for end in (self.jobs, self.answers):
            with contextlib.suppress(OSError):
                end.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_training_process() -> None:
    """Start this process's training process, unless it runs: from now on it imports TensorFlow at a low
    priority, and networks trained here train there."""
    global _process
    with _starting:
        if _process is None or _process.process.poll() is not None:
            _process = TrainingProcess()
            atexit.register(_process.stop)


def stop_training_process() -> None:
    """Stop this process's training process, if it runs (the next `start_training_process` starts another)."""
    global _process
    with _starting, _lock:
        if _process is not None:
            _process.stop()
            _process = None


def training_process_started() -> bool:
    """Whether this process started a training process (which imports TensorFlow)."""
    return _process is not None


def in_training_process(function: Callable[[Job, Report], Any], job: Job, report: Report) -> Any:
    """`function(job, report)` in the training process when one was started and is free, else here. The
    function and the job must pickle (a module-level function, arrays and plain objects); `report` stays here.
    An interrupt while it trains stops the process (the next run starts another)."""
    global _process
    if _process is None or not _lock.acquire(blocking=False):
        return function(job, report)
    try:
        process = _process
        if process is None or process.process.poll() is not None:  # it ended while idle: train here
            return function(job, report)
        try:
            return process.call(function, job, report)
        except BaseException as error:
            if not isinstance(error, Exception) or isinstance(error, (TrainingProcessError, OSError)):
                process.stop()  # interrupted, or the process is gone: none of its state is to be trusted
                _process = None
            raise
    finally:
        _lock.release()


def ahead_in_training_process(function: Callable[[Job, Report], Any], job: Job) -> bool:
    """Send `function(job, report)` to the training process when one was started and is free, without waiting for
    it: work that only saves a later job time (its failure is no one's, and its reports go nowhere). The next job
    sent there starts after it. Returns whether it was sent."""
    if _process is None or not _lock.acquire(blocking=False):
        return False
    try:
        process = _process
        if process is None or process.process.poll() is not None:
            return False
        process.send(function, job, answered=False)
        return True
    except Exception:  # noqa: BLE001 - not sent (the process is gone, or the job does not pickle): no one's loss
        return False
    finally:
        _lock.release()


def _import_quietly(done: threading.Event) -> None:
    """Import what training needs, at a low priority (on Linux a thread's nice value is its own)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, IMPORT_NICENESS)
    try:
        from lstm_forecast.tasks.core import fitting  # noqa: F401 - the jobs' functions live there
        from lstm_forecast.tasks.core.networks import import_keras

        import_keras()
    finally:
        done.set()


def serve(jobs: Connection, answers: Connection) -> None:
    """The training process: import in a thread, answer each job in this one (at its usual priority).

    Linux shares the CPU fairly between sessions first (autogroups) and by nice value only within one. The
    process starts in its caller's session, so that the import thread's low priority holds against the stages'
    processes; at its first job it moves to a session of its own, so that training gets an equal share of the
    cores against all of them (a panel's network trained 1-2 s slower beside the statistical sample without).
    SIGINT is ignored: Ctrl-C is the caller's to handle, and it stops this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    imported = threading.Event()
    threading.Thread(target=_import_quietly, args=(imported,), name="import-keras", daemon=True).start()
    while True:
        try:
            answered = jobs.recv_bytes() == _ANSWERED
            message = jobs.recv_bytes()
        except (EOFError, OSError):  # the caller has gone
            return
        if os.getsid(0) != os.getpid():
            with contextlib.suppress(OSError):
                os.setsid()  # a CPU share of its own from the first job on, the import thread's too
        imported.wait()  # unpickling the job imports its modules: not here, beside the import thread
        if not answered:  # sent ahead (`ahead_in_training_process`): no one waits for it, nor for its failure
            with contextlib.suppress(Exception):
                function, job = pickle.loads(message)
                function(job, lambda *values: None)
            continue
        try:
            function, job = pickle.loads(message)
            answer: tuple[str, Any] = ("done", function(job, lambda *values: answers.send(("report", values))))
        except Exception as error:  # noqa: BLE001 - the caller raises it
            answer = ("error", portable(error))
        try:
            answers.send(answer)
        except OSError:  # the caller has gone
            return


def portable(error: Exception) -> Exception:
    """`error`, or a RuntimeError naming it when it would not come back through pickle (an error that holds what
    pickle refuses, or whose class needs arguments its pickled form lacks)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
