"""A port of the kit's Word2Vec files written from docs/PORTING.md and the JSON files alone (plain
Python, numpy's RandomState and float32 scalars, Numba only for the training loop), with
switchable single-point misreadings of the algorithm.

``port(files, misreadings)`` recomputes every ``expected`` value of the Word2Vec files (lcg,
vocab, sample_int, cum_table, train_*) from the file's ``inputs``; the other files (top-k, labels,
recall) are passed through unchanged, as is the per-epoch loss, which this port does not compute.
tests/test_conformance.py checks the faithful port passes the kit; tests/test_conformance_mutation.py
that each misreading fails it.
"""
from __future__ import annotations

import bisect
import copy
import math

import numpy as np
from numba import njit

M48 = 2**48 - 1
CAP = 10_000  # gensim's MAX_WORDS_IN_BATCH: kept words trained per job

MISREADINGS = {
    "stable_vocab_ties": "equal counts keep first-appearance order (a stable sort) instead of the reverse",
    "sample_T_without_int": "sample >= 1: T = sample * (3 + sqrt 5) / 2 without int()",
    "sample_int_rounded": "sample_int = round(p * (2**32 - 1)) instead of truncation",
    "cum_table_half_away": "cum_table rounds halves away from zero instead of to even",
    "bisect_right": "a negative is bisect_right(table, value) instead of bisect_left",
    "sigmoid_index_float32": "the sigmoid-table index (f + 6) * 83 computed in float32",
    "sigmoid_index_fma": "the sigmoid-table index computed as a fused multiply-add f * 83 + 498",
    "redraw_equal_negative": "a negative equal to the centre word is redrawn instead of skipped",
    "clip_at_edges": "|f| >= 6 clips sigma to 0/1 (word2vec.c) instead of skipping the term",
    "no_empty_first_job": "no empty job is pushed when the first sentence exceeds batch_words",
    "alpha_after_job": "a job's learning rate uses the progress after the job instead of before",
    "seed_halves_swapped": "job seed = randint + 2**24 * randint (the 24-bit halves swapped)",
    "drop_when_equal": "downsampling drops a word when sample_int == draw (<=) instead of <",
}


def lcg(x: int) -> int:
    return (x * 25214903917 + 11) & M48


def expand(spec) -> list[list[int]]:
    out = []
    for s in spec:
        if isinstance(s, dict):
            c = s["cycle"]
            out.append([c[i % len(c)] for i in range(s["length"])])
        else:
            out.append(list(s))
    return out


# ----------------------------------------------------------------------------------- tables
def vocab(sentences, min_count: int, mis) -> tuple[list[int], list[int], int, int]:
    first, cnt = {}, {}
    for s in sentences:
        for t in s:
            first.setdefault(t, len(first))
            cnt[t] = cnt.get(t, 0) + 1
    kept = [w for w in first if cnt[w] >= min_count]
    if "stable_vocab_ties" in mis:
        order = sorted(range(len(kept)), key=lambda i: (-cnt[kept[i]], i))
    else:
        order = sorted(range(len(kept)), key=lambda i: (-cnt[kept[i]], -i))
    aids = [kept[i] for i in order]
    dropped = [w for w in first if cnt[w] < min_count]
    return aids, [cnt[a] for a in aids], len(dropped), sum(cnt[w] for w in dropped)


def sample_threshold(total: int, sample: float, mis) -> float:
    if not sample:
        return float(total)
    if sample < 1.0:
        return sample * total
    t = sample * (3 + math.sqrt(5)) / 2
    return t if "sample_T_without_int" in mis else float(int(t))


def sample_ints(counts, sample: float, mis) -> list[int]:
    thr = sample_threshold(sum(counts), sample, mis)
    out = []
    for c in counts:
        p = min(1.0, (math.sqrt(c / thr) + 1) * (thr / c))
        v = p * (2**32 - 1)
        out.append(min(2**32 - 1, int(v + 0.5)) if "sample_int_rounded" in mis else int(v))
    return out


def cum_table(counts, exponent: float, mis, domain: int = 2**31 - 1) -> list[int]:
    z = 0.0
    for c in counts:
        z += float(c) ** float(exponent)
    out, cum = [], 0.0
    for c in counts:
        cum += float(c) ** float(exponent)
        v = cum / z * domain
        out.append(int(math.floor(v + 0.5)) if "cum_table_half_away" in mis else round(v))
    return out


def negative_row(table, x: int, mis) -> int:
    value = (x >> 16) % table[-1]
    return (bisect.bisect_right if "bisect_right" in mis else bisect.bisect_left)(table, value)


