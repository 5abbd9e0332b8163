"""``Word2Vec``: build the vocabulary from a dataset, train (parity or fast mode), save and load.

Also registers the ``otto-train train`` subcommand. The training math lives in w2v/kernels.py;
this module only drives it (jobs, learning rates, random streams, progress, bookkeeping).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numba
import numpy as np

from data_prep.progress import Progress
from data_prep.splitmix import splitmix64 as _splitmix64

from . import kernels
from .config import PRESETS, W2VConfig
from .corpus import (Corpus, Sentences, map_to_vocab, sentences_from_dataset,
                     sentences_from_sequences)
from .model_io import load_model, popularity, save_model
from .vocab import build_vocab, cum_table, sample_ints


def gensim_initial_vectors(n_words: int, vector_size: int, seed: int) -> np.ndarray:
    """gensim 4.4 ``prep_vectors``: ``default_rng(seed).random((V, D), float32)``, then in place
    ``*= 2.0``, ``-= 1.0``, ``/= D`` (uniform in [-1/D, 1/D))."""
    rng = np.random.default_rng(seed=seed)
    v = rng.random((n_words, vector_size), dtype=np.float32)
    v *= 2.0
    v -= 1.0
    v /= vector_size
    return v


def fast_job_states(seed: int, epoch: int, n_jobs: int) -> np.ndarray:
    """Fast mode: the LCG start state of each job, ``splitmix64(splitmix64(seed, epoch) + job)``
    masked to 48 bits (uint64 [n_jobs]). Epoch counts every epoch the model has trained."""
    base = _splitmix64(np.array([seed * 1_000_003 + epoch], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _splitmix64(base + np.arange(n_jobs, dtype=np.uint64)) & kernels.LCG_MASK


def job_alphas(job_starts: np.ndarray, n_sentences: int, cur_epoch: int, epochs: int,
               alpha: float, min_alpha: float) -> np.ndarray:
    """gensim ``_job_producer`` + ``_get_next_alpha`` (examples-based decay): job j starts after
    ``job_starts[j]`` sentences of the epoch; ``progress = (cur_epoch + job_starts[j] / S) / epochs``;
    ``alpha_j = max(min_alpha, alpha - (alpha - min_alpha) * progress)``, stored as float32."""
    starts = np.asarray(job_starts[:-1], dtype=np.float64)
    epoch_progress = 1.0 * starts / max(n_sentences, 1)
    progress = (cur_epoch + epoch_progress) / epochs
    a = alpha - (alpha - min_alpha) * progress
    return np.maximum(min_alpha, a).astype(np.float32)


class Word2Vec:
    """Skip-gram negative-sampling Word2Vec over sessions.

    Attributes after ``build_vocab``: ``aids`` int64 [V], ``counts`` int64 [V], ``vectors``
    float32 [V, D] (input vectors, gensim ``wv.vectors``), ``output`` float32 [V, D] (gensim
    ``syn1neg``), ``corpus`` (w2v.corpus.Corpus), ``epoch_losses`` (mean SGNS loss per pair,
    per trained epoch), ``history`` (per-epoch statistics), ``stats`` (corpus/vocabulary).
    """

    def __init__(self, config: W2VConfig | None = None, **kwargs):
        if config is None:
            config = W2VConfig(**kwargs)
        elif kwargs:
            raise ValueError("config: pass either a W2VConfig or keyword arguments, not both")
        self.config = config
        self.aids: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        self.output: np.ndarray | None = None
        self.corpus: Corpus | None = None
        self.epoch_losses: list[float] = []
        self.history: list[dict] = []
        self.stats: dict = {}
        self.popular: np.ndarray | None = None
        self.popular_counts: np.ndarray | None = None
        self.epochs_trained = 0
        self.train_seconds = 0.0
        # gensim's ``model.random``: the parity-mode stream for job seeds and reduced windows
        self.random = np.random.RandomState(config.seed)
        self._tables: tuple | None = None

    # ------------------------------------------------------------------ vocabulary
    def build_vocab(self, dataset, types=None, min_session_len: int = 1) -> "Word2Vec":
        """Vocabulary, initial weights and training corpus from a ``data_prep.Dataset``.

        ``types`` selects event types (``data_prep.dataset.parse_types``), the config's
        ``collapse_repeats`` drops an event repeating the previous aid of its session,
        ``min_session_len`` drops shorter sessions (counted after both). Popularity is computed
        over the whole dataset.
        """
        sentences = self._sentences(dataset, types, min_session_len)
        self.popular, self.popular_counts = popularity(np.asarray(dataset.aid), np.asarray(dataset.type))
        self._build(sentences)
        self.stats["corpus_options"] = dict(types=sentences.stats["types"], min_session_len=int(min_session_len),
                                            collapse_repeats=self.config.collapse_repeats)
        return self

    def _sentences(self, dataset, types, min_session_len: int) -> Sentences:
        return sentences_from_dataset(dataset, types, min_session_len, self.config.collapse_repeats,
                                      self.config.max_sentence_len)

    def build_vocab_from_sequences(self, sequences: Iterable[Sequence[int] | np.ndarray]) -> "Word2Vec":
        """Vocabulary, weights and corpus from hand-made sentences of integer words (tests)."""
        self._build(sentences_from_sequences(sequences, self.config.max_sentence_len, self.config.collapse_repeats))
        return self

    def _build(self, sentences: Sentences) -> None:
        vocab = build_vocab(sentences.words, self.config.min_count)
        self.aids, self.counts = vocab.aids, vocab.counts
        V, D = len(vocab), self.config.vector_size
        self.vectors = gensim_initial_vectors(V, D, self.config.seed)
        self.output = np.zeros((V, D), np.float32)
        self.stats = dict(vocab=vocab.stats)
        self._tables = None
        self._set_corpus(sentences)

    def set_corpus(self, dataset, types=None, min_session_len: int = 1) -> "Word2Vec":
        """Attach a training corpus to an existing vocabulary (e.g. after ``load``); words
        outside the vocabulary are ignored (and counted), as gensim ignores unknown tokens."""
        self._require_vocab()
        self._set_corpus(self._sentences(dataset, types, min_session_len))
        return self

    def set_corpus_from_sequences(self, sequences) -> "Word2Vec":
        self._require_vocab()
        self._set_corpus(sentences_from_sequences(sequences, self.config.max_sentence_len, self.config.collapse_repeats))
        return self

    def _set_corpus(self, sentences: Sentences) -> None:
        self.corpus = map_to_vocab(sentences, self.aids)
        self.stats["corpus"] = dict(self.corpus.stats)

    def _require_vocab(self) -> None:
        if self.aids is None:
            raise ValueError("model: no vocabulary yet (call build_vocab or load first)")

    def set_weights(self, vectors: np.ndarray, output: np.ndarray | None = None) -> None:
        """Replace the input (and optionally output) vectors, e.g. to start from gensim's."""
        self._require_vocab()
        shape = (self.aids.shape[0], self.config.vector_size)
        for name, arr in (("vectors", vectors), ("output", output)):
            if arr is not None and np.shape(arr) != shape:
                raise ValueError(f"{name}: shape {np.shape(arr)} (expected {shape})")
        self.vectors = np.array(vectors, dtype=np.float32, order="C", copy=True)
        if output is not None:
            self.output = np.array(output, dtype=np.float32, order="C", copy=True)

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample_int uint32 [V], cum_table uint32 [V], exp_table float32 [1000])."""
        if self._tables is None:
            self._require_vocab()
            s_int, s_stats = sample_ints(self.counts, self.config.sample)
            self.stats["downsampling"] = s_stats
            self._tables = (s_int, cum_table(self.counts, self.config.ns_exponent), kernels.make_exp_table())
        return self._tables

    # ------------------------------------------------------------------ training
    def train(self, epochs: int | None = None, callbacks: Sequence[Callable] = (),
              progress: bool = True) -> list[float]:
        """Train ``epochs`` passes (default ``config.epochs``); the learning rate decays from
        ``alpha`` to ``min_alpha`` over this call, as in gensim. Each callback is called after
        every epoch as ``callback(model, epoch, loss)``. Returns this call's epoch losses."""
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ValueError(f"epochs: must be an integer >= 0, got {epochs!r}")
        self._require_vocab()
        if self.corpus is None:
            raise ValueError("model: no training corpus (call build_vocab or set_corpus first)")
        if self.aids.shape[0] == 0:
            raise ValueError(f"vocabulary: empty (no word occurs min_count={cfg.min_count} times)")
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.output = np.ascontiguousarray(self.output, dtype=np.float32)
        if not self.vectors.flags.writeable:
            self.vectors = self.vectors.copy()
        if not self.output.flags.writeable:
            self.output = self.output.copy()
        corpus = self.corpus
        job_starts = kernels.gensim_jobs(corpus.raw_lengths, cfg.batch_words)
        bar = Progress("train", quiet=not progress)
        losses = []
        for cur_epoch in range(epochs):
            alphas = job_alphas(job_starts, corpus.n_sentences, cur_epoch, epochs, cfg.alpha, cfg.min_alpha)
            t0 = time.perf_counter()
            label = f"epoch {self.epochs_trained + 1} ({cur_epoch + 1}/{epochs})"
            if cfg.mode == "parity":
                rec = self._epoch_parity(job_starts, alphas, bar, label)
            else:
                rec = self._epoch_fast(job_starts, alphas, bar, label)
            secs = time.perf_counter() - t0
            loss = rec["loss_sum"] / rec["pairs"] if rec["pairs"] and cfg.compute_loss else float("nan")
            rec.update(epoch=self.epochs_trained + 1, seconds=secs, loss=loss,
                       alpha_first=float(alphas[0]) if alphas.size else cfg.alpha,
                       alpha_last=float(alphas[-1]) if alphas.size else cfg.alpha,
                       raw_words=corpus.raw_words,
                       words_per_s=corpus.raw_words / secs if secs > 0 else float("inf"))
            bar.show(f"{label}: 100% {rec['words_per_s']:,.0f} words/s loss {loss:.4f} in {secs:.1f}s", force=True)
            bar.end()
            self.epochs_trained += 1
            self.train_seconds += secs
            self.epoch_losses.append(loss)
            self.history.append(rec)
            losses.append(loss)
            for cb in callbacks:
                cb(self, self.epochs_trained, loss)
        return losses

    def _epoch_parity(self, job_starts, alphas, bar: Progress, label: str) -> dict:
        """One epoch exactly as a single gensim worker runs it (``parity_jobs``): per job, two
        ``randint(0, 2**24)`` draws seed the LCG, words are downsampled (LCG), ``randint(0, window, n)``
        gives the reduced windows, then the pairs are trained (LCG negatives). Downsampling and
        the numpy draws do not depend on the weights, so they are prepared for a run of jobs
        first and the run is then trained in one kernel call, in gensim's order."""
        cfg, corpus = self.config, self.corpus
        _, c_tab, e_tab = self.tables()
        upd = kernels.make_update(cfg.negative, c_tab, e_tab, cfg.window, cfg.sigmoid_edge == "clip", cfg.compute_loss)
        w = kernels.Weights(self.vectors, self.output)
        n_jobs = job_starts.shape[0] - 1
        per_run = max(1, (1 << 20) // cfg.parity_job_cap)  # jobs prepared and trained per kernel call
        scr = kernels.make_scratch(cfg.vector_size, cfg.negative)
        loss_sum, pairs, kept, dropped = 0.0, 0, 0, 0
        t0 = time.perf_counter()
        csum_raw = np.concatenate(([0], np.cumsum(corpus.raw_lengths)))
        for r0 in range(0, n_jobs, per_run):
            r1 = min(n_jobs, r0 + per_run)
            jobs, _, drop = self.parity_jobs(job_starts, alphas, r0, r1)
            kept += int(jobs.eff_start[-1])
            dropped += drop
            l, p = kernels.parity_train_jobs(w, jobs, upd, scr)
            loss_sum += l
            pairs += p
            self._show(bar, label, int(csum_raw[job_starts[r1]]), corpus.raw_words, t0, alphas[r1 - 1],
                       loss_sum, pairs)
        return dict(loss_sum=loss_sum, pairs=int(pairs), kept_words=int(kept), dropped_by_job_cap=int(dropped),
                    jobs=int(n_jobs), threads=1)

    def parity_jobs(self, job_starts: np.ndarray, alphas: np.ndarray, lo: int,
                    hi: int) -> tuple[kernels.ParityJobs, np.ndarray, int]:
        """Prepare the gensim jobs ``lo..hi-1`` of an epoch (``job_starts`` from ``kernels.gensim_jobs``,
        their float32 learning rates ``alphas`` from ``job_alphas``), drawing from ``self.random``
        exactly as gensim's ``train_batch_sg`` does, in this order per job: the LCG seed
        ``2**24 * randint(0, 2**24) + randint(0, 2**24)``, downsampling (LCG, ``parity_prepare_job``),
        then ``randint(0, window, n_kept)``. Returns the jobs (``kernels.ParityJobs``), their LCG
        seeds (uint64 [hi - lo]) and the kept words beyond ``parity_job_cap`` that gensim ignores
        (counted). The one schedule of parity mode: the trainer, the
        conformance generator and the gensim replay all prepare their jobs here."""
        cfg, corpus, rs = self.config, self.corpus, self.random
        s_int, _, _ = self.tables()
        cap = cfg.parity_job_cap
        k = hi - lo
        sizes = np.diff(job_starts[lo:hi + 1])
        eff = np.empty(max(1, k * cap), np.int32)
        reduced = np.empty(max(1, k * cap), np.int64)
        bounds = np.empty(int(sizes.sum()) + k, np.int64)
        eff_start = np.zeros(k + 1, np.int64)
        bound_start = np.zeros(k, np.int64)
        n_sent = np.zeros(k, np.int64)
        states = np.zeros(k, np.uint64)
        seeds = np.zeros(k, np.uint64)
        sents = kernels.Sentences(corpus.tokens, corpus.offsets, corpus.max_sentence_tokens)
        down = kernels.Downsampling(s_int, bool(cfg.sample != 0))
        e_off = b_off = dropped = 0
        for i, j in enumerate(range(lo, hi)):
            seed = (2**24) * rs.randint(0, 2**24) + rs.randint(0, 2**24)
            n, ns, st, drop = kernels.parity_prepare_job(sents, int(job_starts[j]), int(job_starts[j + 1]), down,
                                                         np.uint64(seed), cap, eff[e_off:], bounds[b_off:])
            reduced[e_off:e_off + n] = rs.randint(0, cfg.window, n)
            bound_start[i], n_sent[i], states[i], seeds[i] = b_off, ns, st, seed
            e_off += n
            eff_start[i + 1] = e_off
            b_off += ns + 1
            dropped += drop
        jobs = kernels.ParityJobs(eff=eff[:max(1, e_off)], bounds=bounds, eff_start=eff_start,
                                  bound_start=bound_start, n_sent=n_sent, reduced=reduced[:max(1, e_off)],
                                  state=states, alpha=np.ascontiguousarray(alphas[lo:hi], dtype=np.float32))
        return jobs, seeds, int(dropped)

    def _epoch_fast(self, job_starts, alphas, bar: Progress, label: str) -> dict:
        """One epoch on ``workers`` threads (Hogwild), grouped in segments for progress output."""
        cfg, corpus = self.config, self.corpus
        s_int, c_tab, e_tab = self.tables()
        upd = kernels.make_update(cfg.negative, c_tab, e_tab, cfg.window, cfg.sigmoid_edge == "clip", cfg.compute_loss,
                                  alias=kernels.alias_table(c_tab), share_negatives=cfg.share_negatives)
        w = kernels.Weights(self.vectors, self.output)
        sents = kernels.Sentences(corpus.tokens, corpus.offsets, corpus.max_sentence_tokens)
        down = kernels.Downsampling(s_int, bool(cfg.sample != 0))
        n_jobs = job_starts.shape[0] - 1
        threads = max(1, min(cfg.workers, numba.config.NUMBA_NUM_THREADS))
        states = fast_job_states(cfg.seed, self.epochs_trained, n_jobs)
        totals = np.zeros((3, threads), np.float64)  # per thread: loss, pairs, kept words
        if bar.enabled:  # about 20 kernel calls per epoch, so the progress line can move
            seg = max(8 * threads, -(-n_jobs // 20))
            seg = -(-seg // threads) * threads
        else:  # one call: no barrier between segments
            seg = max(n_jobs, 1)
        csum_raw = np.concatenate(([0], np.cumsum(corpus.raw_lengths)))
        t0 = time.perf_counter()
        old_threads = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for lo in range(0, n_jobs, seg):
                hi = min(n_jobs, lo + seg)
                kernels.fast_train_jobs(w, sents, down, kernels.FastJobs(job_starts, alphas, states, lo, hi), threads,
                                        upd, totals)
                raw_done = int(csum_raw[job_starts[hi]])
                self._show(bar, label, raw_done, corpus.raw_words, t0, alphas[hi - 1],
                           float(totals[0].sum()), int(totals[1].sum()))
        finally:
            numba.set_num_threads(old_threads)
        return dict(loss_sum=float(totals[0].sum()), pairs=int(totals[1].sum()), kept_words=int(totals[2].sum()),
                    dropped_by_job_cap=0, jobs=int(n_jobs), threads=int(threads))

    def _show(self, bar, label, done, total, t0, alpha, loss_sum, pairs) -> None:
        if not bar.enabled:
            return
        el = time.perf_counter() - t0
        rate = done / el if el > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("inf")
        loss = loss_sum / pairs if pairs and self.config.compute_loss else float("nan")
        pct = 100.0 * done / total if total else 100.0
        bar.show(f"{label}: {pct:5.1f}% {rate:,.0f} words/s alpha {float(alpha):.5f} loss {loss:.4f} ETA {eta:.0f}s")

    # ------------------------------------------------------------------ persistence
    def meta(self) -> dict:
        """Everything saved in meta.json besides the arrays."""
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, np.generic):
                return clean(x.item())
            return x
        _, keys, pos, has_gauss, cached = self.random.get_state(legacy=True)
        dropped = dict(
            by_type=self.stats.get("corpus", {}).get("dropped_events_by_type", 0),
            by_collapse=self.stats.get("corpus", {}).get("dropped_events_by_collapse", 0),
            short_session_events=self.stats.get("corpus", {}).get("dropped_short_events", 0),
            below_min_count=self.stats.get("vocab", {}).get("dropped_total", 0),
            by_parity_job_cap=int(sum(h.get("dropped_by_job_cap", 0) for h in self.history)),
        )
        return clean(dict(
            config=self.config.to_dict(),
            stats=self.stats,
            dropped=dropped,
            epoch_losses=list(self.epoch_losses),
            history=self.history,
            epochs_trained=self.epochs_trained,
            train_seconds=self.train_seconds,
            words_per_s=(self.history[-1]["words_per_s"] if self.history else None),
            random_state=dict(algorithm="MT19937", keys=[int(k) for k in keys], pos=int(pos),
                              has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        ))

    def save(self, model_dir, overwrite: bool = False) -> Path:
        """Write the model directory (docs/FORMATS.md section 2) atomically."""
        self._require_vocab()
        return save_model(model_dir, self.vectors, self.output, self.aids, self.counts, self.meta(),
                          popular=self.popular, popular_counts=self.popular_counts, overwrite=overwrite)

    @classmethod
    def load(cls, model_dir, **config_overrides) -> "Word2Vec":
        """Load a model directory to continue training (attach a corpus with ``set_corpus``).
        ``config_overrides`` replace saved settings (e.g. ``workers``, ``epochs``)."""
        m = load_model(model_dir)
        meta_path = Path(model_dir) / "meta.json"
        cfg_dict = m.meta.get("config")
        if not isinstance(cfg_dict, dict):
            raise ValueError(f"{meta_path}: no 'config' object (not written by Word2Vec.save)")
        try:
            config = W2VConfig.from_dict(cfg_dict, **config_overrides)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{meta_path}: config: {exc}") from None
        model = cls(config)
        model.aids = np.array(m.aids)
        model.counts = np.array(m.counts)
        model.vectors = np.array(m.vectors)
        model.output = np.array(m.output)
        if m.popular is not None:
            model.popular, model.popular_counts = np.array(m.popular), np.array(m.popular_counts)
        model.epoch_losses = [float("nan") if v is None else float(v) for v in m.meta.get("epoch_losses", [])]
        model.history = list(m.meta.get("history", []))
        model.stats = dict(m.meta.get("stats", {}))
        model.epochs_trained = int(m.meta.get("epochs_trained", len(model.epoch_losses)))
        model.train_seconds = float(m.meta.get("train_seconds", 0.0))
        rs = m.meta.get("random_state")
        if rs is not None:
            try:
                model.random.set_state(("MT19937", np.array(rs["keys"], dtype=np.uint32), int(rs["pos"]),
                                        int(rs["has_gauss"]), float(rs["cached_gaussian"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{meta_path}: random_state: unreadable ({exc})") from None
        return model


# ---------------------------------------------------------------------- command line
def add_config_flags(parser, *, exclude=()) -> None:
    """One flag per ``W2VConfig`` field (names, defaults and help from the dataclass), shared by
    ``otto-train train`` and ``otto-eval run``/``pairs`` so both train with the same defaults."""
    from data_prep.flags import add_config_flags as add
    add(parser.add_argument_group("Word2Vec hyper-parameters (gensim's names and defaults)"), W2VConfig,
        exclude=exclude)


def config_from_flags(args, *, base: dict | None = None, **fixed) -> W2VConfig:
    """The ``W2VConfig`` of the flags of :func:`add_config_flags`, validated before any work.

    ``base`` (e.g. a named preset's values) sits between the defaults and the flags given. A
    command line always trains, so ``--epochs`` must be >= 1: an untrained model is never saved.
    """
    from data_prep.command import UsageError
    from data_prep.flags import config_from_args
    config = config_from_args(W2VConfig, args, base=base, **fixed)
    if config.epochs < 1:
        raise UsageError(f"--epochs: must be >= 1 (an untrained model is never saved), got {config.epochs}")
    return config


def add_preset_flag(parser, default: str) -> None:
    """``--preset NAME``: the ``w2v.config.PRESETS`` entry the Word2Vec flags start from."""
    parser.add_argument("--preset", choices=tuple(PRESETS), default=default,
                        help="named Word2Vec settings that the flags not given take (a flag given wins): "
                             f"{W2VConfig.describe_presets()} (default: {default}; measured in bench/RESULTS.md)")


def register(subparsers) -> None:
    """Add ``otto-train train``."""
    from data_prep.command import positive_int
    from data_prep.flags import add_run_flags
    p = subparsers.add_parser(
        "train", help="train skip-gram negative-sampling Word2Vec on a dataset directory",
        description="Train skip-gram negative-sampling Word2Vec (sessions = sentences, aids = words) "
                    "on a dataset directory written by otto-prep, and write a model directory. "
                    "'otto-train [flags] DATASET MODEL_DIR' is short for this command.")
    p.add_argument("dataset", metavar="DATASET", help="dataset directory (otto-prep format)")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory to write (atomically)")
    add_preset_flag(p, "gensim")
    add_config_flags(p)
    g = p.add_argument_group("corpus")
    g.add_argument("--types", default=None, metavar="TYPES",
                   help="comma-separated event types to train on, e.g. 'clicks,carts' (default: all)")
    g.add_argument("--min-session-len", type=positive_int, default=1, metavar="N",
                   help="drop sessions with fewer events (after --types and --collapse-repeats) (default: 1)")
    add_run_flags(p, overwrite="MODEL_DIR", quiet=True)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from data_prep.atomic import check_output
    from data_prep.dataset import Dataset

    config = config_from_flags(args, base=PRESETS[args.preset])
    out = Path(args.model_dir)
    check_output(out, (args.dataset,))
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    dataset = Dataset.open(args.dataset)
    model = Word2Vec(config).build_vocab(dataset, types=args.types, min_session_len=args.min_session_len)
    model.train(progress=not args.quiet)
    if not sum(h.get("pairs", 0) for h in model.history):
        raise ValueError(f"{args.dataset}: training saw no (centre, context) pair (every session is shorter than "
                         "two events after filtering?); no model was written")
    model.save(out, overwrite=args.overwrite)
    last = model.epoch_losses[-1] if model.epoch_losses else float("nan")
    print(f"trained {model.aids.shape[0]} aids x {config.vector_size} dims, {model.epochs_trained} epochs, "
          f"final loss {last:.4f}, {model.train_seconds:.1f}s -> {out}")
    return 0
