"""w2v.session: the one session rule, its batched answer equal to the exact scan, and the service
and ``otto-eval predict`` giving the same list for the same model and session."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.dataset import TYPE_NAMES, write_dataset
from eval.cli import main as eval_main
from serve.server import make_server
from w2v import knn
from w2v.keyed import KeyedVectors
from w2v.model_io import save_model
from w2v.session import SessionRule, event_weights, recommend
from test_serve_support import call, running


def _csr(lengths):
    off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


@settings(max_examples=60, deadline=None)
@given(types=st.lists(st.lists(st.integers(0, 2), min_size=0, max_size=40), min_size=1, max_size=5),
       recency=st.sampled_from(["decay", "log2"]), decay=st.floats(0.05, 1.0),
       max_events=st.one_of(st.none(), st.integers(1, 12)))
def test_event_weights_follow_the_rule(types, recency, decay, max_events):
    rule = SessionRule((1.0, 6.0, 3.0), recency, decay, max_events, False)
    off = _csr([len(t) for t in types])
    w = event_weights(off, np.array([x for t in types for x in t], np.uint8), rule)
    expect = []
    for t in types:
        n = len(t)
        m = n if max_events is None else min(n, max_events)
        for i, c in enumerate(t):
            back = n - 1 - i
            if back >= m:
                expect.append(0.0)
            elif recency == "decay":
                expect.append((1.0, 6.0, 3.0)[c] * decay ** back)
            else:
                p = m - 1 - back
                expect.append((1.0, 6.0, 3.0)[c] * ((2 ** (0.1 + 0.9 * p / (m - 1)) - 1) if m > 1 else 1.0))
    np.testing.assert_allclose(w, expect, rtol=1e-12, atol=0)
    assert w.dtype == np.float64


def test_rule_validation_names_the_field():
    for bad, field in [(dict(type_weights=(1, 2)), "type_weights"), (dict(recency="x"), "recency"),
                       (dict(decay=0.0), "decay"), (dict(max_events=0), "max_events")]:
        with pytest.raises(ValueError, match=field):
            SessionRule(**bad).validate()


def _matrix(V, D, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((V, D)).astype(np.float32)
    v[5] = 0.0                      # a zero row scores 0
    v[7] = v[3]                     # exact duplicates: ties broken by row
    v[11] = v[3] * 2.0
    aids = rng.choice(10 * V, V, replace=False).astype(np.int64)
    return v, aids


@pytest.mark.slow
@pytest.mark.parametrize("exclude", [False, True])
def test_batched_answer_equals_the_exact_scan_per_session(exclude):
    # realistic shape: 30k rows, 400 sessions of OTTO-like lengths, unknown aids and repeats mixed in
    V, D, S, k = 30_000, 32, 400, 20
    v, aids = _matrix(V, D, 1)
    kv = KeyedVectors(v, aids)
    rng = np.random.default_rng(2)
    lens = np.minimum(rng.geometric(0.15, S), 60)
    lens[0] = 1
    off = _csr(lens)
    ev_rows = rng.integers(0, V, int(off[-1]))
    ev_rows[off[1]:off[1] + 2] = 3          # duplicated direction inside a session
    ev_aid = aids[ev_rows]
    ev_aid[rng.random(ev_aid.shape[0]) < 0.05] = 10 * V + 1     # unknown aids
    ev_aid[off[2]:off[3]] = 10 * V + 2      # a session with no known aid
    ev_aid[off[4]:off[5]] = aids[5]         # a session of the zero row only: zero query
    types = rng.integers(0, 3, ev_aid.shape[0])
    rule = SessionRule(exclude_session=exclude)
    res = recommend(kv, off, ev_aid, types, k, rule, n_threads=2, q_block=128)
    assert not res.has[2] and (res.aids[2] == -1).all()
    assert res.exact_rescans >= 1            # the zero query cannot be certified: it was rescanned
    w = event_weights(off, types, rule)
    rows, known = kv.lookup(ev_aid)
    for s in range(S):
        e = np.arange(off[s], off[s + 1])
        e = e[known[e]]
        if not res.has[s]:
            assert e.size == 0 and (res.aids[s] == -1).all()
            continue
        q = np.zeros(D)
        for i in e:
            n = np.sqrt(np.sum(v[rows[i]].astype(np.float64) ** 2))
            if n > 0:
                q += w[i] * (1.0 / np.float32(n)) * v[rows[i]].astype(np.float64)
        ex = np.unique(rows[e]) if exclude else None
        ref_s, ref_r = knn.topk(v, kv.inv_norms, res_query(kv, off, ev_aid, types, rule, s), k, exclude=ex)
        np.testing.assert_array_equal(res.aids[s, :len(ref_r)], aids[ref_r])
        np.testing.assert_array_equal(res.scores[s, :len(ref_r)], ref_s)
        # and the scan's scores are the float64 cosine of the rule's query within float32 rounding
        nv, nq = np.linalg.norm(v[ref_r].astype(np.float64), axis=1), np.linalg.norm(q)
        if nq > 0:
            cos = (v[ref_r].astype(np.float64) @ q) / (np.where(nv > 0, nv, 1.0) * nq)
            np.testing.assert_allclose(ref_s, np.where(nv > 0, cos, 0.0), atol=2e-5)
        if exclude:
            assert not set(res.aids[s].tolist()) & set(aids[rows[e]].tolist())


def res_query(kv, off, ev_aid, types, rule, s):
    """The float32 query of session s alone (same function, one-session input)."""
    from w2v.session import session_queries
    a, b = off[s], off[s + 1]
    return session_queries(kv, np.array([0, b - a]), ev_aid[a:b], types[a:b], rule).queries[0]


def test_one_session_equals_the_same_session_in_a_batch():
    v, aids = _matrix(2_000, 8, 3)
    kv = KeyedVectors(v, aids)
    rng = np.random.default_rng(4)
    off = _csr([3, 1, 4, 2, 5, 1, 2])
    ev = aids[rng.integers(0, 2_000, int(off[-1]))]
    ty = rng.integers(0, 3, ev.shape[0])
    batch = recommend(kv, off, ev, ty, 7)
    for s in range(7):
        one = recommend(kv, np.array([0, off[s + 1] - off[s]]), ev[off[s]:off[s + 1]], ty[off[s]:off[s + 1]], 7)
        np.testing.assert_array_equal(one.aids[0], batch.aids[s])
        np.testing.assert_array_equal(one.scores[0], batch.scores[s])


@pytest.mark.parametrize("exclude", [False, True])
def test_sessions_of_one_aid_share_one_answer(exclude):
    # the query of a session whose contributing events all have one aid is that aid's unit vector,
    # whatever the weights and repeats; such sessions with the same exclusions share one answer
    from w2v.session import session_queries
    v, aids = _matrix(3_000, 16, 6)
    a, b, z = 20, 21, 5                               # z is the zero row
    v[b] = v[a] * 1.5 + 1e-3                          # b is a's nearest neighbour
    kv = KeyedVectors(v, aids)
    unknown = 10 * 3_000 + 7
    sessions = [[a], [a, a, a], [b, a], [unknown, a], [z, a], [a, b], [a], [b]]
    types = [[0], [1, 0, 2], [0, 0], [0, 2], [0, 1], [0, 0], [2], [0]]
    off = _csr([len(x) for x in sessions])
    ev = np.array([unknown if x == unknown else aids[x] for q in sessions for x in q], np.int64)
    ty = np.array([t for q in types for t in q])
    rule = SessionRule(max_events=1, exclude_session=exclude)
    sq = session_queries(kv, off, ev, ty, rule)
    unit = (np.float64(kv.inv_norms[a]) * v[a].astype(np.float64)).astype(np.float32)
    alike = [0, 1, 2, 3, 4, 6]                        # max_events = 1: only the last event counts
    assert sq.single.tolist() == [a, a, a, a, a, b, a, b]
    for s in alike:
        np.testing.assert_array_equal(sq.queries[s], unit)
    res = recommend(kv, off, ev, ty, 10, rule)
    # exclusions: sessions 2 and 4 also hold b and z (known rows), so with exclude they differ
    same = [0, 1, 3, 6] if exclude else alike
    assert res.shared == (len(same) - 1) + (0 if exclude else 1)
    for s in same:
        np.testing.assert_array_equal(res.aids[s], res.aids[0])
        np.testing.assert_array_equal(res.scores[s], res.scores[0])
    for s in range(len(sessions)):
        rows = np.unique(kv.lookup(ev[off[s]:off[s + 1]])[0])
        ex = rows[rows >= 0] if exclude else None
        ref_s, ref_r = knn.topk(v, kv.inv_norms, sq.queries[s], 10, exclude=ex)
        np.testing.assert_array_equal(res.aids[s], aids[ref_r])
        np.testing.assert_array_equal(res.scores[s], ref_s)
    if exclude:
        assert aids[b] in res.aids[0] and aids[b] not in res.aids[2]


def test_degenerate_inputs():
    v, aids = _matrix(12, 4, 5)
    kv = KeyedVectors(v, aids)
    r = recommend(kv, np.array([0, 2, 2]), np.array([aids[0], aids[1]]), np.array([0, 1]), 50)
    assert r.has.tolist() == [True, False]
    assert (r.aids[0] >= 0).sum() == 12 and (r.aids[1] == -1).all()    # k > V: every row once
    assert sorted(r.aids[0][:12].tolist()) == sorted(aids.tolist())
    with pytest.raises(ValueError, match="k"):
        recommend(kv, np.array([0, 1]), aids[:1], np.array([0]), 0)
    empty = KeyedVectors(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    r = recommend(empty, np.array([0, 1]), aids[:1], np.array([0]), 3)
    assert not r.has[0] and (r.aids == -1).all()


def test_service_and_otto_eval_predict_give_the_same_list(tmp_path):
    # one model, one train dataset, the same test sessions through POST /api/v1/recommendations
    # and through `otto-eval predict --recommender w2v-session`
    V, D = 3_000, 16
    v, aids = _matrix(V, D, 6)
    mdir = save_model(tmp_path / "m", v, v, aids, np.ones(V, np.int64), {"test": True})
    rng = np.random.default_rng(7)
    lens = rng.integers(1, 12, 40)
    off = _csr(lens)
    ev = aids[rng.integers(0, V, int(off[-1]))]
    ev[::9] = 10 * V + 3                                   # unknown aids are skipped by both
    ty = rng.integers(0, 3, ev.shape[0])
    ts = 1_660_000_000_000 + np.arange(ev.shape[0], dtype=np.int64)
    write_dataset(tmp_path / "train", np.arange(40, dtype=np.int64), off, ev.astype(np.int32), ts, ty.astype(np.uint8))
    with open(tmp_path / "test.jsonl", "w") as f:
        for s in range(40):
            e = range(off[s], off[s + 1])
            f.write(json.dumps({"session": s, "events": [{"aid": int(ev[i]), "ts": int(ts[i]),
                                                          "type": TYPE_NAMES[ty[i]]} for i in e]}) + "\n")
    assert eval_main(["predict", "--recommender", "w2v-session", "--train", str(tmp_path / "train"),
                      "--model", str(mdir), "--k", "20", str(tmp_path / "test.jsonl"), str(tmp_path / "sub.csv"),
                      "--quiet"]) == 0
    sub = {}
    for line in (tmp_path / "sub.csv").read_text().splitlines()[1:]:
        key, labels = line.split(",")
        sub[key] = [int(x) for x in labels.split()]
    server = make_server(mdir, "127.0.0.1", 0, threads=2)
    compared = 0
    with running(server):
        for s in range(40):
            events = [{"aid": int(ev[i]), "type": TYPE_NAMES[ty[i]]} for i in range(off[s], off[s + 1])]
            status, _, body = call(server.port, "POST", "/api/v1/recommendations", {"events": events, "k": 20})
            if not (ev[off[s]:off[s + 1]] < 10 * V).any():
                assert status == 404
                continue
            assert status == 200
            for t in TYPE_NAMES:
                assert sub[f"{s}_{t}"] == body, (s, t)
            compared += 1
    assert compared >= 30
