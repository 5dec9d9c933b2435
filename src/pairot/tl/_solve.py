"""The call into the engine: a cost geometry and a problem's marginals to
:func:`~pairot.tl._ot.sinkhorn` (``DatasetMap.solve`` and each ``bootstrap`` resample)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def run_sinkhorn(
    geom,
    x_aug: np.ndarray,
    y_aug: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    query_codes: np.ndarray,
    ref_codes: np.ndarray,
    *,
    tau_a: float,
    tau_b: float,
    options: Mapping,
    progress: bool,
):
    """Sinkhorn on the cells ``x_aug`` / ``y_aug`` (rows of ``geom``'s, or all of them) with
    ``geom``'s offset, epsilon and batch size and the solve ``options`` of
    :func:`~pairot.tl._checks.check_solve_options` (``kernel_memory_budget=None``: the
    engine's default budget)."""
    from ._ot import DEFAULT_KERNEL_MEMORY_BUDGET, sinkhorn

    options = dict(options)
    if options.get("kernel_memory_budget") is None:
        options["kernel_memory_budget"] = DEFAULT_KERNEL_MEMORY_BUDGET
    return sinkhorn(
        x_aug,
        y_aug,
        geom.offset,
        a,
        b,
        epsilon=geom.epsilon,
        tau_a=tau_a,
        tau_b=tau_b,
        batch_size=geom.batch_size,
        progress=progress,
        query_codes=query_codes,
        ref_codes=ref_codes,
        **options,
    )


def solve_problem(geom, problem, options: Mapping, *, progress: bool):
    """Sinkhorn on every cell of ``geom`` with ``problem``'s marginals (``DatasetMap.solve``)."""
    return run_sinkhorn(
        geom,
        geom.x_aug,
        geom.y_aug,
        problem.a,
        problem.b,
        geom.query_codes,
        geom.ref_codes,
        tau_a=problem.tau_a,
        tau_b=problem.tau_b,
        options=options,
        progress=progress,
    )
