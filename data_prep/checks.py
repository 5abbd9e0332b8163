"""Value checks of loaded arrays: one pass each, no temporary arrays, first offender reported.

The formats (``data_prep.dataset``, ``w2v.model_io``) call these on memory-mapped arrays at load
time, so the cost is one sequential read of the checked files (about memory bandwidth when the
pages are cached; measured figures in docs/FORMATS.md, "Validation on load"). Each kernel
returns the position of the first element breaking its rule, or -1, and the caller turns that
position into a one-line error naming the file, the row and the value.

Kernels take 1-d arrays (a C-ordered ``[V, D]`` array is checked through its flat view
``a.reshape(-1)``, which for a memory map is a view, not a copy).
"""
from __future__ import annotations

import numpy as np
from numba import njit


# First i with a[i] < lo or a[i] >= hi (integers; lo <= hi), else -1.
@njit(cache=True, nogil=True)
def first_outside(a, lo, hi):
    for i in range(a.shape[0]):
        v = a[i]
        if v < lo or v >= hi:
            return i
    return -1


# First i with a[i] < lo, else -1.
@njit(cache=True, nogil=True)
def first_below(a, lo):
    for i in range(a.shape[0]):
        if a[i] < lo:
            return i
    return -1


# First i with a[i] not finite (NaN, +inf or -inf), else -1. x - x is 0 for finite x, NaN else.
@njit(cache=True, nogil=True)
def first_nonfinite(a):
    for i in range(a.shape[0]):
        v = a[i]
        if v - v != 0:
            return i
    return -1


# First i with a[i] NaN or +inf (-inf allowed: the padding score of neighbour tables), else -1.
@njit(cache=True, nogil=True)
def first_nan_or_posinf(a):
    for i in range(a.shape[0]):
        v = a[i]
        if not v < np.inf:
            return i
    return -1


# First i >= 1 with a[i] < a[i-1] (strict=False) or a[i] <= a[i-1] (strict=True), else -1.
@njit(cache=True, nogil=True)
def first_descent(a, strict):
    for i in range(1, a.shape[0]):
        if a[i] < a[i - 1] or (strict and a[i] == a[i - 1]):
            return i
    return -1


# Duplicates among non-negative integers below hi, with a table of hi bytes: the first j whose
# value occurred earlier, else -1. Requires 0 <= a[k] < hi for all k.
@njit(cache=True, nogil=True)
def _first_repeat_bounded(a, hi):
    seen = np.zeros(hi, np.bool_)
    for j in range(a.shape[0]):
        v = a[j]
        if seen[v]:
            return j
        seen[v] = True
    return -1


def first_repeat(a: np.ndarray) -> tuple[int, int]:
    """``(i, j)``, ``i < j``, with ``a[i] == a[j]`` and ``j`` the smallest such, or ``(-1, -1)``.

    Cost: one pass when ``a`` is strictly increasing (checked first), or when its values are
    non-negative and below ``8 * len(a) + 1024`` (a table of that many bytes); otherwise a sort,
    ``O(n log n)``.
    """
    n = a.shape[0]
    if n < 2 or first_descent(a, True) < 0:
        return -1, -1
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi < 8 * n + 1024:
        j = int(_first_repeat_bounded(a, hi + 1))
        return (-1, -1) if j < 0 else (int(np.flatnonzero(a[:j] == a[j])[0]), j)
    order = np.argsort(a, kind="stable")
    s = a[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size == 0:
        return -1, -1
    later = order[dup + 1]          # the later of each equal pair (stable sort keeps file order)
    k = int(np.argmin(later))
    j = int(later[k])
    i = int(np.flatnonzero(a == a[j])[0])
    return i, j
