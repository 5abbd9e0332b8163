"""Kernel-level checks: LCG, negative draws, reduced windows, job batching, the SGNS gradient.

What is compared to what:
* LCG: against a pure-Python transcription of the recurrence documented in gensim's
  ``random_int32`` / word2vec.c (gensim's C function is not callable from Python).
* Job batching and learning rates: against gensim's own ``Word2Vec._job_producer``, run on a queue.
* Reduced windows / pair counts / random-number consumption: against a Python replay of the rules.
* The SGNS update: against the analytic gradient checked by central finite differences of an
  independent float64 loss.
"""
from __future__ import annotations

import math
import queue
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from w2v import kernels
from w2v.trainer import job_alphas

M48 = 2**48 - 1
NO_ALIAS = np.zeros(0, np.uint64)


def G(ct):
    """(guide, shift) of a cum table."""
    return kernels.guide_table(ct)


def U(ct, et, negative, window=1, clip=False, loss=False, alias=None, share=False):
    """The Update bundle: negatives from ``ct`` (guide table; alias method when ``alias`` is given)."""
    return kernels.make_update(negative, ct, et, window, clip, loss, alias=alias, share_negatives=share)


W = kernels.Weights


def py_lcg(s):
    return (s * 25214903917 + 11) & M48


@settings(max_examples=100, deadline=None)
@given(state=st.integers(0, M48), n=st.integers(0, 50))
def test_lcg_sequence_matches_recurrence(state, n):
    out = np.zeros(n, np.uint64)
    last = kernels.lcg_sequence(np.uint64(state), n, out)
    ref = []
    s = state
    for _ in range(n):
        s = py_lcg(s)
        ref.append(s)
    assert out.tolist() == ref
    assert int(last) == (ref[-1] if ref else state)


@settings(max_examples=100, deadline=None)
@given(table=st.lists(st.integers(0, 50), min_size=0, max_size=40), x=st.integers(0, 2000))
def test_bisect_left_matches_numpy(table, x):
    t = np.cumsum(np.array(table, dtype=np.uint32)).astype(np.uint32)
    assert kernels.bisect_left(t, np.uint64(x)) == int(np.searchsorted(t, x, side="left"))


@settings(max_examples=150, deadline=None)
@given(table=st.lists(st.integers(0, 2**26), min_size=1, max_size=60),
       xs=st.lists(st.integers(0, 2**31 - 1), max_size=20))
def test_guided_bisect_equals_bisect_left(table, xs):
    t = np.cumsum(np.array(table, dtype=np.int64))
    t = np.minimum(t, 2**31 - 1).astype(np.uint32)
    guide, shift = kernels.guide_table(t)
    xs = xs + [int(v) for v in t] + [int(v) + 1 for v in t if v < 2**31 - 1]
    for x in xs:
        assert kernels.guided_bisect_left(t, guide, shift, np.uint64(x)) == int(np.searchsorted(t, x, side="left"))


def test_exp_table_matches_sigmoid_and_edges():
    tab = kernels.make_exp_table()
    assert tab.dtype == np.float32 and tab.shape == (1000,)
    x = (np.arange(1000) / 1000 * 2 - 1) * 6
    np.testing.assert_allclose(tab, 1 / (1 + np.exp(-x)), atol=1e-7)
    # the lookup maps f to index int((f + 6) * 83), 83 = (1000 / 6) / 2 in gensim's integer C
    # arithmetic (not 1000 / 12 = 83.33): the centre of every bucket i lands on entry i
    for i in range(996):
        assert kernels.sigmoid_lookup(tab, np.float32((i + 0.5) / 83 - 6)) == tab[i], i
    # largest index used below 6 is 995
    assert kernels.sigmoid_lookup(tab, np.float32(0.0)) == tab[498]  # 83.33 would give entry 500
    assert kernels.sigmoid_lookup(tab, np.float32(5.9999)) == tab[995]
    assert kernels.sigmoid_lookup(tab, np.float32(-5.9999)) == tab[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=60), batch_words=st.integers(1, 90),
       epochs=st.integers(1, 3), data=st.data())
