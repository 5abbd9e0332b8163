"""The one reader of the project's on-disk pieces: ``.npy`` arrays and JSON sidecars.

Every format (dataset, model, neighbour index) opens its files through :func:`load_npy` and
:func:`read_json` and checks the sidecar's fields with :func:`check_fields`, so a file that is
not what its name says gets the same one-line error everywhere, naming the file and what it is:

* ``.npy``: missing, a directory, 0 bytes, a ``.npz`` (zip) archive, a pickle, a text file, bad
  magic bytes, an unreadable or truncated header/body (the size the header declares is compared
  with the file's), an object array, a dtype, rank or storage order other than expected. Arrays
  are memory-mapped read-only (``allow_pickle=False``): opening costs no memory and no time that
  grows with the array; value checks are the format's business (see ``data_prep.checks``).
* JSON: missing, larger than ``MAX_JSON_BYTES``, not UTF-8, nested deeper than
  ``MAX_JSON_DEPTH`` (checked by a linear scan *before* parsing, so ``[[[[...`` 200,000 deep is an
  error, not a ``RecursionError``), not valid JSON, not an object.
* Fields: a field of the wrong JSON type is named with the type it has, e.g.
  ``"vocab_size": expected an integer, got a string ('2652')``.

Errors are :class:`FormatError` (a ``ValueError``) or the subclass the caller passes, so each
format keeps its own exception type (``DatasetError``, ``ModelError``, ...) and every CLI prints
them as one line.
"""
from __future__ import annotations

import json
import math
import mmap
import operator
import os
import re
from pathlib import Path

import numpy as np

MAX_JSON_BYTES = 16 << 20   # sidecars are a few KiB; anything this large is not one of ours
MAX_JSON_DEPTH = 64         # ours nest at most 4 deep

NPY_MAGIC = b"\x93NUMPY"


class FormatError(ValueError):
    """A file of one of the project's formats is missing, corrupt or inconsistent.

    The message is one line and starts with the file's path."""


def _what_is(head: bytes) -> str:
    """Name what a file that does not start with the ``.npy`` magic looks like."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive (an .npz file saved under a .npy name?), not a .npy array"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle, not a .npy array (pickles are never loaded)"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file, not a .npy array"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"a text file (starts with {head[:24].decode('utf-8', 'replace')!r}), not a .npy array"
    return f"not a .npy array (its first bytes are {head[:8]!r}, expected the magic {NPY_MAGIC!r})"


def _declared(path: Path, err: type[FormatError]):
    """Parse the ``.npy`` header: ``(shape, fortran_order, dtype, data_offset)``."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise err(f"{path}: .npy format version {version[0]}.{version[1]} is not supported (expected 1.0 or 2.0)")
        except err:
            raise
        except (ValueError, OSError, SyntaxError, EOFError) as exc:
            raise err(f"{path}: unreadable .npy header ({_one_line(exc)})") from None
        return shape, fortran, dtype, fh.tell()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def load_npy(path: str | Path, dtype: str | np.dtype, ndim: int, *,
             error: type[FormatError] = FormatError) -> np.ndarray:
    """Memory-map ``path`` read-only as an array of exactly ``dtype`` and rank ``ndim``.

    Raises ``error`` (one line, naming the file) for anything that is not such an array; see
    the module docstring for the cases. Cost: one ``stat``, a header read and an ``mmap``.
    """
    path = Path(path)
    want = np.dtype(dtype)
    if path.is_dir():
        raise error(f"{path}: is a directory, not a .npy array")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({_one_line(exc)})") from None
    if size == 0:
        raise error(f"{path}: empty file (0 bytes), not a .npy array (truncated?)")
    if not head.startswith(NPY_MAGIC):
        raise error(f"{path}: {_what_is(head)}")
    shape, fortran, got, offset = _declared(path, error)
    if got.hasobject:
        raise error(f"{path}: holds Python objects (dtype {got}); only plain numeric arrays are read")
    if got != want:
        raise error(f"{path}: dtype {got.str} (expected {want.str})")
    if len(shape) != ndim:
        raise error(f"{path}: shape {tuple(shape)} (expected {ndim}-d)")
    if fortran and ndim > 1:
        raise error(f"{path}: stored in Fortran (column-major) order; expected C order")
    if any(n < 0 for n in shape):
        raise error(f"{path}: header declares a negative dimension in shape {tuple(shape)}")
    need = offset + math.prod(shape) * got.itemsize  # Python ints: no overflow
    if size < need:
        raise error(f"{path}: truncated: the header declares shape {tuple(shape)} of {got.str} "
                    f"({need} bytes with the header) but the file holds {size} bytes")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:  # pragma: no cover - the header checks above catch these
        raise error(f"{path}: not a readable .npy array ({_one_line(exc)})") from None


