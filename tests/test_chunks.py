"""A panel's per-series stages run for a whole chunk at once (`Stage.chunk`): the chunk path writes exactly the
tables (same keys, equal frames, same metadata) of the per-series path. Pure functions and a store in a temporary
folder, without Prefect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lstm_forecast.tasks.core.config import ForecastConfig, with_fields
from lstm_forecast.tasks.core.space import fit_model_space
from lstm_forecast.tasks.core.store import Store, fingerprint
from lstm_forecast.tasks.core.windows import split_bounds, window_targets
from lstm_forecast.tasks.stages.evaluate import (
    MetricsInputs,
    error_metrics,
    evaluate,
    evaluate_chunk,
    evaluate_predictions,
    metrics_of_many,
    statistical_ahead,
)
from lstm_forecast.tasks.stages.normalize import scale_series
from lstm_forecast.tasks.stages.predict import assemble_predictions


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


def test_metrics_of_many_series_scored_together_equal_error_metrics_per_series_to_the_bit() -> None:
    """Series whose splits hold as many origins are scored together; each one's table is still the reference's."""
    horizon, cases, expected = 3, [], []
    for number, n in enumerate([700, 700, 700, 300, 300, 700]):  # 700: over 128 targets per split
        series = panel_series(number, n)
        targets = window_targets(series["ds"], split_bounds(n, 0.6, 0.3), 16, horizon)
        y, rows = series["y"].to_numpy(), targets["row"].to_numpy()
        predictions = fake_predictions(series, targets, horizon, number)
        baselines = {"naive": np.repeat(y[rows - 1][:, None], horizon, axis=1)}
        if number == 5:  # a model with missing forecasts: scored alone, beside the others
            baselines["auto_ets"] = np.where(np.arange(len(rows))[:, None] < 5, np.nan, baselines["naive"] * 1.01)
        fitted = predictions[predictions["split"] != "forecast"]
        columns = {name: fitted[name].to_numpy() for name in ("y", "y_hat", "y_lo", "y_hi")}
        cases.append(MetricsInputs(y, rows, targets["split"].to_numpy(), columns, horizon, baselines))
        expected.append(metrics_one_by_one(y, targets, predictions, baselines))
    for columns, reference in zip(metrics_of_many(cases), expected, strict=True):
        pd.testing.assert_frame_equal(pd.DataFrame(columns), reference, check_exact=True)


def write_inputs(store: Store, number: int, n: int, config: ForecastConfig) -> dict[str, str]:
    """One series' generate, normalize, window and predict outputs as evaluate and predict read them; their
    keys (the forecaster's model space is the model's)."""
    keys = {name: fingerprint(name, number) for name in ("series", "normalize", "window", "predictions", "model")}
    series = panel_series(number, n)
    bounds = split_bounds(n, config.train_fraction, config.validation_fraction)
    targets = window_targets(series["ds"], bounds, config.look_back, config.horizon, padded=True)
    fit_stop = int(bounds["start"].iloc[-1])
    space = fit_model_space(series["y"].to_numpy(), fit_stop, "level")
    store.write_table("generate", keys["series"], series)
    store.write_table(
        "normalize", keys["normalize"], series, metadata=space.to_dict() | {"forecaster": space.to_dict()}
    )
    store.write_table("window", keys["window"], targets)
    store.write_table("predict", keys["predictions"], fake_predictions(series, targets, config.horizon, number))
    return keys


def errors_one_by_one(stage_task: Any, work: list[tuple[ForecastConfig, dict, str]]) -> list[Exception | None]:
    """A stage's task function run series by series on `(config, inputs' keys, key)`: None or each one's error,
    as a chunk function reports them."""
    errors: list[Exception | None] = []
    for config, upstream, key in work:
        try:
            stage_task.fn(config=config, **upstream, key=key)
            errors.append(None)
        except Exception as error:
            errors.append(error)
    return errors


def test_evaluate_chunk_writes_the_tables_of_evaluate_run_per_series_and_a_series_missing_an_input_fails_alone(
    tmp_path: Path,
) -> None:
    base = dict(horizon=2, look_back=8, season_length=4, train_fraction=0.8, validation_fraction=0.2)
    lengths = {0: 80, 1: 120, 2: 97, 3: 64}
    stores = {path: Store(tmp_path / path) for path in ("one-by-one", "chunk", "ahead")}
    work: dict[str, list] = {path: [] for path in stores}
    for path, store in stores.items():
        for number, n in lengths.items():
            # series 1 with the statistical baselines (a global run's sample), the others naive only
            config = ForecastConfig(
                **base, baselines="statistical" if number == 1 else "naive", artifacts_dir=str(tmp_path / path)
            )
            with store.batched():  # the chunk's inputs in packs, as a panel's earlier chunks write them
                upstream = write_inputs(store, number, n, config)
            if number == 3:
                upstream["window"] = fingerprint("window", "never written")
            work[path].append((config, upstream, fingerprint("evaluate", number)))

    one_by_one = errors_one_by_one(evaluate, work["one-by-one"])
    with stores["chunk"].batched():  # as a chunk runs: its outputs written as one pack
        chunked = evaluate_chunk(work["chunk"])
    # The statistical baselines computed before the model exists (as a global run does while its network
    # trains), then handed to the chunk: the same tables. Series 3, whose window is missing, is left out.
    before_model = [(c, {k: u[k] for k in ("series", "window")}, str(i)) for i, (c, u, _) in enumerate(work["ahead"])]
    ahead = statistical_ahead(before_model)
    assert sorted(ahead) == ["1"] and set(ahead["1"][0]) == {"auto_ets", "auto_arima"}
    with stores["ahead"].batched():
        from_ahead = evaluate_chunk(work["ahead"], ahead=[ahead.get(str(i)) for i in range(len(work["ahead"]))])
    assert [error is None for error in from_ahead] == [True, True, True, False]
    doctored = Store(tmp_path / "doctored")  # the chunk scores what it is handed, not forecasts of its own
    with doctored.batched():
        write_inputs(doctored, 1, lengths[1], work["ahead"][1][0])
        forecasts, described, future = ahead["1"]
        config, upstream, key = work["ahead"][1]
        handed = ({name: values + 1.0 for name, values in forecasts.items()}, described, future)
        evaluate_chunk(
            [(config.model_copy(update={"artifacts_dir": str(tmp_path / "doctored")}), upstream, key)], [handed]
        )

    def auto_ets_test_mae(store: Store) -> float:
        table = store.read_table("evaluate", key)
        chosen = (table["split"] == "test") & (table["model"] == "auto_ets") & (table["step"] == 0)
        return float(table.loc[chosen & (table["metric"] == "mae"), "value"].iloc[0])

    assert auto_ets_test_mae(doctored) != auto_ets_test_mae(stores["ahead"])

    assert [error is None for error in chunked] == [error is None for error in one_by_one] == [True, True, True, False]
    assert type(chunked[3]) is type(one_by_one[3]) is FileNotFoundError
    assert str(chunked[3]).replace(str(tmp_path / "chunk"), str(tmp_path / "one-by-one")) == str(one_by_one[3])
    assert len(list((tmp_path / "chunk" / "evaluate" / "packs").glob("*.parquet"))) == 1
    for _, _, key in work["chunk"][:3]:
        expected, *written = (store.read_table("evaluate", key) for store in stores.values())
        for table in written:
            pd.testing.assert_frame_equal(table, expected, check_exact=True)
        for path in ("chunk", "ahead"):
            assert stores[path].read_table_metadata("evaluate", key) == stores["one-by-one"].read_table_metadata(
                "evaluate", key
            )
    described = stores["chunk"].read_table_metadata("evaluate", work["chunk"][1][2])["statistical_baselines"]
    assert set(described) == {"auto_ets", "auto_arima"}


def window_targets_by_split(
    ds: pd.Series, bounds: pd.DataFrame, look_back: int, horizon: int, offset: int, padded: bool
) -> pd.DataFrame:
    """window_targets as it was before it was vectorised: a frame per split, concatenated (the reference)."""
    frames = []
    for split_name, start, stop in bounds[["split", "start", "stop"]].itertuples(index=False):
        context = min(look_back, 8) if padded else look_back
        rows = np.arange(max(int(start), context + offset), int(stop) - horizon + 1)
        frames.append(pd.DataFrame({"row": rows, "ds": ds.to_numpy()[rows], "split": split_name}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize(
    ("n", "look_back", "horizon", "offset", "padded", "dates"),
    [
        (40, 8, 1, 0, False, False),
        (40, 16, 3, 1, True, True),
        (200, 52, 13, 0, True, False),
        (30, 12, 4, 0, True, True),
    ],
)
def test_window_targets_are_those_of_a_frame_per_split(
    n: int, look_back: int, horizon: int, offset: int, padded: bool, dates: bool
) -> None:
    ds = pd.Series(pd.date_range("2024-01-01", periods=n, freq="W") if dates else np.arange(n) * 0.5)
    bounds = split_bounds(n, 0.8, 0.2)
    targets = window_targets(ds, bounds, look_back, horizon, offset, padded)
    expected = window_targets_by_split(ds, bounds, look_back, horizon, offset, padded)
    pd.testing.assert_frame_equal(targets, expected, check_exact=True)
    no_validation = split_bounds(n, 0.8, 0.0)  # an empty validation split: no targets there, none needed
    pd.testing.assert_frame_equal(
        window_targets(ds, no_validation, look_back, horizon, offset, padded),
        window_targets_by_split(ds, no_validation, look_back, horizon, offset, padded),
        check_exact=True,
    )


def test_split_normalize_and_window_chunks_write_the_tables_of_their_stages_run_per_series(tmp_path: Path) -> None:
    from lstm_forecast.tasks.stages.normalize import normalize, normalize_chunk
    from lstm_forecast.tasks.stages.split import split, split_chunk
    from lstm_forecast.tasks.stages.window import window, window_chunk

    panel = {
        "numeric": (panel_series(0, 90), dict(transform="level")),
        "dates, seasons, log": (
            panel_series(1, 120).assign(ds=pd.date_range("2020-01-05", periods=120, freq="W")),
            dict(transform="auto", seasons=(4,), log="auto"),
        ),
        "differenced": (panel_series(2, 75), dict(transform="diff", scope="local")),
        "too short": (panel_series(3, 12), dict(transform="level")),
    }
    stages = {
        "split": (split, split_chunk),
        "normalize": (normalize, normalize_chunk),
        "window": (window, window_chunk),
    }
    stores = {path: Store(tmp_path / path) for path in ("one-by-one", "chunk")}
    keys: dict[str, dict[str, dict[str, str]]] = {path: {} for path in stores}
    configs: dict[str, dict[str, ForecastConfig]] = {path: {} for path in stores}
    for path, store in stores.items():
        for name, (series, fields) in panel.items():
            configs[path][name] = ForecastConfig(
                **({"horizon": 2, "look_back": 8, "scope": "global"} | fields), artifacts_dir=str(tmp_path / path)
            )
            keys[path][name] = {"series": fingerprint("generate", name)}
            with store.batched():  # in a pack, as the generate chunks write them
                store.write_table("generate", keys[path][name]["series"], series)
    failed: dict[str, dict[str, str]] = {path: {} for path in stores}
    for stage, (task_function, chunk_function) in stages.items():
        for path in stores:
            going = [name for name in panel if name not in failed[path]]
            for name in going:
                keys[path][name][stage] = fingerprint(stage, name)
            arguments = {
                "split": ("series",),
                "normalize": ("series", "split"),
                "window": ("series", "split", "normalize"),
            }
            work = [
                (configs[path][name], {a: keys[path][name][a] for a in arguments[stage]}, keys[path][name][stage])
                for name in going
            ]
            if path == "chunk":
                with stores[path].batched():
                    errors = chunk_function(work)
            else:
                errors = errors_one_by_one(task_function, work)
            failed[path] |= {name: str(error) for name, error in zip(going, errors, strict=True) if error}
    assert failed["chunk"] == failed["one-by-one"] and list(failed["chunk"]) == ["too short"]
    assert "too few" in failed["chunk"]["too short"]
    for stage in stages:
        assert not list((tmp_path / "chunk" / stage).glob("*.parquet"))  # packs only (one per column layout)
        for name in panel:
            if name in failed["chunk"]:
                continue
            key = keys["chunk"][name][stage]
            expected, written = (store.read_table(stage, key) for store in stores.values())
            pd.testing.assert_frame_equal(written, expected, check_exact=True)
            metadata = [store.read_table_metadata(stage, key) for store in stores.values()]
            assert metadata[0] == metadata[1]
    for name, (series, _) in panel.items():  # the scaled table is the series with its model-space values added
        if name in failed["chunk"]:
            continue
        config, store = configs["chunk"][name], stores["chunk"]
        bounds = store.read_table("split", keys["chunk"][name]["split"])
        fit_stop = int(bounds["start"].iloc[-1])
        season_stop = fit_stop if config.scope == "global" else int(bounds["start"].iloc[1])
        seasons = tuple(config.seasons or ())
        scaled, _ = scale_series(series, fit_stop, config.transform, seasons, config.log, season_stop)
        pd.testing.assert_frame_equal(store.read_table("normalize", keys["chunk"][name]["normalize"]), scaled)
    seasonal = stores["chunk"].read_table_metadata("normalize", keys["chunk"]["dates, seasons, log"]["normalize"])
    assert len(seasonal["seasonal"]) == 1
    # a chunk whose transforms are all fixed reads no model space: the same windows
    fixed = ["numeric", "differenced"]
    again = {name: fingerprint("window again", name) for name in fixed}
    inputs = ("series", "split", "normalize")
    work = [(configs["chunk"][n], {a: keys["chunk"][n][a] for a in inputs}, again[n]) for n in fixed]
    with stores["chunk"].batched():
        assert window_chunk(work) == [None, None]
    for name in fixed:
        written = stores["chunk"].read_table("window", again[name])
        pd.testing.assert_frame_equal(
            written, stores["one-by-one"].read_table("window", keys["one-by-one"][name]["window"])
        )


@pytest.mark.parametrize(
    "raw",
    [
        pd.DataFrame({"t": np.arange(50) * 0.1, "v": np.sin(np.arange(50.0))}),  # regular float time
        pd.DataFrame({"t": np.r_[np.arange(20), np.arange(25, 40)], "v": np.arange(35)}),  # int time, a gap; int values
        pd.DataFrame({"t": [3.0, 1.0, 2.0, 4.0], "v": [3.0, 1.0, 2.0, 4.0]}),  # out of order
        pd.DataFrame({"t": [1.0, 2.0, 2.0, 3.0], "v": [1.0, 2.0, 5.0, 3.0]}),  # a repeated time
        pd.DataFrame({"t": [1.0, 2.0, 3.0, 4.0], "v": [1.0, np.nan, 3.0, 4.0]}),  # a missing value
        pd.DataFrame({"t": ["2024-01-01", "2024-01-02", "2024-01-03"], "v": [1.0, 2.0, 3.0]}),  # dates
    ],
)
def test_cleaning_numbers_in_order_with_numpy_gives_what_the_general_cleaning_gives(raw: pd.DataFrame) -> None:
    from lstm_forecast.tasks.stages.generate import clean_any, clean_series

    series, notes = clean_series(raw, "t", "v", "interpolate", "mean")
    expected, expected_notes = clean_any(raw, "t", "v", "interpolate", "mean")
    pd.testing.assert_frame_equal(series, expected, check_exact=True)
    assert notes == expected_notes


def member_arrays(member: Any, config: ForecastConfig, split: str | None, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """What a global model trains on from one member series, built from its own arrays alone: the last `cap`
    windows of `split` (None: every window, in the forecaster's space)."""
    from lstm_forecast.tasks.core.embedding import training_rows, with_series_channel

    space = member.full_space if split is None else member.space
    z = space.encode(member.y)
    rows = np.asarray(member.targets["row"])
    rows = (rows if split is None else rows[np.asarray(member.targets["split"]) == split])[-cap:]
    inputs = space.inputs(z, rows, config.look_back, config.patch, member.features)
    if member.series_row:
        own = member.series_row if split == "validation" else training_rows(member.series_row, len(rows), config.seed)
        inputs = with_series_channel(inputs, own)
    return inputs, space.targets(z, rows, config.horizon)


@pytest.mark.parametrize("extras", ["none", "features and embedding"])
def test_a_global_model_trains_on_each_series_windows_cut_at_once_from_its_series_read_at_once(
    tmp_path: Path, extras: str
) -> None:
    from lstm_forecast.tasks.core.space import fit_model_space, read_model_space
    from lstm_forecast.tasks.stages.train import MemberSeries, stacked_splits

    store = Store(tmp_path)
    config = ForecastConfig(horizon=2, look_back=8, patch=2, train_fraction=0.8, validation_fraction=0.2)
    lengths = (80, 120, 97, 40)
    with store.batched():  # in a pack, as a panel's chunks write them
        keys = [write_inputs(store, number, n, config) for number, n in enumerate(lengths)]
    values = store.read_columns("generate", [k["series"] for k in keys], ("y",))
    origins = store.read_columns("window", [k["window"] for k in keys], ("row", "split"))
    rng = np.random.default_rng(0)
    members = []
    for number, (k, n) in enumerate(zip(keys, lengths, strict=True)):
        y = values[k["series"]]["y"]
        # 'level' for the first two, then 'diff' and 'none': one member's windows must not depend on another's kind
        kind = ("level", "level", "diff", "none")[number]
        space = read_model_space(store, k["normalize"]) if kind == "level" else fit_model_space(y, n - 10, kind)
        members.append(
            MemberSeries(
                y,
                origins[k["window"]],
                space,
                read_model_space(store, k["normalize"], forecaster=True),
                rng.normal(size=(n, 3)) if extras != "none" else None,
                number + 1 if extras != "none" else 0,
            )
        )
    one_by_one = [  # the same members read one output at a time
        MemberSeries(
            store.read_table("generate", k["series"])["y"].to_numpy(),
            store.read_table("window", k["window"]),
            m.space,
            m.full_space,
            m.features,
            m.series_row,
        )
        for k, m in zip(keys, members, strict=True)
    ]
    wide = with_fields(config, look_back=16, patch=4)  # a global look-back beyond the first origins: windows padded
    assert min(int(np.asarray(m.targets["row"]).min()) for m in members) < wide.look_back
    for cap in (5, 1000):
        caps = {"train": cap, "validation": cap, None: cap}
        at_once = stacked_splits(members, wide, caps)
        assert stacked_splits(one_by_one, wide, caps).keys() == at_once.keys()
        for split, (x, y) in stacked_splits(one_by_one, wide, caps).items():
            parts = [member_arrays(m, wide, split, cap) for m in members]
            np.testing.assert_array_equal(x, np.concatenate([inputs for inputs, _ in parts]))
            np.testing.assert_array_equal(y, np.concatenate([targets for _, targets in parts]))
            np.testing.assert_array_equal(at_once[split][0], x)
            np.testing.assert_array_equal(at_once[split][1], y)


def test_a_pack_is_the_same_file_as_when_each_output_was_labelled_before_they_were_put_together() -> None:
    from lstm_forecast.tasks.core.store import KEY_COLUMN, _parquet_bytes, pack_table

    frames = {
        fingerprint("b", 1): panel_series(1, 5).assign(split="train"),
        fingerprint("a", 2): panel_series(2, 3).assign(split="test"),
        fingerprint("c", 3): panel_series(3, 0).assign(split="test"),  # an output without rows
        fingerprint("d", 4): panel_series(4, 2).assign(split="validation"),
    }
    labelled = pd.concat([frame.assign(**{KEY_COLUMN: key}) for key, frame in frames.items()], ignore_index=True)
    labelled[KEY_COLUMN] = labelled[KEY_COLUMN].astype("category")
    labelled["split"] = labelled["split"].astype("category")  # strings are packed as a dictionary
    labelled.attrs["strings"] = ["split"]
    packed = pack_table(frames)
    pd.testing.assert_frame_equal(packed, labelled, check_exact=True)
    assert packed.attrs["strings"] == ["split"]
    assert _parquet_bytes(packed, {"keys": list(frames)}) == _parquet_bytes(labelled, {"keys": list(frames)})


def test_gaps_in_numeric_time_are_counted_as_the_pandas_steps_count_them() -> None:
    from lstm_forecast.tasks.core.calendar import time_gaps

    rng = np.random.default_rng(0)
    regular = np.arange(201) * 0.1
    cases = [
        pd.Series(regular),
        pd.Series(np.r_[regular[:50], regular[60:]]),  # a gap
        pd.Series(np.cumsum(rng.choice([1.0, 1.0, 1.0, 2.0], size=300))),  # even count of steps, many gaps
        pd.Series(regular * (1 + rng.normal(scale=1e-6, size=201))),  # steps near the tolerance
    ]
    for ds in cases:
        steps = ds.diff().iloc[1:]
        expected = int(np.sum(~np.isclose(steps.to_numpy(), steps.median(), rtol=1e-6, atol=0.0)))
        assert time_gaps(ds, None) == expected


def test_the_flow_reads_the_pooled_metrics_of_many_series_once_as_each_series_table_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lstm_forecast.flows.plan import evaluate_rows
    from lstm_forecast.tasks.core.store import KEY_COLUMN

    store = Store(tmp_path)
    rng = np.random.default_rng(0)
    keys = [fingerprint("evaluate", number) for number in range(5)]
    with store.batched():
        for number, key in enumerate(keys):
            steps = np.repeat(np.arange(3), 2 + number)
            store.write_table("evaluate", key, pd.DataFrame({"step": steps, "value": rng.normal(size=len(steps))}))
    reads: list[int] = []
    read_tables = store.read_tables
    monkeypatch.setattr(Store, "read_tables", lambda self, *a, **kw: reads.append(1) or read_tables(*a, **kw))
    rows = evaluate_rows(store, keys[1:])
    for key in keys[1:]:  # each output's rows of all steps pooled, as its own table holds them
        own = store.read_table("evaluate", key)
        expected = own[own["step"] == 0].reset_index(drop=True)
        found = rows[rows[KEY_COLUMN] == key].drop(columns=KEY_COLUMN).reset_index(drop=True)
        pd.testing.assert_frame_equal(found, expected, check_exact=True)
    assert len(reads) == 1 and set(rows[KEY_COLUMN]) == set(keys[1:])
    assert set(evaluate_rows(store, keys[2:4])[KEY_COLUMN]) == set(keys[2:4]) and len(reads) == 1  # read already
    assert set(evaluate_rows(store, keys)[KEY_COLUMN]) == set(keys) and len(reads) == 2  # one more output: read


def test_outputs_written_as_one_table_make_the_same_pack_as_written_one_by_one(tmp_path: Path) -> None:
    frames = {
        fingerprint("predict", number): panel_series(number, n).assign(split=np.where(np.arange(n) < 3, "tr", "te"))
        for number, n in enumerate((7, 0, 4, 9))  # the second output has no rows
    }
    keys, lengths = list(frames), [len(frame) for frame in frames.values()]
    one_by_one, at_once, unbatched = (Store(tmp_path / name) for name in ("one-by-one", "at-once", "unbatched"))
    with one_by_one.batched():
        for key, frame in frames.items():
            one_by_one.write_table("predict", key, frame)
    with at_once.batched():
        at_once.write_tables("predict", keys, pd.concat(list(frames.values()), ignore_index=True), lengths)
        held = at_once.read_table("predict", keys[2])  # readable inside the batch, as a table written alone
        pd.testing.assert_frame_equal(held, frames[keys[2]], check_exact=True)
    packs = [sorted((tmp_path / name / "predict" / "packs").glob("*.parquet")) for name in ("one-by-one", "at-once")]
    assert len(packs[0]) == len(packs[1]) == 1
    assert packs[0][0].read_bytes() == packs[1][0].read_bytes()
    unbatched.write_tables("predict", keys, pd.concat(list(frames.values()), ignore_index=True), lengths)
    for key, frame in frames.items():  # outside a batch: a file each
        assert unbatched.path("predict", key).exists()
        pd.testing.assert_frame_equal(unbatched.read_table("predict", key), frame, check_exact=True)
    with pytest.raises(ValueError, match="4 outputs of 20 rows in all given 19 rows"):
        at_once.write_tables("predict", keys, pd.concat(list(frames.values()), ignore_index=True).iloc[1:], lengths)


def test_predict_chunk_writes_the_tables_of_predict_run_per_series_and_a_series_missing_an_input_fails_alone(
    tmp_path: Path,
) -> None:
    from lstm_forecast.tasks.core.fitting import build_model, save_models
    from lstm_forecast.tasks.stages.predict import predict, predict_chunk

    config = ForecastConfig(
        horizon=2, look_back=8, patch=2, units=4, train_fraction=0.8, validation_fraction=0.2, scope="global"
    )
    model_key = fingerprint("train", "untrained")
    stores = {path: Store(tmp_path / path) for path in ("one-by-one", "chunk")}
    work: dict[str, list] = {path: [] for path in stores}
    for path, store in stores.items():
        own = config.model_copy(update={"artifacts_dir": str(tmp_path / path)})
        metadata = {"config": own.model_dump(mode="json"), "forecaster": {}}
        store.write_model(model_key, save_models(build_model(own), build_model(own)), metadata)
        for number, n in enumerate((80, 120, 97, 64)):
            with store.batched():  # the chunk's inputs in packs, as a panel's earlier chunks write them
                upstream = {k: v for k, v in write_inputs(store, number, n, own).items() if k != "predictions"}
            if number == 2:
                upstream["window"] = fingerprint("window", "never written")
            work[path].append((own, upstream | {"model": model_key}, fingerprint("predict", number)))
    one_by_one = errors_one_by_one(predict, work["one-by-one"])
    packs = tmp_path / "chunk" / "predict" / "packs"
    before = set(packs.glob("*.parquet"))  # the inputs' fake predictions, not read here
    with stores["chunk"].batched():  # as a chunk runs: its outputs written as one pack
        chunked = predict_chunk(work["chunk"])
    assert [error is None for error in chunked] == [error is None for error in one_by_one] == [True, True, False, True]
    assert type(chunked[2]) is type(one_by_one[2]) is FileNotFoundError
    assert len(set(packs.glob("*.parquet")) - before) == 1
    for _, _, key in work["chunk"]:
        if key == work["chunk"][2][2]:
            continue
        expected, written = (store.read_table("predict", key) for store in stores.values())
        # one forward pass over every series' windows: float32 sums in other batches, the last digits may differ
        pd.testing.assert_frame_equal(written, expected, check_exact=False, rtol=1e-6)
        assert list(written.columns) == ["ds", "y", "y_hat", "y_lo", "y_hi", "split", "step"]


@pytest.mark.parametrize("kind", ["parquet, numeric time", "parquet, timestamps", "csv, dates as text"])
def test_generate_chunk_writes_the_series_keys_and_facts_of_generate_run_per_series(tmp_path: Path, kind: str) -> None:
    from lstm_forecast.tasks.core.caching import stored_output
    from lstm_forecast.tasks.core.defaults import stored_facts
    from lstm_forecast.tasks.stages.generate import clean_chunk_columns, generate, generate_chunk

    def weekly(number: int, n: int) -> pd.DataFrame:
        series = panel_series(number, n)
        if kind != "parquet, numeric time":
            series["ds"] = pd.date_range("2019-01-06", periods=n, freq="W").to_numpy()
        return series

    gapped = weekly(6, 70).drop(index=[20, 21])  # a gap: kept, and noted
    unsorted = weekly(2, 60).iloc[::-1]
    repeated = pd.concat([weekly(3, 60), weekly(3, 60).iloc[[10]]])
    missing = weekly(4, 60)
    missing.loc[5, "y"] = np.nan
    parts = {
        "plain": weekly(0, 80),
        "other": weekly(1, 64),
        "gapped": gapped,
        "unsorted": unsorted,  # sorted, and noted
        "repeated": repeated,  # refused (duplicate_policy 'error')
        "missing": missing,  # interpolated
        "too short": weekly(5, 9),
    }
    table = pd.concat([part.assign(unique_id=name) for name, part in parts.items()], ignore_index=True)
    if kind.startswith("csv"):
        path = tmp_path / "panel.csv"
        table.assign(ds=table["ds"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    else:
        path = tmp_path / "panel.parquet"
        table.to_parquet(path)
    names = [*parts, "not in the file"]
    outcomes: dict[str, dict[str, Any]] = {}
    for way in ("one-by-one", "chunk"):
        store = Store(tmp_path / way)
        configs = {
            name: ForecastConfig(
                input=str(path), series_id=name, horizon=4, scope="global", artifacts_dir=str(store.root)
            )
            for name in names
        }
        work = [(config, {}, str(stored_output("generate", config, {})[0])) for config in configs.values()]
        with store.batched():
            if way == "chunk":
                found = generate_chunk(work)
                plain = [work[i][0].series_id for indices, _, _ in clean_chunk_columns(work) for i in indices]
            else:
                found = []
                for config in configs.values():
                    try:
                        key = generate.fn(config)
                        found.append((key, stored_facts(config, store, key)))
                    except Exception as error:
                        found.append(error)
        outcomes[way] = {
            name: outcome if isinstance(outcome, tuple) else str(outcome)
            for name, outcome in zip(names, found, strict=True)
        }
        for name, outcome in outcomes[way].items():
            if isinstance(outcome, tuple):
                key = outcome[0]
                assert store.read_source(work[names.index(name)][2]) == key
                outcomes[way][name] += (store.read_table("generate", key), store.read_table_metadata("generate", key))
    # the series that need no cleaning took the chunk's way (one of them too short); the rest were cleaned one by one
    assert plain == ["plain", "other", "gapped", "too short"]
    assert list(outcomes["chunk"]) == list(outcomes["one-by-one"])
    for name, expected in outcomes["one-by-one"].items():
        written = outcomes["chunk"][name]
        if isinstance(expected, str):
            assert written == expected, name
            continue
        assert written[:2] == expected[:2], name  # key and facts
        pd.testing.assert_frame_equal(written[2], expected[2], check_exact=True)
        assert written[3] == expected[3]
    assert {n for n, o in outcomes["chunk"].items() if isinstance(o, str)} == {
        "repeated",
        "too short",
        "not in the file",
    }
    assert len(list((tmp_path / "chunk" / "generate").rglob("*.parquet"))) == 2  # packs: the chunk's, the others'


def test_the_flow_s_wide_test_metrics_of_many_series_are_those_of_their_tables_stacked_one_by_one(
    tmp_path: Path,
) -> None:
    from lstm_forecast.flows.plan import evaluated_wide
    from lstm_forecast.tasks.operations.summary import SeriesOutcome, wide_test_metrics

    store = Store(tmp_path)
    rng = np.random.default_rng(1)
    keys = {f"s{number}": fingerprint("evaluate", number) for number in range(6)}
    with store.batched():
        for number, key in enumerate(keys.values()):
            models = ["lstm", "naive"] + (["auto_ets"] if number % 2 else [])  # a sample scores more models
            rows = [
                (split, model, step, metric)
                for split in ("validation", "test")
                for model in models
                for step in range(3)
                for metric in ("rmse", "mase")
            ]
            table = pd.DataFrame(rows, columns=["split", "model", "step", "metric"]).assign(
                value=rng.normal(size=len(rows))
            )
            store.write_table("evaluate", key, table)
    chosen = {i: keys[i] for i in ("s4", "s1", "s2", "s5")}  # not every series read, nor in the packs' order
    expected = wide_test_metrics([SeriesOutcome(i, store.read_table("evaluate", keys[i])) for i in chosen])
    wide = evaluated_wide(store, chosen)
    assert sorted(wide.index) == sorted(chosen) and "auto_ets_mase" in wide and "lstm_rmse" in wide
    pd.testing.assert_frame_equal(wide.loc[expected.index], expected, check_exact=True)
    assert evaluated_wide(Store(tmp_path / "elsewhere"), {}).empty  # no series scored: an empty table, not an error


def test_evenly_spaced_finds_the_chunk_series_whose_numeric_times_have_no_gaps() -> None:
    from lstm_forecast.tasks.core.calendar import time_gaps
    from lstm_forecast.tasks.stages.generate import evenly_spaced

    rng = np.random.default_rng(0)
    parts = []
    for _ in range(300):
        n, step = int(rng.integers(1, 8)), float(rng.choice([1.0, 0.1, 7.0, 2.5]))
        times = np.arange(n) * step + int(rng.integers(0, 100))
        if rng.random() < 0.3 and n > 2:  # a gap: one row moved half a step
            times[rng.integers(1, n)] += 0.5 * step
            times = np.sort(times)
        parts.append(times)
    times, bounds = np.concatenate(parts), np.cumsum([0] + [len(part) for part in parts])
    even = evenly_spaced(times, bounds)
    gaps = [time_gaps(pd.Series(part), None) for part in parts]
    assert all(gap == 0 for gap, known in zip(gaps, even, strict=True) if known)  # never a gap missed
    exact = [len(part) >= 2 and len(set(np.diff(part))) == 1 for part in parts]  # decimal steps may not be exact
    assert even.tolist() == exact and 100 < sum(exact) < sum(gap == 0 for gap in gaps)  # the rest: `time_gaps`
    assert evenly_spaced(np.array([3, 5, 7, 1, 2, 4]), np.array([0, 3, 6])).tolist() == [True, False]  # integers
    dates = pd.date_range("2024-01-01", periods=4, freq="D").to_numpy()
    assert evenly_spaced(dates, np.array([0, 4])).tolist() == [False]  # dates: `time_gaps` decides, with the frequency


def test_a_chunk_s_series_pass_through_dask_s_scheduler_pickled_and_are_unpickled_once_where_read() -> None:
    import pickle

    from lstm_forecast.flows.many import ChunkSeries

    configs = {f"s{i}": with_fields(ForecastConfig(), series_id=f"s{i}") for i in range(3)}
    stages = {i: {"generate": {"key": f"k{i}", "status": "computed"}} for i in configs}
    chunk = ChunkSeries(configs, stages, {"s0": ({}, {}, {})})
    at_scheduler = pickle.loads(pickle.dumps(chunk))
    assert at_scheduler._content is None  # the scheduler holds the bytes, not the configs
    sent_on = pickle.dumps(at_scheduler)
    assert at_scheduler._content is None and at_scheduler.token == chunk.token
    at_worker = pickle.loads(sent_on)
    assert at_worker.configs == configs and at_worker.stages == stages and at_worker.ahead == {"s0": ({}, {}, {})}
    assert [c.model_fields_set for c in at_worker.configs.values()] == [c.model_fields_set for c in configs.values()]
