"""The IVF bulk top-k (w2v/ivf.py): exactness at nprobe = nlist, recall at the defaults,
degenerate inputs, determinism, the files and their validation, ``otto-train index --method``."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.command import UsageError
from w2v import index as index_cmd
from w2v import ivf, knn
from w2v.model_io import load_model, save_model


def clustered(V, D, n_topics, noise, seed):
    """Unit-ish rows around ``n_topics`` random directions with two levels of structure
    (topic, then sub-topic), like item embeddings: neighbours mostly share a topic, and topics
    overlap enough that one list never holds a whole neighbourhood."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, D))
    sub = topics[rng.integers(0, n_topics, 4 * n_topics)] + 0.6 * rng.standard_normal((4 * n_topics, D))
    x = sub[rng.integers(0, sub.shape[0], V)] + noise * rng.standard_normal((V, D))
    return x.astype(np.float32)


def recall(exact_rows, approx_rows):
    """Mean |exact top-k ∩ approx top-k| / k over queries (row sets, so tie order is irrelevant
    only where the scores tie; both orders are the same total order)."""
    k = exact_rows.shape[1]
    hits = sum(len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(exact_rows, approx_rows))
    return hits / (k * exact_rows.shape[0])


def test_nprobe_all_lists_is_exactly_the_exact_kernel():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((2500, 24)).astype(np.float32)
    v[7] = 0.0
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=40, seed=5))
    nl = idx.centroids.shape[0]
    nb, sc = knn.build_neighbor_table(v, 15)
    nb2, sc2 = ivf.neighbor_table(v, 15, idx, nprobe=nl)
    assert nb2.dtype == np.int32 and sc2.dtype == np.float32
    assert np.array_equal(nb, nb2) and np.array_equal(sc, sc2)  # bit-identical scores
    q = rng.standard_normal((300, 24)).astype(np.float32)
    inv = knn.inverse_norms(v)
    s1, r1 = knn.topk_batch(v, inv, q, 9)
    s2, r2 = ivf.search(idx, v, inv, q, 9, nprobe=nl + 5, chunk=37, q_block=5, n_threads=2)
    assert np.array_equal(r1, r2) and np.array_equal(s1, s2)


@settings(max_examples=15, deadline=None)
@given(V=st.integers(1, 60), D=st.integers(1, 6), k=st.integers(0, 70), nlist=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1))
def test_property_all_lists_equals_topk_batch(V, D, k, nlist, seed):
    rng = np.random.default_rng(seed)
    v = np.round(rng.standard_normal((V, D)), 1).astype(np.float32)  # rounding makes ties common
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=nlist, seed=seed % 97, iterations=3))
    inv = knn.inverse_norms(v)
    ex = rng.integers(-1, V, V)
    s1, r1 = knn.topk_batch(v, inv, v, k, exclude_self=ex)
    s2, r2 = ivf.search(idx, v, inv, v, k, nprobe=nlist, exclude_self=ex)
    assert np.array_equal(r1, r2) and np.array_equal(s1, s2)


def _probe_sets(queries, centroids, P, P0=0):
    """The probe kernel's sets (or, with P0, ``(probes, first)``: also its flags of the P0 best)."""
    qs = np.ascontiguousarray(queries, np.float32)
    q_scale = np.empty(qs.shape[0], np.float32)
    ivf._inv_norms_kernel(qs, q_scale)
    cent = np.ascontiguousarray(centroids, np.float32)
    nl = cent.shape[0]
    c_panels = np.zeros(((nl + 15) // 16, cent.shape[1], 16), np.float32)
    ivf._pack_panels(cent, knn.inverse_norms(cent), 0, nl, c_panels)
    probes = np.full((qs.shape[0], P), -7, np.int64)
    first = np.full((qs.shape[0], P), 7, np.uint8)
    ivf._probe_kernel(qs, q_scale, c_panels, nl, P0, P, probes, first)
    return (probes, first) if P0 else probes


@settings(max_examples=40, deadline=None)
@given(nl=st.integers(1, 70), D=st.integers(0, 9), Q=st.integers(1, 140), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["int", "float"]), data=st.data())
def test_probe_sets_are_the_best_centroids_of_topk_batch(nl, D, Q, seed, kind, data):
    """The probe selection (bisection over order keys, no heap) picks exactly the set that
    knn.topk_batch's top-P of the centroids holds, ties included (small integers give exact ties,
    zero and duplicate centroids, zero queries, -0.0 scores), in ascending centroid order."""
    P = data.draw(st.integers(1, nl))
    rng = np.random.default_rng(seed)
    if kind == "int":
        cent = rng.integers(-1, 2, (nl, D)).astype(np.float32)
        q = rng.integers(-1, 2, (Q, D)).astype(np.float32)
    else:
        cent = rng.standard_normal((nl, D)).astype(np.float32)
        q = rng.standard_normal((Q, D)).astype(np.float32)
        cent[rng.integers(0, nl, nl // 3)] = cent[rng.integers(0, nl)]
    q[rng.integers(0, Q, Q // 5)] = 0.0
    got = _probe_sets(q, cent, P)
    _, want = knn.topk_batch(cent, knn.inverse_norms(cent), q, P)
    assert np.array_equal(got, np.sort(want, axis=1))
    # the flags of a continuation mark exactly the P0 best, ties taken as topk_batch takes them
    P0 = data.draw(st.integers(1, P))
    got2, first = _probe_sets(q, cent, P, P0)
    assert np.array_equal(got2, got)
    _, want0 = knn.topk_batch(cent, knn.inverse_norms(cent), q, P0)
    for g, f, w in zip(got2, first, want0):
        assert set(g[f == 1].tolist()) == set(w.tolist()) and f.sum() == P0


def test_probe_sets_rank_nan_scores_last_and_negative_zero_as_zero():
    cent = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [np.nan, 0.0], [0.0, -1.0]], np.float32)
    q = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, -0.0]], np.float32)
    # q0 scores (0, -0, 1, nan, -1): the best 3 are 2, then 0 and 1 (0.0 == -0.0, lowest first)
    assert _probe_sets(q[:1], cent, 3).tolist() == [[0, 1, 2]]
    assert _probe_sets(q[:1], cent, 2).tolist() == [[0, 2]]
    assert _probe_sets(q, cent, 5).tolist() == [[0, 1, 2, 3, 4]] * 3
    assert _probe_sets(q[1:2], cent, 1).tolist() == [[0]]
    assert _probe_sets(q[2:], cent, 2).tolist() == [[1, 2]]   # scores (-1, 1, +-0, nan, +-0)


