"""The call into the engine: a cost geometry and a problem's marginals to
:func:`~pairot.tl._ot.sinkhorn` (``DatasetMap.solve`` and each ``bootstrap`` resample), and the
start it runs from (``DatasetMap.solve(init=...)``, docs/method.md#warm-starts).

Starts:

- ``"zeros"``: the engine's own start (``f = g = 0`` for the dense passes, the cluster-level
  potentials for the active-block passes).
- ``"cluster"``: the cluster-level potentials (:func:`~pairot.tl._ot.cluster_potentials`), for
  the dense passes too.
- ``"multiscale"``: a solve on a seeded stratified downsample of the same cells (at most
  :data:`MULTISCALE_CELLS` cells per cluster of each study, seeds :data:`MULTISCALE_SEED` for
  the query and ``MULTISCALE_SEED + 1`` for the reference; each cluster keeps its total mass),
  with the same options and stopping rule, its reference potential extended to every cell by
  one c-transform pass each way (:func:`~pairot.tl._ot.extend_potentials`).
- a :class:`MapStart`: the reference potential of a solved map on some of the cells, extended
  the same way.
- ``"auto"``: ``"multiscale"`` above :data:`AUTO_MULTISCALE_PAIRS` cell pairs when the
  downsample has at most :data:`MULTISCALE_MAX_SHARE` of them, else ``"zeros"``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..pp._sampling import downsample_indices

logger = logging.getLogger("pairot")

#: The named starts of ``DatasetMap.solve(init=...)`` (a solved DatasetMap is the other kind).
START_NAMES = ("auto", "zeros", "cluster", "multiscale")
#: The multiscale start's downsample: at most this many cells per cluster of each study.
MULTISCALE_CELLS = 1_000
#: Seed of the query's downsample (the reference's: this + 1).
MULTISCALE_SEED = 0
#: ``init="auto"`` runs the multiscale start above this many cell pairs (n * m, about 1.1e12:
#: above the seed's full size, 600,929 x 1,265,624 = 7.6e11) ... At every size measured on the
#: project's CPU (16k x 16k, 32k x 32k, the seed's downsampled 169,407 x 272,139) the default
#: solve (cluster-level correction, checks every 10 iterations) converged at its early look
#: after 2 iterations from the engine's start, which no start can beat, and the multiscale
#: start only added its downsample's solve (3x to 5x the time; benchmarks/README.md).
AUTO_MULTISCALE_PAIRS = 2**40
#: ... when the downsample holds at most this share of the cell pairs.
MULTISCALE_MAX_SHARE = 0.25


@dataclass(frozen=True)
class MapStart:
    """The start from a solved map on some of the cells: the rows (in this map's reference
    cells) of the cells it solved and their reference potential ``g``."""

    ref_rows: np.ndarray
    g: np.ndarray


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
    init=None,
):
    """Sinkhorn on the cells ``x_aug`` / ``y_aug`` (rows of ``geom``'s, or all of them) with
    ``geom``'s offset, epsilon and batch size and the solve ``options`` of
    :func:`~pairot.tl._checks.check_solve_options` (``kernel_memory_budget=None``: the
    engine's default budget), from the start potentials ``init`` (``None``: the engine's)."""
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
        init=init,
        **options,
    )


def solve_problem(geom, problem, options: Mapping, *, progress: bool, init="zeros"):
    """Sinkhorn on every cell of ``geom`` with ``problem``'s marginals (``DatasetMap.solve``),
    from the start ``init`` (a name of :data:`START_NAMES` or a :class:`MapStart`); the
    solution's ``start`` names it, ``start_iterations`` the downsample's iterations."""
    name = init if isinstance(init, str) else "map"
    if name == "auto":
        name = "multiscale" if _multiscale_pays(geom) else "zeros"
    start, start_iterations = None, 0
    if name == "cluster":
        start = _cluster_start(geom, problem)
    elif name == "multiscale":
        start, start_iterations = _multiscale_start(geom, problem, options, progress)
        if start is None:
            name = "zeros"
    elif name == "map":
        start = _extend(geom, problem, options, init.ref_rows, init.g)
    solution = run_sinkhorn(
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
        init=start,
    )
    if start is not None:
        solution.start = name
    solution.start_iterations = start_iterations
    return solution


def multiscale_rows(geom) -> tuple[np.ndarray, np.ndarray]:
    """The query and reference rows of the multiscale start's downsample."""
    rows = downsample_indices(geom.query_codes, MULTISCALE_CELLS, random_state=MULTISCALE_SEED)
    cols = downsample_indices(geom.ref_codes, MULTISCALE_CELLS, random_state=MULTISCALE_SEED + 1)
    return rows, cols


def _multiscale_pays(geom) -> bool:
    n, m = geom.query_codes.size, geom.ref_codes.size
    if n * m <= AUTO_MULTISCALE_PAIRS:
        return False
    rows, cols = multiscale_rows(geom)
    return rows.size * cols.size <= MULTISCALE_MAX_SHARE * n * m


def _cluster_mass_kept(marginal: np.ndarray, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``marginal`` on ``rows``, each cluster scaled back to its total mass in all cells."""
    k = int(codes.max()) + 1
    full = np.bincount(codes, weights=marginal, minlength=k)
    kept = np.bincount(codes[rows], weights=marginal[rows], minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(kept > 0, full / kept, 0.0)
    return marginal[rows] * scale[codes[rows]]


def _multiscale_start(geom, problem, options: Mapping, progress: bool):
    """The multiscale start ``((f, g), iterations)``, or ``(None, 0)`` when the downsample
    would hold every cell."""
    rows, cols = multiscale_rows(geom)
    n, m = geom.query_codes.size, geom.ref_codes.size
    if rows.size == n and cols.size == m:
        logger.info(
            "solve(init='multiscale'): no cluster has more than %d cells, the downsample "
            "would be the whole problem; starting from the engine's start instead.",
            MULTISCALE_CELLS,
        )
        return None, 0
    a = _cluster_mass_kept(np.asarray(problem.a, dtype=np.float64), geom.query_codes, rows)
    b = _cluster_mass_kept(np.asarray(problem.b, dtype=np.float64), geom.ref_codes, cols)
    logger.info(
        "solve: multiscale start on a downsample of %d x %d cells (at most %d per cluster).",
        rows.size,
        cols.size,
        MULTISCALE_CELLS,
    )
    small = run_sinkhorn(
        geom,
        geom.x_aug[rows],
        geom.y_aug[cols],
        a,
        b,
        geom.query_codes[rows],
        geom.ref_codes[cols],
        tau_a=problem.tau_a,
        tau_b=problem.tau_b,
        options=options,
        progress=progress,
    )
    small.kernel = None
    if small.blocks is not None:
        small.blocks.release()
    return _extend(geom, problem, options, cols, small.g), int(small.n_iterations)


def _extend(geom, problem, options: Mapping, ref_rows: np.ndarray, g: np.ndarray):
    """``(f, g)`` on every cell from the reference potential ``g`` of the rows ``ref_rows``."""
    from ._ot import extend_potentials

    return extend_potentials(
        geom.x_aug,
        geom.y_aug,
        geom.offset,
        problem.a,
        problem.b,
        geom.y_aug[ref_rows],
        np.asarray(g),
        epsilon=geom.epsilon,
        tau_a=problem.tau_a,
        tau_b=problem.tau_b,
        batch_size=geom.batch_size,
        block_memory_budget=options.get("block_memory_budget"),
    )


def _cluster_start(geom, problem):
    from ._ot import cluster_potentials

    return cluster_potentials(
        geom.x_aug,
        geom.y_aug,
        geom.offset,
        np.asarray(problem.a, dtype=np.float64),
        np.asarray(problem.b, dtype=np.float64),
        geom.query_codes,
        geom.ref_codes,
        *geom.label_distance.shape,
        epsilon=geom.epsilon,
        tau_a=problem.tau_a,
        tau_b=problem.tau_b,
    )
