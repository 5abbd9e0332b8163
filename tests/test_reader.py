"""otto-prep convert / export: exactness against a json.loads reference, bad input, atomicity, CLI."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep import Dataset, fastparse as fp, reader
from data_prep.reader import ReaderError, convert, export

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "otto_sample_train.jsonl"
TYPES = ("clicks", "carts", "orders")
FIELDS = ("session_ids", "offsets", "aid", "ts", "type")
I32 = 2**31 - 1
I64 = 2**63 - 1


# --------------------------------------------------------------------------- reference
def reference(data: bytes) -> dict[str, np.ndarray]:
    """The arrays a plain json.loads loop gives for a valid OTTO JSONL byte string."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    sess, offs, aid, ts, typ = [], [0], [], [], []
    for line in lines:
        rec = json.loads(line)
        sess.append(rec["session"])
        for ev in rec["events"]:
            aid.append(ev["aid"])
            ts.append(ev["ts"])
            typ.append(TYPES.index(ev["type"]))
        offs.append(len(aid))
    return {"session_ids": np.array(sess, np.int64), "offsets": np.array(offs, np.int64),
            "aid": np.array(aid, np.int32), "ts": np.array(ts, np.int64), "type": np.array(typ, np.uint8)}


def assert_same(ds: Dataset, ref: dict[str, np.ndarray]) -> None:
    for f in FIELDS:
        got = getattr(ds, f)
        assert got.dtype == ref[f].dtype, f
        np.testing.assert_array_equal(got, ref[f], err_msg=f)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- the real sample
def test_sample_exact_counts_and_arrays(tmp_path):
    out = convert(SAMPLE, tmp_path / "ds", quiet=True)
    ds = Dataset.open(out)
    assert (ds.n_sessions, ds.n_events) == (20, 862)
    assert ds.type_counts() == {"clicks": 800, "carts": 52, "orders": 10}
    assert_same(ds, reference(SAMPLE.read_bytes()))
    meta = ds.meta
    assert meta["format"] == "otto-dataset" and meta["format_version"] == 1
    assert meta["n_sessions"] == 20 and meta["n_events"] == 862
    assert meta["counts"] == {"clicks": 800, "carts": 52, "orders": 10}
    assert meta["source"] == {"name": SAMPLE.name, "size": SAMPLE.stat().st_size}
    assert meta["bad_lines_skipped"] == 0
    assert leftovers(tmp_path) == []
    # the arrays are standard .npy files
    np.testing.assert_array_equal(np.load(out / "aid.npy", allow_pickle=False), ds.aid)


def test_fast_path_takes_every_compact_line():
    """The Numba fast path alone parses the compact sample: no line needs json.loads."""
    data = SAMPLE.read_bytes()
    buf = np.frombuffer(data, np.uint8)  # read-only, as the reader passes it
    bounds = fp.chunk_bounds(buf, buf.shape[0], 3)
    per = np.empty(3, np.int64)
    fp.count_lines(buf, *fp.word_view(buf), bounds, 0, 3, per)
    L = int(per.sum())
    base = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int64)
    ls, le, sess, nev, evpos = (np.empty(L, np.int64) for _ in range(5))
    status = np.empty(L, np.uint8)
    m = buf.shape[0] // fp.MIN_EVENT_BYTES + 1
    aid, ts, typ = np.empty(m, np.int32), np.empty(m, np.int64), np.empty(m, np.uint8)
    stats = np.full((3, 5), -1, np.int64)
    fp.parse_chunks(buf, bounds, 0, 2, base, ls, le, status, sess, nev, evpos, aid, ts, typ, stats)
    fp.parse_chunks(buf, bounds, 2, 3, base, ls, le, status, sess, nev, evpos, aid, ts, typ, stats)
    ref = reference(data)
    assert L == 20 and stats[:, 0].sum() == 0 and (status == fp.ST_FAST).all()
    assert stats[:, 1].sum() == 862 and stats[:, 2:].sum(axis=0).tolist() == [800, 52, 10]
    np.testing.assert_array_equal(sess, ref["session_ids"])
    np.testing.assert_array_equal(nev, np.diff(ref["offsets"]))
    got = np.concatenate([aid[p:p + k] for p, k in zip(evpos, nev)])
    np.testing.assert_array_equal(got, ref["aid"])


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300).map(lambda b: b.replace(b"x", b"\n")), start=st.integers(0, 9),
       cuts=st.lists(st.integers(0, 300), max_size=4))