def test_packed_lists_are_shared_between_searches_and_checked():
    v = clustered(3000, 16, 12, 0.3, 4)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=50, seed=1))
    pk = ivf.pack_lists(idx, v, inv, n_threads=2)
    assert pk.panels.shape == (int(np.sum((np.diff(idx.offsets) + 15) // 16)), 16, 16)
    assert not pk.panels.flags.writeable
    q = v[::7]
    a = ivf.search(idx, v, inv, q, 10, nprobe=6)
    b = ivf.search(idx, v, inv, q, 10, nprobe=6, packed=pk, chunk=11, n_threads=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = ivf.build_ivf(v, ivf.IVFParams(nlist=49, seed=1))
    with pytest.raises(ValueError, match="packed: not the packed lists of this index"):
        ivf.search(other, v, inv, q, 10, packed=pk)


def _all_pair_scores(v):
    """score[x, z] of every pair by the exact tiles (topk_batch with k = V - 1: bit-identical to
    every table's scores), -inf on the diagonal."""
    V = v.shape[0]
    s, r = knn.topk_batch(v, knn.inverse_norms(v), v, V - 1, exclude_self=np.arange(V))
    full = np.full((V, V), -np.inf, np.float32)
    np.put_along_axis(full, np.maximum(r, 0), np.where(r >= 0, s, -np.inf), axis=1)
    return full


def _random_case(V, D, k, nlist, seed):
    """``(rng, v, k, index)`` of the refinement properties: small integers for odd seeds (ties and
    duplicate rows), normal rows otherwise; k capped at V - 1; an index with nlist lists."""
    rng = np.random.default_rng(seed)
    v = rng.integers(-2, 3, (V, D)).astype(np.float32) if seed % 2 else rng.standard_normal((V, D)).astype(np.float32)
    return rng, v, min(k, V - 1), ivf.build_ivf(v, ivf.IVFParams(nlist=nlist, seed=seed % 7, nprobe=1))


@settings(max_examples=25, deadline=None)
@given(V=st.integers(2, 90), D=st.integers(1, 8), k=st.integers(1, 12), nlist=st.integers(1, 9),
       rounds=st.integers(0, 3), reverse=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_property_refinement_keeps_exact_scores_and_never_worsens_a_list(V, D, k, nlist, rounds, reverse, seed):
    _, v, k, idx = _random_case(V, D, k, nlist, seed)
    nb0, sc0 = ivf.neighbor_table(v, k, idx, nprobe=2, refine_rounds=0)
    stats = {}
    nb, sc = ivf.refine_table(v, knn.inverse_norms(v), nb0, sc0, rounds=rounds, reverse=reverse,
                              n_threads=1 + seed % 2, stats=stats)
    assert nb.dtype == np.int32 and sc.dtype == np.float32 and nb.shape == nb0.shape
    full = _all_pair_scores(v)
    for x in range(V):
        got = nb[x][nb[x] >= 0]
        assert len(set(got.tolist())) == got.size and x not in got.tolist()
        assert np.array_equal(sc[x][nb[x] >= 0], full[x, got])          # exact scores, bit for bit
        pairs = list(zip((-sc[x][nb[x] >= 0]).tolist(), got.tolist()))
        assert pairs == sorted(pairs)                                     # score desc, row asc
        assert (sc[x] >= sc0[x]).all()                                    # slot by slot, never worse
    if rounds == 0:
        assert np.array_equal(nb, nb0) and np.array_equal(sc, sc0) and stats["refine_candidates"] == 0
    exact, _ = knn.build_neighbor_table(v, k)
    assert ivf.sampled_recall(exact, nb) >= ivf.sampled_recall(exact, nb0)


def _local_join_round(full, nb, sc, reverse):
    """A plain refinement round in Python (every candidate offered; ``full``: every pair's exact
    score, ``_all_pair_scores``): the reference the kernel's first round must equal bit for bit."""
    V, k = nb.shape
    rev = [[] for _ in range(V)]
    for y in range(V):
        for z in nb[y]:
            if z >= 0:
                rev[z].append(y)
    out_nb, out_sc = np.full_like(nb, -1), np.full_like(sc, -np.inf)
    for x in range(V):
        own = [int(y) for y in nb[x] if y >= 0]
        back = [y for y in rev[x][:reverse] if y not in own]
        cands = set(back)
        for y in own + back:
            cands.update(int(z) for z in nb[y] if z >= 0)
        cands -= set(own) | {x}
        pool = {int(y): float(s) for y, s in zip(nb[x], sc[x]) if y >= 0}
        for z in cands:
            pool[z] = float(full[x, z])
        best = sorted(pool.items(), key=lambda p: (-p[1], p[0]))[:k]
        for t, (z, s) in enumerate(best):
            out_nb[x, t], out_sc[x, t] = z, s
    return out_nb, out_sc


@settings(max_examples=25, deadline=None)
@given(V=st.integers(2, 120), D=st.integers(1, 6), k=st.integers(1, 10), nlist=st.integers(1, 9),
       rounds=st.integers(2, 4), reverse=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_property_incremental_rounds_equal_rounds_that_offer_everything(V, D, k, nlist, rounds, reverse, seed):
    # a round offers a row only the candidates the previous round did not (NN-descent's new/old
    # flags): rounds=r must equal r separate first rounds, ids and score bits, with fewer scored
    _, v, k, idx = _random_case(V, D, k, nlist, seed)
    inv = knn.inverse_norms(v)
    nb0, sc0 = ivf.neighbor_table(v, k, idx, nprobe=2, refine_rounds=0)
    st_inc = {}
    nb, sc = ivf.refine_table(v, inv, nb0, sc0, rounds=rounds, reverse=reverse, n_threads=1 + seed % 2, stats=st_inc)
    ref_nb, ref_sc, offered = nb0, sc0, 0
    for _ in range(rounds):
        st1 = {}
        ref_nb, ref_sc = ivf.refine_table(v, inv, ref_nb, ref_sc, rounds=1, reverse=reverse, stats=st1)
        offered += st1["refine_candidates"]
    assert np.array_equal(nb, ref_nb) and np.array_equal(sc.view(np.int32), ref_sc.view(np.int32))
    assert st_inc["refine_candidates"] <= offered


def test_a_first_round_is_the_plain_local_join():
    # the kernel's first round against a from-scratch Python local join (candidates counted too)
    v = clustered(400, 8, 8, 0.8, 3)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=20, nprobe=1))
    nb0, sc0 = ivf.neighbor_table(v, 6, idx, nprobe=2, refine_rounds=0)
    nb, sc = ivf.refine_table(v, inv, nb0, sc0, rounds=1, reverse=4)
    ref_nb, ref_sc = _local_join_round(_all_pair_scores(v), nb0, sc0, 4)
    assert not np.array_equal(nb, nb0)
    assert np.array_equal(nb, ref_nb) and np.array_equal(sc, ref_sc)


def test_incremental_rounds_score_fewer_candidates_on_a_clustered_matrix():
    v = clustered(6000, 12, 40, 0.5, 5)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=60, nprobe=1))
    nb0, sc0 = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=0)
    st3, st1 = {}, {}
    nb3, sc3 = ivf.refine_table(v, inv, nb0, sc0, rounds=3, reverse=20, stats=st3)
    nb1, sc1 = ivf.refine_table(v, inv, nb0, sc0, rounds=1, reverse=20, stats=st1)
    assert not np.array_equal(nb1, nb0) and not np.array_equal(nb3, nb1)   # every round changes lists
    # rounds 2 and 3 together score fewer candidates than round 1 alone
    assert st3["refine_candidates"] - st1["refine_candidates"] < st1["refine_candidates"]


@settings(max_examples=25, deadline=None)
@given(V=st.integers(2, 90), D=st.integers(1, 8), k=st.integers(1, 12), nlist=st.integers(1, 9),
       P=st.integers(1, 9), rounds=st.integers(1, 3), reverse=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_property_refined_bound_is_one_forward_round_and_bounds_the_table_row_by_row(V, D, k, nlist, P, rounds,
                                                                                     reverse, seed):
    # the automatic nprobe of the neighbour table compares this bound with the target, so it must
    # never claim more than the refined table holds, for any rounds >= 1 and any reverse cap
    rng, v, k, idx = _random_case(V, D, k, nlist, seed)
    P = min(P, idx.info["nlist"])
    inv = knn.inverse_norms(v)
    nb0, sc0 = ivf.neighbor_table(v, k, idx, nprobe=P, refine_rounds=0, symmetric=False)  # the bound's search
    sample = np.sort(rng.choice(V, 1 + seed % V, replace=False)).astype(np.int64)
    found = ivf.search(idx, v, inv, v[sample], k, nprobe=P, exclude_self=sample)
    assert np.array_equal(found[1], nb0[sample])  # a row's search result does not depend on its batch
    bound, _ = ivf._refined_bound(idx, v, inv, sample, found, P, ivf.DEFAULTS, None, 1 + seed % 2)
    assert bound.shape == (sample.size, k) and bound.dtype == np.int64
    one, _ = ivf.refine_table(v, inv, nb0, sc0, rounds=1, reverse=0)
    assert np.array_equal(bound, one[sample])  # the refinement's rule, with no reverse lists
    full = _all_pair_scores(v)
    nb, _ = ivf.refine_table(v, inv, nb0, sc0, rounds=rounds, reverse=reverse)
    exact, _ = knn.build_neighbor_table(v, k)
    for j, x in enumerate(sample.tolist()):
        cand = set(nb0[x][nb0[x] >= 0].tolist())
        for y in list(cand):
            cand |= set(nb0[y][nb0[y] >= 0].tolist())
        cand.discard(x)
        want = sorted(cand, key=lambda z: (-float(full[x, z]), z))[:k]
        assert bound[j][bound[j] >= 0].tolist() == want                    # one forward round, total order
        ex = set(exact[x][exact[x] >= 0].tolist())
        assert len(ex & set(want)) <= len(ex & set(nb[x][nb[x] >= 0].tolist()))  # never above the table
    assert ivf.sampled_recall(exact[sample], bound) <= ivf.sampled_recall(exact[sample], nb[sample].astype(np.int64))


def test_refinement_finds_what_the_probes_missed_and_counts_what_it_leaves_out():
    v = clustered(4000, 16, 40, 0.5, 11)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=200, seed=2))
    exact, _ = knn.build_neighbor_table(v, 10)
    nb0, sc0 = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=0, symmetric=False)  # a weak start on purpose
    st1, st2 = {}, {}
    nb1, sc1 = ivf.refine_table(v, inv, nb0, sc0, rounds=1, reverse=0, stats=st1)
    nb2, sc2 = ivf.refine_table(v, inv, nb0, sc0, rounds=2, reverse=20, n_threads=2, stats=st2)
    r0, r1, r2 = (ivf.sampled_recall(exact, t) for t in (nb0, nb1, nb2))
    assert r0 < 0.97 and r1 > r0 + 0.01 and r2 > r1 and r2 > 0.985, (r0, r1, r2)   # 0.967, 0.981, 0.989
    # reverse edges: every (row, neighbour) slot is one; beyond 0 per row all are left out
    assert st1["reverse_left_out"] == int((nb0 >= 0).sum())
    deg = np.bincount(nb0[nb0 >= 0].ravel(), minlength=4000)
    assert st2["reverse_left_out"] >= int(np.maximum(deg - 20, 0).sum())
    assert st1["refine_candidates"] > 0
    # the table is the search then the refinement, the same for any thread count
    a = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=2, refine_reverse=20, n_threads=1, symmetric=False)
    assert np.array_equal(a[0], nb2) and np.array_equal(a[1], sc2)
    # and the default (symmetric) search then the refinement: a better table than the one-way one
    ns, ss = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=0, n_threads=2)
    b = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=2, refine_reverse=20, n_threads=1)
    c = ivf.refine_table(v, inv, ns, ss, rounds=2, reverse=20)
    assert np.array_equal(b[0], c[0]) and np.array_equal(b[1], c[1])
    assert ivf.sampled_recall(exact, ns) > r0 and ivf.sampled_recall(exact, b[0]) > r2
    with pytest.raises(ValueError, match="rounds: must be an integer >= 0"):
        ivf.refine_table(v, inv, nb0, sc0, rounds=-1)
    with pytest.raises(ValueError, match="do not match"):
        ivf.refine_table(v, inv, nb0[:5], sc0[:5])


@settings(max_examples=30, deadline=None)
@given(V=st.integers(1, 60), k=st.integers(1, 8), pad=st.floats(0, 0.5), seed=st.integers(0, 2**32 - 1))
def test_property_reverse_lists_are_a_stable_sort_of_the_slots_by_target(V, k, pad, seed):
    rng = np.random.default_rng(seed)
    nb = np.stack([rng.permutation(V)[:k] if V >= k else np.r_[rng.permutation(V), [-1] * (k - V)]
                   for _ in range(V)]).astype(np.int32)
    nb[rng.random(nb.shape) < pad] = -1                   # padding anywhere in a row
    tgt = nb.ravel()
    keep = np.flatnonzero(tgt >= 0)
    want = keep[np.argsort(tgt[keep], kind="stable")] // k  # the slots' rows, by target, stably
    rev_off = np.zeros(V + 1, np.int64)
    np.cumsum(np.bincount(tgt[keep], minlength=V), out=rev_off[1:])
    got_off, got = ivf._invert_probes(nb, np.zeros(V, np.bool_), V)   # the refinement's reverse lists
    assert np.array_equal(got_off, rev_off)
    assert np.array_equal(got, want)
    for y in range(V):                                     # each list: the rows listing y, ascending
        assert got[rev_off[y]:rev_off[y + 1]].tolist() == [x for x in range(V) if y in nb[x].tolist()]


