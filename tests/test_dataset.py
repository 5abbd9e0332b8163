"""The Dataset class: validation of corrupt/truncated/mismatched directories, filter, take, views."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep import Dataset, DatasetError, write_dataset
from data_prep.dataset import parse_types

FIELDS = ("session_ids", "offsets", "aid", "ts", "type")


def arrays(lens=(3, 1, 2), seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    E = int(offsets[-1])
    return dict(session_ids=np.arange(10, 10 + len(lens), dtype=np.int64), offsets=offsets,
                aid=rng.integers(0, 50, E).astype(np.int32), ts=np.arange(E, dtype=np.int64) * 1000,
                type=rng.integers(0, 3, E).astype(np.uint8))


@pytest.fixture
def ds_dir(tmp_path):
    return write_dataset(tmp_path / "ds", **arrays(), source={"name": "x.jsonl", "size": 1})


# --------------------------------------------------------------------------- open + validation
def test_open_is_memory_mapped_read_only_and_exact(ds_dir):
    ds = Dataset.open(ds_dir)
    ref = arrays()
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(ds, f), ref[f])
        assert isinstance(getattr(ds, f), np.memmap) and not getattr(ds, f).flags.writeable
    assert ds.meta["counts"] == ds.type_counts() and ds.meta["source"] == {"name": "x.jsonl", "size": 1}
    assert (ds.n_sessions, ds.n_events, len(ds)) == (3, 6, 3)
    assert "sessions=3" in repr(ds)


def _rewrite(path, name, arr):
    np.save(path / f"{name}.npy", arr, allow_pickle=False)


@pytest.mark.parametrize("damage,match", [
    (lambda p: (p / "meta.json").unlink(), r"meta\.json: missing"),
    (lambda p: (p / "meta.json").write_text("{not json"), r"meta\.json: not valid JSON"),
    (lambda p: (p / "meta.json").write_text('{"format": "other"}'), r"not an otto-dataset meta file"),
    (lambda p: (p / "meta.json").write_text('[1]'), r"meta\.json: expected a JSON object, got an array"),
    (lambda p: (p / "meta.json").write_text('{"format": "otto-dataset", "format_version": 9}'), r"format_version 9 is not supported"),
    (lambda p: (p / "aid.npy").unlink(), r"aid\.npy: missing"),
    (lambda p: _rewrite(p, "aid", np.zeros(6, np.int64)), r"aid\.npy: dtype <i8 \(expected <i4\)"),
    (lambda p: _rewrite(p, "ts", np.zeros((2, 3), np.int64)), r"ts\.npy: shape \(2, 3\) \(expected 1-d\)"),
    (lambda p: _rewrite(p, "ts", np.zeros(5, np.int64)), r"ts\.npy: length 5 \(expected events = 6"),
    (lambda p: _rewrite(p, "type", np.zeros(7, np.uint8)), r"type\.npy: length 7"),
    (lambda p: _rewrite(p, "offsets", np.array([0, 3, 4], np.int64)), r"offsets\.npy: length 3 \(expected sessions\+1 = 4\)"),
    (lambda p: _rewrite(p, "offsets", np.array([1, 3, 4, 6], np.int64)), r"offsets\[0\] = 1"),
    (lambda p: _rewrite(p, "offsets", np.array([0, 3, 4, 5], np.int64)), r"offsets\[-1\] = 5 \(expected events = 6\)"),
    (lambda p: _rewrite(p, "offsets", np.array([0, 4, 3, 6], np.int64)), r"offsets decrease at session row 1"),
    (lambda p: _rewrite(p, "type", np.array([0, 1, 2, 3, 0, 0], np.uint8)), r"type\.npy: event 3: type code 3"),
    (lambda p: _rewrite(p, "session_ids", np.arange(4, dtype=np.int64)), r"offsets\.npy: length 4 \(expected sessions\+1 = 5\)"),
    (lambda p: np.save(p / "aid.npy", np.array([None] * 6, dtype=object), allow_pickle=True), r"aid\.npy: holds Python objects"),
    (lambda p: (p / "ts.npy").write_bytes((p / "ts.npy").read_bytes()[:-9]), r"ts\.npy: truncated: the header declares shape \(6,\) of <i8 \(\d+ bytes with the header\) but the file holds \d+ bytes"),
    (lambda p: (p / "ts.npy").write_bytes(b"garbage"), r"ts\.npy: a text file \(starts with 'garbage'\), not a \.npy array"),
])
def test_corrupt_directories_name_the_file(ds_dir, damage, match):
    damage(ds_dir)
    with pytest.raises(DatasetError, match=match) as exc:
        Dataset.open(ds_dir)
    assert str(ds_dir) in str(exc.value)


def test_meta_counts_must_match_the_arrays(ds_dir):
    meta = json.loads((ds_dir / "meta.json").read_text())
    (ds_dir / "meta.json").write_text(json.dumps(dict(meta, n_sessions=4)))
    with pytest.raises(DatasetError, match=r"meta\.json: n_sessions 4 does not match session_ids\.npy \(3\)"):
        Dataset.open(ds_dir)
    (ds_dir / "meta.json").write_text(json.dumps(dict(meta, n_events=60)))
    with pytest.raises(DatasetError, match=r"n_events 60 does not match aid\.npy \(6\)"):
        Dataset.open(ds_dir)


def test_unknown_meta_keys_are_ignored(ds_dir):
    meta = json.loads((ds_dir / "meta.json").read_text())
    (ds_dir / "meta.json").write_text(json.dumps(dict(meta, future_key=[1, 2])))
    assert Dataset.open(ds_dir).meta["future_key"] == [1, 2]


def test_not_a_directory(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset directory"):
        Dataset.open(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a dataset directory"):
        Dataset.open(tmp_path / "file")


def test_in_memory_validation():
    a = arrays()
    with pytest.raises(DatasetError, match=r"aid\.npy: dtype <i8"):
        Dataset(**dict(a, aid=a["aid"].astype(np.int64)))
    with pytest.raises(DatasetError, match="expected a 1-d array"):
        Dataset(**dict(a, ts=[1, 2, 3]))
    with pytest.raises(DatasetError, match="in-memory dataset"):
        Dataset(**dict(a, offsets=a["offsets"][:-1]))


def test_write_dataset_is_atomic_and_refuses_to_overwrite(tmp_path):
    out = write_dataset(tmp_path / "d", **arrays())
    before = (out / "aid.npy").read_bytes()
    with pytest.raises(FileExistsError):
        write_dataset(out, **arrays(seed=1))
    assert (out / "aid.npy").read_bytes() == before
    with pytest.raises(DatasetError):  # invalid arrays: nothing written
        write_dataset(tmp_path / "e", **dict(arrays(), offsets=np.array([0, 1], np.int64)))
    assert not (tmp_path / "e").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    write_dataset(out, **arrays(seed=1), overwrite=True)
    np.testing.assert_array_equal(Dataset.open(out).aid, arrays(seed=1)["aid"])


def test_empty_dataset():
    ds = Dataset(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.uint8))
    assert ds.n_sessions == 0 and ds.n_events == 0 and list(ds) == []
    assert ds.type_counts() == {"clicks": 0, "carts": 0, "orders": 0}
    assert ds.filter("carts").n_sessions == 0
    with pytest.raises(IndexError):
        ds.session(0)


# --------------------------------------------------------------------------- views
def test_session_views_are_zero_copy(ds_dir):
    ds = Dataset.open(ds_dir)
    s = ds.session(0)
    assert s.session_id == 10 and len(s) == 3
    assert np.shares_memory(s.aid, ds.aid) and np.shares_memory(s.ts, ds.ts)
    np.testing.assert_array_equal(s.type, ds.type[:3])
    last = ds.session(-1)
    assert last.session_id == 12 and len(last) == 2 and last.ts.tolist() == [4000, 5000]
    with pytest.raises(IndexError):
        ds.session(3)
    with pytest.raises(IndexError):
        ds.session(-4)
    assert [x.session_id for x in ds] == [10, 11, 12]
    assert ds.lengths().tolist() == [3, 1, 2]


# --------------------------------------------------------------------------- parse_types
def test_parse_types():
    assert parse_types(None) == (0, 1, 2)
    assert parse_types("orders, carts") == (1, 2)
    assert parse_types(["clicks", 2]) == (0, 2)
    assert parse_types([np.int64(1)]) == (1,)
    for bad, match in [("views", "unknown event type 'views'"), ([3], "unknown event type code 3"),
                       ("", "no event type"), ([True], "unknown event type 'True'")]:
        with pytest.raises(ValueError, match=match):
            parse_types(bad)


# --------------------------------------------------------------------------- filter / take
def naive_filter(a, codes, min_len):
    rows, aid, ts, typ, lens = [], [], [], [], []
    for i, sid in enumerate(a["session_ids"]):
        lo, hi = a["offsets"][i], a["offsets"][i + 1]
        keep = [j for j in range(lo, hi) if a["type"][j] in codes]
        if len(keep) >= min_len:
            rows.append(sid)
            lens.append(len(keep))
            aid += [a["aid"][j] for j in keep]
            ts += [a["ts"][j] for j in keep]
            typ += [a["type"][j] for j in keep]
    return rows, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), aid, ts, typ


@settings(max_examples=80, deadline=None)
@given(lens=st.lists(st.integers(0, 6), max_size=12), seed=st.integers(0, 1000),
       types=st.sets(st.sampled_from(["clicks", "carts", "orders"]), min_size=1), min_len=st.integers(0, 4))
def test_filter_matches_a_naive_loop(lens, seed, types, min_len):
    a = arrays(lens, seed) if lens else arrays([], seed)
    ds = Dataset(**a)
    codes = parse_types(types)
    got = ds.filter(types, min_len=min_len)
    rows, offsets, aid, ts, typ = naive_filter(a, codes, min_len)
    assert got.session_ids.tolist() == rows
    assert got.offsets.tolist() == offsets.tolist()
    assert got.aid.tolist() == aid and got.ts.tolist() == ts and got.type.tolist() == typ
    if got is not ds:
        assert got.meta["filter"] == {"types": [["clicks", "carts", "orders"][c] for c in codes], "min_len": min_len}
        assert "n_sessions" not in got.meta


def test_filter_details(ds_dir):
    ds = Dataset.open(ds_dir)
    assert ds.filter() is ds  # nothing to drop: the same dataset
    assert ds.filter(min_len=4).n_sessions == 0
    two = ds.filter(min_len=2)
    assert two.session_ids.tolist() == [10, 12] and two.meta["source"] == ds.meta["source"]
    assert "counts" not in two.meta and two.path is None
    with pytest.raises(ValueError, match="min_len"):
        ds.filter(min_len=-1)
    with pytest.raises(ValueError, match="unknown event type"):
        ds.filter("views")
    # min_len=0 keeps sessions that have no event of the selected types
    a = dict(arrays(), type=np.zeros(6, np.uint8))
    only_orders = Dataset(**a).filter("orders", min_len=0)
    assert only_orders.n_sessions == 3 and only_orders.n_events == 0 and only_orders.offsets.tolist() == [0, 0, 0, 0]


def test_take(ds_dir):
    ds = Dataset.open(ds_dir)
    t = ds.take(np.array([2, 0, 2]))
    assert t.session_ids.tolist() == [12, 10, 12]
    assert t.offsets.tolist() == [0, 2, 5, 7]
    a = arrays()
    np.testing.assert_array_equal(t.aid, np.concatenate([a["aid"][4:6], a["aid"][0:3], a["aid"][4:6]]))
    np.testing.assert_array_equal(t.ts, np.concatenate([a["ts"][4:6], a["ts"][0:3], a["ts"][4:6]]))
    empty = ds.take(np.array([], np.int64))
    assert empty.n_sessions == 0 and empty.n_events == 0
    assert "n_sessions" not in t.meta
    with pytest.raises(IndexError):
        ds.take(np.array([3]))
