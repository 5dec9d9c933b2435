"""Device passes of the sparse Sinkhorn mode over lists of active tiles.

A tile is ``tr`` consecutive padded rows of one side (``u``) against ``tc`` consecutive padded
columns of the other (``v``), both inside one cluster each (see :class:`~._active.Layout`);
``rows[t]`` and ``cols[t]`` are its first row and column. Tile lists have a fixed capacity
(a power of two: a few compiled sizes whatever the active set) and are walked from ``t0`` to
``t1`` (traced values, so a pass can be split into interruptible device calls).

Every pass writes one partial result per tile (a log-sum-exp over the tile's ``tc`` columns for
each of its ``tr`` rows, or sums for the outputs) into a ``(capacity, tr)`` buffer; the
partials are then combined per segment (row tile, or row tile and cluster) by a segment
log-sum-exp. Every reduction inside a tile runs along its rows.

The kernel variants read a stored row-stabilized kernel per tile, ``K_t[i, j] = exp((r_ti -
C_ij) / eps)`` with ``r_ti`` the smallest cost of row ``i`` in the tile: inside one tile the
cost varies only by its cell term, so the entries never underflow even where the whole row's
cost spread would.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def full(shape, value, dtype):
    """A buffer of per-slot values (the interface :class:`~._sharded_tiles.ShardedTiles`
    shares)."""
    return jnp.full(shape, value, dtype=dtype)


def _slice(a, start, size):
    return lax.dynamic_slice_in_dim(a, start, size, axis=0)


def _put(buffer, t, values):
    return lax.dynamic_update_slice_in_dim(buffer, values[None], t, axis=0)


def _lse_rows_of(s):
    """``LSE`` along the rows of ``s`` (``-inf`` for rows without a finite entry)."""
    top = jnp.max(s, axis=1)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    return safe + jnp.log(jnp.sum(jnp.exp(s - safe[:, None]), axis=1))


@partial(jax.jit, static_argnames=("tr", "tc", "precision"), donate_argnums=(0,))
def tile_lse_partials(out, u, v, h, offset, inv_eps, rows, cols, t0, t1, *, tr, tc, precision):
    """``out[t, i] = LSE_{j in tile t}(h_j - (offset + u_i . v_j) * inv_eps)``, ``t0 <= t < t1``."""

    def body(t, out):
        ub = _slice(u, rows[t], tr)
        vb = _slice(v, cols[t], tc)
        hb = _slice(h, cols[t], tc)
        s = hb[None, :] - (offset + jnp.matmul(ub, vb.T, precision=precision)) * inv_eps
        return _put(out, t, _lse_rows_of(s))

    return lax.fori_loop(t0, t1, body, out)


@partial(jax.jit, static_argnames=("n_segments",))
def combine(partials, segments, *, n_segments):
    """``out[s, i] = LSE_{t : segments_t = s} partials[t, i]``, shape ``(n_segments, tr)``.

    Unused capacity slots must hold ``-inf`` (any segment).
    """
    top = jax.ops.segment_max(partials, segments, num_segments=n_segments)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jax.ops.segment_sum(jnp.exp(partials - safe[segments]), segments, n_segments)
    return jnp.where(jnp.isfinite(top), safe + jnp.log(total), -jnp.inf)


# ------------------------------------------------------------------------- kernel tiles
@partial(jax.jit, static_argnames=("tr", "tc", "precision"), donate_argnums=(0, 1))
def build_tile_kernels(
    kernel, row_min, spread, x, y, offset, eps, rows, cols, t0, t1, *, tr, tc, precision
):
    """Kernels ``K_t`` and row minima ``r_t`` of tiles ``t0 .. t1``; the largest cost spread
    within a tile row (``spread``, a running maximum)."""

    def body(t, state):
        kernel, row_min, spread = state
        cost = offset + jnp.matmul(
            _slice(x, rows[t], tr), _slice(y, cols[t], tc).T, precision=precision
        )
        low = jnp.min(cost, axis=1)
        spread = jnp.maximum(spread, jnp.max(jnp.max(cost, axis=1) - low))
        block = jnp.exp((low[:, None] - cost) / eps).astype(kernel.dtype)
        return _put(kernel, t, block), _put(row_min, t, low), spread

    return lax.fori_loop(t0, t1, body, (kernel, row_min, spread))


def _product(kb, vector, precision, transpose=False):
    """``K_t v`` (or ``u K_t``) with float32 accumulation for a reduced-precision kernel."""
    acc = jnp.promote_types(vector.dtype, jnp.float32)
    kb = kb.astype(acc)
    if transpose:
        return jnp.matmul(vector, kb, precision=precision)
    return jnp.matmul(kb, vector, precision=precision)


@partial(jax.jit, static_argnames=("tc", "precision"), donate_argnums=(0,))
def kernel_row_partials(out, kernel, row_min, g, inv_eps, cols, t0, t1, *, tc, precision):
    """``out[t, i] = LSE_{j in tile t}((g_j - C_ij) / eps)`` from the tile kernels."""

    def body(t, out):
        gb = _slice(g, cols[t], tc)
        top = jnp.max(gb)
        safe = jnp.where(jnp.isfinite(top), top, 0.0)
        v = jnp.exp((gb - safe) * inv_eps)
        total = _product(kernel[t], v, precision)
        return _put(out, t, (safe - row_min[t]) * inv_eps + jnp.log(total))

    return lax.fori_loop(t0, t1, body, out)


@partial(jax.jit, static_argnames=("tr", "precision"), donate_argnums=(0,))
def kernel_col_partials(out, kernel, row_min, f, inv_eps, rows, t0, t1, *, tr, precision):
    """``out[t, j] = LSE_{i in tile t}((f_i - C_ij) / eps)`` for the tile's columns ``j``."""

    def body(t, out):
        h = _slice(f, rows[t], tr) - row_min[t]
        top = jnp.max(h)
        safe = jnp.where(jnp.isfinite(top), top, 0.0)
        u = jnp.exp((h - safe) * inv_eps)
        total = _product(kernel[t], u, precision, transpose=True)
        return _put(out, t, safe * inv_eps + jnp.log(total))

    return lax.fori_loop(t0, t1, body, out)


