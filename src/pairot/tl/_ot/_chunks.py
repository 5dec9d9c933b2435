"""A long pass over the rows of a cost as several device calls, interruptible between them.

The sizes are read from this module's :data:`_CHUNK_PAIRS` and :data:`_CHUNK_SECONDS` (as
``_chunks._CHUNK_PAIRS`` by the other modules, so that one assignment changes them all).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax

from ..._interrupt import check as check_interrupt

#: A log-domain pass over more than this many cell pairs is split into device calls of about
#: this many pairs each to start with, so that interrupts are honoured and progress shown
#: between them (about 0.6 s a call on a 2-core CPU); the rows per call then adapt so that a
#: call takes about :data:`_CHUNK_SECONDS`.
_CHUNK_PAIRS = 2**27
_CHUNK_SECONDS = 1.0


class _RowChunks:
    """Runs one pass over the rows of a cost as several device calls, checking for interrupts
    and reporting progress between calls.

    The first call covers about :data:`_CHUNK_PAIRS` cell pairs (``rows * width``); the number
    of rows then doubles or halves (a multiple of ``block``, at most ``n``) until a call takes
    about :data:`_CHUNK_SECONDS`. The last chunk of a pass covers the remaining rows rounded up
    to whole blocks (its own compiled size, the same at every pass). The first call of every
    size compiles, and is not used to adapt.
    """

    def __init__(self, n: int, block: int, width: int):
        self.n = n
        self.block = block
        rows = block
        while rows * 2 * width <= _CHUNK_PAIRS and rows * 2 <= n:
            rows *= 2
        self.rows = min(rows, n)
        self._compiled: set[int] = set()

    def run(self, launch: Callable, out, report: Callable[[int], None] | None = None):
        """``out = launch(out, start, rows)`` over the chunks; ``report(rows_done)`` after each.

        Each chunk is dispatched before waiting for the one still running, so that the device
        does not idle while Python reports and checks for an interrupt: after a request at
        most that one queued chunk still runs.
        """
        running = None  # (out, end, rows) of the chunk on the device
        clock = time.perf_counter()
        for start, rows in self._plan():
            out = launch(out, start, rows)
            if running is not None:
                clock = self._finish(running, clock, report)
            running = (out, start + rows, rows)
        self._finish(running, clock, report)
        return out

    def _plan(self) -> list[tuple[int, int]]:
        """``(start, rows)`` of every chunk; the last covers the rest in whole blocks."""
        plan, done = [], 0
        while done < self.n:
            rows = self.rows
            if self.n - done < rows:
                rows = min(-(-(self.n - done) // self.block) * self.block, self.n)
            plan.append((done, rows))
            done = min(done + rows, self.n)
        return plan

    def _finish(self, chunk, clock: float, report) -> float:
        """Wait for ``chunk``, adapt the chunk size to its time, report, check; the time."""
        out, end, rows = chunk
        # the last output: the next chunk may already have taken the others as donations
        jax.block_until_ready(jax.tree_util.tree_leaves(out)[-1])
        now = time.perf_counter()
        if rows in self._compiled and rows == self.rows:
            self._adapt(rows, now - clock)  # it ran from the previous chunk's end to now
        self._compiled.add(rows)
        if report is not None:
            report(min(end, self.n))
        check_interrupt()
        return now

    def _adapt(self, rows: int, seconds: float) -> None:
        if seconds < _CHUNK_SECONDS / 3 and rows < self.n:
            self.rows = min(rows * 2, self.n)
        elif seconds > 2 * _CHUNK_SECONDS and rows // 2 >= self.block:
            self.rows = rows // 2


def _chunked(n: int, m: int) -> bool:
    """Whether a log-domain pass over ``n x m`` pairs is split into several device calls."""
    return n * m > _CHUNK_PAIRS
