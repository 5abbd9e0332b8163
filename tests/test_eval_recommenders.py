"""Recommenders and co-visitation on tiny cases with known answers."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from data_prep.dataset import Dataset
from eval import recommenders as R
from eval.covisit import build_covisit
from eval.nextevent import eval_pairs, pair_split, prefix_sessions
from w2v.model_io import load_model, save_index, save_model

H = 3600 * 1000


def ds_from(sessions):
    lens = [len(ev) for ev in sessions]
    off = np.zeros(len(sessions) + 1, np.int64)
    off[1:] = np.cumsum(lens)
    ev = [e for evs in sessions for e in evs]
    return Dataset(np.arange(len(sessions), dtype=np.int64), off,
                   np.array([e[0] for e in ev], np.int32).reshape(-1), np.array([e[1] for e in ev], np.int64).reshape(-1),
                   np.array([e[2] for e in ev], np.uint8).reshape(-1))


def reference_covisit(sessions, types, mode, window, max_events, top_n, tw=(1.0, 6.0, 3.0)):
    all_ts = [e[1] for s in sessions for e in s]
    ts_min, span = min(all_ts), max(max(all_ts) - min(all_ts), 1)
    total = {}
    for s in sessions:
        ev = [e for e in s if e[2] in types][-max_events:]
        best = {}
        for (x, tx, _), (y, ty, typ_y) in itertools.product(ev, ev):
            if x == y or abs(tx - ty) >= window:
                continue
            w = 1 + 3 * (tx - ts_min) / span if mode == "time" else (tw[typ_y] if mode == "type" else 1.0)
            best[(x, y)] = max(best.get((x, y), 0), w)
        for key, w in best.items():
            total[key] = total.get(key, 0) + w
    rows = {}
    for (x, y), w in total.items():
        rows.setdefault(x, []).append((-w, y))
    return {x: [(y, -nw) for nw, y in sorted(v)[:top_n]] for x, v in rows.items()}


def test_covisit_counts_by_hand():
    sessions = [[(1, 0, 0), (2, 1, 0), (1, 2, 0)],       # (1,2) once per session despite the repeat
                [(1, 10, 0), (3, 11, 1)],
                [(1, 20, 0), (2, 21, 2), (4, 20 + 30 * H, 0)]]  # 4 is outside the 24 h window
    g = build_covisit(ds_from(sessions), mode="unit")
    nb, w = g.neighbors(1)
    assert nb.tolist() == [2, 3] and w.tolist() == [2.0, 1.0]
    assert g.neighbors(4)[0].tolist() == []
    assert g.neighbors(99)[0].tolist() == []
    gt = build_covisit(ds_from(sessions), mode="type")
    assert dict(zip(*map(list, gt.neighbors(1)))) == {2: 4.0, 3: 6.0}
    assert gt.neighbors(1)[0].tolist() == [3, 2]  # weight descending


def test_covisit_limits_are_counted():
    sessions = [[(a, i, 0) for i, a in enumerate([5, 1, 2, 3])], [(1, 0, 0), (2, 1, 0)]]
    g = build_covisit(ds_from(sessions), mode="unit", max_events=3, top_n=1)
    assert g.stats["events_beyond_max_events"] == 1      # aid 5 of session 0
    assert g.neighbors(1)[0].tolist() == [2]             # 2 (weight 2) beats 3 (weight 1)
    assert g.neighbors(5)[0].tolist() == []
    assert g.neighbors(3)[0].tolist() == [1]             # tie 1 vs 2 -> lower aid
    assert g.stats["neighbors_beyond_top_n"] == 3        # row 1 drops 3, row 2 drops 3, row 3 drops 2


sess_st = st.lists(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5), st.integers(0, 2)), min_size=1, max_size=7),
                   min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(sess_st, st.sampled_from(["time", "type", "unit"]), st.integers(1, 4), st.integers(1, 6), st.integers(1, 3))
def test_covisit_matches_reference_and_chunking_does_not_matter(raw, mode, window, max_events, n_parts):
    sessions = [[(a, dt * H, t) for a, dt, t in s] for s in raw]
    ref = reference_covisit(sessions, (0, 1, 2), mode, window * H, max_events, 3)
    g = build_covisit(ds_from(sessions), mode=mode, window_ms=window * H, max_events=max_events, top_n=3,
                      n_parts=n_parts, chunk_pairs=5)
    for x in range(8):
        nb, w = g.neighbors(x)
        exp = ref.get(x, [])
        assert nb.tolist() == [y for y, _ in exp]
        np.testing.assert_allclose(w, [v for _, v in exp], rtol=1e-6)


def test_history_ranks_by_recency_and_type_then_fills_popular():
    train = ds_from([[(7, 0, 0), (7, 1, 0), (8, 2, 0), (9, 3, 1)]])
    test = ds_from([[(1, 0, 0), (2, 1, 1), (1, 2, 0)], []])
    rec = R.HistoryRec().fit(train)
    p = rec.predict(test, k=4)
    # weights: aid 1 = (2**0.1 - 1) + 1 = 1.072; aid 2 = 6 * (2**0.55 - 1) = 2.78
    assert p[0][0].tolist() == [2, 1, 7, 8]
    assert p[0][1].tolist() == [7, 8, 9, -1]          # empty session: popular clicks only
    assert p[1][1].tolist()[:1] == [9]                 # carts fallback starts with the carted aid


def test_threads_do_not_change_the_result():
    rng = np.random.default_rng(0)
    sessions = [[(int(a), i, int(t)) for i, (a, t) in enumerate(zip(rng.integers(0, 30, n), rng.integers(0, 3, n)))]
                for n in rng.integers(0, 12, 40)]
    ds = ds_from(sessions)
    g = R.Graph.of(build_covisit(ds, mode="unit"), 1.0)
    fill = np.arange(30, 60)
    one, lim1 = R.score_sessions(ds, 7, fill=fill, graphs=(g,), n_threads=1)
    empty = R.Graph(np.zeros(4, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 1.0)
    three, lim3 = R.score_sessions(ds, 7, fill=fill, graphs=(empty, g), n_threads=3)   # g second in the stack
    assert lim1 == lim3 == {"events_beyond_max_hist": 0}
    np.testing.assert_array_equal(one, three)
    assert np.all(one >= 0)  # enough fallback aids for every slot
    assert all(len(set(r)) == 7 for r in one.tolist())


def test_random_and_popular():
    train = ds_from([[(a, i, 0) for i, a in enumerate([3, 3, 3, 4, 4, 5])] + [(6, 9, 2)]])
    test = ds_from([[(1, 0, 0)]] * 50)
    r = R.RandomRec(seed=1).fit(train).predict(test, k=3)[0]
    assert all(len(set(row)) == 3 and set(row) <= {3, 4, 5, 6} for row in r.tolist())
    np.testing.assert_array_equal(r, R.RandomRec(seed=1).fit(train).predict(test, k=3)[0])
    assert len({tuple(x) for x in r.tolist()}) > 1
    pop = R.PopularRec().fit(train).predict(test, k=5)
    assert pop[0][0].tolist() == [3, 4, 5, 6, -1]
    assert pop[2][0].tolist()[:1] == [6]


def test_popular_lists_is_computed_once_per_train_object():
    evs = [[(a, i, t) for i, (a, t) in enumerate([(3, 0), (3, 1), (4, 0), (5, 2), (5, 2)])]]
    train, twin = ds_from(evs), ds_from(evs)
    first = R.popular_lists(train)
    assert first.tolist() == [[3, 4, 5], [3, 4, 5], [5, 3, 4]]
    assert not first.flags.writeable
    assert R.popular_lists(train) is first                     # the same object: kept
    assert [r.fit(train).popular is first for r in (R.PopularRec(), R.HistoryRec())] == [True, True]
    again = R.popular_lists(twin)                              # equal content, another object
    assert again is not first and np.array_equal(again, first)
    assert R.popular_lists(twin, top=2).tolist() == [[3, 4], [3, 4], [5, 3]]
    other = ds_from([[(9, 0, 0)]])
    assert R.popular_lists(other).tolist() == [[9], [9], [9]]
    assert R.popular_lists(train) is not first and np.array_equal(R.popular_lists(train), first)


def test_distinct_ids_counts_dense_ids_and_sorts_sparse_ones():
    from w2v.vocab import distinct_ids
    rng = np.random.default_rng(3)
    for ids in (rng.integers(0, 1000, 5000).astype(np.int32),            # dense: counting pass
                rng.integers(0, 2**40, 500),                              # sparse: sort
                np.array([-3, 5, -3], np.int64), np.zeros(0, np.int32)):
        got = distinct_ids(ids)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.unique(ids))


def _model(tmp_path, vectors, aids, with_index):
    vectors = np.asarray(vectors, np.float32)
    path = save_model(tmp_path / ("mi" if with_index else "m"), vectors, vectors, np.asarray(aids), np.ones(len(aids)), {})
    if with_index:
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        order = np.lexsort((np.tile(np.arange(len(aids)), (len(aids), 1)), -sim), axis=1)[:, :3]
        save_index(path, order, np.take_along_axis(sim, order, 1), {})
    return load_model(path)


VECS = [[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0]]
AIDS = [10, 11, 12, 13, 14]


@pytest.mark.parametrize("with_index", [True, False])
def test_w2v_item_uses_the_last_aid(tmp_path, with_index):
    model = _model(tmp_path, VECS, AIDS, with_index)
    train = ds_from([[(a, i, 0) for i, a in enumerate([14, 14, 12])]])
    test = ds_from([[(12, 0, 0), (10, 1, 0)], [(99, 0, 0)]])   # 99 is not in the vocabulary
    rec = R.W2VItemRec(n_neighbors=3).fit(train, model)
    p = rec.predict(test, k=3)
    # neighbours of 10 by cosine: 11 (0.99), 13 (0.11), 12 (0.0); a neighbour with cosine <= 0 adds
    # nothing, so the third slot comes from the popular fallback (14)
    assert p[0][0].tolist() == [11, 13, 14]
    assert p[0][1].tolist() == [14, 12, -1]   # popular fallback
    assert rec.info()["aids_in_vocab"] == 1


def test_w2v_session_vector(tmp_path):
    model = _model(tmp_path, VECS, AIDS, False)
    train = ds_from([[(14, 0, 0)]])
    test = ds_from([[(10, 0, 0)], [(10, 0, 0), (12, 1, 0), (12, 2, 1)], [(99, 0, 0)]])
    p = R.W2VSessionRec().fit(train, model).predict(test, k=2)
    assert p[0][0].tolist() == [10, 11]
    assert p[0][1].tolist() == [13, 12] or p[0][1].tolist() == [12, 13]  # dominated by the carted 12
    assert set(p[0][1].tolist()) == {12, 13}
    assert p[0][2].tolist() == [14, -1]


def test_blend_reduces_to_covisit_without_w2v_and_changes_with_it(tmp_path):
    model = _model(tmp_path, VECS, AIDS, True)
    train = ds_from([[(10, 0, 0), (12, 1, 0)], [(10, 5, 0), (12, 6, 1), (14, 7, 2)]])
    test = ds_from([[(10, 0, 0)], [(11, 0, 0)]])
    cov = R.CovisitRec().fit(train).predict(test, k=4)
    b0 = R.BlendRec(w2v_coef=0.0).fit(train, model).predict(test, k=4)
    for t in range(3):
        np.testing.assert_array_equal(cov[t], b0[t])
    b1 = R.BlendRec(w2v_coef=5.0).fit(train, model).predict(test, k=4)
    assert cov[0][0].tolist()[:2] == [10, 12]
    assert b1[0][0].tolist()[:2] == [10, 11]  # the strong w2v neighbour of 10 overtakes the co-visited 12


def test_w2v_session_and_blend_share_one_answer(tmp_path):
    # one SessionAnswers for a run: the blend reuses the w2v-session answer of the same sessions
    # (same object, same length as the blend's 20 neighbours), a different sessions object is answered anew, and nothing changes
    model = _model(tmp_path, VECS, AIDS, True)
    train = ds_from([[(10, 0, 0), (12, 1, 0)], [(10, 5, 0), (12, 6, 1), (14, 7, 2)]])
    test = ds_from([[(10, 0, 0)], [(11, 0, 0), (13, 1, 1)], [(10, 0, 0), (10, 1, 2)]])
    answers = R.SessionAnswers("exact")
    ws = R.make("w2v-session", answers=answers).fit(train, model)
    bl = R.make("blend", answers=answers, w2v_coef=5.0).fit(train, model)
    p_ws, p_bl = ws.predict(test, k=20), bl.predict(test, k=20)
    assert answers.hits == 1
    assert ws.info()["shared_answers"] == 1          # sessions 0 and 2 are both of aid 10 alone
    alone_ws = R.W2VSessionRec().fit(train, model).predict(test, k=20)
    alone_bl = R.BlendRec(w2v_coef=5.0).fit(train, model).predict(test, k=20)
    for t in range(3):
        np.testing.assert_array_equal(p_ws[t], alone_ws[t])
        np.testing.assert_array_equal(p_bl[t], alone_bl[t])
    np.testing.assert_array_equal(p_ws[0][0], p_ws[0][2])
    ws.predict(test.take(np.arange(3)), k=20)          # equal content, another object: recomputed
    assert answers.hits == 1
    before = answers.recommend(test, 20, ws.rule)
    assert answers.hits == 2
    (tmp_path / "b").mkdir()
    answers.bind(_model(tmp_path / "b", VECS[::-1], AIDS, False))   # another model: nothing reused
    after = answers.recommend(test, 20, ws.rule)
    assert answers.hits == 2 and not np.array_equal(before.aids, after.aids)


def test_make_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown name"):
        R.make("nope")
    with pytest.raises(ValueError, match="needs a Word2Vec model"):
        R.W2VItemRec().fit(ds_from([[(1, 0, 0)]]))


def test_pair_split_and_eval():
    sessions = [[(a, i, 2) for i, a in enumerate([s, s + 1, s + 2, s + 3][:2 + s % 3])] for s in range(30)]
    sessions.append([(1, 0, 0), (2, 1, 0), (3, 2, 0)])  # clicks only: not eligible
    ds = ds_from(sessions)
    ps = pair_split(ds, "orders", 3, test_size=5, valid_size=4, seed=0)
    assert ps.stats["eligible_sessions"] == 20
    assert ps.test_query.size == 5 and ps.valid_query.size == 4
    assert np.all(ps.test_target == ps.test_query + 1)
    assert ps.train.n_events == sum(len(s) - 1 for s in sessions[:30] if len(s) >= 3)
    ps2 = pair_split(ds, "orders", 3, test_size=5, valid_size=4, seed=0)
    np.testing.assert_array_equal(ps.test_query, ps2.test_query)
    with pytest.raises(ValueError, match="test_size"):
        pair_split(ds, "orders", 3, test_size=15, valid_size=10)
    res = eval_pairs(R.PopularRec().fit(ps.train), ps.test_query, ps.test_target, ps.test_type, (1, 20))
    assert res[20]["n"] == 5 and 0 <= res[1]["recall"] <= res[20]["recall"] <= 1


def test_prefix_sessions_targets_are_next_clicks():
    full = ds_from([[(1, 0, 0), (2, 1, 1), (3, 2, 0), (4, 3, 2)], [(5, 0, 2), (6, 1, 2)]])
    pre, targets, stats = prefix_sessions(full, max_hist=2)
    assert targets.tolist() == [3, 3]
    assert pre.lengths().tolist() == [1, 2]
    assert pre.aid.tolist() == [1, 1, 2]
    assert stats["positions"] == 2
