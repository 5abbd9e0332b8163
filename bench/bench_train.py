"""Benchmark: our skip-gram negative-sampling Word2Vec against gensim, word2vec.c and fastText.

Every tool trains on the same generated corpus (``data_prep.synth``, then ``otto-prep convert``),
with the same settings and the same number of threads, and every model is scored with the same
held-out metric:

* **corpus**: ``--sessions`` generated sessions (generator seed ``--data-seed``), split by session
  order into train (first 80%), tune (next 10%) and test (last 10%). Models see only train.
  gensim gets the train sessions as lists of ``str`` tokens; word2vec.c and fastText read the same
  sessions from a text file, one session per line, aids separated by spaces.
* **tools**: ours in fast mode (``--threads`` threads) and parity mode (one thread, gensim's
  random stream); gensim 4.4 (``workers=--threads``); word2vec.c (the original C code, built by the
  ``word2vec`` package as the ``word2vec`` executable; ``-cbow 0 -hs 0``); fastText (the
  ``fasttext`` package, ``model="skipgram"``, ``minn=maxn=0``, so no sub-words: one vector per aid).
* **settings** (``COMMON``): D = 100, window 10, negative 5, sample 1e-3, min_count 1, alpha 0.025,
  at 1, 3 and 5 epochs. Tool-specific fixed parts are not settings: word2vec.c draws negatives
  with exponent 0.75 and ends at ``alpha * 1e-4``; fastText draws them with exponent 0.5 and
  ends at learning rate 0.
* **metric** (``evaluate``): next-click recall@20 on the held-out sessions with the project's own
  evaluation code: ``eval.nextevent.prefix_sessions`` cuts every held-out session at every
  position that has a later click, ``eval.recommenders.W2VItemRec`` recommends the 20 nearest aids
  (exact cosine, ``w2v.knn``) of the prefix's last aid (popular aids when it is not in the
  vocabulary), and ``eval.metrics.rank_metrics`` scores the first later click. The standard
  error treats each held-out session as one cluster (its positions are not independent).
* **speed**: words/s = raw train words x epochs / training seconds. For ours and gensim the
  training seconds are the whole ``train`` call (vocabulary building and, for ours, JIT
  compilation excluded: a warm-up comes first). word2vec.c and fastText build their vocabulary
  and write their output inside one call, so their training rate is measured from their own
  progress lines: (last progress - first progress) x words / (time between them), which leaves
  out their start-up and tail (in their favour). "CPU" is the process CPU time over the same
  interval; "wall incl. vocab" is the whole call including vocabulary building.

Modes:

* default: the comparison on the *test* split: every tool at the same settings at ``--epochs``
  (1,3,5; ours-parity at ``--parity-epochs``), each peer at its own defaults (``DEFAULTS``), each
  peer at its best setting from ``--tuned`` files, and every tool at the ``session`` preset
  (``w2v.config.PRESETS``; a peer gets the preset's values of the knobs it has), and again with
  each peer reading the sentences the preset trains on (``collapse_repeats``: each run of one aid
  kept once; group ``preset-corpus``), which is a corpus step of ours, not a knob of theirs. The summary
  compares the preset with each peer's best over *all* its runs, picked on the test split itself
  (in the peer's favour; the preset was chosen on another corpus).
* ``--tune FILE.jsonl``: coordinate search on the *tune* split (pass ``--sessions``/``--data-seed``
  of a separate corpus): ours over ns_exponent, learning rate, epochs, window, sample and
  min_count (``OURS_GRID``); a peer over learning rate and epochs from its defaults
  (``PEER_GRID``). One JSON line per run is appended to FILE; a rerun skips settings already in it.

Every run is a fresh subprocess; each comparison run is appended to ``--results`` as one JSON line
(with the load average before and after it), so an interrupted benchmark resumes where it
stopped and the table always covers every run in the file. Usage::

    python bench/bench_train.py --sessions 100000 --data-seed 1 --tune bench/out/tune.jsonl --tools ours-fast
    python bench/bench_train.py --sessions 100000 --data-seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
OUT = HERE / "out"
TOOLS = ("ours-fast", "ours-shared", "ours-parity", "gensim", "w2vc", "fasttext")
# ours-shared: fast mode with share_negatives (one draw of negatives per centre word)

# settings in gensim's names; every tool gets the same values
COMMON = dict(vector_size=100, window=10, negative=5, sample=1e-3, min_count=1, alpha=0.025, ns_exponent=0.75)
# each tool's own defaults (D = 100 everywhere), in gensim's names
DEFAULTS = {
    "gensim": dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025, ns_exponent=0.75,
                   epochs=5),
    "w2vc": dict(vector_size=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025, epochs=5),
    "fasttext": dict(vector_size=100, window=5, negative=5, sample=1e-4, min_count=5, alpha=0.05, epochs=5),
}
# knobs each peer exposes (word2vec.c and fastText have a fixed negative-sampling exponent)
KNOBS = {
    "gensim": ("vector_size", "window", "negative", "sample", "min_count", "alpha", "ns_exponent", "epochs"),
    "w2vc": ("vector_size", "window", "negative", "sample", "min_count", "alpha", "epochs"),
    "fasttext": ("vector_size", "window", "negative", "sample", "min_count", "alpha", "epochs"),
}
TRAIN_FRAC, TUNE_FRAC = 0.8, 0.1
EVAL_SESSIONS = 20000  # held-out sessions cut at every position (sampled without replacement, seed 0)


# ------------------------------------------------------------------------------------ corpus
def make_dataset(sessions: int, data_seed: int, quiet: bool, items: int | None = None) -> Path:
    """The generated dataset (cached under bench/out/) and its train-sessions text file."""
    path = OUT / (f"train_synth_s{sessions}_seed{data_seed}" + (f"_items{items}" if items else ""))
    if not (path / "meta.json").exists():
        from data_prep import reader, synth
        OUT.mkdir(parents=True, exist_ok=True)
        jsonl = OUT / f"{path.name}.jsonl"
        t0 = time.perf_counter()
        synth.generate(jsonl, sessions, items, seed=data_seed, quiet=True)
        reader.convert(jsonl, path, quiet=True, overwrite=True)
        jsonl.unlink()
        if not quiet:
            print(f"dataset {path.name}: generated and converted in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    write_text_corpora(path)
    return path


def write_text_corpora(dataset: Path) -> None:
    """The train split of ``dataset`` as the text files word2vec.c and fastText read, one session
    per line (``text_corpus_path``), as it is and collapsed; files already there are kept."""
    train = None
    for collapse in (False, True):
        txt = text_corpus_path(dataset, collapse)
        if txt.exists():
            continue
        if train is None:
            train = splits(dataset)[0]
        words, off = train_sentences(train, collapse)
        aid = words.astype(str)
        tmp = txt.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            for i in range(off.shape[0] - 1):
                fh.write(" ".join(aid[off[i]:off[i + 1]]))
                fh.write("\n")
        tmp.replace(txt)


def text_corpus_path(dataset: Path, collapse: bool = False) -> Path:
    """The train sessions as text for word2vec.c and fastText (with ``collapse``: the sentences
    the ``collapse_repeats`` setting trains on)."""
    return dataset.parent / f"{dataset.name}_train{'_collapsed' if collapse else ''}.txt"


def train_sentences(train, collapse: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(words, offsets)`` of the train sessions as every tool gets them: as they are, or with
    ``collapse`` each run of one aid kept once (``w2v.corpus``'s rule, the one ours trains with)."""
    from w2v.corpus import sentences_from_dataset
    s = sentences_from_dataset(train, collapse_repeats=collapse)
    return s.words, s.offsets