def test_refinement_result_does_not_depend_on_the_visiting_order():
    v = clustered(3000, 12, 30, 0.5, 5)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=100, seed=1))
    nb0, sc0 = ivf.neighbor_table(v, 8, idx, nprobe=2, refine_rounds=0)
    base = ivf.refine_table(v, inv, nb0, sc0, rounds=2, reverse=5)
    assert not np.array_equal(base[0], nb0)                # the case refines something
    rng = np.random.default_rng(0)
    for order in (idx.rows, np.arange(3000)[::-1], rng.permutation(3000)):
        for threads in (1, 2):
            got = ivf.refine_table(v, inv, nb0, sc0, rounds=2, reverse=5, order=order, n_threads=threads)
            assert np.array_equal(got[0], base[0]) and np.array_equal(got[1].view(np.uint32), base[1].view(np.uint32))
    # neighbor_table visits the rows list by list; the table is the same as visiting them in row order
    nt = ivf.neighbor_table(v, 8, idx, nprobe=2, refine_rounds=2, refine_reverse=5)
    assert np.array_equal(nt[0], base[0]) and np.array_equal(nt[1], base[1])
    for bad in (np.arange(2999), np.r_[np.arange(2999), 0], np.r_[np.arange(1, 3000), 3000], np.arange(-1, 2999)):
        with pytest.raises(ValueError, match="order: must be a permutation of the 3000 rows"):
            ivf.refine_table(v, inv, nb0, sc0, rounds=1, order=bad)


def test_recall_at_defaults_on_a_clustered_matrix():
    v = clustered(40_000, 32, 250, 0.75, seed=11)
    stats = {}
    idx = ivf.build_ivf(v, ivf.DEFAULTS)
    assert idx.info["nlist"] == ivf.default_nlist(40_000) == 800
    nb2, sc2 = ivf.neighbor_table(v, 20, idx, stats=stats)
    sample = np.random.default_rng(0).choice(40_000, 2000, replace=False)
    nb, sc = knn.build_neighbor_table(v, 20, rows=sample)
    r = recall(nb, nb2[sample])
    assert r >= 0.99, r
    # the scanned pairs are a small fraction of the exact V*V: the point of the index
    assert stats["pairs_scored"] < 0.1 * 40_000**2
    # scores of the rows found are the exact scores of those rows (same arithmetic)
    same = nb == nb2[sample]
    assert np.array_equal(sc[same], sc2[sample][same])
    # session-like queries keep the recall too: weighted sums of a row and a few of its
    # neighbours (sessions walk between related items)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.2, 1.0, (1000, 4)).astype(np.float32)
    q = v[sample[:1000]] * w[:, :1] + np.einsum("qj,qjd->qd", w[:, 1:], v[nb[:1000, [0, 4, 9]]])
    inv = knn.inverse_norms(v)
    _, r1 = knn.topk_batch(v, inv, q, 20)
    _, r2 = ivf.search(idx, v, inv, q, 20)
    assert recall(r1, r2) >= 0.99


def test_degenerate_fewer_rows_than_lists_and_k_above_rows():
    v = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=50))
    assert idx.centroids.shape == (5, 3) and idx.info["nlist_requested"] == 50
    nb, sc = knn.build_neighbor_table(v, 9)
    nb2, sc2 = ivf.neighbor_table(v, 9, idx, nprobe=1)  # too few candidates: widened to all lists
    assert np.array_equal(nb, nb2) and np.array_equal(sc, sc2)
    assert (nb2[:, 4:] == -1).all() and np.isneginf(sc2[:, 4:]).all()
    empty = ivf.build_ivf(np.zeros((0, 3), np.float32))
    s, r = ivf.search(empty, np.zeros((0, 3), np.float32), np.zeros(0, np.float32), v, 4)
    assert (r == -1).all() and np.isneginf(s).all()
    s, r = ivf.search(idx, v, knn.inverse_norms(v), v, 0)
    assert s.shape == (5, 0) and r.shape == (5, 0)


def test_degenerate_zero_vectors_and_duplicates():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    v = np.concatenate([base[rng.integers(0, 40, 3000)], np.zeros((50, 8), np.float32)])  # duplicates + zeros
    v = v[rng.permutation(v.shape[0])]
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=64, seed=1))
    assert np.isfinite(idx.centroids).all()
    assert sorted(idx.rows.tolist()) == list(range(v.shape[0]))
    st_ = {}
    nb, sc = knn.build_neighbor_table(v, 10)
    nb2, sc2 = ivf.neighbor_table(v, 10, idx, stats=st_)
    # duplicates tie at the same score: the total order (row ascending) decides, as in the exact table
    assert recall(nb, nb2) >= 0.99
    zero = np.flatnonzero(~v.any(axis=1))
    # a zero row is a zero query: it probes every list and gets exactly the exact answer
    assert np.array_equal(nb2[zero], nb[zero]) and np.array_equal(sc2[zero], sc[zero])
    assert st_["queries_widened"] >= zero.size
    assert not np.isnan(sc2).any()


def test_deterministic_for_a_seed_and_independent_of_threads_and_chunks():
    v = clustered(6000, 16, 60, 1.0, seed=4)
    a = ivf.build_ivf(v, ivf.IVFParams(seed=9), n_threads=1)
    b = ivf.build_ivf(v, ivf.IVFParams(seed=9), n_threads=2)
    assert np.array_equal(a.centroids, b.centroids) and np.array_equal(a.rows, b.rows)
    assert np.array_equal(a.offsets, b.offsets) and a.info == b.info
    c = ivf.build_ivf(v, ivf.IVFParams(seed=10))
    assert not np.array_equal(a.centroids, c.centroids)
    inv = knn.inverse_norms(v)
    s1, r1 = ivf.search(a, v, inv, v[:700], 12, nprobe=3, n_threads=1)
    s2, r2 = ivf.search(b, v, inv, v[:700], 12, nprobe=3, n_threads=2, chunk=50, q_block=7)
    assert np.array_equal(r1, r2) and np.array_equal(s1, s2)


def test_argument_errors():
    v = np.ones((10, 3), np.float32)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=2))
    inv = knn.inverse_norms(v)
    with pytest.raises(ValueError, match="nprobe"):
        ivf.search(idx, v, inv, v, 3, nprobe=0)
    with pytest.raises(ValueError, match="queries"):
        ivf.search(idx, v, inv, np.ones((2, 4), np.float32), 3)
    with pytest.raises(ivf.IVFError, match="rows"):
        ivf.search(idx, v[:9], inv[:9], v, 3)
    with pytest.raises(ValueError, match="nlist"):
        ivf.IVFParams(nlist=0)
    with pytest.raises(ValueError, match="iterations"):
        ivf.IVFParams(iterations=-1)
    with pytest.raises(ValueError, match="method"):
        ivf.resolve_method("hnsw", 10)
    assert ivf.resolve_method("auto", ivf.AUTO_IVF_MIN_ROWS - 1) == "exact"
    assert ivf.resolve_method("auto", ivf.AUTO_IVF_MIN_ROWS) == "ivf"


def _model(path, V=300, D=8, seed=0):
    v = clustered(V, D, 6, 0.5, seed)
    rng = np.random.default_rng(seed)
    save_model(path, v, v.copy(), np.arange(V, dtype=np.int64) * 3, rng.integers(1, 9, V).astype(np.int64),
               {"source": "test"})
    return v


def _parse(argv):
    parser = argparse.ArgumentParser(prog="otto-train")
    index_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_index_command_ivf_records_method_and_files_round_trip(tmp_path, capsys):
    v = _model(tmp_path / "m")
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--k", "6", "--ivf-nlist", "12",
                   "--ivf-nprobe", "12", "--ivf-seed", "3"])
    assert args.func(args) == 0
    assert "method ivf" in capsys.readouterr().err
    m = load_model(tmp_path / "m")
    meta = m.index_meta
    assert meta["method"] == "ivf" and meta["ivf"]["nlist"] == 12 and meta["ivf"]["nprobe"] == 12
    assert meta["ivf"]["seed"] == 3 and meta["ivf"]["nprobe_source"] == "given"
    assert "nprobe_trials" not in meta["ivf"]  # a given nprobe is not measured
    assert json.loads((tmp_path / "m" / "ivf.json").read_text())["nprobe"] == 12
    nb, sc = knn.build_neighbor_table(v, 6)
    assert np.array_equal(np.asarray(m.neighbors), nb)  # nprobe = nlist: the exact table
    loaded = ivf.load_ivf(tmp_path / "m", m.vectors)
    assert loaded.centroids.shape == (12, 8) and loaded.info["format_version"] == ivf.IVF_FORMAT_VERSION
    bulk = ivf.BulkTopK(m.vectors, "ivf", replace(ivf.DEFAULTS, nlist=12, seed=3, nprobe=12), model_dir=tmp_path / "m")
    assert bulk.info()["ivf_source"] == "loaded from the model directory"
    assert bulk.info()["nprobe"] == 12 and bulk.info()["nprobe_source"] == "given"
    # the files record a given nprobe, so an automatic one is measured on the loaded lists
    bulk = ivf.BulkTopK(m.vectors, "ivf", replace(ivf.DEFAULTS, nlist=12, seed=3), model_dir=tmp_path / "m")
    assert bulk.info()["ivf_source"] == "loaded from the model directory, nprobe re-measured"
    assert bulk.index.info["nprobe_source"] == "auto" and bulk.index.info["recall_k"] == 20
    other = ivf.BulkTopK(m.vectors, "ivf", replace(ivf.DEFAULTS, nlist=11), model_dir=tmp_path / "m")
    assert other.info()["ivf_source"] == "built in memory"
    args = _parse(["index", str(tmp_path / "m"), "--k", "4", "--quiet"])  # auto: 300 rows -> exact
    assert args.func(args) == 0
    assert load_model(tmp_path / "m").index_meta["method"] == "exact"