def test_count_lines_word_at_a_time_equals_bytewise(data, start, cuts):
    """The SWAR newline count equals a plain count for any bytes, alignment and chunking."""
    raw = np.frombuffer(b"y" * start + data, np.uint8)
    buf = raw[start:]  # any alignment
    n = buf.shape[0]
    bounds = np.array(sorted({0, n, *[min(c, n) for c in cuts]}), np.int64)
    out = np.empty(bounds.shape[0] - 1, np.int64)
    fp.count_lines(buf, *fp.word_view(buf), bounds, 0, out.shape[0], out)
    for t in range(out.shape[0]):
        chunk = data[bounds[t]:bounds[t + 1]]
        assert out[t] == chunk.count(b"\n") + (1 if chunk and not chunk.endswith(b"\n") else 0)


@pytest.mark.parametrize("line", [
    b'{"session":1,"events":[{"aid":1,"ts":2,"type":"clicks"}]}',
    b'{"session":01,"events":[{"aid":1,"ts":2,"type":"clicks"}]}',        # leading zero: invalid JSON
    b'{"session":1,"events":[{"aid":2147483648,"ts":2,"type":"clicks"}]}',  # aid beyond int32
    b'{"session":1234567890123456789,"events":[{"aid":1,"ts":2,"type":"clicks"}]}',  # 19 digits
    b'{"session":1,"events":[{"aid":1,"ts":2,"type":"click"}]}',
    b'{"session":1,"events":[{"aid":1,"ts":2,"type":"clicks"}]} ',
    b'{"session":1,"events":[]}',
    b'{"session":1,"events":[{"aid":1,"ts":2,"type":"clicks"},]}',
    b'{"session":-1,"events":[{"aid":1,"ts":2,"type":"clicks"}]}',
])
def test_fast_path_accepts_only_the_exact_shape(line):
    """Whatever the fast path accepts equals json.loads; everything else goes to the fallback."""
    buf = np.frombuffer(line + b"\n", np.uint8)
    bounds = np.array([0, buf.shape[0]], np.int64)
    arrs = [np.zeros(1, np.int64) for _ in range(5)]
    status = np.zeros(1, np.uint8)
    aid, ts, typ = np.zeros(8, np.int32), np.zeros(8, np.int64), np.zeros(8, np.uint8)
    fp.parse_chunks(buf, bounds, 0, 1, np.zeros(1, np.int64), arrs[0], arrs[1], status, arrs[2], arrs[3], arrs[4],
                    aid, ts, typ, np.zeros((1, 5), np.int64))
    assert arrs[1][0] == len(line)  # line end found either way
    if status[0] == fp.ST_FAST:
        rec = json.loads(line)
        assert arrs[2][0] == rec["session"] and arrs[3][0] == len(rec["events"])
        assert line == b'{"session":1,"events":[{"aid":1,"ts":2,"type":"clicks"}]}'
    else:
        assert line != b'{"session":1,"events":[{"aid":1,"ts":2,"type":"clicks"}]}'


@pytest.mark.parametrize("block_size", [1, 2, 31, 64, 100, 4096, 1 << 20])
def test_sample_any_block_size(tmp_path, block_size):
    ds = Dataset.open(convert(SAMPLE, tmp_path / "ds", quiet=True, block_size=block_size))
    assert_same(ds, reference(SAMPLE.read_bytes()))


def test_threads_do_not_change_the_result(tmp_path, monkeypatch):
    """The threaded path (pools, one chunk per thread) equals the single-thread path."""
    ref = reference(SAMPLE.read_bytes())
    monkeypatch.setattr(reader, "PARALLEL_MIN_BYTES", 64)
    for threads in (1, 2, 3):
        for block_size in (100, 5000, 1 << 20):
            ds = Dataset.open(convert(SAMPLE, tmp_path / f"t{threads}_{block_size}", quiet=True,
                                      threads=threads, block_size=block_size))
            assert_same(ds, ref)
    ds = Dataset.open(convert(SAMPLE, tmp_path / "ds", quiet=True))
    for threads in (1, 3):
        out = export(ds, tmp_path / f"e{threads}.jsonl", quiet=True, threads=threads, batch_events=100)
        assert out.read_bytes() == SAMPLE.read_bytes()
    with pytest.raises(ValueError, match="threads"):
        convert(SAMPLE, tmp_path / "c", threads=0)
    assert not (tmp_path / "c").exists()


