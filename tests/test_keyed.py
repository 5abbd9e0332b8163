"""w2v.keyed.KeyedVectors: aid <-> row mapping, search, table use; gensim as the oracle."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w2v import knn
from w2v.keyed import KeyedVectors
from w2v.model_io import load_model, save_index, save_model


def make(V=50, D=8, seed=0, table_k=None):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((V, D)).astype(np.float32)
    aids = rng.choice(10_000, V, replace=False).astype(np.int64) + 1000  # never equal to a row
    nb = sc = None
    if table_k:
        nb, sc = knn.build_neighbor_table(v, table_k)
    return KeyedVectors(v, aids, nb, sc), v, aids


def test_row_mapping_and_unknown_aids():
    kv, v, aids = make()
    assert len(kv) == 50
    for r in (0, 17, 49):
        assert kv.row(aids[r]) == r and kv.row(np.int32(aids[r])) == r
        assert aids[r] in kv
    assert kv.rows(aids[[3, 1, 3]]).tolist() == [3, 1, 3]
    with pytest.raises(KeyError, match="aid 5 is not in the vocabulary"):
        kv.row(5)  # 5 is a valid row index but not an aid
    assert 5 not in kv and "x" not in kv and 1.5 not in kv and True not in kv
    with pytest.raises(KeyError, match="aid 7 "):
        kv.rows(np.array([aids[0], 7, 8]))
    rows, known = kv.lookup([aids[2], 3, aids[4]])
    assert rows.tolist() == [2, -1, 4] and known.tolist() == [True, False, True]
    with pytest.raises(KeyError):
        kv.most_similar(3)
    with pytest.raises(KeyError):
        kv.neighbors(3)


def test_rows_with_negative_and_extreme_aids():
    aids = np.array([-5, 2**40, 0, 7], np.int64)
    kv = KeyedVectors(np.eye(4, dtype=np.float32), aids)
    assert kv.rows(aids).tolist() == [0, 1, 2, 3]
    assert 2**41 not in kv and -6 not in kv and 8 not in kv
    empty = KeyedVectors(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    assert len(empty) == 0 and 0 not in empty
    assert empty.lookup([1, 2])[0].tolist() == [-1, -1]


def test_constructor_errors():
    with pytest.raises(ValueError, match="more than once"):
        KeyedVectors(np.ones((3, 2), np.float32), [1, 2, 1])
    with pytest.raises(ValueError, match="aids"):
        KeyedVectors(np.ones((3, 2), np.float32), [1, 2])
    with pytest.raises(ValueError, match="neighbors"):
        KeyedVectors(np.ones((3, 2), np.float32), [1, 2, 3], np.zeros((2, 1), np.int32), np.zeros((2, 1), np.float32))


def test_most_similar_excludes_self_and_exclude_list():
    kv, v, aids = make()
    res = kv.most_similar(aids[0], topn=5)
    assert len(res) == 5 and aids[0] not in [a for a, _ in res]
    assert all(isinstance(a, int) and isinstance(s, float) for a, s in res)
    ex = [res[0][0], res[2][0], 123456789]  # unknown aids in exclude are ignored
    res2 = kv.most_similar(aids[0], topn=5, exclude=ex)
    assert [a for a, _ in res2] == [a for a, _ in kv.most_similar(aids[0], topn=7) if a not in ex][:5]
    assert len(kv.most_similar(aids[0], topn=100)) == 49


def test_table_and_exact_kernel_agree():
    kv_t, v, aids = make(V=80, table_k=6, seed=4)
    kv_e = KeyedVectors(v, aids)
    for r in range(0, 80, 7):
        a = aids[r]
        ta, ts = kv_t.neighbors(a, 6)
        ea, es = kv_e.neighbors(a, 6)
        assert ta.dtype == np.int64 and ts.dtype == np.float32
        assert ta.tolist() == ea.tolist()
        np.testing.assert_allclose(ts, es, atol=2e-6, rtol=0)
        # k above the table width falls back to the exact kernel
        assert kv_t.neighbors(a, 9)[0].tolist() == kv_e.neighbors(a, 9)[0].tolist()
        # exclusions that eat into the table fall back too
        many = [x for x, _ in kv_e.most_similar(a, topn=5)]
        assert [x for x, _ in kv_t.most_similar(a, topn=4, exclude=many)] == \
               [x for x, _ in kv_e.most_similar(a, topn=4, exclude=many)]


def test_padded_table_row_is_complete():
    v = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    nb, sc = knn.build_neighbor_table(v, 5)
    kv = KeyedVectors(v, [10, 20, 30], nb, sc)
    a, s = kv.neighbors(10, 5)
    assert a.tolist() == [30, 20] and np.isfinite(s).all()
    assert [x for x, _ in kv.most_similar(10, topn=5)] == [30, 20]
    assert kv.most_similar(10, topn=5, exclude=[30]) == [(20, 0.0)]


def test_similar_by_vector_and_session_vector():
    kv, v, aids = make()
    res = kv.similar_by_vector(v[3], topn=3)
    assert res[0][0] == aids[3] and abs(res[0][1] - 1.0) < 1e-6
    assert kv.similar_by_vector(v[3], topn=3, exclude=[aids[3]])[0][0] != aids[3]
    sv = kv.session_vector([aids[1], 424242, aids[2]], [2.0, 9.0, 1.0])
    unit = knn.normalize_rows(v)
    np.testing.assert_allclose(sv, 2 * unit[1] + unit[2], rtol=1e-5, atol=1e-6)


def test_from_model_uses_memmaps_and_index(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.standard_normal((30, 6)).astype(np.float32)
    aids = np.arange(100, 130, dtype=np.int64)[::-1].copy()
    save_model(tmp_path / "m", v, v, aids, np.ones(30, np.int64), {})
    model = load_model(tmp_path / "m")
    kv = KeyedVectors.from_model(model)
    assert kv.table_k == 0 and np.shares_memory(kv.vectors, model.vectors)  # mapped, not copied
    nb, sc = knn.build_neighbor_table(v, 4)
    save_index(tmp_path / "m", nb, sc, {})
    kv = KeyedVectors.from_model(load_model(tmp_path / "m"))
    assert kv.table_k == 4
    assert kv.neighbors(129, 4)[0].tolist() == aids[nb[0]].tolist()
    # the table read row by row from the files answers the same, table and kernel paths alike
    pr = KeyedVectors.from_model(load_model(tmp_path / "m"), table_rows="pread")
    assert pr.table_k == 4 and type(pr.neighbor_rows).__name__ == "RowReader"
    for aid in aids.tolist():
        for k in (0, 2, 4, 5):
            for a, b in zip(pr.neighbors(aid, k), kv.neighbors(aid, k)):
                assert a.dtype == b.dtype and np.array_equal(a, b)
        assert pr.most_similar(aid, 3, exclude=[aid - 1]) == kv.most_similar(aid, 3, exclude=[aid - 1])

    # scores=False: the same aids, no scores, and the table's score row is never read
    class Refuse:
        shape = pr.neighbor_scores.shape

        def __getitem__(self, key):
            raise AssertionError("score row read although scores=False")

    pr.neighbor_scores = Refuse()
    for aid in aids.tolist():
        for k in (0, 2, 4, 5):  # 5 > table_k: the exact kernel, whose scores are dropped
            got, none = pr.neighbors(aid, k, scores=False)
            assert none is None and np.array_equal(got, kv.neighbors(aid, k)[0])
    with pytest.raises(AssertionError, match="score row read"):
        pr.neighbors(aids[0], 2)
    with pytest.raises(ValueError, match="table_rows: expected 'map' or 'pread'"):
        KeyedVectors.from_model(model, table_rows="mmap")
    assert KeyedVectors.from_model(model, table_rows="pread").table_k == 0   # no table: nothing to read


@pytest.mark.slow
@given(st.integers(2, 60), st.integers(2, 12), st.integers(1, 70), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_most_similar_matches_gensim(V, D, topn, seed):
    from gensim.models import KeyedVectors as GensimKV

    rng = np.random.default_rng(seed)
    v = rng.standard_normal((V, D)).astype(np.float32)  # gensim cannot take zero rows
    aids = rng.choice(1000, V, replace=False).astype(np.int64)
    g = GensimKV(D)
    g.add_vectors([str(a) for a in aids], v)  # str keys: gensim would treat ints as indices
    ours = KeyedVectors(v, aids)
    q = int(rng.integers(0, V))
    theirs = g.most_similar(str(aids[q]), topn=topn)
    mine = ours.most_similar(int(aids[q]), topn=topn)
    assert len(mine) == len(theirs) == min(topn, V - 1)
    ms = np.array([s for _, s in mine])
    np.testing.assert_allclose(ms, [s for _, s in theirs], atol=1e-5, rtol=0)
    # ids agree except within ties (scores equal to 1e-5)
    gs = {int(a): s for a, s in theirs}
    for (a, s), (b, t) in zip(mine, theirs):
        if a != int(b):
            assert abs(s - t) <= 1e-5
    cut = ms[-1]
    clear = {a for a, s in mine if s > cut + 1e-5}
    assert clear <= set(gs)
