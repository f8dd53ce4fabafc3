"""The store: atomic writes, damaged files detected, paths confined to the root."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import lstm_forecast.tasks.core.store as store_module
from lstm_forecast.tasks.core.store import KEY_COLUMN, KEY_LENGTH, Store, fingerprint, frame_digest


def test_a_table_appears_under_its_final_name_only_when_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    key = fingerprint("x")
    final = store.path("split", key)
    renames: list[tuple[bool, int]] = []
    real_replace = os.replace

    def watched_replace(source: str, target: str | Path) -> None:
        # at the moment of the rename: is the final name still free, and is the file complete?
        renames.append((Path(target).exists(), pq.read_table(source).num_rows))
        real_replace(source, target)

    monkeypatch.setattr(store_module.os, "replace", watched_replace)
    store.write_table("split", key, pd.DataFrame({"a": [1, 2]}), metadata={"note": "hi"})
    assert renames == [(False, 2)]  # written elsewhere, complete, then renamed into place
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary file left
    assert store.read_table("split", key)["a"].tolist() == [1, 2]
    assert store.read_table_metadata("split", key) == {"note": "hi"}


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = fingerprint("y")
    store.write_table("split", key, pd.DataFrame({"a": [1]}))

    class Unwritable:
        pass

    with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises, the old file must survive
        store.write_table("split", key, pd.DataFrame({"a": [Unwritable()]}))
    assert store.read_table("split", key)["a"].tolist() == [1]
    assert len(list((tmp_path / "split").iterdir())) == 1


def test_damaged_outputs_are_not_complete_and_are_removed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = fingerprint("z")
    path = store.write_table("window", key, pd.DataFrame({"row": range(100)}))
    assert store.is_complete("window", key)
    path.write_bytes(path.read_bytes()[:-20])
    assert not store.is_complete("window", key)
    assert not path.exists()
    store.write_png(key, b"not a png")
    assert not store.is_complete("plot", key)


def test_keys_cannot_name_paths_outside_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for bad in ("../../etc/passwd", "a/b", "", "x" * 24):
        with pytest.raises(ValueError, match="invalid store key"):
            store.path("generate", bad)
    with pytest.raises(ValueError, match="unknown stage"):
        store.path("../models", fingerprint("k"))


def test_a_store_holds_models_once_one_is_written_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    assert not store.holds_models()  # no folder at all yet
    key = fingerprint("model")
    (store.root / "models" / f".{key}.staging").mkdir(parents=True)  # a write under way is not a model yet
    assert not store.holds_models()
    store.write_model(key, lambda folder: (folder / "model.keras").write_bytes(b"weights"), {"history": {}})
    assert store.holds_models()


def test_garbled_model_file_is_not_complete(tmp_path: Path) -> None:
    import json
    import zipfile

    store = Store(tmp_path)
    key = fingerprint("model")

    def save(folder: Path) -> None:
        with zipfile.ZipFile(folder / "model.keras", "w") as archive:
            archive.writestr("config.json", json.dumps({"layers": list(range(1000))}))

    folder = store.write_model(key, save, {"history": {}})
    assert store.is_complete("train", key)
    data = bytearray((folder / "model.keras").read_bytes())
    data[40:60] = b"\x00" * 20  # garbled inside the compressed member
    (folder / "model.keras").write_bytes(bytes(data))
    assert not store.is_complete("train", key)
    assert not folder.exists()

    def save_with_arrays(folder: Path) -> None:  # and the numpy arrays beside it, garbled
        save(folder)
        np.savez(folder / "forecaster.npz", weights=np.arange(1000.0))

    folder = store.write_model(key, save_with_arrays, {"history": {}})
    assert store.is_complete("train", key)
    arrays = bytearray((folder / "forecaster.npz").read_bytes())
    arrays[200:220] = b"\x00" * 20  # inside the stored (uncompressed) member: its checksum no longer matches
    (folder / "forecaster.npz").write_bytes(bytes(arrays))
    assert not store.is_complete("train", key)


def _hold_lock_repeatedly(store_root: str, log_path: str, rounds: int) -> None:
    from lstm_forecast.tasks.core.caching import StoreLockManager

    manager = StoreLockManager(Store(store_root), timeout=60)
    holder = f"worker-{os.getpid()}"
    for _ in range(rounds):
        assert manager.acquire_lock("stage-key", holder)
        with open(log_path, "a") as log:
            log.write(f"enter {holder}\n")
            log.flush()
            time.sleep(0.01)
            log.write(f"leave {holder}\n")
        manager.release_lock("stage-key", holder)


def test_file_locks_exclude_each_other_across_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    log_path = tmp_path / "log.txt"
    workers = [
        context.Process(target=_hold_lock_repeatedly, args=(str(tmp_path / "store"), str(log_path), 15))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    lines = log_path.read_text().splitlines()
    assert len(lines) == 4 * 15 * 2
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # never two holders at once
        assert enter.startswith("enter ") and leave == "leave " + enter.removeprefix("enter ")


def test_frame_digest_follows_values_dtypes_and_order() -> None:
    frame = pd.DataFrame({"ds": [0.0, 0.1, 0.2], "y": [1.0, 2.0, 3.0]})
    assert frame_digest(frame) == frame_digest(frame.copy())
    assert frame_digest(frame) != frame_digest(frame.assign(y=[1.0, 2.0, 3.5]))
    assert frame_digest(frame) != frame_digest(frame.iloc[::-1].reset_index(drop=True))
    assert frame_digest(frame) != frame_digest(frame.astype({"y": "float32"}))
    assert frame_digest(frame) != frame_digest(frame.rename(columns={"y": "value"}))


def test_a_source_names_a_series_and_a_damaged_one_names_none(tmp_path: Path) -> None:
    store = Store(tmp_path)
    source, series = "a" * KEY_LENGTH, "b" * KEY_LENGTH
    assert store.read_source(source) is None
    store.write_source(source, series)
    assert store.read_source(source) == series
    store.source_path(source).write_text("{not json")
    assert store.read_source(source) is None
    with pytest.raises(ValueError):
        store.write_source(source, "../elsewhere")


def test_each_stage_task_takes_what_its_graph_entry_declares() -> None:
    import inspect

    from lstm_forecast.tasks.core.graph import FINISH_STAGES, PREPARE_STAGES, STAGE, STAGES, stage_task

    assert STAGES == ("generate", "split", "normalize", "window", "train", "predict", "evaluate", "plot")
    assert (PREPARE_STAGES, FINISH_STAGES) == (("split", "normalize", "window"), ("predict", "evaluate", "plot"))
    for name in STAGES:
        task = stage_task(name)
        own_key = [] if name == "generate" else ["key"]  # generate keys its output by the series it reads
        assert task.name == name
        assert list(inspect.signature(task.fn).parameters) == ["config", *STAGE[name].inputs, *own_key]
        assert all(source in STAGES[: STAGES.index(name)] for source in STAGE[name].inputs.values())


def test_a_batch_writes_one_pack_per_stage_and_every_output_reads_back_by_its_own_key(tmp_path: Path) -> None:
    store = Store(tmp_path)
    keys = [fingerprint("series", number) for number in range(3)]
    frames = {
        key: pd.DataFrame(
            {"ds": [float(t) for t in range(1 + number)], "y": [float(number)] * (1 + number), "split": "train"}
        )
        for number, key in enumerate(keys)
    }
    frames[keys[2]].loc[0, "split"] = "test"
    source = fingerprint("source")
    with store.batched():
        for key in keys:
            store.write_table("generate", key, frames[key], metadata={"key": key})
        store.write_source(source, keys[0])
        assert not (tmp_path / "generate").exists()  # held until the batch ends...
        assert store.is_complete("generate", keys[1]) and store.read_source(source) == keys[0]  # ...and readable
        assert store.read_table("generate", keys[2]).equals(frames[keys[2]])
    packs = sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*.parquet"))
    assert packs == [("generate", "packs"), ("sources", "packs")]  # one file per stage, not one per series
    reread = Store(tmp_path)
    for key in keys:
        assert reread.is_complete("generate", key)
        assert reread.read_table("generate", key).equals(frames[key])
        assert reread.read_table_metadata("generate", key) == {"key": key}
        assert reread.location("generate", key).parent.name == "packs"
    assert reread.read_source(source) == keys[0]
    # strings, packed as a dictionary, read back as strings: one output, several, some columns
    pd.testing.assert_frame_equal(
        reread.read_tables("generate", keys, where={"split": "train"}).drop(columns=KEY_COLUMN),
        pd.concat(frames.values(), ignore_index=True).query("split == 'train'").reset_index(drop=True),
    )
    either = ("train", "test")  # one of several values: filtered as the pack is read, then from the pack in memory
    store_module._pack_tables.clear()
    for read_whole_first in (False, True):
        if read_whole_first:
            reread.read_table("generate", keys[0])
        pd.testing.assert_frame_equal(
            reread.read_tables("generate", keys, where={"split": either}).drop(columns=KEY_COLUMN),
            pd.concat(frames.values(), ignore_index=True).query("split in @either").reset_index(drop=True),
        )
    assert reread.read_columns("generate", keys, ("split",))[keys[2]]["split"].tolist() == ["test", "train", "train"]
    assert not reread.is_complete("generate", fingerprint("another"))
    with pytest.raises(FileNotFoundError):
        reread.read_table("generate", fingerprint("another"))


def test_many_outputs_metadata_read_at_once_is_each_one_s_own_from_packs_files_and_the_batch(tmp_path: Path) -> None:
    store = Store(tmp_path)
    packed = [fingerprint("packed", number) for number in range(3)]
    own, held, missing = fingerprint("own file"), fingerprint("held"), fingerprint("missing")
    frame = pd.DataFrame({"y": [1.0, 2.0]})
    with store.batched():
        for key in packed:
            store.write_table("normalize", key, frame, metadata={"key": key, "kind": "level"})
    time.sleep(0.01)
    with store.batched():  # a newer pack holds the first output again: its metadata wins
        store.write_table("normalize", packed[0], frame, metadata={"key": packed[0], "kind": "diff"})
    store.write_table("normalize", own, frame, metadata={"key": own})
    store_module._pack_tables.clear()  # footers read from the files, not from a pack read whole before
    wanted = [*packed, own]
    with store.batched():
        store.write_table("normalize", held, frame, metadata={"key": held})
        at_once = store.read_metadata("normalize", [*wanted, held])
        assert store.read_metadata("normalize", [*wanted, held], missing_ok=True).keys() == set(packed)
        assert not store_module._pack_tables  # no pack's table was read for it
        assert at_once == {key: store.read_table_metadata("normalize", key) for key in [*wanted, held]}
        assert at_once[packed[0]]["kind"] == "diff" and at_once[packed[1]]["kind"] == "level"
    at_once[packed[1]]["kind"] = "changed"  # a copy: the pack's footer is not changed through it
    assert store.read_metadata("normalize", [packed[1]])[packed[1]]["kind"] == "level"
    with pytest.raises(FileNotFoundError):
        store.read_metadata("normalize", [packed[1], missing])
    assert store.read_metadata("normalize", [packed[1], missing], missing_ok=True).keys() == {packed[1]}


def test_a_batch_that_fails_writes_nothing_and_a_newer_pack_wins(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = fingerprint("one")
    with pytest.raises(RuntimeError), store.batched():
        store.write_table("split", key, pd.DataFrame({"a": [1]}))
        raise RuntimeError("the chunk crashed")
    assert not (tmp_path / "split").exists() and not store.is_complete("split", key)
    with store.batched():
        store.write_table("split", key, pd.DataFrame({"a": [1]}))
    time.sleep(0.01)
    with store.batched():  # rebuilt: written again in a pack of its own
        store.write_table("split", key, pd.DataFrame({"a": [2]}))
    assert len(list((tmp_path / "split" / "packs").iterdir())) == 2
    assert store.read_table("split", key)["a"].tolist() == [2]


def test_each_pack_s_keys_are_read_once_while_other_chunks_add_packs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    footers: list[str] = []
    read_schema = store_module.pq.read_schema

    def counted(path: Path) -> object:
        footers.append(Path(path).name)
        return read_schema(path)

    monkeypatch.setattr(store_module.pq, "read_schema", counted)
    keys = [fingerprint("chunk", number) for number in range(4)]
    for number, key in enumerate(keys):  # each chunk looks for its output, then writes its pack
        assert not store.is_complete("split", key)
        with store.batched():
            store.write_table("split", key, pd.DataFrame({"a": [number]}))
        assert store.is_complete("split", key)
    assert len(footers) == len(set(footers)) == 4  # not 1 + 2 + 3 + 4: a pack never changes under its name
    # a pack another process wrote (a copy of one, under another name) is found as the folder changes
    folder = tmp_path / "split" / "packs"
    (source,) = [pack for pack in folder.iterdir() if store_module._pack_index[folder][1][keys[0]] == pack]
    time.sleep(0.01)
    (folder / "another.parquet").write_bytes(source.read_bytes())
    assert store.read_table("split", keys[0])["a"].tolist() == [0] and len(footers) == 5
    assert store_module._pack_index[folder][1][keys[0]].name == "another.parquet"  # the newest pack wins


def test_a_pack_s_keys_are_indexed_from_their_own_footer_entry_or_an_older_pack_s_whole_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    keys = [fingerprint("series", number) for number in range(3)]
    with store.batched():
        for number, key in enumerate(keys):
            store.write_table("normalize", key, pd.DataFrame({"y": [float(number)]}), metadata={"kind": "level"})
    (pack,) = (tmp_path / "normalize" / "packs").glob("*.parquet")
    footer = pq.read_schema(pack).metadata
    assert json.loads(footer[b"lstm_forecast.keys"]) == json.loads(footer[b"lstm_forecast"])["keys"] == keys
    parsed: list[int] = []  # the sizes of the footer entries the index parses
    loads = store_module.footer_json
    monkeypatch.setattr(store_module, "footer_json", lambda text: parsed.append(len(text)) or loads(text))
    store_module._pack_index.clear()
    assert all(store.is_complete("normalize", key) for key in keys)
    assert parsed == [len(footer[b"lstm_forecast.keys"])]  # the keys alone, not the model spaces beside them
    # a pack written before the keys had their own entry: indexed from the whole footer
    table = pq.read_table(pack)
    older = {name: value for name, value in footer.items() if name != b"lstm_forecast.keys"}
    pq.write_table(table.replace_schema_metadata(older), pack)
    store_module._pack_index.clear()
    assert all(store.is_complete("normalize", key) for key in keys)
    assert store.read_table_metadata("normalize", keys[1]) == {"kind": "level"}


def test_a_damaged_pack_holds_nothing_and_is_removed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    key = fingerprint("damaged")
    with store.batched():
        store.write_table("window", key, pd.DataFrame({"row": range(100)}))
    (pack,) = (tmp_path / "window" / "packs").iterdir()
    pack.write_bytes(pack.read_bytes()[:-20])
    assert not Store(tmp_path).is_complete("window", key)
    assert not pack.exists()


def test_read_tables_reads_many_outputs_at_once_in_the_order_asked_and_keeps_only_the_rows_wanted(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    keys = [fingerprint("metrics", number) for number in range(3)]
    with store.batched():
        for number, key in enumerate(keys[:2]):
            store.write_table("evaluate", key, pd.DataFrame({"step": [0, 1], "value": [number, 10.0 + number]}))
    store.write_table("evaluate", keys[2], pd.DataFrame({"step": [0, 1], "value": [2.0, 12.0]}))  # a file of its own
    stacked = store.read_tables("evaluate", [keys[2], keys[0], keys[1]], where={"step": 0})
    assert stacked["_key"].astype(str).tolist() == [keys[2], keys[0], keys[1]]
    assert stacked["value"].tolist() == [2.0, 0.0, 1.0]
    # only the columns asked for (and the key), from the packs, a file of its own and the packs held in memory
    projected = store.read_tables("evaluate", [keys[2], keys[0], keys[1]], where={"step": 0}, columns=("value",))
    pd.testing.assert_frame_equal(projected, stacked[["value", "_key"]])
    # one output of a pack, its rows filtered as the pack is read, then from the pack held in memory: the same
    one = store.read_tables("evaluate", [keys[1]], where={"step": 0})
    assert len(store.read_tables("evaluate", keys)) == 6  # every row: the packs are now held in memory
    pd.testing.assert_frame_equal(store.read_tables("evaluate", [keys[1]], where={"step": 0}), one)
    assert one["value"].tolist() == [1.0] and one["_key"].astype(str).tolist() == [keys[1]]
    held = store.read_tables("evaluate", [keys[1]], where={"step": 0}, columns=("value",))
    pd.testing.assert_frame_equal(held, one[["value", "_key"]])


def test_a_global_model_s_unscored_series_read_back_with_their_future_values_and_a_later_run_replaces_them(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    key = "a" * KEY_LENGTH
    assert store.read_unscored_series(key) == {} and store.unscored_series_ids(key) == []
    short = pd.DataFrame({"ds": [0.0, 1.0, 2.0], "y": [1.0, 2.0, 3.0], "price": [5.0, 6.0, 7.0]})
    short.attrs["future"] = {"price": [8.0, 9.0]}
    other = pd.DataFrame({"ds": [0.0, 1.0], "y": [4.0, 5.0], "price": [1.0, 1.0]})
    store.write_unscored_series(key, {"short": short, "other": other})
    assert store.unscored_series_ids(key) == ["short", "other"]
    found = store.read_unscored_series(key, ["short"])
    assert list(found) == ["short"]
    pd.testing.assert_frame_equal(found["short"], short)
    assert found["short"].attrs["future"] == {"price": [8.0, 9.0]}
    assert store.read_unscored_series(key)["other"].attrs["future"] is None
    store.write_unscored_series(key, {})  # a later run with none: none kept
    assert store.read_unscored_series(key) == {} and store.unscored_series_ids(key) == []
    with pytest.raises(ValueError, match="invalid model key"):
        store.unscored_series_path("../outside")


def test_a_footer_is_parsed_as_the_standard_parser_reads_it_non_finite_numbers_and_big_integers_included() -> None:
    written = {"keys": ["a", "b"], "space": {"low": -1.5, "high": 1e300, "profile": [0.1, 2.0 / 3.0]}}
    assert store_module.footer_json(json.dumps(written).encode()) == written
    odd = {"nan": float("nan"), "inf": [float("inf"), -float("inf")], "big": 2**70}
    parsed = store_module.footer_json(json.dumps(odd).encode())  # orjson refuses these: the standard parser reads them
    assert np.isnan(parsed["nan"]) and parsed["inf"] == [float("inf"), -float("inf")] and parsed["big"] == 2**70
