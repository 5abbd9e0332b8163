"""conformance/ivf.json: w2v/ivf.py reproduces the portable IVF search contract, the checker
catches a changed expectation, and the committed file is what conformance/generate_ivf.py builds."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from w2v import ivf, knn

ROOT = Path(__file__).resolve().parent.parent
DOC = json.loads((ROOT / "conformance" / "ivf.json").read_text())


def problems(doc) -> list[str]:
    """Every difference between ``doc``'s expectations and what w2v/ivf.py computes."""
    out = []
    m = np.array(doc["inputs"]["matrix"], np.float32)
    c = np.array(doc["inputs"]["centroids"], np.float32)
    qs = np.array(doc["inputs"]["queries"], np.float32)
    tol = doc["tolerance"]["scores"]
    offsets, rows = ivf.assign_lists(c, m)
    if offsets.tolist() != doc["expected"]["offsets"] or rows.tolist() != doc["expected"]["rows"]:
        out.append(f"lists {offsets.tolist()} / {rows.tolist()}")
    index = ivf.IVFIndex(c, offsets, rows, {})
    inv = knn.inverse_norms(m)
    for case, exp in zip(doc["inputs"]["cases"], doc["expected"]["cases"]):
        q = qs[case["query"]][None, :]
        _, probes = knn.topk_batch(c, knn.inverse_norms(c), q, case["nprobe"])
        if probes[0].tolist() != exp["probes"]:
            out.append(f"{case}: probes {probes[0].tolist()}")
        st = {}
        s, ids = ivf.search(index, m, inv, q, case["k"], nprobe=case["nprobe"],
                            exclude_self=np.array([case["exclude_self"]]), stats=st)
        if ids[0].tolist() != exp["ids"]:
            out.append(f"{case}: ids {ids[0].tolist()}")
        if (st["queries_widened"] == 1) != exp["widened"]:
            out.append(f"{case}: widened {st['queries_widened']}")
        for got, want in zip(s[0].tolist(), exp["scores"]):
            if want is None:
                if got != -np.inf:
                    out.append(f"{case}: padding score {got}")
            elif abs(got - want) > tol["abs"] + tol["rel"] * abs(want):
                out.append(f"{case}: score {got} vs {want}")
    # the refinement of a given table: its scores are the exact pair scores of the matrix
    ref = doc["inputs"]["refine"]
    start = np.array(ref["start"], np.int32)
    V = m.shape[0]
    s_all, r_all = knn.topk_batch(m, inv, m, V - 1, exclude_self=np.arange(V))
    pair = {(x, int(z)): sv for x in range(V) for z, sv in zip(r_all[x], s_all[x])}
    sc0 = np.array([[pair[(x, int(z))] for z in row] for x, row in enumerate(start)], np.float32)
    for rounds, exp in zip(ref["rounds"], doc["expected"]["refine"]):
        nb, sc = ivf.refine_table(m, inv, start, sc0, rounds=rounds, reverse=ref["reverse"])
        if nb.tolist() != exp["neighbors"] or exp["rounds"] != rounds:
            out.append(f"refine {rounds} rounds: neighbors {nb.tolist()}")
        for got, want in zip(sc.ravel().tolist(), np.ravel(exp["scores"]).tolist()):
            if abs(got - want) > tol["abs"] + tol["rel"] * abs(want):
                out.append(f"refine {rounds} rounds: score {got} vs {want}")
    # the expansion of a case's search result through the start table
    for e, exp in zip(doc["inputs"]["expand"], doc["expected"]["expand"]):
        case, res = doc["inputs"]["cases"][e["case"]], doc["expected"]["cases"][e["case"]]
        s0 = np.array([[-np.inf if v is None else v for v in res["scores"]]], np.float32)
        s, ids = ivf.expand(m, inv, start, qs[case["query"]][None, :], s0, np.array([res["ids"]]), width=e["width"])
        if ids[0].tolist() != exp["ids"]:
            out.append(f"expand {e}: ids {ids[0].tolist()}")
        for got, want in zip(s[0].tolist(), exp["scores"]):
            if (want is None) != (got == -np.inf) or want is not None and abs(got - want) > tol["abs"] + tol["rel"] * abs(want):
                out.append(f"expand {e}: score {got} vs {want}")
    # the symmetric search of every row
    for sy, exp in zip(doc["inputs"]["symmetric"], doc["expected"]["symmetric"]):
        s, ids = ivf.search(index, m, inv, m, sy["k"], nprobe=sy["nprobe"], exclude_self=np.arange(V),
                            symmetric=True)
        if ids.tolist() != exp["neighbors"]:
            out.append(f"symmetric {sy}: neighbors {ids.tolist()}")
        for got, want in zip(s.ravel().tolist(), [v for r in exp["scores"] for v in r]):
            if (want is None) != (got == -np.inf) or want is not None and abs(got - want) > tol["abs"] + tol["rel"] * abs(want):
                out.append(f"symmetric {sy}: score {got} vs {want}")
    return out


def test_ours_matches_the_committed_case():
    assert problems(DOC) == []
    assert any(c["widened"] for c in DOC["expected"]["cases"]) and not all(c["widened"] for c in DOC["expected"]["cases"])
    # an expansion that changes its search result, and one with width 0 that cannot
    ex = DOC["expected"]["expand"]
    assert any(e["ids"] != DOC["expected"]["cases"][i["case"]]["ids"] for e, i in zip(ex, DOC["inputs"]["expand"]))
    assert any(i["width"] == 0 for i in DOC["inputs"]["expand"])
    # a symmetric search whose table is not the one-way search's (offers back decide a row)
    m = np.array(DOC["inputs"]["matrix"], np.float32)
    c = np.array(DOC["inputs"]["centroids"], np.float32)
    index = ivf.IVFIndex(c, *ivf.assign_lists(c, m), {})
    V = m.shape[0]
    one_way = [ivf.search(index, m, knn.inverse_norms(m), m, sy["k"], nprobe=sy["nprobe"],
                          exclude_self=np.arange(V))[1].tolist() for sy in DOC["inputs"]["symmetric"]]
    assert any(a != e["neighbors"] for a, e in zip(one_way, DOC["expected"]["symmetric"]))


@pytest.mark.parametrize("path, change", [
    (("cases", 0, "ids", 0), lambda v: v + 1),
    (("cases", 1, "scores", 2), lambda v: v + 2e-6),
    (("cases", 2, "widened"), lambda v: not v),
    (("cases", 4, "probes", 0), lambda v: 0),
    (("rows", 0), lambda v: 1),
    (("refine", 0, "neighbors", 3, 0), lambda v: (v + 1) % 16),
    (("refine", 1, "neighbors", 0, 2), lambda v: (v + 1) % 16),
    (("refine", 1, "scores", 5, 1), lambda v: v + 2e-6),
    (("expand", 4, "ids", 5), lambda v: 9),
    (("expand", 4, "scores", 0), lambda v: v + 5e-6),
    (("symmetric", 0, "neighbors", 3, 0), lambda v: (v + 1) % 16),
    (("symmetric", 3, "scores", 2, 5), lambda v: 0.5 if v is None else v + 2e-6),
])
def test_checker_catches_a_changed_expectation(path, change):
    doc = copy.deepcopy(DOC)
    node = doc["expected"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = change(node[path[-1]])
    assert problems(doc)


def test_committed_file_is_what_the_generator_builds():
    r = subprocess.run([sys.executable, str(ROOT / "conformance" / "generate_ivf.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