def test_index_command_auto_nprobe_is_reported_and_recorded(tmp_path, capsys):
    _model(tmp_path / "m")
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--k", "5", "--ivf-nlist", "30",
                   "--ivf-recall-sample", "100", "--ivf-target-recall", "0.999"])
    assert args.func(args) == 0
    meta = load_model(tmp_path / "m").index_meta["ivf"]
    side = json.loads((tmp_path / "m" / "ivf.json").read_text())
    assert meta["nprobe_source"] == side["nprobe_source"] == "auto"
    assert meta["recall_k"] == 5 and meta["recall_sample"] == 100 and meta["target_recall"] == 0.999
    assert meta["nprobe"] == side["nprobe"] == meta["nprobe_trials"][-1]["nprobe"]
    assert meta["sampled_recall"] >= 0.999 or not meta["target_reached"]
    err = capsys.readouterr().err
    assert f"nprobe {meta['nprobe']} (auto: sampled recall@5 {meta['sampled_recall']:.4f} over 100 rows" in err
    # the table's nprobe targets the refined table; otto-eval's searches re-measure it for the search
    assert meta["nprobe_target"] == side["nprobe_target"] == "table"
    assert meta["table_recall_refined"] >= meta["table_recall_bound"]  # the bound, measured on the same sample
    assert f"refined table at least {meta['table_recall_bound']:.4f}, target 0.999" in err
    if meta["table_recall_refined"] >= 0.999:   # no reprobe step was needed
        assert meta["reprobe_rows"] == 0 and meta["table_recall"] == meta["table_recall_refined"]
    m = load_model(tmp_path / "m")
    p5 = replace(ivf.DEFAULTS, nlist=30, recall_sample=100, target_recall=0.999)
    bulk = ivf.BulkTopK(m.vectors, "ivf", p5, model_dir=tmp_path / "m", k=5)
    loaded = ivf.load_ivf(tmp_path / "m", m.vectors)
    want = ivf.tune_nprobe(loaded, m.vectors, knn.inverse_norms(m.vectors), 5, p5).info
    assert bulk.index.info == want and want["nprobe_target"] == "search" and "table_recall_bound" not in want
    derived = ivf._search_choice(loaded.info, p5, m.vectors.shape[0], 5) is not None
    assert bulk.info()["ivf_source"] == "loaded from the model directory, " + (
        "nprobe from the table's trials" if derived else "nprobe re-measured")
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--ivf-target-recall", "1.5"])
    with pytest.raises(UsageError, match="--ivf-target-recall: must be a number in"):
        args.func(args)


def test_index_command_reprobes_the_weakest_rows_and_records_each_step(tmp_path, capsys):
    v = clustered(5000, 16, 400, 1.0, seed=5)
    save_model(tmp_path / "m", v, v.copy(), np.arange(5000, dtype=np.int64), np.ones(5000, np.int64), {"source": "t"})
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--k", "10", "--ivf-nlist", "200",
                   "--ivf-recall-sample", "500", "--ivf-target-recall", "0.995", "--ivf-refine-rounds", "1",
                   "--ivf-reprobe-step", "0.1"])
    assert args.func(args) == 0
    meta = load_model(tmp_path / "m").index_meta["ivf"]
    err = capsys.readouterr().err
    trials = meta["reprobe_trials"]
    # one trial, at half the base nprobe (--ivf-reprobe-base 0.5)
    assert [t["nprobe"] for t in meta["nprobe_trials"]] == [ivf.table_base(200)] == [meta["nprobe"]] == [12]
    assert meta["reprobe_base"] == 0.5 and ivf.default_nprobe(200) == 24
    assert meta["table_recall_refined"] < 0.995 and trials and meta["reprobe_rows"] == trials[-1]["rows"] > 0
    assert [t["rows"] for t in trials] == [500 * (i + 1) for i in range(len(trials))]
    assert meta["table_recall"] == trials[-1]["recall"] > meta["table_recall_refined"]
    assert meta["table_target_reached"] == (meta["table_recall"] >= 0.995)
    assert meta["reprobe_nprobe"] == min(200, ivf.DEFAULTS.reprobe_factor * meta["nprobe"]) and meta["reprobe_pairs"] > 0
    assert f"weakest rows again at nprobe {meta['reprobe_nprobe']}" in err and "index: reprobe: " in err
    # the table on file is the one the recall was measured on
    m = load_model(tmp_path / "m")
    sample, exact = ivf.recall_reference(v, knn.inverse_norms(v), 10, ivf.IVFParams(recall_sample=500))
    assert ivf.sampled_recall(exact, np.asarray(m.neighbors)[sample].astype(np.int64)) == meta["table_recall"]


def test_index_command_starts_each_progress_line_with_its_phase(tmp_path, monkeypatch):
    # a Progress measures rate and ETA from its creation: the search's and the refinement's are
    # made when their phase starts (the refinement's once made before the search, so its first
    # lines reported a rate of a few rows per second and an ETA of hours)
    _model(tmp_path / "m")
    events = []

    class Recorder:
        def __init__(self, label, total, **kw):
            events.append(("progress", label))

        def report(self, done, total=None):
            pass

    search, refine = ivf.neighbor_table, ivf.refine_table
    monkeypatch.setattr(index_cmd, "Progress", Recorder)
    monkeypatch.setattr(ivf, "neighbor_table", lambda *a, **kw: (events.append(("search", None)), search(*a, **kw))[1])
    monkeypatch.setattr(ivf, "refine_table", lambda *a, **kw: (events.append(("refine", None)), refine(*a, **kw))[1])
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--k", "5", "--ivf-nlist", "30"])
    assert args.func(args) == 0
    assert events == [("progress", "index"), ("search", None),
                      ("progress", "index: refinement (2 rounds)"), ("refine", None)]


@pytest.mark.parametrize("damage, message", [
    ("offsets", "offsets must rise"),
    ("rows_dup", "not a permutation"),
    ("rows_order", "not ascending"),
    ("centroids_shape", "centroids"),
    ("version", "format_version"),
    ("vectors", "vectors_crc32"),
    ("missing", "missing"),
    ("truncated", "not a readable"),
])
def test_loading_refuses_inconsistent_files(tmp_path, damage, message):
    v = _model(tmp_path / "m")
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=10))
    ivf.save_ivf(tmp_path / "m", idx, ivf.vectors_fingerprint(v))
    d = tmp_path / "m"
    if damage == "offsets":
        off = idx.offsets.copy()
        off[3], off[4] = off[4] + 1, off[3]
        np.save(d / "ivf_offsets.npy", off)
    elif damage == "rows_dup":
        rows = idx.rows.copy()
        rows[0] = rows[1]
        np.save(d / "ivf_rows.npy", rows)
    elif damage == "rows_order":
        big = int(np.argmax(np.diff(idx.offsets)))
        rows = idx.rows.copy()
        a = idx.offsets[big]
        rows[a], rows[a + 1] = rows[a + 1], rows[a]
        np.save(d / "ivf_rows.npy", rows)
    elif damage == "centroids_shape":
        np.save(d / "ivf_centroids.npy", np.zeros((10, 5), np.float32))
    elif damage == "version":
        meta = json.loads((d / "ivf.json").read_text())
        meta["format_version"] = 99
        (d / "ivf.json").write_text(json.dumps(meta))
    elif damage == "vectors":
        v = v.copy()
        v[0, 0] += 1.0
    elif damage == "missing":
        (d / "ivf_rows.npy").unlink()
    elif damage == "truncated":
        data = (d / "ivf_rows.npy").read_bytes()
        (d / "ivf_rows.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ivf.IVFError, match=message) as exc:
        ivf.load_ivf(d, v)
    assert "\n" not in str(exc.value)


def test_w2v_session_recommender_with_ivf(tmp_path):
    """otto-eval's w2v-session through the IVF method: all lists probed = the exact method's
    lists; the default nprobe keeps most of them (clustered vectors); the method is reported."""
    from data_prep.dataset import Dataset
    from eval import recommenders as R
    V = 3000
    v = clustered(V, 16, 30, 0.6, seed=8)
    aids = np.arange(V, dtype=np.int64) * 7 + 1
    save_model(tmp_path / "m", v, v, aids, np.ones(V, np.int64), {})
    model = load_model(tmp_path / "m")
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 6, 400)
    off = np.concatenate([[0], np.cumsum(lens)])
    ev = aids[rng.integers(0, V, off[-1])]
    test = Dataset(np.arange(400, dtype=np.int64), off, ev.astype(np.int32), np.arange(off[-1], dtype=np.int64),
                   rng.integers(0, 3, off[-1]).astype(np.uint8))
    train = Dataset(np.arange(1, dtype=np.int64), np.array([0, 3]), aids[:3].astype(np.int32),
                    np.arange(3, dtype=np.int64), np.zeros(3, np.uint8))
    exact = R.make("w2v-session", answers=R.SessionAnswers("exact")).fit(train, model).predict(test, 20)
    full = R.make("w2v-session", answers=R.SessionAnswers("ivf", replace(ivf.DEFAULTS, nlist=40, nprobe=40)))
    got = full.fit(train, model).predict(test, 20)
    assert all(np.array_equal(exact[t], got[t]) for t in range(3))
    assert full.info()["method"] == "ivf" and full.info()["nprobe"] == 40
    approx = R.make("w2v-session", answers=R.SessionAnswers("ivf")).fit(train, model).predict(test, 20)
    # these sessions mix random items from unrelated clusters, the hard case for an IVF index
    # (real sessions stay near a topic); 0.95 is what the defaults keep on them
    assert recall(exact[0], approx[0]) >= 0.95
    assert R.make("w2v-session").fit(train, model).answers.bulk().method == "exact"  # auto below AUTO_IVF_MIN_ROWS


