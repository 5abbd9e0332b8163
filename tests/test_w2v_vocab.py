"""Vocabulary order, downsampling thresholds and the negative-sampling table against gensim 4.4.

gensim is the oracle: it builds its vocabulary from the same sentences (as ``str`` tokens, so no
integer key can be mistaken for a row index) and we compare its own arrays to ours exactly.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from w2v.corpus import map_to_vocab, sentences_from_sequences
from w2v.vocab import build_vocab, cum_table, sample_ints

gensim_w2v = pytest.importorskip("gensim.models.word2vec")

sentences_st = st.lists(st.lists(st.integers(0, 40), min_size=0, max_size=25), min_size=1, max_size=40)


def _gensim_vocab(sentences, min_count, sample, ns_exponent):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gensim_w2v.Word2Vec(vector_size=4, min_count=min_count, sample=sample, ns_exponent=ns_exponent,
                                sg=1, workers=1, seed=1)
        g.build_vocab([[str(w) for w in s] for s in sentences])
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentences=sentences_st, min_count=st.integers(1, 4),
       sample=st.sampled_from([0.0, 1e-5, 1e-3, 0.05, 0.3, 1.0, 3.0]),
       ns_exponent=st.sampled_from([0.0, 0.5, 0.75, 1.0, -0.5]))
def test_vocab_sample_int_cum_table_equal_gensim(sentences, min_count, sample, ns_exponent):
    flat = np.array([w for s in sentences for w in s], dtype=np.int64)
    vocab = build_vocab(flat, min_count)
    if len(vocab) == 0:
        return  # gensim refuses an empty vocabulary at training time; nothing to compare
    g = _gensim_vocab(sentences, min_count, sample, ns_exponent)
    assert [str(a) for a in vocab.aids] == g.wv.index_to_key
    np.testing.assert_array_equal(vocab.counts, g.wv.expandos["count"])
    s_int, _ = sample_ints(vocab.counts, sample)
    np.testing.assert_array_equal(s_int, g.wv.expandos["sample_int"])
    np.testing.assert_array_equal(cum_table(vocab.counts, ns_exponent), g.cum_table)


def test_tie_rule_is_reverse_first_appearance():
    # all counts tie: gensim's lexsort((-index, -count)) puts the LAST first-seen word first
    vocab = build_vocab(np.array([7, 3, 9, 3, 7, 9]), 1)
    assert vocab.aids.tolist() == [9, 3, 7]
    g = _gensim_vocab([[7, 3, 9, 3, 7, 9]], 1, 1e-3, 0.75)
    assert g.wv.index_to_key == ["9", "3", "7"]
    # a higher count still wins
    assert build_vocab(np.array([1, 2, 2, 3]), 1).aids.tolist() == [2, 3, 1]


def test_min_count_pruning_counts_what_it_drops():
    vocab = build_vocab(np.array([5, 5, 5, 6, 6, 7]), 2)
    assert vocab.aids.tolist() == [5, 6]
    assert vocab.stats == dict(raw_unique=3, raw_total=6, dropped_unique=1, dropped_total=1)
    empty = build_vocab(np.zeros(0, np.int64), 1)
    assert len(empty) == 0 and empty.stats["raw_total"] == 0
    with pytest.raises(ValueError, match="min_count"):
        build_vocab(np.array([1]), 0)


def test_cum_table_degenerate_cases():
    assert cum_table(np.array([4])).tolist() == [2**31 - 1]  # one word takes the whole domain
    assert cum_table(np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="counts"):
        cum_table(np.array([3, 0]))
    # ns_exponent 0: uniform over words regardless of counts
    t = cum_table(np.array([1000, 1, 1, 1]), 0.0)
    # cum = round(k/4 * (2**31 - 1)): 536870911.75 -> ...912, 1073741823.5 -> ...824 (half to even),
    # 1610612735.25 -> ...735
    assert t.tolist() == [536870912, 1073741824, 1610612735, 2147483647]


def test_sample_int_never_drops_rare_words_and_zero_disables():
    counts = np.array([10_000, 100, 1])
    s, stats = sample_ints(counts, 1e-3)
    assert s[-1] == 2**32 - 1 and s[0] < 2**32 - 1
    assert stats["downsample_unique"] >= 1
    s0, stats0 = sample_ints(counts, 0.0)
    assert (s0 == 2**32 - 1).all() and stats0["downsample_unique"] == 0


def test_map_to_vocab_drops_oov_but_keeps_raw_lengths():
    sents = sentences_from_sequences([[1, 2, 3], [], [4, 4], [2]])
    corpus = map_to_vocab(sents, np.array([2, 4]))
    assert corpus.tokens.tolist() == [0, 1, 1, 0]
    assert corpus.offsets.tolist() == [0, 1, 1, 3, 4]
    assert corpus.raw_lengths.tolist() == [3, 0, 2, 1]
    assert corpus.stats["oov_words"] == 2
    none = map_to_vocab(sents, np.zeros(0, np.int64))
    assert none.tokens.shape == (0,) and none.offsets.tolist() == [0, 0, 0, 0, 0]


@settings(max_examples=30, deadline=None)
@given(words=st.lists(st.integers(0, 30), min_size=1, max_size=80), min_count=st.integers(1, 3))
def test_dense_and_sparse_id_paths_agree(words, min_count):
    # small ids take the counting path, ids beyond the lookup-table limit the sorting path
    w = np.array(words, dtype=np.int64)
    shift = 2**40
    dense, sparse = build_vocab(w, min_count), build_vocab(w + shift, min_count)
    np.testing.assert_array_equal(dense.aids + shift, sparse.aids)
    np.testing.assert_array_equal(dense.counts, sparse.counts)
    assert dense.stats == sparse.stats
    a = map_to_vocab(sentences_from_sequences([words[:5], words[5:]]), dense.aids)
    b = map_to_vocab(sentences_from_sequences([w[:5] + shift, w[5:] + shift]), sparse.aids)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.offsets, b.offsets)
