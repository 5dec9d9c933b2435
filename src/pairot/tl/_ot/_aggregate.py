"""The outputs' aggregation :func:`aggregate`: its checks, its dispatch, its one-device pass.

:func:`aggregate` computes the cluster-level sums of a Sinkhorn plan in one pass over the
cost or the kernel: on the active tiles of a sparse solve (:func:`~._sparse.aggregate_active`),
split over several devices (:mod:`._sharded_aggregate`), or on one device (here). The block
kernels and the host walk over their calls are :mod:`._block_sums`'.

The host-side formulas that turn these sums into mappings and distances are in
:mod:`pairot.tl._aggregate`.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

from ._block_sums import (
    _KERNEL_AGGREGATE_ROWS,
    Walk,
    _aggregate_block,
    _aggregate_kernel,
    plan_scalings,
)
from ._blocks import _AGGREGATE_FACTOR, _capped_blocks, _check_budget
from ._checks import _check_codes, _check_common, _check_int, _check_vector, _dtype_context, _onehot
from ._cluster_sums import _cost_sums, cluster_sums
from ._kernel import Kernel
from ._shard import Devices, resolve_devices
from ._sharded_aggregate import aggregate_sharded
from ._sparse import aggregate_active, blocks_for

logger = logging.getLogger("pairot")


def aggregate(
    x_aug,
    y_aug,
    offset: float,
    f,
    g,
    *,
    epsilon: float,
    query_codes,
    ref_codes,
    n_query_clusters: int,
    n_ref_clusters: int,
    batch_size: int = 1024,
    dtype=np.float32,
    progress: bool = False,
    precision: str = "highest",
    kernel: Kernel | None = None,
    block_memory_budget: int | None = None,
    active=None,
    per_cell: bool = True,
    devices=None,
) -> dict[str, np.ndarray]:
    """Cluster-level sums of the plan ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``, one pass.

    The plan is walked once in row blocks of ``batch_size`` query cells: per block one matrix
    product gives ``C``, then ``P``, then the per-query-cluster sums through a one-hot
    (clusters x block) product and the per-reference-cluster sums of those through a
    (cells x clusters) one-hot product. Block results are accumulated in float64 on the host.

    Given the ``kernel`` of the :func:`~._driver.sinkhorn` run, the blocks are read from it instead:
    ``P_ij = exp((f_i - r_i + g_max) / epsilon) K_ij exp((g_j - g_max) / epsilon)`` and
    ``C_ij = r_i - epsilon log K_ij``, with no inner products (``r_i = min_j C_ij``), in one
    device call over row blocks of at most 256 cells whose sums are accumulated in ``dtype``.
    If the row scalings would overflow (potentials far from those of a Sinkhorn run) the
    blocked cost is used.

    Parameters
    ----------
    x_aug, y_aug, offset
        The cost ``C_ij = offset + x_aug[i] . y_aug[j]`` (see :func:`~._driver.sinkhorn`).
    f, g
        Potentials from :func:`~._driver.sinkhorn`, shapes ``(n,)`` and ``(m,)``.
    epsilon
        The regularization the potentials were computed with.
    query_codes, ref_codes
        Cluster code of every query cell (``0..n_query_clusters-1``) and reference cell.
    n_query_clusters, n_ref_clusters
        Numbers of clusters ``Kq`` and ``Kr``.
    batch_size
        Query cells per block, at most as many as ``block_memory_budget`` allows; does not
        change the result beyond float round-off.
    dtype
        ``numpy.float32`` (default) or ``numpy.float64`` for the computation.
    progress
        Show a tqdm progress bar over the blocks.
    precision
        Matrix-product precision (see :func:`~._driver.sinkhorn`).
    kernel
        ``SinkhornOutput.kernel`` of the :func:`~._driver.sinkhorn` run on the same ``x_aug``,
        ``y_aug``, ``offset``, ``epsilon`` and ``dtype``, or ``None``.
    block_memory_budget
        Bytes one block may take, ``None`` for :data:`~._blocks.DEFAULT_BLOCK_MEMORY_BUDGET`
        (1 GiB): the rows per block are ``batch_size`` capped so that ``2 * rows * m *
        itemsize`` fits (a block holds about two ``rows x m`` arrays), at least 1, with an
        INFO line when the cap applies (see :func:`~._driver.sinkhorn`).
    active
        The active blocks of a sparse solve (``SinkhornOutput.blocks``), or a ``(Kq, Kr)``
        boolean mask: only those blocks are summed (the others count as 0).
    per_cell
        Also return ``row_cluster`` (below), each query cell's plan mass per reference
        cluster, for the per-cell mapping; ``n x Kr`` more floats, in the same pass.
    devices
        The devices to split the pass over by rows of query cells (see
        :func:`~._driver.sinkhorn`): ``None`` for all of them, or a list. With a ``kernel``
        or the ``active`` blocks of a solve, the devices of that solve (``None`` or the same
        list).

    Returns
    -------
    dict of numpy float64 arrays
        ``tm`` ``(Kq, m)``: ``sum_{i in k} P_ij``; ``mass`` ``(Kq, Kr)``:
        ``sum_{i in k, j in c} P_ij``; ``cost_mass`` ``(Kq, Kr)``: the same of ``P_ij C_ij``;
        ``cost_sum`` ``(Kq, Kr)``: ``sum_{i in k, j in c} C_ij`` (unweighted, computed exactly
        as ``n_k n_c offset + (sum_{i in k} x_i) . (sum_{j in c} y_j)`` in float64);
        ``row_mass`` ``(n,)`` = ``P 1``; ``col_mass`` ``(m,)`` = ``P^T 1``; with
        ``per_cell``, ``row_cluster`` ``(n, Kr)``: ``sum_{j in c} P_ij`` (its rows sum to
        ``row_mass``; the reference cells' sums per query cluster are ``tm`` itself).
    """
    x, y, offset, epsilon, batch_size, dtype, prec = _check_common(
        x_aug, y_aug, offset, epsilon, batch_size, dtype, precision
    )
    n, m = x.shape[0], y.shape[0]
    n_query_clusters = _check_int(n_query_clusters, "n_query_clusters")
    n_ref_clusters = _check_int(n_ref_clusters, "n_ref_clusters")
    budget = _check_budget(block_memory_budget)
    f = _check_vector(f, n, "f", "query cell").astype(np.float64)
    g = _check_vector(g, m, "g", "reference cell").astype(np.float64)
    if np.any(np.isnan(f)) or np.any(np.isnan(g)):
        msg = "f and g must not contain NaN; pass the potentials of a successful sinkhorn run."
        raise ValueError(msg)
    qcodes = _check_codes(query_codes, n, n_query_clusters, "query_codes", "query cell")
    rcodes = _check_codes(ref_codes, m, n_ref_clusters, "ref_codes", "reference cell")
    if kernel is not None:
        _check_kernel(kernel, n, m, offset, epsilon, dtype)
    devs = _solve_devices(devices, kernel, active)
    if active is not None:
        blocks = blocks_for(active, qcodes, rcodes, n_query_clusters, n_ref_clusters, epsilon)
        with _dtype_context(dtype), devs.placed():
            out = aggregate_active(
                blocks,
                x,
                y,
                offset,
                f,
                g,
                epsilon=epsilon,
                dtype=dtype,
                precision=prec,
                progress=progress,
                per_cell=per_cell,
                devices=devs if devs.n > 1 else None,
            )
        out["cost_sum"] = _cost_sums(x, y, offset, qcodes, rcodes, n_query_clusters, n_ref_clusters)
        return out

    (block,) = _capped_blocks(
        "aggregate",
        batch_size,
        [(min(batch_size, n), m, m, "reference cells")],
        itemsize=dtype.itemsize,
        factor=_AGGREGATE_FACTOR,
        budget=budget,
    )
    if devs.n > 1:
        with _dtype_context(dtype):
            tm, cost_mass, row_mass, row_cluster = aggregate_sharded(
                devs,
                x,
                y,
                offset,
                f,
                g,
                qcodes,
                rcodes,
                epsilon=epsilon,
                n_query_clusters=n_query_clusters,
                n_ref_clusters=n_ref_clusters,
                block=block,
                kernel_block=min(block, _KERNEL_AGGREGATE_ROWS),
                dtype=dtype,
                precision=prec,
                progress=progress,
                per_cell=per_cell,
                kernel=kernel,
            )
    else:
        with _dtype_context(dtype), devs.placed():
            walk = Walk(1, n, m, n_query_clusters, n_ref_clusters, per_cell, progress)
            tm, cost_mass, row_mass, row_cluster = _aggregate_one_device(
                x, y, offset, f, g, qcodes, rcodes, kernel, epsilon, block, dtype, prec, walk
            )
    mass = cluster_sums(tm, rcodes, n_ref_clusters)
    col_mass = tm.sum(axis=0)
    cost_sum = _cost_sums(x, y, offset, qcodes, rcodes, n_query_clusters, n_ref_clusters)
    out = {
        "tm": tm,
        "mass": mass,
        "cost_mass": cost_mass,
        "cost_sum": cost_sum,
        "row_mass": row_mass,
        "col_mass": col_mass,
    }
    if per_cell:
        out["row_cluster"] = row_cluster
    return out


def _aggregate_one_device(
    x, y, offset, f, g, qcodes, rcodes, kernel, epsilon, block, dtype, prec, walk: Walk
):
    """``(tm, cost_mass, row_mass, row_cluster)`` of :func:`aggregate` on one device."""
    qj = jnp.asarray(qcodes.astype(np.int32))
    ref_onehot = _onehot(rcodes, walk.n_ref_clusters, dtype)
    eps = jnp.asarray(np.asarray(epsilon, dtype=dtype))
    scales = None if kernel is None else _kernel_scales(kernel, f, g, epsilon, dtype)
    if scales is not None:
        block = min(block, _KERNEL_AGGREGATE_ROWS)
        sums = _aggregate_kernel_chunks(kernel, *scales, qj, ref_onehot, eps, block, prec, walk)
    else:
        sums = _aggregate_blocked(x, y, offset, f, g, qj, ref_onehot, eps, block, dtype, prec, walk)
    tm, cost_mass, row_mass, row_cluster = sums
    return tm, cost_mass, row_mass[0], None if row_cluster is None else row_cluster[0]


def _solve_devices(devices, kernel, active):
    """The devices of :func:`aggregate`: those of the solve whose kernel or blocks it reuses
    (``devices`` must then be ``None`` or the same), else ``devices`` checked."""
    held = None
    if kernel is not None:
        held = kernel.devices or Devices(tuple(kernel.K.devices()))
    elif getattr(active, "devices", None) is not None:
        held = active.devices
    if held is None:
        return resolve_devices(devices)
    if devices is not None and tuple(resolve_devices(devices).devices) != held.devices:
        msg = (
            f"devices must be those of the solve whose kernel or blocks aggregate reuses "
            f"({held.n} device(s)), got {len(devices)}; pass devices=None (or "
            "SinkhornOutput.devices)."
        )
        raise ValueError(msg)
    return held


def _aggregate_kernel_chunks(
    kernel, row_scale, col_scale, qj, ref_onehot, eps, block, precision, walk: Walk
):
    """:func:`~._block_sums._aggregate_kernel` over the whole kernel: one device call, or above
    :data:`~._chunks._CHUNK_PAIRS` entries one call per chunk of rows (interruptible between
    chunks, sums accumulated in float64 on the host)."""
    n = kernel.shape[0]

    def call(start, size, blk):
        stop = start + size
        whole = start == 0 and stop == n
        part = slice(start, stop)
        return _aggregate_kernel(
            kernel.K if whole else kernel.K[part],
            kernel.row_min if whole else kernel.row_min[part],
            row_scale if whole else row_scale[part],
            col_scale,
            qj if whole else qj[part],
            ref_onehot,
            eps,
            block=blk,
            n_query_clusters=walk.n_query_clusters,
            precision=precision,
            per_cell=walk.per_cell,
        )

    return walk.kernel_chunks(call, block)


def _aggregate_blocked(x, y, offset, f, g, qj, ref_onehot, eps, block, dtype, prec, walk: Walk):
    """Blocked pass of :func:`aggregate` from the cost; float64 sums accumulated on the host."""
    xj = jnp.asarray(x.astype(dtype, copy=False))
    yj = jnp.asarray(y.astype(dtype, copy=False))
    fj = jnp.asarray(f.astype(dtype))
    gj = jnp.asarray(g.astype(dtype))
    off = jnp.asarray(np.asarray(offset, dtype=dtype))

    def launch(k: int):
        return _aggregate_block(
            xj,
            yj,
            fj,
            gj,
            qj,
            ref_onehot,
            jnp.asarray(np.int32(k)),
            off,
            eps,
            block=block,
            n_query_clusters=walk.n_query_clusters,
            precision=prec,
            per_cell=walk.per_cell,
        )

    return walk.blocks(launch, block)


def _check_kernel(kernel, n: int, m: int, offset: float, epsilon: float, dtype) -> None:
    if not isinstance(kernel, Kernel):
        msg = f"kernel must be a Kernel (SinkhornOutput.kernel) or None, got {type(kernel)!r}."
        raise TypeError(msg)
    expected = ((n, m), float(epsilon), float(offset), np.dtype(dtype))
    got = (kernel.shape, kernel.epsilon, kernel.offset, np.dtype(kernel.dtype))
    if got != expected:
        msg = (
            f"kernel was computed for (shape, epsilon, offset, dtype) = {got}, but aggregate "
            f"got {expected}; pass the kernel of the sinkhorn run on these same inputs, or "
            "kernel=None."
        )
        raise ValueError(msg)


def _kernel_scales(kernel: Kernel, f, g, epsilon: float, dtype):
    """Row and column scalings of the plan on the kernel (:func:`~._block_sums.plan_scalings`),
    on the device, or ``None`` if they would overflow."""
    scales = plan_scalings(np.asarray(kernel.row_min, dtype=np.float64), f, g, epsilon, dtype)
    if scales is None:
        logger.debug("aggregate: plan scalings would overflow on the kernel; using the cost.")
        return None
    row_scale, col_scale = scales
    return jnp.asarray(row_scale), jnp.asarray(col_scale)
