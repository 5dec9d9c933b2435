"""The passes of a Sinkhorn solve on one device, over its blocked cost or its kernel.

:class:`_LogPasses` runs the log-domain passes over ``C = offset + x . y`` and kernel mode's
(the kernel built from them, its iterations), each whole or in interruptible row chunks;
:func:`host_steps` is the iteration loop of passes run as separate device calls, which the
chunked, sharded (:mod:`._sharded`) and active-tile (:mod:`._sparse`) passes share.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._chunks import _chunked, _RowChunks
from ._kernel import (
    Kernel,
    _build_kernel,
    _checked_kernel,
    _kernel_initial_row_lse,
    _kernel_rows,
    _kernel_steps,
)
from ._logdomain import _initial_row_lse, _lse_rows, _marginal_error_jit, _sinkhorn_steps


def _log_update(log_marginal, lse, tau, eps):
    """The potential of one side from the log-sum-exps of the other: ``tau eps (log a - lse)``."""
    return tau * eps * (log_marginal - lse)


def host_steps(passes, state, n_steps: int, first_iteration: int, update=_log_update):
    """``n_steps`` iterations from ``state`` as separate passes (``passes.row_lse``,
    ``passes.col_lse``, each its own device calls), the progress bar told after each, then
    the marginal error: the iterations of chunked and of active-tile passes.

    ``update(log_marginal, lse, tau, eps)`` computes a potential (:func:`_log_update`, or
    a jitted equivalent)."""
    s = passes.s
    f, g, lse_row, lse_col = state
    for k in range(n_steps):
        f = update(passes.log_a, lse_row, s["tau_a"], s["eps"])
        lse_col = passes.col_lse(f)
        g = update(passes.log_b, lse_col, s["tau_b"], s["eps"])
        lse_row = passes.row_lse(g)
        passes.bar.update(first_iteration + k + 1)
    error = _marginal_error_jit(
        passes.a, passes.b, f, g, lse_row, lse_col, s["eps"], s["tau_a"], s["tau_b"]
    )
    return f, g, lse_row, lse_col, error


class _LogPasses:
    """The passes of a Sinkhorn solve over the blocked cost ``C = offset + x . y``.

    A pass over at most :data:`~._chunks._CHUNK_PAIRS` cell pairs is one device call; a larger
    one runs in interruptible row chunks (:class:`~._chunks._RowChunks`) reporting to the
    progress bar. Both give the same values up to float round-off.
    """

    def __init__(self, xj, yj, aj, bj, scalars, block_x, block_y, precision, bar):
        self.x, self.y, self.a, self.b = xj, yj, aj, bj
        self.log_a, self.log_b = jnp.log(aj), jnp.log(bj)
        self.s = scalars
        self.block_x, self.block_y = block_x, block_y
        self.precision = precision
        self.bar = bar
        n, m = xj.shape[0], yj.shape[0]
        self.n, self.m = n, m
        self.chunked = _chunked(n, m)
        self.rows_x = _RowChunks(n, block_x, m)
        self.rows_y = _RowChunks(m, block_y, n)

    def potentials(self, state) -> tuple[np.ndarray, np.ndarray]:
        """``(f, g)`` of ``state`` on the host."""
        return np.asarray(state[0]), np.asarray(state[1])

    def zero_state(self, kernel):
        """``f = g = 0`` and the row log-sum-exps of ``g`` (from the kernel, if any)."""
        g = jnp.zeros(self.m, dtype=self.x.dtype)
        f = jnp.zeros(self.n, dtype=self.x.dtype)
        return self._state(f, g, kernel)

    def initial_state(self, f0, g0, kernel=None):
        """The state of the start potentials ``(f0, g0)`` (host arrays): like
        :meth:`zero_state`, the row log-sum-exps of ``g0`` (the first update of an iteration
        replaces ``f`` and the column log-sum-exps)."""
        f = jnp.asarray(np.asarray(f0, dtype=self.x.dtype))
        g = jnp.asarray(np.asarray(g0, dtype=self.x.dtype))
        return self._state(f, g, kernel)

    def _state(self, f, g, kernel):
        if kernel is not None:
            lse_row = _kernel_initial_row_lse(
                kernel.K, kernel.row_min, g, self.s["eps"], precision=self.precision
            )
        else:
            lse_row = self.row_lse(g)
        return (f, g, lse_row, g)

    def make_kernel(self, offset: float, epsilon: float, dtype) -> Kernel | None:
        """The kernel of kernel mode, or ``None`` when the cost spread would make it underflow.

        Built in one device call, or for more than :data:`~._chunks._CHUNK_PAIRS` pairs in
        interruptible row chunks written in place.
        """
        xj, yj, s, prec = self.x, self.y, self.s, self.precision
        if not self.chunked:
            K, row_min, spread = _build_kernel(
                xj, yj, s["offset"], s["eps"], block=self.block_x, precision=prec
            )
        else:

            def launch(out, start, rows):
                return _kernel_rows(
                    *out,
                    xj,
                    yj,
                    s["offset"],
                    s["eps"],
                    jnp.asarray(np.int32(start)),
                    rows=rows,
                    block=min(self.block_x, rows),
                    precision=prec,
                )

            n, m = self.n, self.m
            init = (
                jnp.zeros((n, m), dtype=xj.dtype),
                jnp.zeros(n, dtype=xj.dtype),
                jnp.zeros((), dtype=xj.dtype),
            )
            K, row_min, spread = self.rows_x.run(
                launch, init, lambda done: self.bar.rows("kernel", done, n)
            )
        return _checked_kernel(K, row_min, spread, epsilon=epsilon, offset=offset, dtype=dtype)

    def kernel_steps(self, kernel: Kernel, state, n_steps: int):
        """``n_steps`` iterations on the kernel, then the marginal error."""
        s = self.s
        return _kernel_steps(
            kernel.K,
            kernel.row_min,
            self.a,
            self.b,
            *state,
            jnp.asarray(np.int32(n_steps)),
            s["eps"],
            s["tau_a"],
            s["tau_b"],
            precision=self.precision,
        )

    def _lse(self, u, v, h, chunks, block, segments, label):
        inv_eps = 1.0 / self.s["eps"]
        shape = (u.shape[0],) if segments is None else (u.shape[0], segments.shape[1])

        def launch(out, start, rows):
            return _lse_rows(
                out,
                u,
                v,
                h,
                self.s["offset"],
                inv_eps,
                jnp.asarray(np.int32(start)),
                segments,
                rows=rows,
                block=min(block, rows),
                precision=self.precision,
            )

        out = jnp.zeros(shape, dtype=u.dtype)
        return chunks.run(launch, out, lambda done: self.bar.rows(label, done, u.shape[0]))

    def row_lse(self, g, segments=None):
        """``LSE_j((g_j - C_ij) / eps)`` per query cell (per reference cluster with segments)."""
        if not self.chunked:
            return _initial_row_lse(
                self.x,
                self.y,
                g,
                self.s["offset"],
                self.s["eps"],
                segments,
                block_x=self.block_x,
                precision=self.precision,
            )
        h = g / self.s["eps"]
        return self._lse(self.x, self.y, h, self.rows_x, self.block_x, segments, "query cells")

    def col_lse(self, f):
        """``LSE_i((f_i - C_ij) / eps)`` per reference cell."""
        h = f / self.s["eps"]
        return self._lse(self.y, self.x, h, self.rows_y, self.block_y, None, "reference cells")

    def steps(self, state, n_steps: int, first_iteration: int):
        """``n_steps`` log-domain iterations from ``state``, then the marginal error."""
        s = self.s
        if not self.chunked:
            return _sinkhorn_steps(
                self.x,
                self.y,
                self.a,
                self.b,
                *state,
                jnp.asarray(np.int32(n_steps)),
                s["offset"],
                s["eps"],
                s["tau_a"],
                s["tau_b"],
                block_x=self.block_x,
                block_y=self.block_y,
                precision=self.precision,
            )
        return host_steps(self, state, n_steps, first_iteration)
