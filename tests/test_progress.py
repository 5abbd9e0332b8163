"""data_prep.progress: one line per update in logs, self-overwriting on a terminal, silent when quiet."""
from __future__ import annotations

import io

from data_prep.progress import Progress


class _Term(io.StringIO):
    def isatty(self):
        return True


def _eager(stream, **kw):
    return Progress("stage", 1000, unit="rows", stream=stream, every=0.0, first=0.0, **kw)


def test_log_gets_complete_lines_with_rate_done_total_and_eta():
    out = io.StringIO()
    p = _eager(out)
    for done in (100, 500, 1000):
        p.update(done, "x=1")
    p.close(1000)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    assert lines[0].startswith("stage: 100/1,000 rows (10.0%), ") and "rows/s, ETA " in lines[0]
    assert lines[0].endswith(", x=1") and "(100.0%)" in lines[-1]


def test_terminal_line_overwrites_itself_and_ends_with_one_newline():
    out = _Term()
    p = _eager(out)
    p.update(10)
    p.update(20)
    p.close(1000)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")


def test_quiet_prints_nothing_and_rate_limit_holds():
    out = io.StringIO()
    q = _eager(out, quiet=True)
    q.update(5, force=True)
    q.show("x", force=True)
    q.close(10)
    assert out.getvalue() == "" and not q.due() and not q.enabled
    slow = Progress("s", None, unit="MB", scale=1e-6, stream=out, every=3600.0, first=0.0)
    slow.update(2_000_000)
    slow.update(3_000_000)              # within the interval: dropped
    slow.close()                        # no done: no final line
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s: 2 MB, ") and "ETA" not in lines[0]


def test_short_stage_stays_silent_and_callback_form_sets_the_total():
    out = io.StringIO()
    p = Progress("short", 10, stream=out)        # first line only after 1 s
    p.update(5)
    p.close(10)
    assert out.getvalue() == ""
    cb = Progress("cb", stream=out, every=0.0, first=0.0)
    cb.report(3, 12)
    assert "3/12 (25.0%)" in out.getvalue()
