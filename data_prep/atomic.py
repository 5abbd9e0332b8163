"""Outputs that never destroy an input and never appear half-written.

Every writer in the project (datasets, models, neighbour tables, submissions, JSONL) goes
through the context managers here:

* :func:`check_output` refuses an output path that *is*, *contains* or *lies inside* one of the
  command's inputs (after resolving symlinks; a hard link to an input counts as the input), so
  ``--overwrite`` can never replace or delete what is being read.
* The new output is written completely under a temporary sibling name
  ``.<name>.tmp-<pid>-<8 hex>`` and then swapped in: a file by ``rename``; a directory by an
  atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``) where the file system offers it, else by
  two renames through ``.<name>.old-<pid>-<8 hex>``. A failure (disk full, Ctrl-C, an error)
  removes the temporary and leaves the old output as it was.
* Temporaries left by a run that was killed (SIGKILL, power loss) are removed by the next run
  writing the same output: a sibling matching the names above whose process id is no longer
  running, and which no process holds an ``flock`` on (every writer locks its temporary), is
  stale. If such a run died between the two renames of the fallback swap, the old
  output is put back first.
* Scratch space for intermediate files (:func:`scratch_directory`) uses the same temporary
  names, locks and stale-cleaning, so a killed run's scratch is removed by the next run too.
* Files and directories are created with mode ``0666``/``0777`` minus the process umask, as
  ``open``/``mkdir`` would make them (a group-readable umask gives a group-readable model).
* A write that fails for lack of space (``ENOSPC``, ``EDQUOT``, a short write) or over the file
  size limit (``EFBIG``) is reported as :class:`OutputWriteError`, one line naming the output and
  the cause.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None
from pathlib import Path
from typing import Callable, Iterable, Iterator

__all__ = ["OutputPathError", "OutputWriteError", "atomic_directory", "atomic_file", "atomic_files",
           "check_output", "clean_stale_siblings", "named_write_errors", "scratch_directory"]


class OutputPathError(ValueError):
    """An output path is, contains or lies inside an input of the same command."""


class OutputWriteError(OSError):
    """Writing an output failed for lack of space or over the file size limit; the message is one
    line naming the output (``errno`` keeps the original error number)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# ------------------------------------------------------------------------------ inputs are sacred
def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise :class:`OutputPathError` when ``output`` is, contains or lies inside any of ``inputs``.

    Paths are compared after ``Path.resolve()`` (symlinks followed, ``..`` removed); an existing
    output that is the same file as an input (a hard link) counts as the input. ``None`` entries
    are ignored. Cheap: no file is read.
    """
    out = Path(output).resolve()
    for inp in inputs:
        if inp is None:
            continue
        src = Path(inp).resolve()
        same = out == src
        if not same and out.exists() and src.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, src)
        if same:
            raise OutputPathError(f"{output}: is the input {inp}; write the output somewhere else "
                                  "(an input is never replaced, even with --overwrite)")
        if src.is_relative_to(out):
            raise OutputPathError(f"{output}: contains the input {inp}; replacing it would delete the input "
                                  "(an input is never replaced, even with --overwrite)")
        if out.is_relative_to(src):
            raise OutputPathError(f"{output}: lies inside the input {inp}; write the output outside it")


# ------------------------------------------------------------------------------ temporary names
def _temp_sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _lock(fd: int) -> None:
    """Hold an exclusive ``flock`` on ``fd`` for as long as it is open: the mark of a live writer
    that ``clean_stale_siblings`` respects even across PID namespaces."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlocked(p: Path) -> bool:
    """True when no process holds the ``flock`` of ``p`` (or locks are not available)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return not os.path.lexists(p) or p.is_symlink()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale_siblings(target: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``target`` left by killed runs; return what was removed.

    Only names this module creates (``.<name>.tmp-<pid>-<hex>``, ``.<name>.old-<pid>-<hex>``)
    whose process is no longer running, and on which no process holds the ``flock`` every writer
    keeps on its temporary (a writer in another PID namespace), are touched. When ``target`` is missing and a stale
    ``.old-`` sibling exists (a run died between the two renames of a swap), it is renamed back
    to ``target`` instead of being removed.
    """
    target = Path(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    pat = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-(\d+)-[0-9a-f]{{8}}")
    removed = []
    for kind in ("old", "tmp"):  # an old output is restored before anything else happens
        for name in sorted(names):
            m = pat.fullmatch(name)
            p = target.parent / name
            if not m or m.group(1) != kind or _pid_alive(int(m.group(2))) or not _unlocked(p):
                continue
            if kind == "old" and not os.path.lexists(target):
                try:
                    os.rename(p, target)
                except OSError:
                    pass  # never remove what may be the only copy of an output
                continue
            _remove(p)
            removed.append(p)
    return removed


# ------------------------------------------------------------------------------ swapping
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2``); False when unavailable."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"{b}: cannot swap in the new output ({os.strerror(err)})")


