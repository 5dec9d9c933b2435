"""The plan's sums over row blocks: the jitted block kernels and the host walk over their calls.

The kernels (:func:`_aggregate_block` from the cost, :func:`_aggregate_kernel` from the
kernel) and :class:`Walk`, which accumulates their calls in float64 on the host, serve the
one-device pass (:mod:`._aggregate`) and the sharded one (:mod:`._sharded_aggregate`) alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm.auto import tqdm

from ..._interrupt import check as check_interrupt
from . import _chunks


@partial(jax.jit, static_argnames=("block", "n_query_clusters", "precision", "per_cell"))
def _aggregate_block(
    x,
    y,
    f,
    g,
    query_codes,
    ref_onehot,
    k,
    offset,
    eps,
    *,
    block,
    n_query_clusters,
    precision,
    per_cell=False,
):
    """Per-cluster sums of the plan over the ``k``-th row block of query cells; with
    ``per_cell`` also every row's sums per reference cluster (``plan @ ref_onehot``)."""
    n = x.shape[0]
    start = jnp.minimum(k * block, n - block)
    xb = lax.dynamic_slice_in_dim(x, start, block, axis=0)
    fb = lax.dynamic_slice_in_dim(f, start, block, axis=0)
    qb = lax.dynamic_slice_in_dim(query_codes, start, block, axis=0)
    cost = offset + jnp.matmul(xb, y.T, precision=precision)
    plan = jnp.exp((fb[:, None] + g[None, :] - cost) / eps)
    # rows before k * block belong to the previous block (only in the last, shifted block)
    valid = (start + jnp.arange(block)) >= k * block
    onehot = ((qb[None, :] == jnp.arange(n_query_clusters)[:, None]) & valid[None, :]).astype(
        x.dtype
    )
    tm = jnp.matmul(onehot, plan, precision=precision)
    cost_tm = jnp.matmul(onehot, plan * cost, precision=precision)
    cost_mass = jnp.matmul(cost_tm, ref_onehot, precision=precision)
    row_mass = jnp.sum(plan, axis=1)
    row_cluster = jnp.matmul(plan, ref_onehot, precision=precision) if per_cell else None
    return tm, cost_mass, row_mass, start, row_cluster


#: Rows of the kernel per step of the kernel-mode aggregation: small enough for the
#: ``rows x m`` temporaries to stay in cache and be reused across steps.
_KERNEL_AGGREGATE_ROWS = 256