def test_gzip_input_and_crlf(tmp_path):
    data = SAMPLE.read_bytes()
    gz = tmp_path / "s.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    assert_same(Dataset.open(convert(gz, tmp_path / "g", quiet=True, block_size=777)), reference(data))
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(data.replace(b"\n", b"\r\n"))
    assert_same(Dataset.open(convert(crlf, tmp_path / "c", quiet=True, block_size=333)), reference(data))
    nofinal = tmp_path / "nofinal.jsonl"
    nofinal.write_bytes(data.rstrip(b"\n"))
    assert_same(Dataset.open(convert(nofinal, tmp_path / "n", quiet=True, block_size=1000)), reference(data))


# --------------------------------------------------------------------------- hypothesis: any valid file
_event = st.fixed_dictionaries({
    "aid": st.one_of(st.integers(0, I32), st.sampled_from([0, 1, I32])),
    "ts": st.one_of(st.integers(0, I64), st.sampled_from([0, 1659304800025, I64])),
    "type": st.sampled_from(TYPES),
})


@st.composite
def otto_files(draw):
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(st.one_of(st.integers(0, I64), st.integers(0, 50)), min_size=n, max_size=n, unique=True))
    lines = []
    for sid in ids:
        events = draw(st.lists(_event, min_size=1, max_size=4))
        style = draw(st.sampled_from(["compact", "compact", "spaces", "reorder", "extra", "escape"]))
        rec = {"session": sid, "events": events}
        if style == "compact":
            text = json.dumps(rec, separators=(",", ":"))
        elif style == "spaces":
            seps = draw(st.sampled_from([(", ", ": "), (" ,", " :"), (",\t", ":\t")]))
            text = " " * draw(st.integers(0, 2)) + json.dumps(rec, separators=seps) + " " * draw(st.integers(0, 2))
        elif style == "reorder":
            evs = [dict(reversed(list(e.items()))) for e in events]
            text = json.dumps({"events": evs, "session": sid}, separators=(",", ":"))
        elif style == "extra":
            extra = draw(st.text(max_size=5))
            evs = [dict(e, x=[extra, {"y": None}]) for e in events]
            text = json.dumps({"session": sid, "note": extra, "events": evs}, separators=(",", ":"))
        else:
            text = json.dumps(rec, separators=(",", ":")).replace('"clicks"', '"\\u0063licks"').replace('"aid"', '"\\u0061id"')
        lines.append(text.encode())
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = eol.join(lines)
    if draw(st.booleans()):
        data += eol
    return data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=otto_files(), block_size=st.integers(1, 200), gz=st.booleans())
