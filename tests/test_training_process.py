"""The training process (tasks/core/training_process.py): a network trained there is the one trained here."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lstm_forecast.tasks.core import fitting, training_process
from lstm_forecast.tasks.core.config import build_config
from lstm_forecast.tasks.core.fitting import Architecture, TrainingJob, WarmUp, fit_and_save, warm_up
from lstm_forecast.tasks.core.store import MODEL_ARRAYS_FILE, Store


@pytest.fixture
def stopped_after():
    yield
    training_process.stop_training_process()


def tiny_job(folder: Path, windows: int = 40) -> TrainingJob:
    config = build_config(
        "smoke", overrides={"horizon": 2, "look_back": 8, "patch": 2, "epochs": 2, "batch_size": 8, "ensemble": 1}
    )
    random = np.random.RandomState(1)
    x = random.random_sample((windows, 4, 2)).astype("float32")
    y = random.random_sample((windows, 2)).astype("float32")
    train, validation = (x[:32], y[:32]), (x[32:], y[32:])
    return TrainingJob(train, validation, (x, y), config, folder, "a" * 24, {"key": "a" * 24})


def stored_arrays(job: TrainingJob) -> dict[str, np.ndarray]:
    with np.load(Store(job.artifacts_dir).path("train", job.key) / MODEL_ARRAYS_FILE) as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_a_network_trained_in_the_training_process_is_the_one_trained_here(tmp_path, stopped_after) -> None:
    here = tiny_job(tmp_path / "here")
    reports_here: list[tuple] = []
    fit_here = fit_and_save(here, lambda *report: reports_here.append(report))

    training_process.start_training_process()
    assert training_process.training_process_started()
    child = training_process._process.process
    there = tiny_job(tmp_path / "there")
    reports_there: list[tuple] = []
    fit_there = training_process.in_training_process(fit_and_save, there, lambda *r: reports_there.append(r))

    assert child.poll() is None
    assert os.getsid(child.pid) != os.getsid(0)  # its first job moved it to a session (a CPU share) of its own
    assert [epoch for epoch, _, _ in reports_there] == [1, 2]  # each epoch reported here, as it ended there
    assert [losses for _, losses, _ in reports_there] == [losses for _, losses, _ in reports_here]
    assert fit_there["history"] == fit_here["history"]
    assert fit_there["forecaster"]["epochs"] == fit_here["forecaster"]["epochs"]
    # The saved weights, in the order saved (Keras numbers its layers' names per process: those differ).
    weights_here, weights_there = (
        [values for values in stored_arrays(job).values() if values.dtype.kind == "f"] for job in (here, there)
    )
    assert len(weights_here) == len(weights_there) >= 4
    for values_here, values_there in zip(weights_here, weights_there, strict=True):
        np.testing.assert_array_equal(values_here, values_there)

    # Work sent ahead runs before the next job; when it fails, it is no one's and the next job runs.
    reseeded = replace(here, config=here.config.model_copy(update={"seed": 3}))
    fit_reseeded_here = fit_and_save(replace(reseeded, artifacts_dir=tmp_path / "reseeded-here"), lambda *r: None)
    assert training_process.ahead_in_training_process(warm_up, WarmUp(None))  # fails there
    assert not training_process.ahead_in_training_process(warm_up, lambda: None)  # does not pickle: not sent
    assert training_process.ahead_in_training_process(warm_up, WarmUp(reseeded.config))
    warmed = replace(reseeded, artifacts_dir=tmp_path / "warmed")
    fit_warmed = training_process.in_training_process(fit_and_save, warmed, lambda *r: None)
    assert fit_warmed["history"] == fit_reseeded_here["history"] != fit_here["history"]

    # An error there is raised here, and the process serves the next job.
    broken = replace(here, train_set=(here.train_set[0][:, :, 0], here.train_set[1]))  # windows of one channel
    with pytest.raises(ValueError):
        training_process.in_training_process(fit_and_save, broken, lambda *report: None)
    assert child.poll() is None

    # A process that ended while idle is not waited on: the next job trains here.
    child.kill()
    child.wait()
    started = time.perf_counter()
    again = tiny_job(tmp_path / "again")
    assert training_process.in_training_process(fit_and_save, again, lambda *r: None)["history"] == fit_here["history"]
    assert time.perf_counter() - started < 60
    assert not (training_process._process and training_process._process.process.poll() is None)


def test_an_error_that_would_not_come_back_through_pickle_comes_back_named() -> None:
    plain = ValueError("windows of the wrong shape")
    assert training_process.portable(plain) is plain
    held = RuntimeError("a lock held")
    held.lock = threading.Lock()  # pickle refuses it
    renamed = training_process.portable(held)
    assert type(renamed) is RuntimeError and renamed is not held and str(renamed) == "RuntimeError: a lock held"


def test_the_training_process_imports_no_prefect() -> None:
    """What the training process imports (`_import_quietly`, and a job's functions) leaves Prefect out: its import
    cost about 0.9 s of CPU while the run's stages wanted the cores."""
    import subprocess
    import sys

    imports = "import sys; from lstm_forecast.tasks.core import fitting, networks, training_process"
    check = f"{imports}; print('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_network_built_and_traced_ahead_trains_as_a_fresh_build_does(tmp_path) -> None:
    job = tiny_job(tmp_path / "fresh")
    job = replace(job, config=job.config.model_copy(update={"seed": 5}))
    fitting._kept_networks.clear()
    fresh = fit_and_save(job, lambda *report: None)
    fitting._kept_networks.clear()
    warm_up(WarmUp(job.config))  # a fit of one batch of zeros, then kept as built
    assert Architecture.of(job.config) in fitting._kept_networks
    warmed_job = replace(job, artifacts_dir=tmp_path / "warmed")
    warmed = fit_and_save(warmed_job, lambda *report: None)
    assert warmed["history"] == fresh["history"]
    weights_fresh, weights_warmed = (  # in the order saved (Keras numbers its layers' names per build)
        [values for values in stored_arrays(saved).values() if values.dtype.kind == "f"] for saved in (job, warmed_job)
    )
    assert len(weights_fresh) == len(weights_warmed) >= 4
    for values_fresh, values_warmed in zip(weights_fresh, weights_warmed, strict=True):
        np.testing.assert_array_equal(values_fresh, values_warmed)