def test_jobs_and_alphas_equal_gensim_job_producer(lengths, batch_words, epochs, data):
    gensim_w2v = pytest.importorskip("gensim.models.word2vec")
    cur_epoch = data.draw(st.integers(0, epochs - 1))
    sents = [[str(i)] * n for i, n in enumerate(lengths)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gensim_w2v.Word2Vec(vector_size=4, min_count=1, sg=1, workers=1, batch_words=batch_words,
                                alpha=0.03, min_alpha=0.001)
    g.epochs = epochs
    q = queue.Queue()
    g._job_producer(sents, q, cur_epoch=cur_epoch, total_examples=len(sents))
    jobs = []
    while True:
        item = q.get()
        if item is None:
            break
        jobs.append(item)
    starts = kernels.gensim_jobs(np.array(lengths), batch_words)
    assert len(starts) - 1 == len(jobs)
    got = [sents[starts[j]:starts[j + 1]] for j in range(len(jobs))]
    assert got == [j[0] for j in jobs]  # includes gensim's empty first job when sentence 0 is too long
    alphas = job_alphas(starts, len(sents), cur_epoch, epochs, 0.03, 0.001)
    np.testing.assert_array_equal(alphas, np.array([j[1] for j in jobs], dtype=np.float32))


def test_first_sentence_longer_than_batch_gives_an_empty_job():
    starts = kernels.gensim_jobs(np.array([5, 1, 1]), 3)
    assert starts.tolist() == [0, 0, 1, 3]
    assert kernels.gensim_jobs(np.zeros(0, np.int64), 10).tolist() == [0]


def _setup(V=12, D=6, seed=0):
    rng = np.random.default_rng(seed)
    syn0 = (rng.random((V, D), dtype=np.float32) - 0.5).astype(np.float32)
    syn1 = (rng.random((V, D), dtype=np.float32) - 0.5).astype(np.float32)
    counts = np.arange(V, 0, -1) * 3
    from w2v.vocab import cum_table
    return syn0, syn1, cum_table(counts), kernels.make_exp_table()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=st.lists(st.integers(0, 11), min_size=0, max_size=25), window=st.integers(1, 6),
       negative=st.integers(1, 4), state=st.integers(0, M48), use_alias=st.booleans(), share=st.booleans())
def test_lcg_reduced_windows_pairs_and_draw_order(sent, window, negative, state, use_alias, share):
    syn0, syn1, ct, et = _setup()
    alias = kernels.alias_table(ct) if use_alias else None
    draws_per_negative = 2 if use_alias else 1
    idx = np.array(sent, np.int32)
    work = kernels.make_scratch(syn0.shape[1], 16)
    st_out, loss, pairs = kernels.train_span(W(syn0, syn1), idx, np.zeros(0, np.int64), 0, len(idx), np.uint64(state),
                                             np.float32(0.01), U(ct, et, negative, window, loss=True, alias=alias, share=share), work)
    # replay: per position one window draw b = (s >> 16) % window, then `negative` draws per pair
    # (shared negatives: `negative` draws per position, whatever its number of pairs)
    s, ref_pairs = state, 0
    for i in range(len(idx)):
        b = (s >> 16) % window
        s = py_lcg(s)
        n = min(len(idx), i + window + 1 - b) - max(0, i - window + b) - 1
        assert 0 <= b < window
        ref_pairs += n
        for _ in range((1 if share else n) * negative * draws_per_negative):
            s = py_lcg(s)
    assert pairs == ref_pairs and int(st_out) == s
    assert (pairs == 0) == (loss == 0.0)


def test_parity_windows_come_from_the_given_array():
    syn0, syn1, ct, et = _setup()
    idx = np.arange(10, dtype=np.int32)
    work = kernels.make_scratch(syn0.shape[1], 16)
    reduced = np.full(10, 4, np.int64)  # window 5 - 4 = 1: only immediate neighbours
    _, _, pairs = kernels.train_span(W(syn0, syn1), idx, reduced, 0, 10, np.uint64(1), np.float32(0.01),
                                     U(ct, et, 2, 5), work)
    assert pairs == 18
    _, _, pairs0 = kernels.train_span(W(syn0, syn1), idx, np.zeros(10, np.int64), 0, 10, np.uint64(1),
                                      np.float32(0.01), U(ct, et, 2, 5), work)
    assert pairs0 == sum(min(10, i + 6) - max(0, i - 5) - 1 for i in range(10))


