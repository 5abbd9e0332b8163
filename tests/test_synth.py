"""The synthetic OTTO generator: format, determinism, invariants, calibration, learnability."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep import cli, synth
from data_prep.dataset import TYPE_CODES

T0 = synth.T0_MS
T_END = synth.T0_MS + synth.WINDOW_MS
N_BIG = 20_000
SEED_BIG = 7


def _parse(lines: list[bytes]):
    """JSONL lines -> (session ids, offsets, aid, ts, type) arrays, via json.loads on every line."""
    sids, lens, aid, ts, typ = [], [], [], [], []
    for line in lines:
        obj = json.loads(line)
        sids.append(obj["session"])
        lens.append(len(obj["events"]))
        for e in obj["events"]:
            aid.append(e["aid"])
            ts.append(e["ts"])
            typ.append(TYPE_CODES[e["type"]])
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return (np.array(sids, dtype=np.int64), offsets, np.array(aid, dtype=np.int64),
            np.array(ts, dtype=np.int64), np.array(typ, dtype=np.uint8))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """20k sessions at the default item ratio: raw bytes, lines, parsed arrays, summary."""
    out = tmp_path_factory.mktemp("synth") / "big.jsonl"
    summary = synth.generate(out, N_BIG, None, SEED_BIG, quiet=True)
    raw = out.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    return {"raw": raw, "lines": lines, "arrays": _parse(lines), "summary": summary,
            "n_items": synth.default_items(N_BIG)}


# ------------------------------------------------------------------ format
def test_every_line_is_compact_otto_json(big):
    assert len(big["lines"]) == N_BIG
    for i, line in enumerate(big["lines"]):
        obj = json.loads(line)
        assert list(obj) == ["session", "events"]
        assert obj["session"] == i
        for e in obj["events"]:
            assert list(e) == ["aid", "ts", "type"]
            assert e["type"] in ("clicks", "carts", "orders")
        # byte-exact compact form, as the published files
        assert json.dumps(obj, separators=(",", ":")).encode() == line
    assert big["raw"].endswith(b"]}\n") and b"\r" not in big["raw"]


def test_value_ranges_and_summary(big):
    sids, offsets, aid, ts, typ = big["arrays"]
    assert aid.min() >= 0 and aid.max() < big["n_items"]
    assert ts.min() >= T0 and ts.max() < T_END
    s = big["summary"]
    counts = np.bincount(typ, minlength=3)
    assert (s["clicks"], s["carts"], s["orders"]) == tuple(int(c) for c in counts)
    assert s["events"] == aid.shape[0] and s["sessions"] == N_BIG
    assert s["items"] == np.unique(aid).shape[0]
    assert s["jsonl_bytes"] == len(big["raw"])
    assert s["n_items"] == big["n_items"]
    assert s["orders_dropped_by_length"] >= 0 and 0 <= s["sessions_time_compressed"] <= N_BIG


def test_session_invariants(big):
    sids, offsets, aid, ts, typ = big["arrays"]
    lens = np.diff(offsets)
    assert lens.min() >= 2 and lens.max() <= 500
    # time-ordered within every session; session ids ordered by start time
    same_session = np.repeat(np.arange(N_BIG), lens)
    inside = same_session[1:] == same_session[:-1]
    assert np.all(np.diff(ts)[inside] >= 0)
    assert np.all(np.diff(ts[offsets[:-1]]) >= 0)
    # some sessions open with a cart and some with an order (cut by the window)
    first_type = typ[offsets[:-1]]
    assert (first_type == 1).sum() > 0 and (first_type == 2).sum() > 0


def test_orders_are_checkouts_of_carted_items(big):
    sids, offsets, aid, ts, typ = big["arrays"]
    shared = orders = 0
    for i in range(N_BIG):
        a, b = offsets[i], offsets[i + 1]
        t, x, tt = typ[a:b], aid[a:b], ts[a:b]
        k = 0
        while k < len(t) and t[k] == 2:  # a leading checkout (session cut by the window)
            k += 1
        lead = k
        carted = set()
        for k in range(len(t)):
            if t[k] == 1:
                carted.add(int(x[k]))
            elif t[k] == 2:
                orders += 1
                if k >= lead:
                    assert int(x[k]) in carted, f"session {i}: order of aid {x[k]} never carted"
                if (k > 0 and t[k - 1] == 2 and tt[k - 1] == tt[k]) or \
                   (k + 1 < len(t) and t[k + 1] == 2 and tt[k + 1] == tt[k]):
                    shared += 1
    assert orders > 0
    # multi-item checkouts: a good share of orders have a sibling order at the same ts
    assert shared / orders > 0.3


# ------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_any_threads_or_batches(tmp_path):
    paths = []
    for k, (threads, batch) in enumerate([(1, 65536), (2, 777), (2, 65536), (1, 1)]):
        p = tmp_path / f"r{k}.jsonl"
        synth.generate(p, 3000, 400, 11, quiet=True, threads=threads, batch_sessions=batch)
        paths.append(p)
    ref = paths[0].read_bytes()
    for p in paths[1:]:
        assert p.read_bytes() == ref
    other = tmp_path / "other.jsonl"
    synth.generate(other, 3000, 400, 12, quiet=True)
    assert other.read_bytes() != ref
    # a shorter run is not a prefix run: start times depend on N, but the lengths do not
    short = tmp_path / "short.jsonl"
    synth.generate(short, 1000, 400, 11, quiet=True)
    a = [len(json.loads(x)["events"]) for x in short.read_bytes().splitlines()]
    b = [len(json.loads(x)["events"]) for x in ref.splitlines()[:1000]]
    assert a == b


def test_gzip_output_is_deterministic_and_equal(tmp_path):
    plain, gz1, gz2 = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    synth.generate(plain, 500, 100, 3, quiet=True)
    synth.generate(gz1, 500, 100, 3, quiet=True)
    synth.generate(gz2, 500, 100, 3, quiet=True, threads=2)
    assert gz1.read_bytes()[:2] == b"\x1f\x8b"
    assert gz1.read_bytes() == gz2.read_bytes()
    assert gzip.decompress(gz1.read_bytes()) == plain.read_bytes()


def test_rng_stream_statistics():
    key = synth._seed_key(5, synth._KEY_SESSIONS)
    z = synth._normals(key, 200_000)
    # mean 0 +- 5 sigma/sqrt(n), var 1 +- 5 * sqrt(2/n)
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
    assert not np.array_equal(z, synth._normals(synth._seed_key(6, synth._KEY_SESSIONS), 200_000))
    np.testing.assert_array_equal(z, synth._normals(key, 200_000))


def test_geometric_draws_match_their_law():
    # the state is a uint64; numba hands it back to Python as an int, so re-wrap it each call
    st = np.uint64(synth._stream(synth._seed_key(1, synth._KEY_SESSIONS), 0))
    p, n = 0.45, 20_000
    g = np.empty(n, dtype=np.int64)
    for k in range(n):
        st, g[k] = synth._geometric(st, p, 10**6)
        st = np.uint64(st)
    mean, var = (1 - p) / p, (1 - p) / p**2
    assert abs(g.mean() - mean) < 5 * np.sqrt(var / n)
    assert abs((g == 0).mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    st, capped = synth._geometric(st, 1e-9, 3)
    assert capped == 3
    st, zero = synth._geometric(np.uint64(st), 1.0, 5)
    assert zero == 0


# ------------------------------------------------------------------ calibration
def test_statistics_near_published_at_20k(big):
    sids, offsets, aid, ts, typ = big["arrays"]
    E = aid.shape[0]
    mix = np.bincount(typ, minlength=3) / E
    assert abs(mix[0] - 0.8985) < 0.02
    assert abs(mix[1] - 0.0780) < 0.012
    assert abs(mix[2] - 0.0235) < 0.006
    lens = np.diff(offsets)
    assert abs(lens.mean() / 16.80 - 1) < 0.15
    assert abs(np.percentile(lens, 50) - 6) <= 2
    assert abs(np.percentile(lens, 90) / 39 - 1) < 0.25
    # heavy item tail: the real table has mean/p50 = 5.8, p95/p50 = 20, max/p50 = 6450
    counts = np.bincount(aid)
    counts = counts[counts > 0]
    p50, p95 = np.percentile(counts, [50, 95])
    assert counts.mean() / p50 > 3
    assert p95 / p50 > 10
    assert counts.max() / p50 > 300
    assert abs(counts.mean() / 116.79 - 1) < 0.25
    # starts spread over the four weeks: about a quarter of sessions start in the last 7 days
    last_week = (ts[offsets[:-1]] >= T_END - 7 * 86_400_000).mean()
    assert 0.18 < last_week < 0.32


def test_default_items_uses_the_real_ratio():
    assert synth.default_items(12_899_779) == 1_855_603
    assert synth.default_items(1) == 1


# ------------------------------------------------------------------ learnable structure
def test_successor_counts_beat_popularity(big):
    """Next (different) item: top-20 most frequent successors vs the top-20 popular items."""
    sids, offsets, aid, ts, typ = big["arrays"]
    lens = np.diff(offsets)
    sess = np.repeat(np.arange(N_BIG), lens)
    split = int(N_BIG * 0.8)
    a, b = aid[:-1], aid[1:]
    pair = (sess[:-1] == sess[1:]) & (a != b)
    train = pair & (sess[:-1] < split)
    test = pair & (sess[:-1] >= split)
    M = int(aid.max()) + 1
    codes, counts = np.unique(a[train] * M + b[train], return_counts=True)
    src, dst = codes // M, codes % M
    order = np.lexsort((dst, -counts, src))
    src, dst = src[order], dst[order]
    starts = np.searchsorted(src, np.arange(M + 1))
    pop = np.argsort(-np.bincount(aid[offsets[0]:offsets[split]], minlength=M), kind="stable")[:20]
    ta, tb = a[test], b[test]
    hit_pop = np.isin(tb, pop).mean()
    hit_succ = np.mean([y in dst[starts[x]:min(starts[x + 1], starts[x] + 20)] for x, y in zip(ta, tb)])
    assert hit_succ > 2 * hit_pop and hit_succ - hit_pop > 0.25, (hit_succ, hit_pop)


def test_sessions_stay_mostly_in_one_topic():
    cat = synth.build_catalog(3000, 1)
    offsets, aid, ts, typ, item, dr, comp = synth.generate_batch(cat, 0, 2000, 2000, 1)
    topic = cat.item_topic[item]
    sess = np.repeat(np.arange(2000), np.diff(offsets))
    same = sess[1:] == sess[:-1]
    same_topic = (topic[1:] == topic[:-1])[same].mean()
    # random pairs would share a topic with probability sum_t share_t^2 (a few %)
    share = np.bincount(topic) / topic.size
    assert same_topic > 0.8 and same_topic > 5 * (share ** 2).sum()
    np.testing.assert_array_equal(cat.aid_of[item], aid)


# ------------------------------------------------------------------ kernels vs references
@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**62), st.integers(0, 2)),
                         min_size=1, max_size=4), min_size=1, max_size=5),
       st.integers(0, 2**40))
def test_format_batch_equals_json_dumps(sessions, first):
    lens = [len(s) for s in sessions]
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    ev = [e for s in sessions for e in s]
    aid = np.array([e[0] for e in ev], dtype=np.int32)
    ts = np.array([e[1] for e in ev], dtype=np.int64)
    typ = np.array([e[2] for e in ev], dtype=np.uint8)
    got = synth.format_batch(first, offsets, aid, ts, typ).tobytes()
    names = ("clicks", "carts", "orders")
    want = "".join(
        json.dumps({"session": first + i, "events": [{"aid": a, "ts": t, "type": names[y]} for a, t, y in s]},
                   separators=(",", ":")) + "\n"
        for i, s in enumerate(sessions)).encode()
    assert got == want


def test_format_batch_refuses_a_session_without_events():
    # the generator never makes one (sessions have >= 2 events); the shared writer refuses it
    with pytest.raises(synth.SynthError, match="session 8"):
        synth.format_batch(7, np.array([0, 1, 1]), np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1, np.uint8))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=1, max_size=12), st.floats(0, 1, exclude_max=True),
       st.data())
def test_weighted_pick_lands_on_the_bucket_of_u(weights, u, data):
    w = np.array(weights)
    cum = np.concatenate(([0.0], np.cumsum(w)))
    lo = data.draw(st.integers(0, len(w) - 1))
    hi = data.draw(st.integers(lo + 1, len(w)))
    i = synth._weighted_pick(cum, lo, hi, u)
    assert lo <= i < hi
    target = cum[lo] + u * (cum[hi] - cum[lo])
    if cum[hi] > cum[lo]:
        # the last index whose bucket starts at or below the target; buckets of zero weight are
        # never chosen unless they end the range
        assert cum[i] <= target
        assert i == hi - 1 or cum[i + 1] > target
        assert w[i] > 0 or cum[i] == cum[hi]
    else:
        assert i == hi - 1 or cum[i + 1] > target


def test_weighted_pick_frequencies():
    w = np.array([1.0, 0.0, 2.0, 5.0, 0.0, 2.0])
    cum = np.concatenate(([0.0], np.cumsum(w)))
    us = (np.arange(20_000) + 0.5) / 20_000
    picks = np.array([synth._weighted_pick(cum, 0, 6, u) for u in us])
    freq = np.bincount(picks, minlength=6) / us.size
    np.testing.assert_allclose(freq, w / w.sum(), atol=1e-3)


def test_catalog_structure():
    cat = synth.build_catalog(5000, 2)
    assert sorted(cat.aid_of.tolist()) == list(range(5000))
    assert cat.topic_start[0] == 0 and cat.topic_start[-1] == 5000
    assert np.all(np.diff(cat.topic_start) >= 1)
    w = np.diff(cat.cum_w)
    assert np.all(w > 0)
    rel_topic = cat.item_topic[cat.related]
    assert np.all(rel_topic == cat.item_topic[:, None])  # related items stay inside the topic
    # self-relations only where one item dominates its topic or neighbourhood: rare
    big_topic = np.diff(cat.topic_start)[cat.item_topic] > 2 * synth.RELATED
    assert (cat.related[big_topic] == np.arange(5000)[big_topic, None]).mean() < 0.01
    # threads never change the catalog
    cat2 = synth.build_catalog(5000, 2, threads=2)
    for name in ("topic_start", "item_topic", "cum_w", "related", "aid_of"):
        np.testing.assert_array_equal(getattr(cat, name), getattr(cat2, name))


def test_degenerate_one_item_and_one_session(tmp_path):
    out = tmp_path / "one.jsonl"
    s = synth.generate(out, 5, 1, 0, quiet=True)
    lines = out.read_bytes().splitlines()
    assert len(lines) == 5 and s["items"] == 1
    for line in lines:
        assert {e["aid"] for e in json.loads(line)["events"]} == {0}
    out1 = tmp_path / "single.jsonl"
    synth.generate(out1, 1, 10, 0, quiet=True)
    assert len(out1.read_bytes().splitlines()) == 1


def test_start_time_table():
    t = synth.start_time_table(0.5)
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)
    flat = synth.start_time_table(0.0)
    np.testing.assert_allclose(flat, np.linspace(0, 1, flat.size))
    with pytest.raises(ValueError, match="daily_amplitude"):
        synth.start_time_table(1.0)


# ------------------------------------------------------------------ API and CLI errors
@pytest.mark.parametrize("kwargs, field", [
    (dict(n_sessions=0), "sessions"), (dict(n_items=0), "items"), (dict(seed=-1), "seed"),
    (dict(n_items=2**31), "items"), (dict(threads=0), "threads"), (dict(batch_sessions=0), "batch_sessions"),
])
def test_bad_arguments_name_the_field(tmp_path, kwargs, field):
    args = dict(n_sessions=10, n_items=5, seed=0)
    args.update(kwargs)
    out = tmp_path / "x.jsonl"
    with pytest.raises(synth.SynthError, match=field):
        synth.generate(out, args.pop("n_sessions"), args.pop("n_items"), args.pop("seed"), quiet=True, **args)
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "x.jsonl"
    out.write_bytes(b"old\n")
    calls = []

    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*a, **k)

    real = synth.format_batch
    monkeypatch.setattr(synth, "format_batch", boom)
    with pytest.raises(RuntimeError):
        synth.generate(out, 300, 50, 0, quiet=True, batch_sessions=100)
    assert out.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_cli_writes_file_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert cli.main(["synth", str(out), "--sessions", "40", "--items", "30", "--seed", "4"]) == 0
    err = capsys.readouterr().err
    assert "40 sessions" in err
    assert len(out.read_bytes().splitlines()) == 40
    ref = tmp_path / "ref.jsonl"
    synth.generate(ref, 40, 30, 4, quiet=True)
    assert out.read_bytes() == ref.read_bytes()
    assert cli.main(["synth", str(tmp_path / "q.jsonl"), "--sessions", "5", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as e:   # a bad value is a usage error: one line, exit 2
        cli.main(["synth", str(tmp_path / "bad.jsonl"), "--sessions", "0", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and "--sessions" in err and "Traceback" not in err
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.parametrize("change, field", [
    (dict(p_cart=1.5), "p_cart"), (dict(p_revisit=0.5, p_related=0.5, p_topic=0.2), "p_revisit"),
    (dict(sigma_item=float("nan")), "sigma_item"), (dict(topic_size=0.5), "topic_size"),
    (dict(daily_amplitude=1.0), "daily_amplitude"), (dict(w_floor=-1.0), "w_floor"),
])
def test_bad_params_name_the_field(tmp_path, change, field):
    from dataclasses import replace
    with pytest.raises(synth.SynthError, match=field):
        synth.generate(tmp_path / "x.jsonl", 10, 5, 0, quiet=True, params=replace(synth.SynthParams(), **change))
    assert list(tmp_path.iterdir()) == []


def test_params_change_the_output_and_defaults_validate(tmp_path):
    from dataclasses import replace
    assert synth.SynthParams().validate() == synth.SynthParams()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    synth.generate(a, 300, 50, 0, quiet=True)
    synth.generate(b, 300, 50, 0, quiet=True, params=replace(synth.SynthParams(), p_cart=0.0, p_lead_cart=0.0,
                                                              p_lead_order=0.0))
    assert a.read_bytes() != b.read_bytes()
    assert b'"carts"' not in b.read_bytes() and b'"orders"' not in b.read_bytes()