def splits(dataset):
    """(train, tune, test) datasets: the first 80%, next 10% and last 10% of the sessions."""
    from data_prep.dataset import Dataset
    ds = Dataset.open(dataset)
    n = ds.n_sessions
    a, b = int(n * TRAIN_FRAC), int(n * (TRAIN_FRAC + TUNE_FRAC))
    return ds.take(np.arange(0, a)), ds.take(np.arange(a, b)), ds.take(np.arange(b, n))


# ------------------------------------------------------------------------------------ metric
def evaluate(aids: np.ndarray, vectors: np.ndarray, train, held_out, max_sessions: int = EVAL_SESSIONS) -> dict:
    """Next-click recall@20 / MRR@20 of the last-aid neighbours (see the module docstring)."""
    from eval.metrics import rank_metrics
    from eval.nextevent import prefix_sessions
    from eval.recommenders import W2VItemRec
    from w2v.keyed import KeyedVectors
    kv = KeyedVectors(np.ascontiguousarray(vectors, np.float32), np.asarray(aids, np.int64))
    pre, targets, _ = prefix_sessions(held_out, max_hist=30, max_sessions=max_sessions, seed=0)
    preds = W2VItemRec().fit(train, kv).predict(pre, 20)[0]
    m = rank_metrics(preds, targets, 20)
    hit = (preds[:, :20] == targets[:, None]).any(axis=1).astype(np.float64)
    _, cluster = np.unique(np.asarray(pre.session_ids), return_inverse=True)
    h = np.bincount(cluster, weights=hit)
    c = np.bincount(cluster).astype(np.float64)
    r = h.sum() / c.sum()
    se = float(np.sqrt(((h - r * c) ** 2).sum()) / c.sum())
    return dict(recall20=m["recall"], mrr20=m["mrr"], positions=m["n"], se=se, vocab=len(kv))