def test_any_valid_file_equals_the_json_reference(data, block_size, gz):
    """Plain files go through memory-mapped windows, gzip through read buffers: both are exact."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / ("in.jsonl.gz" if gz else "in.jsonl")
        src.write_bytes(gzip.compress(data) if gz else data)
        ds = Dataset.open(convert(src, Path(d) / "ds", quiet=True, block_size=block_size))
        assert_same(ds, reference(data))
        assert ds.meta["bad_lines_skipped"] == 0


def _valid(rec) -> bool:
    """An independent statement of what a valid OTTO record is."""
    def uint(v, hi):
        return type(v) is int and 0 <= v <= hi
    if not (isinstance(rec, dict) and "session" in rec and uint(rec["session"], I64)):
        return False
    evs = rec.get("events")
    return isinstance(evs, list) and len(evs) > 0 and all(
        isinstance(e, dict) and uint(e.get("aid"), I32) and uint(e.get("ts"), I64) and e.get("type") in TYPES
        for e in evs)


_mixed_line = st.one_of(
    st.builds(lambda s, a: GOOD.replace('"aid":5', f'"aid":{a}') % s, st.integers(0, 30), st.integers(0, I32)),
    st.builds(lambda s: '{"events":[{"type":"carts","ts":1,"aid":2}], "session": %d}' % s, st.integers(0, 30)),
    st.sampled_from(["", "  ", "{", "null", "[]", '{"session":1,"events":[]}', '{"session":-1,"events":[{"aid":1,"ts":1,"type":"clicks"}]}',
                     '{"session":2,"events":[{"aid":1.5,"ts":1,"type":"clicks"}]}', '{"session":3,"events":[{"aid":1,"ts":1,"type":"view"}]}',
                     '{"session":4,"events":[{"aid":1,"ts":true,"type":"clicks"}]}', '{"session":5,"events":[{"aid":1,"type":"clicks"}]}',
                     '{"session":01,"events":[{"aid":1,"ts":1,"type":"clicks"}]}', "\x00", "\u00e9"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_mixed_line, min_size=1, max_size=25), block_size=st.integers(1, 300), final_nl=st.booleans())
def test_any_mix_of_good_bad_and_duplicate_lines(lines, block_size, final_nl):
    """Skip mode keeps exactly the valid first occurrences; error mode names the first bad line."""
    data = ("\n".join(lines) + ("\n" if final_nl else "")).encode()
    file_lines = data.split(b"\n")
    if file_lines[-1] == b"":  # the final newline ends the last line; it does not start another
        file_lines.pop()
    kept, bad, seen = [], [], set()
    for k, line in enumerate(file_lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if _valid(rec) and rec["session"] not in seen:
            seen.add(rec["session"])
            kept.append(json.dumps(rec))
        else:
            bad.append(k)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "mixed.jsonl"
        src.write_bytes(data)
        if not data:
            with pytest.raises(ReaderError, match="line 1: empty file"):
                convert(src, Path(d) / "e", quiet=True, block_size=block_size)
            return
        if bad:
            with pytest.raises(ReaderError, match=rf"mixed\.jsonl: line {bad[0]}: "):
                convert(src, Path(d) / "e", quiet=True, block_size=block_size)
        if not kept:
            with pytest.raises(ReaderError):
                convert(src, Path(d) / "s", quiet=True, block_size=block_size, on_bad_line="skip")
            return
        ds = Dataset.open(convert(src, Path(d) / "s", quiet=True, block_size=block_size, on_bad_line="skip"))
        assert_same(ds, reference("\n".join(kept).encode()))
        assert ds.meta["bad_lines_skipped"] == len(bad)
        assert [e["line"] for e in ds.meta.get("bad_line_examples", [])] == bad[:10]


# --------------------------------------------------------------------------- export
def test_convert_export_round_trip_is_byte_identical(tmp_path):
    ds_dir = convert(SAMPLE, tmp_path / "ds", quiet=True)
    out = export(ds_dir, tmp_path / "back.jsonl", quiet=True)
    assert out.read_bytes() == SAMPLE.read_bytes()
    gz = export(Dataset.open(ds_dir), tmp_path / "back.jsonl.gz", quiet=True, batch_events=7)
    assert gzip.decompress(gz.read_bytes()) == SAMPLE.read_bytes()
    assert leftovers(tmp_path) == []


@settings(max_examples=60, deadline=None)
@given(lens=st.lists(st.integers(1, 5), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       batch=st.integers(1, 12))
def test_export_then_convert_round_trips_any_dataset(lens, seed, batch):
    rng = np.random.default_rng(seed)
    S, offsets = len(lens), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    E = int(offsets[-1])
    sids = rng.choice(np.array([0, 9, 10, 99, I64, I64 - 1, 12345678901234], np.int64), S, replace=False) if S <= 7 else np.arange(S)
    aid = rng.choice(np.array([0, 1, 9, 10, I32, 1855602], np.int32), E)
    ts = rng.choice(np.array([0, 9, 10, 1659304800025, I64], np.int64), E)
    typ = rng.integers(0, 3, E).astype(np.uint8)
    ds = Dataset(sids.astype(np.int64), offsets, aid, ts, typ)
    with tempfile.TemporaryDirectory() as d:
        out = export(ds, Path(d) / "x.jsonl", quiet=True, batch_events=batch)
        data = out.read_bytes()
        ref = reference(data)
        for f in FIELDS:
            np.testing.assert_array_equal(ref[f], getattr(ds, f))
        # compact formatting, exactly what json.dumps gives
        expected = b"".join(
            json.dumps({"session": int(sids[i]), "events": [
                {"aid": int(aid[j]), "ts": int(ts[j]), "type": TYPES[typ[j]]} for j in range(offsets[i], offsets[i + 1])]},
                separators=(",", ":")).encode() + b"\n" for i in range(S))
        assert data == expected
        back = Dataset.open(convert(out, Path(d) / "ds", quiet=True))
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(back, f), getattr(ds, f))


def test_export_refuses_what_otto_cannot_hold(tmp_path):
    ok = dict(session_ids=np.array([1, 2], np.int64), aid=np.array([1, 2], np.int32),
              ts=np.array([1, 2], np.int64), type=np.array([0, 1], np.uint8))
    empty_session = Dataset(offsets=np.array([0, 2, 2], np.int64), **ok)
    with pytest.raises(ValueError, match="row 1 .*no events"):
        export(empty_session, tmp_path / "a.jsonl")
    neg = Dataset(offsets=np.array([0, 1, 2], np.int64), **dict(ok, ts=np.array([1, -2], np.int64)))
    with pytest.raises(ValueError, match="row 1 .*negative"):
        export(neg, tmp_path / "b.jsonl")
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- bad input
GOOD = '{"session":%d,"events":[{"aid":5,"ts":7,"type":"clicks"}]}'
BAD_CASES = [
    ('{"session":1,"events":[{"aid":5,"ts":7,"type":"clicks"}', 2, "invalid JSON"),
    ('{"events":[{"aid":5,"ts":7,"type":"clicks"}]}', 2, "missing 'session'"),
    ('{"session":1}', 2, "missing 'events'"),
    ('{"session":1,"events":[{"ts":7,"type":"clicks"}]}', 2, "events[0]: missing 'aid'"),
    ('{"session":1,"events":[{"aid":5,"type":"clicks"}]}', 2, "missing 'ts'"),
    ('{"session":1,"events":[{"aid":5,"ts":7,"type":"carts"},{"aid":5,"ts":7}]}', 2, "events[1]: missing 'type'"),
    ('{"session":1,"events":[{"aid":5,"ts":7,"type":"views"}]}', 2, "unknown event type"),
    ('{"session":1,"events":[{"aid":5,"ts":7,"type":1}]}', 2, "not a string"),
    ('{"session":1,"events":[{"aid":5.0,"ts":7,"type":"clicks"}]}', 2, "aid: 5.0 is a float"),
    ('{"session":1,"events":[{"aid":5,"ts":true,"type":"clicks"}]}', 2, "ts: true is a boolean"),
    ('{"session":"1","events":[{"aid":5,"ts":7,"type":"clicks"}]}', 2, "session: \"1\" is a string"),
    ('{"session":null,"events":[{"aid":5,"ts":7,"type":"clicks"}]}', 2, "session: null is null"),
    ('{"session":1,"events":[{"aid":-1,"ts":7,"type":"clicks"}]}', 2, "aid: -1 is negative"),
    ('{"session":1,"events":[{"aid":2147483648,"ts":7,"type":"clicks"}]}', 2, "out of range"),
    ('{"session":9223372036854775808,"events":[{"aid":5,"ts":7,"type":"clicks"}]}', 2, "session: 9223372036854775808 is out of range"),
    ('{"session":1,"events":[{"aid":5,"ts":-7,"type":"clicks"}]}', 2, "ts: -7 is negative"),
    ('{"session":1,"events":[{"aid":5,"ts":1e3,"type":"clicks"}]}', 2, "is a float"),
    ('{"session":1,"events":[]}', 2, "empty 'events'"),
    ('{"session":1,"events":{}}', 2, "'events' is not a list"),
    ('{"session":1,"events":[7]}', 2, "events[0]: not a JSON object"),
    ('[1,2]', 2, "not a JSON object"),
    ('', 2, "empty line"),
    ('   ', 2, "blank line"),
    ('{"session":0,"events":[{"aid":5,"ts":7,"type":"clicks"}]}', 2, "duplicate session id 0 (first seen on line 1)"),
]


@pytest.mark.parametrize("middle,line,reason", BAD_CASES)
@pytest.mark.parametrize("block_size", [23, 1 << 20])
def test_bad_line_is_an_error_naming_file_line_reason(tmp_path, middle, line, reason, block_size):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join([GOOD % 0, middle, GOOD % 2]) + "\n")
    with pytest.raises(ReaderError) as exc:
        convert(src, tmp_path / "out", quiet=True, block_size=block_size)
    msg = str(exc.value)
    assert str(src) in msg and f"line {line}:" in msg and reason in msg, msg
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []


def test_damaged_gzip_is_an_error(tmp_path):
    data = gzip.compress(SAMPLE.read_bytes())
    for name, blob in (("cut.jsonl.gz", data[: len(data) // 2]), ("bad.jsonl.gz", data[:20] + b"\xff" * 200 + data[220:])):
        src = tmp_path / name
        src.write_bytes(blob)
        with pytest.raises(ReaderError, match=rf"{name}: damaged gzip stream"):
            convert(src, tmp_path / "out", quiet=True)
        assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []


def test_truncated_last_line_and_empty_file(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text(GOOD % 0 + "\n" + GOOD % 1 + "\n" + (GOOD % 2)[:-5])
    with pytest.raises(ReaderError, match=r"t\.jsonl: line 3: truncated last line"):
        convert(src, tmp_path / "out", quiet=True)
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    for mode in ("error", "skip"):
        with pytest.raises(ReaderError, match=r"e\.jsonl: line 1: empty file"):
            convert(empty, tmp_path / "out", quiet=True, on_bad_line=mode)
    gz = tmp_path / "e.jsonl.gz"
    gz.write_bytes(gzip.compress(b""))
    with pytest.raises(ReaderError, match="empty file"):
        convert(gz, tmp_path / "out", quiet=True)
    only_bad = tmp_path / "b.jsonl"
    only_bad.write_text("nope\n{}\n")
    with pytest.raises(ReaderError, match="no valid OTTO record"):
        convert(only_bad, tmp_path / "out", quiet=True, on_bad_line="skip")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_the_first_problem_in_file_order_is_reported(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text("\n".join([GOOD % 0, GOOD % 0, "garbage"]) + "\n")  # duplicate before invalid JSON
    with pytest.raises(ReaderError, match="line 2: duplicate"):
        convert(src, tmp_path / "out", quiet=True)
    src.write_text("\n".join([GOOD % 0, "garbage", GOOD % 0]) + "\n")
    with pytest.raises(ReaderError, match="line 2: invalid JSON"):
        convert(src, tmp_path / "out", quiet=True)


@pytest.mark.parametrize("block_size", [40, 1000, 1 << 20])
def test_duplicates_across_blocks_in_any_order(tmp_path, block_size):
    """Ids out of order force the hash table (built from ids already written, then grown)."""
    rng = np.random.default_rng(3)
    ids = rng.permutation(600)
    lines = [GOOD % i for i in ids]
    first = int(np.flatnonzero(ids == 123)[0])
    lines.append(GOOD % 123)
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReaderError, match=rf"line 601: duplicate session id 123 \(first seen on line {first + 1}\)"):
        convert(src, tmp_path / "out", quiet=True, block_size=block_size)
    ds = Dataset.open(convert(src, tmp_path / "out", quiet=True, block_size=block_size, on_bad_line="skip"))
    np.testing.assert_array_equal(ds.session_ids, ids)
    assert ds.meta["bad_lines_skipped"] == 1


def test_skip_mode_counts_and_keeps_the_good_lines(tmp_path, capsys):
    good = [GOOD % i for i in (7, 3, 9)]
    lines = ["{bad", good[0], "", good[1],
             '{"session":9,"events":[{"aid":5,"ts":7,"type":"views"}]}',
             '{"session":7,"events":[{"aid":1,"ts":1,"type":"orders"}]}',   # duplicate of line 2
             good[2], '{"session": 12 ,"events":[{"aid":5,"ts":7,"type":"carts"}]}',
             '{"session":13,"events":[{"aid":5,"ts":7']                         # truncated last line
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines))
    for block_size in (17, 1 << 20):
        out = convert(src, tmp_path / f"o{block_size}", on_bad_line="skip", block_size=block_size)
        ds = Dataset.open(out)
        kept = "\n".join(good + ['{"session":12,"events":[{"aid":5,"ts":7,"type":"carts"}]}']).encode()
        assert_same(ds, reference(kept))
        meta = ds.meta
        assert meta["bad_lines_skipped"] == 5
        ex = [(e["line"], e["reason"].split(" (")[0]) for e in meta["bad_line_examples"]]
        assert ex == [(1, "invalid JSON"), (3, "empty line"),
                      (5, "events[0].type: unknown event type \"views\""),
                      (6, "duplicate session id 7"), (9, "truncated last line: not a complete JSON object")]
        assert "first seen on line 2" in meta["bad_line_examples"][3]["reason"]
        err = capsys.readouterr().err
        assert "skipped 5 bad line(s)" in err and "line 1: invalid JSON" in err


def test_many_short_bad_lines_in_one_block(tmp_path):
    """More lines than a block's line limit (block_size // 32): the block is taken in parts."""
    src = tmp_path / "short.jsonl"
    src.write_text("\n" * 500 + GOOD % 1 + "\n" + "x\n" * 300 + GOOD % 2 + "\n")
    ds = Dataset.open(convert(src, tmp_path / "ds", quiet=True, block_size=4096, on_bad_line="skip"))
    assert ds.session_ids.tolist() == [1, 2] and ds.meta["bad_lines_skipped"] == 800
    assert [e["line"] for e in ds.meta["bad_line_examples"]] == list(range(1, 11))
    src.write_text("\n".join([GOOD % i for i in range(500)] + ["x"]))  # 500 good lines, then a bad one
    with pytest.raises(ReaderError, match="line 501: truncated last line"):
        convert(src, tmp_path / "ds2", quiet=True, block_size=2048)