def _negatives(state, negative, ct):
    out, s = [], state
    for _ in range(negative):
        out.append(int(np.searchsorted(ct, (s >> 16) % int(ct[-1]), side="left")))
        s = py_lcg(s)
    return out, s


def _ref_loss(v, U, word, negs):
    """-log s(u_word . v) - sum_n log s(-u_n . v), float64, skipping negatives equal to word."""
    loss = math.log1p(math.exp(-float(U[word] @ v)))
    for n in negs:
        if n != word:
            loss += math.log1p(math.exp(float(U[n] @ v)))
    return loss


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sgns_update_is_minus_alpha_times_finite_difference_gradient(seed):
    syn0, syn1, ct, et = _setup(seed=seed)
    syn0 = syn0.astype(np.float64).astype(np.float32)
    word, word2, negative, state = 3, 7, 4, 123456789 + seed
    alpha = 1e-3
    negs, end_state = _negatives(state, negative, ct)
    v0, U0 = syn0[word2].astype(np.float64), syn1.astype(np.float64)
    s0, s1 = syn0.copy(), syn1.copy()
    work = kernels.make_scratch(syn0.shape[1], 16)
    st_out, loss = kernels.sgns_pair(W(s0, s1), word, word2, np.float32(alpha), U(ct, et, negative, loss=True),
                                     np.uint64(state), work)
    assert int(st_out) == end_state
    # with alpha = 0 nothing moves, so the returned loss is the loss at the starting point
    z0, z1 = syn0.copy(), syn1.copy()
    _, loss0 = kernels.sgns_pair(W(z0, z1), word, word2, np.float32(0.0), U(ct, et, negative, loss=True),
                                 np.uint64(state), work)
    assert loss0 == pytest.approx(_ref_loss(v0, U0, word, negs), abs=1e-5)
    assert loss == pytest.approx(loss0, abs=100 * alpha)  # later terms see rows already updated
    # central finite differences of the reference loss
    h = 1e-6
    grad_v = np.zeros_like(v0)
    for a in range(v0.shape[0]):
        e = np.zeros_like(v0)
        e[a] = h
        grad_v[a] = (_ref_loss(v0 + e, U0, word, negs) - _ref_loss(v0 - e, U0, word, negs)) / (2 * h)
    # the kernel uses the tabulated sigmoid; its error bounds how far the step can be from exact
    xs = np.linspace(-5.999, 5.999, 200001).astype(np.float32)
    tab_err = max(abs(float(kernels.sigmoid_lookup(et, x)) - 1 / (1 + math.exp(-float(x)))) for x in xs[::97])
    step_v = (s0[word2].astype(np.float64) - v0) / alpha
    n_terms = 1 + sum(n != word for n in negs)
    # the step of v uses the output vectors before each of their own updates: exact to O(alpha)
    bound = n_terms * tab_err * np.abs(U0).max() + 50 * alpha
    np.testing.assert_allclose(step_v, -grad_v, atol=bound)
    assert np.abs(step_v + grad_v).max() < 0.05 * np.abs(grad_v).max() + bound
    # output rows: the positive row moves by alpha * (1 - s(f)) * v, not blindly
    grad_u = (1 / (1 + math.exp(-float(U0[word] @ v0))) - 1) * v0
    np.testing.assert_allclose((s1[word] - U0[word]) / alpha, -grad_u, atol=tab_err * np.abs(v0).max() * 2 + 1e-3)
    untouched = [r for r in range(syn1.shape[0]) if r != word and r not in negs]
    np.testing.assert_array_equal(s1[untouched], syn1[untouched])


