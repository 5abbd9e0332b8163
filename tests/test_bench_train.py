"""bench/bench_train.py's comparison setup: what each tool is given at the session preset, and the
collapsed corpus the peers read (the rule ours trains with)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from data_prep.dataset import write_dataset
from w2v.config import PRESETS
from w2v.corpus import sentences_from_dataset

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "bench_train.py")
bt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bt)


def test_preset_groups_give_each_tool_its_knobs_and_the_corpus_group_the_collapsed_sentences():
    args = argparse.Namespace(tools="ours-shared,gensim,w2vc,fasttext", groups="preset,preset-corpus", epochs="1",
                              parity_epochs="1", tuned=None)
    jobs = bt.compare_jobs(args)
    preset = {j["tool"]: j["settings"] for g, j in jobs if g == "session preset"}
    corpus = {j["tool"]: j["settings"] for g, j in jobs if g == "preset, its corpus"}
    assert set(preset) == {"ours-shared", "gensim", "w2vc", "fasttext"} and set(corpus) == {"gensim", "w2vc", "fasttext"}
    assert preset["ours-shared"]["collapse_repeats"] is PRESETS["session"]["collapse_repeats"] is True
    for tool in ("gensim", "w2vc", "fasttext"):
        assert "collapse_repeats" not in preset[tool] and set(preset[tool]) == set(bt.KNOBS[tool])
        assert corpus[tool] == dict(preset[tool], collapse_repeats=True)
        assert preset[tool]["window"] == PRESETS["session"]["window"]


def test_the_peers_text_corpora_are_the_train_split_with_and_without_collapsing(tmp_path):
    rng = np.random.default_rng(3)
    lens = rng.integers(1, 9, 40)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    aid = rng.integers(0, 6, int(offsets[-1])).astype(np.int32)   # small catalogue: many repeats
    write_dataset(tmp_path / "ds", np.arange(40, dtype=np.int64), offsets, aid,
                  np.arange(aid.shape[0], dtype=np.int64), np.zeros(aid.shape[0], np.uint8))
    bt.write_text_corpora(tmp_path / "ds")
    train = bt.splits(tmp_path / "ds")[0]
    for collapse in (False, True):
        lines = bt.text_corpus_path(tmp_path / "ds", collapse).read_text().splitlines()
        s = sentences_from_dataset(train, collapse_repeats=collapse)
        assert lines == [" ".join(map(str, x.tolist())) for x in s.to_lists()]
    plain = bt.text_corpus_path(tmp_path / "ds").read_text().split()
    collapsed = bt.text_corpus_path(tmp_path / "ds", True).read_text().split()
    assert len(collapsed) < len(plain) == int(train.n_events)
