"""gensim's int-token pitfall: fed Python ``int`` tokens, gensim 4.4 builds a different
negative-sampling table than for the same corpus as ``str`` tokens (and than word2vec.c and we do).

``Word2Vec.make_cum_table`` reads ``wv.get_vecattr(word_index, 'count')`` with a ROW number, and
``KeyedVectors.get_index`` resolves an int first as a KEY: row i gets the count of the word whose
key is the integer i (when there is one). Every parity comparison with gensim therefore feeds it
``str`` tokens; docs/ALGORITHM.md section 12 has the figures at scale.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from w2v.vocab import build_vocab, cum_table

gensim_w2v = pytest.importorskip("gensim.models.word2vec")

CORPUS = [[1, 1, 1, 0], [1, 2, 2], [3, 1, 2], [0, 4, 1], [2, 5, 1]]


def _gensim(tokens):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gensim_w2v.Word2Vec(sg=1, hs=0, vector_size=8, window=2, negative=5, sample=0, min_count=1,
                                workers=1, seed=1)
        g.build_vocab(tokens)
    return g


def test_int_tokens_give_gensim_a_different_cum_table():
    g_str = _gensim([[str(w) for w in s] for s in CORPUS])
    g_int = _gensim(CORPUS)
    vocab = build_vocab(np.array([w for s in CORPUS for w in s]), 1)
    # same vocabulary order and counts either way ...
    assert g_str.wv.index_to_key == [str(a) for a in vocab.aids.tolist()]
    assert g_int.wv.index_to_key == vocab.aids.tolist() == [1, 2, 0, 5, 4, 3]
    assert [g_int.wv.get_vecattr(a, "count") for a in g_int.wv.index_to_key] == vocab.counts.tolist() == [7, 4, 2, 1, 1, 1]
    # ... but only str tokens give the table of the counts in row order (ours, word2vec.c's)
    ours = cum_table(vocab.counts, 0.75)
    np.testing.assert_array_equal(g_str.cum_table, ours)
    assert not np.array_equal(g_int.cum_table, ours)
    # the mechanism: with int tokens row r is weighted by the count of the word whose KEY is r
    count_of_key = {int(a): int(c) for a, c in zip(vocab.aids, vocab.counts)}
    misread = np.array([count_of_key[r] for r in range(len(vocab))], np.int64)
    assert misread.tolist() == [2, 7, 4, 1, 1, 1]
    np.testing.assert_array_equal(g_int.cum_table, cum_table(misread, 0.75))
    # the most frequent word (aid 1, row 0) gets the probability of aid 0 (2 of 16 occurrences)
    p_int = np.diff(np.concatenate(([0], g_int.cum_table.astype(np.int64)))) / float(g_int.cum_table[-1])
    p_str = np.diff(np.concatenate(([0], ours.astype(np.int64)))) / float(ours[-1])
    assert p_int[0] < 0.5 * p_str[0]