def test_edge_rule_skip_vs_clip():
    syn0, syn1, ct, et = _setup(V=3, D=2)
    syn0[:] = 10.0
    syn1[:] = 10.0  # every dot = 200 >= 6
    work = kernels.make_scratch(2, 16)
    a0, a1 = syn0.copy(), syn1.copy()
    negs, _ = _negatives(5, 2, ct)
    assert any(n != 2 for n in negs)
    _, loss = kernels.sgns_pair(W(a0, a1), 2, 1, np.float32(0.1), U(ct, et, 2, loss=True), np.uint64(5), work)
    np.testing.assert_array_equal(a0, syn0)  # gensim: skipped
    np.testing.assert_array_equal(a1, syn1)
    assert loss > 100  # the true loss still counts the skipped negative terms (-log s(-200) = 200)
    b0, b1 = syn0.copy(), syn1.copy()
    kernels.sgns_pair(W(b0, b1), 2, 1, np.float32(0.1), U(ct, et, 2, clip=True, loss=True), np.uint64(5), work)
    assert (b0[1] < syn0[1]).all()  # word2vec.c: sigma clipped to 1 for negatives, label 0 -> pushed down


def test_single_word_vocabulary_trains_only_positive_pairs():
    syn0 = np.full((1, 3), 0.1, np.float32)
    syn1 = np.zeros((1, 3), np.float32)
    from w2v.vocab import cum_table
    ct, et = cum_table(np.array([5])), kernels.make_exp_table()
    work = kernels.make_scratch(3, 16)
    _, loss = kernels.sgns_pair(W(syn0, syn1), 0, 0, np.float32(0.5), U(ct, et, 5, loss=True), np.uint64(9), work)
    assert loss == pytest.approx(math.log(2))  # only -log s(0); all 5 negatives were the word itself
    # g = (1 - table[int((0 + 6) * 83)]) * alpha; table[498] = s(-0.024), not s(0): gensim's index quirk
    assert et[498] == pytest.approx(1 / (1 + math.exp(0.024)), abs=1e-7)
    np.testing.assert_allclose(syn1[0], (1 - float(et[498])) * 0.5 * 0.1, rtol=1e-6)


def test_downsample_cap_counts_unexamined_words():
    tokens = np.arange(10, dtype=np.int32)
    s_int = np.full(10, 2**32 - 1, np.uint32)
    out = np.zeros(4, np.int32)
    pos, _, unexamined = kernels.downsample(tokens, 0, 10, kernels.Downsampling(s_int, True), np.uint64(7), out, 0, 4)
    assert pos == 4 and unexamined == 6 and out.tolist() == [0, 1, 2, 3]
    s_zero = np.zeros(10, np.uint32)  # threshold 0 keeps a word only when its draw is 0
    pos, st_out, _ = kernels.downsample(tokens, 0, 10, kernels.Downsampling(s_zero, True), np.uint64(2**40), out, 0, 4)
    assert pos == 0
    s = 2**40
    for _ in range(10):
        s = py_lcg(s)
    assert int(st_out) == s  # one draw per examined word
    offsets = np.array([0, 3, 3, 10], np.int64)
    eff, bounds = np.zeros(5, np.int32), np.zeros(4, np.int64)
    sents = kernels.Sentences(tokens, offsets, 7)
    n, ns, _, dropped = kernels.parity_prepare_job(sents, 0, 3, kernels.Downsampling(s_int, False), np.uint64(1), 5,
                                                   eff, bounds)
    assert (n, ns, dropped) == (5, 3, 5) and bounds[:4].tolist() == [0, 3, 3, 5]


@pytest.mark.parametrize("counts", [[5], [3, 3], [1000, 1, 1, 1], list(range(300, 0, -1)), [7, 1, 50, 2, 2, 9]])
def test_alias_table_has_exactly_the_cum_table_distribution(counts):
    from w2v.vocab import cum_table
    ct = cum_table(np.array(counts), 0.75)
    al = kernels.alias_table(ct)
    V = len(counts)
    thr = (al >> np.uint64(32)).astype(np.float64) / 2**32
    alias = (al & np.uint64(0xFFFFFFFF)).astype(np.int64)
    implied = np.bincount(np.arange(V), weights=thr, minlength=V) + np.bincount(alias, weights=1 - thr, minlength=V)
    implied /= V
    target = np.diff(np.concatenate(([0], ct.astype(np.int64)))) / float(ct[-1])
    np.testing.assert_allclose(implied, target, atol=1e-8)
    assert alias.min() >= 0 and alias.max() < V