@partial(jax.jit, static_argnames=("block", "n_query_clusters", "precision", "per_cell"))
def _aggregate_kernel(
    kernel,
    row_min,
    row_scale,
    col_scale,
    query_codes,
    ref_onehot,
    eps,
    *,
    block,
    n_query_clusters,
    precision,
    per_cell=False,
):
    """Per-cluster sums of the plan ``P_ij = row_scale_i K_ij col_scale_j``, in one call.

    The kernel is read once, in row blocks of ``block`` rows; the cost is recovered from it as
    ``C_ij = r_i - eps log K_ij`` (one logarithm per entry instead of an inner product of
    length ``d``).
    """
    n, m = kernel.shape
    n_blocks = -(-n // block)
    clusters = jnp.arange(n_query_clusters)
    # per_cell: row i's sums per reference cluster, row_scale_i (K (col_scale * onehot))_i
    scaled_onehot = col_scale[:, None] * ref_onehot

    def body(k, acc):
        tm, cost_tm, row_cluster = acc
        start = jnp.minimum(k * block, n - block)
        kb = lax.dynamic_slice_in_dim(kernel, start, block, axis=0)
        rb = lax.dynamic_slice_in_dim(row_min, start, block, axis=0)
        sb = lax.dynamic_slice_in_dim(row_scale, start, block, axis=0)
        qb = lax.dynamic_slice_in_dim(query_codes, start, block, axis=0)
        # rows before k * block belong to the previous block (only in the last, shifted block)
        valid = (start + jnp.arange(block)) >= k * block
        weights = jnp.where((qb[None, :] == clusters[:, None]) & valid[None, :], sb[None, :], 0)
        tm = tm + jnp.matmul(weights, kb, precision=precision)
        cost = rb[:, None] - eps * jnp.log(kb)
        cost_tm = cost_tm + jnp.matmul(weights, kb * cost, precision=precision)
        if per_cell:  # the shifted last block rewrites its overlap with the same values
            rows = sb[:, None] * jnp.matmul(kb, scaled_onehot, precision=precision)
            row_cluster = lax.dynamic_update_slice_in_dim(row_cluster, rows, start, axis=0)
        return tm, cost_tm, row_cluster

    zeros = jnp.zeros((n_query_clusters, m), dtype=kernel.dtype)
    row_cluster = jnp.zeros((n if per_cell else 0, ref_onehot.shape[1]), dtype=kernel.dtype)
    tm, cost_tm, row_cluster = lax.fori_loop(0, n_blocks, body, (zeros, zeros, row_cluster))
    tm = tm * col_scale[None, :]
    cost_mass = jnp.matmul(cost_tm * col_scale[None, :], ref_onehot, precision=precision)
    if per_cell:  # the same sums, regrouped: no second pass over the kernel
        row_mass = jnp.sum(row_cluster, axis=1)
    else:
        row_mass = row_scale * jnp.matmul(kernel, col_scale, precision=precision)
    return tm, cost_mass, row_mass, row_cluster


def plan_scalings(row_min, f, g, epsilon: float, dtype):
    """Row and column scalings of the plan on the kernel (numpy, ``dtype``): ``P_ij =
    row_scale_i K_ij col_scale_j`` with ``row_scale = exp((f - row_min + g_max) / epsilon)``
    and ``col_scale = exp((g - g_max) / epsilon)``; ``None`` if they would overflow.

    ``row_min`` is the kernel's ``min_j C_ij`` per query cell on the host, in float64.
    """
    g_max = float(np.max(g))
    row_log_scale = (f - row_min + g_max) / epsilon
    limit = math.log(float(np.finfo(dtype).max)) - 2.0
    if not math.isfinite(g_max) or not np.max(row_log_scale) <= limit:
        return None
    row_scale = np.exp(row_log_scale).astype(dtype)
    col_scale = np.exp((g - g_max) / epsilon).astype(dtype)
    return row_scale, col_scale


@dataclass(frozen=True)
class Walk:
    """The float64 sums of one aggregation pass, accumulated on the host over its device calls.

    The pass covers ``d`` devices of ``n_local`` query cells each (``d = 1`` on one device),
    against ``width`` reference cells; ``to_host`` reads a call's outputs back. The sums are
    ``(tm, cost_mass, row_mass, row_cluster)``, the per-cell ones of shape ``(d, n_local,
    ...)`` (``row_cluster`` ``None`` without ``per_cell``).
    """

    d: int
    n_local: int
    width: int
    n_query_clusters: int
    n_ref_clusters: int
    per_cell: bool
    progress: bool
    to_host: Callable = np.asarray

    def _zeros(self):
        kq, kr, d, n_local = self.n_query_clusters, self.n_ref_clusters, self.d, self.n_local
        tm = np.zeros((kq, self.width), dtype=np.float64)
        cost_mass = np.zeros((kq, kr), dtype=np.float64)
        row_mass = np.zeros((d, n_local), dtype=np.float64)
        row_cluster = np.zeros((d, n_local, kr), dtype=np.float64) if self.per_cell else None
        return tm, cost_mass, row_mass, row_cluster

    def blocks(self, launch, block: int):
        """Accumulate ``launch(k)`` (the outputs of :func:`_aggregate_block` on every device)
        over the row blocks ``k`` of every device's cells.

        The next block is dispatched before this one is read back (asynchronous dispatch);
        the interrupt is checked between blocks.
        """
        d, kr, to_host = self.d, self.n_ref_clusters, self.to_host
        n_blocks = -(-self.n_local // block)
        tm, cost_mass, row_mass, row_cluster = self._zeros()
        pending = launch(0)
        with tqdm(
            total=n_blocks, desc="Aggregating plan", disable=not self.progress, leave=False
        ) as bar:
            for k in range(n_blocks):
                # dispatch the next block before reading this one back (asynchronous dispatch)
                following = launch(k + 1) if k + 1 < n_blocks else None
                tm_b, cost_b, rows_b, start, cells_b = pending
                tm += to_host(tm_b)
                cost_mass += to_host(cost_b)
                first, start = k * block, int(to_host(start))
                rows = to_host(rows_b).reshape(d, block)
                row_mass[:, first : start + block] = rows[:, first - start :]
                if self.per_cell:
                    cells = to_host(cells_b).reshape(d, block, kr)
                    row_cluster[:, first : start + block] = cells[:, first - start :]
                pending = following
                bar.update(1)
                check_interrupt()
        return tm, cost_mass, row_mass, row_cluster

    def kernel_chunks(self, call, block: int):
        """Accumulate ``call(start, size, block)`` (the outputs of :func:`_aggregate_kernel` on
        rows ``start .. start + size`` of every device's rows of the kernel) over chunks of
        rows: one call for all rows, or above :data:`~._chunks._CHUNK_PAIRS` entries one call
        per chunk (interruptible between chunks)."""
        d, kr, to_host, n_local = self.d, self.n_ref_clusters, self.to_host, self.n_local
        rows = n_local
        if _chunks._chunked(n_local, self.width):
            rows = min(n_local, max(block, (_chunks._CHUNK_PAIRS // self.width) // block * block))
        tm, cost_mass, row_mass, row_cluster = self._zeros()
        with tqdm(
            total=n_local, desc="Aggregating plan", disable=not self.progress, leave=False
        ) as bar:
            for start in range(0, n_local, rows):
                size = min(rows, n_local - start)
                tm_c, cost_c, rows_c, cells_c = call(start, size, min(block, size))
                tm += to_host(tm_c)
                cost_mass += to_host(cost_c)
                row_mass[:, start : start + size] = to_host(rows_c).reshape(d, size)
                if self.per_cell:
                    row_cluster[:, start : start + size] = to_host(cells_c).reshape(d, size, kr)
                bar.update(size)
                check_interrupt()
        return tm, cost_mass, row_mass, row_cluster
