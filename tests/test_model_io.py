"""The model directory format and the atomic writers behind every output."""
import json
import os

import numpy as np
import pytest

from data_prep.atomic import atomic_directory, atomic_file
from w2v.model_io import ModelError, load_model, popularity, save_index, save_model


def _model(tmp_path, V=5, D=3, **kw):
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((V, D)).astype(np.float32)
    out = rng.standard_normal((V, D)).astype(np.float32)
    aids = np.arange(100, 100 + V)
    counts = np.arange(V, 0, -1)
    return save_model(tmp_path / "m", vec, out, aids, counts, {"config": {"seed": 1}}, **kw), vec, out


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    path, vec, out = _model(tmp_path)
    m = load_model(path)
    assert isinstance(m.vectors, np.memmap) and not m.vectors.flags.writeable
    np.testing.assert_array_equal(m.vectors, vec)
    np.testing.assert_array_equal(m.output, out)
    assert m.aids.tolist() == [100, 101, 102, 103, 104]
    assert m.meta["format"] == "otto-w2v-model" and m.meta["vocab_size"] == 5 and m.meta["vector_size"] == 3
    assert m.meta["config"] == {"seed": 1}
    assert m.neighbors is None and m.popular is None


def test_existing_directory_is_not_overwritten_unless_asked(tmp_path):
    path, _, _ = _model(tmp_path)
    with pytest.raises(FileExistsError):
        _model(tmp_path)
    _model(tmp_path, V=2, overwrite=True)
    assert load_model(path).vocab_size == 2


@pytest.mark.parametrize("damage, needle", [
    (lambda p: (p / "output.npy").unlink(), "output.npy: missing"),
    (lambda p: (p / "vectors.npy").write_bytes((p / "vectors.npy").read_bytes()[:-7]), "vectors.npy"),
    (lambda p: np.save(p / "aids.npy", np.arange(4)), "aids.npy: length 4"),
    (lambda p: np.save(p / "counts.npy", np.arange(5, dtype=np.int32)), "counts.npy: dtype"),
    (lambda p: (p / "meta.json").write_text("{not json"), "meta.json: not valid JSON"),
    (lambda p: (p / "meta.json").write_text(json.dumps({"format": "other"})), "meta.json: not an otto-w2v-model"),
])
def test_corrupt_files_are_named(tmp_path, damage, needle):
    path, _, _ = _model(tmp_path)
    damage(path)
    with pytest.raises(ModelError, match=needle.replace(".", r"\.")):
        load_model(path)


def test_output_header_is_checked_but_values_not_read_for_input_only_readers(tmp_path):
    from serve.recommend import Recommender
    path, vectors, _ = _model(tmp_path)
    assert load_model(path).output is not None
    assert load_model(path, keep_output=False).output is None
    assert Recommender.load(path).model.output is None  # the service never maps output.npy for good
    out = np.load(path / "output.npy")
    out[0, 0] = np.nan
    np.save(path / "output.npy", out)
    with pytest.raises(ModelError, match=r"output\.npy: row 0"):  # a reader of the output scans it
        load_model(path)
    # an input-only reader never uses these values, so it does not read them ...
    m = load_model(path, keep_output=False)
    assert m.output is None and np.array_equal(m.vectors, vectors)
    # ... but the file must still be what meta.json and vectors.npy say it is
    np.save(path / "output.npy", out[:-1])
    with pytest.raises(ModelError, match=r"output\.npy: shape"):
        load_model(path, keep_output=False)
    np.save(path / "output.npy", out)
    with open(path / "output.npy", "r+b") as f:
        f.truncate((path / "output.npy").stat().st_size - 4)
    with pytest.raises(ModelError, match=r"output\.npy"):
        load_model(path, keep_output=False)
    (path / "output.npy").unlink()
    with pytest.raises(ModelError, match=r"output\.npy"):
        load_model(path, keep_output=False)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(tmp_path / "nope")


def test_index_sidecar_is_checked(tmp_path):
    path, _, _ = _model(tmp_path)
    nb = np.tile(np.arange(2, dtype=np.int32), (5, 1))
    save_index(path, nb, np.ones((5, 2), np.float32), {"q_block": 4})
    m = load_model(path)
    assert m.index_meta["k"] == 2 and m.index_meta["q_block"] == 4
    np.testing.assert_array_equal(m.neighbors, nb)
    np.save(path / "neighbors.npy", nb[:3])
    with pytest.raises(ModelError, match="neighbors.npy"):
        load_model(path)


