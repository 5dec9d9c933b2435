"""The dense passes of a Sinkhorn solve and its correction, row-sharded over several devices.

The same updates as :class:`~._passes._LogPasses` and kernel mode (:mod:`._kernel`), with the
cells split over the 1-D mesh of :mod:`._shard`:

- the augmented vectors ``x`` and ``y`` (padded) are on every device, and each device works
  on its own rows of them: its query cells for the ``f`` update, its reference cells for the
  ``g`` update, each against all cells of the other side;
- the potentials and the log-sum-exps of the state are split by rows (each device holds those
  of its cells) and gathered (an all-gather of ``n + m`` values) where a pass needs a whole
  side;
- in kernel mode each device holds its rows of the kernel ``K`` (``n m / D`` values): ``K v``
  is local, and ``u K`` is every device's partial product of its rows, combined by an
  all-reduce max of the shift and a reduce-scatter of the shifted sums, so that each device
  receives the column log-sum-exps of its own reference cells;
- the marginal error, the cluster-level correction's masses and the outputs' sums are
  all-reduced (log-sum-exps with :func:`~._shard.combine_lse`).

Each device runs the single-device kernels (:func:`~._logdomain._blocked_lse`,
:func:`~._kernel._build_kernel`, ...) on its rows, so the arithmetic per cell pair is that of
one device; results agree with a one-device solve up to float round-off (the order of the
sums changes).
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _chunks
from ._chunks import _RowChunks
from ._correction import _Correction, cluster_problem, shift_potentials
from ._kernel import Kernel, _build_kernel, _checked_kernel, _kernel_row_lse, _kernel_rows
from ._logdomain import _blocked_lse, _iterate, _lse_rows
from ._passes import host_steps
from ._shard import ROWS, WHOLE, Devices, combine_lse, gather, local_rows, sharded

logger = logging.getLogger("pairot")

_R, _W = ROWS, WHOLE


class ShardedPasses:
    """The passes of a Sinkhorn solve over ``C = offset + x . y``, row-sharded over
    ``devices`` (same interface as :class:`~._passes._LogPasses`).

    ``n`` and ``m`` are the padded sizes; the state's arrays are split by rows over the
    devices, padded cells holding ``-inf`` potentials.
    """

    def __init__(self, devices: Devices, x, y, a, b, scalars, block_x, block_y, precision, bar):
        d = devices.n
        self.devices = devices
        self.n_cells, self.m_cells = x.shape[0], y.shape[0]
        self.n, self.m = devices.padded(x.shape[0]), devices.padded(y.shape[0])
        self.n_local, self.m_local = self.n // d, self.m // d
        dtype = np.dtype(x.dtype)
        self.dtype = dtype
        self.x = devices.put(x, pad=True)
        self.y = devices.put(y, pad=True)
        self.a = devices.put_rows(np.asarray(a, dtype=dtype), fill=0)
        self.b = devices.put_rows(np.asarray(b, dtype=dtype), fill=0)
        self.log_a, self.log_b = jnp.log(self.a), jnp.log(self.b)
        self.s = {k: devices.scalar(v, dtype) for k, v in scalars.items()}
        self.block_x = min(block_x, self.n_local)
        self.block_y = min(block_y, self.m_local)
        self.precision = precision
        self.bar = bar
        self.chunked = _chunks._chunked(self.n_local, self.m) or _chunks._chunked(
            self.m_local, self.n
        )
        self.rows_x = _RowChunks(self.n_local, self.block_x, self.m)
        self.rows_y = _RowChunks(self.m_local, self.block_y, self.n)

    # ------------------------------------------------------------------ placement
    def potentials(self, state) -> tuple[np.ndarray, np.ndarray]:
        """``(f, g)`` of ``state`` on the host, without the padded cells."""
        to_host = self.devices.to_host
        return to_host(state[0])[: self.n_cells], to_host(state[1])[: self.m_cells]

    def zero_state(self, kernel: Kernel | None):
        """``f = g = 0`` (``-inf`` on padded cells) and the row log-sum-exps of ``g``."""
        return self.initial_state(
            np.zeros(self.n_cells, dtype=self.dtype),
            np.zeros(self.m_cells, dtype=self.dtype),
            kernel,
        )

    def initial_state(self, f0, g0, kernel: Kernel | None = None):
        """The state of the start potentials ``(f0, g0)`` (host arrays of the cells, ``-inf``
        on padded cells) and the row log-sum-exps of ``g0``."""
        f = self.devices.put_rows(np.asarray(f0, dtype=self.dtype), fill=-np.inf)
        g = self.devices.put_rows(np.asarray(g0, dtype=self.dtype), fill=-np.inf)
        lse_row = self.row_lse(g) if kernel is None else self.kernel_row_lse(kernel, g)
        return (f, g, lse_row, g)

    # ------------------------------------------------------------------ log domain
    def _pass(self, u, v, potential, rows, block, segments, label):
        """``LSE(h_j - C / eps)`` over the rows of this device's cells of ``u`` (whole rows
        of the other side ``v``, with the potential ``h`` of its cells)."""
        s = self.s
        n_local = rows.n
        with_segments = segments is not None
        extra = (segments,) if with_segments else ()
        extra_specs = (_W,) if with_segments else ()
        if not self.chunked:
            precision = self.precision

            def local(u, v, h_local, offset, eps, *seg):
                inv_eps = 1.0 / eps
                h = gather(h_local) * inv_eps
                u_local = local_rows(u, n_local)
                return _blocked_lse(u_local, v, h, offset, inv_eps, block, precision, *seg)

            fn = sharded(
                self.devices,
                ("lse", n_local, block, precision, with_segments),
                local,
                (_W, _W, _R, _W, _W, *extra_specs),
                _R,
            )
            return fn(u, v, potential, s["offset"], s["eps"], *extra)

        inv_eps = 1.0 / s["eps"]

        def launch(out, start, n_rows):
            precision, blk = self.precision, min(block, n_rows)

            def local(out, u, v, h_local, offset, inv_eps, start, *seg):
                h = gather(h_local) * inv_eps
                u_local = local_rows(u, out.shape[0])
                return _lse_rows(
                    out,
                    u_local,
                    v,
                    h,
                    offset,
                    inv_eps,
                    start,
                    *seg,
                    rows=n_rows,
                    block=blk,
                    precision=precision,
                )

            fn = sharded(
                self.devices,
                ("lse_rows", n_rows, blk, precision, with_segments),
                local,
                (_R, _W, _W, _R, _W, _W, _W, *extra_specs),
                _R,
            )
            start = self.devices.scalar(start, np.int32)
            return fn(out, u, v, potential, s["offset"], inv_eps, start, *extra)

        shape = (u.shape[0],) if segments is None else (u.shape[0], segments.shape[1])
        out = self.devices.zeros(shape, self.dtype)
        return rows.run(
            launch, out, lambda done: self.bar.rows(f"{label}, each device", done, n_local)
        )

    def row_lse(self, g, segments=None):
        """``LSE_j((g_j - C_ij) / eps)`` per query cell (per reference cluster with
        ``segments``, a replicated ``(m, Kr)`` one-hot), split by rows."""
        return self._pass(self.x, self.y, g, self.rows_x, self.block_x, segments, "query cells")

    def col_lse(self, f):
        """``LSE_i((f_i - C_ij) / eps)`` per reference cell, split by rows."""
        return self._pass(self.y, self.x, f, self.rows_y, self.block_y, None, "reference cells")

    def steps(self, state, n_steps: int, first_iteration: int):
        """``n_steps`` log-domain iterations from ``state``, then the marginal error."""
        s = self.s
        if not self.chunked:
            n_local, m_local = self.n_local, self.m_local
            block_x, block_y, precision = self.block_x, self.block_y, self.precision

            def local(x, y, a, b, f, g, lse_row, lse_col, n_steps, offset, eps, tau_a, tau_b):
                inv_eps = 1.0 / eps
                x_local, y_local = local_rows(x, n_local), local_rows(y, m_local)

                def row_lse(g):
                    h = gather(g) * inv_eps
                    return _blocked_lse(x_local, y, h, offset, inv_eps, block_x, precision)

                def col_lse(f):
                    h = gather(f) * inv_eps
                    return _blocked_lse(y_local, x, h, offset, inv_eps, block_y, precision)

                *out, error = _iterate(
                    row_lse, col_lse, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b
                )
                return (*out, lax.psum(error, "cells"))

            fn = sharded(
                self.devices,
                ("steps", n_local, m_local, block_x, block_y, precision),
                local,
                (_W, _W, _R, _R, _R, _R, _R, _R, _W, _W, _W, _W, _W),
                (_R, _R, _R, _R, _W),
            )
            return fn(
                self.x,
                self.y,
                self.a,
                self.b,
                *state,
                self.devices.scalar(n_steps, np.int32),
                s["offset"],
                s["eps"],
                s["tau_a"],
                s["tau_b"],
            )
        return host_steps(self, state, n_steps, first_iteration)

    # ------------------------------------------------------------------ kernel mode
    def make_kernel(self, offset: float, epsilon: float, dtype) -> Kernel | None:
        """Each device's rows of the kernel (see :meth:`~._passes._LogPasses.make_kernel`), or
        ``None`` when the cost spread would make it underflow."""
        s, precision, n_local = self.s, self.precision, self.n_local
        if not self.chunked:
            block = self.block_x

            def local(x, y, offset, eps):
                kernel, row_min, spread = _build_kernel(
                    local_rows(x, n_local), y, offset, eps, block=block, precision=precision
                )
                return kernel, row_min, lax.pmax(spread, "cells")

            fn = sharded(
                self.devices,
                ("kernel", n_local, block, precision),
                local,
                (_W, _W, _W, _W),
                (_R, _R, _W),
            )
            K, row_min, spread = fn(self.x, self.y, s["offset"], s["eps"])
        else:

            def launch(out, start, n_rows):
                blk = min(self.block_x, n_rows)

                def local(kernel, row_min, spread, x, y, offset, eps, start):
                    x_local = local_rows(x, kernel.shape[0])
                    kernel, row_min, spread = _kernel_rows(
                        kernel,
                        row_min,
                        spread,
                        x_local,
                        y,
                        offset,
                        eps,
                        start,
                        rows=n_rows,
                        block=blk,
                        precision=precision,
                    )
                    return kernel, row_min, lax.pmax(spread, "cells")

                fn = sharded(
                    self.devices,
                    ("kernel_rows", n_rows, blk, precision),
                    local,
                    (_R, _R, _W, _W, _W, _W, _W, _W),
                    (_R, _R, _W),
                    donate_argnums=(0, 1),
                )
                start = self.devices.scalar(start, np.int32)
                return fn(*out, self.x, self.y, s["offset"], s["eps"], start)

            init = (
                self.devices.zeros((self.n, self.m), self.dtype),
                self.devices.zeros((self.n,), self.dtype),
                self.devices.scalar(0, self.dtype),
            )
            K, row_min, spread = self.rows_x.run(
                launch, init, lambda done: self.bar.rows("kernel, each device", done, n_local)
            )
        return _checked_kernel(
            K,
            row_min,
            spread,
            epsilon=epsilon,
            offset=offset,
            dtype=dtype,
            devices=self.devices,
            cells=(self.n_cells, self.m_cells),
        )

    def kernel_row_lse(self, kernel: Kernel, g, segments=None):
        """:meth:`row_lse` from each device's rows of the kernel."""
        precision = self.precision
        with_segments = segments is not None

        def local(K, row_min, g, eps, *seg):
            return _kernel_row_lse(K, row_min, gather(g), 1.0 / eps, precision, *seg)

        fn = sharded(
            self.devices,
            ("kernel_row_lse", precision, with_segments),
            local,
            (_R, _R, _R, _W, *((_W,) if with_segments else ())),
            _R,
        )
        extra = (segments,) if with_segments else ()
        return fn(kernel.K, kernel.row_min, g, self.s["eps"], *extra)

    def kernel_steps(self, kernel: Kernel, state, n_steps: int):
        """``n_steps`` iterations on the kernel's rows, then the marginal error."""
        s, precision = self.s, self.precision

        def local(K, row_min, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b):
            inv_eps = 1.0 / eps

            def row_lse(g):
                return _kernel_row_lse(K, row_min, gather(g), inv_eps, precision)

            def col_lse(f):
                # u K from every device's rows: one shift for all, then a reduce-scatter
                h = f - row_min
                h_max = lax.pmax(jnp.max(h), "cells")
                u = jnp.exp((h - h_max) * inv_eps)
                partial = jnp.matmul(u, K, precision=precision)
                total = lax.psum_scatter(partial, "cells", scatter_dimension=0, tiled=True)
                return h_max * inv_eps + jnp.log(total)

            *out, error = _iterate(
                row_lse, col_lse, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b
            )
            return (*out, lax.psum(error, "cells"))

        fn = sharded(
            self.devices,
            ("kernel_steps", precision),
            local,
            (_R, _R, _R, _R, _R, _R, _R, _R, _W, _W, _W, _W),
            (_R, _R, _R, _R, _W),
        )
        return fn(
            kernel.K,
            kernel.row_min,
            self.a,
            self.b,
            *state,
            self.devices.scalar(n_steps, np.int32),
            s["eps"],
            s["tau_a"],
            s["tau_b"],
        )


