"""The blocked log-domain passes of Sinkhorn over the cost ``C = offset + x . y`` (jitted).

A pass computes ``LSE_j(h_j - C_ij / eps)`` for every row of a row-block walk of the cost,
one matrix product per block, so that only a ``block x m`` piece of ``C`` is ever held; the
iterations are built from two such passes (one over the rows of ``C``, one over those of
``C^T``), and the marginal error from the log-sum-exps they leave behind.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _blocked_lse(u, v, h, offset, inv_eps, block: int, precision, segments=None):
    """``out_i = LSE_j(h_j - (offset + u_i . v_j) * inv_eps)`` for every row of ``u``.

    ``u`` is walked in row blocks of ``block`` rows (one matrix product per block); the last
    block starts at ``len(u) - block`` so that every block has the same static shape. Its
    rows already covered by the previous block are recomputed and overwritten with the same
    values.

    With ``segments``, a ``(len(v), S)`` one-hot matrix of the clusters of ``v``'s rows, the
    log-sum-exp is taken per cluster instead: ``out[i, s] = LSE_{j in s}(...)``, shape
    ``(len(u), S)`` (``-inf`` where a cluster's terms underflow against the row's largest).
    """
    n = u.shape[0]
    n_blocks = -(-n // block)
    shape = (n,) if segments is None else (n, segments.shape[1])

    def body(k, out):
        start = jnp.minimum(k * block, n - block)
        ub = lax.dynamic_slice_in_dim(u, start, block, axis=0)
        s = h[None, :] - jnp.matmul(ub, v.T, precision=precision) * inv_eps
        smax = jnp.max(s, axis=1)
        e = jnp.exp(s - smax[:, None])
        if segments is None:
            lse = smax + jnp.log(jnp.sum(e, axis=1))
        else:
            lse = smax[:, None] + jnp.log(jnp.matmul(e, segments, precision=precision))
        return lax.dynamic_update_slice_in_dim(out, lse, start, axis=0)

    out = lax.fori_loop(0, n_blocks, body, jnp.zeros(shape, dtype=u.dtype))
    return out - offset * inv_eps


def _relaxed_target(marginal, potential, kappa):
    """Marginal that the plan must have at the optimum: ``marginal * exp(-potential / rho)``.

    ``kappa = 1 / rho = (1 - tau) / (tau * epsilon)`` is 0 for a hard constraint.
    """
    return jnp.where(marginal > 0, marginal * jnp.exp(-potential * kappa), 0.0)


def _iterate(row_lse, col_lse, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b):
    """Run ``n_steps`` Sinkhorn iterations, then measure the marginal error.

    ``row_lse(g)`` must return ``LSE_j((g_j - C_ij) / eps)`` and ``col_lse(f)``
    ``LSE_i((f_i - C_ij) / eps)``. State invariant: ``lse_row = row_lse(g)`` and
    ``lse_col = col_lse(f)`` for the current potentials; both marginals of the plan of
    ``(f, g)`` then follow without another pass over the cost.
    """
    log_a = jnp.log(a)
    log_b = jnp.log(b)

    def one_iteration(_, state):
        f, g, lse_row, lse_col = state
        f = tau_a * eps * (log_a - lse_row)
        lse_col = col_lse(f)
        g = tau_b * eps * (log_b - lse_col)
        lse_row = row_lse(g)
        return f, g, lse_row, lse_col

    f, g, lse_row, lse_col = lax.fori_loop(0, n_steps, one_iteration, (f, g, lse_row, lse_col))
    return f, g, lse_row, lse_col, _marginal_error(a, b, f, g, lse_row, lse_col, eps, tau_a, tau_b)


def _marginal_error(a, b, f, g, lse_row, lse_col, eps, tau_a, tau_b):
    """``||P 1 - a exp(-f / rho_a)||_1 + ||P^T 1 - b exp(-g / rho_b)||_1``, see
    :func:`~._driver.sinkhorn`."""
    inv_eps = 1.0 / eps
    kappa_a = (1.0 - tau_a) / (tau_a * eps)
    kappa_b = (1.0 - tau_b) / (tau_b * eps)
    row = jnp.exp(f * inv_eps + lse_row)
    col = jnp.exp(g * inv_eps + lse_col)
    return jnp.sum(jnp.abs(row - _relaxed_target(a, f, kappa_a))) + jnp.sum(
        jnp.abs(col - _relaxed_target(b, g, kappa_b))
    )


@partial(jax.jit, static_argnames=("block_x", "precision"))
def _initial_row_lse(x, y, g, offset, eps, segments=None, *, block_x, precision):
    """``LSE_j((g_j - C_ij) / eps)`` per row, or per row and cluster with ``segments``."""
    return _blocked_lse(x, y, g / eps, offset, 1.0 / eps, block_x, precision, segments)


@partial(jax.jit, static_argnames=("block_x", "block_y", "precision"))
def _sinkhorn_steps(
    x,
    y,
    a,
    b,
    f,
    g,
    lse_row,
    lse_col,
    n_steps,
    offset,
    eps,
    tau_a,
    tau_b,
    *,
    block_x,
    block_y,
    precision,
):
    """``n_steps`` log-domain iterations on the blocked cost, then the marginal error."""
    inv_eps = 1.0 / eps

    def row_lse(g):
        return _blocked_lse(x, y, g * inv_eps, offset, inv_eps, block_x, precision)

    def col_lse(f):
        return _blocked_lse(y, x, f * inv_eps, offset, inv_eps, block_y, precision)

    return _iterate(row_lse, col_lse, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b)


@partial(jax.jit, static_argnames=("rows", "block", "precision"))
def _lse_rows(out, u, v, h, offset, inv_eps, start, segments=None, *, rows, block, precision):
    """:func:`_blocked_lse` of the ``rows`` rows of ``u`` from ``start`` (shifted to fit), into
    ``out`` (rows before ``start`` in a shifted last chunk get the same values again)."""
    s = jnp.minimum(start, u.shape[0] - rows)
    ub = lax.dynamic_slice_in_dim(u, s, rows, axis=0)
    lse = _blocked_lse(ub, v, h, offset, inv_eps, block, precision, segments)
    return lax.dynamic_update_slice_in_dim(out, lse, s, axis=0)


_marginal_error_jit = jax.jit(_marginal_error)
