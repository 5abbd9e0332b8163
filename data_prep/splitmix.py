"""SplitMix64 (Steele, Lea and Flood 2014; Vigna's reference ``splitmix64.c``): the project's one
counter-based mixer of 64-bit integers, used for the generator's random streams
(``data_prep.synth``) and the fast trainer's per-job seeds (``w2v.trainer``).

``state' = state + GOLDEN`` (mod 2^64), ``output = mix64(state')`` with the finaliser
``z ^= z >> 30; z *= M1; z ^= z >> 27; z *= M2; z ^= z >> 31`` (all mod 2^64). ``mix64`` is a
bijection of uint64, so distinct inputs give distinct outputs.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["GOLDEN", "mix64", "splitmix64"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def mix64(z):
    """The SplitMix64 finaliser of one uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _splitmix64_kernel(x, out):
    for i in range(x.shape[0]):
        out[i] = mix64(x[i] + GOLDEN)


def splitmix64(x) -> np.ndarray:
    """One SplitMix64 step from each state of ``x`` (uint64 array, any shape): ``mix64(x + GOLDEN)``."""
    a = np.ascontiguousarray(x, dtype=np.uint64)
    out = np.empty(a.size, np.uint64)
    _splitmix64_kernel(a.ravel(), out)
    return out.reshape(a.shape)
