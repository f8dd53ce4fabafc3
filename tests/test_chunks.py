"""A panel's per-series stages run for a whole chunk at once (`Stage.chunk`): the chunk path writes exactly the
tables (same keys, equal frames, same metadata) of the per-series path. Pure functions and a store in a temporary
folder, without Prefect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.tasks.core.config import ForecastConfig
from lstm_forecast.tasks.core.store import Store, fingerprint
from lstm_forecast.tasks.stages.evaluate import error_metrics, evaluate, evaluate_chunk, evaluate_predictions
from lstm_forecast.tasks.stages.normalize import fit_model_space
from lstm_forecast.tasks.stages.predict import assemble_predictions
from lstm_forecast.tasks.stages.split import split_bounds
from lstm_forecast.tasks.stages.window import window_targets


def metrics_one_by_one(
    y: np.ndarray, targets: pd.DataFrame, predictions: pd.DataFrame, baselines: dict[str, np.ndarray]
) -> pd.DataFrame:
    """evaluate's metrics as they were computed before they were vectorised: `error_metrics` per split, step
    and model, one record each (the reference the vectorised table must equal to the bit)."""
    fitted = predictions[predictions["split"] != "forecast"]
    horizon = int(fitted["step"].max())
    rows = targets["row"].to_numpy()
    truth = y[rows[:, None] + np.arange(horizon)]
    candidates = {"lstm": fitted["y_hat"].to_numpy().reshape(len(rows), horizon), **baselines}
    inside = ((fitted["y_lo"] <= fitted["y"]) & (fitted["y"] <= fitted["y_hi"])).to_numpy().reshape(len(rows), -1)
    train_stop = int(rows[targets["split"].to_numpy() == "train"].max()) + 1
    mase_scale = float(np.mean(np.abs(np.diff(y[:train_stop]))))
    records = []
    for split_name in ("train", "validation", "test"):
        mask = targets["split"].to_numpy() == split_name
        if not mask.any():
            continue
        for step in range(0, horizon + 1):
            columns = slice(None) if step == 0 else slice(step - 1, step)
            for model, y_hat in candidates.items():
                values = error_metrics(truth[mask][:, columns], y_hat[mask][:, columns], mase_scale)
                if model == "lstm":
                    values["coverage"] = float(np.mean(inside[mask][:, columns]))
                records += [
                    {"split": split_name, "model": model, "step": step, "metric": name, "value": value}
                    for name, value in values.items()
                ]
    return pd.DataFrame.from_records(records)


def panel_series(number: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(number)
    return pd.DataFrame({"ds": np.arange(n, dtype="float64"), "y": 50 + np.cumsum(rng.normal(size=n))})


def fake_predictions(series: pd.DataFrame, targets: pd.DataFrame, horizon: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = series["y"].to_numpy()
    y_hat = y[targets["row"].to_numpy()[:, None] + np.arange(horizon)] + rng.normal(size=(len(targets), horizon))
    return assemble_predictions(series, targets, y_hat, y[-horizon:], np.full(horizon, 0.8))


@pytest.mark.parametrize("horizon", [1, 3])
def test_evaluate_s_vectorised_metrics_equal_error_metrics_per_split_step_and_model_to_the_bit(horizon: int) -> None:
    series = panel_series(0, 700)  # over 128 targets per split: numpy's pairwise sums recurse
    targets = window_targets(series["ds"], split_bounds(700, 0.6, 0.3), 16, horizon)
    y, rows = series["y"].to_numpy(), targets["row"].to_numpy()
    predictions = fake_predictions(series, targets, horizon, 1)
    statistical = y[rows[:, None] + np.arange(horizon)] * 1.01
    statistical[: len(rows) // 2] = np.nan  # forecast from the test origins only, as AutoETS's is
    baselines = {
        "naive": np.repeat(y[rows - 1][:, None], horizon, axis=1),
        "auto_ets": statistical,
        "auto_arima": np.full((len(rows), horizon), np.nan),  # failed: no forecast at all
    }
    expected = metrics_one_by_one(y, targets, predictions, baselines)
    pd.testing.assert_frame_equal(evaluate_predictions(y, targets, predictions, baselines), expected, check_exact=True)


def write_inputs(store: Store, number: int, n: int, config: ForecastConfig) -> dict[str, str]:
    """One series' generate, normalize, window and predict outputs as evaluate reads them; their keys."""
    keys = {name: fingerprint(name, number) for name in ("series", "normalize", "window", "predictions", "model")}
    series = panel_series(number, n)
    bounds = split_bounds(n, config.train_fraction, config.validation_fraction)
    targets = window_targets(series["ds"], bounds, config.look_back, config.horizon, padded=True)
    fit_stop = int(bounds["start"].iloc[-1])
    space = fit_model_space(series["y"].to_numpy(), fit_stop, "level")
    store.write_table("generate", keys["series"], series)
    store.write_table("normalize", keys["normalize"], series, metadata=space.to_dict() | {"forecaster": {}})
    store.write_table("window", keys["window"], targets)
    store.write_table("predict", keys["predictions"], fake_predictions(series, targets, config.horizon, number))
    return keys


def test_evaluate_chunk_writes_the_tables_of_evaluate_run_per_series_and_a_series_missing_an_input_fails_alone(
    tmp_path: Path,
) -> None:
    base = dict(horizon=2, look_back=8, season_length=4, train_fraction=0.8, validation_fraction=0.2)
    lengths = {0: 80, 1: 120, 2: 97, 3: 64}
    stores = {path: Store(tmp_path / path) for path in ("one-by-one", "chunk")}
    work: dict[str, list] = {path: [] for path in stores}
    for path, store in stores.items():
        for number, n in lengths.items():
            # series 1 with the statistical baselines (a global run's sample), the others naive only
            config = ForecastConfig(
                **base, baselines="statistical" if number == 1 else "naive", artifacts_dir=str(tmp_path / path)
            )
            upstream = write_inputs(store, number, n, config)
            if number == 3:
                upstream["window"] = fingerprint("window", "never written")
            work[path].append((config, upstream, fingerprint("evaluate", number)))

    one_by_one = []
    for config, upstream, key in work["one-by-one"]:
        try:
            evaluate.fn(config=config, **upstream, key=key)
            one_by_one.append(None)
        except Exception as error:
            one_by_one.append(error)
    with stores["chunk"].batched():  # as a chunk runs: its outputs written as one pack
        chunked = evaluate_chunk(work["chunk"])

    assert [error is None for error in chunked] == [error is None for error in one_by_one] == [True, True, True, False]
    assert type(chunked[3]) is type(one_by_one[3]) is FileNotFoundError
    assert str(chunked[3]).replace(str(tmp_path / "chunk"), str(tmp_path / "one-by-one")) == str(one_by_one[3])
    assert len(list((tmp_path / "chunk" / "evaluate" / "packs").glob("*.parquet"))) == 1
    for _, _, key in work["chunk"][:3]:
        expected, written = (store.read_table("evaluate", key) for store in stores.values())
        pd.testing.assert_frame_equal(written, expected, check_exact=True)
        assert stores["chunk"].read_table_metadata("evaluate", key) == stores["one-by-one"].read_table_metadata(
            "evaluate", key
        )
    described = stores["chunk"].read_table_metadata("evaluate", work["chunk"][1][2])["statistical_baselines"]
    assert set(described) == {"auto_ets", "auto_arima"}
