"""Hostile files: every format refuses what it is not, once, at load, with one line naming the file.

Each test builds a small valid dataset or model, damages one file the way a careless operator
or an attacker would, and checks the loader's error (see tests/HOSTILE.md, "Files and CLIs").
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep import atomic
from data_prep.dataset import Dataset, DatasetError, write_dataset
from w2v import model_io
from w2v.model_io import ModelError, load_model, save_index, save_model

V, D, K = 50, 6, 4


def _one_line(exc: BaseException, path) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


@pytest.fixture
def ds_dir(tmp_path):
    return write_dataset(tmp_path / "ds", np.array([10, 11, 12], np.int64), np.array([0, 3, 4, 6], np.int64),
                         np.array([5, 6, 7, 5, 8, 9], np.int32), np.arange(6, dtype=np.int64),
                         np.array([0, 1, 2, 0, 0, 1], np.uint8))


@pytest.fixture
def model_dir(tmp_path):
    rng = np.random.default_rng(1)
    vec = rng.standard_normal((V, D)).astype(np.float32)
    aids = rng.permutation(1000)[:V].astype(np.int64)
    path = save_model(tmp_path / "m", vec, vec * 0.5, aids, np.arange(V, 0, -1), {"source": "test"},
                      popular=np.tile(aids[:5], (3, 1)), popular_counts=np.ones((3, 5), np.int64))
    nb = np.stack([(np.arange(K) + r + 1) % V for r in range(V)]).astype(np.int32)
    save_index(path, nb, np.full((V, K), 0.5, np.float32), {"vocab_size": V, "vector_size": D})
    return path


def _resave(path: Path, arr) -> None:
    np.save(path, arr, allow_pickle=False)


def _meta_edit(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


# ------------------------------------------------------------------------------ any .npy file
NOT_NPY = [
    ("npz", lambda p: np.savez(open(p, "wb"), a=np.zeros(3)), "zip archive"),
    ("empty", lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
    ("text", lambda p: p.write_text("1 2 3\n4 5 6\n"), "a text file"),
    ("pickle", lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "Python pickle"),
    ("binary", lambda p: p.write_bytes(bytes(range(200, 256)) * 3), "not a .npy array"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:-5]), "truncated: the header declares"),
    ("directory", lambda p: (p.unlink(), p.mkdir()), "is a directory"),
    ("object", lambda p: np.save(p, np.array([None, 1], object), allow_pickle=True), "holds Python objects"),
]


@pytest.mark.parametrize("name,damage,match", NOT_NPY, ids=[c[0] for c in NOT_NPY])
@pytest.mark.parametrize("target", ["aid.npy", "session_ids.npy"])
def test_dataset_file_that_is_not_an_npy_array(ds_dir, target, name, damage, match):
    damage(ds_dir / target)
    with pytest.raises(DatasetError, match=match) as e:
        Dataset.open(ds_dir)
    assert _one_line(e.value, ds_dir / target).startswith(str(ds_dir / target))


@pytest.mark.parametrize("name,damage,match", NOT_NPY, ids=[c[0] for c in NOT_NPY])
@pytest.mark.parametrize("target", ["vectors.npy", "aids.npy", "neighbors.npy"])
def test_model_file_that_is_not_an_npy_array(model_dir, target, name, damage, match):
    damage(model_dir / target)
    with pytest.raises(ModelError, match=match) as e:
        load_model(model_dir)
    assert _one_line(e.value, model_dir / target).startswith(str(model_dir / target))


def test_fortran_ordered_matrix(model_dir):
    np.save(model_dir / "vectors.npy", np.asfortranarray(np.load(model_dir / "vectors.npy")), allow_pickle=False)
    with pytest.raises(ModelError, match=r"vectors\.npy: stored in Fortran \(column-major\) order"):
        load_model(model_dir)


# ------------------------------------------------------------------------------ JSON sidecars
@pytest.mark.parametrize("sidecar", ["ds/meta.json", "m/meta.json", "m/index.json"])
def test_deeply_nested_sidecar_is_one_line_not_recursion_error(ds_dir, model_dir, sidecar):
    path = ds_dir.parent / sidecar
    path.write_text("[" * 200_000)
    with pytest.raises(ValueError, match=r"nested 200000 levels deep") as e:
        Dataset.open(ds_dir) if sidecar.startswith("ds") else load_model(model_dir)
    _one_line(e.value, path)


def test_json_depth_skips_strings_and_bounds_size(tmp_path):
    from data_prep import npyio
    assert npyio.json_depth(b'{"a": "[[[[[[", "b": [[1], {"c": "\\"]]"}]}') == 3
    p = tmp_path / "big.json"
    p.write_bytes(b" " * (npyio.MAX_JSON_BYTES + 1))
    with pytest.raises(npyio.FormatError, match="larger than any sidecar"):
        npyio.read_json(p)
    p.write_bytes(b"\xff{}")
    with pytest.raises(npyio.FormatError, match="not UTF-8"):
        npyio.read_json(p)


def test_model_meta_with_a_string_count_says_it_is_a_string(model_dir):
    _meta_edit(model_dir / "meta.json", vocab_size=str(V))
    with pytest.raises(ModelError, match=rf'meta\.json: "vocab_size": expected a positive integer, got a string \(\'{V}\'\)'):
        load_model(model_dir)
    _meta_edit(model_dir / "meta.json", vocab_size=V, vector_size=True)
    with pytest.raises(ModelError, match=r'"vector_size": expected a positive integer, got a boolean \(true\)'):
        load_model(model_dir)


def test_dataset_meta_types(ds_dir):
    meta = ds_dir / "meta.json"
    _meta_edit(meta, n_sessions="3")
    with pytest.raises(DatasetError, match=r'"n_sessions": expected a non-negative integer, got a string \(\'3\'\)'):
        Dataset.open(ds_dir)
    _meta_edit(meta, n_sessions=3, counts={"clicks": 3, "carts": 2.5, "orders": 1})
    with pytest.raises(DatasetError, match=r'"counts\.carts": expected a non-negative integer, got a number \(2\.5\)'):
        Dataset.open(ds_dir)
    _meta_edit(meta, counts=None)
    with pytest.raises(DatasetError, match=r'"counts": expected an object, got null'):
        Dataset.open(ds_dir)
    _meta_edit(meta, counts={"clicks": 3, "carts": 2, "orders": 1}, format_version="1")
    with pytest.raises(DatasetError, match=r'"format_version": expected an integer, got a string'):
        Dataset.open(ds_dir)


def test_index_json_without_k_blames_index_json(model_dir):
    meta = json.loads((model_dir / "index.json").read_text())
    del meta["k"]
    (model_dir / "index.json").write_text(json.dumps(meta))
    with pytest.raises(model_io.NeighborIndexError, match=r'index\.json: "k" is missing') as e:
        load_model(model_dir)
    assert "neighbors.npy" not in str(e.value)
    (model_dir / "index.json").write_text(json.dumps(dict(meta, k=K, vocab_size=V + 1)))
    with pytest.raises(model_io.NeighborIndexError, match=r'index\.json: "vocab_size" 51 does not match'):
        load_model(model_dir)


# ------------------------------------------------------------------------------ dataset values
def test_dataset_negative_aid_and_session_id(ds_dir):
    _resave(ds_dir / "aid.npy", np.array([5, 6, 7, -5, 8, 9], np.int32))
    with pytest.raises(DatasetError, match=r"aid\.npy: event 3: aid -5 is negative") as e:
        Dataset.open(ds_dir)
    _one_line(e.value, ds_dir)
    _resave(ds_dir / "aid.npy", np.array([5, 6, 7, 5, 8, 9], np.int32))
    _resave(ds_dir / "session_ids.npy", np.array([10, -1, 12], np.int64))
    with pytest.raises(DatasetError, match=r"session_ids\.npy: row 1: session id -1 is negative"):
        Dataset.open(ds_dir)


def test_dataset_duplicate_session_ids(ds_dir, tmp_path):
    _resave(ds_dir / "session_ids.npy", np.array([10, 11, 10], np.int64))
    with pytest.raises(DatasetError, match=r"session_ids\.npy: row 2: duplicate session id 10 \(first at row 0\)"):
        Dataset.open(ds_dir)
    big = np.arange(10_000, dtype=np.int64) * 7 + 3  # not sorted after the swap, values far above 8n
    big[[10, 9000]] = big[[9000, 10]]
    big[5000] = big[20]
    offs = np.arange(big.size + 1, dtype=np.int64)
    one = np.zeros(big.size, np.int32)
    with pytest.raises(DatasetError, match=rf"dup/session_ids\.npy: row 5000: duplicate session id {big[20] * 10**12} \(first at row 20\)"):
        write_dataset(tmp_path / "dup", big * 10**12, offs, one, one.astype(np.int64), one.astype(np.uint8))
    assert not (tmp_path / "dup").exists()


def test_in_memory_prefix_views_may_repeat_session_ids(ds_dir):
    ds = Dataset.open(ds_dir)
    assert ds.take(np.array([0, 0])).session_ids.tolist() == [10, 10]


# ------------------------------------------------------------------------------ model values
@pytest.mark.parametrize("value,match", [
    (-5, r"neighbour row -5 is outside \[-1, 50\)"),
    (1_000_000, r"neighbour row 1000000 is outside \[-1, 50\)"),
    (V, r"neighbour row 50 is outside"),
])
def test_neighbour_rows_out_of_range(model_dir, value, match):
    nb = np.array(np.load(model_dir / "neighbors.npy"))
    nb[7, 2] = value
    _resave(model_dir / "neighbors.npy", nb)
    with pytest.raises(model_io.NeighborIndexError, match=r"neighbors\.npy: row 7, column 2: " + match) as e:
        load_model(model_dir)
    _one_line(e.value, model_dir)


def test_neighbour_padding_and_scores(model_dir):
    nb = np.array(np.load(model_dir / "neighbors.npy"))
    sc = np.array(np.load(model_dir / "neighbor_scores.npy"))
    nb[3, -1], sc[3, -1] = -1, -np.inf  # padding is legal
    _resave(model_dir / "neighbors.npy", nb)
    _resave(model_dir / "neighbor_scores.npy", sc)
    assert load_model(model_dir).neighbors[3, -1] == -1
    sc[4, 0] = np.nan
    _resave(model_dir / "neighbor_scores.npy", sc)
    with pytest.raises(model_io.NeighborIndexError, match=r"neighbor_scores\.npy: row 4, column 0: score nan"):
        load_model(model_dir)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["vectors.npy", "output.npy"])
def test_non_finite_vectors(model_dir, name, fill):
    v = np.array(np.load(model_dir / name))
    v[9, 4] = fill
    _resave(model_dir / name, v)
    with pytest.raises(ModelError, match=rf"{name.replace('.', '[.]')}: row 9, column 4: {fill} \(every value must be finite\)"):
        load_model(model_dir)


def test_all_nan_and_zero_dimension_vectors(model_dir, tmp_path):
    _resave(model_dir / "vectors.npy", np.full((V, D), np.nan, np.float32))
    with pytest.raises(ModelError, match=r"vectors\.npy: row 0, column 0: nan"):
        load_model(model_dir)
    with pytest.raises(ModelError, match=r"vectors of dimension 0"):
        save_model(tmp_path / "d0", np.zeros((V, 0), np.float32), np.zeros((V, 0), np.float32),
                   np.arange(V), np.ones(V, np.int64), {})
    for name in ("vectors.npy", "output.npy"):
        _resave(model_dir / name, np.zeros((V, 0), np.float32))
    _meta_edit(model_dir / "meta.json", vector_size=0)
    with pytest.raises(ModelError, match=r'"vector_size": expected a positive integer, got an integer \(0\)'):
        load_model(model_dir)
    _meta_edit(model_dir / "meta.json", vector_size=D)
    with pytest.raises(ModelError, match=r"vectors of dimension 0"):
        load_model(model_dir)


def test_duplicate_and_negative_aids(model_dir):
    aids = np.array(np.load(model_dir / "aids.npy"))
    aids[30] = aids[4]
    _resave(model_dir / "aids.npy", aids)
    with pytest.raises(ModelError, match=rf"aids\.npy: row 30: duplicate aid {aids[4]} \(first at row 4\)"):
        load_model(model_dir)
    aids[30] = -7
    _resave(model_dir / "aids.npy", aids)
    with pytest.raises(ModelError, match=r"aids\.npy: row 30: aid -7 is negative"):
        load_model(model_dir)
    big = np.arange(V, dtype=np.int64) * 10**15  # above the table bound: the sort path
    big[40] = big[2]
    _resave(model_dir / "aids.npy", big)
    with pytest.raises(ModelError, match=r"row 40: duplicate aid 2000000000000000 \(first at row 2\)"):
        load_model(model_dir)


def test_writers_refuse_what_loaders_refuse(tmp_path):
    vec = np.ones((3, 2), np.float32)
    with pytest.raises(ModelError, match="duplicate aid 5"):
        save_model(tmp_path / "m", vec, vec, np.array([5, 6, 5]), np.ones(3, np.int64), {})
    with pytest.raises(ModelError, match="row 1, column 0: nan"):
        save_model(tmp_path / "m", np.array([[1, 1], [np.nan, 0], [0, 1]], np.float32), vec,
                   np.array([5, 6, 7]), np.ones(3, np.int64), {})
    assert not (tmp_path / "m").exists()
    m = save_model(tmp_path / "ok", vec, vec, np.array([5, 6, 7]), np.ones(3, np.int64), {})
    with pytest.raises(model_io.NeighborIndexError, match="neighbour row 3 is outside"):
        save_index(m, np.array([[1], [2], [3]]), np.zeros((3, 1)), {})
    assert not (m / "index.json").exists()


def test_error_classes_form_one_hierarchy():
    from data_prep import npyio
    from w2v.interchange import Word2VecFormatError
    assert issubclass(model_io.NeighborIndexError, ModelError)
    for cls in (ModelError, DatasetError, Word2VecFormatError):
        assert issubclass(cls, npyio.FormatError) and issubclass(cls, ValueError)


# ------------------------------------------------------------------------------ replacing outputs
def test_failed_index_write_keeps_the_old_table(model_dir, monkeypatch):
    before = {n: (model_dir / n).read_bytes() for n in model_io.INDEX_FILES}
    real_save = np.save
    calls = []

    def full_disk(fh, arr, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second array: the first is complete, the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(fh, arr, **kw)

    monkeypatch.setattr(model_io.np, "save", full_disk)
    nb = np.zeros((V, 2), np.int32)
    with pytest.raises(atomic.OutputWriteError, match=r"cannot write: no space left on device") as e:
        save_index(model_dir, nb, np.zeros((V, 2), np.float32), {})
    _one_line(e.value, model_dir / "neighbor_scores.npy")
    monkeypatch.undo()
    assert {n: (model_dir / n).read_bytes() for n in model_io.INDEX_FILES} == before
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []
    assert load_model(model_dir).neighbors.shape == (V, K)


def test_disk_full_and_short_writes_name_the_output(tmp_path):
    for exc, why in ((OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
                     (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
                     (OSError("265200 requested and 262112 written"), "short write, the device is probably full")):
        with pytest.raises(atomic.OutputWriteError) as e:
            with atomic.atomic_file(tmp_path / "out.bin"):
                raise exc
        assert str(e.value).startswith(f"{tmp_path / 'out.bin'}: cannot write: {why}")
        with pytest.raises(atomic.OutputWriteError, match=why):
            with atomic.atomic_directory(tmp_path / "outdir"):
                raise exc
    with pytest.raises(OSError, match="unrelated") as e:  # other errors pass through unchanged
        with atomic.atomic_file(tmp_path / "out.bin"):
            raise OSError(errno.EIO, "unrelated")
    assert not isinstance(e.value, atomic.OutputWriteError)
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit_is_reported_for_a_real_write(tmp_path):
    """A real short write: a child process limited to 64 KiB per file (RLIMIT_FSIZE)."""
    code = ("import resource, signal, numpy as np\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
            "from data_prep.atomic import atomic_file\n"
            f"with atomic_file({str(tmp_path / 'big.npy')!r}) as fh:\n"
            "    np.save(fh, np.zeros(100_000))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).parent.parent)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert f"{tmp_path / 'big.npy'}: cannot write: " in last
    assert "file too large" in last or "short write" in last
    assert list(tmp_path.iterdir()) == []


def test_directory_swap_replaces_whole_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    for content in ("old", "new"):
        with atomic.atomic_directory(out, overwrite=True) as tmp:
            (tmp / "f").write_text(content)
    assert (out / "f").read_text() == "new" and os.listdir(tmp_path) == ["out"]
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic.atomic_directory(out):
            pass


def test_umask_is_honoured(tmp_path):
    old = os.umask(0o027)
    try:
        m = save_model(tmp_path / "m", np.ones((2, 2), np.float32), np.ones((2, 2), np.float32),
                       np.array([1, 2]), np.ones(2, np.int64), {})
        save_index(m, np.array([[1], [0]]), np.ones((2, 1)), {})
        with atomic.atomic_file(tmp_path / "f.csv", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert (m.stat().st_mode & 0o777) == 0o750
    for name in ("vectors.npy", "meta.json", "neighbors.npy", "index.json"):
        assert ((m / name).stat().st_mode & 0o777) == 0o640, name
    assert ((tmp_path / "f.csv").stat().st_mode & 0o777) == 0o640


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    stale_dir = tmp_path / f".out.tmp-{dead}-0badc0de"
    stale_dir.mkdir()
    (stale_dir / "aid.npy").write_bytes(b"x" * 1000)
    live = tmp_path / f".out.tmp-{os.getppid()}-0badc0de"   # a running process: not ours to remove
    live.mkdir()
    foreign = tmp_path / ".out.tmp-abc"                       # not our naming: never touched
    foreign.mkdir()
    other = tmp_path / f".other.tmp-{dead}-0badc0de"          # another output's temporary
    other.mkdir()
    locked = tmp_path / f".out.tmp-{dead}-1badc0de"  # pid unknown here, but its writer holds the lock
    locked.mkdir()
    import fcntl
    fd = os.open(locked, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with atomic.atomic_directory(out) as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.close(fd)
    assert not stale_dir.exists()
    assert live.exists() and foreign.exists() and other.exists() and locked.exists()
    atomic.clean_stale_siblings(out)  # the lock is gone: now it is stale
    assert not locked.exists()


def test_killed_between_the_two_renames_restores_the_old_output(tmp_path):
    out = tmp_path / "out"
    old = tmp_path / f".out.old-{_dead_pid()}-12345678"
    old.mkdir()
    (old / "f").write_text("previous")
    assert atomic.clean_stale_siblings(out) == []
    assert (out / "f").read_text() == "previous" and not old.exists()


def test_sigkill_mid_write_then_next_run_cleans(tmp_path):
    code = ("import sys, time\n"
            "from data_prep.atomic import atomic_directory\n"
            f"with atomic_directory({str(tmp_path / 'out')!r}) as tmp:\n"
            "    (tmp / 'part.npy').write_bytes(b'x' * 100000)\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).parent.parent)
    try:
        assert p.stdout.readline().strip() == "writing"
        left = [n for n in os.listdir(tmp_path) if n.startswith(".out.tmp-")]
        assert len(left) == 1
    finally:
        p.kill()
        p.wait(timeout=10)
    assert (tmp_path / left[0]).exists()  # SIGKILL runs no cleanup
    with atomic.atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert os.listdir(tmp_path) == ["out"]


_SESSIONS_JSONL = (b'{"session":7,"events":[{"aid":5,"ts":1,"type":"clicks"},{"aid":6,"ts":2,"type":"orders"}]}\n'
                   b'{"session":9,"events":[{"aid":5,"ts":3,"type":"carts"}]}\n')


def test_sigkill_while_reading_sessions_then_next_read_cleans(tmp_path):
    """otto-eval's session reader keeps its columnar copy in atomic.py's scratch space: a killed
    read leaves a stale temporary beside the input that the next read of that file removes."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(_SESSIONS_JSONL)
    code = ("import sys, time\n"
            "from data_prep import reader\n"
            "from eval.sessions_io import read_sessions\n"
            "convert = reader.convert\n"
            "def stall(*a, **k):\n"
            "    convert(*a, **k)\n"
            "    print('converted', flush=True)\n"
            "    time.sleep(60)\n"
            "reader.convert = stall\n"
            f"read_sessions({str(src)!r})\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).parent.parent)
    try:
        assert p.stdout.readline().strip() == "converted"
    finally:
        p.kill()
        p.wait(timeout=10)
    left = [n for n in os.listdir(tmp_path) if n != "in.jsonl"]
    assert len(left) == 1 and left[0].startswith(f".in.jsonl.tmp-{p.pid}-")  # SIGKILL runs no cleanup
    assert (tmp_path / left[0] / "ds" / "aid.npy").exists()
    from eval.sessions_io import read_sessions
    ds = read_sessions(src)
    assert ds.session_ids.tolist() == [7, 9] and np.asarray(ds.aid).tolist() == [5, 6, 5]
    assert os.listdir(tmp_path) == ["in.jsonl"]


def test_scratch_directory_falls_back_to_the_system_temporary_directory(tmp_path, monkeypatch):
    make_dir = atomic._make_dir
    tried = []

    def refuse_beside(target):
        tried.append(target)
        if target.parent == tmp_path:
            raise PermissionError(13, "read-only", str(target.parent))
        return make_dir(target)

    monkeypatch.setattr(atomic, "_make_dir", refuse_beside)
    with atomic.scratch_directory(tmp_path / "in.jsonl") as tmp:
        assert tmp.parent != tmp_path and tmp.name.startswith(".in.jsonl.tmp-") and not any(tmp.iterdir())
        (tmp / "x").write_text("x")
    assert not tmp.exists() and len(tried) == 2 and os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ inputs are sacred
def test_check_output_refuses_overlap(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "in.jsonl").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    os.link(tmp_path / "d" / "in.jsonl", tmp_path / "hard.jsonl")
    cases = [
        (tmp_path / "d" / "in.jsonl", tmp_path / "d" / "in.jsonl", "is the input"),
        (tmp_path / "d", tmp_path / "d" / "in.jsonl", "contains the input"),
        (tmp_path / "d" / "sub", tmp_path / "d", "lies inside the input"),
        (tmp_path / "link", tmp_path / "d" / "in.jsonl", "contains the input"),       # via a symlink
        (tmp_path / "d" / ".." / "d", tmp_path / "d", "is the input"),
        (tmp_path / "hard.jsonl", tmp_path / "d" / "in.jsonl", "is the input"),        # a hard link
    ]
    for out, inp, what in cases:
        with pytest.raises(atomic.OutputPathError, match=what) as e:
            atomic.check_output(out, [None, inp])
        _one_line(e.value, out)
    atomic.check_output(tmp_path / "elsewhere", [tmp_path / "d", None])
    atomic.check_output(tmp_path / "d2", [tmp_path / "d"])  # a common prefix is not containment
    with pytest.raises(atomic.OutputPathError):
        with atomic.atomic_directory(tmp_path / "d", overwrite=True, inputs=[tmp_path / "d" / "in.jsonl"]):
            pass
    assert (tmp_path / "d" / "in.jsonl").read_text() == "x"
