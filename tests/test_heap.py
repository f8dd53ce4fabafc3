"""The garbage collector's settings for long-lived processes (pure, no Prefect)."""

from __future__ import annotations

import gc

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
