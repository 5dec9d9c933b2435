"""Rows per block of the cost: ``batch_size``, capped by a memory budget.

A block of ``rows`` cells against ``width`` cells holds a few ``rows x width`` temporaries
(the cost block, its exponentials, their products). Measured on a 2-core CPU in float32, a
log-domain Sinkhorn pass needs about :data:`_SOLVE_FACTOR` times ``rows x width`` values on
top of its inputs and the aggregation of the plan about :data:`_AGGREGATE_FACTOR` times. A
``batch_size`` chosen for a large GPU (12,288 rows against 272,139 cells: ~16 GB) would
exhaust a laptop, so the rows are capped so that ``factor * rows * width * itemsize`` stays
within ``block_memory_budget`` bytes. Block sizes change results by float round-off only.
"""

from __future__ import annotations

import logging
import math

from ._checks import _check_int

logger = logging.getLogger("pairot")

#: Default ``block_memory_budget``: the bytes one block of the cost may take, 1 GiB.
DEFAULT_BLOCK_MEMORY_BUDGET = 1 * 1024**3

#: ``rows x width`` values a Sinkhorn pass holds per block, as a multiple of one block (the
#: cluster-correction pass holds ``rows x Kr`` more: its width is ``m + Kr``).
_SOLVE_FACTOR = 1.25
#: The same for a block of the plan's aggregation.
_AGGREGATE_FACTOR = 2.0


def _check_budget(block_memory_budget) -> int:
    """The budget in bytes: ``block_memory_budget``, or the default for ``None``."""
    if block_memory_budget is None:
        return DEFAULT_BLOCK_MEMORY_BUDGET
    return _check_int(
        block_memory_budget,
        "block_memory_budget",
        hint="; pass a number of bytes (e.g. 2**30), or None for the default of 1 GiB",
    )


def _max_rows(width: int, itemsize: int, factor: float, budget: int) -> int:
    """The most rows whose block of ``width`` cells fits ``budget``; at least 1."""
    return max(1, math.floor(budget / (factor * width * itemsize)))


def _capped_blocks(
    what: str,
    batch_size: int,
    blocks: list[tuple[int, int, int, str]],
    *,
    itemsize: int,
    factor: float,
    budget: int,
) -> list[int]:
    """Rows per block of each pass of one call; one INFO line if the budget capped any.

    ``blocks`` holds ``(rows, width, cells, label)`` per pass: ``rows = min(batch_size, ...)``
    rows against ``width`` values per row (``cells`` cells of kind ``label``, and for the
    cluster correction ``Kr`` more).
    """
    out, capped = [], []
    for rows, width, cells, label in blocks:
        used = min(rows, _max_rows(width, itemsize, factor, budget))
        out.append(used)
        if used < rows:
            capped.append((factor * rows * width * itemsize, used, cells, label))
    if capped:
        capped.sort(key=lambda c: -c[0])  # the largest block first
        need, used, cells, label = capped[0]
        others = "".join(
            f", and {rows:,} against the {cells:,} {label}" for _, rows, cells, label in capped[1:]
        )
        logger.info(
            "%s: batch_size=%d would need about %s per block against %s %s; using %s rows per "
            "block%s (block_memory_budget %s).",
            what,
            batch_size,
            _decimal_bytes(need),
            f"{cells:,}",
            label,
            f"{used:,}",
            others,
            _binary_bytes(budget),
        )
    return out


def _decimal_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} bytes"


def _binary_bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} bytes"
