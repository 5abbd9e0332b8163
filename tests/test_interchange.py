"""word2vec C text/binary export and import (w2v.interchange), with gensim as the oracle."""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from w2v import interchange as ix
from w2v.model_io import load_model, save_model

logging.getLogger("gensim").setLevel(logging.WARNING)

SPECIAL = np.array([0.1, 1e-5, -0.0, 0.0, 3.4028235e38, -3.4028235e38, 1e-45, 2.0 ** -126, 2.0 ** -127,
                    1 / 3, 1e-4, 1.0001e-4, 999999.94, 1e6, 16777216.0, 1.0, 100.0, 0.5, 123.456,
                    -16528.6875, 2399473.75, 1.444102e08, np.inf, -np.inf, np.nan], np.float32)


def _bits_equal(a, b) -> bool:
    a = np.ascontiguousarray(a, np.float32)
    b = np.ascontiguousarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _random_model(path, V=40, D=8, seed=0):
    rng = np.random.default_rng(seed)
    vectors = (rng.standard_normal((V, D)) * 0.1).astype(np.float32)
    if V:
        vectors[0] = 0.0  # a zero vector
    output = rng.standard_normal((V, D)).astype(np.float32)
    aids = rng.permutation(1_900_000)[:V].astype(np.int64)
    counts = rng.integers(1, 100, V)
    save_model(path, vectors, output, aids, counts, {"source": "test"})
    return load_model(path)


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _format_line(tmp_path, values: np.ndarray) -> list[str]:
    p = tmp_path / "fmt.txt"
    ix.write_word2vec(p, np.array([7]), np.asarray(values, np.float32)[None, :])
    line = p.read_bytes().split(b"\n")[1]
    return line.decode().split(" ")[1:]


# ---------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("binary", [False, True])
def test_model_round_trip_is_bit_exact(tmp_path, binary):
    m = _random_model(tmp_path / "m", V=60, D=9)
    vec = np.array(m.vectors)
    vec[1, :SPECIAL.size // 3] = SPECIAL[: SPECIAL.size // 3]
    vec[2, :] = SPECIAL[-12:-3]  # the largest finite values (a model holds no inf or nan)
    save_model(tmp_path / "m2", vec, m.output, m.aids, m.counts, {})
    out = tmp_path / ("v.bin" if binary else "v.txt")
    ix.export_word2vec(tmp_path / "m2", out, binary=binary)
    ix.import_word2vec(out, tmp_path / "back")
    back = load_model(tmp_path / "back")
    assert _bits_equal(back.vectors, vec)
    assert np.array_equal(back.aids, m.aids)
    assert not back.output.any() and not back.counts.any()
    assert back.meta["source"] == "word2vec-import"
    assert back.meta["output_known"] is False and back.meta["counts_known"] is False
    assert back.meta["imported_from"]["format"] == ("binary" if binary else "text")


@pytest.mark.parametrize("binary", [False, True])
def test_non_finite_values_round_trip_as_files_but_never_become_a_model(tmp_path, binary):
    vec = np.zeros((3, 9), np.float32)
    vec[1] = SPECIAL[-9:]  # inf, -inf, nan and friends
    out = tmp_path / ("v.bin" if binary else "v.txt")
    ix.write_word2vec(out, np.array([4, 5, 6]), vec, binary=binary)
    _, back, _ = ix.read_word2vec(out)
    assert _bits_equal(back, vec)  # the file format carries them bit-exactly
    where = "record 2" if binary else "line 3"
    with pytest.raises(ix.Word2VecFormatError, match=rf"v\.(txt|bin): {where}: value 7 is inf; .*finite"):
        ix.import_word2vec(out, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_export_output_vectors_and_loaded_model(tmp_path):
    m = _random_model(tmp_path / "m")
    ix.export_word2vec(m, tmp_path / "o.bin", binary=True, which="output")
    aids, vec, info = ix.read_word2vec(tmp_path / "o.bin")
    assert info == {"binary": True, "rows": m.vocab_size, "dim": m.vector_size}
    assert _bits_equal(vec, m.output) and np.array_equal(aids, m.aids)
    with pytest.raises(ValueError, match="which"):
        ix.export_word2vec(m, tmp_path / "x", which="syn1")


def test_text_layout_and_binary_layout(tmp_path):
    aids = np.array([5, 0, 1234567890123])
    vec = np.array([[0.5, -1.0], [0.0, 1e-5], [3.25, 100.0]], np.float32)
    ix.write_word2vec(tmp_path / "t.txt", aids, vec)
    assert (tmp_path / "t.txt").read_bytes() == b"3 2\n5 0.5 -1.0\n0 0.0 1e-05\n1234567890123 3.25 100.0\n"
    ix.write_word2vec(tmp_path / "t.bin", aids, vec, binary=True)
    expect = b"3 2\n" + b"".join(b"%d " % a + v.astype("<f4").tobytes() + b"\n" for a, v in zip(aids, vec))
    assert (tmp_path / "t.bin").read_bytes() == expect


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2 ** 63 - 1), min_size=1, max_size=30, unique=True))
def test_keys_are_written_as_python_str(tmp_path_factory, keys):
    tmp = tmp_path_factory.mktemp("keys")
    vec = np.zeros((len(keys), 1), np.float32)
    for binary, sep in ((False, b" 0.0\n"), (True, b" " + bytes(4) + b"\n")):
        ix.write_word2vec(tmp / "k", np.array(keys, np.int64), vec, binary=binary)
        assert (tmp / "k").read_bytes() == b"%d 1\n" % len(keys) + b"".join(str(k).encode() + sep for k in keys)


