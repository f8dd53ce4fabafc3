"""Long-lived processes' housekeeping: the garbage collector's settings, and TensorFlow imported ahead on a
thread (pure, no Prefect)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from lstm_forecast.tasks.core import heap


def test_objects_alive_after_new_imports_are_frozen_once_until_more_modules_are_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "_modules_when_frozen", 0)  # as if modules were imported since the last call
    alive = [[] for _ in range(1000)]
    before = gc.get_freeze_count()
    heap.freeze_loaded_modules()
    frozen = gc.get_freeze_count()
    assert frozen >= before + len(alive)
    more = [[] for _ in range(1000)]
    heap.freeze_loaded_modules()  # nothing imported since: nothing more is frozen
    # (frozen objects are still freed by reference counting, so another thread of the process may lower the count)
    assert gc.get_freeze_count() < frozen + len(more) and len(more) == 1000


def test_young_collections_come_less_often_and_the_older_generations_keep_their_thresholds() -> None:
    saved = gc.get_threshold()
    try:
        heap.collect_less_often()
        assert gc.get_threshold() == (heap.YOUNG_GENERATION_THRESHOLD, *saved[1:])
    finally:
        gc.set_threshold(*saved)


KERAS_AHEAD = """
import json, sys, threading
from lstm_forecast.tasks.core.networks import import_keras, import_keras_ahead
before = "keras" in sys.modules
thread = import_keras_ahead()
started = isinstance(thread, threading.Thread) and thread.name == "import-keras"
keras = import_keras()  # waits for the thread's import
thread.join(60)
print(json.dumps({
    "before": before,
    "started": started,
    "same": keras is sys.modules["keras"] and hasattr(keras, "layers"),
    "done": not thread.is_alive(),
    "again": import_keras_ahead() is None,
}))
"""


def test_keras_imported_ahead_on_a_thread_is_the_one_the_next_import_waits_for_and_is_not_imported_twice() -> None:
    done = subprocess.run([sys.executable, "-c", KERAS_AHEAD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "before": False,
        "started": True,
        "same": True,
        "done": True,
        "again": True,
    }
    assert "oneDNN" not in done.stderr  # imported as quietly as on the caller's thread