def downsample(words, thresholds, x: int, mis) -> tuple[list[int], int]:
    kept = []
    for w in words:
        r = x >> 16
        x = lcg(x)
        if thresholds[w] < r or ("drop_when_equal" in mis and thresholds[w] == r):
            continue
        kept.append(w)
    return kept, x


def exp_table() -> np.ndarray:
    i = np.arange(1000, dtype=np.float32)
    e = np.exp(((i / np.float32(1000)).astype(np.float64) * 2 - 1) * 6).astype(np.float32)
    return (e.astype(np.float64) / (e.astype(np.float64) + 1)).astype(np.float32)


INDEX_F64, INDEX_F32, INDEX_FMA = 0, 1, 2


@njit(cache=True)
def sigmoid_index(f, mode):
    if mode == INDEX_F32:
        return int(np.float32(np.float32(f + np.float32(6.0)) * np.float32(83.0)))
    if mode == INDEX_FMA:
        return int(np.float64(f) * 83.0 + 498.0)  # f * 83 is exact in float64: one rounding, as an fma
    return int((np.float64(f) + 6.0) * 83.0)


# -------------------------------------------------------------------------------- training
@njit(cache=True)
def _bisect(table, value, right):
    lo, hi = 0, table.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if table[mid] < value or (right and table[mid] == value):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def train_job(syn0, syn1, rows, bounds, reduced, x, alpha, window, negative, table, etab, right, redraw, clip,
              index_mode):
    """Skip-gram negative sampling over one job's kept rows; float32, dot products summed in order.
    Returns the LCG state after the job."""
    top = np.uint64(table[table.shape[0] - 1])
    dim = syn0.shape[1]
    work = np.zeros(dim, np.float32)
    for q in range(bounds.shape[0] - 1):
        s, e = bounds[q], bounds[q + 1]
        for i in range(s, e):
            b = reduced[i]
            for j in range(max(s, i - window + b), min(e, i + window + 1 - b)):
                if j == i:
                    continue
                word = rows[i]
                l1 = syn0[rows[j]]
                work[:] = 0
                for d in range(negative + 1):
                    if d == 0:
                        target, label = word, np.float32(1.0)
                    else:
                        target = _bisect(table, (x >> np.uint64(16)) % top, right)
                        x = (x * np.uint64(25214903917) + np.uint64(11)) & np.uint64(M48)
                        while redraw and target == word:
                            target = _bisect(table, (x >> np.uint64(16)) % top, right)
                            x = (x * np.uint64(25214903917) + np.uint64(11)) & np.uint64(M48)
                        if target == word:
                            continue
                        label = np.float32(0.0)
                    l2 = syn1[target]
                    f = np.float32(0.0)
                    for a in range(dim):
                        f = np.float32(f + l1[a] * l2[a])
                    if f <= -6.0 or f >= 6.0:
                        if not clip:
                            continue
                        sig = np.float32(1.0) if f > 0 else np.float32(0.0)
                    else:
                        sig = etab[sigmoid_index(f, index_mode)]
                    g = np.float32((label - sig) * alpha)
                    for a in range(dim):
                        work[a] += g * l2[a]
                    for a in range(dim):
                        l2[a] += g * l1[a]
                for a in range(dim):
                    l1[a] += work[a]
    return x


def job_starts(raw_lengths, batch_words: int, mis) -> list[tuple[int, int]]:
    jobs, start, size = [], 0, 0
    for s, n in enumerate(raw_lengths):
        if size + n <= batch_words:
            size += n
            continue
        if s > start or "no_empty_first_job" not in mis:
            jobs.append((start, s))
        start, size = s, n
    if start < len(raw_lengths):
        jobs.append((start, len(raw_lengths)))
    return jobs