def test_popularity_order_and_ties():
    aid = np.array([7, 7, 3, 3, 9, 9, 9, 5], dtype=np.int32)
    typ = np.array([0, 0, 0, 0, 0, 2, 2, 1], dtype=np.uint8)
    pop, cnt = popularity(aid, typ, top=3)
    # clicks: 3 and 7 tie at 2 -> aid ascending; then 9 (1)
    assert pop[0].tolist() == [3, 7, 9] and cnt[0].tolist() == [2, 2, 1]
    assert pop[1].tolist() == [5, 3, 7] and cnt[1].tolist() == [1, 0, 0]
    assert pop[2].tolist() == [9, 3, 5] and cnt[2].tolist() == [2, 0, 0]


@pytest.mark.parametrize("offset", [0, 10**12])  # dense counting path / np.unique path (sparse ids)
def test_popularity_paths_agree_with_a_plain_count(offset):
    rng = np.random.default_rng(5)
    aid = (rng.zipf(1.5, 5000) % 300).astype(np.int64) + offset
    typ = rng.integers(0, 3, aid.shape[0]).astype(np.uint8)
    pop, cnt = popularity(aid, typ, top=50)
    uniq = np.unique(aid)
    for t in range(3):
        ref = sorted(((-int(((aid == a) & (typ == t)).sum()), int(a)) for a in uniq))[:50]
        assert pop[t].tolist() == [a for _, a in ref] and cnt[t].tolist() == [-c for c, _ in ref]


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target, "w") as fh:
            fh.write("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _rss_file_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for the resident set")
def test_release_pages_drops_scanned_pages_and_keeps_the_values(tmp_path):
    # a 64 MiB array scanned once is resident; released, it is not, and it reads the same
    from data_prep.npyio import load_npy, release_pages
    a = np.arange(16 << 20, dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    m = load_npy(tmp_path / "a.npy", "<f4", 1)
    total = float(m.sum(dtype=np.float64))
    before = _rss_file_kb()
    assert release_pages(m[10:], None, np.zeros(3)) >= a.nbytes      # a view finds its mapping
    after = _rss_file_kb()
    assert before - after >= 48 << 10, (before, after)               # KiB: at least 48 of the 64 MiB
    assert float(m.sum(dtype=np.float64)) == total
    np.testing.assert_array_equal(m[:1000], a[:1000])


def test_row_reader_reads_rows_of_the_file_like_the_map(tmp_path):
    from data_prep.npyio import RowReader, load_npy
    a = (np.arange(7 * 5, dtype=np.int32).reshape(7, 5) - 3) * 7
    np.save(tmp_path / "t.npy", a)
    m = load_npy(tmp_path / "t.npy", "<i4", 2)
    r = RowReader(m)
    assert r.shape == (7, 5) and r.dtype == np.int32 and len(r) == 7
    for i in range(-7, 7):
        np.testing.assert_array_equal(r[i], a[i])
        np.testing.assert_array_equal(r[i, :3], a[i, :3])
        np.testing.assert_array_equal(r[np.int64(i), 1:], a[i, 1:])
    assert not r[0].flags.writeable
    for bad in (7, -8):
        with pytest.raises(IndexError, match="out of range for 7 rows"):
            r[bad]
    with pytest.raises(TypeError):
        r[np.array([0, 1]), :2]
    with pytest.raises(TypeError):
        r[0, 1]
    with pytest.raises(ValueError, match="whole memory-mapped array"):
        RowReader(m[1:])
    with pytest.raises(ValueError, match="whole memory-mapped array"):
        RowReader(np.zeros((2, 2)))
    r.close()
    r.close()                                                          # twice is harmless
    with open(tmp_path / "t.npy", "r+b") as fh:                        # cut the file under a reader
        r2 = RowReader(m)
        fh.truncate(fh.seek(0, 2) - 8)
    with pytest.raises(OSError, match=r"t\.npy: shorter than its header says \(row 6\)"):
        r2[6]
    np.testing.assert_array_equal(r2[5], a[5])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for the resident set")
def test_row_reader_maps_nothing_where_scattered_reads_through_the_map_do(tmp_path):
    from data_prep.npyio import RowReader, load_npy, release_pages
    a = np.arange((1 << 20) * 20, dtype=np.int32).reshape(-1, 20)    # 80 MiB, rows of 80 bytes
    np.save(tmp_path / "t.npy", a)
    m = load_npy(tmp_path / "t.npy", "<i4", 2)
    m.sum()                                                            # in the page cache, as after the checks
    release_pages(m)
    rows = np.random.default_rng(1).choice(a.shape[0], 5100, replace=False)
    r = RowReader(m)
    assert all(int(r[int(i)][3]) == 20 * int(i) + 3 for i in rows[:100])   # code paths warm
    rows = rows[100:]
    before = _rss_file_kb()
    assert all(int(r[int(i)][3]) == 20 * int(i) + 3 for i in rows)
    assert _rss_file_kb() - before < 4 << 10                           # KiB: at most 4 MiB for 5,000 reads
    through_map = sum(int(m[int(i), 3]) for i in rows)                 # the same reads through the map
    assert through_map == sum(20 * int(i) + 3 for i in rows)
    assert _rss_file_kb() - before >= 4000 * 4                         # KiB: a page per row (~4,400 distinct)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for the resident set")
def test_the_service_keeps_only_what_it_reads_resident(tmp_path):
    from serve.recommend import Recommender
    V, D = 200_000, 64                                                 # 51 MB of vectors
    rng = np.random.default_rng(0)
    v = rng.standard_normal((V, D)).astype(np.float32)
    path = save_model(tmp_path / "big", v, v, np.arange(V, dtype=np.int64) * 3, np.ones(V, np.int64), {})
    save_index(path, np.tile(np.arange(1, 21, dtype=np.int32), (V, 1)), np.ones((V, 20), np.float32), {})
    base = _rss_file_kb()
    rec = Recommender.load(path)
    assert rec.released_bytes >= v.nbytes
    assert _rss_file_kb() - base < 16 << 10                           # KiB: the 51 + 32 MB read on load are not kept
    mid = _rss_file_kb()
    for aid in range(0, 3 * V, 3 * 37):                                # 5,406 scattered table rows
        assert rec.similar(aid, 20)[0][:2] == [3, 6]
    assert _rss_file_kb() - mid < 8 << 10                              # KiB: read, not mapped (32 MB of table;
                                                                       # aids.npy, 1.6 MB, is mapped)
    got = rec.session([3, 6], [0, 1], 5)                               # a session scans the vectors again
    assert len(got.aids) == 5 and _rss_file_kb() - base >= 40 << 10
    # --table-rows map: the same answers through the maps
    mapped = Recommender.load(path, table_rows="map")
    assert isinstance(mapped.kv.neighbor_rows, np.ndarray) and not isinstance(rec.kv.neighbor_rows, np.ndarray)
    for aid in (0, 3, 3 * (V - 1)):
        assert mapped.similar(aid, 20) == rec.similar(aid, 20) and mapped.similar(aid, 7) == rec.similar(aid, 7)
        assert rec.similar(aid, 7, scores=False) == (rec.similar(aid, 7)[0], None)


def test_table_rows_flag_reaches_the_server_config_and_the_worker_processes():
    from dataclasses import asdict

    from data_prep.flags import config_from_args
    from serve import cli
    from serve.server import ServerConfig
    for argv, want in ((["m"], "pread"), (["m", "--table-rows", "map"], "map"), (["m", "--table-rows", "pread"], "pread")):
        args = cli.build_parser().parse_args(argv)
        vars(args).update(asdict(config_from_args(ServerConfig, args)))
        assert cli._config(args)["table_rows"] == want
        child = cli._child_argv(args, 1, 3)
        assert child[child.index("--table-rows") + 1] == want
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["m", "--table-rows", "mmap"])
    with pytest.raises(ValueError, match="table_rows: expected one of map, pread, got 'mmap'"):
        ServerConfig(table_rows="mmap")