def test_text_floats_are_numpy_shortest_repr(tmp_path):
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32)
    scaled = rng.standard_normal(5000).astype(np.float32) * np.float32(10.0) ** rng.integers(-40, 38, 5000).astype(np.float32)
    vals = np.concatenate([SPECIAL, bits.view(np.float32), scaled, (rng.standard_normal(5000) * 0.1).astype(np.float32)])
    toks = _format_line(tmp_path, vals)
    assert toks == [str(v) for v in vals]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40))
def test_float_format_property(tmp_path_factory, values):
    tmp = tmp_path_factory.mktemp("fmt")
    vals = np.array(values, np.float32)
    toks = _format_line(tmp, vals)
    assert toks == [str(v) for v in vals]
    _, back, _ = ix.read_word2vec(tmp / "fmt.txt")
    nan = np.isnan(vals)
    assert np.array_equal(np.isnan(back[0]), nan) and _bits_equal(back[0][~nan], vals[~nan])


_decimal = st.builds(
    lambda sign, ip, fp, ex: f"{sign}{ip}{'.' + fp if fp is not None else ''}{'' if ex is None else 'e' + str(ex)}",
    st.sampled_from(["", "-", "+"]),
    st.from_regex(r"[0-9]{1,25}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[0-9]{0,25}", fullmatch=True)),
    st.one_of(st.none(), st.integers(-60, 45)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_decimal, min_size=1, max_size=30))
def test_text_parser_matches_numpy_float32(tmp_path_factory, tokens):
    """Fast path and slow path both give exactly numpy's float32(str) (within 0 ulp)."""
    p = tmp_path_factory.mktemp("parse") / "p.txt"
    p.write_text(f"1 {len(tokens)}\n3 " + " ".join(tokens) + "\n")
    with np.errstate(over="ignore"):
        expect = np.array([np.float32(t) for t in tokens], np.float32)
    _, vec, _ = ix.read_word2vec(p)
    assert _bits_equal(vec[0], expect)


def test_parser_accepts_word2vec_c_text_and_crlf(tmp_path):
    # word2vec.c writes "%lf " per value (trailing space); Windows tools write CRLF
    p = _write(tmp_path, "c.txt", b"2 3\r\n10 0.100000 -0.250000 1.000000 \r\n11 nan -inf +Infinity\r\n\r\n")
    aids, vec, info = ix.read_word2vec(p)
    assert not info["binary"] and aids.tolist() == [10, 11]
    assert _bits_equal(vec[0], np.float32([0.1, -0.25, 1.0]))
    assert np.isnan(vec[1, 0]) and vec[1, 1] == -np.inf and vec[1, 2] == np.inf


