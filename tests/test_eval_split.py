"""The official OTTO split and labels: hand-made sessions, the real sample, a reference oracle."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from data_prep.dataset import Dataset
from eval.labels import LabelsError, labels_from_cut, read_labels, write_labels
from eval.sessions_io import read_sessions
from eval.split import DAY_MS, split_dataset, write_split

SAMPLE = Path(__file__).parent / "data" / "otto_sample_train.jsonl"
T0 = 1_659_304_800_000


def ds_from(sessions):
    """sessions: list of (sid, [(aid, ts, type), ...])."""
    lens = [len(ev) for _, ev in sessions]
    off = np.zeros(len(sessions) + 1, np.int64)
    off[1:] = np.cumsum(lens)
    ev = [e for _, evs in sessions for e in evs]
    return Dataset(np.array([s for s, _ in sessions], np.int64), off,
                   np.array([e[0] for e in ev], np.int32), np.array([e[1] for e in ev], np.int64),
                   np.array([e[2] for e in ev], np.uint8))


def official_ground_truth(events):
    """Labels of every cut, transcribed from otto-de/recsys-dataset labels.py (minus its aid-0 quirk):
    result[p-1] = labels when the first p events are kept."""
    prev = {"clicks": None, "carts": set(), "orders": set()}
    out = []
    for aid, _, typ in reversed(events):
        lab = {}
        if prev["clicks"] is not None:
            lab["clicks"] = prev["clicks"]
        for n in ("carts", "orders"):
            if prev[n]:
                lab[n] = sorted(prev[n])
        out.append(lab)
        if typ == 0:
            prev["clicks"] = aid
        elif typ == 1:
            prev["carts"].add(aid)
        else:
            prev["orders"].add(aid)
    return list(reversed(out))[:-1]


def test_labels_by_hand_with_carts_first_repeats_and_shared_order_ts():
    events = [(5, T0, 1), (6, T0 + 1, 0), (5, T0 + 2, 0), (7, T0 + 3, 1), (5, T0 + 4, 1),
              (7, T0 + 5, 2), (5, T0 + 5, 2), (9, T0 + 6, 0)]
    ds = ds_from([(1, events)])
    for p, expect in [(1, {"clicks": 6, "carts": [5, 7], "orders": [5, 7]}),
                      (3, {"clicks": 9, "carts": [5, 7], "orders": [5, 7]}),
                      (6, {"clicks": 9, "orders": [5]}),
                      (7, {"clicks": 9}),
                      (8, {})]:
        lab = labels_from_cut(ds.session_ids, ds.offsets, ds.aid, ds.type, np.array([p]))
        assert lab.row(0) == expect, p


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2)), min_size=2, max_size=15))
def test_labels_match_the_official_ground_truth(evs):
    events = [(a, T0 + i, t) for i, (a, t) in enumerate(evs)]
    ds = ds_from([(3, events)])
    ref = official_ground_truth(events)
    for p in range(1, len(events)):
        lab = labels_from_cut(ds.session_ids, ds.offsets, ds.aid, ds.type, np.array([p]))
        assert lab.row(0) == ref[p - 1]


def test_split_by_hand():
    cut = T0 + 10 * DAY_MS - 7 * DAY_MS  # max ts = T0 + 10 days
    ds = ds_from([
        (0, [(1, T0, 0), (2, T0 + 1, 0), (3, cut - 1, 1), (4, cut, 0), (5, cut + 5, 2)]),  # trimmed to 3
        (1, [(1, T0, 0), (9, cut + 1, 0)]),                  # trimmed to 1 event: dropped (< 2)
        (2, [(1, cut, 0), (2, cut + 1, 1), (3, cut + 2, 2), (99, cut + 3, 0)]),  # test; 99 unknown
        (3, [(2, cut + 4, 2), (8, cut + 5, 0)]),             # test; 8 unknown -> 1 event -> dropped
        (4, [(3, cut + 9, 1), (3, T0 + 10 * DAY_MS, 2)]),    # test, starts with a cart, repeats an aid
    ])
    r = split_dataset(ds, days=7, seed=1)
    assert r.stats["cut_ts"] == cut
    assert r.train.session_ids.tolist() == [0]
    assert r.train.aid.tolist() == [1, 2, 3]
    assert r.stats["train_sessions_dropped_short"] == 1
    assert r.stats["train_events_after_cut_dropped"] == 3
    assert r.test_full.session_ids.tolist() == [2, 4]
    assert r.test_full.aid.tolist() == [1, 2, 3, 3, 3]
    assert r.stats["test_events_unknown_aid_dropped"] == 2
    assert r.stats["test_sessions_dropped_short"] == 1
    kept = r.test.lengths()
    assert np.all(kept >= 1) and np.all(kept <= r.test_full.lengths() - 1)
    # session 4 is cut after its cart: the order of aid 3 is the label
    i = r.labels.session_ids.tolist().index(4)
    assert r.labels.row(i) == {"orders": [3]}


def test_split_is_seeded(tmp_path):
    sessions = [(s, [(s % 7 + j, T0 + s * DAY_MS // 2 + j * 1000, j % 3) for j in range(2 + s % 5)]) for s in range(40)]
    ds = ds_from(sessions)
    a = split_dataset(ds, days=7, seed=3)
    b = split_dataset(ds, days=7, seed=3)
    c = split_dataset(ds, days=7, seed=4)
    np.testing.assert_array_equal(a.test.offsets, b.test.offsets)
    np.testing.assert_array_equal(a.labels.clicks, b.labels.clicks)
    assert a.test.n_sessions > 5
    assert not np.array_equal(a.test.offsets, c.test.offsets)


def test_real_sample_split_files_and_labels(tmp_path):
    from data_prep.reader import convert
    convert(SAMPLE, tmp_path / "ds", quiet=True)
    ds = Dataset.open(tmp_path / "ds")
    r = split_dataset(ds, days=7, seed=42)
    write_split(r, tmp_path / "split")
    out = tmp_path / "split"
    assert sorted(p.name for p in out.iterdir()) == ["split.json", "test_labels.jsonl", "test_sessions.jsonl",
                                                      "test_sessions_full.jsonl", "train"]
    full = read_sessions(out / "test_sessions_full.jsonl")
    cut = read_sessions(out / "test_sessions.jsonl")
    labels = read_labels(out / "test_labels.jsonl")
    train = Dataset.open(out / "train")
    assert train.ts.max() < r.stats["cut_ts"] <= full.ts.min()
    assert set(full.aid.tolist()) <= set(train.aid.tolist())
    assert labels.session_ids.tolist() == cut.session_ids.tolist() == full.session_ids.tolist()
    # every cut session is a prefix of its full session, and its labels are the official ones
    for i in range(full.n_sessions):
        f, c = full.session(i), cut.session(i)
        assert 1 <= len(c) < len(f)
        np.testing.assert_array_equal(f.aid[:len(c)], c.aid)
        events = list(zip(f.aid.tolist(), f.ts.tolist(), f.type.tolist()))
        assert labels.row(i) == official_ground_truth(events)[len(c) - 1]
    # the JSON lines omit empty keys
    first = json.loads((out / "test_labels.jsonl").read_text().splitlines()[0])
    assert set(first) == {"session", "labels"} and all(v not in ([], None) for v in first["labels"].values())
    with pytest.raises(FileExistsError):
        write_split(r, out)


def test_labels_file_round_trip_and_errors(tmp_path):
    ds = ds_from([(7, [(1, T0, 0), (2, T0 + 1, 1), (0, T0 + 2, 0), (3, T0 + 3, 2)])])
    lab = labels_from_cut(ds.session_ids, ds.offsets, ds.aid, ds.type, np.array([1]))
    assert lab.row(0) == {"clicks": 0, "carts": [2], "orders": [3]}   # a click on aid 0 is kept
    write_labels(lab, tmp_path / "l.jsonl")
    back = read_labels(tmp_path / "l.jsonl")
    assert back.row(0) == lab.row(0)
    (tmp_path / "bad.jsonl").write_text('{"session": 1, "labels": {"clicks": 1}}\n{"session": 2, "labels": {"carts": "x"}}\n')
    with pytest.raises(LabelsError, match=r"bad.jsonl:2: field 'labels.carts'"):
        read_labels(tmp_path / "bad.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"session": 1, "labels": {}}\n{"session": 1, "labels": {}}\n')
    with pytest.raises(LabelsError, match="appears on more than one line"):
        read_labels(tmp_path / "dup.jsonl")


def test_split_rejects_bad_arguments():
    ds = ds_from([(0, [(1, T0, 0), (2, T0 + 1, 0)])])
    with pytest.raises(ValueError, match="days"):
        split_dataset(ds, days=0)
    with pytest.raises(ValueError, match="min_train_len"):
        split_dataset(ds, min_train_len=0)


def test_bounded_memory_split_writes_the_same_files_for_any_chunk_size(tmp_path):
    """split_to_directory (chunked passes, train streamed to disk) == write_split(split_dataset())."""
    from data_prep import reader
    from eval.split import split_to_directory
    reader.convert(SAMPLE, tmp_path / "ds", quiet=True)
    ds = Dataset.open(tmp_path / "ds")
    write_split(split_dataset(ds, days=7, seed=5), tmp_path / "ref")
    ref = {p.relative_to(tmp_path / "ref"): p.read_bytes() for p in sorted((tmp_path / "ref").rglob("*")) if p.is_file()}
    for chunk in (1, 97, 10**9):  # one session per chunk .. everything in one chunk
        stats = split_to_directory(ds, tmp_path / f"s{chunk}", days=7, seed=5, chunk_events=chunk)
        got = {p.relative_to(tmp_path / f"s{chunk}"): p.read_bytes()
               for p in sorted((tmp_path / f"s{chunk}").rglob("*")) if p.is_file()}
        assert got.keys() == ref.keys()
        for name in ref:
            if name.name != "meta.json":
                assert got[name] == ref[name], (chunk, name)
        meta, ref_meta = (json.loads(d[Path("train/meta.json")]) for d in (got, ref))
        assert meta == ref_meta and stats == json.loads(ref[Path("split.json")])
        assert split_dataset(ds, days=7, seed=5, chunk_events=chunk).stats == stats
