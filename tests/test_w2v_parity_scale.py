"""Parity with gensim 4.4 at realistic size: a job-by-job replay (tests/gensim_replay.py) on a
generated OTTO-like corpus of 50,000 sessions (data_prep.synth), D=100, window 10, negative 5,
sample 1e-3, min_count 1, seed 1, ``str`` tokens for gensim.

What holds, and is asserted:
* vocabulary, counts, ``sample_int``, ``cum_table``, initial weights, the job schedule (gensim's own
  ``_job_producer``) and the ``RandomState`` stream are equal, job by job;
* the weights are bit-identical after every job until the first job that contains a *flip*: a dot
  product whose sigmoid-table index (or |f| >= 6 skip) differs between our float32 value and the
  value gensim computes; the replay locates it (pair, term, ours / gensim / exact values) and fails
  if weights ever differ without one;
* the replay's own per-job training is ``Word2Vec.train`` bit for bit;
* held-out recall@20 of both models agrees within 2 standard errors after 1 and 3 epochs (also on
  machines whose BLAS rules the replay out, see ``_models``: there both models are trained
  independently);
* with gensim's dot product substituted (``gensim_replay.gensim_dot_model``: what gensim reads
  from OpenBLAS's ``sdot`` with FAST_VERSION 0), our parity schedule and update reproduce gensim
  bit for bit after every job of a 3-epoch run: the flips, hence the drift, come from the dot
  product alone.

After the first flip the two float32 trajectories drift apart; the size of that drift is measured,
not asserted, by bench/bench_parity.py (docs/ALGORITHM.md section 12 has the figures). 50,000
sessions is the smallest corpus size this oracle is specified for; it already flips in job 0.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("gensim")
pytest.importorskip("scipy")

import gensim_replay as gr  # tests/ is on sys.path
from w2v.config import W2VConfig
from w2v.trainer import Word2Vec

pytestmark = pytest.mark.slow
N_SESSIONS, N_TEST, MAX_PAIRS = 50_000, 3_000, 20_000


@pytest.fixture(scope="module")
def corpus():
    return gr.synth_corpus(N_SESSIONS, N_TEST, seed=0)


@pytest.fixture(scope="module")
def replays(corpus):
    return {}


def _replay(replays, corpus, epochs):
    unfused = gr.saxpy_unfused_lanes(gr.PARAMS["vector_size"])
    if unfused:  # the oracle's premise: gensim's update rounds like ours (see saxpy_unfused_lanes)
        pytest.skip(f"this machine's BLAS saxpy does not fuse lanes {unfused} of {gr.PARAMS['vector_size']}, "
                    "so gensim's updates round differently from the parity mode's there")
    if epochs not in replays:
        replays[epochs] = gr.replay(corpus[0], epochs)
    return replays[epochs]


def _models(replays, corpus, epochs):
    """``(ours, gensim)`` after ``epochs`` epochs: the replay's models, or, where this machine's BLAS
    rules the replay out, both trained independently (``gensim_replay.train_both``; cached)."""
    if not gr.saxpy_unfused_lanes(gr.PARAMS["vector_size"]):
        r = _replay(replays, corpus, epochs)
        return r.ours, r.gensim
    if ("independent", epochs) not in replays:
        replays["independent", epochs] = gr.train_both(corpus[0], epochs)
    return replays["independent", epochs]


def test_bit_identical_until_the_first_flip_which_is_located(corpus, replays):
    r = _replay(replays, corpus, 1)
    f = r.first_flip
    assert r.jobs_per_epoch > 50 and r.raw_words > 700_000
    assert f is not None, "no flip at this size: the oracle has nothing to locate"
    assert r.identical_jobs == f.job  # every job before the flip ended bit-identical
    assert f.decision_ours != f.decision_gensim
    assert f.decision_gensim == gr.decision(f.dot_gensim) and f.decision_ours == gr.decision(f.dot_ours)
    # a genuine rounding case: both float32 values are within float32 error of the exact dot, and a
    # table boundary (or +-6) lies between them
    for v in (f.dot_ours, f.dot_gensim):
        assert abs(v - f.dot_exact) <= 1e-6 * max(1.0, abs(f.dot_exact))
    lo, hi = sorted((f.dot_ours, f.dot_gensim))
    boundaries = [k / 83.0 - 6.0 for k in range(1000)] + [-6.0, 6.0]
    assert any(lo <= b <= hi for b in boundaries)
    assert f.centre_aid in set(corpus[0][f.sentence].tolist())
    assert f.context_aid in set(corpus[0][f.sentence].tolist())


def test_the_replay_is_the_trainer(corpus, replays):
    r = _replay(replays, corpus, 1)
    m = Word2Vec(W2VConfig(mode="parity", workers=1, epochs=1, **gr.PARAMS)).build_vocab_from_sequences(corpus[0])
    m.train(progress=False)
    np.testing.assert_array_equal(m.vectors, r.ours.vectors)
    np.testing.assert_array_equal(m.output, r.ours.output)


@pytest.mark.parametrize("epochs", [1, 3])
def test_heldout_recall_agrees_within_two_standard_errors(corpus, replays, epochs):
    """Runs on every machine: where the replay is ruled out (an unfused BLAS saxpy), both models
    are trained independently, and their held-out recall must still agree."""
    ours, g = _models(replays, corpus, epochs)
    assert ours.epochs_trained == epochs
    row_of = {int(a): i for i, a in enumerate(ours.aids.tolist())}
    q, t = gr.heldout_pairs(corpus[1], row_of, MAX_PAIRS)
    assert q.shape[0] > 5_000
    h_ours = gr.recall_hits(ours.vectors, q, t)
    h_gensim = gr.recall_hits(g.wv.vectors, q, t)
    a = gr.recall_agreement(h_ours, h_gensim)
    assert a["recall_ours"] > 0.05  # the models learned something
    assert a["z"] <= 2.0, a
    assert math.isfinite(a["se"]) and a["se"] > 0


def test_independent_training_of_both_sides_stays_close():
    """``train_both`` (the held-out comparison's models where the replay cannot run) trains both
    sides from the same start on every machine: after 1 epoch of 2,000 sessions they are within
    1e-3 of each other (measured: 2.0e-5; with another seed for ours, 0.88)."""
    sentences, _ = gr.synth_corpus(2_000, 10, seed=0)
    ours, g = gr.train_both(sentences, 1)
    assert ours.epochs_trained == 1 and [str(a) for a in ours.aids.tolist()] == g.wv.index_to_key
    d = gr._diffs(ours, g)
    assert d["vectors_max"] <= 1e-3 and d["output_max"] <= 1e-3, d
    assert np.abs(ours.output).max() > 0  # training moved the output weights (they start at zero)


def test_with_gensims_dot_product_substituted_the_weights_are_bit_identical(corpus):
    """Every job of a 3-epoch run (so also after the 1st and the 3rd full epoch) ends with weights
    bit-identical to gensim's when our update uses gensim's dot product; the replay raises at the
    first job that differs."""
    from gensim.models.word2vec_inner import FAST_VERSION

    if FAST_VERSION != 0:
        pytest.skip(f"gensim FAST_VERSION {FAST_VERSION}: the dot-product model covers FAST_VERSION 0 only")
    if gr.probe_sdot_model() is None:
        pytest.skip("the OpenBLAS sdot model does not reproduce this machine's BLAS pointer (another kernel)")
    r = gr.replay(corpus[0], 3, emulate_gensim_dot=True)
    assert r.jobs_per_epoch > 50
    assert r.identical_jobs == 3 * r.jobs_per_epoch
    assert len(r.epoch_diffs) == 3
    for d in r.epoch_diffs:
        assert d == dict(vectors_max=0.0, vectors_mean=0.0, output_max=0.0, output_mean=0.0)
    np.testing.assert_array_equal(r.ours.vectors, r.gensim.wv.vectors)
    np.testing.assert_array_equal(r.ours.output, r.gensim.syn1neg)
    assert r.ours.epochs_trained == 3


def test_the_sdot_model_port_is_the_model():
    """``gensim_dot_model`` (Numba) equals ``openblas_sdot_model``'s "what gensim reads" value, both
    kernel variants, on lengths around the 32- and 64-term block edges."""
    rng = np.random.default_rng(3)
    acc = np.zeros((2, 8), np.float32)
    for d in [0, 1, 31, 32, 33, 63, 64, 65, 95, 96, 100, 127, 128, 129, 300]:
        for _ in range(20):
            x = (rng.standard_normal(d) * 0.1).astype(np.float32)
            y = rng.standard_normal(d).astype(np.float32)
            for avx512 in (True, False):
                want = float(np.float32(gr.openblas_sdot_model(x, y, avx512)[1]))
                assert float(gr.gensim_dot_model(x, y, acc, avx512)) == want, (d, avx512)