def test_alias_draws_follow_the_distribution():
    from w2v.vocab import cum_table
    ct = cum_table(np.array([50, 20, 10, 5, 1]), 1.0)
    al = kernels.alias_table(ct)
    n, s = 40000, np.uint64(12345)
    hits = np.zeros(5)
    for _ in range(n):
        k, s = kernels.draw_negative_from(U(ct, None, 1, alias=al).ns, s)
        hits[k] += 1
    p = np.array([50, 20, 10, 5, 1]) / 86
    z = (hits - n * p) / np.sqrt(n * p * (1 - p))
    assert np.abs(z).max() < 5  # 5 sigma
    for s0 in (12345, 2**47 + 99, 7 << 20):
        expect = int(np.searchsorted(ct, (s0 >> 16) % int(ct[-1])))
        k, s2 = kernels.draw_negative_from(U(ct, None, 1).ns, np.uint64(s0))
        assert k == expect and int(s2) == py_lcg(s0)
        k, s2 = kernels.draw_negative(ct, NO_ALIAS, np.uint64(s0))  # no guide table: plain bisection
        assert k == expect and int(s2) == py_lcg(s0)


def test_jobs_train_identically_however_they_are_grouped_into_calls():
    syn0, syn1, ct, et = _setup(V=12, D=6, seed=9)
    eff = np.array([1, 2, 3, 4, 5, 6, 7, 8, 0, 11, 10, 3, 4, 5], np.int32)
    # job 0: sentences [0, 4), [4, 4), [4, 11); job 1: [0, 3) of its own words eff[11:14]
    bounds = np.array([0, 4, 4, 11, 0, 3], np.int64)
    reduced = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 0, 1], np.int64)
    jobs = kernels.ParityJobs(eff, bounds, np.array([0, 11, 14]), np.array([0, 4]), np.array([3, 1]), reduced,
                              np.array([77, 5], np.uint64), np.array([0.05, 0.04], np.float32))
    upd = U(ct, et, 3, 3, loss=True)
    work = kernels.make_scratch(6, 16)
    a0, a1 = syn0.copy(), syn1.copy()
    l1, p1 = kernels.parity_train_jobs(W(a0, a1), jobs, upd, work)
    b0, b1 = syn0.copy(), syn1.copy()
    l2, p2 = 0.0, 0
    for k in range(2):  # the same jobs, one call each
        one = kernels.ParityJobs(eff[jobs.eff_start[k]:], bounds[jobs.bound_start[k]:], np.array([0, 0]),
                                 np.array([0]), jobs.n_sent[k:k + 1], reduced[jobs.eff_start[k]:],
                                 jobs.state[k:k + 1], jobs.alpha[k:k + 1])
        l, p = kernels.parity_train_jobs(W(b0, b1), one, upd, work)
        l2, p2 = l2 + l, p2 + p
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    assert p1 == p2 and p1 > 0 and l1 == pytest.approx(l2, rel=1e-12)


_FM_CALLER = None


def test_sigmoid_index_is_not_fused_inside_fast_math_callers():
    # (f + 6.0) * 83.0 is 498.0 for f = -1.75 * 2**-52; re-associated and fused (f * 83 + 498, one
    # rounding) it would be 497. The training loops are compiled with fast-math; the lookup is not.
    from numba import njit
    global _FM_CALLER
    if _FM_CALLER is None:
        _FM_CALLER = njit(fastmath=kernels._FM)(lambda tab, f: kernels.sigmoid_lookup(tab, f))
    tab = np.arange(1000, dtype=np.float32)
    f = np.float32(-1.75 * 2.0**-52)
    assert int((float(f) + 6.0) * 83.0) == 498 and int(float(f) * 83.0 + 498.0) == 497
    assert _FM_CALLER(tab, f) == 498.0
    assert kernels.sigmoid_lookup(tab, f) == 498.0
