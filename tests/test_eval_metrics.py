"""OTTO weighted recall and next-item metrics: hand-made cases and a reference oracle."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from eval.labels import Labels
from eval.metrics import rank_metrics, score
from eval.submission import Submission, SubmissionError, from_predictions, read_submission, write_submission


def make_labels(rows):
    """rows: list of (sid, click or None, carts list, orders list)."""
    sids, clicks, co, c, oo, o = [], [], [0], [], [0], []
    for sid, click, carts, orders in rows:
        sids.append(sid)
        clicks.append(-1 if click is None else click)
        c += sorted(set(carts))
        co.append(len(c))
        o += sorted(set(orders))
        oo.append(len(o))
    def a(x):
        return np.array(x, np.int64)
    return Labels(a(sids), a(clicks), a(co), a(c), a(oo), a(o))


def make_sub(rows):
    """rows: list of (sid, type code, [aids])."""
    off = np.zeros(len(rows) + 1, np.int64)
    off[1:] = np.cumsum([len(r[2]) for r in rows])
    return Submission(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.uint8), off,
                      np.array([a for r in rows for a in r[2]], np.int64))


def reference_score(label_rows, sub_rows, k=20):
    """Straight transcription of the official evaluate.py semantics (dict overwrite, sets)."""
    preds = {}
    for sid, t, aids in sub_rows:
        preds.setdefault(sid, {})[("clicks", "carts", "orders")[t]] = list(aids)
    num = {"clicks": 0, "carts": 0, "orders": 0}
    den = {"clicks": 0, "carts": 0, "orders": 0}
    for sid, click, carts, orders in label_rows:
        p = preds.get(sid, {})
        if click is not None:
            den["clicks"] += 1
            num["clicks"] += int(click in p.get("clicks", [])[:k])
        for name, truth in (("carts", set(carts)), ("orders", set(orders))):
            if truth:
                den[name] += min(len(truth), k)
                num[name] += len(set(p.get(name, [])[:k]) & truth)
    r = {n: (num[n] / den[n] if den[n] else 0.0) for n in num}
    r["total"] = 0.1 * r["clicks"] + 0.3 * r["carts"] + 0.6 * r["orders"]
    return r


def test_hand_made_hits_truncation_and_duplicates():
    labels = make_labels([
        (1, 10, [10, 11], [12]),        # clicks hit, carts 1 of 2, orders miss
        (2, 20, [], []),                # only a click, predicted beyond k -> miss
        (3, None, [30, 31, 32], [30]),  # carts: duplicate prediction counts once
    ])
    sub = make_sub([
        (1, 0, [10, 5]), (1, 1, [11, 99]), (1, 2, [99]),
        (2, 0, [1, 2, 20]),
        (3, 1, [30, 30, 30]), (3, 2, [30]),
    ])
    s = score(labels, sub, k=2, detail=True)
    assert s["clicks"] == pytest.approx(1 / 2)
    assert s["hits"]["carts"] == 2 and s["truths"]["carts"] == 2 + 2   # min(k=2, 2) + min(2, 3)
    assert s["carts"] == pytest.approx(2 / 4)
    assert s["orders"] == pytest.approx(1 / 2)
    assert s["total"] == pytest.approx(0.1 * 0.5 + 0.3 * 0.5 + 0.6 * 0.5)


def test_k_smaller_than_truth_caps_the_denominator():
    labels = make_labels([(1, None, [1, 2, 3, 4, 5], [])])
    sub = make_sub([(1, 1, [1, 2, 3])])
    s = score(labels, sub, k=3, detail=True)
    assert s["truths"]["carts"] == 3 and s["carts"] == 1.0
    s = score(labels, sub, k=2, detail=True)
    assert s["truths"]["carts"] == 2 and s["hits"]["carts"] == 2


def test_missing_sessions_empty_predictions_and_extra_rows():
    labels = make_labels([(1, 7, [7], [7]), (2, 8, [8], [8])])
    sub = make_sub([(1, 0, []), (1, 1, [7]), (999, 2, [8])])  # session 2 absent, 999 has no labels
    s = score(labels, sub, detail=True)
    assert s["clicks"] == 0.0 and s["carts"] == 0.5 and s["orders"] == 0.0
    assert s["sessions_without_prediction"] == {"clicks": 1, "carts": 1, "orders": 2}
    empty = score(labels, make_sub([]))
    assert empty == {"clicks": 0.0, "carts": 0.0, "orders": 0.0, "total": 0.0}


def test_empty_labels_do_not_count_and_no_truth_gives_zero():
    labels = make_labels([(1, None, [], [5]), (2, 3, [], [])])
    sub = make_sub([(1, 2, [5]), (2, 0, [3])])
    s = score(labels, sub, detail=True)
    assert s["truths"] == {"clicks": 1, "carts": 0, "orders": 1}
    assert s["carts"] == 0.0 and s["clicks"] == 1.0 and s["orders"] == 1.0


def test_last_duplicate_row_wins_like_the_official_dict():
    labels = make_labels([(1, 4, [], [])])
    assert score(labels, make_sub([(1, 0, [4]), (1, 0, [5])]))["clicks"] == 0.0
    assert score(labels, make_sub([(1, 0, [5]), (1, 0, [4])]))["clicks"] == 1.0


label_row = st.tuples(st.one_of(st.none(), st.integers(0, 12)), st.lists(st.integers(0, 12), max_size=6),
                      st.lists(st.integers(0, 12), max_size=6))


@settings(max_examples=150, deadline=None)
@given(st.lists(label_row, max_size=8),
       st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.lists(st.integers(0, 12), max_size=8)), max_size=20),
       st.integers(1, 6))
def test_matches_reference_oracle(lrows, srows, k):
    label_rows = [(i, *r) for i, r in enumerate(lrows)]
    s = score(make_labels(label_rows), make_sub(srows), k=k)
    ref = reference_score(label_rows, srows, k)
    for n in ref:
        assert s[n] == pytest.approx(ref[n], abs=1e-12)


def test_submission_csv_round_trip(tmp_path):
    preds = {0: np.array([[5, 6, -1], [0, -1, -1]]), 1: np.array([[7, -1, -1], [-1, -1, -1]]),
             2: np.array([[1, 2, 3], [2147483647, 8, 9]])}
    sub = from_predictions(np.array([12899779, 0]), preds)
    write_submission(sub, tmp_path / "s.csv")
    text = (tmp_path / "s.csv").read_text()
    assert text.splitlines()[:3] == ["session_type,labels", "12899779_clicks,5 6", "0_clicks,0"]
    assert "0_carts,\n" in text
    back = read_submission(tmp_path / "s.csv")
    for f in ("session_ids", "types", "offsets", "aids"):
        np.testing.assert_array_equal(getattr(back, f), getattr(sub, f))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-2 ** 63, 2 ** 63 - 1), st.integers(0, 2),
                          st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=6)), max_size=12))
def test_submission_bytes_are_the_python_formatting(tmp_path_factory, rows):
    """The CSV writer is byte-identical to formatting every row with str() (any int64, signs too)."""
    sub = Submission(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.uint8),
                     np.cumsum([0] + [len(r[2]) for r in rows]).astype(np.int64),
                     np.array([a for r in rows for a in r[2]], np.int64))
    path = tmp_path_factory.mktemp("sub") / "s.csv"
    write_submission(sub, path)
    names = ("clicks", "carts", "orders")
    expect = "".join(f"{s}_{names[t]},{' '.join(map(str, aids))}\n" for s, t, aids in rows)
    assert path.read_bytes() == b"session_type,labels\n" + expect.encode()


def test_submission_numbers_must_fit_int64(tmp_path):
    """Numbers are parsed by data_prep.fastparse.parse_uint: the int64 range round-trips, anything
    larger is a bad line (it used to wrap around silently)."""
    big = 2 ** 63 - 1
    sub = Submission(np.array([big, -big, 0], np.int64), np.array([0, 1, 2], np.uint8),
                     np.array([0, 2, 2, 3], np.int64), np.array([big, 0, 10 ** 18], np.int64))
    write_submission(sub, tmp_path / "s.csv")
    back = read_submission(tmp_path / "s.csv")
    for f in ("session_ids", "types", "offsets", "aids"):
        np.testing.assert_array_equal(getattr(back, f), getattr(sub, f))
    p = tmp_path / "bad.csv"
    for body, what in ((f"3_clicks,1 {big + 1}\n", r":2: bad aid"), ("3_clicks,1 " + "9" * 25 + "\n", r":2: bad aid"),
                       (f"{big + 1}_clicks,1\n", r":2: bad session id")):
        p.write_text("session_type,labels\n" + body)
        with pytest.raises(SubmissionError, match=what):
            read_submission(p)


def test_submission_reader_tolerates_crlf_and_reports_bad_lines(tmp_path):
    p = tmp_path / "s.csv"
    p.write_bytes(b"session_type,labels\r\n3_orders,1  2\r\n\r\n4_carts,\r\n")
    s = read_submission(p)
    assert s.session_ids.tolist() == [3, 4] and s.types.tolist() == [2, 1] and s.aids.tolist() == [1, 2]
    p.write_bytes(b"session_type,labels\n3_orders,1 2\n4_buys,1\n")
    with pytest.raises(SubmissionError, match=r"s.csv:3: unknown type"):
        read_submission(p)
    p.write_bytes(b"session_type,labels\n3_orders,1 x\n")
    with pytest.raises(SubmissionError, match=r":2: bad aid"):
        read_submission(p)
    p.write_bytes(b"session,labels\n")
    with pytest.raises(SubmissionError, match=r":1: header"):
        read_submission(p)


def test_rank_metrics_by_hand():
    preds = np.array([[3, 1, 2], [1, 1, 9], [-1, -1, -1], [4, 5, 6]])
    targets = np.array([2, 9, -1, 7])
    m = rank_metrics(preds, targets, k=3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 3) / 4)
    m2 = rank_metrics(preds, targets, k=2)
    assert m2["recall"] == 0.0 and m2["mrr"] == 0.0
    assert rank_metrics(np.zeros((0, 3), np.int64), np.zeros(0, np.int64))["n"] == 0