# ------------------------------------------------------------------------------------ timing helpers
def _cpu_seconds(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ProgressLog:
    """Reads a tool's progress output (lines ended by \\r or \\n) and records, for each progress
    line, (wall time, progress fraction, CPU seconds of ``pid``)."""

    def __init__(self, fd: int, pattern: str, pid: int | str):
        self.fd, self.rx, self.pid = fd, re.compile(pattern), pid
        self.points: list[tuple[float, float, float]] = []
        self.text: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            now = time.perf_counter()
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                m = self.rx.search(line)
                if m:
                    try:
                        cpu = _cpu_seconds(self.pid)
                    except OSError:  # the process has just exited
                        continue
                    self.points.append((now, float(m.group(1)) / 100.0, cpu))
                elif line.strip():
                    self.text.append(line)

    def rate(self, total_words: int) -> tuple[float, float]:
        """(training seconds for ``total_words``, CPU seconds for them), extrapolated from the
        progress interval."""
        pts = [p for p in self.points if 0.0 < p[1] < 1.0] or self.points
        if len(pts) < 2 or pts[-1][1] <= pts[0][1]:
            raise RuntimeError(f"too few progress lines to time the run: {self.points[:3]} ... {self.text[-5:]}")
        (t0, p0, c0), (t1, p1, c1) = pts[0], pts[-1]
        return (t1 - t0) / (p1 - p0), (c1 - c0) / (p1 - p0)


# ------------------------------------------------------------------------------------ tools
def run_ours(train, s: dict, mode: str, threads: int) -> dict:
    from w2v.config import W2VConfig
    from w2v.trainer import Word2Vec
    warm = Word2Vec(W2VConfig(mode=mode, workers=threads, vector_size=8, min_count=1, epochs=1))
    warm.build_vocab_from_sequences([[1, 2, 3, 4]] * 10).train(progress=False)
    t0 = time.perf_counter()
    model = Word2Vec(W2VConfig(mode=mode, workers=threads, seed=1, **s)).build_vocab(train)
    vocab_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    model.train(progress=False)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return dict(aids=model.aids, vectors=model.vectors, train_s=train_s, cpu_s=cpu_s, wall_s=vocab_s + train_s)


def run_gensim(train, s: dict, threads: int) -> dict:
    from gensim.models import Word2Vec as GensimW2V
    s = dict(s)
    words, off = train_sentences(train, s.pop("collapse_repeats", False))
    words = words.astype(str).tolist()
    sentences = [words[off[i]:off[i + 1]] for i in range(off.shape[0] - 1)]
    t0 = time.perf_counter()
    g = GensimW2V(sg=1, hs=0, workers=threads, seed=1, min_alpha=0.0001, **s)
    g.build_vocab(sentences)
    vocab_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    g.train(sentences, total_examples=g.corpus_count, epochs=g.epochs)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    aids = np.array([int(k) for k in g.wv.index_to_key], np.int64)
    return dict(aids=aids, vectors=g.wv.vectors, train_s=train_s, cpu_s=cpu_s, wall_s=vocab_s + train_s)


def _keep_int_words(words, matrix):
    rows = [i for i, w in enumerate(words) if w.isdigit()]  # drops the end-of-line token "</s>"
    return np.array([int(words[i]) for i in rows], np.int64), np.asarray(matrix)[rows]


def word2vec_c_binary() -> str:
    exe = Path(sys.executable).parent / "word2vec"
    if not exe.exists():
        raise RuntimeError(f"{exe}: missing (pip install word2vec builds the original word2vec.c)")
    return str(exe)


def read_word2vec_c_binary(path: Path) -> tuple[list[str], np.ndarray]:
    raw = path.read_bytes()
    nl = raw.index(b"\n")
    V, D = (int(x) for x in raw[:nl].split())
    words, vecs, pos = [], np.empty((V, D), np.float32), nl + 1
    for i in range(V):
        sp = raw.index(b" ", pos)
        words.append(raw[pos:sp].decode().strip())
        vecs[i] = np.frombuffer(raw, np.float32, D, sp + 1)
        pos = sp + 1 + 4 * D
        if pos < len(raw) and raw[pos:pos + 1] == b"\n":
            pos += 1
    return words, vecs


def run_w2vc(dataset: Path, words_per_epoch: int, s: dict, threads: int) -> dict:
    import tempfile
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        out = Path(tmp) / "vectors.bin"
        cmd = [word2vec_c_binary(), "-train", str(text_corpus_path(dataset, s.get("collapse_repeats", False))), "-output", str(out), "-cbow", "0",
               "-hs", "0", "-binary", "1", "-debug", "2", "-threads", str(threads), "-size", str(s["vector_size"]),
               "-window", str(s["window"]), "-negative", str(s["negative"]), "-sample", str(s["sample"]),
               "-min-count", str(s["min_count"]), "-alpha", str(s["alpha"]), "-iter", str(s["epochs"])]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        log = _ProgressLog(p.stdout.fileno(), r"Progress:\s*([0-9.]+)%", p.pid)
        rc = p.wait()
        wall_s = time.perf_counter() - t0
        log.thread.join()
        if rc != 0:
            raise RuntimeError(f"word2vec.c exited with {rc}: {' '.join(log.text[-5:])}")
        train_s, cpu_s = log.rate(words_per_epoch * s["epochs"])
        words, vecs = read_word2vec_c_binary(out)
    aids, vectors = _keep_int_words(words, vecs)
    return dict(aids=aids, vectors=vectors, train_s=train_s, cpu_s=cpu_s, wall_s=wall_s)


def run_fasttext(dataset: Path, words_per_epoch: int, s: dict, threads: int) -> dict:
    import fasttext
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)  # fastText writes its progress to std::cerr
    os.close(w)
    log = _ProgressLog(r, r"Progress:\s*([0-9.]+)%", "self")
    try:
        t0 = time.perf_counter()
        m = fasttext.train_unsupervised(
            str(text_corpus_path(dataset, s.get("collapse_repeats", False))), model="skipgram", dim=s["vector_size"], ws=s["window"], neg=s["negative"],
            t=s["sample"], minCount=s["min_count"], lr=s["alpha"], epoch=s["epochs"], minn=0, maxn=0, wordNgrams=1,
            bucket=0, thread=threads, verbose=2)
        wall_s = time.perf_counter() - t0
    finally:
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        os.close(saved)
    log.thread.join()
    os.close(r)
    train_s, cpu_s = log.rate(words_per_epoch * s["epochs"])
    aids, vectors = _keep_int_words(m.get_words(), m.get_input_matrix())
    return dict(aids=aids, vectors=vectors, train_s=train_s, cpu_s=cpu_s, wall_s=wall_s)