def test_auto_nprobe_reaches_the_target_where_the_base_default_does_not():
    # many small overlapping clusters and 200 lists: 24 lists (the base default) miss neighbours
    v = clustered(5000, 16, 400, 1.0, seed=5)
    params = ivf.IVFParams(nlist=200, seed=2, recall_sample=1000, max_probe_fraction=1.0)
    msgs = []
    idx = ivf.build_ivf(v, params, k=20, progress=msgs.append)
    info = idx.info
    trials = info["nprobe_trials"]
    assert info["nprobe_source"] == "auto" and info["recall_sample"] == 1000 and info["target_recall"] == 0.99
    assert trials[0]["nprobe"] == ivf.default_nprobe(200) == 24 and trials[0]["recall"] < 0.99
    assert [t["nprobe"] for t in trials] == [min(24 * 2**i, 200) for i in range(len(trials))]
    assert all(t["recall"] < 0.99 for t in trials[:-1]) and trials[-1]["recall"] >= 0.99
    assert info["nprobe"] == trials[-1]["nprobe"] < 200 and info["sampled_recall"] == trials[-1]["recall"]
    assert any(f"nprobe {info['nprobe']} chosen (auto)" in m for m in msgs)
    # the measured recall carries over to the whole table (every row against the exact table);
    # 0.005 below the target allows for the sampling error of 1000 rows
    nb, _ = knn.build_neighbor_table(v, 20)
    nb_auto, _ = ivf.neighbor_table(v, 20, idx, refine_rounds=0)  # the recorded nprobe, search only
    nb_base, _ = ivf.neighbor_table(v, 20, idx, nprobe=24, refine_rounds=0)
    assert ivf.sampled_recall(nb, nb_auto) >= 0.985
    assert ivf.sampled_recall(nb, nb_base) < 0.99
    # the default refinement lifts the base nprobe's table over the target (0.9965 here)
    assert ivf.sampled_recall(nb, ivf.neighbor_table(v, 20, idx, nprobe=24)[0]) >= 0.99
    assert recall(nb, nb_auto) == ivf.sampled_recall(nb, nb_auto)  # the tests' recall, the same figure
    # deterministic for a seed: same lists, same sample, same trials
    again = ivf.build_ivf(v, params, k=20, n_threads=1)
    assert again.info == info and np.array_equal(again.rows, idx.rows)
    # a reference the caller computed already (otto-train index) gives the same choice; one for
    # other rows or another k is refused
    ref = ivf.recall_reference(v, knn.inverse_norms(v), 20, params)
    assert ivf.build_ivf(v, params, k=20, reference=ref).info == info
    for bad in ((ref[0][::-1], ref[1]), (ref[0], ref[1][:, :10]), (ref[0][:10], ref[1][:10])):
        with pytest.raises(ValueError, match="reference: not recall_reference's result"):
            ivf.build_ivf(v, params, k=20, reference=bad)
    assert not np.array_equal(ivf._recall_sample(5000, params), ivf._recall_sample(5000, replace(params, seed=3)))
    # the cap: at most max_probe_fraction of the lists (the last doubling cut to it), and a target
    # not reached within it is recorded and reported, not hidden
    capped = ivf.build_ivf(v, replace(params, max_probe_fraction=0.3), k=20, progress=msgs.append)
    ci = capped.info
    assert [t["nprobe"] for t in ci["nprobe_trials"]] == [24, 48, 60]
    assert ci["nprobe"] == 60 and not ci["target_reached"] and ci["sampled_recall"] < 0.99
    assert ci["max_probe_fraction"] == 0.3 and info["target_reached"]
    assert any("NOT reached within 0.3 of the lists" in m for m in msgs)
    with pytest.raises(ValueError, match="max_probe_fraction"):
        ivf.IVFParams(max_probe_fraction=0.0)


def test_table_target_picks_the_nprobe_whose_refined_table_reaches_it():
    # the neighbour table is refined after the search, so its automatic nprobe targets a lower
    # bound of the refined table's recall; the search target (BulkTopK, otto-eval) would probe
    # more lists than the table needs (on the generated 1.86M x 64 matrix: 436 instead of 114).
    # Without reprobing: with it, only the base is tried (checked below).
    v = clustered(5000, 16, 400, 1.0, seed=5)
    params = ivf.IVFParams(nlist=200, seed=2, recall_sample=1000, max_probe_fraction=1.0, reprobe_max=0.0)
    msgs = []
    search_idx = ivf.build_ivf(v, params, k=20)
    table_idx = ivf.build_ivf(v, params, k=20, table=True, progress=msgs.append)
    si, ti = search_idx.info, table_idx.info
    assert si["nprobe_target"] == "search" and "table_recall_bound" not in si
    assert ti["nprobe_target"] == "table" and np.array_equal(table_idx.rows, search_idx.rows)
    trials = ti["nprobe_trials"]
    assert [t["nprobe"] for t in trials] == [t["nprobe"] for t in si["nprobe_trials"]][:len(trials)]
    assert all(t["table_bound"] >= t["recall"] for t in trials)  # the search's list is a candidate
    assert all(t["table_bound"] < 0.99 for t in trials[:-1]) and trials[-1]["table_bound"] >= 0.99
    assert ti["nprobe"] == trials[-1]["nprobe"] < si["nprobe"] and ti["target_reached"]
    assert ti["table_recall_bound"] == trials[-1]["table_bound"] and ti["sampled_recall"] == trials[-1]["recall"]
    assert ti["sampled_recall"] < 0.99  # the search alone is below the target at the chosen nprobe
    assert any(f"nprobe {ti['nprobe']} chosen (auto)" in m and "refined table at least" in m for m in msgs)
    # the bound holds for the table that is then built: measured on the same sample, and overall
    sample, exact = ivf.recall_reference(v, knn.inverse_norms(v), 20, params)
    nb, _ = ivf.neighbor_table(v, 20, table_idx)
    assert ivf.sampled_recall(exact, nb[sample].astype(np.int64)) >= ti["table_recall_bound"] >= 0.99
    nb_exact, _ = knn.build_neighbor_table(v, 20)
    assert ivf.sampled_recall(nb_exact, nb) >= 0.985  # 1000 sampled rows: 0.005 of sampling error
    # deterministic, and independent of the threads
    assert ivf.build_ivf(v, params, k=20, table=True, n_threads=1).info == ti
    # with reprobing the table's search stays at its base, half the search's (reprobe_table does the
    # rest); the search target cannot take its choice from that trial
    rp = ivf.build_ivf(v, replace(params, reprobe_max=0.5), k=20, table=True).info
    assert [t["nprobe"] for t in rp["nprobe_trials"]] == [trials[0]["nprobe"] // 2] == [rp["nprobe"]] == [12]
    assert rp["nprobe_target"] == "table" and not rp["target_reached"]
    assert ivf._search_choice(rp, replace(params, reprobe_max=0.5, target_recall=rp["nprobe_trials"][0]["recall"]),
                              5000, 20) is None
    full = ivf.build_ivf(v, replace(params, reprobe_max=0.5, reprobe_base=1.0), k=20, table=True).info
    assert [t["nprobe"] for t in full["nprobe_trials"]] == [trials[0]["nprobe"]]
    # no refinement: the table is the search, so the search is measured
    plain = ivf.build_ivf(v, replace(params, refine_rounds=0), k=20, table=True).info
    assert plain["nprobe_target"] == "search" and plain["nprobe"] == si["nprobe"]
    # an index measured for one target is re-measured for the other (BulkTopK searches only)
    assert ivf._auto_matches(si, params, 5000, 20) and not ivf._auto_matches(ti, params, 5000, 20)
    assert ivf._auto_matches(ti, params, 5000, 20, "table") and not ivf._auto_matches(si, params, 5000, 20, "table")
    legacy = {key: val for key, val in si.items() if key != "nprobe_target"}  # files written before the field
    assert ivf._auto_matches(legacy, params, 5000, 20)
    # the search's choice from the table's trials (BulkTopK on a model indexed by otto-train index):
    # undecided when the table stopped before the search reached the target, below the cap ...
    assert ivf._search_choice(ti, params, 5000, 20) is None and ivf._search_choice(si, params, 5000, 20) is None
    # ... and exactly the search target's record when the table's last trial is the cap, or when
    # the search reached the target there
    for p2 in (replace(params, target_recall=1.0, max_probe_fraction=0.3),
               replace(params, target_recall=si["nprobe_trials"][0]["recall"])):
        t2 = ivf.build_ivf(v, p2, k=20, table=True).info
        s2 = ivf.build_ivf(v, p2, k=20).info
        assert ivf._search_choice(t2, p2, 5000, 20) == s2
        assert ivf._search_choice(t2, p2, 5000, 10) is None  # measured for another k
    assert [t["nprobe"] for t in s2["nprobe_trials"]] == [24] and s2["target_reached"]


def test_given_nprobe_skips_the_measurement(monkeypatch):
    v = clustered(2000, 8, 20, 0.8, seed=1)

    def refuse(*a, **kw):
        raise AssertionError("measured although nprobe was given")

    monkeypatch.setattr(ivf, "tune_nprobe", refuse)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=30, nprobe=5))
    assert idx.info["nprobe"] == 5 and idx.info["nprobe_source"] == "given"
    assert "nprobe_trials" not in idx.info and "sampled_recall" not in idx.info
    assert ivf.build_ivf(v, ivf.IVFParams(nlist=30, nprobe=99)).info["nprobe"] == 30  # capped at nlist
    _, r1 = ivf.search(idx, v, knn.inverse_norms(v), v[:50], 7)
    _, r2 = ivf.search(idx, v, knn.inverse_norms(v), v[:50], 7, nprobe=5)
    assert np.array_equal(r1, r2)  # a search without nprobe uses the recorded one


def test_auto_nprobe_degenerate_sample_above_rows_and_target_one():
    # V below the sample: every row is measured, so target 1.0 means the exact table
    rng = np.random.default_rng(6)
    v = rng.standard_normal((300, 12)).astype(np.float32)  # no structure: only all lists are exact
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=40, target_recall=1.0, max_probe_fraction=1.0), k=10)
    info = idx.info
    assert info["recall_sample"] == 300 and info["sampled_recall"] == 1.0
    assert all(t["recall"] < 1.0 for t in info["nprobe_trials"][:-1])
    assert info["nprobe"] == 40 == info["nlist"]
    nb, sc = knn.build_neighbor_table(v, 10)
    nb2, sc2 = ivf.neighbor_table(v, 10, idx)
    assert np.array_equal(nb, nb2) and np.array_equal(sc, sc2)
    # one row (no neighbour at all) and no rows: recall 1.0 at the base nprobe
    one = ivf.build_ivf(v[:1], ivf.IVFParams())
    assert one.info["nprobe"] == 1 and one.info["nprobe_trials"] == [{"nprobe": 1, "recall": 1.0}]
    assert ivf.build_ivf(np.zeros((0, 3), np.float32)).info["recall_sample"] == 0
    assert ivf.sampled_recall(np.full((2, 3), -1), np.full((2, 3), -1)) == 1.0
    with pytest.raises(ValueError, match="target_recall"):
        ivf.IVFParams(target_recall=1.5)
    with pytest.raises(ValueError, match="target_recall"):
        ivf.IVFParams(target_recall=0.0)
    with pytest.raises(ValueError, match="recall_sample"):
        ivf.IVFParams(recall_sample=0)


def test_refinement_flags_belong_to_the_table_command_only():
    import subprocess
    import sys
    out = {cmd: subprocess.run([sys.executable, "-m", mod, cmd, "--help"], capture_output=True, text=True,
                               check=True).stdout
           for mod, cmd in (("w2v", "index"), ("eval", "run"))}
    for flag in index_cmd.TABLE_ONLY:
        flag = "--ivf-" + flag.replace("_", "-")
        assert flag in out["index"] and flag not in out["run"], flag       # otto-eval builds no table
    assert "--ivf-nprobe" in out["run"]


