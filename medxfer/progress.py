"""Progress of long loops for people: a bar on a terminal, timed lines everywhere else.

A run's output often goes to a log file, a CI job or a batch scheduler, where a progress
bar shows nothing (or control characters) and one line per epoch can leave a log silent
for many minutes. There, :func:`progress` prints a plain line at least every
:data:`LINE_INTERVAL` seconds (steps done, share, elapsed time and an ETA); on a terminal
it shows a transient rich bar instead. Only code running inside :func:`reporting`
(``medxfer run`` on its main process) reports anything: a data module can announce its
slow steps (filling a cache) without knowing who called it.
"""

from __future__ import annotations

import contextvars
import math
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

#: Seconds between two progress lines when stderr is not a terminal.
LINE_INTERVAL = 30.0
#: On a terminal the bar's note (e.g. the loss, which syncs the device) is read every
#: this many steps.
NOTE_EVERY = 10

#: ``advance(note=None)``: one more step done; ``note()`` gives text shown beside the count
#: (called only when it is shown).
Advance = Callable[..., None]

#: The clock of progress lines (a test replaces it).
monotonic = time.monotonic

_REPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("medxfer_progress",
                                                                  default=False)


@contextmanager
def reporting(enabled: bool = True) -> Iterator[None]:
    """Let :func:`announced` loops inside this block report their progress (or not)."""
    token = _REPORTING.set(enabled)
    try:
        yield
    finally:
        _REPORTING.reset(token)


def reporting_enabled() -> bool:
    """Whether the code running now is inside ``reporting(True)``."""
    return _REPORTING.get()


def stderr_is_terminal() -> bool:
    """Whether standard error is an interactive terminal (as rich decides it)."""
    return Console(stderr=True).is_terminal


def write_line(text: str) -> None:
    """Write one line to standard error and flush it (a log file sees it at once)."""
    print(text, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressLines:
    """Plain progress lines, at most one per ``interval`` seconds.

    ``advance`` may be called from several threads (a cache filled by a thread pool).

    Args:
        label: What is counted, e.g. ``epoch 1/5``.
        total: Steps in all.
        unit: The name of a step in the line (``steps``, ``cases``).
        interval: Seconds between two lines.
        clock: Monotonic time in seconds (default :func:`monotonic`).
        write: Where a line goes (standard error by default).
    """

    def __init__(self, label: str, total: int, *, unit: str = "steps",
                 interval: float = LINE_INTERVAL, clock: Callable[[], float] | None = None,
                 write: Callable[[str], None] = write_line) -> None:
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.interval, self.write = interval, write
        self.clock = clock if clock is not None else lambda: monotonic()
        self.start = self.last = self.clock()
        self.done = 0
        self.lines = 0
        self._lock = threading.Lock()

    def advance(self, note: Callable[[], str] | None = None) -> None:
        """Count one step; print a line when ``interval`` seconds passed since the last
        (not for the last step: :meth:`finish` says the loop is done)."""
        with self._lock:
            self.done += 1
            now = self.clock()
            if now - self.last < self.interval or self.done >= self.total:
                return
            self.last = now
            self.lines += 1
            text = self.line(now, note() if note is not None else "")
        self.write(text)

    def finish(self, next_step: str | None = None) -> None:
        """After a slow loop (one that printed lines, or whose last step ended
        ``interval`` seconds after the last line), say it is done and what comes next
        (``validating``), so that the log does not look stuck there."""
        now = self.clock()
        if self.lines or now - self.last >= self.interval:
            after = f"; {next_step}" if next_step else ""
            self.write(f"{self.label}: {self.done}/{self.total} {self.unit} done in "
                       f"{format_duration(now - self.start)}{after}")

    def line(self, now: float, note: str = "") -> str:
        """``epoch 1/5: 120/400 steps (30%), loss 0.4123, 1 min 02 s elapsed, ETA 2 min 25 s``."""
        elapsed = now - self.start
        share = self.done / self.total if self.total else 1.0
        left = (self.total - self.done) * elapsed / self.done if self.done else math.inf
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit} ({share:.0%})"]
        if note:
            parts.append(note)
        parts += [f"{format_duration(elapsed)} elapsed", f"ETA {format_duration(left)}"]
        return ", ".join(parts)


@contextmanager
def progress(label: str, total: int, *, enabled: bool = True, unit: str = "steps",
             next_step: str | None = None) -> Iterator[Advance]:
    """Report a loop of ``total`` steps; yields ``advance(note=None)``, called per step.

    Disabled: ``advance`` does nothing. On a terminal: a transient rich bar (the note
    read every :data:`NOTE_EVERY` steps). Elsewhere: :class:`ProgressLines`, and after a
    slow loop a line saying it is done (and what comes next, ``next_step``).
    """
    if not enabled or total <= 0:
        yield lambda note=None: None
        return
    if not stderr_is_terminal():
        lines = ProgressLines(label, total, unit=unit)
        yield lines.advance
        lines.finish(next_step)
        return
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(label, total=total)
        steps = 0

        def advance(note: Callable[[], str] | None = None) -> None:
            nonlocal steps
            steps += 1
            if note is not None and steps % NOTE_EVERY == 1:
                bar.update(task, description=f"{label} {note()}")
            bar.advance(task)

        yield advance


@contextmanager
def announced(label: str, total: int, *, unit: str = "cases") -> Iterator[Advance]:
    """:func:`progress` when the caller runs inside ``reporting(True)``, else a no-op."""
    with progress(label, total, enabled=reporting_enabled(), unit=unit) as advance:
        yield advance