def test_convert_reports_progress_as_lines_in_a_log(tmp_path, monkeypatch, capsys):
    # stderr captured by pytest is not a terminal: complete lines, no carriage returns
    src = tmp_path / "in.jsonl"
    src.write_text("".join(GOOD % i + "\n" for i in range(3000)))
    monkeypatch.setattr(reader.Progress, "due", lambda self: True)
    monkeypatch.setattr(reader.Progress, "__init__", _eager_init(reader.Progress.__init__))
    convert(src, tmp_path / "ds", block_size=4096)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("convert in.jsonl: ")]
    assert len(lines) >= 3 and "\r" not in err
    assert all(" MB (" in ln and "MB/s" in ln and "ETA" in ln and "events" in ln for ln in lines)
    assert "(100.0%)" in lines[-1] and "3,000 events" in lines[-1]
    convert(src, tmp_path / "ds2", block_size=4096, quiet=True)
    assert capsys.readouterr().err == ""


def _eager_init(init):
    def wrapped(self, *a, **kw):
        init(self, *a, **dict(kw, every=0.0, first=0.0))
    return wrapped


# --------------------------------------------------------------------------- atomicity
def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        convert(SAMPLE, out, quiet=True)
    assert (out / "keep.txt").exists()
    convert(SAMPLE, out, quiet=True, overwrite=True)
    assert not (out / "keep.txt").exists() and Dataset.open(out).n_sessions == 20


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch, exc_type, threaded):
    """An exception mid-way (also with reads, parses and writes in flight on the pools)."""
    if threaded:
        monkeypatch.setattr(reader, "PARALLEL_MIN_BYTES", 64)
    calls = []

    def flaky(real):
        def parse(*args):
            calls.append(1)
            if len(calls) == 3:
                raise exc_type("stop")
            return real(*args)
        return parse

    monkeypatch.setattr(fp, "parse_chunks", flaky(fp.parse_chunks))
    for src in (SAMPLE, gz_sample(tmp_path)):
        calls.clear()
        with pytest.raises(exc_type):
            convert(src, tmp_path / "ds", quiet=True, block_size=4000, threads=2)
        assert len(calls) >= 3 if threaded else len(calls) == 3  # threaded: the block's other chunk may run too
        assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


