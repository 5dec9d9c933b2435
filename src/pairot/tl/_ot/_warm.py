"""Warm starts of Sinkhorn: start potentials for :func:`~._driver.sinkhorn`'s ``init``.

- :func:`extend_potentials`: the potentials of a solve on some of the cells (a downsample,
  or another solve) extended to every cell by one exact c-transform pass each way, with the
  engine's own update (tau-aware)::

      f_i = tau_a * eps * (log a_i - LSE_k((g_k - C(x_i, y_k)) / eps))    k: the known cells
      g_j = tau_b * eps * (log b_j - LSE_i((f_i - C_ij) / eps))           i: every query cell

  With ``g_k = eps log b'_k + psi_k`` on a downsample whose marginal ``b'`` spreads each
  cluster's mass over fewer cells, ``sum_k b'_k exp((psi_k - C) / eps)`` estimates ``sum_j
  b_j exp((psi_j - C) / eps)`` over all cells, so the first line is the full problem's ``f``
  update at the downsample's dual function ``psi``.
- :func:`cluster_potentials` (from :mod:`._sparse`): the cluster-constant potentials that the
  active-block mode starts from, for the dense passes too.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._blocks import _SOLVE_FACTOR, _capped_blocks, _check_budget
from ._checks import _check_common, _check_marginal, _check_scalar, _check_vector, _dtype_context
from ._logdomain import _initial_row_lse
from ._sparse import cluster_potentials

__all__ = ["cluster_potentials", "extend_potentials"]


def extend_potentials(
    x_aug,
    y_aug,
    offset: float,
    a,
    b,
    y_known,
    g_known,
    *,
    epsilon: float,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    batch_size: int = 1024,
    dtype=np.float32,
    precision: str = "highest",
    block_memory_budget: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Start potentials ``(f, g)`` on every cell from a reference potential ``g_known`` known
    on the cells ``y_known``: one c-transform pass to ``f`` (query cells against the known
    reference cells), then one to ``g`` (every reference cell against every query cell).

    Parameters
    ----------
    x_aug, y_aug, offset, a, b, epsilon, tau_a, tau_b, batch_size, dtype, precision
        The problem, as :func:`~._driver.sinkhorn` takes it.
    y_known
        Augmented vectors of the reference cells whose potential is known, shape ``(k, d)``
        (rows of ``y_aug``, or of the same cost's vectors).
    g_known
        Their potential, shape ``(k,)``: the ``g`` of a solve on them.
    block_memory_budget
        Bytes one row block of the cost may take (``None``: 1 GiB), as in ``sinkhorn``.

    Returns
    -------
    f, g
        float64 arrays of shapes ``(n,)`` and ``(m,)``, for ``sinkhorn(init=(f, g))``.
    """
    x, y, offset, epsilon, batch_size, dtype, prec = _check_common(
        x_aug, y_aug, offset, epsilon, batch_size, dtype, precision
    )
    n, m = x.shape[0], y.shape[0]
    a = _check_marginal(a, n, "a", "query cell")
    b = _check_marginal(b, m, "b", "reference cell")
    tau_a = _check_scalar(tau_a, "tau_a", low=0.0, high=1.0)
    tau_b = _check_scalar(tau_b, "tau_b", low=0.0, high=1.0)
    yk = np.asarray(y_known)
    if yk.ndim != 2 or yk.shape[1] != x.shape[1] or yk.shape[0] == 0:
        msg = (
            f"y_known must have shape (k, {x.shape[1]}) with k >= 1 (augmented vectors of the "
            f"cells whose potential is known), got shape {yk.shape}."
        )
        raise ValueError(msg)
    gk = _check_vector(g_known, yk.shape[0], "g_known", "known reference cell")
    gk = gk.astype(np.float64)
    if not np.isfinite(gk).any() or np.isnan(gk).any() or (gk == np.inf).any():
        msg = "g_known must hold finite potentials (no NaN or +inf); pass the g of a solve."
        raise ValueError(msg)
    block_x, block_y = _capped_blocks(
        "Warm start",
        batch_size,
        [
            (min(batch_size, n), yk.shape[0], yk.shape[0], "known reference cells"),
            (min(batch_size, m), n, n, "query cells"),
        ],
        itemsize=dtype.itemsize,
        factor=_SOLVE_FACTOR,
        budget=_check_budget(block_memory_budget),
    )
    with _dtype_context(dtype):
        xj = jnp.asarray(x.astype(dtype, copy=False))
        yj = jnp.asarray(y.astype(dtype, copy=False))
        ykj = jnp.asarray(yk.astype(dtype, copy=False))
        off, eps = np.asarray(offset, dtype=dtype), np.asarray(epsilon, dtype=dtype)
        lse = _initial_row_lse(
            xj, ykj, jnp.asarray(gk.astype(dtype)), off, eps, block_x=block_x, precision=prec
        )
        with np.errstate(divide="ignore"):
            f = tau_a * epsilon * (np.log(a) - np.asarray(lse, dtype=np.float64))
        lse = _initial_row_lse(
            yj, xj, jnp.asarray(f.astype(dtype)), off, eps, block_x=block_y, precision=prec
        )
        with np.errstate(divide="ignore"):
            g = tau_b * epsilon * (np.log(b) - np.asarray(lse, dtype=np.float64))
    return f, g