def test_the_table_reuses_the_rows_its_automatic_nprobe_searched():
    # the last trial searched the sample and its neighbours at the chosen nprobe: the table's
    # search skips them and the table (ids, score bits, pairs counted) is the one of a full search
    v = clustered(3000, 16, 30, 0.45, 11)
    params = ivf.IVFParams(nlist=40, recall_sample=200, target_recall=0.999)
    kept = {}
    idx = ivf.build_ivf(v, params, k=10, table=True, searched=kept)
    got = kept["rows"]
    assert got.nprobe == idx.info["nprobe"] and 200 < got.rows.size < 3000
    assert np.array_equal(got.rows, np.unique(got.rows)) and got.ids.shape == (got.rows.size, 10)
    full_stats, part_stats = {}, {}
    a = ivf.neighbor_table(v, 10, idx, stats=full_stats, symmetric=False)
    b = ivf.neighbor_table(v, 10, idx, stats=part_stats, searched=got, n_threads=2, symmetric=False)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1].view(np.int32), b[1].view(np.int32))
    assert part_stats["pairs_scored"] == full_stats["pairs_scored"]
    assert part_stats["queries_widened"] == full_stats["queries_widened"]
    # rows searched at another nprobe, or for another k, are not used
    c = ivf.neighbor_table(v, 10, idx, nprobe=got.nprobe + 1, refine_rounds=0, searched=got, symmetric=False)
    d = ivf.neighbor_table(v, 10, idx, nprobe=got.nprobe + 1, refine_rounds=0, symmetric=False)
    assert np.array_equal(c[0], d[0])
    e = ivf.neighbor_table(v, 5, idx, refine_rounds=0, searched=got, symmetric=False)
    assert np.array_equal(e[0], ivf.neighbor_table(v, 5, idx, refine_rounds=0, symmetric=False)[0])
    # a symmetric table searches every row again (a reused row offered nothing back) and is the
    # same table with or without the reused rows
    st_s = {}
    f = ivf.neighbor_table(v, 10, idx, searched=got, stats=st_s)
    g = ivf.neighbor_table(v, 10, idx)
    assert np.array_equal(f[0], g[0]) and np.array_equal(f[1].view(np.int32), g[1].view(np.int32))
    assert st_s["pairs_scored"] == full_stats["pairs_scored"]
    # at a low nprobe the other direction adds entries, and the table is better for it
    st_s, st_o = {}, {}
    f = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=0, stats=st_s)
    o = ivf.neighbor_table(v, 10, idx, nprobe=2, refine_rounds=0, stats=st_o, symmetric=False)
    assert st_s["symmetric_entries"] > 0 and st_s["pairs_scored"] == st_o["pairs_scored"]
    exact = knn.build_neighbor_table(v, 10)[0]
    assert recall(exact, f[0]) > recall(exact, o[0]) and (f[1] >= o[1]).all()


def test_reused_rows_can_be_every_row():
    # fewer rows than the recall sample: the trial searched them all, the table searches nothing more
    v = clustered(150, 8, 5, 0.5, 2)
    kept = {}
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=6), k=5, table=True, searched=kept)
    assert np.array_equal(kept["rows"].rows, np.arange(150))
    st_a, st_b = {}, {}
    a = ivf.neighbor_table(v, 5, idx, stats=st_a)
    b = ivf.neighbor_table(v, 5, idx, stats=st_b, searched=kept["rows"])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and st_a == st_b
    st_a, st_b = {}, {}
    a = ivf.neighbor_table(v, 5, idx, stats=st_a, symmetric=False)
    b = ivf.neighbor_table(v, 5, idx, stats=st_b, searched=kept["rows"], symmetric=False)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and st_a == st_b


@settings(max_examples=40, deadline=None)
@given(V=st.integers(2, 120), D=st.integers(0, 6), k=st.integers(1, 12), nlist=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_property_a_symmetric_search_is_the_best_of_both_directions(V, D, k, nlist, seed, data):
    """search(symmetric=True) of every row: row q's result is the first k, in the exact order
    (score descending, row ascending), of the rows of q's probed lists and of the rows x whose
    probed lists include q's list (every list for a row the search widened: zero, or its lists
    hold fewer than k + 1 rows), q itself left out; ids and score bits, ties, duplicates and zero
    rows included. Threads and chunks change nothing, and no row is worse than its one-way search."""
    _, v, k, idx = _random_case(V, max(D, 1), k, nlist, seed)
    if D == 0:
        v = np.zeros((V, 0), np.float32)
        idx = ivf.build_ivf(v, ivf.IVFParams(nlist=nlist, nprobe=1))
    else:
        v[data.draw(st.lists(st.integers(0, V - 1), max_size=3))] = 0.0
    inv = knn.inverse_norms(v)
    nl = idx.centroids.shape[0]
    P = data.draw(st.integers(1, nl))
    rows = np.arange(V, dtype=np.int64)
    st1 = {}
    s1, i1 = ivf.search(idx, v, inv, v, k, nprobe=P, exclude_self=rows, symmetric=True, stats=st1)
    s0, i0 = ivf.search(idx, v, inv, v, k, nprobe=P, exclude_self=rows)
    cent = np.ascontiguousarray(idx.centroids)
    probes = knn.topk_batch(cent, knn.inverse_norms(cent), v, P)[1].reshape(V, P)
    sizes = np.diff(idx.offsets)
    widened = (inv == 0) | (sizes[probes].sum(axis=1) < min(k + 1, V))
    lists = np.zeros((V, nl), bool)
    lists[np.repeat(rows, P), probes.ravel()] = True
    lists[widened] = True
    own = np.empty(V, np.int64)
    for lst in range(nl):
        own[idx.rows[idx.offsets[lst]:idx.offsets[lst + 1]]] = lst
    s_x, i_x = ivf.search(idx, v, inv, v, V - 1, nprobe=nl, exclude_self=rows)
    for q in range(V):
        cand = lists[q, own] | lists[:, own[q]]   # q scans x's list, or x scans q's list
        keep = [j for j in range(V - 1) if i_x[q, j] >= 0 and cand[i_x[q, j]]][:k]
        want_i = np.full(k, -1, np.int64)
        want_s = np.full(k, -np.inf, np.float32)
        want_i[:len(keep)], want_s[:len(keep)] = i_x[q, keep], s_x[q, keep]
        assert np.array_equal(i1[q], want_i), (q, i1[q], want_i)
        assert np.array_equal(s1[q].view(np.uint32), want_s.view(np.uint32))
        assert (s1[q] >= s0[q]).all()
    assert st1["symmetric_entries"] == sum(len(set(a[a >= 0]) - set(b[b >= 0])) for a, b in zip(i1, i0))
    st0 = {}
    ivf.search(idx, v, inv, v, k, nprobe=P, exclude_self=rows, stats=st0)
    assert st1["pairs_scored"] == st0["pairs_scored"]   # the same pairs, offered both ways
    s2, i2 = ivf.search(idx, v, inv, v, k, nprobe=P, exclude_self=rows, symmetric=True, n_threads=2,
                        chunk=data.draw(st.integers(1, V)), q_block=data.draw(st.integers(1, 9)))
    assert np.array_equal(i1, i2) and np.array_equal(s1.view(np.uint32), s2.view(np.uint32))
    # a subset of the rows as queries: only the query rows offer and receive
    sub = np.unique(np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=V)), np.int64))
    s3, i3 = ivf.search(idx, v, inv, v[sub], k, nprobe=P, exclude_self=sub, symmetric=True)
    pos = {int(r): t for t, r in enumerate(sub)}
    for t, q in enumerate(sub):
        cand = lists[q, own] | (lists[:, own[q]] & np.isin(rows, sub))
        keep = [j for j in range(V - 1) if i_x[q, j] >= 0 and cand[i_x[q, j]]][:k]
        assert i3[t][i3[t] >= 0].tolist() == i_x[q, keep].tolist() and pos[int(q)] == t


def test_own_list_floors_are_the_kth_best_of_the_other_rows_of_the_list():
    v = clustered(500, 8, 6, 0.4, 9)
    v[3] = 0.0
    v[10] = v[11]
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=12, nprobe=2))
    rows, off = np.ascontiguousarray(idx.rows, np.int64), np.ascontiguousarray(idx.offsets, np.int64)
    packed = ivf.pack_lists(idx, v, inv)
    k = 7
    got = ivf._own_floors(packed, v, inv, rows, off, k, 2)
    s_x, i_x = knn.topk_batch(v, inv, v, 499, exclude_self=np.arange(500))
    for lst in range(12):
        members = set(rows[off[lst]:off[lst + 1]].tolist())
        for x in members:
            mine = [sv for sv, z in zip(s_x[x], i_x[x]) if z in members]   # exact order, self excluded
            want = mine[k - 1] if len(mine) >= k else -np.inf
            assert np.float32(want).view(np.uint32) == got[x].view(np.uint32), (x, want, got[x])


def test_symmetric_search_refuses_lists_that_are_not_the_assignment():
    # the own-list floors assume each row's list is its best centroid's (what build_ivf and
    # assign_lists make): a row moved to another list fails loudly instead of losing neighbours
    v = clustered(400, 8, 6, 0.4, 7)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=8, nprobe=2))
    rows = np.arange(400)
    a = ivf.search(idx, v, inv, v, 5, nprobe=2, exclude_self=rows, symmetric=True)
    assert (a[1] >= 0).all()
    moved = idx.rows.copy()
    o = idx.offsets
    l_big = int(np.argmax(np.diff(o)))
    l_far = int(np.argmin(idx.centroids @ idx.centroids[l_big]))   # the list least like it
    i, j = o[l_big], o[l_far]   # swap one row of each (lists stay ascending only by luck: sort them)
    moved[i], moved[j] = moved[j], moved[i]
    for lst in (l_big, l_far):
        moved[o[lst]:o[lst + 1]] = np.sort(moved[o[lst]:o[lst + 1]])
    bad = ivf.IVFIndex(idx.centroids, idx.offsets, moved, idx.info)
    with pytest.raises(ValueError, match="do not probe their own row's list"):
        ivf.search(bad, v, inv, v, 5, nprobe=1, exclude_self=rows, symmetric=True)
    ivf.search(bad, v, inv, v, 5, nprobe=1, exclude_self=rows)   # the one-way search has no floors


def test_symmetric_search_argument_errors():
    v = clustered(300, 8, 6, 0.4, 5)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=8, nprobe=2))
    rows = np.arange(300)
    for kw, msg in ((dict(queries=v, exclude_self=None), "distinct row"),
                    (dict(queries=v[:2], exclude_self=np.array([0, 0])), "distinct row"),
                    (dict(queries=v[:2], exclude_self=np.array([0, -1])), "distinct row"),
                    (dict(queries=v[:2] + 1, exclude_self=np.array([0, 1])), "distinct row"),
                    (dict(queries=v, exclude_self=rows, probe_from=1), "probe_from")):
        with pytest.raises(ValueError, match=msg):
            ivf.search(idx, v, inv, k=5, nprobe=3, symmetric=True, **kw)


