"""The typed config: presets, files, flag overrides, and what enters each stage's key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lstm_forecast.flows.arguments import build_parser, config_from_args
from lstm_forecast.tasks.core.config import PRESETS, ForecastConfig, build_config, preset, with_fields
from lstm_forecast.tasks.core.errors import InputError
from lstm_forecast.tasks.core.store import stage_key


def test_seed_preset_is_the_articles_hyperparameters() -> None:
    seed = preset("seed")
    assert (seed.look_back, seed.units, seed.epochs, seed.batch_size) == (1, 50, 5, 1)
    assert (seed.learning_rate, seed.train_fraction) == (0.001, 0.8)  # Keras Adam's default rate, 80/20
    assert (seed.n_points, seed.time_step, seed.noise_scale, seed.series_seed) == (10_000, 0.1, 0.5, 0)


def test_presets_are_valid_and_unknown_ones_are_named() -> None:
    assert {"seed", "default", "smoke"} <= set(PRESETS)
    for name in PRESETS:
        assert isinstance(preset(name), ForecastConfig)
    with pytest.raises(InputError, match="choose one of: seed, default, smoke"):
        preset("nope")


def test_config_is_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        preset("default").epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_then_flags(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    path.write_text(
        '{"preset": "smoke", "units": 12, "epochs": 3}'
        if suffix == ".json"
        else "preset: smoke\nunits: 12\nepochs: 3\n"
    )
    args = build_parser().parse_args(["run", "--config", str(path), "--epochs", "7", "--learning-rate", "0.01"])
    config = config_from_args(args)
    assert (config.n_points, config.units, config.epochs, config.learning_rate) == (600, 12, 7, 0.01)


def test_unknown_field_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(InputError, match="epoch: Extra inputs are not permitted"):
        build_config(config_file=path)


def test_each_stage_key_depends_on_its_own_fields_only() -> None:
    base = preset("default")
    changed = base.model_copy(update={"epochs": 99})
    assert stage_key("generate", base, {}) == stage_key("generate", changed, {})
    assert stage_key("window", base, {"series": "a"}) == stage_key("window", changed, {"series": "a"})
    assert stage_key("train", base, {"window": "a"}) != stage_key("train", changed, {"window": "a"})
    assert stage_key("train", base, {"window": "a"}) != stage_key("train", base, {"window": "b"})
    from_file = base.model_copy(update={"input": "x.csv"})
    assert stage_key("generate", from_file, {}, extra="digest1") != stage_key(
        "generate", from_file, {}, extra="digest2"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("horizon", 5000, "less than or equal to 1000"),
        ("epochs", 10**6, "less than or equal to 10000"),
        ("arima_order", [-1, 0, 0], "p and q from 0 to 10"),
        ("arima_order", [1, 3, 1], "d from 0 to 2"),
    ],
)
def test_numeric_fields_have_bounds_named_in_the_message(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as refused:
        build_config("smoke", None, {field: value})
    assert field in refused.value.problem


@pytest.mark.parametrize(
    "argv, named",
    [
        (["backtest", "--folds", "0"], "--folds 0"),
        (["backtest", "--folds", "-2"], "--folds -2"),
        (["run", "--workers", "0"], "--workers 0"),
        (["run", "--workers", "-3"], "--workers -3"),
        (["tune", "--trials", "0"], "--trials 0"),
        (["serve", "--interval", "0"], "--interval 0"),
        (["serve", "--interval", "nan"], "--interval nan"),
        (["run", "--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["run", "--learning-rate", "inf"], "learning_rate: Input should be a finite number"),
    ],
)
def test_every_numeric_flag_out_of_bounds_exits_2_before_anything_runs(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lstm_forecast.flows import cli

    code = cli.main([*argv, "--preset", "smoke", "--artifacts-dir", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert err.startswith("error: ") and named in err.splitlines()[0] and "\n  fix: " in err
    assert not (tmp_path / "store").exists()


def test_the_same_bounds_hold_for_config_files_and_flow_parameters(tmp_path: Path) -> None:
    from lstm_forecast.flows.backtest import backtest
    from lstm_forecast.flows.tune import tune

    for text, field in (("seed: -1\n", "seed"), ("time_step: .inf\n", "time_step"), ("series_seed: 5e9\n", "seed")):
        (tmp_path / "run.yaml").write_text(text)
        with pytest.raises(InputError, match=field):
            build_config(config_file=tmp_path / "run.yaml")
    for flow, name in ((backtest, "folds"), (tune, "trials")):  # what Prefect checks before a served run starts
        with pytest.raises(Exception, match="greater than or equal to 1"):
            flow.validate_parameters({name: 0})
        assert flow.validate_parameters({name: 2})[name] == 2


def test_fields_set_on_many_configs_at_once_give_what_each_validation_gives() -> None:
    from lstm_forecast.tasks.core.config import with_same_fields

    base = ForecastConfig(input="panel.parquet", horizon=13)
    configs = {f"s{i}": with_fields(base, series_id=f"s{i}", seasons=(52,) if i % 2 else ()) for i in range(5)}
    configs["other"] = with_fields(base, series_id="other", past_columns=("price",))  # cross-checked: in full
    shared = {"look_back": 26, "patch": 2, "baselines": "naive", "freq": "w"}
    together = with_same_fields(configs, **shared)
    assert list(together) == list(configs)
    for key, config in configs.items():
        assert together[key].model_dump() == with_fields(config, **shared).model_dump()
    assert together["s1"].freq == with_fields(base, freq="w").freq  # validated (normalised), not copied as given
    with pytest.raises(ValidationError):
        with_same_fields(configs, look_back=26, patch=4)  # 26 is no multiple of 4
    with pytest.raises(ValidationError):
        with_same_fields({"past": configs["other"], **configs}, value_column="price")  # the first one's check
    assert with_same_fields({}, look_back=26) == {}


def test_each_series_config_copied_from_one_validation_equals_its_own_validation() -> None:
    from lstm_forecast.tasks.core.config import with_series_ids

    base = ForecastConfig(input="panel.parquet", horizon=13, past_columns=("price",))
    ids = ["a", "b", "", None]
    copied = with_series_ids(base, ids)
    assert list(copied) == ids
    for series_id in ids:
        own = with_fields(base, series_id=series_id)
        assert copied[series_id] == own and copied[series_id].model_fields_set == own.model_fields_set
    with pytest.raises(ValidationError):  # an id that is not text is refused, as its own validation refuses it
        with_series_ids(base, ["a", 7])
    assert with_series_ids(base, []) == {}
