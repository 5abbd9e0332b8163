"""Regenerate or check the conformance files of this directory.

    python conformance/generate.py            rewrite every conformance/*.json from our implementation
    python conformance/generate.py --check    regenerate in memory, compare with the files on disk,
                                              exit 1 with a summary of every difference

Each file is ``{"name", "description", "tolerance", "inputs", "expected", "notes"}``; the
expected values come from this project's own code (w2v, eval), and each builder also checks
them against an independent reference: plain Python re-implementations everywhere, and gensim
(when installed) for the vocabulary, the downsampling thresholds, the negative-sampling table
and training (from the same initial weights; max abs difference recorded in ``notes``). A disagreement beyond the file's tolerance stops the run with an error naming the
file. docs/PORTING.md explains how a port uses the files.

Floats are written with Python's ``repr`` of a float64; float32 values are widened first, so the
text round-trips to the same float32 exactly. Integers are plain JSON integers; every integer
in these files is below 2**53, so a parser that reads numbers as doubles keeps them exact.
"""
from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # running as a script from a checkout
    sys.path.insert(0, str(HERE.parent))

from data_prep.dataset import TYPE_CODES, TYPE_NAMES  # noqa: E402
from eval.labels import Labels, labels_from_cut  # noqa: E402
from eval.metrics import WEIGHTS, score  # noqa: E402
from eval.submission import Submission  # noqa: E402
from w2v import kernels, knn  # noqa: E402
from w2v.config import W2VConfig  # noqa: E402
from w2v.trainer import Word2Vec, job_alphas  # noqa: E402
from w2v.vocab import build_vocab, cum_table, sample_ints  # noqa: E402

FORMAT_KEYS = ("name", "description", "tolerance", "inputs", "expected", "notes")
# --check: a float field with a porting tolerance may drift at most this much between two runs of
# our own code (e.g. another CPU's SIMD width changes float32 summation order); everything else
# must be identical.
DRIFT = {"abs": 1e-6, "rel": 1e-6}
SAMPLE_FILE = HERE.parent / "tests" / "data" / "otto_sample_train.jsonl"
EXACT = "exact"


class ConformanceError(ValueError):
    """Our implementation disagrees with a reference (or the fixtures are ill-posed)."""


def _f(a) -> list:
    """Floats (any shape) as nested lists of Python floats (float32 widened exactly)."""
    return np.asarray(a, dtype=np.float64).tolist()


def _i(a) -> list:
    return np.asarray(a, dtype=np.int64).tolist()


def _require(cond: bool, file: str, what: str) -> None:
    if not cond:
        raise ConformanceError(f"{file}: {what}")


def _gensim():
    """gensim's Word2Vec module, or None when gensim is not installed."""
    try:
        from gensim.models import word2vec
    except ImportError:
        return None
    return word2vec


def _gensim_version() -> str | None:
    try:
        import gensim
    except ImportError:
        return None
    return gensim.__version__