def _swap_in(tmp: Path, target: Path) -> None:
    """Make the complete ``tmp`` directory ``target``; the old ``target`` (if any) is removed."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        _remove(tmp)  # now holds the old output
        return
    old = _temp_sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)


# ------------------------------------------------------------------------------ write errors
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EFBIG: "file too large (over the file size limit)"}
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile on a short write


def _write_error(target: Path, exc: OSError) -> OutputWriteError | None:
    detail = " ".join(str(exc).split())
    if exc.errno in _NO_SPACE:
        why = _NO_SPACE[exc.errno]
    elif exc.errno is None and _SHORT_WRITE.search(detail):
        why = "short write, the device is probably full"
    else:
        return None
    return OutputWriteError(exc.errno or errno.ENOSPC,
                            f"{target}: cannot write: {why} ({detail}); nothing was written or replaced")


@contextlib.contextmanager
def named_write_errors(target: str | os.PathLike) -> Iterator[None]:
    """Turn a lack-of-space ``OSError`` raised in the block into :class:`OutputWriteError`
    naming ``target`` (the context managers below do this for their output; use it inside them
    to name one file of several)."""
    target = Path(target)
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as exc:
        err = _write_error(target, exc)
        if err is None:
            raise
        raise err from None


def _prepare(target: Path, overwrite: bool, inputs: Iterable) -> None:
    check_output(target, inputs)
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{target}: already exists (pass --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(target)


def _make_dir(target: Path) -> tuple[int, Path]:
    while True:
        tmp = _temp_sibling(target, "tmp")
        try:
            os.mkdir(tmp, 0o777)  # minus the umask
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        fd = os.open(tmp, os.O_RDONLY)
        _lock(fd)
        return fd, tmp


def _open_new(target: Path) -> tuple[int, Path]:
    while True:
        tmp = _temp_sibling(target, "tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:  # pragma: no cover
            continue
        _lock(fd)
        return fd, tmp


# ------------------------------------------------------------------------------ context managers
@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False, *,
                     inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; swap it in as ``target`` on success.

    Before anything is written: ``check_output(target, inputs)``; ``FileExistsError`` when
    ``target`` exists and ``overwrite`` is false; stale temporaries of ``target`` are cleaned.
    On any exception (KeyboardInterrupt included) the temporary directory is removed and
    ``target`` is left untouched; lack of space is reported as :class:`OutputWriteError`.
    """
    target = Path(target)
    _prepare(target, overwrite, inputs)
    lock, tmp = _make_dir(target)
    try:
        with named_write_errors(target):
            yield tmp
            _swap_in(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        os.close(lock)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb", *,
                inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator:
    """Open a temporary file beside ``target`` for writing; rename it over ``target`` on success.

    An existing ``target`` is replaced (a file is one object: there is no half-replaced state).
    ``inputs``, stale temporaries and write errors as for :func:`atomic_directory`.
    """
    target = Path(target)
    _prepare(target, True, inputs)
    fd, tmp = _open_new(target)
    try:
        with named_write_errors(target):
            with os.fdopen(fd, mode) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike, names: Iterable[str], *,
                 before_swap: Callable[[Path], None] | None = None) -> Iterator[dict]:
    """Replace several files of ``directory`` together: yield ``{name: binary file}``, temporaries
    beside each target; when the block succeeds, every file is flushed and synced, then
    ``before_swap(directory)`` runs and the files are renamed into place in the order of
    ``names``. On failure every temporary is removed and no target is touched. Wrap each
    file's writing in :func:`named_write_errors` to name that file in a disk-full error.
    """
    directory = Path(directory)
    names = list(names)
    opened: dict[str, tuple] = {}
    try:
        with named_write_errors(directory):
            for name in names:
                clean_stale_siblings(directory / name)
                fd, tmp = _open_new(directory / name)
                opened[name] = (os.fdopen(fd, "wb"), tmp)
            yield {name: fh for name, (fh, _) in opened.items()}
            for fh, _ in opened.values():
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            if before_swap is not None:
                before_swap(directory)
            for name in names:
                os.replace(opened[name][1], directory / name)
    except BaseException:
        for fh, tmp in opened.values():
            fh.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def scratch_directory(beside: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty directory for intermediate files; it is removed when the block ends.

    It is made beside ``beside`` (the same file system, e.g. next to the input it is derived
    from) as a locked temporary sibling ``.<name>.tmp-<pid>-<8 hex>``, after cleaning that path's
    stale temporaries: a run killed inside the block leaves a sibling that the next run using the
    same ``beside``, or writing an output there, removes. When that directory cannot be written,
    the system temporary directory is used the same way.
    """
    beside = Path(beside)
    targets = (beside, Path(tempfile.gettempdir()) / beside.name)
    for i, target in enumerate(targets):
        try:
            clean_stale_siblings(target)
            lock, tmp = _make_dir(target)
            break
        except OSError:
            if i == len(targets) - 1:
                raise
    try:
        yield tmp
    finally:
        _remove(tmp)
        os.close(lock)