def gz_sample(tmp_path):
    gz = tmp_path / "sample.jsonl.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    return gz


def test_bad_line_with_writes_in_flight(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "PARALLEL_MIN_BYTES", 64)
    src = tmp_path / "late.jsonl"
    src.write_bytes(SAMPLE.read_bytes() + b'{"session":99,"events":[{"aid":1,"ts":1,"type":"x"}]}\n')
    with pytest.raises(ReaderError, match="line 21: events.0..type: unknown event type"):
        convert(src, tmp_path / "ds", quiet=True, block_size=3000, threads=2)
    assert not (tmp_path / "ds").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["late.jsonl"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_bad_line"):
        convert(SAMPLE, tmp_path / "o", on_bad_line="ignore")
    with pytest.raises(ValueError, match="block_size"):
        convert(SAMPLE, tmp_path / "o", block_size=0)
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "missing.jsonl", tmp_path / "o")
    with pytest.raises(IsADirectoryError):
        convert(tmp_path, tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- CLI
def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "data_prep", *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.slow
def test_cli_subprocess_exit_codes_and_no_traceback(tmp_path):
    r = _cli("convert", str(SAMPLE), "ds", "--quiet", "--block-size", "1000", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert Dataset.open(tmp_path / "ds").n_events == 862
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD % 0 + "\n" + '{"session":1,"events":[{"aid":-3,"ts":7,"type":"clicks"}]}\n')
    r = _cli("convert", "bad.jsonl", "out", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "bad.jsonl: line 2: events[0].aid: -3 is negative" in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_in_process(tmp_path, monkeypatch, capsys):
    from data_prep.cli import main
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD % 0 + "\n" + "{oops\n")
    assert main(["convert", "bad.jsonl", "out"]) == 1
    err = capsys.readouterr().err
    assert "error: bad.jsonl: line 2: invalid JSON" in err and "Traceback" not in err
    assert main(["convert", "bad.jsonl", "out", "--on-bad-line", "skip", "--threads", "2", "--block-size", "1_000"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad line(s): line 2: invalid JSON" in err and "1 sessions, 1 events" in err
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["bad_lines_skipped"] == 1
    assert main(["convert", "bad.jsonl", "out"]) == 1  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(SAMPLE), "out", "--overwrite", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["export", "out", "back.jsonl.gz"]) == 0
    assert gzip.decompress((tmp_path / "back.jsonl.gz").read_bytes()) == SAMPLE.read_bytes()
    assert "wrote back.jsonl.gz" in capsys.readouterr().err
    assert main(["export", "missing_dir", "x.jsonl"]) == 1
    assert "missing_dir: not a dataset directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse rejects a bad flag value before anything runs
        main(["convert", "bad.jsonl", "o2", "--block-size", "0"])
    assert exc.value.code == 2 and not (tmp_path / "o2").exists()
    capsys.readouterr()
    for cmd, flags in (("convert", ("--block-size", "--on-bad-line", "--threads", "--overwrite", "--quiet")),
                       ("export", ("--threads", "--quiet", ".gz"))):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0 and all(f in out for f in flags), out


_INT64 = st.integers(-2 ** 63, 2 ** 63 - 1)
_INT_EDGES = [0, 1, 9, 10, 99, 100, 10 ** 18 - 1, 10 ** 18, 2 ** 63 - 1, -1, -9, -10, -(2 ** 63 - 1), -2 ** 63]


def _formatted(kernel, v) -> bytes:
    out = np.full(24, 255, np.uint8)
    end = kernel(out, 1, v)
    assert (out[0] == 255) and (out[end:] == 255).all()  # writes exactly out[1:end]
    return out[1:end].tobytes()


@settings(max_examples=100, deadline=None)
@given(st.lists(_INT64, max_size=20))
def test_integer_formatting_is_python_str(values):
    """fastparse.put_int/put_uint, the one integer-to-ASCII routine, write what str() writes;
    parse_uint reads it back and refuses what does not fit int64."""
    for v in _INT_EDGES + values:
        assert _formatted(fp.put_int, np.int64(v)) == str(v).encode()
        if v >= 0:
            assert _formatted(fp.put_uint, np.int64(v)) == str(v).encode()
            assert fp.ndigits(np.int64(v)) == len(str(v))
    assert _formatted(fp.put_uint, np.uint64(2 ** 64 - 1)) == str(2 ** 64 - 1).encode()
    for v in [x for x in _INT_EDGES + values if x >= 0] + [2 ** 63, 10 ** 19, 10 ** 30]:
        text = np.frombuffer(b"00" + str(v).encode() + b"_", np.uint8)  # leading zeros are allowed
        assert fp.parse_uint(text, 0, text.size) == ((v, text.size - 1) if v < 2 ** 63 else (0, -1))
    assert fp.parse_uint(np.frombuffer(b"_1", np.uint8), 0, 2) == (0, -1)