def worker(job: dict) -> dict:
    """One training run and its evaluation on the tune and test splits."""
    dataset = Path(job["dataset"])
    train, tune, test = splits(dataset)
    s, tool, threads = job["settings"], job["tool"], job["threads"]
    words = int(train_sentences(train, s.get("collapse_repeats", False))[0].shape[0])  # the words every tool reads
    if tool == "ours-fast":
        r = run_ours(train, s, "fast", threads)
    elif tool == "ours-shared":
        r = run_ours(train, dict(s, share_negatives=True), "fast", threads)
    elif tool == "ours-parity":
        r = run_ours(train, s, "parity", 1)
    elif tool == "gensim":
        r = run_gensim(train, s, threads)
    elif tool == "w2vc":
        r = run_w2vc(dataset, words, s, threads)
    elif tool == "fasttext":
        r = run_fasttext(dataset, words, s, threads)
    else:
        raise ValueError(f"tool: unknown {tool!r}")
    total = words * s["epochs"]
    res = dict(job, train_words=total, train_s=r["train_s"], cpu_s=r["cpu_s"], wall_s=r["wall_s"],
               words_per_s=total / r["train_s"], words_per_cpu_s=total / max(r["cpu_s"], 1e-9))
    for name in job.get("eval", ("test",)):
        res[name] = evaluate(r["aids"], r["vectors"], train, tune if name == "tune" else test)
    return res


