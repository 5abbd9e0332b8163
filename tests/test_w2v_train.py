"""Fast mode, the corpus built from a Dataset, configuration, persistence, callbacks and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep.dataset import Dataset, write_dataset
from w2v import cli
from w2v.config import W2VConfig
from w2v.corpus import sentences_from_dataset, sentences_from_sequences
from w2v.model_io import load_model
from w2v.trainer import Word2Vec


def topic_sessions(n_sessions, n_topics=40, topic_size=10, seed=0):
    """Sessions that walk inside one topic of ``topic_size`` consecutive items, with a 5% chance
    per step of jumping to a random item; item ``i`` is aid ``1000 + 7 * i``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sessions):
        t = int(rng.integers(0, n_topics))
        L = int(rng.integers(2, 25))
        items = t * topic_size + rng.integers(0, topic_size, L)
        jump = rng.random(L) < 0.05
        items[jump] = rng.integers(0, n_topics * topic_size, int(jump.sum()))
        out.append(1000 + 7 * items)
    return out


def recall_at_20(model, sessions):
    row = {int(a): i for i, a in enumerate(model.aids)}
    v = model.vectors / np.maximum(np.linalg.norm(model.vectors, axis=1, keepdims=True), 1e-12)
    hits = total = 0
    for s in sessions:
        for a, b in zip(s[:-1], s[1:]):
            if a == b or int(a) not in row or int(b) not in row:
                continue
            sims = v @ v[row[int(a)]]
            sims[row[int(a)]] = -np.inf
            top = np.argpartition(-sims, 20)[:20]
            hits += row[int(b)] in top
            total += 1
    return hits / total


@pytest.mark.slow
def test_fast_mode_learns_and_loss_falls():
    train, test = topic_sessions(3000, seed=1), topic_sessions(300, seed=2)
    cfg = W2VConfig(vector_size=32, window=5, negative=5, min_count=1, epochs=5, workers=2, seed=3)
    seen = []
    model = Word2Vec(cfg).build_vocab_from_sequences(train)
    model.train(progress=False, callbacks=[lambda m, e, loss: seen.append((m is model, e, loss))])
    assert [s[1] for s in seen] == [1, 2, 3, 4, 5] and all(s[0] for s in seen)
    assert [s[2] for s in seen] == model.epoch_losses
    losses = model.epoch_losses
    assert losses[-1] < losses[0] - 0.2
    assert all(b < a + 0.02 for a, b in zip(losses, losses[1:]))
    r = recall_at_20(model, test)
    random_recall = 20 / (len(model.aids) - 1)
    assert r > 0.6 and r > 10 * random_recall
    # untrained vectors (same seed) do not recall
    fresh = Word2Vec(cfg).build_vocab_from_sequences(train)
    assert recall_at_20(fresh, test) < 0.2


def test_fast_mode_one_thread_is_deterministic_and_seed_dependent():
    sents = topic_sessions(200, seed=5)
    cfg = W2VConfig(vector_size=8, min_count=1, epochs=2, workers=1, seed=4)
    a = Word2Vec(cfg).build_vocab_from_sequences(sents)
    b = Word2Vec(cfg).build_vocab_from_sequences(sents)
    a.train(progress=False)
    b.train(progress=False)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.epoch_losses == b.epoch_losses
    c = Word2Vec(W2VConfig(vector_size=8, min_count=1, epochs=2, workers=1, seed=5)).build_vocab_from_sequences(sents)
    c.train(progress=False)
    assert not np.array_equal(a.vectors, c.vectors)


def test_loss_is_independent_of_thread_count_in_expectation_and_can_be_off():
    sents = topic_sessions(400, seed=6)
    losses = []
    for w in (1, 2):
        m = Word2Vec(W2VConfig(vector_size=8, min_count=1, epochs=1, workers=w, seed=4))
        m.build_vocab_from_sequences(sents)
        m.train(progress=False)
        losses.append(m.epoch_losses[0])
        assert m.history[0]["threads"] <= w
    assert abs(losses[0] - losses[1]) < 0.05
    off = Word2Vec(W2VConfig(vector_size=8, min_count=1, epochs=1, compute_loss=False))
    off.build_vocab_from_sequences(sents)
    off.train(progress=False)
    assert np.isnan(off.epoch_losses[0]) and off.meta()["epoch_losses"] == [None]


