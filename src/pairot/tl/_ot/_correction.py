"""The cluster-level correction of Sinkhorn: one potential shift per cluster.

On the plan of the current potentials, the plan mass of every cluster pair is gathered in one
pass over the cost (one log-sum-exp per reference cluster);
:func:`~._cluster_scaling.cluster_scaling` then finds the shifts that make every cluster's
mass meet its target.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import _check_codes, _onehot
from ._cluster_scaling import cluster_scaling
from ._kernel import Kernel, _kernel_initial_row_lse

if TYPE_CHECKING:
    from ._passes import _LogPasses

logger = logging.getLogger("pairot")

#: Iterations before the first cluster-level correction (later ones follow unconverged checks).
_EARLY_CORRECTION = 2
#: Largest ``Kq + Kr`` for the cluster-level correction: its Newton steps diagonalize a
#: ``(Kq + Kr)``-square matrix (measured here: about 0.09 s per correction at 100 + 100
#: clusters, 2.3 s at 400 + 400), which beyond this would outweigh the iterations it saves
#: on problems of moderate size.
_MAX_CORRECTION_CLUSTERS = 1000


def _correction_codes(query_codes, ref_codes, n: int, m: int):
    """The checked codes ``(query, ref, Kq, Kr)`` for :class:`_Correction`, or ``None`` (with an
    INFO log) above :data:`_MAX_CORRECTION_CLUSTERS` clusters in all."""
    qcodes = _check_codes(query_codes, n, None, "query_codes", "query cell")
    rcodes = _check_codes(ref_codes, m, None, "ref_codes", "reference cell")
    codes = (qcodes, rcodes, int(qcodes.max()) + 1, int(rcodes.max()) + 1)
    if codes[2] + codes[3] > _MAX_CORRECTION_CLUSTERS:
        logger.info(
            "Sinkhorn: no cluster-level correction for %d + %d clusters (more than %d in "
            "all); plain Sinkhorn iterations.",
            codes[2],
            codes[3],
            _MAX_CORRECTION_CLUSTERS,
        )
        return None
    return codes


def _segment_lse(z, codes, n_segments: int):
    """``out[k, s] = LSE_{i : codes_i = k} z[i, s]`` for a ``(n, S)`` array (``-inf`` if empty)."""
    zmax = jax.ops.segment_max(z, codes, num_segments=n_segments)
    zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
    total = jax.ops.segment_sum(jnp.exp(z - zmax[codes]), codes, num_segments=n_segments)
    return zmax + jnp.log(total)


def cluster_problem(
    row_lse_c,
    f,
    g,
    log_a,
    log_b,
    query_codes,
    ref_codes,
    eps,
    tau_a,
    tau_b,
    *,
    n_query_clusters,
    n_ref_clusters,
):
    """Inputs of :func:`~._cluster_scaling.cluster_scaling` for the plan of ``(f, g)``.

    ``row_lse_c[i, c] = LSE_{j in c}((g_j - C_ij) / eps)``. Returns the log plan mass per
    cluster pair and the log targets ``log sum_{i in k} a_i exp(-f_i / rho_a)`` (and ``b``).
    Not jitted: :func:`_cluster_problem` is, and the sharded correction runs it on every
    device's cells.
    """
    inv_eps = 1.0 / eps
    log_mass = _segment_lse(f[:, None] * inv_eps + row_lse_c, query_codes, n_query_clusters)
    kappa_a = (1.0 - tau_a) / (tau_a * eps)
    kappa_b = (1.0 - tau_b) / (tau_b * eps)
    # cells without mass (log a = -inf, potential -inf) contribute nothing, not NaN
    ta = jnp.where(jnp.isneginf(log_a), -jnp.inf, log_a - kappa_a * f)
    tb = jnp.where(jnp.isneginf(log_b), -jnp.inf, log_b - kappa_b * g)
    log_ta = _segment_lse(ta[:, None], query_codes, n_query_clusters)[:, 0]
    log_tb = _segment_lse(tb[:, None], ref_codes, n_ref_clusters)[:, 0]
    return log_mass, log_ta, log_tb


def shift_potentials(f, g, row_lse_c, x, y, query_codes, ref_codes, eps):
    """Add ``eps x[k_i]`` to ``f`` and ``eps y[c_j]`` to ``g``; ``LSE_j((g_j - C_ij) / eps)`` after.

    Shifting ``g`` by a constant per reference cluster shifts each per-cluster log-sum-exp of a
    row by that constant, so the row log-sum-exp of the new ``g`` needs no pass over the cost.
    """
    lse_row = jax.nn.logsumexp(row_lse_c + y[None, :], axis=1)
    return f + eps * x[query_codes], g + eps * y[ref_codes], lse_row


_cluster_problem = partial(jax.jit, static_argnames=("n_query_clusters", "n_ref_clusters"))(
    cluster_problem
)
_shift_potentials = jax.jit(shift_potentials)


class _Correction:
    """The cluster-level correction of :func:`~._driver.sinkhorn` (see its ``query_codes``)."""

    def __init__(self, passes: _LogPasses, codes, tau_a, tau_b, tol, dtype):
        self.passes = passes
        self.n_query_clusters, self.n_ref_clusters = codes[2], codes[3]
        self.tau_a, self.tau_b, self.tol, self.dtype = tau_a, tau_b, tol, dtype
        self._place(codes, dtype)

    # the device side, one step each (:class:`~._sharded.ShardedCorrection` splits them)
    def _place(self, codes, dtype):
        """The codes and the reference clusters' one-hot matrix on the device."""
        self.qj, self.rj = (jnp.asarray(c.astype(np.int32)) for c in codes[:2])
        self.segments = _onehot(codes[1], codes[3], dtype)

    def _to_host(self, value):
        return np.asarray(value)

    def _row_c(self, g, kernel: Kernel | None):
        """``LSE_{j in c}((g_j - C_ij) / eps)`` per query cell and reference cluster."""
        passes = self.passes
        if kernel is not None:
            return _kernel_initial_row_lse(
                kernel.K,
                kernel.row_min,
                g,
                passes.s["eps"],
                self.segments,
                precision=passes.precision,
            )
        return passes.row_lse(g, self.segments)

    def _problem_args(self, row_c, f, g) -> tuple:
        """The positional arguments of :func:`cluster_problem` for ``(f, g)``."""
        p, s = self.passes, self.passes.s
        return (row_c, f, g, p.log_a, p.log_b, self.qj, self.rj, s["eps"], s["tau_a"], s["tau_b"])

    def _problem(self, row_c, f, g):
        return _cluster_problem(
            *self._problem_args(row_c, f, g),
            n_query_clusters=self.n_query_clusters,
            n_ref_clusters=self.n_ref_clusters,
        )

    def _shift(self, f, g, row_c, x_shift, y_shift):
        return _shift_potentials(
            f,
            g,
            row_c,
            jnp.asarray(x_shift.astype(self.dtype)),
            jnp.asarray(y_shift.astype(self.dtype)),
            self.qj,
            self.rj,
            self.passes.s["eps"],
        )

    def __call__(self, state, kernel: Kernel | None):
        """The corrected ``state``, or ``None`` if the correction changes nothing."""
        f, g = state[0], state[1]
        row_c = self._row_c(g, kernel)
        log_mass, log_ta, log_tb = (
            np.asarray(self._to_host(v), dtype=np.float64) for v in self._problem(row_c, f, g)
        )
        x_shift, y_shift, solved = cluster_scaling(
            log_mass, log_ta, log_tb, tau_a=self.tau_a, tau_b=self.tau_b, tol=self.tol
        )
        if not (np.any(x_shift) or np.any(y_shift)):
            return None
        logger.debug(
            "Sinkhorn: cluster-level correction (largest shift %.3g epsilon, %s).",
            max(np.abs(x_shift).max(), np.abs(y_shift).max()),
            "solved" if solved else "partial",
        )
        new = self._shift(f, g, row_c, x_shift, y_shift)
        return (*new, state[3])