def run_job(job: dict, quiet: bool) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    load = os.getloadavg()
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{job['tool']} {job['settings']}: failed\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["loadavg_before"], r["loadavg_after"] = load, os.getloadavg()
    if not quiet:
        ev = " ".join(f"{k} R@20 {r[k]['recall20']:.4f}±{r[k]['se']:.4f}" for k in job.get("eval", ("test",)))
        print(f"{r['tool']:<11} {short(r['settings'])}: {r['words_per_s']:>9,.0f} words/s "
              f"({r['words_per_cpu_s']:,.0f}/CPU-s), {ev}, load {r['loadavg_before'][0]:.1f}", file=sys.stderr,
              flush=True)
    return r


def short(s: dict) -> str:
    names = dict(vector_size="D", window="w", negative="neg", sample="t", min_count="mc", alpha="lr",
                 ns_exponent="ns", epochs="ep", share_negatives="shared", collapse_repeats="collapsed")
    return " ".join(f"{names[k]}={v:g}" for k, v in s.items() if k not in ("share_negatives", "collapse_repeats") or v)


# ------------------------------------------------------------------------------------ tuning
OURS_START = dict(COMMON, epochs=5)
OURS_GRID = [  # (knob, values) in search order; a second round repeats alpha and epochs
    ("ns_exponent", (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
    ("alpha", (0.025, 0.05, 0.1, 0.2, 0.4)),
    ("epochs", (3, 5, 10)),
    ("window", (5, 10, 20)),
    ("sample", (1e-3, 1e-4, 1e-5)),
    ("min_count", (1, 2, 5)),
]
PEER_GRID = {  # one round for each peer, from its defaults; window, min_count and sample are
    "alpha": (0.025, 0.05, 0.1),  # varied by the same-settings runs of the comparison
    "epochs": (3, 5, 10),
}


def _key(tool: str, s: dict) -> str:
    return tool + json.dumps(s, sort_keys=True)


def tune(args, dataset: Path) -> int:
    done = {}
    path = Path(args.tune)
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[_key(r["tool"], r["settings"])] = r

    def measure(tool: str, s: dict) -> float:
        k = _key(tool, s)
        if k not in done:
            r = run_job(dict(tool=tool, settings=s, dataset=str(dataset), threads=args.threads, eval=("tune",)),
                         args.quiet)
            with open(path, "a") as fh:
                fh.write(json.dumps(r) + "\n")
            done[k] = r
        return done[k]["tune"]["recall20"]

    def search(tool: str, start: dict, rounds) -> dict:
        """Coordinate search: each round tries every value of each of its knobs in turn around the
        best setting so far and keeps a value only if it raises the tune-split recall."""
        best, best_r = dict(start), measure(tool, start)
        for grid in rounds:
            changed = False
            for knob, values in grid:
                for v in values:
                    cand = dict(best, **{knob: v})
                    rr = measure(tool, cand)
                    if rr > best_r:
                        best, best_r, changed = cand, rr, True
            if not changed:
                break
        print(f"{tool}: best on the tune split {best_r:.4f} with {short(best)}", file=sys.stderr, flush=True)
        return best

    tools = [t for t in args.tools.split(",") if t]
    best = {}
    for tool in tools:
        if tool == "ours-fast":
            best[tool] = search(tool, OURS_START, (OURS_GRID, OURS_GRID[1:3]))
        elif tool in DEFAULTS:
            best[tool] = search(tool, DEFAULTS[tool], ([(k, v) for k, v in PEER_GRID.items() if k in KNOBS[tool]],))
    print_tune_table(list(done.values()), tools, best, dataset)
    return 0


def print_tune_table(runs: list[dict], tools, best: dict, dataset: Path) -> None:
    print(f"# {environment()}")
    print(f"# corpus: {dataset.name}, tune split; runs in search order")
    print("| tool | " + " | ".join(OURS_START) + " | tune recall@20 ± s.e. | MRR@20 | words per CPU-s | load |")
    print("|---|" + "---:|" * (len(OURS_START) + 4))
    for r in runs:
        if r["tool"] in tools:
            s = r["settings"]
            mark = " **best**" if s == best.get(r["tool"]) else ""
            print(f"| {r['tool']}{mark} | " + " | ".join(f"{s[k]:g}" if k in s else "-" for k in OURS_START) +
                  f" | {r['tune']['recall20']:.4f} ± {r['tune']['se']:.4f} | {r['tune']['mrr20']:.4f} | "
                  f"{r['words_per_cpu_s']:,.0f} | {r['loadavg_before'][0]:.1f} |")


def best_tuned(path: Path) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["tool"] not in best or r["tune"]["recall20"] > best[r["tool"]]["tune"]["recall20"]:
            best[r["tool"]] = r
    return best


# ------------------------------------------------------------------------------------ comparison
def environment() -> dict:
    import numba
    from importlib.metadata import PackageNotFoundError, version
    env = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
               nproc=os.cpu_count(), python=platform.python_version(), numpy=np.__version__, numba=numba.__version__)
    for dist in ("gensim", "word2vec", "fasttext"):  # word2vec: the package that builds word2vec.c
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = "missing"
    env["loadavg"] = os.getloadavg()
    return env


GROUPS = ("same", "defaults", "tuned", "preset", "preset-corpus")
PRESET_OURS = (*OURS_START, "share_negatives", "collapse_repeats")  # what ours takes from the preset


def compare_jobs(args) -> list[tuple[str, dict]]:
    """(group, job) of every comparison run, in the order they are run."""
    from w2v.config import W2VConfig
    tools = [t for t in args.tools.split(",") if t]
    groups = [g for g in args.groups.split(",") if g]
    jobs = []
    if "same" in groups:
        for ep in (int(e) for e in args.epochs.split(",")):
            for tool in tools:
                if tool != "ours-parity" or ep in (int(e) for e in args.parity_epochs.split(",")):
                    jobs.append(("same settings", dict(tool=tool, settings=dict(COMMON, epochs=ep))))
    if "defaults" in groups:
        jobs += [("tool defaults", dict(tool=t, settings=dict(DEFAULTS[t]))) for t in tools if t in DEFAULTS]
    if "tuned" in groups and args.tuned:
        best = {}
        for f in args.tuned.split(","):
            best.update(best_tuned(Path(f)))
        jobs += [("best tuned", dict(tool=t, settings=r["settings"])) for t, r in sorted(best.items())
                 if t in tools and t != "ours-fast"]
    preset = W2VConfig.from_preset("session", workers=1).to_dict()
    if "preset" in groups:  # the peers get the preset's values of the knobs they have
        for tool in tools:
            if tool != "ours-parity":
                knobs = KNOBS.get(tool, PRESET_OURS)
                jobs.append(("session preset", dict(tool=tool, settings={k: preset[k] for k in PRESET_OURS
                                                                         if k in knobs})))
    if "preset-corpus" in groups:  # ... and also read the sentences the preset trains on
        jobs += [("preset, its corpus", dict(tool=t, settings=dict({k: preset[k] for k in KNOBS[t]},
                                                                   collapse_repeats=preset["collapse_repeats"])))
                 for t in tools if t in KNOBS]
    return jobs


def compare(args, dataset: Path) -> int:
    """Run the comparison jobs not yet in ``--results`` (one JSON line each), then print the
    table of everything in it."""
    path = Path(args.results)
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r["dataset"] == str(dataset):
                done[r["group"] + _key(r["tool"], r["settings"])] = r
    for group, job in compare_jobs(args):
        job.update(dataset=str(dataset), threads=args.threads, eval=("test",))
        if group + _key(job["tool"], job["settings"]) in done:
            continue
        r = run_job(job, args.quiet)
        r["group"] = group
        with open(path, "a") as fh:
            fh.write(json.dumps(r) + "\n")
        done[group + _key(r["tool"], r["settings"])] = r
    print_table(list(done.values()), dataset)
    return 0


def print_table(results: list[dict], dataset: Path) -> None:
    from w2v.config import PRESETS
    env = environment()
    print(f"# {env}")
    print(f"# session preset: {PRESETS['session']}")
    train, _, test = splits(dataset)
    print(f"# corpus: {dataset.name}: train {train.n_sessions:,} sessions / {train.n_events:,} events; test "
          f"{test.n_sessions:,} sessions, {results[0]['test']['positions']:,} held-out positions")
    order = {g: i for i, g in enumerate(("same settings", "tool defaults", "best tuned", "session preset",
                                          "preset, its corpus"))}
    results = sorted(results, key=lambda r: (order[r["group"]], r["settings"]["epochs"] if r["group"] == "same settings"
                                             else 0, TOOLS.index(r["tool"])))
    ref = {r["settings"]["epochs"]: r for r in results if r["tool"] == "ours-fast" and r["group"] == "same settings"}
    print("| settings | tool | threads | epochs | words/s | ours-fast / tool | words per CPU-s | ours-fast / tool "
          "| wall incl. vocab s | recall@20 ± s.e. | MRR@20 | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r["settings"]
        same = ref.get(s["epochs"]) if r["group"] == "same settings" else None
        w = f"{same['words_per_s'] / r['words_per_s']:.2f}x" if same else "-"
        c = f"{same['words_per_cpu_s'] / r['words_per_cpu_s']:.2f}x" if same else "-"
        thr = 1 if r["tool"] == "ours-parity" else r["threads"]
        label = r["group"] if r["group"] == "same settings" else f"{r['group']}: {short(s)}"
        print(f"| {label} | {r['tool']} | {thr} | {s['epochs']} | {r['words_per_s']:,.0f} | {w} | "
              f"{r['words_per_cpu_s']:,.0f} | {c} | {r['wall_s']:.1f} | {r['test']['recall20']:.4f} ± "
              f"{r['test']['se']:.4f} | {r['test']['mrr20']:.4f} | {r['loadavg_before'][0]:.1f} |")
    preset = [r for r in results if r["group"] == "session preset" and r["tool"] in ("ours-fast", "ours-shared")]
    if not preset:
        return
    p = preset[0]["test"]["recall20"]
    print(f"\n{preset[0]['tool']} with the session preset: recall@20 {p:.4f}")
    for tool in TOOLS:
        if tool.startswith("ours"):
            continue
        rs = [r for r in results if r["tool"] == tool]
        if rs:  # every setting tried for the peer, picked on the test split itself (in its favour)
            b = max(rs, key=lambda r: r["test"]["recall20"])
            print(f"best {tool}: {b['test']['recall20']:.4f} ({b['group']}, {short(b['settings'])}): "
                  f"preset / it = {p / b['test']['recall20']:.3f}x, difference {p - b['test']['recall20']:+.4f} "
                  f"({(p - b['test']['recall20']) / b['test']['se']:+.1f} s.e.)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100_000, help="generated sessions in the corpus")
    ap.add_argument("--data-seed", type=int, default=0, help="generator seed of the corpus")
    ap.add_argument("--items", type=int, default=None,
                    help="catalogue size of the generator (default: its OTTO-like sessions/6.952)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every tool (ours-parity always uses 1)")
    ap.add_argument("--epochs", default="1,3,5", help="epochs of the same-settings runs")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--tune", metavar="FILE.jsonl", default=None,
                    help="run the tuning search on the tune split instead, appending one JSON line per run to FILE")
    ap.add_argument("--tuned", metavar="FILE.jsonl", default=None,
                    help="comma-separated --tune files: also run each peer's best setting found in them")
    ap.add_argument("--groups", default=",".join(GROUPS),
                    help="comma-separated comparison groups: same (same settings), defaults (each peer's), tuned "
                         "(each peer's best --tuned setting), preset (the session preset), preset-corpus (the peers "
                         f"at the preset reading its collapsed sentences) (default: {','.join(GROUPS)})")
    ap.add_argument("--parity-epochs", default="1", help="epochs of the same-settings runs of ours-parity (one thread)")
    ap.add_argument("--results", metavar="FILE.jsonl", default="bench/out/compare.jsonl",
                    help="comparison runs, one JSON line each; runs already in it are not repeated")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    dataset = make_dataset(args.sessions, args.data_seed, args.quiet, args.items)
    if args.tune:
        return tune(args, dataset)
    return compare(args, dataset)


if __name__ == "__main__":
    sys.exit(main())
