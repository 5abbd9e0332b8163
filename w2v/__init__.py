"""w2v: skip-gram negative-sampling Word2Vec in Numba, cosine top-k and the neighbour index."""