def test_slow_path_values(tmp_path):
    toks = ["1e-30", "1.2345678901234567890123", "-7e30", "123456789012345678901234", "0.000000000000000000000000000000000012"]
    p = _write(tmp_path, "s.txt", f"1 5\n4 {' '.join(toks)}\n".encode())
    _, vec, _ = ix.read_word2vec(p)
    assert _bits_equal(vec[0], np.array([np.float32(t) for t in toks]))


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_binary_with_and_without_record_newline(tmp_path, newline):
    vec = np.array([[1.5, -2.0], [0.0, 7.0]], np.float32)
    data = b"2 2\n" + b"".join(b"%d " % a + v.tobytes() + newline for a, v in zip([3, 4], vec))
    aids, back, info = ix.read_word2vec(_write(tmp_path, "b.bin", data))
    assert info["binary"] and aids.tolist() == [3, 4] and _bits_equal(back, vec)


def test_chunking_does_not_change_results(tmp_path):
    m = _random_model(tmp_path / "m", V=37, D=5, seed=4)
    for binary in (False, True):
        big, small = tmp_path / f"big{binary}", tmp_path / f"small{binary}"
        ix.write_word2vec(big, m.aids, m.vectors, binary=binary)
        ix.write_word2vec(small, m.aids, m.vectors, binary=binary, chunk_bytes=1)
        assert big.read_bytes() == small.read_bytes()
        a1, v1, _ = ix.read_word2vec(big)
        a2, v2, _ = ix.read_word2vec(big, window=7, chunk_rows=3)  # lines longer than the window
        assert np.array_equal(a1, a2) and _bits_equal(v1, v2) and _bits_equal(v1, m.vectors)


def test_zero_row_files_are_read_but_never_become_a_model(tmp_path):
    from w2v.model_io import ModelError
    with pytest.raises(ModelError, match=r"z/vectors\.npy: 0 rows"):
        save_model(tmp_path / "z", np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), {})
    assert not (tmp_path / "z").exists()
    for binary in (False, True):
        out = tmp_path / f"z{binary}"
        ix.write_word2vec(out, np.zeros(0, np.int64), np.zeros((0, 4), np.float32), binary=binary)
        assert out.read_bytes() == b"0 4\n"
        aids, vec, _ = ix.read_word2vec(out, binary=binary)
        assert vec.shape == (0, 4) and aids.shape == (0,)
        with pytest.raises(ix.Word2VecFormatError, match=r"line 1: the header declares 0 rows of 4 dimensions"):
            ix.import_word2vec(out, tmp_path / f"back{binary}")
        assert not (tmp_path / f"back{binary}").exists()


def test_zero_dimensional_vectors(tmp_path):
    for binary in (False, True):
        out = tmp_path / f"d0{binary}"
        ix.write_word2vec(out, np.array([3, 1]), np.zeros((2, 0), np.float32), binary=binary)
        aids, vec, _ = ix.read_word2vec(out, binary=binary)
        assert aids.tolist() == [3, 1] and vec.shape == (2, 0)
        with pytest.raises(ix.Word2VecFormatError, match=r"line 1: the header declares 2 rows of 0 dimensions"):
            ix.import_word2vec(out, tmp_path / f"back{binary}")


def test_auto_detect_and_forced_mode(tmp_path):
    m = _random_model(tmp_path / "m", V=5, D=3)
    ix.export_word2vec(m, tmp_path / "b", binary=True)
    assert ix.read_word2vec(tmp_path / "b")[2]["binary"] is True
    with pytest.raises(ix.Word2VecFormatError, match=r"b: line 2"):
        ix.read_word2vec(tmp_path / "b", binary=False)
    ix.export_word2vec(m, tmp_path / "t")
    assert ix.read_word2vec(tmp_path / "t")[2]["binary"] is False
    # a gensim file with word keys is detected as text and rejected at its first key
    words = _write(tmp_path, "words.txt", "2 2\nthe 0.1 0.2\nüber 0.3 0.4\n".encode())
    with pytest.raises(ix.Word2VecFormatError, match=r"words\.txt: line 2: key 'the' is not a non-negative integer"):
        ix.read_word2vec(words)