@settings(max_examples=30, deadline=None)
@given(V=st.integers(2, 120), D=st.integers(0, 6), k=st.integers(1, 12), nlist=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_property_a_continued_search_merged_is_the_search_at_the_larger_nprobe(V, D, k, nlist, seed, data):
    """search(nprobe=P2, probe_from=P) scans only the lists ranked P+1..P2 (nothing for queries the
    search at P widened to every list); merged into the search at P it gives the search at P2, ids
    and score bits, ties and zero rows included -- except for the queries the search at P widened:
    those keep its exact result (the search at P2 may not widen them, so it can be worse). Merging
    into a refined table keeps each row once."""
    _, v, k, idx = _random_case(V, max(D, 1), k, nlist, seed)
    if D == 0:
        v = np.zeros((V, 0), np.float32)
        idx = ivf.build_ivf(v, ivf.IVFParams(nlist=nlist, nprobe=1))
    inv = knn.inverse_norms(v)
    nl = idx.centroids.shape[0]
    P = data.draw(st.integers(1, nl))
    P2 = data.draw(st.integers(P, nl))
    rows = np.arange(V, dtype=np.int64)
    s1, i1 = ivf.search(idx, v, inv, v, k, nprobe=P, exclude_self=rows)
    st2 = {}
    s_c, i_c = ivf.search(idx, v, inv, v, k, nprobe=P2, probe_from=P, exclude_self=rows, stats=st2)
    s2, i2 = ivf.search(idx, v, inv, v, k, nprobe=P2, exclude_self=rows)
    nb, sc = i1.astype(np.int32), s1.copy()
    ivf.merge_rows(nb, sc, rows, s_c, i_c)
    # the queries the search at P widened: zero, or their P best lists hold fewer than k + 1 rows
    cent = np.ascontiguousarray(idx.centroids)
    probes = knn.topk_batch(cent, knn.inverse_norms(cent), v, P)[1]
    widened = (inv == 0) | (np.diff(idx.offsets)[probes].sum(axis=1) < min(k + 1, V))
    s_x, i_x = ivf.search(idx, v, inv, v, k, nprobe=nl, exclude_self=rows)
    want_i, want_s = np.where(widened[:, None], i_x, i2), np.where(widened[:, None], s_x, s2)
    assert np.array_equal(nb, want_i) and np.array_equal(sc.view(np.uint32), want_s.view(np.uint32))
    if P2 == P:
        assert st2["pairs_scored"] == 0 and (i_c == -1).all()
    # merging a search into a table that already holds some of its rows takes them once
    nb_r, sc_r = ivf.refine_table(v, inv, i1.astype(np.int32), s1, rounds=1)
    ivf.merge_rows(nb_r, sc_r, rows, s2, i2)
    for x in range(V):
        got = nb_r[x][nb_r[x] >= 0]
        assert len(set(got.tolist())) == got.size
        pairs = list(zip((-sc_r[x][nb_r[x] >= 0]).tolist(), got.tolist()))
        assert pairs == sorted(pairs)
        assert (sc_r[x] >= s2[x]).all()


def test_merge_rows_checks_its_arguments():
    nb = np.full((3, 2), -1, np.int32)
    sc = np.full((3, 2), -np.inf, np.float32)
    with pytest.raises(ValueError, match="s2/i2"):
        ivf.merge_rows(nb, sc, [0], np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="rows"):
        ivf.merge_rows(nb, sc, [3], np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="writable"):
        ivf.merge_rows(nb.astype(np.int64), sc, [0], np.zeros((1, 2), np.float32), np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match="probe_from"):
        v = clustered(50, 4, 3, 0.3, 1)
        idx = ivf.build_ivf(v, ivf.IVFParams(nlist=5, nprobe=2))
        ivf.search(idx, v, knn.inverse_norms(v), v, 3, nprobe=2, probe_from=3)


def _weak_table(V=6000, nlist=120, P=2, seed=3):
    v = clustered(V, 16, 30, 0.45, seed)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=nlist, nprobe=P, seed=1))
    nb, sc = ivf.neighbor_table(v, 10, idx, refine_rounds=1, symmetric=False)  # a weak start on purpose
    return v, inv, idx, nb, sc