_HWM_SCRIPT = """
import re, sys
from w2v.model_io import load_model
m = load_model(sys.argv[1], keep_output=False, release_checked=sys.argv[2] == "1")
assert m.neighbors is not None
print(int(re.search(r"^VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read(), re.M).group(1)))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for the resident set")
def test_release_checked_keeps_the_checks_from_holding_every_file_resident(tmp_path):
    # the service's load: checked files leave the resident set one by one, so the high-water mark
    # holds the vectors or the table, not both (full size: 991 -> 701 MB, bench/RESULTS.md 5h)
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    V, D, k = 400_000, 32, 16                                          # vectors 51 MB, table 2 x 25.6 MB
    vec = rng.standard_normal((V, D), dtype=np.float32)
    save_model(tmp_path / "m", vec, np.zeros((V, D), np.float32), np.arange(V) * 3, np.ones(V, np.int64), {})
    nb = rng.integers(0, V, (V, k), dtype=np.int32)
    save_index(tmp_path / "m", nb, np.sort(rng.random((V, k), dtype=np.float32))[:, ::-1], {"method": "exact"})
    hwm = {}
    for flag in ("0", "1", "0", "1"):                                  # interleaved; the lower of two
        out = subprocess.run([sys.executable, "-c", _HWM_SCRIPT, str(tmp_path / "m"), flag], capture_output=True,
                             text=True, check=True).stdout
        hwm[flag] = min(hwm.get(flag, 1 << 60), int(out))
    assert hwm["0"] - hwm["1"] >= 35 << 10, hwm                        # KiB: most of the 51 MB table
    m = load_model(tmp_path / "m", keep_output=False, release_checked=True)   # the values are the same
    np.testing.assert_array_equal(m.vectors[::997], vec[::997])
    np.testing.assert_array_equal(m.neighbors[::997], nb[::997])