def test_progress_goes_to_stderr_only_when_asked(capsys):
    m = Word2Vec(W2VConfig(vector_size=4, min_count=1, epochs=1)).build_vocab_from_sequences([[1, 2, 3]] * 5)
    m.train(progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    m.train(epochs=1, progress=True)
    out = capsys.readouterr()
    assert out.out == "" and "words/s" in out.err and "loss" in out.err


@pytest.mark.parametrize("field,value", [
    ("vector_size", 0), ("window", 0), ("negative", 0), ("epochs", -1), ("min_count", 0), ("workers", 0),
    ("sample", -1.0), ("alpha", 0.0), ("min_alpha", 1.0), ("mode", "turbo"), ("sigmoid_edge", "wrap"),
    ("max_sentence_len", 1), ("batch_words", 0), ("seed", -1), ("ns_exponent", float("nan")),
    ("vector_size", 2.5), ("window", True), ("compute_loss", "yes"),
])
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ValueError) as exc:
        W2VConfig(**{field: value})
    assert field in str(exc.value) and repr(value) in str(exc.value)


def test_config_round_trip_and_from_dict_ignores_unknown_keys():
    cfg = W2VConfig(vector_size=7, mode="parity", workers=1)
    assert W2VConfig.from_dict(dict(cfg.to_dict(), unknown=1)) == cfg
    with pytest.raises(ValueError, match="config"):
        Word2Vec(cfg, window=3)


def _dataset():
    # sessions: [1 1 2 3], [4], [2 2 2 5 6] with types click/cart/order mixed
    aid = np.array([1, 1, 2, 3, 4, 2, 2, 2, 5, 6], np.int32)
    typ = np.array([0, 0, 1, 0, 0, 0, 2, 0, 0, 1], np.uint8)
    offsets = np.array([0, 4, 5, 10], np.int64)
    return Dataset(np.array([10, 11, 12], np.int64), offsets, aid, np.arange(10, dtype=np.int64), typ)


def test_sentences_from_dataset_filters_in_documented_order():
    ds = _dataset()
    s = sentences_from_dataset(ds)
    assert s.to_lists()[0].tolist() == [1, 1, 2, 3] and s.n_sentences == 3
    s = sentences_from_dataset(ds, collapse_repeats=True, min_session_len=2)
    assert [x.tolist() for x in s.to_lists()] == [[1, 2, 3], [2, 5, 6]]
    assert s.stats["dropped_events_by_collapse"] == 3 and s.stats["dropped_short_sessions"] == 1
    s = sentences_from_dataset(ds, types="clicks", collapse_repeats=True)
    assert [x.tolist() for x in s.to_lists()] == [[1, 3], [4], [2, 5]]
    assert s.stats["dropped_events_by_type"] == 3
    s = sentences_from_dataset(ds, max_sentence_len=2)
    assert [x.tolist() for x in s.to_lists()] == [[1, 1], [2, 3], [4], [2, 2], [2, 5], [6]]
    assert s.stats["sentences_split"] == 2 and s.stats["extra_pieces"] == 3 and s.stats["words"] == 10
    with pytest.raises(ValueError, match="min_session_len"):
        sentences_from_dataset(ds, min_session_len=0)
    with pytest.raises(ValueError, match="types"):
        sentences_from_dataset(ds, types="views")
    assert sentences_from_sequences([]).n_sentences == 0


def test_errors_before_training():
    with pytest.raises(ValueError, match="vocabulary"):
        Word2Vec(W2VConfig()).train()
    m = Word2Vec(W2VConfig(min_count=5)).build_vocab_from_sequences([[1, 2, 3]])
    with pytest.raises(ValueError, match="vocabulary: empty"):
        m.train(progress=False)
    with pytest.raises(ValueError, match="vectors"):
        small = Word2Vec(W2VConfig(vector_size=3, min_count=1)).build_vocab_from_sequences([[1, 2]])
        small.set_weights(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="epochs"):
        Word2Vec(W2VConfig(vector_size=3, min_count=1)).build_vocab_from_sequences([[1, 2]]).train(epochs=-1)


def test_save_load_round_trip(tmp_path):
    ds = _dataset()
    m = Word2Vec(W2VConfig(vector_size=6, min_count=1, epochs=2, workers=1, sample=0.0)).build_vocab(
        ds, types="clicks,carts")
    m.train(progress=False)
    m.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        m.save(tmp_path / "m")
    disk = load_model(tmp_path / "m")
    np.testing.assert_array_equal(disk.vectors, m.vectors)
    np.testing.assert_array_equal(disk.output, m.output)
    np.testing.assert_array_equal(disk.aids, m.aids)
    np.testing.assert_array_equal(disk.counts, m.counts)
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["config"]["vector_size"] == 6 and len(meta["epoch_losses"]) == 2
    assert meta["dropped"]["by_type"] == 1 and meta["stats"]["corpus"]["types"] == [0, 1]
    assert meta["words_per_s"] > 0 and meta["train_seconds"] > 0 and all(x > 0 for x in meta["epoch_losses"])
    # popularity is over the whole dataset given to build_vocab, including the filtered-out order
    assert disk.popular is not None and 2 in disk.popular[2].tolist()
    back = Word2Vec.load(tmp_path / "m", workers=1)
    np.testing.assert_array_equal(back.vectors, m.vectors)
    assert back.config == m.config and back.epoch_losses == m.epoch_losses and back.epochs_trained == 2
    with pytest.raises(ValueError, match="corpus"):
        back.train(progress=False)
    back.set_corpus(ds)
    back.train(epochs=1, progress=False)
    assert back.epochs_trained == 3 and not np.array_equal(back.vectors, m.vectors)