# ---------------------------------------------------------------------------- gensim oracle

@pytest.mark.parametrize("binary", [False, True])
def test_gensim_loads_our_export(tmp_path, binary):
    KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
    m = _random_model(tmp_path / "m", V=50, D=6, seed=7)
    out = tmp_path / "e"
    ix.export_word2vec(m, out, binary=binary)
    kv = KeyedVectors.load_word2vec_format(str(out), binary=binary)
    rows = [kv.key_to_index[str(int(a))] for a in m.aids]  # keys are strings in gensim
    assert _bits_equal(kv.vectors[rows], m.vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_we_load_gensim_export(tmp_path, binary):
    """gensim writes text floats with str(np.float32) (shortest round-trip repr), so text is exact
    too: tolerance 0. Our text export is byte-identical to gensim's."""
    KeyedVectors = pytest.importorskip("gensim.models").KeyedVectors
    rng = np.random.default_rng(8)
    aids = rng.permutation(10 ** 6)[:30]
    vec = (rng.standard_normal((30, 5)) * 0.2).astype(np.float32)
    vec[3] = 0.0
    kv = KeyedVectors(5)
    kv.add_vectors([str(a) for a in aids], vec)
    g = tmp_path / "g"
    kv.save_word2vec_format(str(g), binary=binary)
    got_aids, got, info = ix.read_word2vec(g)
    assert info["binary"] is binary
    assert np.array_equal(got_aids, aids) and _bits_equal(got, vec)
    ours = tmp_path / "o"
    ix.write_word2vec(ours, aids, vec, binary=binary)
    if not binary:
        assert ours.read_bytes() == g.read_bytes()


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("data, pattern", [
    (b"", r"line 1: file is empty"),
    (b"3 2", r"line 1: .*no complete header"),
    (b"abc\n", r"line 1: expected a header"),
    (b"3\n1 0.5\n", r"line 1: expected a header"),
    (b"2 -2\n", r"line 1: expected a header"),
    (b"2 2\n1 0.5 0.5\n", r"line 3: file ends after 1 records; the header declares 2"),
    (b"2 2\n1 0.5 0.5\n2 0.5", r"line 3: found 1 values, expected 2 \(truncated"),
    (b"1 2\n1 0.5 0.5 0.5\n", r"line 2: found 3 values, expected 2"),
    (b"1 2\nfoo 0.5 0.5\n", r"line 2: key 'foo' is not a non-negative integer"),
    (b"1 2\n-5 0.5 0.5\n", r"line 2: key '-5'"),
    (b"1 2\n1.5 0.5 0.5\n", r"line 2: key '1.5'"),
    (b"1 2\n007 0.5 0.5\n", r"line 2: key '007'"),
    (b"1 2\n9223372036854775808 0.5 0.5\n", r"line 2: key '9223372036854775808'"),
    (b"1 2\n1 0.5 1.2.3\n", r"line 2: value 2 '1.2.3' is not a number"),
    (b"1 2\n1 0.5 0x10\n", r"line 2: value 2 '0x10' is not a number"),
    (b"1 2\n1 0.5 1e\n", r"line 2: value 2 '1e' is not a number"),
    (b"1 2\n1 0.5\x0c0.5 1\n", r"line 2: value 1 '0\.5\\x0c0\.5' is not a number"),
    (b"2 1\n1 0.5\n\n2 0.5\n", r"line 3: empty line"),
    (b"1 1\n1 0.5\n2 0.5\n", r"line 3: content after the 1 records"),
    (b"3 1\n1 0.5\n2 0.5\n1 0.25\n", r"line 4: duplicate key 1 \(first in line 2\)"),
])
def test_text_errors_name_file_and_line(tmp_path, data, pattern):
    p = _write(tmp_path, "bad.txt", data)
    with pytest.raises(ix.Word2VecFormatError, match=r"bad\.txt: " + pattern):
        ix.read_word2vec(p, binary=False)


def _binary_bytes(keys, D=2):
    return b"%d %d\n" % (len(keys), D) + b"".join(k + b" " + np.arange(D, dtype="<f4").tobytes() + b"\n" for k in keys)


@pytest.mark.parametrize("data, pattern", [
    (_binary_bytes([b"1", b"2"])[:-5], r"record 2 \(byte \d+\): file ends inside the record"),
    (_binary_bytes([b"1"]) + b"", None),
    (_binary_bytes([b"1", b"x2"]), r"record 2 \(byte \d+\): key 'x2' is not a non-negative integer"),
    (_binary_bytes([b"1", b"01"]), r"record 2 .*key '01'"),
    (_binary_bytes([b"5", b"6", b"5"]), r"record 3: duplicate key 5 \(first in record 1\)"),
    (_binary_bytes([b"1"]) + b"junk", r"byte \d+: content after the 1 records"),
    (b"3 2\n" + _binary_bytes([b"1"])[4:], r"record 2 .*file ends inside the record"),
])
def test_binary_errors_name_file_and_record(tmp_path, data, pattern):
    p = _write(tmp_path, "bad.bin", data)
    if pattern is None:
        assert ix.read_word2vec(p, binary=True)[0].tolist() == [1]
        return
    with pytest.raises(ix.Word2VecFormatError, match=r"bad\.bin: " + pattern):
        ix.read_word2vec(p, binary=True)


def test_export_rejects_negative_aids_and_import_respects_overwrite(tmp_path):
    with pytest.raises(ValueError, match="negative"):
        ix.write_word2vec(tmp_path / "n", np.array([1, -2]), np.zeros((2, 2), np.float32))
    assert not (tmp_path / "n").exists()
    m = _random_model(tmp_path / "m", V=4, D=2)
    ix.export_word2vec(m, tmp_path / "e")
    ix.import_word2vec(tmp_path / "e", tmp_path / "dst")
    with pytest.raises(FileExistsError):
        ix.import_word2vec(tmp_path / "e", tmp_path / "dst")
    ix.import_word2vec(tmp_path / "e", tmp_path / "dst", overwrite=True)
    assert json.loads((tmp_path / "dst" / "meta.json").read_text())["vocab_size"] == 4


def test_failed_import_leaves_nothing(tmp_path):
    p = _write(tmp_path, "bad.txt", b"2 1\n1 0.5\n")
    with pytest.raises(ix.Word2VecFormatError):
        ix.import_word2vec(p, tmp_path / "dst")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.txt"]


# ---------------------------------------------------------------------------- CLI

def _run_cli(argv):
    """Through otto-train when all of its subcommand modules import, else a parser with ours only."""
    try:
        from w2v import cli
        cli.build_parser()
    except ImportError:
        parser = argparse.ArgumentParser(prog="otto-train")
        ix.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except (ValueError, OSError) as exc:
            import sys
            print(f"otto-train {args.command}: error: {exc}", file=sys.stderr)
            return 1
    return cli.main(argv)


def test_cli_export_import(tmp_path, capsys):
    m = _random_model(tmp_path / "m", V=12, D=3)
    assert _run_cli(["export", str(tmp_path / "m"), str(tmp_path / "o.bin"), "--binary", "--output-vectors", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert _run_cli(["import", str(tmp_path / "o.bin"), str(tmp_path / "back"), "--binary"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert _bits_equal(load_model(tmp_path / "back").vectors, m.output)
    assert _run_cli(["import", str(tmp_path / "o.bin"), str(tmp_path / "back"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert _run_cli(["import", str(tmp_path / "o.bin"), str(tmp_path / "t"), "--text", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "o.bin: line 2" in err
    assert _run_cli(["export", str(tmp_path / "missing"), str(tmp_path / "x.txt"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and not (tmp_path / "x.txt").exists()
    with pytest.raises(SystemExit):
        _run_cli(["import", "a", "b", "--text", "--binary"])