def release_pages(*arrays) -> int:
    """Drop the pages of memory-mapped arrays (from :func:`load_npy`) from this process's
    resident set; return the bytes of mapping released.

    ``madvise(MADV_DONTNEED)`` on a read-only file mapping unmaps its pages from the process, not
    from the page cache: the next read of a page maps it again (from memory while the kernel keeps
    it cached, else from disk) and the values never change. For a process that scans files once
    (the checks on load) and then reads few of their pages, so that its resident set counts what
    it uses. Arrays that are not file mappings (or ``None``), and systems without ``madvise``, are
    skipped."""
    done = 0
    seen = set()
    for a in arrays:
        while a is not None and getattr(a, "_mmap", None) is None:
            a = getattr(a, "base", None)
        m = None if a is None else a._mmap
        if m is None or id(m) in seen or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            continue
        seen.add(id(m))
        m.madvise(mmap.MADV_DONTNEED)
        done += len(m)
    return done


class RowReader:
    """Rows of a 2-d C-order array memory-mapped by :func:`load_npy`, read from its file with
    ``os.pread``, one row per call, never through the mapping.

    For a process that reads a few scattered rows of a large file per request (the service's
    neighbour table): a read through a mapping maps the page-cache folio that holds the row,
    and the kernel keeps the file cache in large folios, so a few thousand scattered reads of a
    138 MB table map all of it into the process's resident set. ``pread`` copies the row's bytes
    (80 for a table row of 20) and maps nothing; the page cache serves it the same way.
    ``reader[r]`` and ``reader[r, cols]`` (``cols`` a slice) return a new read-only array of the
    row; ``r`` may be negative; out of range raises ``IndexError``; a file shorter than its
    header says raises ``OSError`` naming it. The file is opened once (the open descriptor keeps
    reading the same file if the path is replaced, as the mapping would); :meth:`close` or
    garbage collection closes it."""

    def __init__(self, array: np.ndarray):
        m = array
        # the array np.load maps is a memmap whose base is the mmap itself; views have arrays as base
        if not (isinstance(m, np.memmap) and isinstance(m.base, mmap.mmap) and m.filename is not None):
            raise ValueError("RowReader: expects the whole memory-mapped array returned by load_npy")
        if array.ndim != 2 or not array.flags.c_contiguous:
            raise ValueError(f"RowReader: expects a C-order 2-d array, got shape {array.shape}")
        self.path = m.filename
        self.shape = tuple(int(n) for n in array.shape)
        self.ndim = 2
        self.dtype = array.dtype
        self._offset = int(m.offset)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __getitem__(self, key) -> np.ndarray:
        cols = slice(None)
        if isinstance(key, tuple):
            if len(key) != 2 or not isinstance(key[1], slice):
                raise TypeError("RowReader: index with reader[row] or reader[row, slice]")
            key, cols = key
        r = operator.index(key)
        n = self.shape[0]
        if not -n <= r < n:
            raise IndexError(f"row {r} out of range for {n} rows")
        r %= n
        buf = os.pread(self._fd, self._row_bytes, self._offset + r * self._row_bytes)
        if len(buf) != self._row_bytes:
            raise OSError(f"{self.path}: shorter than its header says (row {r})")
        return np.frombuffer(buf, self.dtype)[cols]

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:  # pragma: no cover - already closed by the system at exit
            pass


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(raw: bytes) -> int:
    """Maximum nesting depth of ``[``/``{`` in a JSON text (strings skipped); linear time."""
    b = np.frombuffer(_JSON_STRING.sub(b'""', raw), np.uint8)
    if b.size == 0:
        return 0
    step = ((b == 91) | (b == 123)).astype(np.int32) - ((b == 93) | (b == 125)).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def read_json(path: str | Path, *, error: type[FormatError] = FormatError) -> dict:
    """Read a JSON sidecar that must be an object; every failure is a one-line ``error``."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, not a JSON file")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(f"{path}: {size} bytes, larger than any sidecar ({MAX_JSON_BYTES} bytes at most)")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({_one_line(exc)})") from None
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{path}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH} accepted)")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({_one_line(exc)})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({_one_line(exc)})") from None
    except RecursionError:  # pragma: no cover - the depth check above comes first
        raise error(f"{path}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a number ({v!r})"
    if isinstance(v, str):
        return f"a string ({v[:40]!r})"
    if isinstance(v, list):
        return "an array"
    return "an object"


# field kinds understood by check_fields
_KINDS = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "count": ("a non-negative integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "positive": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "object|null": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "array": ("an array", lambda v: isinstance(v, list)),
}


def check_fields(obj: dict, spec: dict[str, tuple[str, bool]], path: str | Path, *,
                 error: type[FormatError] = FormatError, prefix: str = "") -> None:
    """Check ``obj[key]`` against ``spec[key] = (kind, required)``; kinds are those of ``_KINDS``
    (``int``, ``count``, ``positive``, ``number``, ``str``, ``object``, ``object|null``, ``array``).

    Keys not in ``spec`` are ignored (writers may add keys). A missing required key or a value of
    another kind raises ``error`` naming the file and the key, e.g.
    ``meta.json: "vocab_size": expected a non-negative integer, got a string ('2652')``.
    """
    for key, (kind, required) in spec.items():
        name = f"{prefix}{key}"
        if key not in obj:
            if required:
                raise error(f"{path}: \"{name}\" is missing")
            continue
        what, ok = _KINDS[kind]
        if not ok(obj[key]):
            raise error(f"{path}: \"{name}\": expected {what}, got {_json_type(obj[key])}")