def test_cli_trains_and_writes_a_model(tmp_path, capsys):
    ds = _dataset()
    write_dataset(tmp_path / "ds", ds.session_ids, ds.offsets, ds.aid, ds.ts, ds.type)
    rc = cli.main([str(tmp_path / "ds"), str(tmp_path / "model"), "--vector-size", "5", "--min-count", "1",
                   "--epochs", "2", "--workers", "1", "--quiet", "--collapse-repeats", "--mode", "parity",
                   "--sample", "0"])  # (downsampling would drop every word of this 10-event corpus: nothing trained)
    assert rc == 0
    out = capsys.readouterr()
    assert "trained" in out.out and out.err == ""
    model = load_model(tmp_path / "model")
    assert model.vector_size == 5 and model.meta["config"]["mode"] == "parity"
    assert model.meta["stats"]["corpus_options"]["collapse_repeats"] is True
    # existing output without --overwrite, a missing dataset: one line, exit 1; a bad value: one line, exit 2
    assert cli.main([str(tmp_path / "ds"), str(tmp_path / "model"), "--quiet"]) == 1
    assert cli.main([str(tmp_path / "nope"), str(tmp_path / "m2"), "--quiet"]) == 1
    with pytest.raises(SystemExit) as e:
        cli.main([str(tmp_path / "ds"), str(tmp_path / "m3"), "--window", "0", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("otto-train train: error:") for line in err)
    assert "window" in err[2] and "Traceback" not in "".join(err)
    assert cli.main([str(tmp_path / "ds"), str(tmp_path / "model"), "--quiet", "--overwrite",
                     "--min-count", "1", "--vector-size", "3", "--epochs", "1", "--sample", "0"]) == 0
    assert load_model(tmp_path / "model").vector_size == 3


def test_cli_help_mentions_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--vector-size", "--window", "--negative", "--ns-exponent", "--sample", "--alpha", "--min-alpha",
                 "--epochs", "--min-count", "--workers", "--seed", "--types", "--min-session-len",
                 "--collapse-repeats", "--mode", "--sigmoid-edge", "--max-sentence-len", "--overwrite", "--quiet"):
        assert flag in text


def test_collapse_repeats_keeps_each_run_once_on_both_corpus_paths():
    from w2v.corpus import not_repeats, sentences_from_sequences
    seqs = [[1, 1, 2, 1], [], [3, 3, 3], [4, 5, 5]]
    s = sentences_from_sequences(seqs, collapse_repeats=True)
    assert [list(x) for x in s.to_lists()] == [[1, 2, 1], [], [3], [4, 5]]   # empty sentences stay
    assert s.stats["dropped_events_by_collapse"] == 4 and s.stats["words"] == 6
    plain = sentences_from_sequences(seqs)
    assert plain.stats["dropped_events_by_collapse"] == 0 and plain.n_sentences == 4
    # a run across a sentence boundary is two runs; the first word of a sentence is always kept
    assert not_repeats(np.array([7, 7, 7, 7]), np.array([0, 2, 4])).tolist() == [True, False, True, False]
    # the trainer applies the config's rule to hand-made sentences too
    m = Word2Vec(W2VConfig(vector_size=4, min_count=1, workers=1, collapse_repeats=True))
    m.build_vocab_from_sequences(seqs)
    assert m.stats["corpus"]["dropped_events_by_collapse"] == 4


def test_collapsing_in_parity_mode_is_training_on_the_collapsed_sentences():
    """``collapse_repeats`` changes the sentences only: parity mode with it is bit-identical to
    parity mode given the collapsed sentences (which the gensim oracle covers)."""
    from w2v.corpus import not_repeats
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 8, int(n)) for n in rng.integers(1, 12, 300)]
    collapsed = [s[not_repeats(s, np.array([0, s.shape[0]]))] for s in seqs]
    assert sum(map(len, collapsed)) < sum(map(len, seqs))
    cfg = dict(vector_size=6, min_count=1, workers=1, mode="parity", epochs=2, window=3, sample=0.0)
    a = Word2Vec(W2VConfig(collapse_repeats=True, **cfg)).build_vocab_from_sequences(seqs)
    b = Word2Vec(W2VConfig(**cfg)).build_vocab_from_sequences(collapsed)
    a.train(progress=False)
    b.train(progress=False)
    np.testing.assert_array_equal(a.aids, b.aids)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.output, b.output)