def train(doc: dict, mis) -> dict:
    """Every ``expected`` field of a train_*.json file, from its inputs."""
    inp, cfg = doc["inputs"], doc["inputs"]["config"]
    sentences = expand(inp["sentences"])
    aids, counts, _, _ = vocab(sentences, cfg["min_count"], mis)
    row = {a: r for r, a in enumerate(aids)}
    s_int = sample_ints(counts, cfg["sample"], mis)
    table = cum_table(counts, cfg["ns_exponent"], mis)
    etab = exp_table()
    syn0 = np.array(inp["initial_vectors"], np.float32)
    syn1 = np.array(inp["initial_output"], np.float32)
    rs = np.random.RandomState(cfg["seed"])
    jobs = job_starts([len(s) for s in sentences], cfg["batch_words"], mis)
    n_sent, epochs = len(sentences), cfg["epochs"]
    index_mode = INDEX_F32 if "sigmoid_index_float32" in mis else INDEX_FMA if "sigmoid_index_fma" in mis else INDEX_F64
    records = []
    for ep in range(epochs):
        for lo, hi in jobs:
            done = hi if "alpha_after_job" in mis else lo
            progress = (ep + 1.0 * done / n_sent) / epochs
            alpha = np.float32(max(cfg["min_alpha"], cfg["alpha"] - (cfg["alpha"] - cfg["min_alpha"]) * progress))
            a, b = rs.randint(0, 2**24), rs.randint(0, 2**24)
            seed = a + 2**24 * b if "seed_halves_swapped" in mis else 2**24 * a + b
            x, kept, bounds = seed, [], [0]
            for s in sentences[lo:hi]:
                words = [row[t] for t in s if t in row]
                if not words:
                    bounds.append(len(kept))
                    continue
                for w in words:  # downsampling stops at the cap: later words draw nothing
                    if cfg["sample"]:
                        kw, x = downsample([w], s_int, x, mis)
                        if not kw:
                            continue
                    kept.append(w)
                    if len(kept) == CAP:
                        break
                bounds.append(len(kept))
                if len(kept) == CAP:
                    break
            after = x
            reduced = rs.randint(0, cfg["window"], len(kept)).astype(np.int64)
            x = int(train_job(syn0, syn1, np.array(kept, np.int64), np.array(bounds, np.int64), reduced,
                              np.uint64(x), alpha, cfg["window"], cfg["negative"], np.array(table, np.int64),
                              etab, "bisect_right" in mis, "redraw_equal_negative" in mis,
                              "clip_at_edges" in mis, index_mode))
            records.append(dict(epoch=ep, sentences=[lo, hi], alpha=float(alpha), lcg_seed=seed,
                                lcg_after_downsampling=after, kept_rows=kept, sentence_bounds=bounds,
                                reduced_windows=reduced.tolist(), kept=len(kept), lcg_end=x))
    got = dict(vocab_aids=aids, vocab_counts=counts, sample_int=s_int, cum_table=table, jobs=records,
               vectors=syn0.astype(np.float64).tolist(), output=syn1.astype(np.float64).tolist())
    if "sigmoid_table" in doc["expected"]:
        sig = doc["expected"]["sigmoid_table"]
        got["sigmoid_table"] = dict(indices=sig["indices"], values=[float(etab[i]) for i in sig["indices"]],
                                    dots=sig["dots"],
                                    dot_indices=[sigmoid_index(np.float32(f), index_mode) for f in sig["dots"]])
    return got


# ------------------------------------------------------------------------------------ files
def port(files: dict[str, dict], mis=frozenset()) -> dict[str, dict]:
    """The kit's documents with every Word2Vec ``expected`` value recomputed by this port."""
    out = {}
    for name, doc in files.items():
        got = copy.deepcopy(doc)
        exp, inp = got["expected"], doc["inputs"]
        if name == "lcg.json":
            exp["states"], exp["draws"] = [], []
            for x in inp["seeds"]:
                st, dr = [], []
                for _ in range(inp["steps"]):
                    dr.append(x >> 16)
                    x = lcg(x)
                    st.append(x)
                exp["states"].append(st)
                exp["draws"].append(dr)
        elif name == "vocab.json":
            exp["cases"] = []
            for mc in inp["min_counts"]:
                aids, counts, du, dt = vocab(inp["sentences"], mc, mis)
                exp["cases"].append(dict(aids=aids, counts=counts, dropped_unique=du, dropped_total=dt))
        elif name == "sample_int.json":
            exp["cases"] = [dict(sample_int=sample_ints(c["counts"], c["sample"], mis), retain_total=sum(c["counts"]),
                                 threshold_count=sample_threshold(sum(c["counts"]), c["sample"], mis))
                            for c in inp["cases"]]
            exp["downsample"] = []
            for c in inp["downsample"]:
                kept, x = downsample(c["words"], exp["cases"][c["case"]]["sample_int"], c["state"], mis)
                exp["downsample"].append(dict(kept=kept, state=x))
        elif name == "cum_table.json":
            exp["tables"] = [cum_table(c["counts"], c["ns_exponent"], mis, inp["domain"]) for c in inp["cases"]]
            table, x = exp["tables"][0], inp["draw_state"]
            exp["draw_rows"], exp["draw_states"] = [], []
            for _ in range(inp["draw_count"]):
                exp["draw_rows"].append(negative_row(table, x, mis))
                x = lcg(x)
                exp["draw_states"].append(x)
            exp["edge_draw_rows"] = [negative_row(table, s, mis) for s in inp["edge_draw_states"]]
        elif name.startswith("train_"):
            new = train(doc, mis)
            keys = set(doc["expected"]["jobs"][0])
            new["jobs"] = [{k: j[k] for k in doc["expected"]["jobs"][0] if k in keys} for j in new["jobs"]]
            for k in list(new):
                if k not in exp:
                    del new[k]
            exp.update(new)
        out[name] = got
    return out
