"""Kernel mode: the Gibbs kernel of the cost, precomputed once, and iterations on it.

When the ``n x m`` kernel fits :data:`DEFAULT_KERNEL_MEMORY_BUDGET` (or the caller's budget)
and the cost spread within a row lets ``exp(-C / epsilon)`` stay a normal float, every
log-sum-exp of an iteration becomes a kernel-vector product read along the rows of ``K``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._logdomain import _iterate

if TYPE_CHECKING:
    from ._shard import Devices

logger = logging.getLogger("pairot")

#: Default largest kernel (``n * m * itemsize`` bytes) that :func:`~._driver.sinkhorn`
#: precomputes: 4 GiB.
DEFAULT_KERNEL_MEMORY_BUDGET = 4 * 1024**3


@dataclass(frozen=True, eq=False)
class Kernel:
    """Row-stabilized Gibbs kernel of the cost, kept on the JAX device.

    ``K[i, j] = exp((row_min[i] - C_ij) / epsilon)`` with ``row_min[i] = min_j C_ij``, so that
    every entry lies in ``(0, 1]`` and ``exp(-C_ij / epsilon) = K[i, j] exp(-row_min[i] /
    epsilon)``.

    Attributes
    ----------
    K
        The kernel, shape ``(n, m)``.
    row_min
        ``min_j C_ij`` per query cell, shape ``(n,)``.
    epsilon, offset
        The regularization and the cost offset it was computed with.
    dtype
        The floating-point type of ``K``.
    devices
        For a kernel split over several devices (:mod:`._sharded`), their
        :class:`~._shard.Devices`: ``K`` and ``row_min`` then hold the padded cells too, each
        device its rows; ``None`` on one device.
    cells
        ``(n, m)`` without the padding of a split kernel, else ``None``.
    """

    K: jax.Array
    row_min: jax.Array
    epsilon: float
    offset: float
    dtype: np.dtype
    devices: Devices | None = None
    cells: tuple[int, int] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``, the cells the kernel is of."""
        return tuple(self.K.shape) if self.cells is None else tuple(self.cells)


#: Kernel mode needs ``max_i (max_j C_ij - min_j C_ij) / epsilon`` below
#: ``-log(tiny) - _KERNEL_EXPONENT_MARGIN`` (about 60 in float32): every kernel entry is then
#: a normal float, and terms of a kernel-vector product lost to underflow weigh at most
#: ``exp(-margin)`` relative to the largest term of their row.
_KERNEL_EXPONENT_MARGIN = 27.0


def _kernel_exponent_limit(dtype: np.dtype) -> float:
    return -math.log(float(np.finfo(dtype).tiny)) - _KERNEL_EXPONENT_MARGIN


