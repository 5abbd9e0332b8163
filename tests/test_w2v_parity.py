"""Parity mode against gensim 4.4 itself on small corpora: same corpus, seed and settings, one worker.

Words are given to gensim as ``str(aid)`` (gensim's int-token pitfall: docs/ALGORITHM.md
section 12.1). Tolerance 1e-4 (max abs) on both weight matrices. Every random draw, job boundary,
learning rate, downsampling decision and table lookup is identical; the weights differ only after
a dot product is rounded to the other side of a sigmoid-table boundary (a *flip*: our vectorised
sum vs OpenBLAS ``sdot`` as gensim reads it), and on corpora this small the few flips move the
weights by less than 1e-4. At scale flips are frequent and the trajectories drift apart: that is
measured job by job in tests/test_w2v_parity_scale.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from w2v.config import W2VConfig
from w2v.trainer import Word2Vec

gensim_w2v = pytest.importorskip("gensim.models.word2vec")

TOL = 1e-4


def _corpus(seed=0, n=260):
    rng = np.random.default_rng(seed)
    sents = []
    for _ in range(n):
        L = int(rng.integers(0, 30))
        base = int(rng.integers(0, 60))
        sents.append([int(x) for x in (base + rng.zipf(1.6, L)) % 400])
    sents[3] = [17]  # length-1 session
    return sents


def _pair(sents, epochs, **kw):
    params = dict(vector_size=20, window=4, negative=5, sample=1e-3, min_count=2, seed=7, alpha=0.025,
                  min_alpha=0.0001, batch_words=600, ns_exponent=0.75)
    params.update(kw)
    ours = Word2Vec(W2VConfig(mode="parity", workers=1, epochs=epochs, **params)).build_vocab_from_sequences(sents)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gensim_w2v.Word2Vec(sg=1, hs=0, workers=1, epochs=epochs, **params)
        gs = [[str(w) for w in s] for s in sents]
        g.build_vocab(gs)
    assert [str(a) for a in ours.aids] == g.wv.index_to_key
    return ours, g, gs


def _assert_close(ours, g):
    assert np.abs(ours.vectors - g.wv.vectors).max() <= TOL
    assert np.abs(ours.output - g.syn1neg).max() <= TOL
    # and training did move the weights far more than the tolerance
    assert np.abs(ours.output).max() > 100 * TOL


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 3])
def test_parity_with_gensim(epochs):
    ours, g, gs = _pair(_corpus(), epochs)
    np.testing.assert_array_equal(ours.vectors, g.wv.vectors)  # same initial weights, bit for bit
    ours.train(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.train(gs, total_examples=g.corpus_count, epochs=epochs)
    _assert_close(ours, g)
    assert len(ours.epoch_losses) == epochs and all(np.isfinite(ours.epoch_losses))


@pytest.mark.slow
def test_parity_from_explicit_initial_weights_and_other_settings():
    sents = _corpus(seed=1)
    ours, g, gs = _pair(sents, 2, window=7, negative=3, sample=0.0, ns_exponent=0.5, min_count=1, seed=11)
    rng = np.random.default_rng(5)
    v0 = (rng.standard_normal(g.wv.vectors.shape) * 0.05).astype(np.float32)
    u0 = (rng.standard_normal(g.syn1neg.shape) * 0.05).astype(np.float32)
    g.wv.vectors[:] = v0
    g.syn1neg[:] = u0
    ours.set_weights(v0, u0)
    ours.train(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.train(gs, total_examples=g.corpus_count, epochs=2)
    _assert_close(ours, g)


@pytest.mark.slow
def test_parity_empty_first_job_and_gensim_job_cap():
    # the first sentence is longer than batch_words (gensim pushes an empty job first) and longer
    # than gensim's 10,000-word per-job cap (gensim silently ignores the rest; we count it)
    rng = np.random.default_rng(3)
    long = [int(x) for x in rng.integers(0, 40, 10_050)]
    sents = [long] + [[int(x) for x in rng.integers(0, 40, 12)] for _ in range(30)]
    ours, g, gs = _pair(sents, 1, vector_size=8, window=2, negative=2, sample=0.0, min_count=1, batch_words=300)
    ours.train(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.train(gs, total_examples=g.corpus_count, epochs=1)
    _assert_close(ours, g)
    assert ours.history[-1]["dropped_by_job_cap"] == 50
    assert ours.meta()["dropped"]["by_parity_job_cap"] == 50


@pytest.mark.slow
def test_continued_training_through_save_and_load_matches_gensim(tmp_path):
    sents = _corpus(seed=2, n=150)
    ours, g, gs = _pair(sents, 1)
    ours.train(progress=False)
    ours.save(tmp_path / "m")
    again = Word2Vec.load(tmp_path / "m").set_corpus_from_sequences(sents)
    again.train(epochs=1, progress=False)
    ours.train(epochs=1, progress=False)  # in memory, same second call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.train(gs, total_examples=g.corpus_count, epochs=1)
        g.train(gs, total_examples=g.corpus_count, epochs=1)
    np.testing.assert_array_equal(again.vectors, ours.vectors)
    np.testing.assert_array_equal(again.output, ours.output)
    assert again.epochs_trained == 2 and len(again.epoch_losses) == 2
    _assert_close(again, g)


def test_parity_mode_is_deterministic_for_a_seed():
    sents = _corpus(seed=4, n=120)
    cfg = W2VConfig(mode="parity", vector_size=12, min_count=1, epochs=2, seed=9, workers=2)
    a = Word2Vec(cfg).build_vocab_from_sequences(sents)
    b = Word2Vec(cfg).build_vocab_from_sequences(sents)
    a.train(progress=False)
    b.train(progress=False)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.output, b.output)
    assert a.epoch_losses == b.epoch_losses
    c = Word2Vec(W2VConfig(mode="parity", vector_size=12, min_count=1, epochs=2, seed=10))
    c.build_vocab_from_sequences(sents)
    c.train(progress=False)
    assert not np.array_equal(a.vectors, c.vectors)
