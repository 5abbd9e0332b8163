"""Write conformance/ivf.json: the IVF search contract of w2v/ivf.py on a hand-made matrix.

    python conformance/generate_ivf.py [--check]     (also part of conformance/generate.py)

The k-means training draws from NumPy's generator and is not part of the portable contract; the
case fixes the centroids instead, and specifies (1) the inverted lists they induce (each row in
the list of its best centroid by cosine, ties and zero rows to the lowest centroid, rows
ascending) and (2) search results: the nprobe best centroids of the query (same order), every
row of those lists scored by cosine, the k best by score descending then row ascending, the
query's own row excluded when given, and every list probed when the query is zero or its lists
hold fewer than k (+1 with an exclusion) rows; (3) the neighbour-of-neighbour refinement of a
k-neighbour table (``refine_table``): from a given table, after 1 and 2 rounds with a reverse
cap, every row's k best of its list, the lists of its neighbours and of the first ``reverse``
rows (ascending) that list it, and those rows themselves; (4) the expansion of search results
through a table (``expand``): the k best of a query's results and the table rows of its first
``width`` results; (5) the symmetric search of a neighbour table (``search(symmetric=True)``
with every row as a query, its own row excluded): row x's k best of the rows of its probed
lists and of the rows whose probed lists (every list for a widened row) include x's list.
Every expected value is checked here
against a float64 NumPy reference before the file is written; ``--check`` compares instead of
writing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from w2v import ivf, knn  # noqa: E402

OUT = Path(__file__).resolve().parent / "ivf.json"

MATRIX = [
    [1.0, 0.1, 0.0], [0.9, -0.2, 0.1], [0.8, 0.3, -0.1], [0.1, 1.0, 0.0],
    [-0.2, 0.9, 0.3], [0.0, 0.1, 1.0], [0.0, 0.1, 1.0], [0.2, -0.1, 0.9],
    [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.2, 0.1], [-0.9, -0.3, 0.0],
    [0.3, 0.6, -0.4], [-0.5, -0.5, -0.5], [0.6, 0.1, 0.5], [0.05, -0.8, 0.6],
]
CENTROIDS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]
QUERIES = [[1.0, 0.1, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 0.0], [0.1, 0.2, 1.0], [-0.7, 0.1, 0.2]]
# refinement: a deliberately poor k = 3 table (row x lists x+1, x+2, x+3 mod 16, ordered by score)
REFINE_K, REFINE_REVERSE, REFINE_ROUNDS = 3, 2, (1, 2)
REFINE_START = [[(x + d) % len(MATRIX) for d in (1, 2, 3)] for x in range(len(MATRIX))]
CASES = [  # (query, k, nprobe, exclude_self)
    (0, 3, 1, 0), (1, 4, 2, -1), (2, 3, 1, -1), (3, 20, 1, -1), (4, 5, 4, -1), (4, 3, 1, 10), (3, 4, 2, 5),
    (1, 2, 1, -1), (4, 2, 1, -1), (0, 6, 1, -1),
]
# expansion: (index into CASES of a search without exclusion, width); the table is the refinement's
# ordered start table
EXPAND = [(7, 2), (7, 0), (8, 1), (8, 5), (9, 3), (2, 3), (4, 1)]
# symmetric table search: (k, nprobe)
SYMMETRIC = [(3, 2), (4, 1), (2, 3), (6, 2)]


def _reference(m, q, rows, k, skip):
    """float64 cosine of the candidate rows, best k by (-score, row), zero norms scoring 0."""
    mn = np.linalg.norm(m, axis=1)
    qn = np.linalg.norm(q)
    cand = [r for r in rows if r != skip]
    sc = {r: (float(m[r] @ q) / (mn[r] * qn) if mn[r] > 0 and qn > 0 else 0.0) for r in cand}
    order = sorted(cand, key=lambda r: (-sc[r], r))[:k]
    return order, [sc[r] for r in order], sc


def _cos64(m):
    """float64 cosine of every pair, zero rows scoring 0."""
    m = m.astype(np.float64)
    n = np.linalg.norm(m, axis=1)
    safe = np.where(n > 0, n, 1.0)
    return np.where((n[:, None] > 0) & (n[None, :] > 0), (m @ m.T) / safe[:, None] / safe[None, :], 0.0)


def _refine_reference(m, start, rounds, reverse):
    """The refinement rule of docs/ALGORITHM.md section 15, in plain Python over float64 cosines."""
    cos = _cos64(m)
    V = m.shape[0]
    nb = [list(r) for r in start]
    for _ in range(rounds):
        rev = [[y for y in range(V) if x in nb[y]] for x in range(V)]  # ascending y
        new = []
        for x in range(V):
            srcs = nb[x] + rev[x][:reverse]
            cand = set(nb[x]) | set(rev[x][:reverse]) | {z for y in srcs for z in nb[y]}
            cand.discard(x)
            new.append(sorted(cand, key=lambda z: (-cos[x, z], z))[:len(nb[x])])
        nb = new
    return nb


def _ordered_start(cos):
    return [sorted(r, key=lambda z: (-cos[x, z], z)) for x, r in enumerate(REFINE_START)]


def build() -> dict:
    m = np.array(MATRIX, np.float32)
    c = np.array(CENTROIDS, np.float32)
    qs = np.array(QUERIES, np.float32)
    offsets, rows = ivf.assign_lists(c, m)
    # lists: the float64 reference assignment
    mn = np.linalg.norm(m.astype(np.float64), axis=1)
    for r in range(m.shape[0]):
        cos = (c.astype(np.float64) @ m[r].astype(np.float64)) / (mn[r] if mn[r] > 0 else 1.0)
        best = int(np.flatnonzero(cos == cos.max())[0])
        got = int(np.searchsorted(offsets, np.flatnonzero(rows == r)[0], side="right") - 1)
        assert got == best, f"row {r}: list {got} != reference {best}"
    index = ivf.IVFIndex(c, offsets, rows, {"nlist": 4})
    inv = knn.inverse_norms(m)
    cases = []
    for qi, k, nprobe, skip in CASES:
        q = qs[qi]
        qs64 = q.astype(np.float64)
        ccos = (c.astype(np.float64) @ qs64) / (np.linalg.norm(qs64) or 1.0)
        probes = sorted(range(4), key=lambda j: (-ccos[j], j))[:nprobe]
        K = k + (skip >= 0)
        held = sum(int(offsets[j + 1] - offsets[j]) for j in probes)
        widened = bool(not qs64.any() or held < min(K, m.shape[0]))
        cand = list(range(m.shape[0])) if widened else sorted(int(r) for j in probes for r in rows[offsets[j]:offsets[j + 1]])
        order, ref_scores, all_sc = _reference(m.astype(np.float64), qs64, cand, k, skip)
        vals = sorted({round(v, 12) for v in all_sc.values()}, reverse=True)
        assert all(a - b > 1e-4 for a, b in zip(vals, vals[1:])), f"near-tie in case {(qi, k, nprobe, skip)}"
        st = {}
        s, ids = ivf.search(index, m, inv, q[None, :], k, nprobe=nprobe,
                            exclude_self=np.array([skip], np.int64), stats=st)
        got = [int(x) for x in ids[0] if x >= 0]
        assert got == order, f"case {(qi, k, nprobe, skip)}: ids {got} != reference {order}"
        assert np.all(np.abs(s[0][:len(order)] - np.array(ref_scores)) <= 1e-6), "scores off by > 1e-6"
        assert (st["queries_widened"] == 1) == widened
        cases.append({"query": qi, "k": k, "nprobe": nprobe, "exclude_self": skip,
                      "probes": [int(j) for j in probes], "widened": widened,
                      "ids": [int(x) for x in ids[0]],
                      "scores": [None if not np.isfinite(x) else round(float(x), 7) for x in s[0]]})
    # (3) refinement of a table
    cos = _cos64(m)
    for x in range(m.shape[0]):   # the reference's order is the float32 kernel's: no near-ties
        vals = sorted({round(float(v), 12) for z, v in enumerate(cos[x]) if z != x}, reverse=True)
        assert all(a - b > 1e-5 for a, b in zip(vals, vals[1:])), f"near-tie in row {x}"
    start = _ordered_start(cos)
    s_all, r_all = knn.topk_batch(m, inv, m, m.shape[0] - 1, exclude_self=np.arange(m.shape[0]))
    pair = {(x, int(z)): float(sv) for x in range(m.shape[0]) for z, sv in zip(r_all[x], s_all[x])}
    nb0 = np.array(start, np.int32)
    sc0 = np.array([[pair[(x, z)] for z in row] for x, row in enumerate(start)], np.float32)
    refined = []
    for rounds in REFINE_ROUNDS:
        want = _refine_reference(m, start, rounds, REFINE_REVERSE)
        nb, sc = ivf.refine_table(m, inv, nb0, sc0, rounds=rounds, reverse=REFINE_REVERSE)
        assert nb.tolist() == want, f"refinement, {rounds} rounds: {nb.tolist()} != reference {want}"
        assert np.all(np.abs(sc.astype(np.float64) - np.array([[cos[x, z] for z in r] for x, r in enumerate(want)])) <= 1e-6)
        refined.append({"rounds": rounds, "neighbors": nb.tolist(),
                        "scores": [[round(float(v), 7) for v in r] for r in sc]})
    # (4) expansion of search results through the start table
    expanded = []
    table = np.array(start, np.int32)
    for ci, width in EXPAND:
        qi, k, _, skip = CASES[ci]
        assert skip < 0
        q64 = qs[qi].astype(np.float64)
        base = [int(x) for x in cases[ci]["ids"] if x >= 0]
        cand = set(base) | {int(z) for y in base[:width] for z in start[y]}
        order, ref_scores, all_sc = _reference(m.astype(np.float64), q64, sorted(cand), k, -1)
        if q64.any():
            vals = sorted({round(v, 12) for v in all_sc.values()}, reverse=True)
            assert all(a - b > 1e-4 for a, b in zip(vals, vals[1:])), f"near-tie in expansion {(ci, width)}"
        ss = np.array([[np.float32(-np.inf) if v is None else v for v in cases[ci]["scores"]]], np.float32)
        s2, r2 = ivf.expand(m, inv, table, qs[qi][None, :], ss, np.array([cases[ci]["ids"]], np.int64), width=width)
        got = [int(x) for x in r2[0] if x >= 0]
        assert got == order, f"expansion {(ci, width)}: ids {got} != reference {order}"
        assert np.all(np.abs(s2[0][:len(order)] - np.array(ref_scores)) <= 1e-6)
        expanded.append({"case": ci, "width": width, "ids": [int(x) for x in r2[0]],
                         "scores": [None if not np.isfinite(x) else round(float(x), 7) for x in s2[0]]})
    # (5) the symmetric search of every row (a neighbour table's search)
    symmetric = []
    V = m.shape[0]
    m64 = m.astype(np.float64)
    for k, nprobe in SYMMETRIC:
        scanned = []   # the lists each row scans
        for x in range(V):
            ccos = (c.astype(np.float64) @ m64[x]) / (np.linalg.norm(m64[x]) or 1.0)
            probes = sorted(range(4), key=lambda j: (-ccos[j], j))[:nprobe]
            held = sum(int(offsets[j + 1] - offsets[j]) for j in probes)
            scanned.append(set(range(4)) if not m64[x].any() or held < min(k + 1, V) else set(probes))
        own = {int(r): j for j in range(4) for r in rows[offsets[j]:offsets[j + 1]]}
        want = []
        for x in range(V):
            cand = [z for z in range(V) if z != x and (own[z] in scanned[x] or own[x] in scanned[z])]
            want.append(_reference(m64, m64[x], cand, k, x)[0])
        s_t, i_t = ivf.search(index, m, inv, m, k, nprobe=nprobe, exclude_self=np.arange(V), symmetric=True)
        got = [[int(z) for z in r if z >= 0] for r in i_t]
        assert got == want, f"symmetric {(k, nprobe)}: {got} != reference {want}"
        assert np.all(np.abs(s_t.astype(np.float64)[i_t >= 0]
                             - np.array([cos[x, z] for x, r in enumerate(want) for z in r])) <= 1e-6)
        symmetric.append({"k": k, "nprobe": nprobe, "neighbors": [[int(z) for z in r] for r in i_t],
                          "scores": [[None if not np.isfinite(v) else round(float(v), 7) for v in r] for r in s_t]})
    return {
        "name": "ivf",
        "description": "IVF top-k search over fixed centroids (w2v/ivf.py): inverted lists, probing, widening, "
                       "exact cosine scores of the probed rows, order score descending then row ascending. "
                       "ids -1 with score null are padding beyond the eligible rows.",
        "tolerance": {"default": "exact", "scores": {"abs": 1e-6, "rel": 1e-6}},
        "inputs": {"matrix": MATRIX, "centroids": CENTROIDS, "queries": QUERIES,
                   "cases": [{"query": a, "k": b, "nprobe": c_, "exclude_self": d} for a, b, c_, d in CASES],
                   "refine": {"k": REFINE_K, "reverse": REFINE_REVERSE, "rounds": list(REFINE_ROUNDS),
                              "start": start},
                   "expand": [{"case": ci, "width": w} for ci, w in EXPAND],
                   "symmetric": [{"k": k, "nprobe": p_} for k, p_ in SYMMETRIC]},
        "expected": {"offsets": [int(x) for x in offsets], "rows": [int(x) for x in rows], "cases": cases,
                     "refine": refined, "expand": expanded, "symmetric": symmetric},
        "notes": {"reference": "float64 numpy cosine over the candidate rows, sorted by (-score, row)",
                  "refine": "inputs.refine.start is a k-neighbour table (rows of each row, best first, "
                            "own row excluded); each round builds a new table from the previous one: row x "
                            "keeps its k best (score descending, row ascending) of its own list, the first "
                            "`reverse` rows (ascending) whose lists hold x, and every row in the list of one "
                            "of those or of x's own neighbours, never x itself",
                  "expand": "inputs.expand[j] takes the search result of inputs.cases[case] (expected.cases[case]: "
                            "ids and scores) and the table inputs.refine.start; expected.expand[j] is the k best "
                            "(score descending, row ascending) of those ids and the table rows of the first `width` "
                            "of them, each row once, scored by cosine; -1 / null pad as in the cases",
                  "symmetric": "inputs.symmetric[j] searches every row of the matrix as a query, its own row "
                               "excluded, with k and nprobe; row x's list (expected.symmetric[j].neighbors[x]) is the "
                               "k best of the rows of the lists x scans and of the rows that scan x's list, where a "
                               "row scans its nprobe best lists, or every list when it is zero or those lists hold "
                               "fewer than k + 1 rows; -1 / null pad",
                  "training": "k-means training (seeded NumPy sampling) is not part of the portable contract"},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = p.parse_args(argv)
    doc = build()
    if args.check:
        if json.loads(OUT.read_text()) != json.loads(json.dumps(doc)):
            print(f"{OUT}: differs from what generate_ivf.py builds", file=sys.stderr)
            return 1
        return 0
    from generate import dumps  # the conformance files' one canonical formatting
    OUT.write_text(dumps(doc))
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