@partial(jax.jit, static_argnames=("block", "precision"))
def _build_kernel(x, y, offset, eps, *, block, precision):
    """``K_ij = exp((r_i - C_ij) / eps)``, ``r_i = min_j C_ij`` and ``max_i (max_j C_ij - r_i)``.

    Built in row blocks of ``block`` query cells (same shifted last block as
    :func:`~._logdomain._blocked_lse`), so that besides ``K`` only one ``block x m`` cost
    block is held.
    """
    n, m = x.shape[0], y.shape[0]
    n_blocks = -(-n // block)

    def body(k, state):
        kernel, row_min, spread = state
        start = jnp.minimum(k * block, n - block)
        xb = lax.dynamic_slice_in_dim(x, start, block, axis=0)
        cost = offset + jnp.matmul(xb, y.T, precision=precision)
        cmin = jnp.min(cost, axis=1)
        spread = jnp.maximum(spread, jnp.max(jnp.max(cost, axis=1) - cmin))
        kb = jnp.exp((cmin[:, None] - cost) / eps)
        kernel = lax.dynamic_update_slice_in_dim(kernel, kb, start, axis=0)
        row_min = lax.dynamic_update_slice_in_dim(row_min, cmin, start, axis=0)
        return kernel, row_min, spread

    init = (jnp.zeros((n, m), dtype=x.dtype), jnp.zeros(n, dtype=x.dtype), jnp.zeros((), x.dtype))
    return lax.fori_loop(0, n_blocks, body, init)


@partial(jax.jit, static_argnames=("rows", "block", "precision"), donate_argnums=(0, 1))
def _kernel_rows(kernel, row_min, spread, x, y, offset, eps, start, *, rows, block, precision):
    """Rows ``start .. start + rows`` of :func:`_build_kernel`'s outputs, written in place
    (``spread``, a scalar, is not donated: :class:`~._chunks._RowChunks` waits on it)."""
    s = jnp.minimum(start, x.shape[0] - rows)
    xb = lax.dynamic_slice_in_dim(x, s, rows, axis=0)
    kb, rb, sb = _build_kernel(xb, y, offset, eps, block=block, precision=precision)
    kernel = lax.dynamic_update_slice_in_dim(kernel, kb, s, axis=0)
    row_min = lax.dynamic_update_slice_in_dim(row_min, rb, s, axis=0)
    return kernel, row_min, jnp.maximum(spread, sb)


def _kernel_row_lse(kernel, row_min, g, inv_eps, precision, segments=None):
    """``LSE_j((g_j - C_ij) / eps)`` from the kernel.

    Equal to ``(g_max - r_i) / eps + log sum_j K_ij exp((g_j - g_max) / eps)``. With
    ``segments`` (see :func:`~._logdomain._blocked_lse`) one value per row and cluster of
    ``g``'s cells.
    """
    g_max = jnp.max(g)
    v = jnp.exp((g - g_max) * inv_eps)
    base = (g_max - row_min) * inv_eps
    if segments is None:
        return base + jnp.log(jnp.matmul(kernel, v, precision=precision))
    return base[:, None] + jnp.log(jnp.matmul(kernel, v[:, None] * segments, precision=precision))


def _kernel_col_lse(kernel, row_min, f, inv_eps, precision):
    """``LSE_i((f_i - C_ij) / eps) = h_max / eps + log sum_i exp((h_i - h_max) / eps) K_ij``.

    With ``h = f - r``; the product ``u K`` reads ``K`` along its rows.
    """
    h = f - row_min
    h_max = jnp.max(h)
    u = jnp.exp((h - h_max) * inv_eps)
    return h_max * inv_eps + jnp.log(jnp.matmul(u, kernel, precision=precision))


@partial(jax.jit, static_argnames=("precision",))
def _kernel_initial_row_lse(kernel, row_min, g, eps, segments=None, *, precision):
    """:func:`~._logdomain._initial_row_lse` from the kernel."""
    return _kernel_row_lse(kernel, row_min, g, 1.0 / eps, precision, segments)


@partial(jax.jit, static_argnames=("precision",))
def _kernel_steps(
    kernel, row_min, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b, *, precision
):
    """``n_steps`` iterations on the precomputed kernel, then the marginal error."""
    inv_eps = 1.0 / eps

    def row_lse(g):
        return _kernel_row_lse(kernel, row_min, g, inv_eps, precision)

    def col_lse(f):
        return _kernel_col_lse(kernel, row_min, f, inv_eps, precision)

    return _iterate(row_lse, col_lse, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b)


def _checked_kernel(K, row_min, spread, *, epsilon: float, offset: float, dtype, **placement):
    """The :class:`Kernel` of a built ``K``, or ``None`` (with a DEBUG line) when the largest
    cost spread within a row, ``spread``, makes it underflow (see
    :data:`_KERNEL_EXPONENT_MARGIN`); ``placement``: the ``devices`` and ``cells`` of a split
    kernel."""
    exponent = float(spread) / epsilon
    limit = _kernel_exponent_limit(dtype)
    if not exponent <= limit:
        logger.debug(
            "Sinkhorn: log-domain updates (cost spread within a row / epsilon = %.1f > %.1f, "
            "the kernel would underflow in %s).",
            exponent,
            limit,
            dtype.name,
        )
        return None
    return Kernel(K=K, row_min=row_min, epsilon=epsilon, offset=offset, dtype=dtype, **placement)
