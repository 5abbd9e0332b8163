"""The conformance kit (conformance/*.json): no drift from our implementation, a valid schema,
a check that can fail, and a miniature "port" that reproduces the files from their inputs alone."""
from __future__ import annotations

import bisect
import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conformance"


def _load_generator():
    spec = importlib.util.spec_from_file_location("conformance_generate", CONF / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()


def _files() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(CONF.glob("*.json"))}


@pytest.fixture(scope="module")
def regenerated():
    """Every document rebuilt in memory (cross-checked against gensim when it is installed)."""
    return gen.generate()


# ------------------------------------------------------------------------------------ drift
def test_files_match_regenerated_documents(regenerated):
    problems = gen.check(CONF, docs=regenerated)
    assert problems == {}, "conformance drift; run `python conformance/generate.py`:\n" + "\n".join(
        f"{f}: {d[:3]}" for f, d in problems.items())
    assert set(regenerated) == set(_files())


def test_gensim_cross_check_was_recorded():
    pytest.importorskip("gensim")
    for name in ("train_1epoch.json", "train_3epochs.json", "train_edges.json"):
        diff = _files()[name]["notes"]["max_abs_diff_vs_gensim"]
        assert max(diff["vectors"], diff["output"]) <= 1e-4


# ----------------------------------------------------------------------------------- schema
def _walk(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk(v)
    else:
        yield x


def _nodes(x):
    yield x
    for v in (x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()):
        yield from _nodes(v)


@pytest.mark.parametrize("fname", sorted(f"{n}.json" for n in gen.BUILDERS))
def test_schema(fname):
    path = CONF / fname
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert tuple(doc) == gen.FORMAT_KEYS
    assert doc["name"] == path.stem
    assert isinstance(doc["description"], str) and len(doc["description"]) > 80
    assert isinstance(doc["inputs"], dict) and doc["inputs"]
    assert isinstance(doc["expected"], dict) and doc["expected"]
    tol = doc["tolerance"]
    assert tol["default"] == "exact"
    for field, spec in tol.items():
        if field == "default":
            continue
        assert any(isinstance(x, dict) and field in x for x in _nodes(doc["expected"])), \
            f"tolerance for unknown field {field}"
        assert spec == "exact" or (isinstance(spec, dict) and spec and set(spec) <= {"abs", "rel"}
                                   and all(isinstance(v, float) and 0 <= v <= 1e-3 for v in spec.values()))
    for v in _walk([doc["inputs"], doc["expected"]]):
        assert v is None or isinstance(v, (bool, int, float, str))
        if isinstance(v, float):
            assert math.isfinite(v)
        if isinstance(v, int) and not isinstance(v, bool):
            assert abs(v) < 2**53, "integers must survive a parser that reads numbers as doubles"
    assert len(text.encode()) < 16 * 1024, "conformance files are meant to be small"
    assert text == gen.dumps(doc), "file is not in the generator's canonical formatting"


def test_float_text_is_lossless_for_float32():
    files = _files()
    train, topk = files["train_1epoch.json"], files["topk.json"]
    float32_values = [train["inputs"]["initial_vectors"], train["expected"]["vectors"], train["expected"]["output"],
                      [j["alpha"] for j in train["expected"]["jobs"]], topk["inputs"]["matrix"],
                      [c["scores"] for c in topk["expected"]["cases"]], topk["expected"]["neighbor_scores"]]
    n = 0
    for v in _walk(float32_values):
        assert isinstance(v, float) and float(np.float32(v)) == v  # a widened float32: repr round-trips
        n += 1
    assert n > 150


# -------------------------------------------------------------------- the check can fail
def _perturbed(doc, path, fn):
    d = copy.deepcopy(doc)
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = fn(node[path[-1]])
    return d


@pytest.mark.parametrize("fname,path,fn,detected", [
    ("lcg.json", ("expected", "states", 3, 2), lambda v: v + 1, True),
    ("cum_table.json", ("expected", "tables", 0, 1), lambda v: v - 1, True),
    ("vocab.json", ("expected", "cases", 1, "aids"), lambda v: v[1:2] + v[:1] + v[2:], True),
    ("train_1epoch.json", ("expected", "vectors", 4, 1), lambda v: v + 1e-3, True),
    ("train_3epochs.json", ("expected", "output", 0, 0), lambda v: v + 2e-6, True),   # beyond drift 1e-6
    ("train_3epochs.json", ("expected", "output", 0, 0), lambda v: v + 1e-8, False),  # within drift
    ("train_1epoch.json", ("expected", "jobs", 1, "alpha"), lambda v: v * (1 + 1e-7), True),  # exact field
    ("topk.json", ("expected", "cases", 0, "ids"), lambda v: v[1:2] + v[:1] + v[2:], True),
    ("otto_labels.json", ("inputs", "sessions", 0, "cut"), lambda v: v + 1, True),
    ("weighted_recall.json", ("expected", "cases", 0, "total"), lambda v: v + 1e-9, True),
    ("weighted_recall.json", ("expected", "cases", 0, "hits", "carts"), lambda v: v + 1, True),
    ("weighted_recall.json", ("expected", "cases", 0, "total"), lambda v: v + 1e-13, False),  # within 1e-12
    ("topk.json", ("expected", "cases", 2, "scores", 0), lambda v: v + 2e-6, True),
    ("topk.json", ("expected", "cases", 2, "scores", 0), lambda v: v + 1e-7, False),     # nested tolerance
    ("topk.json", ("expected", "neighbor_scores", 3, 1), lambda v: v - 1e-7, False),
    ("sample_int.json", ("description",), lambda v: v + " ", True),
])
def test_perturbed_file_is_detected(regenerated, fname, path, fn, detected):
    want = json.loads((CONF / fname).read_text(encoding="utf-8"))
    assert gen.compare(want, regenerated[fname]) == []
    bad = _perturbed(want, path, fn)
    assert bool(gen.compare(bad, regenerated[fname])) == detected


def test_structural_damage_is_detected(regenerated):
    want = json.loads((CONF / "lcg.json").read_text(encoding="utf-8"))
    got = regenerated["lcg.json"]
    for bad in (_perturbed(want, ("expected", "states", 0), lambda v: v[:-1]),
                _perturbed(want, ("expected",), lambda v: {**v, "extra": 1}),
                _perturbed(want, ("expected", "states", 0, 0), float)):
        assert gen.compare(bad, got)
    missing = {k: v for k, v in want.items() if k != "inputs"}
    assert gen.compare(missing, got)


def test_check_command_exits_nonzero_on_drift(tmp_path, capsys):
    assert gen.main(["--dir", str(tmp_path), "--only", "lcg", "--only", "vocab"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lcg.json", "vocab.json"]
    assert gen.main(["--check", "--dir", str(tmp_path), "--only", "lcg", "--only", "vocab"]) == 0
    doc = json.loads((tmp_path / "lcg.json").read_text())
    doc["expected"]["draws"][0][0] += 1
    (tmp_path / "lcg.json").write_text(gen.dumps(doc))
    capsys.readouterr()
    assert gen.main(["--check", "--dir", str(tmp_path), "--only", "lcg", "--only", "vocab"]) == 1
    out = capsys.readouterr().out
    assert "lcg.json: 1 difference(s)" in out and "expected.draws[0][0]" in out and "vocab.json" not in out
    (tmp_path / "vocab.json").unlink()
    assert gen.main(["--check", "--dir", str(tmp_path), "--only", "vocab"]) == 1


# ------------------------------------------------------- a miniature port, from the files alone
LCG_MASK = 2**48 - 1


def _lcg(x):
    return (x * 25214903917 + 11) & LCG_MASK


def test_port_lcg_and_negative_draws():
    doc = _files()["lcg.json"]
    for seed, states, draws in zip(doc["inputs"]["seeds"], doc["expected"]["states"], doc["expected"]["draws"]):
        x, got_s, got_d = seed, [], []
        for _ in range(doc["inputs"]["steps"]):
            got_d.append(x >> 16)
            x = _lcg(x)
            got_s.append(x)
        assert (got_s, got_d) == (states, draws)
    doc = _files()["cum_table.json"]
    table = doc["expected"]["tables"][0]
    x = doc["inputs"]["draw_state"]
    rows = []
    for _ in range(doc["inputs"]["draw_count"]):
        rows.append(bisect.bisect_left(table, (x >> 16) % table[-1]))
        x = _lcg(x)
    assert rows == doc["expected"]["draw_rows"] and x == doc["expected"]["draw_states"][-1]


def _exp_table():
    i = np.arange(1000, dtype=np.float32)
    e = np.exp(((i / np.float32(1000)).astype(np.float64) * 2 - 1) * 6).astype(np.float32)
    return (e.astype(np.float64) / (e.astype(np.float64) + 1)).astype(np.float32)


def _port_train(doc):
    """Skip-gram negative sampling from the recorded jobs, one float32 operation at a time."""
    cfg, exp = doc["inputs"]["config"], doc["expected"]
    syn0 = np.array(doc["inputs"]["initial_vectors"], np.float32)
    syn1 = np.array(doc["inputs"]["initial_output"], np.float32)
    table = exp["cum_table"]
    table_exp = _exp_table()
    for job in exp["jobs"]:
        x = job["lcg_after_downsampling"]
        alpha = np.float32(job["alpha"])
        rows, bounds, red = job["kept_rows"], job["sentence_bounds"], job["reduced_windows"]
        for s, e in zip(bounds, bounds[1:]):
            for i in range(s, e):
                b = red[i]
                for j in range(max(s, i - cfg["window"] + b), min(e, i + cfg["window"] + 1 - b)):
                    if j == i:
                        continue
                    word, l1 = rows[i], syn0[rows[j]]
                    work = np.zeros_like(l1)
                    for d in range(cfg["negative"] + 1):
                        if d == 0:
                            target, label = word, np.float32(1)
                        else:
                            target = bisect.bisect_left(table, (x >> 16) % table[-1])
                            x = _lcg(x)
                            if target == word:
                                continue
                            label = np.float32(0)
                        l2 = syn1[target]
                        f = np.float32(0)
                        for a in range(l1.shape[0]):
                            f = np.float32(f + l1[a] * l2[a])
                        if f <= -6 or f >= 6:
                            continue
                        g = np.float32((label - table_exp[int((float(f) + 6.0) * 83)]) * alpha)
                        work += g * l2
                        l2 += g * l1
                    l1 += work
        assert x == job["lcg_end"]
    return syn0, syn1


@pytest.mark.parametrize("fname", ["train_1epoch.json", "train_3epochs.json"])
def test_port_training_from_recorded_jobs(fname):
    doc = _files()[fname]
    v, u = _port_train(doc)
    got = copy.deepcopy(doc)
    got["expected"]["vectors"], got["expected"]["output"] = v.astype(np.float64).tolist(), u.astype(np.float64).tolist()
    assert gen.compare(doc, got, drift=None) == []  # within the file's own tolerance
    moved = np.abs(u - np.array(doc["inputs"]["initial_output"], np.float32)).max()
    assert moved > 100 * doc["tolerance"]["output"]["abs"]


def test_port_topk_reference():
    doc = _files()["topk.json"]
    m = np.array(doc["inputs"]["matrix"], np.float64)
    norms = np.sqrt((m ** 2).sum(1))
    for case, want in zip(doc["inputs"]["cases"], doc["expected"]["cases"]):
        q = np.array(doc["inputs"]["queries"][case["query"]], np.float64)
        qn = math.sqrt(float((q ** 2).sum()))
        sc = [0.0 if norms[i] == 0 or qn == 0 else float(m[i] @ q / norms[i] / qn) for i in range(len(m))]
        ids = [i for i in sorted(range(len(m)), key=lambda i: (-sc[i], i)) if i not in case["exclude"]][:case["k"]]
        assert ids == want["ids"]
        assert all(abs(sc[i] - s) <= 1e-6 + 1e-6 * abs(s) for i, s in zip(ids, want["scores"]))


# ------------------------------------------------------ the generator refuses wrong references
def test_generator_fails_loudly_when_a_reference_disagrees(monkeypatch):
    real = gen.cum_table

    def off_by_one(counts, e=0.75, **kw):
        t = real(counts, e, **kw).copy()
        t[0] += 1
        return t

    monkeypatch.setattr(gen, "cum_table", off_by_one)
    with pytest.raises(gen.ConformanceError, match="cum_table.json"):
        gen.build_cum_table(None)


def test_gensim_cross_check_can_fail(monkeypatch):
    word2vec = pytest.importorskip("gensim.models.word2vec")
    real_py, real_ours = gen._py_cum_table, gen.cum_table
    # ours and the Python reference agree with each other on a wrong rounding (truncation):
    # only gensim can notice
    monkeypatch.setattr(gen, "_py_cum_table", lambda counts, e, domain=2**31 - 1: [
        int(x) for x in np.floor(np.cumsum(np.array(counts, np.float64) ** e)
                                 / np.sum(np.array(counts, np.float64) ** e) * domain)])
    monkeypatch.setattr(gen, "cum_table", lambda counts, e: np.array(gen._py_cum_table(list(counts), e), np.uint32))
    with pytest.raises(gen.ConformanceError, match="gensim make_cum_table differs"):
        gen.build_cum_table(word2vec)
    assert real_py([1, 1], 1.0) == [1073741824, 2147483647]  # round, not truncate
    assert list(real_ours(np.array([1, 1]), 1.0)) == [1073741824, 2147483647]


def test_port_sigmoid_table_and_index():
    sig = _files()["train_1epoch.json"]["expected"]["sigmoid_table"]
    table = _exp_table()
    assert [float(table[i]) for i in sig["indices"]] == sig["values"]
    assert [int((float(np.float32(f)) + 6.0) * 83.0) for f in sig["dots"]] == sig["dot_indices"]
    assert int((0.0 + 6.0) * (1000 / 6 / 2)) != 498  # 83.33 instead of 83 would be a different index
