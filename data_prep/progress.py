"""Progress of a long stage on stderr: the one printer every stage uses.

``Progress(label, total, unit=...)`` then ``update(done)`` as work advances and ``close()`` at
the end. A line reads ``label: done/total unit (pct%), rate unit/s, ETA s[, extra]`` (without
``/total``, percentage and ETA when the total is unknown). Lines are rate-limited: the first not
before ``first`` seconds (short stages stay silent), then at most one per ``every`` seconds
(0.5 s on a terminal, 5 s otherwise). On a terminal the line overwrites itself (``\\r``); when
stderr is a file or a pipe every update is one complete line, so logs get no ``\\r`` floods.
``quiet=True`` prints nothing. ``close`` prints a final line when an earlier one was shown.

Nothing here holds a Python object per event or session; callers pass counts.
"""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress"]


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:,.1f}"


class Progress:
    """Rate-limited progress lines for one stage (see the module docstring).

    ``unit`` names what ``done``/``total`` count; ``scale`` converts them for display (e.g.
    bytes with ``unit="MB", scale=1e-6``). ``stream`` defaults to ``sys.stderr`` at creation.
    Thread-safe: worker threads may call :meth:`report`.
    """

    def __init__(self, label: str, total: float | None = None, *, unit: str = "", scale: float = 1.0,
                 quiet: bool = False, every: float | None = None, first: float = 1.0, stream=None):
        self.label = label
        self.total = total if total else None
        self.unit = unit
        self.scale = scale
        self.quiet = quiet
        self.stream = sys.stderr if stream is None else stream
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.every = (0.5 if self.tty else 5.0) if every is None else every
        self.t0 = time.monotonic()
        self.next = self.t0 + first
        self.shown = False
        self._pending = False  # a terminal line without its newline
        self._width = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return not self.quiet

    def due(self) -> bool:
        """Whether an unforced update would print now (lets callers skip computing its text)."""
        return not self.quiet and time.monotonic() >= self.next

    def line(self, done: float, extra: str = "") -> str:
        """The text of an update at ``done``."""
        el = max(time.monotonic() - self.t0, 1e-9)
        u = f" {self.unit}" if self.unit else ""
        d = done * self.scale
        if self.total:
            frac = min(done / self.total, 1.0)
            eta = el * (1.0 - frac) / frac if frac > 0 else float("nan")
            text = (f"{self.label}: {_num(d)}/{_num(self.total * self.scale)}{u} ({100.0 * frac:.1f}%), "
                    f"{_num(d / el)}{u}/s, ETA {eta:,.0f} s")
        else:
            text = f"{self.label}: {_num(d)}{u}, {_num(d / el)}{u}/s"
        return f"{text}, {extra}" if extra else text

    def update(self, done: float, extra: str = "", force: bool = False) -> None:
        """Show the state at ``done`` if due (or ``force``)."""
        if self.quiet or not (force or time.monotonic() >= self.next):
            return
        self.show(self.line(done, extra), force=True)

    def report(self, done: float, total: float | None = None) -> None:
        """``update`` as a ``progress(done, total)`` callback (``total`` replaces the known one);
        the call that completes the total always prints."""
        if total:
            self.total = total
        self.update(done, force=bool(self.total) and done >= self.total)

    def show(self, text: str, force: bool = False) -> None:
        """Write ``text`` as the current line if due (or ``force``), with the line policy above."""
        if self.quiet:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now < self.next:
                return
            self.next = now + self.every
            if self.tty:
                self.stream.write("\r" + text.ljust(self._width))
                self._width = len(text)
                self._pending = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self.shown = True

    def end(self) -> None:
        """Finish a pending terminal line with its newline (nothing otherwise)."""
        if self._pending and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._pending = False
        self._width = 0

    def close(self, done: float | None = None, extra: str = "") -> None:
        """The final line at ``done`` (when an earlier line was shown), then :meth:`end`."""
        if done is not None and self.shown:
            self.show(self.line(done, extra), force=True)
        self.end()