class ShardedCorrection(_Correction):
    """The cluster-level correction of :class:`~._correction._Correction` on
    :class:`ShardedPasses`: each device sums the plan mass of its query cells per cluster
    pair, and the devices' log masses are combined with :func:`~._shard.combine_lse`."""

    def _place(self, codes, dtype):
        devices = self.passes.devices
        self.qj = devices.put_rows(codes[0].astype(np.int32))
        self.rj = devices.put_rows(codes[1].astype(np.int32))
        onehot = np.zeros((len(codes[1]), codes[3]), dtype=dtype)
        onehot[np.arange(len(codes[1])), codes[1]] = 1.0
        self.segments = devices.put(onehot, pad=True)

    def _to_host(self, value):
        return self.passes.devices.to_host(value)

    def _row_c(self, g, kernel):
        if kernel is not None:
            return self.passes.kernel_row_lse(kernel, g, self.segments)
        return self.passes.row_lse(g, self.segments)

    def _problem(self, row_c, f, g):
        kq, kr = self.n_query_clusters, self.n_ref_clusters

        def local(*args):
            sums = cluster_problem(*args, n_query_clusters=kq, n_ref_clusters=kr)
            return tuple(combine_lse(v) for v in sums)

        fn = sharded(
            self.passes.devices,
            ("cluster_problem", kq, kr),
            local,
            (_R, _R, _R, _R, _R, _R, _R, _W, _W, _W),
            (_W, _W, _W),
        )
        return fn(*self._problem_args(row_c, f, g))

    def _shift(self, f, g, row_c, x_shift, y_shift):
        devices = self.passes.devices

        fn = sharded(
            devices,
            ("cluster_shift",),
            shift_potentials,
            (_R, _R, _R, _W, _W, _R, _R, _W),
            (_R, _R, _R),
        )
        return fn(
            f,
            g,
            row_c,
            devices.put(x_shift.astype(self.dtype)),
            devices.put(y_shift.astype(self.dtype)),
            self.qj,
            self.rj,
            self.passes.s["eps"],
        )
