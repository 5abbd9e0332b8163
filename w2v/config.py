"""Training configuration: one frozen dataclass, validated once, named as in gensim 4.4.

``mode="parity"`` reproduces gensim's single-worker random stream, job batching and learning-rate
schedule; ``mode="fast"`` (default) trains with all cores, lock-free (Hogwild) updates and a
private random stream per job. docs/ALGORITHM.md describes both.

Presets (``PRESETS``) are named sets of field values, plain data: a config is built from one with
``W2VConfig.from_preset(name, **overrides)``, the overrides winning. ``"gensim"`` is the plain
defaults (gensim 4.4's); ``"session"`` holds settings chosen for session data by held-out
next-click recall@20 on a tuning split (bench/bench_train.py ``--tune``; measured in
bench/RESULTS.md). ``W2VConfig()`` itself always has gensim's defaults.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from data_prep.parallel import default_threads

MODES = ("fast", "parity")
PRESETS: dict[str, dict] = {
    # gensim 4.4's defaults: W2VConfig() unchanged
    "gensim": {},
    # chosen by held-out next-click recall@20 on the tune split of one generated 100k-session corpus
    # and checked against every peer on the test split of another: bench/RESULTS.md, section 3;
    # share_negatives was added later, measured on the tune and test splits of the second corpus
    # (higher recall on both, docs/ALGORITHM.md section 11a); vector_size 64 later, measured on the
    # tune split and on a 1/16-size split (113,414 aids): bench/RESULTS.md, section 3, "Dimension";
    # collapse_repeats later, on the tune split and the peers' test split: bench/RESULTS.md, section 3, "Repeated aids"
    "session": {"alpha": 0.1, "epochs": 10, "window": 10, "min_count": 1, "share_negatives": True,
                "vector_size": 64, "collapse_repeats": True},
}
SIGMOID_EDGES = ("skip", "clip")


@dataclass(frozen=True)
class W2VConfig:
    """Skip-gram negative-sampling hyper-parameters.

    vector_size  dimension D of the vectors.
    window       maximum distance between a centre word and a context word.
    negative     negative samples per (centre, context) pair.
    ns_exponent  exponent applied to counts in the negative-sampling distribution.
    sample       downsampling threshold for frequent words (0 disables; >= 1 is gensim's
                 "absolute count" shorthand).
    alpha        initial learning rate; decays linearly to min_alpha over each training run.
    min_alpha    final learning rate.
    epochs       passes over the corpus per training run (Word2Vec.train(epochs=...) overrides it).
    min_count    words with fewer occurrences are dropped from the vocabulary.
    seed         seed of every random stream (initial vectors, downsampling, windows, negatives).
    workers      threads in fast mode (parity mode always uses one) (default: all CPUs this
                 process may use).
    mode         "fast" (all cores, lock-free updates) or "parity" (one thread, reproduces
                 gensim 4.4).
    sigmoid_edge what to do when |dot| >= 6: "skip" the update (gensim) or "clip" sigma to 0/1
                 (word2vec.c).
    max_sentence_len  sentences longer than this are split into consecutive pieces of at most
                 this many tokens (nothing is dropped; the number of split sentences and extra
                 pieces is counted) (default: no limit).
    batch_words  raw words per job (gensim's batching; the learning rate is constant in a job).
    parity_job_cap  parity mode only: gensim trains at most this many effective (kept) words per
                 job (its MAX_WORDS_IN_BATCH = 10000) and silently ignores the rest of the job;
                 we reproduce it and count what it drops; fast mode has no such cap.
    compute_loss accumulate the exact per-epoch SGNS loss (costs a few percent of speed).
    share_negatives  fast mode only: draw the negatives once per centre word and use them for
                 all its context words (Ji et al. 2016), instead of a fresh draw per pair
                 (gensim, word2vec.c); far fewer random memory reads with a large vocabulary.
    collapse_repeats  train on sessions with each run of one aid repeated in a row kept once (an
                 event whose aid equals the previous kept event's of the same session is dropped,
                 after the event-type filter, and counted); the sentences change, not the
                 algorithm, so parity mode still matches gensim given the same sentences.
    """

    vector_size: int = 100
    window: int = 5
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    alpha: float = 0.025
    min_alpha: float = 0.0001
    epochs: int = 5
    min_count: int = 5
    seed: int = 1
    workers: int = field(default_factory=default_threads)
    mode: str = "fast"
    sigmoid_edge: str = "skip"
    max_sentence_len: int | None = None
    batch_words: int = 10000
    parity_job_cap: int = 10000
    compute_loss: bool = True
    share_negatives: bool = False
    collapse_repeats: bool = False

    FLAG_CHOICES: ClassVar[dict] = {"mode": MODES, "sigmoid_edge": SIGMOID_EDGES}  # for data_prep.flags

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}: {why}, got {getattr(self, name)!r}")

        def is_int(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name, lo in (("vector_size", 1), ("window", 1), ("negative", 1), ("epochs", 0),
                         ("min_count", 1), ("workers", 1), ("batch_words", 1), ("parity_job_cap", 1)):
            if not is_int(name):
                raise bad(name, "must be an integer")
            if getattr(self, name) < lo:
                raise bad(name, f"must be >= {lo}")
        if not is_int("seed") or not 0 <= self.seed < 2**32:
            raise bad("seed", "must be an integer in [0, 2**32)")
        for name in ("ns_exponent", "sample", "alpha", "min_alpha"):
            if not is_num(name):
                raise bad(name, "must be a finite number")
        if self.sample < 0:
            raise bad("sample", "must be >= 0")
        if self.alpha <= 0:
            raise bad("alpha", "must be > 0")
        if self.min_alpha < 0 or self.min_alpha > self.alpha:
            raise bad("min_alpha", f"must be in [0, alpha={self.alpha}]")
        if self.mode not in MODES:
            raise bad("mode", f"must be one of {', '.join(MODES)}")
        if self.sigmoid_edge not in SIGMOID_EDGES:
            raise bad("sigmoid_edge", f"must be one of {', '.join(SIGMOID_EDGES)}")
        if self.max_sentence_len is not None and (not is_int("max_sentence_len") or self.max_sentence_len < 2):
            raise bad("max_sentence_len", "must be None or an integer >= 2")
        for name in ("compute_loss", "share_negatives", "collapse_repeats"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if self.share_negatives and self.mode == "parity":
            raise bad("share_negatives", "needs mode 'fast' (parity mode draws negatives per pair, as gensim; turn it off)")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def describe_presets() -> str:
        """One line per preset for --help: its name and the values it sets."""
        return "; ".join(f"{name}: " + (", ".join(f"{k} {v}" for k, v in values.items()) or "gensim 4.4's defaults")
                         for name, values in PRESETS.items())

    @classmethod
    def from_preset(cls, name: str = "gensim", **overrides) -> "W2VConfig":
        """The preset's values (``PRESETS[name]``) with ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"preset: unknown name {name!r} (expected one of {', '.join(PRESETS)})")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a W2VConfig field")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "W2VConfig":
        """Build from a dict (e.g. a model's meta.json), ignoring unknown keys."""
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw.update(overrides)
        return cls(**kw)