def test_reprobe_searches_the_weakest_rows_again_until_the_sampled_recall_reaches_the_target():
    v, inv, idx, nb, sc = _weak_table()
    V = v.shape[0]
    p = ivf.IVFParams(recall_sample=500, target_recall=0.995, reprobe_max=0.6, reprobe_step=0.1, reprobe_factor=4)
    ref = ivf.recall_reference(v, inv, 10, p)
    before = ivf.sampled_recall(ref[1], nb[ref[0]])
    assert before < 0.995                      # the case needs reprobing
    stats, said = {}, []
    nb2, sc2 = ivf.reprobe_table(v, inv, idx, nb, sc, ref, nprobe=2, params=p, stats=stats, progress=said.append)
    trials = stats["reprobe_trials"]
    assert stats["reprobe_nprobe"] == 8 and len(said) == len(trials) >= 1 and stats["reprobe_pairs"] > 0
    assert [t["rows"] for t in trials] == [min(V * 6 // 10, (i + 1) * V // 10) for i in range(len(trials))]
    assert all(a["recall"] <= b["recall"] for a, b in zip(trials, trials[1:]))
    # it stopped at the first step that reached the target, or at reprobe_max
    assert all(t["recall"] < 0.995 for t in trials[:-1])
    assert trials[-1]["recall"] >= 0.995 or trials[-1]["rows"] == V * 6 // 10
    assert trials[-1]["recall"] == ivf.sampled_recall(ref[1], nb2[ref[0]]) > before
    # exactly the weakest rows changed, each to the top-k of its old list and its lists 3..8
    weakest = np.lexsort((np.arange(V), sc[:, -1]))[:stats["reprobe_rows"]]
    untouched = np.setdiff1d(np.arange(V), weakest)
    assert np.array_equal(nb2[untouched], nb[untouched]) and np.array_equal(sc2[untouched], sc[untouched])
    s_w, i_w = ivf.search(idx, v, inv, v[np.sort(weakest)], 10, nprobe=8, exclude_self=np.sort(weakest))
    want_nb, want_sc = nb.copy(), sc.copy()
    ivf.merge_rows(want_nb, want_sc, np.sort(weakest), s_w, i_w)
    assert np.array_equal(nb2, want_nb) and np.array_equal(sc2, want_sc)
    assert nb[0, 0] == ivf.neighbor_table(v, 10, idx, refine_rounds=1)[0][0, 0]   # the input is untouched


def test_reprobe_does_nothing_when_reached_disabled_or_exact():
    v, inv, idx, nb, sc = _weak_table(V=3000, nlist=60)
    ref = ivf.recall_reference(v, inv, 10, ivf.IVFParams(recall_sample=300))
    r = ivf.sampled_recall(ref[1], nb[ref[0]])
    for p, P in ((ivf.IVFParams(recall_sample=300, target_recall=r), 2),
                 (ivf.IVFParams(recall_sample=300, target_recall=1.0, reprobe_max=0.0), 2),
                 (ivf.IVFParams(recall_sample=300, target_recall=1.0), 60)):
        stats = {}
        nb2, sc2 = ivf.reprobe_table(v, inv, idx, nb, sc, ref, nprobe=P, params=p, stats=stats)
        assert stats["reprobe_rows"] == 0 and stats["reprobe_trials"] == [] and np.array_equal(nb2, nb)
    for bad in ({"reprobe_max": 1.5}, {"reprobe_step": 0.0}, {"reprobe_factor": 1}, {"reprobe_max": True},
                {"reprobe_base": 0.0}, {"reprobe_base": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ivf.IVFParams(**bad)


def _expand_reference(v, inv, table, queries, rows, width, K):
    """The K best of each query's rows and the table rows of its first ``width`` ones, by the
    exact full ranking (topk_batch over every row, the same arithmetic and total order)."""
    fs, fr = knn.topk_batch(v, inv, queries, v.shape[0])
    out_s = np.full((queries.shape[0], K), -np.inf, np.float32)
    out_r = np.full((queries.shape[0], K), -1, np.int64)
    for i in range(queries.shape[0]):
        cand = {int(y) for y in rows[i] if y >= 0}
        for y in rows[i][:width]:
            if y >= 0:
                cand |= {int(z) for z in table[y] if z >= 0}
        keep = [j for j in range(fr.shape[1]) if fr[i, j] in cand][:K]
        out_r[i, :len(keep)] = fr[i, keep]
        out_s[i, :len(keep)] = fs[i, keep]
    return out_s, out_r


@settings(max_examples=30, deadline=None)
@given(V=st.integers(2, 80), D=st.integers(1, 6), K=st.integers(1, 10), kt=st.integers(0, 6),
       width=st.integers(0, 12), nlist=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_property_expansion_is_the_best_of_the_candidates_and_the_table_rows(V, D, K, kt, width, nlist, seed):
    """expand() = the K best of a query's rows and the table rows of its first `width` ones, ids and
    score bits (ties, duplicate and zero rows, padding in both inputs), whatever the threads and
    chunks; no slot gets worse; a table with padding rows is allowed."""
    rng, v, _, idx = _random_case(V, D, 1, nlist, seed)
    v[rng.random(V) < 0.1] = 0
    inv = knn.inverse_norms(v)
    queries = np.concatenate([v[rng.integers(0, V, 5)], rng.standard_normal((4, D)).astype(np.float32),
                              np.zeros((1, D), np.float32)])
    s, r = ivf.search(idx, v, inv, queries, min(K, V), nprobe=1)
    table = rng.integers(-1, V, (V, kt)).astype(np.int32)
    want_s, want_r = _expand_reference(v, inv, table, queries, r, width, r.shape[1])
    st1 = {}
    got_s, got_r = ivf.expand(v, inv, table, queries, s, r, width=width, rounds=1, stats=st1, n_threads=2, chunk=3)
    assert np.array_equal(got_r, want_r) and np.array_equal(got_s.view(np.uint32), want_s.view(np.uint32))
    assert (got_s >= s).all()
    one_s, one_r = ivf.expand(v, inv, table, queries, s, r, width=width, rounds=1, n_threads=1)
    assert np.array_equal(one_r, got_r) and np.array_equal(one_s.view(np.uint32), got_s.view(np.uint32))
    # a second round expands the first round's result
    two_s, two_r = ivf.expand(v, inv, table, queries, s, r, width=width, rounds=2)
    ref2 = _expand_reference(v, inv, table, queries, got_r, width, r.shape[1])
    assert np.array_equal(two_r, ref2[1]) and np.array_equal(two_s.view(np.uint32), ref2[0].view(np.uint32))
    # a row already among the candidates is not scored again
    assert st1["expand_scored"] <= queries.shape[0] * min(width, r.shape[1]) * kt


def test_expansion_degenerate_cases_and_arguments():
    v = clustered(200, 6, 5, 0.4, 3)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=10, nprobe=1))
    s, r = ivf.search(idx, v, inv, v[:20], 5)
    table = knn.build_neighbor_table(v, 4)[0]
    for kw in ({"rounds": 0}, {"width": 0}):
        st0 = {}
        s0, r0 = ivf.expand(v, inv, table, v[:20], s, r, stats=st0, **kw)
        assert np.array_equal(s0, s) and np.array_equal(r0, r) and st0["expand_scored"] == 0
    s0, r0 = ivf.expand(v, inv, table[:, :0], v[:20], s, r)  # a table with no columns
    assert np.array_equal(r0, r)
    s0, r0 = ivf.expand(v, inv, table, v[:0], s[:0], r[:0])
    assert s0.shape == (0, 5)
    with pytest.raises(ValueError, match="table"):
        ivf.expand(v, inv, table[:10], v[:20], s, r)
    with pytest.raises(ValueError, match="queries/scores/rows"):
        ivf.expand(v, inv, table, v[:19], s, r)
    with pytest.raises(ValueError, match="width"):
        ivf.expand(v, inv, table, v[:20], s, r, width=-1)
    with pytest.raises(ValueError, match="rounds"):
        ivf.expand(v, inv, table, v[:20], s, r, rounds=True)


def test_expansion_through_the_exact_table_raises_the_recall_of_a_poor_search():
    # 1 list of 40 probed: the exact table's rows of the rows found bring most of the rest
    v = clustered(4000, 16, 40, 0.6, seed=4)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=40, nprobe=1, seed=1))
    rng = np.random.default_rng(1)
    q = v[rng.integers(0, 4000, 300)] + 0.3 * rng.standard_normal((300, 16)).astype(np.float32)
    exact = knn.topk_batch(v, inv, q, 20)[1]
    s, r = ivf.search(idx, v, inv, q, 20)
    table = knn.build_neighbor_table(v, 20)[0]
    s1, r1 = ivf.expand(v, inv, table, q, s, r)
    before, after = recall(exact, r), recall(exact, r1)
    assert before < 0.9 and after > before + 0.05 and after >= 0.95


def test_bulk_topk_with_a_table_expands_at_the_base_nprobe(tmp_path):
    v = _model(tmp_path / "m", V=3000, D=8)
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--k", "10", "--ivf-nlist", "60", "--quiet"])
    assert args.func(args) == 0
    m = load_model(tmp_path / "m")
    p = replace(ivf.DEFAULTS, nlist=60)
    inv = knn.inverse_norms(v)
    q = v[:50] + 0.1
    with_table = ivf.BulkTopK(m.vectors, "ivf", p, model_dir=tmp_path / "m", table=m.neighbors)
    info = with_table.info()
    assert info["nprobe"] == ivf.default_nprobe(60) and info["nprobe_source"] == "base (table expansion)"
    assert info["ivf_source"] == "loaded from the model directory, the base nprobe (table expansion)"
    assert info["expand_rounds"] == 1 and info["expand_width"] == 20 and info["table_k"] == 10
    st1 = {}
    s, r = with_table.topk(q, 15, stats=st1)
    base_s, base_r = ivf.search(with_table.index, v, inv, q, 15, nprobe=ivf.default_nprobe(60))
    want = ivf.expand(v, inv, np.asarray(m.neighbors), q, base_s, base_r)
    assert np.array_equal(r, want[1]) and np.array_equal(s, want[0]) and st1["expand_scored"] > 0
    with pytest.raises(ValueError, match="exclude_self"):
        with_table.topk(v[:5], 5, exclude_self=np.arange(5))
    # built in memory (no files match): the same base nprobe, and the same lists
    mem = ivf.BulkTopK(m.vectors, "ivf", p, table=m.neighbors)
    assert mem.info()["ivf_source"] == "built in memory, the base nprobe (table expansion)"
    assert np.array_equal(mem.topk(q, 15)[1], r)
    # no expansion: rounds 0, no table, or the exact method
    off = ivf.BulkTopK(m.vectors, "ivf", replace(p, expand_rounds=0), model_dir=tmp_path / "m", table=m.neighbors)
    assert off.table is None and "expand_rounds" not in off.info()
    assert ivf.BulkTopK(m.vectors, "exact", p, table=m.neighbors).table is None
    with pytest.raises(ValueError, match="table: expected int32"):
        ivf.BulkTopK(m.vectors, "ivf", p, table=np.asarray(m.neighbors)[:10])
    with pytest.raises(ValueError, match="expand_width: must be an integer >= 0"):
        replace(p, expand_width=-1)


def test_session_answers_expand_through_the_model_table_and_report_their_recall(tmp_path):
    """otto-eval's session answers with the IVF method and the model's table: searched at the base
    nprobe, expanded, and checked against the exact rule (the service's answer) on a sample."""
    from data_prep.dataset import Dataset
    from eval import recommenders as R
    V = 3000
    v = clustered(V, 16, 30, 0.6, seed=8)
    aids = np.arange(V, dtype=np.int64) * 7 + 1
    save_model(tmp_path / "m", v, v, aids, np.ones(V, np.int64), {})
    args = _parse(["index", str(tmp_path / "m"), "--method", "ivf", "--k", "20", "--ivf-nlist", "40", "--quiet"])
    assert args.func(args) == 0
    model = load_model(tmp_path / "m")
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 6, 400)
    off = np.concatenate([[0], np.cumsum(lens)])
    ev = aids[rng.integers(0, V, off[-1])]
    test = Dataset(np.arange(400, dtype=np.int64), off, ev.astype(np.int32), np.arange(off[-1], dtype=np.int64),
                   rng.integers(0, 3, off[-1]).astype(np.uint8))
    train = Dataset(np.arange(1, dtype=np.int64), np.array([0, 3]), aids[:3].astype(np.int32),
                    np.arange(3, dtype=np.int64), np.zeros(3, np.uint8))
    exact = R.make("w2v-session", answers=R.SessionAnswers("exact")).fit(train, model).predict(test, 20)
    assert "sampled_recall" not in R.make("w2v-session", answers=R.SessionAnswers("exact")).fit(
        train, model).answers.recommend(test, 20, R.DEFAULT_RULE).recall_info()

    def run(p, sample):
        rec = R.make("w2v-session", answers=R.SessionAnswers("ivf", p, recall_sample=sample)).fit(train, model)
        return rec, rec.predict(test, 20)

    auto, _ = run(replace(ivf.DEFAULTS, nlist=40), 10)
    assert auto.info()["nprobe_source"] == "base (table expansion)" and auto.info()["table_k"] == 20
    assert auto.info()["recall_sample"] == 10
    # 2 of 40 lists: the expansion recovers most of what the search misses
    plain, got_plain = run(replace(ivf.DEFAULTS, nlist=40, nprobe=2, expand_rounds=0), 400)
    expanded, got = run(replace(ivf.DEFAULTS, nlist=40, nprobe=2), 400)
    info = expanded.info()
    assert info["nprobe_source"] == "given" and info["expand_rounds"] == 1
    assert info["recall_sample"] == 400 == plain.info()["recall_sample"]
    # the sample is every session here, so the recorded recall is the share of the exact lists' aids
    # kept (before the popular fill, which both share)
    assert info["sampled_recall"] == pytest.approx(recall(exact[0], got[0]), abs=0.02)
    assert plain.info()["sampled_recall"] == pytest.approx(recall(exact[0], got_plain[0]), abs=0.02)
    assert plain.info()["sampled_recall"] < 0.9 and info["sampled_recall"] >= plain.info()["sampled_recall"] + 0.03
    # the report says how the answers were computed and what the check found
    from eval.report import _session_method
    line = _session_method({"w2v-session": {"info": info}})[0]
    assert "IVF, 2 of 40 lists probed, then 1 expansion round(s) through the model's 20-neighbour table" in line
    assert f"sampled recall {info['sampled_recall']:.4f}" in line and "of 400 sessions" in line
    assert _session_method({"blend": {"info": {"w2v": plain.info()}}})[0].startswith("Word2Vec session answers (blend)")
    assert _session_method({"w2v-session": {"info": {"method": "exact"}}}) == []
    # all lists probed: the answers are exact, and the check says so
    full, got_full = run(replace(ivf.DEFAULTS, nlist=40, nprobe=40), 50)
    assert all(np.array_equal(exact[t], got_full[t]) for t in range(3))
    assert full.info()["sampled_recall"] == 1.0 and full.info()["recall_sample"] == 50


def test_a_query_that_excludes_no_row_widens_as_without_exclusions():
    # the batch has exclusions, but query 1 excludes nothing (-1): its lists need k rows, not k + 1
    v = clustered(400, 6, 8, 0.4, 2)
    inv = knn.inverse_norms(v)
    idx = ivf.build_ivf(v, ivf.IVFParams(nlist=20, nprobe=1, seed=1))
    sizes = np.diff(idx.offsets)
    lst = int(np.argmin(np.where(sizes > 1, sizes, 10**9)))
    k = int(sizes[lst])                       # the query's one probed list holds exactly k rows
    q = idx.centroids[lst][None, :].repeat(2, axis=0)
    st_a, st_b = {}, {}
    a = ivf.search(idx, v, inv, q, k, nprobe=1, exclude_self=np.array([0, -1]), stats=st_a)
    b = ivf.search(idx, v, inv, q[1:], k, nprobe=1, stats=st_b)
    assert st_b["queries_widened"] == 0
    assert np.array_equal(a[1][1], b[1][0]) and np.array_equal(a[0][1], b[0][0])
    assert set(a[1][1].tolist()) == set(idx.rows[idx.offsets[lst]:idx.offsets[lst + 1]].tolist())
