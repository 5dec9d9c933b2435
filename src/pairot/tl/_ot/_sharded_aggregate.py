"""The outputs' one-pass aggregation (:func:`~._aggregate.aggregate`) split over devices.

Each device walks its own query cells (its rows of the cost, or of the kernel of a sharded
kernel-mode solve) with the single-device block kernels of :mod:`._block_sums`; the per-cluster
sums of every call (``tm``, ``cost_mass``) are all-reduced over the devices, the per-cell
ones (``row_mass``, ``row_cluster``) stay with the device that owns the cells and are put in
place on the host. As on one device, the sums of the calls are accumulated in float64 on the
host (by the same :class:`~._block_sums.Walk`), and a long pass is several calls,
interruptible between them.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._block_sums import (
    Walk,
    _aggregate_block,
    _aggregate_kernel,
    plan_scalings,
)
from ._kernel import Kernel
from ._shard import ROWS, WHOLE, Devices, local_rows, sharded

_R, _W = ROWS, WHOLE


def aggregate_sharded(
    devices: Devices,
    x,
    y,
    offset,
    f,
    g,
    qcodes,
    rcodes,
    *,
    epsilon,
    n_query_clusters: int,
    n_ref_clusters: int,
    block: int,
    kernel_block: int,
    dtype,
    precision,
    progress: bool,
    per_cell: bool,
    kernel: Kernel | None,
):
    """``(tm, cost_mass, row_mass, row_cluster)`` of :func:`~._aggregate.aggregate` (float64,
    ``row_cluster`` ``None`` without ``per_cell``)."""
    n, m = len(f), len(g)
    onehot = np.zeros((m, n_ref_clusters), dtype=dtype)
    onehot[np.arange(m), rcodes] = 1.0
    common = {
        "qj": devices.put_rows(np.asarray(qcodes, dtype=np.int32)),
        "onehot": devices.put(onehot, pad=True),
        "eps": devices.scalar(epsilon, dtype),
    }
    d = devices.n
    walk = Walk(
        d,
        devices.padded(n) // d,
        devices.padded(m),
        n_query_clusters,
        n_ref_clusters,
        per_cell,
        progress,
        devices.to_host,
    )
    scales = None if kernel is None else _kernel_scales(devices, kernel, f, g, epsilon, dtype)
    if scales is not None:
        block = min(kernel_block, walk.n_local)
        tm, cost_mass, row_mass, row_cluster = _kernel_pass(
            devices, walk, kernel, *scales, **common, block=block, precision=precision
        )
    else:
        tm, cost_mass, row_mass, row_cluster = _blocked_pass(
            devices,
            walk,
            devices.put(np.asarray(x, dtype=dtype), pad=True),
            devices.put(np.asarray(y, dtype=dtype), pad=True),
            devices.put_rows(np.asarray(f, dtype=dtype), fill=-np.inf),
            devices.put(np.asarray(g, dtype=dtype), pad=True, fill=-np.inf),
            devices.scalar(offset, dtype),
            **common,
            block=min(block, walk.n_local),
            precision=precision,
        )
    tm = tm[:, :m]
    row_mass = row_mass.reshape(-1)[:n]
    if per_cell:
        row_cluster = row_cluster.reshape(-1, n_ref_clusters)[:n]
    return tm, cost_mass, row_mass, row_cluster


def _kernel_scales(devices: Devices, kernel: Kernel, f, g, epsilon: float, dtype):
    """The plan's row and column scalings on the kernel (:func:`~._block_sums.plan_scalings`),
    placed like the kernel, or ``None`` on overflow."""
    row_min = devices.to_host(kernel.row_min)[: len(f)].astype(np.float64)
    scales = plan_scalings(row_min, f, g, epsilon, dtype)
    if scales is None:
        return None
    row_scale, col_scale = scales
    return devices.put_rows(row_scale, fill=0), devices.put(col_scale, pad=True, fill=0)


def _blocked_pass(
    devices: Devices, walk: Walk, x, y, f, g, offset, *, qj, onehot, eps, block, precision
):
    """One call per block of every device's query cells: the cost, the plan, its sums."""
    n_local, n_query_clusters, per_cell = walk.n_local, walk.n_query_clusters, walk.per_cell

    def local(x, y, f, g, qc, onehot, k, offset, eps):
        tm, cost_mass, row_mass, start, row_cluster = _aggregate_block(
            local_rows(x, n_local),
            y,
            f,
            g,
            qc,
            onehot,
            k,
            offset,
            eps,
            block=block,
            n_query_clusters=n_query_clusters,
            precision=precision,
            per_cell=per_cell,
        )
        if row_cluster is None:
            row_cluster = jnp.zeros((block, 0), dtype=row_mass.dtype)
        return lax.psum(tm, "cells"), lax.psum(cost_mass, "cells"), row_mass, start, row_cluster

    fn = sharded(
        devices,
        ("aggregate_block", n_local, block, n_query_clusters, precision, per_cell),
        local,
        (_W, _W, _R, _W, _R, _W, _W, _W, _W),
        (_W, _W, _R, _W, _R),
    )

    def launch(k: int):
        return fn(x, y, f, g, qj, onehot, devices.scalar(k, np.int32), offset, eps)

    return walk.blocks(launch, block)


def _kernel_pass(
    devices: Devices,
    walk: Walk,
    kernel: Kernel,
    row_scale,
    col_scale,
    *,
    qj,
    onehot,
    eps,
    block,
    precision,
):
    """One call per chunk of every device's rows of the kernel (one call for them all below
    :data:`~._chunks._CHUNK_PAIRS` entries per device)."""
    n_query_clusters, per_cell = walk.n_query_clusters, walk.per_cell

    def call(start, size, blk):
        def local(K, row_min, row_scale, col_scale, qc, onehot, eps, start):
            def part(v):
                return lax.dynamic_slice_in_dim(v, start, size, axis=0)

            tm, cost_mass, row_mass, row_cluster = _aggregate_kernel(
                part(K),
                part(row_min),
                part(row_scale),
                col_scale,
                part(qc),
                onehot,
                eps,
                block=blk,
                n_query_clusters=n_query_clusters,
                precision=precision,
                per_cell=per_cell,
            )
            return lax.psum(tm, "cells"), lax.psum(cost_mass, "cells"), row_mass, row_cluster

        fn = sharded(
            devices,
            ("aggregate_kernel", size, blk, n_query_clusters, precision, per_cell),
            local,
            (_R, _R, _R, _W, _R, _W, _W, _W),
            (_W, _W, _R, _R),
        )
        return fn(
            kernel.K,
            kernel.row_min,
            row_scale,
            col_scale,
            qj,
            onehot,
            eps,
            devices.scalar(start, np.int32),
        )

    return walk.kernel_chunks(call, block)