# ------------------------------------------------------------------------------ outputs
@partial(jax.jit, static_argnames=("tr", "tc", "precision"), donate_argnums=(0, 1, 2))
def aggregate_tiles(
    col_sums,
    cost_sums,
    row_sums,
    x,
    y,
    f,
    g,
    offset,
    eps,
    rows,
    cols,
    t0,
    t1,
    kernel=None,
    row_min=None,
    *,
    tr,
    tc,
    precision,
):
    """Per tile ``t0 .. t1`` of the plan ``P_ij = exp((f_i + g_j - C_ij) / eps)``: its column sums
    (``col_sums[t]``, shape ``tc``), ``sum P C`` (``cost_sums[t]``) and row sums (``row_sums[t]``).

    The cost is the matrix product, or with ``kernel`` recovered as ``r_ti - eps log K_t``.
    """

    def body(t, state):
        col_sums, cost_sums, row_sums = state
        fb = _slice(f, rows[t], tr)
        gb = _slice(g, cols[t], tc)
        if kernel is None:
            cost = offset + jnp.matmul(
                _slice(x, rows[t], tr), _slice(y, cols[t], tc).T, precision=precision
            )
        else:
            cost = row_min[t][:, None] - eps * jnp.log(kernel[t].astype(fb.dtype))
        plan = jnp.exp((fb[:, None] + gb[None, :] - cost) / eps)
        col_sums = _put(col_sums, t, jnp.sum(plan, axis=0))
        cost_sums = lax.dynamic_update_index_in_dim(cost_sums, jnp.sum(plan * cost), t, axis=0)
        row_sums = _put(row_sums, t, jnp.sum(plan, axis=1))
        return col_sums, cost_sums, row_sums

    return lax.fori_loop(t0, t1, body, (col_sums, cost_sums, row_sums))