def _gensim_model(word2vec, sentences, **params):
    """A gensim skip-gram/negative-sampling model with its vocabulary built on ``str`` words."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = word2vec.Word2Vec(sg=1, hs=0, workers=1, **params)
        g.build_vocab([[str(w) for w in s] for s in sentences])
    return g


def _corpus_from_counts(counts) -> list[list[int]]:
    """Word ``i`` repeated ``counts[i]`` times, interleaved, in sentences of 10 words."""
    left = list(counts)
    toks = []
    while any(left):
        for w, c in enumerate(left):
            if c:
                toks.append(w)
                left[w] -= 1
    return [toks[i:i + 10] for i in range(0, len(toks), 10)]


# ----------------------------------------------------------------------------------------- LCG
def build_lcg(gensim_mod) -> dict:
    seeds = [0, 1, 11, 0xFFFFFFFFFFFF, 2**47 + 3, 2**24 * 12345 + 678, 2**24 * 16777 + 2**23]
    steps = 8
    states, draws = [], []
    for s in seeds:
        out = np.empty(steps, np.uint64)
        kernels.lcg_sequence(np.uint64(s), steps, out)
        ref, x = [], s
        for _ in range(steps):
            x = (x * 25214903917 + 11) & (2**48 - 1)
            ref.append(x)
        _require([int(v) for v in out] == ref, "lcg.json", f"seed {s}: kernels.lcg_sequence != Python big ints")
        states.append(ref)
        draws.append([x >> 16 for x in [s] + ref[:-1]])
    return dict(
        name="lcg",
        description=("48-bit linear congruential generator of word2vec.c and gensim: "
                     "next = (state * 25214903917 + 11) mod 2**48. states[i][n] is the state after n+1 steps "
                     "from seeds[i]; draws[i][n] = (state before step n+1) >> 16 is the 32-bit random number "
                     "that step hands out (downsampling compares it with sample_int, negative sampling takes "
                     "it modulo cum_table[-1]). All values are < 2**48 < 2**53, exact as JSON numbers."),
        tolerance={"default": EXACT},
        inputs=dict(seeds=seeds, steps=steps),
        expected=dict(states=states, draws=draws),
        notes={"reference": "Python arbitrary-precision integers"},
    )


# ---------------------------------------------------------------------------------- sample_int
SAMPLE_COUNTS = [1000, 300, 120, 50, 7, 3, 1]


def build_sample_int(gensim_mod) -> dict:
    cases = [dict(counts=SAMPLE_COUNTS, sample=s) for s in (1e-3, 0.1, 0.0, 5.0)]
    cases.append(dict(counts=[5, 5, 5, 5], sample=0.05))
    cases.append(dict(counts=[2], sample=0.5))
    results = []
    for case in cases:
        counts, sample = case["counts"], case["sample"]
        s_int, stats = sample_ints(np.array(counts, np.int64), sample)
        total = sum(counts)
        if not sample:
            thr = float(total)
        elif sample < 1.0:
            thr = sample * total
        else:
            thr = float(int(sample * (3 + math.sqrt(5)) / 2))
        ref = []
        for c in counts:
            p = min(1.0, (math.sqrt(c / thr) + 1) * (thr / c))
            ref.append(int(p * (2**32 - 1)))
        _require(_i(s_int) == ref, "sample_int.json", f"case {case}: sample_ints != Python reference")
        if gensim_mod is not None:
            g = _gensim_model(gensim_mod, _corpus_from_counts(counts), min_count=1, sample=sample, vector_size=2)
            got = [int(g.wv.get_vecattr(str(w), "sample_int")) for w in range(len(counts))]
            _require(got == ref, "sample_int.json", f"case {case}: gensim sample_int {got} != ours {ref}")
        results.append(dict(sample_int=ref, retain_total=total, threshold_count=thr))
    # downsampling decisions (train_batch_sg): the first draw of each case is constructed to equal a
    # threshold exactly (the word is KEPT: dropped only when sample_int < draw), or to exceed it by one
    thr0 = results[0]["sample_int"]
    ds_inputs, ds_expected = [], []
    for word, delta, words in ((0, 0, [0, 1, 2, 3, 4, 5, 6]), (2, 1, [2, 0, 6, 1, 3]), (6, 0, [6, 6, 0, 5])):
        state = ((thr0[word] + delta) << 16) | 0x5A5A
        kept, x = [], state
        for w in words:
            r = x >> 16
            x = (x * 25214903917 + 11) & (2**48 - 1)
            if thr0[w] < r:
                continue
            kept.append(w)
        toks = np.array(words, np.int32)
        out = np.empty(len(words), np.int32)
        n, st, _ = kernels.downsample(toks, 0, len(words), kernels.Downsampling(np.array(thr0, np.uint32), True),
                                      np.uint64(state), out, 0, len(words) + 1)
        _require(_i(out[:n]) == kept and int(st) == x, "sample_int.json", "kernels.downsample != Python reference")
        _require((thr0[word] < (state >> 16)) == bool(delta) and words[0] == word, "sample_int.json",
                 "the constructed first draw misses")
        ds_inputs.append(dict(case=0, words=words, state=state))
        ds_expected.append(dict(kept=kept, state=x))
    return dict(
        name="sample_int",
        description=("Downsampling thresholds (gensim Word2Vec.prepare_vocab). N = sum(counts); T = N if sample == 0 "
                     "(no downsampling: the thresholds are then unused), sample * N if 0 < sample < 1, "
                     "float(int(sample * (3 + sqrt(5)) / 2)) if sample >= 1; p = min(1, (sqrt(c / T) + 1) * (T / c)) in "
                     "float64; sample_int = uint32(trunc(p * (2**32 - 1))). expected.cases[i] belongs to "
                     "inputs.cases[i]; retain_total is N, threshold_count is T. downsample: word by word, "
                     "r = state >> 16, then one LCG step (lcg.json); the word (a row of inputs.cases[case]) is dropped "
                     "iff sample_int[word] < r, so r == sample_int keeps it (each case's first draw is built to hit "
                     "that edge); expected.downsample[i] gives the kept words and the final state."),
        tolerance={"default": EXACT},
        inputs=dict(cases=cases, downsample=ds_inputs),
        expected=dict(cases=results, downsample=ds_expected),
        notes={"reference": "Python float64 formula; gensim Word2Vec(min_count=1).build_vocab "
                            "wv.get_vecattr(word, 'sample_int') on a corpus with these counts",
               "gensim": _gensim_version()},
    )


# ----------------------------------------------------------------------------------- cum_table
def _py_cum_table(counts, exponent, domain=2**31 - 1) -> list[int]:
    z = 0.0
    for c in counts:
        z += c ** float(exponent)
    out, cum = [], 0.0
    for c in counts:
        cum += c ** float(exponent)
        out.append(round(cum / z * domain))
    return out


def build_cum_table(gensim_mod) -> dict:
    cases = [dict(counts=SAMPLE_COUNTS, ns_exponent=e) for e in (0.75, 0.5, 1.0, 0.0, -0.5)]
    cases += [dict(counts=[1, 1], ns_exponent=1.0), dict(counts=[7, 7, 7], ns_exponent=0.75),
              dict(counts=[42], ns_exponent=0.75),
              # 3868**0.75 / (3868**0.75 + 859**0.75) * domain is exactly 1622574016.5 in float64:
              # half to even gives ...016, half away from zero ...017
              dict(counts=[3868, 859], ns_exponent=0.75)]
    tables = []
    g = None
    for case in cases:
        counts, e = case["counts"], case["ns_exponent"]
        ours = _i(cum_table(np.array(counts, np.int64), e))
        ref = _py_cum_table(counts, e)
        _require(ours == ref, "cum_table.json", f"case {case}: cum_table {ours} != Python reference {ref}")
        if gensim_mod is not None:
            g = _gensim_model(gensim_mod, _corpus_from_counts(counts), min_count=1, sample=0, vector_size=2)
            g.ns_exponent = e
            g.make_cum_table()
            _require(_i(g.cum_table) == ours, "cum_table.json", f"case {case}: gensim make_cum_table differs")
        tables.append(ours)
    # negative draws from the first table
    table = np.array(tables[0], np.uint32)
    state0 = 2**24 * 4321 + 8765
    state, rows, states = np.uint64(state0), [], []
    none = np.empty(0, np.uint64)
    x = state0
    for _ in range(12):
        r, state = kernels.draw_negative(table, none, state)
        ref_r = bisect.bisect_left(tables[0], (x >> 16) % tables[0][-1])
        x = (x * 25214903917 + 11) & (2**48 - 1)
        _require(int(r) == ref_r and int(state) == x, "cum_table.json", "draw_negative != Python bisect_left")
        rows.append(ref_r)
        states.append(x)
    v = (3868 ** 0.75) / ((3868 ** 0.75) + (859 ** 0.75)) * (2**31 - 1)
    _require(v == 1622574016.5 and tables[-1][0] == 1622574016, "cum_table.json", "the .5 tie case moved")
    # draws whose value (state >> 16) % table[-1] equals a table entry: bisect_left returns that entry's row
    edge_states, edge_rows = [], []
    for k in (0, 1, 3):
        st = (tables[0][k] << 16) | 0x0F0F
        r, _ = kernels.draw_negative(table, none, np.uint64(st))
        _require(int(r) == k == bisect.bisect_left(tables[0], (st >> 16) % tables[0][-1]), "cum_table.json",
                 "edge draw")
        edge_states.append(st)
        edge_rows.append(k)
    return dict(
        name="cum_table",
        description=("Negative-sampling table (gensim Word2Vec.make_cum_table, domain = 2**31 - 1): Z = sum of "
                     "c ** ns_exponent (float64, vocabulary order); table[w] = round_half_even(cumsum_w / Z * domain) "
                     "as uint32. draws: starting from LCG state draw_state, each negative is "
                     "row = bisect_left(table, (state >> 16) % table[-1]) with table = expected.tables[0], then one "
                     "LCG step; draw_rows[n] / draw_states[n] are the row and the state after draw n+1. "
                     "edge_draw_rows[i]: the row of ONE draw from state edge_draw_states[i], whose value equals an "
                     "entry of tables[0] (the first index whose entry is >= the value, not the first that is >)."),
        tolerance={"default": EXACT},
        inputs=dict(cases=cases, domain=2**31 - 1, draw_state=state0, draw_count=12, edge_draw_states=edge_states),
        expected=dict(tables=tables, draw_rows=rows, draw_states=states, edge_draw_rows=edge_rows),
        notes={"reference": "Python float64 loop with round(); gensim make_cum_table on a model whose vocabulary "
                            "has these counts", "gensim": _gensim_version()},
    )


# --------------------------------------------------------------------------------------- vocab
VOCAB_CORPUS = [
    [40, 12, 40, 7, 99],
    [12, 5, 5, 31],
    [7, 12, 40, 8],
    [99, 31, 7, 3],
    [5],
    [77, 8, 3, 12],
    [1000000007, 1000000007],
]


def build_vocab_file(gensim_mod) -> dict:
    tokens = np.array([w for s in VOCAB_CORPUS for w in s], np.int64)
    results = []
    for mc in (1, 2, 3):
        v = build_vocab(tokens, mc)
        # reference: gensim's rule from first principles
        first, cnt = {}, {}
        for t in tokens.tolist():
            first.setdefault(t, len(first))
            cnt[t] = cnt.get(t, 0) + 1
        kept = [w for w in first if cnt[w] >= mc]  # first-appearance order
        order = sorted(range(len(kept)), key=lambda i: (-cnt[kept[i]], -i))
        ref = [kept[i] for i in order]
        _require(_i(v.aids) == ref, "vocab.json", f"min_count={mc}: order {_i(v.aids)} != reference {ref}")
        if gensim_mod is not None:
            g = _gensim_model(gensim_mod, VOCAB_CORPUS, min_count=mc, sample=0, vector_size=2)
            _require(g.wv.index_to_key == [str(a) for a in ref], "vocab.json",
                     f"min_count={mc}: gensim order {g.wv.index_to_key} != ours")
            _require([int(g.wv.get_vecattr(str(a), "count")) for a in ref] == _i(v.counts), "vocab.json",
                     f"min_count={mc}: gensim counts differ")
        results.append(dict(aids=ref, counts=_i(v.counts), dropped_unique=v.stats["dropped_unique"],
                            dropped_total=v.stats["dropped_total"]))
    return dict(
        name="vocab",
        description=("Vocabulary order (gensim prepare_vocab + KeyedVectors.sort_by_descending_frequency): count "
                     "every word, keep words with count >= min_count in order of FIRST appearance, then sort by "
                     "count descending; among equal counts the word that appeared first comes LAST "
                     "(np.lexsort((-indices, -counts))). expected.cases[i] belongs to min_counts[i]; row r of "
                     "the model is aids[r]. dropped_*: words / occurrences below min_count."),
        tolerance={"default": EXACT},
        inputs=dict(sentences=VOCAB_CORPUS, min_counts=[1, 2, 3]),
        expected=dict(cases=results),
        notes={"reference": "first-principles Python sort; gensim Word2Vec.build_vocab index_to_key and counts "
                            "(words given as decimal strings)", "gensim": _gensim_version()},
    )


# ------------------------------------------------------------------------------------ training
TRAIN_CORPUS = [
    [101, 102, 103, 104, 101, 105],
    [106, 107, 101, 102],
    [108, 109, 110, 111, 112, 108, 109],
    [113, 114, 115, 101, 103],
    [199],                                  # only an out-of-vocabulary word
    [102, 104, 106, 108, 110, 112, 114, 198, 101],
    [103],                                  # length 1
    [105, 107, 109, 111, 113, 115, 113, 105, 106, 107, 110, 111, 112, 114, 115, 104],
]


def _lcg_advance(state: int, steps: int) -> int:
    for _ in range(steps):
        state = (state * 25214903917 + 11) & (2**48 - 1)
    return state


def _recorded_jobs(cfg: W2VConfig, sentences, v0, u0, file: str):
    """Train a parity model job by job through ``Word2Vec.parity_jobs`` (the trainer's own schedule),
    recording each job: (jobs, trained vectors, trained output). A job's LCG end state is its state
    after downsampling advanced by ``negative`` steps per trained pair."""
    model = Word2Vec(cfg).build_vocab_from_sequences(sentences)
    model.set_weights(v0, u0)
    _, c_tab, e_tab = model.tables()
    upd = kernels.make_update(cfg.negative, c_tab, e_tab, cfg.window, cfg.sigmoid_edge == "clip", False)
    w = kernels.Weights(model.vectors, model.output)
    corpus = model.corpus
    job_starts = kernels.gensim_jobs(corpus.raw_lengths, cfg.batch_words)
    scr = kernels.make_scratch(cfg.vector_size, cfg.negative)
    jobs = []
    for ep in range(cfg.epochs):
        alphas = job_alphas(job_starts, corpus.n_sentences, ep, cfg.epochs, cfg.alpha, cfg.min_alpha)
        for j in range(job_starts.shape[0] - 1):
            pj, seeds, dropped = model.parity_jobs(job_starts, alphas, j, j + 1)
            n, ns = int(pj.eff_start[1]), int(pj.n_sent[0])
            _, pairs = kernels.parity_train_jobs(w, pj, upd, scr)
            jobs.append(dict(epoch=ep, sentences=[int(job_starts[j]), int(job_starts[j + 1])],
                             alpha=float(alphas[j]), lcg_seed=int(seeds[0]),
                             lcg_after_downsampling=int(pj.state[0]), kept_rows=_i(pj.eff[:n]),
                             sentence_bounds=_i(pj.bounds[:ns + 1]), reduced_windows=_i(pj.reduced[:n]),
                             lcg_end=_lcg_advance(int(pj.state[0]), cfg.negative * int(pairs)), kept=n,
                             dropped_by_job_cap=dropped))
    return jobs, model.vectors, model.output


def _train_case(name: str, epochs: int, sample: float, gensim_mod) -> dict:
    file = f"{name}.json"
    params = dict(vector_size=4, window=2, negative=2, sample=sample, min_count=2, seed=3, alpha=0.05,
                  min_alpha=0.0001, batch_words=12, ns_exponent=0.75)
    cfg = W2VConfig(mode="parity", workers=1, epochs=epochs, compute_loss=True, **params)
    model = Word2Vec(cfg).build_vocab_from_sequences(TRAIN_CORPUS)
    V, D = model.aids.shape[0], cfg.vector_size
    _require(V == 15, file, f"the fixture should have 15 vocabulary words, has {V}")
    rng = np.random.default_rng(2024 + epochs)
    v0 = (rng.standard_normal((V, D)) * 0.3).astype(np.float32)
    u0 = (rng.standard_normal((V, D)) * 0.3).astype(np.float32)
    model.set_weights(v0, u0)
    s_int, c_tab, e_tab = model.tables()

    # Replay of the trainer's parity epoch with the MT19937 draws recorded, so a port can train from
    # the recorded job seeds and reduced windows without reimplementing numpy's RandomState.
    jobs, vec, out = _recorded_jobs(cfg, TRAIN_CORPUS, v0, u0, file)
    _require(all(j["dropped_by_job_cap"] == 0 for j in jobs), file, "the fixture must not hit the parity job cap")
    for j in jobs:
        del j["dropped_by_job_cap"], j["kept"]
    model.train(progress=False)
    _require(np.array_equal(model.vectors, vec) and np.array_equal(model.output, out), file,
             "Word2Vec.train differs from the recorded replay of its parity epochs")
    _require(float(np.abs(model.output - u0).max()) > 100 * 1e-4, file, "training barely moved the weights")

    extra = {}
    if epochs == 1:
        extra["sigmoid_table"] = _sigmoid_samples(e_tab, file)
    notes = {"gensim": _gensim_version()}
    if gensim_mod is not None:
        g = _gensim_model(gensim_mod, TRAIN_CORPUS, epochs=epochs, **params)
        _require(g.wv.index_to_key == [str(a) for a in model.aids], file, "gensim vocabulary order differs")
        g.wv.vectors[:] = v0
        g.syn1neg[:] = u0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g.train([[str(w) for w in s] for s in TRAIN_CORPUS], total_examples=g.corpus_count, epochs=epochs)
        dv = float(np.abs(model.vectors - g.wv.vectors).max())
        du = float(np.abs(model.output - g.syn1neg).max())
        _require(max(dv, du) <= 1e-4, file, f"gensim disagrees: max abs diff vectors {dv:.3g}, output {du:.3g} > 1e-4")
        notes["max_abs_diff_vs_gensim"] = {"vectors": dv, "output": du}
    notes["reference"] = ("gensim Word2Vec(sg=1, hs=0, workers=1) with the same settings and initial weights; "
                          "our parity trainer replayed job by job")
    return dict(
        name=name,
        description=(f"Parity-mode skip-gram negative sampling, {epochs} epoch(s), from the given initial weights "
                     "(inputs.initial_vectors = gensim wv.vectors / syn0, inputs.initial_output = syn1neg, rows in "
                     "vocabulary order). expected.vocab_aids/counts, sample_int and cum_table are the tables; "
                     "expected.jobs lists, per job in training order, the sentence range [lo, hi), the job's "
                     "float32 learning rate, the LCG seed (2**24 * randint + randint from numpy RandomState(seed)), "
                     "the kept (downsampled) rows with per-sentence bounds, the reduced windows "
                     "(RandomState.randint(0, window, n_kept)) and the LCG state after downsampling and after "
                     "training; expected.vectors/output are the weights after training; epoch_losses is the mean "
                     "SGNS loss per pair (docs/ALGORITHM.md section 10). Sentences are lists of aids (words)."
                     + (" expected.sigmoid_table: sample entries (indices -> values) of the float32 table "
                        "table[i] = f32(e / (e + 1)), e = f32(exp((f32(i) / 1000f * 2.0 - 1.0) * 6.0)) (f32 division, "
                        "the rest in float64), and the table index int((f64(f) + 6.0) * 83.0) of some float32 dots f."
                        if epochs == 1 else "")),
        tolerance={"default": EXACT, "vectors": {"abs": 1e-4}, "output": {"abs": 1e-4},
                   "epoch_losses": {"abs": 1e-4}},
        inputs=dict(sentences=TRAIN_CORPUS, config=dict(params, epochs=epochs, sg=1, hs=0, workers=1,
                                                        sigmoid_edge="skip"),
                    initial_vectors=_f(v0), initial_output=_f(u0)),
        expected=dict(vocab_aids=_i(model.aids), vocab_counts=_i(model.counts), sample_int=_i(s_int),
                      cum_table=_i(c_tab), jobs=jobs, vectors=_f(model.vectors), output=_f(model.output),
                      epoch_losses=[float(x) for x in model.epoch_losses], **extra),
        notes=notes,
    )


def _sigmoid_samples(e_tab: np.ndarray, file: str) -> dict:
    """Entries of the 1000-entry float32 sigmoid table and the index of some float32 dots."""
    idx = [0, 1, 2, 83, 250, 497, 498, 499, 500, 501, 750, 994, 995, 996, 999]
    # -5.4457831...: the index in float32 arithmetic would be 46, in float64 it is 45;
    # -1.75 * 2**-52: (f + 6.0) * 83.0 is 498.0 in float64, a fused multiply-add (f * 83 + 498) gives 497
    dots = np.array([-5.999999, -5.9, -5.4457831382751465, -1.0, -0.012048, -0.012049, -1.75 * 2.0**-52, 0.0,
                     1e-7, 0.5, 1.0, 2.987951, 5.9, 5.99999], np.float32)
    where = [int(kernels.sigmoid_lookup(np.arange(1000, dtype=np.float32), d)) for d in dots]
    ref = [int((float(d) + 6.0) * 83.0) for d in dots]
    _require(where == ref, file, f"sigmoid index {where} != int((f + 6) * 83) {ref}")
    f32_idx = [int(np.float32(np.float32(d + np.float32(6)) * np.float32(83))) for d in dots]
    fma_idx = [int(float(d) * 83.0 + 498.0) for d in dots]  # f * 83 is exact in float64: one rounding
    _require(f32_idx != ref and fma_idx != ref, file, "the sigmoid dots no longer decide float32 / fma indices")
    for i in idx:
        x = float(np.float32(i) / np.float32(1000))
        e = np.float32(math.exp((x * 2.0 - 1.0) * 6.0))
        _require(np.float32(float(e) / (float(e) + 1.0)) == e_tab[i], file, f"sigmoid table entry {i} differs")
    return dict(indices=idx, values=_f(e_tab[idx]), dots=_f(dots), dot_indices=ref)


def build_train_1epoch(gensim_mod) -> dict:
    return _train_case("train_1epoch", 1, 0.0, gensim_mod)


def build_train_3epochs(gensim_mod) -> dict:
    return _train_case("train_3epochs", 3, 0.01, gensim_mod)


# ------------------------------------------------------------------------------ training edges
EDGE_CYCLE, EDGE_LONG = [201, 202, 203, 204, 205, 206], 10_005
EDGE_SHORT = [[210, 211, 201, 212], [213, 202, 210], [211], [214, 213, 212, 211, 210, 203], [204, 214, 205, 210],
              [206, 212, 213], [201, 214, 211, 202, 212]]


def expand_sentences(spec: list) -> list[list[int]]:
    """Sentences of a conformance file: a list of aids, or ``{"cycle": [...], "length": n}`` for
    ``[cycle[i % len(cycle)] for i in range(n)]``."""
    out = []
    for s in spec:
        if isinstance(s, dict):
            c = s["cycle"]
            out.append([c[i % len(c)] for i in range(s["length"])])
        else:
            out.append(list(s))
    return out


def build_train_edges(gensim_mod) -> dict:
    file = "train_edges.json"
    spec = [dict(cycle=EDGE_CYCLE, length=EDGE_LONG)] + EDGE_SHORT
    sentences = expand_sentences(spec)
    params = dict(vector_size=4, window=1, negative=3, sample=0.0, min_count=1, seed=4, alpha=0.005,
                  min_alpha=0.0001, batch_words=20, ns_exponent=0.75)
    cfg = W2VConfig(mode="parity", workers=1, epochs=1, compute_loss=True, **params)
    model = Word2Vec(cfg).build_vocab_from_sequences(sentences)
    V, D = model.aids.shape[0], cfg.vector_size
    rng = np.random.default_rng(77)
    v0 = (rng.standard_normal((V, D)) * 1.8).astype(np.float32)
    u0 = (rng.standard_normal((V, D)) * 1.8).astype(np.float32)
    model.set_weights(v0, u0)
    s_int, c_tab, _ = model.tables()
    jobs, vec, out = _recorded_jobs(cfg, sentences, v0, u0, file)
    _require(jobs[0]["sentences"] == [0, 0] and jobs[0]["kept"] == 0, file, "the first job should be empty")
    _require(jobs[1]["sentences"] == [0, 1] and jobs[1]["kept"] == 10_000 and jobs[1]["dropped_by_job_cap"] == 5,
             file, "job 1 should be the long sentence, capped at 10,000 kept words")
    records = [{k: j[k] for k in ("epoch", "sentences", "alpha", "lcg_seed", "lcg_after_downsampling", "kept",
                                  "lcg_end")} for j in jobs]
    model.train(progress=False)
    _require(np.array_equal(model.vectors, vec) and np.array_equal(model.output, out), file,
             "Word2Vec.train differs from the job-by-job replay")
    clip = Word2Vec(W2VConfig(**{**cfg.to_dict(), "sigmoid_edge": "clip"})).build_vocab_from_sequences(sentences)
    clip.set_weights(v0, u0)
    clip.train(progress=False)
    _require(not np.array_equal(clip.vectors, model.vectors), file, "no |f| >= 6 event: clip and skip agree")
    notes = {"gensim": _gensim_version()}
    if gensim_mod is not None:
        g = _gensim_model(gensim_mod, sentences, epochs=cfg.epochs, **params)
        _require(g.wv.index_to_key == [str(a) for a in model.aids], file, "gensim vocabulary order differs")
        g.wv.vectors[:] = v0
        g.syn1neg[:] = u0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g.train([[str(w) for w in s] for s in sentences], total_examples=g.corpus_count, epochs=cfg.epochs)
        dv = float(np.abs(model.vectors - g.wv.vectors).max())
        du = float(np.abs(model.output - g.syn1neg).max())
        _require(max(dv, du) <= 1e-4, file, f"gensim disagrees: max abs diff vectors {dv:.3g}, output {du:.3g}")
        notes["max_abs_diff_vs_gensim"] = {"vectors": dv, "output": du}
    notes["reference"] = ("gensim Word2Vec(sg=1, hs=0, workers=1), same settings and initial weights; "
                          "Word2Vec.train and a job-by-job replay of its schedule; the same run with "
                          "sigmoid_edge='clip' differs (the fixture has |f| >= 6 terms)")
    return dict(
        name="train_edges",
        description=("Parity-mode training at the edges, 1 epoch from the given initial weights (as in "
                     "train_1epoch.json): window = 1, sample = 0 (no downsampling draws), large initial weights "
                     "(dot products beyond +-6: the term is skipped), a vocabulary of 11 words with negative = 3 "
                     "(negatives equal to the centre word: skipped, not redrawn). inputs.sentences[0] is "
                     "{cycle, length}: the list [cycle[i % len(cycle)] for i < length], 10,005 words, longer than "
                     "batch_words = 20, so the epoch starts with an EMPTY job (which still draws its two "
                     "randint seeds) and the next job, that sentence alone, trains only its first 10,000 words "
                     "(gensim's per-job cap). The reduced windows are randint(0, 1, n): numpy returns n zeros "
                     "and consumes no random numbers. expected.jobs per job in training order: sentence range, "
                     "float32 alpha, LCG seed, LCG state after downsampling, number of kept words, LCG state after "
                     "the job's negative draws (the rows and windows are not listed: generate them as in "
                     "train_1epoch.json)."),
        tolerance={"default": EXACT, "vectors": {"abs": 1e-4}, "output": {"abs": 1e-4}},
        inputs=dict(sentences=spec, config=dict(params, epochs=cfg.epochs, sg=1, hs=0, workers=1,
                                                sigmoid_edge="skip"),
                    initial_vectors=_f(v0), initial_output=_f(u0)),
        expected=dict(vocab_aids=_i(model.aids), vocab_counts=_i(model.counts), cum_table=_i(c_tab), jobs=records,
                      vectors=_f(model.vectors), output=_f(model.output)),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------- top-k
def build_topk(gensim_mod) -> dict:
    rng = np.random.default_rng(11)
    base = np.round(rng.standard_normal((10, 4)) * 4) / 4  # quarter steps: exact in float32
    m = base.astype(np.float32)
    m[1] = 2 * m[0]          # same direction as row 0: exact tie
    m[2] = 0                 # zero row
    m[4] = m[3]              # duplicate: exact tie
    m[6] = 0                 # zero row
    m[9] = -m[0]             # opposite of row 0
    queries = np.stack([m[0], np.array([0.5, -1.0, 0.25, 2.0], np.float32), np.zeros(4, np.float32), m[3],
                        np.array([1.0, 1.0, 1.0, 1.0], np.float32)])
    cases = [dict(query=0, k=3, exclude=[]), dict(query=0, k=20, exclude=[0]), dict(query=1, k=5, exclude=[]),
             dict(query=2, k=4, exclude=[1]), dict(query=3, k=4, exclude=[3, 8, 3]), dict(query=4, k=0, exclude=[]),
             dict(query=4, k=10, exclude=list(range(0, 10, 2)))]
    inv = knn.inverse_norms(m)
    m64 = m.astype(np.float64)
    n64 = np.sqrt((m64 ** 2).sum(1))
    results = []
    for c in cases:
        q = queries[c["query"]]
        s, ids = knn.topk(m, inv, q, c["k"], exclude=np.array(c["exclude"], np.int64) if c["exclude"] else None)
        q64 = q.astype(np.float64)
        qn = math.sqrt(float((q64 ** 2).sum()))
        ref = np.where(n64 > 0, m64 @ q64 / np.where(n64 > 0, n64, 1) / (qn if qn > 0 else 1), 0.0)
        if qn == 0:
            ref[:] = 0.0
        order = [i for i in sorted(range(10), key=lambda i: (-ref[i], i)) if i not in c["exclude"]][:c["k"]]
        _require(_i(ids) == order, "topk.json", f"case {c}: ids {_i(ids)} != float64 reference {order}")
        _require(bool(np.all(np.abs(s - ref[order]) <= 1e-6)), "topk.json", f"case {c}: scores off by > 1e-6")
        # the fixture is well posed: scores are exact ties or at least 1e-4 apart
        vals = sorted(set(ref.tolist()))
        _require(all(b - a > 1e-4 for a, b in zip(vals, vals[1:])), "topk.json", "near-tie in the fixture")
        results.append(dict(ids=_i(ids), scores=_f(s)))
    nb_ids, nb_scores = knn.build_neighbor_table(m, 4, n_threads=1)
    for r in range(10):
        s, ids = knn.topk(m, inv, m[r], 4, exclude=np.array([r]))
        _require(_i(nb_ids[r]) == _i(ids), "topk.json", f"neighbour table row {r} != topk excluding the row")
        _require(bool(np.all(np.abs(nb_scores[r] - s) <= 1e-6)), "topk.json", f"neighbour row {r}: scores differ")
    return dict(
        name="topk",
        description=("Exact cosine top-k. score_i = (q . v_i) / (||q|| ||v_i||); a zero row or a zero query scores "
                     "exactly 0. Order: score descending, then row ascending (ties are broken by the smaller row). "
                     "Excluded rows (duplicates allowed) are skipped; k' = min(k, eligible rows). "
                     "expected.cases[i] belongs to inputs.cases[i] (query = row of inputs.queries). "
                     "expected.neighbors / neighbor_scores: the model index (neighbors.npy): for every row of the "
                     "matrix its k = neighbors_k best other rows (the row itself excluded)."),
        tolerance={"default": EXACT, "scores": {"abs": 1e-6, "rel": 1e-6}, "neighbor_scores": {"abs": 1e-6, "rel": 1e-6}},
        inputs=dict(matrix=_f(m), queries=_f(queries), cases=cases, neighbors_k=4),
        expected=dict(cases=results, neighbors=_i(nb_ids), neighbor_scores=_f(nb_scores)),
        notes={"reference": "float64 numpy cosine, sorted by (-score, row); w2v.knn.topk and build_neighbor_table",
               "ties": "row 1 = 2 * row 0 and row 4 = row 3 tie exactly with their originals; rows 2 and 6 are zero"},
    )


# ------------------------------------------------------------------------------------ OTTO labels
def _ev(aid, ts, t):
    return {"aid": aid, "ts": ts, "type": t}


def _label_sessions() -> list[dict]:
    t0 = 1661724000000
    hand = [
        dict(session=100, cut=2, events=[_ev(5, t0, "clicks"), _ev(6, t0 + 1, "carts"), _ev(7, t0 + 2, "clicks"),
                                         _ev(8, t0 + 3, "clicks"), _ev(6, t0 + 4, "carts"), _ev(9, t0 + 5, "carts"),
                                         _ev(6, t0 + 6, "orders"), _ev(9, t0 + 6, "orders")]),
        dict(session=101, cut=1, events=[_ev(1, t0, "clicks"), _ev(2, t0 + 9, "carts"), _ev(3, t0 + 9, "orders")]),
        dict(session=102, cut=2, events=[_ev(4, t0, "clicks"), _ev(4, t0 + 1, "clicks"), _ev(4, t0 + 2, "carts")]),
        dict(session=103, cut=1, events=[_ev(11, t0, "carts"), _ev(0, t0 + 5, "clicks"), _ev(11, t0 + 6, "carts")]),
        dict(session=104, cut=2, events=[_ev(3, t0, "carts"), _ev(3, t0 + 1, "orders"), _ev(3, t0 + 2, "clicks"),
                                         _ev(12, t0 + 3, "clicks")]),
        dict(session=105, cut=1, events=[_ev(2, t0, "clicks"), _ev(1, t0 + 1, "clicks")]),
    ]
    real = {}
    with open(SAMPLE_FILE, "rb") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["session"] in (1, 9):
                real[obj["session"]] = obj["events"]
    hand.append(dict(session=1, cut=14, events=real[1]))
    hand.append(dict(session=9, cut=3, events=real[9]))
    return hand


def _py_labels(events, cut) -> dict:
    after = events[cut:]
    out = {}
    clicks = [e["aid"] for e in after if e["type"] == "clicks"]
    if clicks:
        out["clicks"] = clicks[0]
    for t in ("carts", "orders"):
        s = sorted({e["aid"] for e in after if e["type"] == t})
        if s:
            out[t] = s
    return out


def build_otto_labels(gensim_mod) -> dict:
    sessions = _label_sessions()
    _require(all(1 <= s["cut"] <= len(s["events"]) - 1 for s in sessions), "otto_labels.json", "cut out of range")
    lens = [len(s["events"]) for s in sessions]
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    aid = np.array([e["aid"] for s in sessions for e in s["events"]], np.int64)
    typ = np.array([TYPE_CODES[e["type"]] for s in sessions for e in s["events"]], np.uint8)
    labels = labels_from_cut(np.array([s["session"] for s in sessions], np.int64), offsets, aid, typ,
                             np.array([s["cut"] for s in sessions], np.int64))
    rows = []
    for i, s in enumerate(sessions):
        got = labels.row(i)
        ref = _py_labels(s["events"], s["cut"])
        _require(got == ref, "otto_labels.json", f"session {s['session']}: labels {got} != reference {ref}")
        rows.append({"session": s["session"], "labels": got})
    return dict(
        name="otto_labels",
        description=("OTTO test labels of a cut session (otto-de/recsys-dataset labels.py): the session's events "
                     "(OTTO JSONL order) are cut after the first `cut` events, 1 <= cut <= len(events) - 1 (at least one "
                     "event kept, at least one after, as otto-eval split cuts); labels.clicks = aid of the first click "
                     "after the cut, labels.carts / labels.orders = the DISTINCT aids carted / ordered after the cut, "
                     "ascending. A key is absent when that target is empty (as in the OTTO labels files). Events "
                     "before the cut never count. A next click on aid 0 is kept (the official script's truthiness "
                     "test loses it)."),
        tolerance={"default": EXACT},
        inputs=dict(sessions=sessions),
        expected=dict(labels=rows),
        notes={"reference": "plain Python implementation of the definition; eval.labels.labels_from_cut",
               "source": "sessions 1 and 9 are real sessions of tests/data/otto_sample_train.jsonl"},
    )


# ------------------------------------------------------------------------------- weighted recall
def _py_score(labels: list[dict], preds: list[dict], k: int) -> dict:
    """otto-de/recsys-dataset evaluate.py semantics (micro-averaged recall@k)."""
    by = {}
    for p in preds:  # last row wins
        by[(p["session"], p["type"])] = p["aids"]
    hits = {t: 0 for t in TYPE_NAMES}
    truths = {t: 0 for t in TYPE_NAMES}
    for row in labels:
        for t in TYPE_NAMES:
            truth = row["labels"].get(t)
            if truth is None:
                continue
            truth = {truth} if t == "clicks" else set(truth)
            if not truth:
                continue
            pred = set(by.get((row["session"], t), [])[:k])
            hits[t] += len(pred & truth)
            truths[t] += min(k, len(truth))
    out = {t: (hits[t] / truths[t] if truths[t] else 0.0) for t in TYPE_NAMES}
    out["total"] = sum(WEIGHTS[t] * out[t] for t in TYPE_NAMES)
    out["hits"], out["truths"] = hits, truths
    return out


def _recall_cases() -> list[dict]:
    many = list(range(1000, 1022))  # 22 carted aids: the denominator is capped at k
    labels = [
        {"session": 1, "labels": {"clicks": 5, "carts": [5, 6], "orders": [6]}},
        {"session": 2, "labels": {"clicks": 7, "carts": many}},
        {"session": 3, "labels": {"orders": [1, 2, 3]}},
        {"session": 4, "labels": {"clicks": 0}},
        {"session": 5, "labels": {"carts": [8]}},     # no prediction rows at all
    ]
    filler = list(range(500, 519))
    preds = [
        {"session": 1, "type": "clicks", "aids": [9, 5]},
        {"session": 1, "type": "carts", "aids": [5, 5, 5, 6]},            # duplicates count once
        {"session": 1, "type": "orders", "aids": [1, 2]},
        {"session": 1, "type": "orders", "aids": [6]},                    # later row for the same target wins
        {"session": 2, "type": "clicks", "aids": filler + [7]},           # the hit is 20th: counted
        {"session": 2, "type": "carts", "aids": filler + [1000, 1001]},   # 20th is a hit, 21st is cut off
        {"session": 3, "type": "orders", "aids": [3, 3] + filler + [1, 2]},  # duplicates use up slots
        {"session": 4, "type": "clicks", "aids": [1, 0]},                 # aid 0 is an aid like any other
        {"session": 99, "type": "clicks", "aids": [1, 2, 3]},             # not in the labels: ignored
    ]
    case2_labels = [{"session": 1, "labels": {"clicks": 3, "carts": [3, 4]}},
                    {"session": 2, "labels": {"clicks": 4}}]
    case2_preds = [{"session": 1, "type": "clicks", "aids": [3]}, {"session": 1, "type": "carts", "aids": [4, 9, 3]},
                   {"session": 2, "type": "clicks", "aids": [9, 8, 4]}]
    return [dict(k=20, labels=labels, predictions=preds),
            dict(k=20, labels=case2_labels, predictions=case2_preds),   # no orders at all: orders recall 0
            dict(k=2, labels=case2_labels, predictions=case2_preds)]


def _labels_obj(rows: list[dict]) -> Labels:
    sids, clicks, co, c, oo, o = [], [], [0], [], [0], []
    for r in rows:
        lab = r["labels"]
        sids.append(r["session"])
        clicks.append(lab.get("clicks", -1))
        c.extend(sorted(set(lab.get("carts", []))))
        co.append(len(c))
        o.extend(sorted(set(lab.get("orders", []))))
        oo.append(len(o))
    a = lambda x: np.array(x, np.int64)  # noqa: E731
    return Labels(a(sids), a(clicks), a(co), a(c), a(oo), a(o))


def _submission_obj(preds: list[dict]) -> Submission:
    lens = [len(p["aids"]) for p in preds]
    return Submission(np.array([p["session"] for p in preds], np.int64),
                      np.array([TYPE_CODES[p["type"]] for p in preds], np.uint8),
                      np.concatenate(([0], np.cumsum(lens))).astype(np.int64),
                      np.array([a for p in preds for a in p["aids"]], np.int64))


def build_weighted_recall(gensim_mod) -> dict:
    cases = _recall_cases()
    results = []
    for n, c in enumerate(cases):
        got = score(_labels_obj(c["labels"]), _submission_obj(c["predictions"]), k=c["k"], detail=True)
        ref = _py_score(c["labels"], c["predictions"], c["k"])
        mine = {key: got[key] for key in (*TYPE_NAMES, "total", "hits", "truths")}
        _require(mine["hits"] == ref["hits"] and mine["truths"] == ref["truths"], "weighted_recall.json",
                 f"case {n}: hits/truths {mine['hits']}/{mine['truths']} != reference {ref['hits']}/{ref['truths']}")
        for key in (*TYPE_NAMES, "total"):
            _require(abs(mine[key] - ref[key]) <= 1e-12, "weighted_recall.json", f"case {n}: {key} differs")
        results.append({key: (float(v) if isinstance(v, float) else v) for key, v in mine.items()})
    return dict(
        name="weighted_recall",
        description=("OTTO metric (otto-de/recsys-dataset evaluate.py, micro-averaged): for each type t, "
                     "R_t = sum_s |distinct(pred_t(s)[:k]) & truth_t(s)| / sum_s min(k, |truth_t(s)|) over sessions "
                     "with a non-empty truth for t (clicks truth = the one next click); total = 0.10 R_clicks + "
                     "0.30 R_carts + 0.60 R_orders (summed in that order). The first k predictions are taken before "
                     "duplicates are removed; a later prediction row for the same (session, type) replaces an "
                     "earlier one; predictions for sessions without labels are ignored; a type with no truth at all "
                     "has recall 0. hits/truths are the numerators/denominators."),
        tolerance={"default": EXACT, "clicks": {"abs": 1e-12}, "carts": {"abs": 1e-12}, "orders": {"abs": 1e-12},
                   "total": {"abs": 1e-12}},
        inputs=dict(cases=cases),
        expected=dict(cases=results),
        notes={"reference": "plain Python implementation of evaluate.py; eval.metrics.score"},
    )


def build_ivf(gensim_mod) -> dict:
    """The IVF search contract, built by conformance/generate_ivf.py (no gensim involved)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("conformance_generate_ivf", HERE / "generate_ivf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build()


BUILDERS = {
    "lcg": build_lcg,
    "sample_int": build_sample_int,
    "cum_table": build_cum_table,
    "vocab": build_vocab_file,
    "train_1epoch": build_train_1epoch,
    "train_3epochs": build_train_3epochs,
    "train_edges": build_train_edges,
    "topk": build_topk,
    "otto_labels": build_otto_labels,
    "weighted_recall": build_weighted_recall,
    "ivf": build_ivf,
}


# ------------------------------------------------------------------------------ writing, checking
def dumps(doc: dict) -> str:
    """JSON text: objects indented, lists of scalars on one line, floats as Python repr."""

    def scalar_list(x) -> bool:
        return isinstance(x, list) and all(not isinstance(v, (list, dict)) for v in x)

    def enc(x, ind: int) -> str:
        pad, pad1 = " " * ind, " " * (ind + 1)
        if isinstance(x, dict):
            if not x:
                return "{}"
            if all(not isinstance(v, (list, dict)) for v in x.values()) and len(json.dumps(x)) < 100:
                return json.dumps(x, ensure_ascii=False)
            items = [f"{pad1}{json.dumps(k)}: {enc(v, ind + 1)}" for k, v in x.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(x, list):
            if scalar_list(x):
                return json.dumps(x)
            return "[\n" + ",\n".join(pad1 + enc(v, ind + 1) for v in x) + "\n" + pad + "]"
        if isinstance(x, float) and not math.isfinite(x):
            raise ConformanceError(f"non-finite float {x!r} cannot be written as JSON")
        return json.dumps(x, ensure_ascii=False)

    return enc(doc, 0) + "\n"


def _spec(tolerance: dict, field: str, inherited, drift: dict | None):
    """Tolerance in force inside ``field``: its own entry, else the enclosing one (None = exact);
    with ``drift``, the tighter of the two bounds."""
    if field not in tolerance:
        return inherited
    spec = tolerance[field]
    if spec == EXACT:
        return None
    if drift is not None:
        spec = {k: min(spec.get(k, 0.0), drift.get(k, 0.0)) for k in ("abs", "rel")}
    return spec


def _within(got: float, exp: float, spec: dict) -> bool:
    return abs(got - exp) <= spec.get("abs", 0.0) + spec.get("rel", 0.0) * abs(exp)


def _short(x) -> str:
    r = repr(x)
    return r if len(r) <= 80 else r[:60] + f"... ({len(r)} chars)"


def compare(want: dict, got: dict, drift: dict | None = DRIFT) -> list[str]:
    """Differences of ``got`` from ``want`` (the file), ignoring ``notes``.

    ``tolerance`` maps a field name (a key at any depth of ``expected``) to ``{"abs", "rel"}``:
    floats under that key pass when ``|got - want| <= abs + rel * |want|``. Everything else --
    integers, strings, booleans, ``inputs``, fields under "default": "exact" -- must be equal
    (floats bit for bit). With ``drift`` (the default, for --check) a toleranced float must also
    be within ``drift`` of the file: our own code may not move further than that. ``drift=None``
    applies the file's tolerance alone, as a port would.
    """
    diffs: list[str] = []
    tolerance = want.get("tolerance", {}) if isinstance(want.get("tolerance"), dict) else {}

    def walk(a, b, path: str, spec, tolerant: bool) -> None:
        if len(diffs) >= 20:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b:
                    diffs.append(f"{path}.{key}: {'missing' if key not in b else 'unexpected'}")
                else:
                    inner = _spec(tolerance, key, spec, drift) if tolerant else None
                    walk(a[key], b[key], f"{path}.{key}", inner, tolerant)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                diffs.append(f"{path}: length {len(b)} != {len(a)}")
                return
            for n, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{n}]", spec, tolerant)
        elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool) and spec is not None:
            if not _within(float(b), a, spec):
                diffs.append(f"{path}: {b!r} != {a!r} (|diff| {abs(b - a):.3g} > {spec})")
        elif type(a) is not type(b) or a != b:
            diffs.append(f"{path}: {_short(b)} != {_short(a)}")

    for key in FORMAT_KEYS:
        if key == "notes":
            continue
        if key not in want or key not in got:
            diffs.append(f"{key}: {'missing in file' if key not in want else 'missing in regenerated'}")
            continue
        walk(want[key], got[key], key, None, key == "expected")
    return diffs


def generate(names=None, use_gensim: bool = True) -> dict[str, dict]:
    """Build the documents in memory: ``{file name: document}``."""
    gensim_mod = _gensim() if use_gensim else None
    docs = {}
    for name, build in BUILDERS.items():
        if names is not None and name not in names:
            continue
        doc = build(gensim_mod)
        docs[f"{name}.json"] = {k: doc[k] for k in FORMAT_KEYS}
    return docs


def check(directory: Path = HERE, names=None, use_gensim: bool = True, docs=None) -> dict[str, list[str]]:
    """Regenerate in memory (or use ``docs``) and compare with the files: ``{file: [differences]}``
    for every file that drifted (empty dict: no drift)."""
    docs = generate(names, use_gensim) if docs is None else docs
    problems = {}
    for fname, doc in docs.items():
        path = Path(directory) / fname
        try:
            want = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems[fname] = [f"cannot read: {exc.strerror or exc}"]
            continue
        except json.JSONDecodeError as exc:
            problems[fname] = [f"not valid JSON: {exc}"]
            continue
        diffs = compare(want, doc)
        if diffs:
            problems[fname] = diffs
    return problems


def write(docs: dict[str, dict], directory: Path = HERE) -> None:
    from data_prep.atomic import atomic_file

    for fname, doc in docs.items():
        path = Path(directory) / fname
        with atomic_file(path, "w") as fh:
            fh.write(dumps(doc))
        path.chmod(0o644)  # a temporary file is created private; these files are published


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="conformance/generate.py",
        description="Regenerate the conformance files (inputs and expected outputs for ports) from this "
                    "project's implementation, cross-checked against plain-Python references and gensim.")
    p.add_argument("--check", action="store_true",
                   help="do not write: regenerate in memory and exit 1 if any file on disk differs")
    p.add_argument("--dir", default=str(HERE),
                   help="directory holding the JSON files (default: the directory of this script)")
    p.add_argument("--only", action="append", choices=sorted(BUILDERS), default=None,
                   help="limit to this file (repeatable)")
    p.add_argument("--no-gensim", action="store_true",
                   help="skip the gensim cross-checks (they also are skipped when gensim is not installed)")
    args = p.parse_args(argv)
    use_gensim = not args.no_gensim
    if use_gensim and _gensim() is None:
        if not args.check:
            print("error: gensim is not installed; it is needed to cross-check the files it writes "
                  "(install the 'test' extra, or pass --no-gensim)", file=sys.stderr)
            return 2
        print("gensim is not installed: gensim cross-checks skipped", file=sys.stderr)
        use_gensim = False
    try:
        docs = generate(args.only, use_gensim)
        if args.check:
            problems = check(Path(args.dir), docs=docs)
            for fname, diffs in problems.items():
                print(f"{fname}: {len(diffs)}{'+' if len(diffs) >= 20 else ''} difference(s)")
                for d in diffs[:5]:
                    print(f"  {d}")
            if problems:
                print(f"conformance drift in {len(problems)} of {len(docs)} files "
                      f"(rerun without --check to regenerate)")
                return 1
            print(f"conformance: {len(docs)} files match")
            return 0
        write(docs, Path(args.dir))
    except (ConformanceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(docs)} conformance files to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
