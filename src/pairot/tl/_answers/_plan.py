"""The one pass over the solved plan that every cluster output reads: the engine's
:func:`~pairot.tl._ot.aggregate` on a solution (all cells, or a subsample of them)."""

from __future__ import annotations

import numpy as np

from ..._interrupt import interruptible
from ..._logging import progress_logger


def _active_of(solution, full: bool):
    """What :func:`~pairot.tl._ot.aggregate` gets as ``active``: the solve's blocks for the
    full outputs, their active set for a subsample, ``None`` after dense passes."""
    blocks = getattr(solution, "blocks", None)
    if blocks is None:
        return None
    return blocks if full else blocks.active


def plan_sums(
    geom,
    solution,
    *,
    rows=None,
    cols=None,
    progress: bool = True,
    block_memory_budget: int | None = None,
) -> dict:
    """The plan's sums per cell and cluster (``tm``, ``mass``, ``cost_mass``, ``cost_sum``,
    ``row_cluster``, ...) over the query cells ``rows`` and the reference cells ``cols`` (all
    by default). After the full pass the solution's kernel and tile kernels are freed (the
    caller caches the sums)."""
    from .._ot import aggregate

    n_query_clusters, n_ref_clusters = geom.label_distance.shape
    full = rows is None and cols is None
    rows = slice(None) if rows is None else rows
    cols = slice(None) if cols is None else cols
    progress_logger.info(
        "Aggregating the transport plan over %s x %s cells.",
        f"{len(geom.query_codes[rows]):,}",
        f"{len(geom.ref_codes[cols]):,}",
    )
    with interruptible():
        out = aggregate(
            geom.x_aug[rows],
            geom.y_aug[cols],
            geom.offset,
            np.asarray(solution.f)[rows],
            np.asarray(solution.g)[cols],
            epsilon=geom.epsilon,
            query_codes=geom.query_codes[rows],
            ref_codes=geom.ref_codes[cols],
            n_query_clusters=n_query_clusters,
            n_ref_clusters=n_ref_clusters,
            batch_size=geom.batch_size,
            kernel=solution.kernel if full else None,
            progress=progress,
            block_memory_budget=block_memory_budget,
            active=_active_of(solution, full),
            devices=list(getattr(solution, "devices", ())) or None,
        )
    if full:
        solution.kernel = None  # the outputs are cached: free the n x m kernel
        if solution.blocks is not None:
            solution.blocks.release()  # and the active blocks' tile kernels
    return out
