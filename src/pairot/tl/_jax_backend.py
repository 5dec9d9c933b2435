"""Blocked log-domain Sinkhorn and one-pass plan aggregation in JAX.

Every JAX-specific line of pairot lives in this module, so that a JAX version change touches
one file. Only stable public JAX API is used (``jax.numpy``, ``jax.lax``, ``jax.jit``).

The transport cost between query cell ``i`` and reference cell ``j`` is affine in the inner
product of their augmented vectors::

    C_ij = offset + x_aug[i] . y_aug[j]

and is never stored in full: it is computed in row blocks of ``batch_size`` cells, one matrix
product per block. Every reduction runs along the rows of a block (reductions down columns are
several times slower on CPU): the query potential ``f`` is computed from row blocks of ``C``
(query blocks against all reference cells), the reference potential ``g`` from row blocks of
``C^T`` (reference blocks against all query cells).

**Kernel mode.** When the ``n x m`` kernel fits a memory budget (``kernel_memory_budget``) and
the cost spread within a row is small enough for ``exp(-C / epsilon)`` not to underflow, the
row-stabilized kernel ``K_ij = exp((r_i - C_ij) / epsilon)`` (``r_i = min_j C_ij``) is computed
once, in the same row blocks, and every iteration becomes two matrix-vector products
(``K v`` and ``u K``, both read along the rows of ``K``) plus ``O(n + m)`` exponentials, with
the potentials kept in the log domain (max-shifted scalings). On a CPU this removes the
``n m d`` inner products and the ``2 n m`` exponentials from every iteration. The plan
aggregation reuses the same kernel when it is given one.

Conventions (those of OTT-JAX):

- the plan is ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``, ``epsilon`` absolute (cost units);
- the entropic term is ``epsilon * sum_ij P_ij (log P_ij - 1)``, i.e. POT's
  ``reg_type="entropy"`` (a reference measure of ones, not ``a b^T``);
- a relaxed marginal is penalized by ``rho * KL(P 1 | a)``, given through
  ``tau = rho / (rho + epsilon)``; ``tau = 1`` is the hard (balanced) constraint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm.auto import tqdm

from .._interrupt import check as check_interrupt
from .._logging import ProgressLines
from ._aggregate import cluster_sums
from ._cluster_scaling import cluster_scaling

logger = logging.getLogger("pairot")

#: Default largest kernel (``n * m * itemsize`` bytes) that :func:`sinkhorn` precomputes: 4 GiB.
DEFAULT_KERNEL_MEMORY_BUDGET = 4 * 1024**3

_PRECISIONS = {
    "highest": lax.Precision.HIGHEST,
    "high": lax.Precision.HIGH,
    "default": lax.Precision.DEFAULT,
}
_PRESETS = getattr(lax, "DotAlgorithmPreset", None)
if _PRESETS is not None and hasattr(_PRESETS, "BF16_BF16_F32_X3"):
    # float32 products from three bfloat16 products (tensor cores), float32 accumulation
    _PRECISIONS["bf16_3x"] = _PRESETS.BF16_BF16_F32_X3


@dataclass
class SinkhornOutput:
    """Result of :func:`sinkhorn`.

    Attributes
    ----------
    f
        Query potential, shape ``(n,)``.
    g
        Reference potential, shape ``(m,)``.
    errors
        Marginal error at every check (one check every ``inner_iterations`` iterations, and
        one after the last iteration), 1-D.
    n_iterations
        Number of Sinkhorn iterations run (one iteration = an ``f`` then a ``g`` update).
    converged
        Whether the last error is below the threshold.
    mode
        ``"kernel"`` when the iterations ran on a precomputed kernel, ``"log"`` when they ran
        on the blocked log-domain updates (also after a fall-back from kernel mode).
    kernel
        The precomputed :class:`Kernel` in kernel mode (reusable by :func:`aggregate`), else
        ``None``. It holds ``n x m`` values: drop the reference to free that memory.
    n_corrections
        Number of cluster-level corrections applied (see ``query_codes`` of :func:`sinkhorn`).
    """

    f: np.ndarray
    g: np.ndarray
    errors: np.ndarray
    n_iterations: int
    converged: bool
    mode: str = "log"
    kernel: Kernel | None = field(default=None, repr=False, compare=False)
    n_corrections: int = 0


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
    """

    K: jax.Array
    row_min: jax.Array
    epsilon: float
    offset: float
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return tuple(self.K.shape)


# --------------------------------------------------------------------------- helpers
@contextmanager
def _dtype_context(dtype: np.dtype) -> Iterator[None]:
    """Enable 64-bit JAX types for the duration of a float64 computation only."""
    if dtype != np.float64:
        yield
        return
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is not None:  # jax >= 0.6: public context manager / config state
        with enable_x64(True):
            yield
        return
    from jax.experimental import enable_x64 as experimental_enable_x64  # pragma: no cover

    with experimental_enable_x64():  # pragma: no cover
        yield


def _check_dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out not in (np.dtype(np.float32), np.dtype(np.float64)):
        msg = f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}; pass dtype=np.float32."
        raise ValueError(msg)
    return out


def _check_points(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        msg = (
            f"{name} must be a non-empty 2-D array (cells x features), got shape {arr.shape}; "
            "pass one augmented feature vector per row."
        )
        raise ValueError(msg)
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        msg = f"{name} must contain finite numbers only; remove or impute NaN/inf values."
        raise ValueError(msg)
    return arr


def _check_scalar(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    hint: str = "",
) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    ok = math.isfinite(out)
    if ok and low is not None:
        ok = out > low if low_open else out >= low
    if ok and high is not None:
        ok = out <= high
    if not ok:
        lo = "" if low is None else ("> " if low_open else ">= ") + f"{low}"
        hi = "" if high is None else f"<= {high}"
        rng = " and ".join(s for s in (lo, hi) if s) or "finite"
        msg = f"{name} must be a finite number {rng}, got {value!r}{hint}."
        raise ValueError(msg)
    return out


def _check_int(value, name: str, *, low: int = 1, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        msg = f"{name} must be an integer >= {low}, got {value!r}{hint}."
        raise ValueError(msg)
    return int(value)


def _check_vector(v, length: int, name: str, what: str) -> np.ndarray:
    arr = np.asarray(v)
    if arr.shape != (length,):
        msg = f"{name} must have shape ({length},) (one value per {what}), got shape {arr.shape}."
        raise ValueError(msg)
    if not np.issubdtype(arr.dtype, np.number):
        msg = f"{name} must be numeric, got dtype {arr.dtype}."
        raise ValueError(msg)
    return arr


def _check_marginal(v, length: int, name: str, what: str) -> np.ndarray:
    arr = _check_vector(v, length, name, what).astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        msg = (
            f"{name} must be finite and non-negative with a positive sum, got min {arr.min()!r} "
            f"and sum {arr.sum()!r}; pass a probability vector over the {what}s."
        )
        raise ValueError(msg)
    return arr


def _check_codes(codes, length: int, n_clusters: int | None, name: str, what: str) -> np.ndarray:
    """Integer cluster codes in ``[0, n_clusters)`` (``[0, length)`` if ``n_clusters`` is None)."""
    arr = _check_vector(codes, length, name, what)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            msg = f"{name} must hold integer cluster codes, got dtype {arr.dtype}."
            raise ValueError(msg)
    arr = arr.astype(np.int64)
    bound = length if n_clusters is None else n_clusters
    if arr.size and (arr.min() < 0 or arr.max() >= bound):
        fix = (
            "number the clusters 0, 1, ... (at most one code per cell)"
            if n_clusters is None
            else "pass codes 0..n_clusters-1 or raise n_clusters"
        )
        given = "" if n_clusters is None else " (the number of clusters given)"
        msg = (
            f"{name} must lie in [0, {bound}){given}, got values in "
            f"[{arr.min()}, {arr.max()}]; {fix}."
        )
        raise ValueError(msg)
    return arr


def _check_common(x_aug, y_aug, offset, epsilon, batch_size, dtype, precision):
    x = _check_points(x_aug, "x_aug")
    y = _check_points(y_aug, "y_aug")
    if x.shape[1] != y.shape[1]:
        msg = (
            f"x_aug and y_aug must have the same number of columns, got {x.shape[1]} and "
            f"{y.shape[1]}; build both augmented vectors from the same features and labels."
        )
        raise ValueError(msg)
    offset = _check_scalar(offset, "offset")
    epsilon = _check_scalar(epsilon, "epsilon", low=0.0, hint="; pass e.g. epsilon=0.05")
    batch_size = _check_int(batch_size, "batch_size", hint="; pass e.g. batch_size=1024")
    dtype = _check_dtype(dtype)
    if precision not in _PRECISIONS:
        msg = f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}."
        raise ValueError(msg)
    if precision == "bf16_3x" and dtype != np.float32:
        msg = "precision='bf16_3x' needs dtype=np.float32; pass precision='highest' for float64."
        raise ValueError(msg)
    return x, y, offset, epsilon, batch_size, dtype, _PRECISIONS[precision]


def _onehot(codes: np.ndarray, n_clusters: int, dtype) -> jax.Array:
    """``(len(codes), n_clusters)`` one-hot matrix of the cluster codes, on the device."""
    out = np.zeros((len(codes), n_clusters), dtype=dtype)
    out[np.arange(len(codes)), codes] = 1.0
    return jnp.asarray(out)


# --------------------------------------------------------------------------- kernels
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
    """``||P 1 - a exp(-f / rho_a)||_1 + ||P^T 1 - b exp(-g / rho_b)||_1``, see :func:`sinkhorn`."""
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


# ------------------------------------------------------------ chunked (interruptible) passes
#: A log-domain pass over more than this many cell pairs is split into device calls of about
#: this many pairs each to start with, so that interrupts are honoured and progress shown
#: between them (about 0.6 s a call on a 2-core CPU); the rows per call then adapt so that a
#: call takes about :data:`_CHUNK_SECONDS`.
_CHUNK_PAIRS = 2**27
_CHUNK_SECONDS = 1.0


@partial(jax.jit, static_argnames=("rows", "block", "precision"))
def _lse_rows(out, u, v, h, offset, inv_eps, start, segments=None, *, rows, block, precision):
    """:func:`_blocked_lse` of the ``rows`` rows of ``u`` from ``start`` (shifted to fit), into
    ``out`` (rows before ``start`` in a shifted last chunk get the same values again)."""
    s = jnp.minimum(start, u.shape[0] - rows)
    ub = lax.dynamic_slice_in_dim(u, s, rows, axis=0)
    lse = _blocked_lse(ub, v, h, offset, inv_eps, block, precision, segments)
    return lax.dynamic_update_slice_in_dim(out, lse, s, axis=0)


@partial(jax.jit, static_argnames=("rows", "block", "precision"), donate_argnums=(0, 1))
def _kernel_rows(kernel, row_min, spread, x, y, offset, eps, start, *, rows, block, precision):
    """Rows ``start .. start + rows`` of :func:`_build_kernel`'s outputs, written in place
    (``spread``, a scalar, is not donated: :class:`_RowChunks` waits on it)."""
    s = jnp.minimum(start, x.shape[0] - rows)
    xb = lax.dynamic_slice_in_dim(x, s, rows, axis=0)
    kb, rb, sb = _build_kernel(xb, y, offset, eps, block=block, precision=precision)
    kernel = lax.dynamic_update_slice_in_dim(kernel, kb, s, axis=0)
    row_min = lax.dynamic_update_slice_in_dim(row_min, rb, s, axis=0)
    return kernel, row_min, jnp.maximum(spread, sb)


class _RowChunks:
    """Runs one pass over the rows of a cost as several device calls, checking for interrupts
    and reporting progress between calls.

    The first call covers about :data:`_CHUNK_PAIRS` cell pairs (``rows * width``); the number
    of rows then doubles or halves (a multiple of ``block``, at most ``n``) until a call takes
    about :data:`_CHUNK_SECONDS`. The last chunk of a pass covers the remaining rows rounded up
    to whole blocks (its own compiled size, the same at every pass). The first call of every
    size compiles, and is not used to adapt.
    """

    def __init__(self, n: int, block: int, width: int):
        self.n = n
        self.block = block
        rows = block
        while rows * 2 * width <= _CHUNK_PAIRS and rows * 2 <= n:
            rows *= 2
        self.rows = min(rows, n)
        self._compiled: set[int] = set()

    def run(self, launch: Callable, out, report: Callable[[int], None] | None = None):
        """``out = launch(out, start, rows)`` over the chunks; ``report(rows_done)`` after each.

        Each chunk is dispatched before waiting for the one still running, so that the device
        does not idle while Python reports and checks for an interrupt: after a request at
        most that one queued chunk still runs.
        """
        running = None  # (out, end, rows) of the chunk on the device
        clock = time.perf_counter()
        for start, rows in self._plan():
            out = launch(out, start, rows)
            if running is not None:
                clock = self._finish(running, clock, report)
            running = (out, start + rows, rows)
        self._finish(running, clock, report)
        return out

    def _plan(self) -> list[tuple[int, int]]:
        """``(start, rows)`` of every chunk; the last covers the rest in whole blocks."""
        plan, done = [], 0
        while done < self.n:
            rows = self.rows
            if self.n - done < rows:
                rows = min(-(-(self.n - done) // self.block) * self.block, self.n)
            plan.append((done, rows))
            done = min(done + rows, self.n)
        return plan

    def _finish(self, chunk, clock: float, report) -> float:
        """Wait for ``chunk``, adapt the chunk size to its time, report, check; the time."""
        out, end, rows = chunk
        # the last output: the next chunk may already have taken the others as donations
        jax.block_until_ready(jax.tree_util.tree_leaves(out)[-1])
        now = time.perf_counter()
        if rows in self._compiled and rows == self.rows:
            self._adapt(rows, now - clock)  # it ran from the previous chunk's end to now
        self._compiled.add(rows)
        if report is not None:
            report(min(end, self.n))
        check_interrupt()
        return now

    def _adapt(self, rows: int, seconds: float) -> None:
        if seconds < _CHUNK_SECONDS / 3 and rows < self.n:
            self.rows = min(rows * 2, self.n)
        elif seconds > 2 * _CHUNK_SECONDS and rows // 2 >= self.block:
            self.rows = rows // 2


def _chunked(n: int, m: int) -> bool:
    """Whether a log-domain pass over ``n x m`` pairs is split into several device calls."""
    return n * m > _CHUNK_PAIRS


class _ConvergenceBar:
    """Sinkhorn progress as convergence: the marginal error against the threshold.

    The bar fills with ``log(e0 / error) / log(e0 / threshold)`` (``e0`` the first error
    measured), so its estimate of the remaining time follows the convergence, not the
    iteration cap. Between checks of a long solve it shows the rows done of the current pass;
    at most every 30 s a line goes to the ``pairot.progress`` logger.
    """

    def __init__(self, threshold: float, enabled: bool, what: str):
        self.threshold = threshold
        self.first = None
        self.error = None
        self.iteration = 0
        self.what = what
        self.lines = ProgressLines()
        self.bar = tqdm(
            total=100,
            desc="Sinkhorn",
            disable=not enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]",
        )
        self._postfix(f"{what}, starting")
        self.lines(
            "Sinkhorn: %s; stops once the marginal error is below %.0e.",
            what,
            threshold,
            force=True,
        )

    def _postfix(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def _status(self) -> str:
        error = "not measured yet" if self.error is None else f"{self.error:.2e}"
        return f"iteration {self.iteration}, error {error} (target {self.threshold:.0e})"

    def update(self, iteration: int, error: float | None = None) -> None:
        self.iteration = iteration
        if error is not None and math.isfinite(error):
            self.error = error
            if self.first is None:
                self.first = max(error, self.threshold * 1.0001)
            span = math.log(self.first / self.threshold)
            done = math.log(self.first / max(error, 1e-300)) / span
            self.bar.n = round(100 * min(max(done, 0.0), 1.0), 1)
        self._postfix(self._status())
        self.lines("Sinkhorn: %s.", self._status())

    def rows(self, label: str, done: int, total: int) -> None:
        self._postfix(f"{self._status()}; {label}: {done:,}/{total:,} rows")
        self.lines(
            "Sinkhorn: %s; %s: %s/%s rows.", self._status(), label, f"{done:,}", f"{total:,}"
        )

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------ kernel mode
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
    :func:`_blocked_lse`), so that besides ``K`` only one ``block x m`` cost block is held.
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


def _kernel_row_lse(kernel, row_min, g, inv_eps, precision, segments=None):
    """``LSE_j((g_j - C_ij) / eps)`` from the kernel.

    Equal to ``(g_max - r_i) / eps + log sum_j K_ij exp((g_j - g_max) / eps)``. With
    ``segments`` (see :func:`_blocked_lse`) one value per row and cluster of ``g``'s cells.
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
    """:func:`_initial_row_lse` from the kernel."""
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


# ------------------------------------------------------- cluster-level correction
#: Iterations before the first cluster-level correction (later ones follow unconverged checks).
_EARLY_CORRECTION = 2
#: Largest ``Kq + Kr`` for the cluster-level correction: its Newton steps diagonalize a
#: ``(Kq + Kr)``-square matrix (measured here: about 0.09 s per correction at 100 + 100
#: clusters, 2.3 s at 400 + 400), which beyond this would outweigh the iterations it saves
#: on problems of moderate size.
_MAX_CORRECTION_CLUSTERS = 1000


def _segment_lse(z, codes, n_segments: int):
    """``out[k, s] = LSE_{i : codes_i = k} z[i, s]`` for a ``(n, S)`` array (``-inf`` if empty)."""
    zmax = jax.ops.segment_max(z, codes, num_segments=n_segments)
    zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
    total = jax.ops.segment_sum(jnp.exp(z - zmax[codes]), codes, num_segments=n_segments)
    return zmax + jnp.log(total)


@partial(jax.jit, static_argnames=("n_query_clusters", "n_ref_clusters"))
def _cluster_problem(
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
    """Inputs of :func:`~pairot.tl._cluster_scaling.cluster_scaling` for the plan of ``(f, g)``.

    ``row_lse_c[i, c] = LSE_{j in c}((g_j - C_ij) / eps)``. Returns the log plan mass per
    cluster pair and the log targets ``log sum_{i in k} a_i exp(-f_i / rho_a)`` (and ``b``).
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


@jax.jit
def _shift_potentials(f, g, row_lse_c, x, y, query_codes, ref_codes, eps):
    """Add ``eps x[k_i]`` to ``f`` and ``eps y[c_j]`` to ``g``; ``LSE_j((g_j - C_ij) / eps)`` after.

    Shifting ``g`` by a constant per reference cluster shifts each per-cluster log-sum-exp of a
    row by that constant, so the row log-sum-exp of the new ``g`` needs no pass over the cost.
    """
    lse_row = jax.nn.logsumexp(row_lse_c + y[None, :], axis=1)
    return f + eps * x[query_codes], g + eps * y[ref_codes], lse_row


@partial(jax.jit, static_argnames=("block", "n_query_clusters", "precision"))
def _aggregate_block(
    x, y, f, g, query_codes, ref_onehot, k, offset, eps, *, block, n_query_clusters, precision
):
    """Per-cluster sums of the plan over the ``k``-th row block of query cells."""
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
    return tm, cost_mass, row_mass, start


#: Rows of the kernel per step of the kernel-mode aggregation: small enough for the
#: ``rows x m`` temporaries to stay in cache and be reused across steps.
_KERNEL_AGGREGATE_ROWS = 256


@partial(jax.jit, static_argnames=("block", "n_query_clusters", "precision"))
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
):
    """Per-cluster sums of the plan ``P_ij = row_scale_i K_ij col_scale_j``, in one call.

    The kernel is read once, in row blocks of ``block`` rows; the cost is recovered from it as
    ``C_ij = r_i - eps log K_ij`` (one logarithm per entry instead of an inner product of
    length ``d``).
    """
    n, m = kernel.shape
    n_blocks = -(-n // block)
    clusters = jnp.arange(n_query_clusters)

    def body(k, acc):
        tm, cost_tm = acc
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
        return tm, cost_tm

    zeros = jnp.zeros((n_query_clusters, m), dtype=kernel.dtype)
    tm, cost_tm = lax.fori_loop(0, n_blocks, body, (zeros, zeros))
    tm = tm * col_scale[None, :]
    cost_mass = jnp.matmul(cost_tm * col_scale[None, :], ref_onehot, precision=precision)
    row_mass = row_scale * jnp.matmul(kernel, col_scale, precision=precision)
    return tm, cost_mass, row_mass


# --------------------------------------------------------------------------- public API
def sinkhorn(
    x_aug,
    y_aug,
    offset: float,
    a,
    b,
    *,
    epsilon: float,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    batch_size: int = 1024,
    threshold: float = 1e-3,
    max_iterations: int = 2000,
    inner_iterations: int = 10,
    progress: bool = True,
    dtype=np.float32,
    precision: str = "highest",
    kernel_memory_budget: int = DEFAULT_KERNEL_MEMORY_BUDGET,
    query_codes=None,
    ref_codes=None,
    cluster_correction: bool = True,
) -> SinkhornOutput:
    """Log-domain Sinkhorn on the cost ``C_ij = offset + x_aug[i] . y_aug[j]``.

    Starting from ``f = g = 0``, each iteration updates ``f`` then ``g``::

        f_i = tau_a * (epsilon log a_i - epsilon LSE_j((g_j - C_ij) / epsilon))
        g_j = tau_b * (epsilon log b_j - epsilon LSE_i((f_i - C_ij) / epsilon))

    so that the plan is ``P_ij = exp((f_i + g_j - C_ij) / epsilon)`` (OTT-JAX conventions).
    ``tau = rho / (rho + epsilon)`` relaxes a marginal with the penalty
    ``rho * KL(P 1 | a)``; the problem solved is
    ``min_P <C, P> + epsilon sum P (log P - 1) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)``
    (POT's ``sinkhorn_unbalanced(..., reg_type="entropy")``; for ``tau = 1`` the marginal is
    enforced exactly).

    **Marginal error.** Every ``inner_iterations`` iterations (and after the last one) the
    error of the current ``(f, g)`` is::

        ||P 1 - a * exp(-f / rho_a)||_1 + ||P^T 1 - b * exp(-g / rho_b)||_1

    with ``exp(-f / rho) = 1`` for ``tau = 1`` (the balanced ``||P 1 - a||_1 + ||P^T 1 - b||_1``).
    These are the optimality conditions of the relaxed problem. Since the last update of an
    iteration is the ``g`` update, the second term is zero up to round-off and the error
    measures the query marginal. The row and column log-sum-exps of the updates are reused, so
    checking costs no extra pass over the cost.

    **Two evaluation modes, same iterates.** If the kernel (``n * m`` floats of ``dtype``) fits
    ``kernel_memory_budget`` and ``max_i (max_j C_ij - min_j C_ij) / epsilon`` is below about 60
    in float32 (680 in float64) so that no kernel entry underflows, ``K_ij = exp((min_j' C_ij' -
    C_ij) / epsilon)`` is computed once in row blocks and every log-sum-exp above becomes a
    kernel-vector product (``mode="kernel"``): the same updates, equal to the log-domain ones up
    to float round-off. Otherwise, and when ``kernel_memory_budget=0``, the cost is recomputed
    in row blocks of ``batch_size`` at every update (``mode="log"``). Should a kernel-mode
    check ever give a non-finite error, those iterations are redone in the log domain from the
    last checked potentials.

    Parameters
    ----------
    x_aug
        Query cells' augmented vectors, shape ``(n, d)``.
    y_aug
        Reference cells' augmented vectors, shape ``(m, d)``.
    offset
        Constant added to every inner product to give the cost.
    a
        Query marginal, shape ``(n,)``, non-negative.
    b
        Reference marginal, shape ``(m,)``, non-negative; with ``tau_a = tau_b = 1`` it must
        carry the same total mass as ``a``.
    epsilon
        Entropic regularization, absolute (in cost units), > 0.
    tau_a, tau_b
        Marginal relaxations in ``(0, 1]``; 1 enforces the marginal exactly.
    batch_size
        Rows of the cost computed at once (memory ``batch_size * max(n, m)`` floats besides
        the ``O((n + m) d)`` inputs in log mode, and ``(n + m) Kr`` more with the cluster
        correction); does not change the result beyond float round-off.
    threshold
        Stop once the marginal error is below this value.
    max_iterations
        Maximum number of iterations.
    inner_iterations
        Iterations between two error checks.
    progress
        Show a tqdm progress bar (on stderr) with the current error.
    dtype
        ``numpy.float32`` (default) or ``numpy.float64`` for the computation.
    precision
        Matrix-product precision, ``"highest"`` (full float32 on GPUs, the default),
        ``"high"`` or ``"default"`` (TF32 on recent NVIDIA GPUs: faster, ~1e-3 relative cost
        error), or ``"bf16_3x"`` (float32 only, where JAX has ``lax.DotAlgorithmPreset``: each
        product from three bfloat16 tensor-core products with float32 accumulation, close to
        float32 accuracy; not yet measured on a GPU here). No effect on CPU.
    kernel_memory_budget
        Largest kernel, in bytes (``n * m * itemsize``), that may be precomputed for kernel
        mode; default :data:`DEFAULT_KERNEL_MEMORY_BUDGET` (4 GiB). ``0`` always uses the
        blocked log-domain updates, whose memory ``batch_size`` bounds.
    query_codes, ref_codes
        Optional cluster code (``0, 1, ...``) of every query / reference cell. Given both, and
        with ``cluster_correction``, the second iteration (if its error is above
        ``threshold``) and every check that finds the error above ``threshold`` are
        followed by a cluster-level correction: the potentials are shifted by one constant
        per cluster so that the plan mass of every query and reference cluster meets its
        target exactly (:func:`~pairot.tl._cluster_scaling.cluster_scaling`, a dual ascent
        step solved by Newton's method on ``Kq + Kr`` unknowns). It costs one pass over the
        cost that keeps one log-sum-exp per reference cluster (in kernel mode one
        kernel-matrix product with ``Kr`` columns) and removes the slow mode of Sinkhorn on
        annotation-informed costs, where mass must move between clusters linked only by
        ``exp(-lambda_label / epsilon)``-small kernel entries. The fixed point and the
        stopping rule are unchanged. Skipped (with an INFO log) above 1,000 clusters in all,
        where its Newton steps get expensive.
    cluster_correction
        Apply the cluster-level correction when codes are given (default ``True``).

    Returns
    -------
    SinkhornOutput
        Potentials ``f`` and ``g`` (numpy, ``dtype``), the error of every check, the number of
        iterations, whether the error fell below ``threshold``, the mode and, in kernel mode,
        the kernel (for :func:`aggregate`). A warning is logged to the ``"pairot"`` logger when
        it did not converge.
    """
    x, y, offset, epsilon, batch_size, dtype, prec = _check_common(
        x_aug, y_aug, offset, epsilon, batch_size, dtype, precision
    )
    n, m = x.shape[0], y.shape[0]
    a = _check_marginal(a, n, "a", "query cell")
    b = _check_marginal(b, m, "b", "reference cell")
    tau_hint = "; tau = rho / (rho + epsilon), 1 for a hard marginal constraint"
    tau_a = _check_scalar(tau_a, "tau_a", low=0.0, high=1.0, hint=tau_hint)
    tau_b = _check_scalar(tau_b, "tau_b", low=0.0, high=1.0, hint=tau_hint)
    threshold = _check_scalar(threshold, "threshold", low=0.0, hint="; pass e.g. 1e-3")
    max_iterations = _check_int(max_iterations, "max_iterations", hint="; pass e.g. 2000")
    inner_iterations = _check_int(inner_iterations, "inner_iterations", hint="; pass e.g. 10")
    kernel_memory_budget = _check_int(
        kernel_memory_budget,
        "kernel_memory_budget",
        low=0,
        hint="; pass a number of bytes, 0 to disable",
    )
    codes = None
    if cluster_correction and query_codes is not None and ref_codes is not None:
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
            codes = None
    if tau_a == 1.0 and tau_b == 1.0:
        sa, sb = a.sum(), b.sum()
        if abs(sa - sb) > 1e-5 * max(sa, sb):
            msg = (
                f"a and b must carry the same total mass for balanced OT (tau_a = tau_b = 1), got "
                f"sum(a) = {sa!r} and sum(b) = {sb!r}; normalize both to sum 1, or relax a "
                "marginal with tau_a < 1 or tau_b < 1."
            )
            raise ValueError(msg)

    block_x, block_y = min(batch_size, n), min(batch_size, m)
    kernel_bytes = n * m * dtype.itemsize
    with _dtype_context(dtype):
        xj = jnp.asarray(x.astype(dtype, copy=False))
        yj = jnp.asarray(y.astype(dtype, copy=False))
        aj = jnp.asarray(a.astype(dtype))
        bj = jnp.asarray(b.astype(dtype))
        scalars = {
            name: jnp.asarray(np.asarray(value, dtype=dtype))
            for name, value in (
                ("offset", offset),
                ("eps", epsilon),
                ("tau_a", tau_a),
                ("tau_b", tau_b),
            )
        }
        bar = _ConvergenceBar(threshold, progress, f"{n:,} x {m:,} cells")
        try:
            passes = _LogPasses(xj, yj, aj, bj, scalars, block_x, block_y, prec, bar)
            kernel = None
            if 0 < kernel_bytes <= kernel_memory_budget:
                kernel = _make_kernel(passes, offset, epsilon, dtype)
            else:
                logger.debug(
                    "Sinkhorn: log-domain updates (kernel of %d bytes > kernel_memory_budget=%d).",
                    kernel_bytes,
                    kernel_memory_budget,
                )
            correct = None
            if codes is not None:
                correct = _Correction(passes, codes, tau_a, tau_b, 1e-2 * threshold, dtype)
            result = _run_iterations(
                passes,
                kernel,
                correct,
                threshold=threshold,
                max_iterations=max_iterations,
                inner_iterations=inner_iterations,
            )
        finally:
            bar.close()
    errors = result["errors"]
    done = result["n_iterations"]
    kernel = result["kernel"]
    if not result["converged"]:
        logger.warning(
            "Sinkhorn did not converge: marginal error %.3e (threshold %.1e) after %d "
            "iterations (epsilon=%g, tau_a=%g, tau_b=%g); raise max_iterations or epsilon, or "
            "loosen threshold.",
            errors[-1],
            threshold,
            done,
            epsilon,
            tau_a,
            tau_b,
        )
    else:
        logger.info(
            "Sinkhorn converged: marginal error %.3e after %d iterations (%s mode, %d "
            "cluster-level corrections).",
            errors[-1],
            done,
            "log" if kernel is None else "kernel",
            result["n_corrections"],
        )
    return SinkhornOutput(
        f=result["f"],
        g=result["g"],
        errors=np.asarray(errors, dtype=np.float64),
        n_iterations=done,
        converged=result["converged"],
        mode="log" if kernel is None else "kernel",
        kernel=kernel,
        n_corrections=result["n_corrections"],
    )


class _LogPasses:
    """The passes of a Sinkhorn solve over the blocked cost ``C = offset + x . y``.

    A pass over at most :data:`_CHUNK_PAIRS` cell pairs is one device call; a larger one runs
    in interruptible row chunks (:class:`_RowChunks`) reporting to the progress bar. Both give
    the same values up to float round-off.
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
        f, g, lse_row, lse_col = state
        for k in range(n_steps):
            f = s["tau_a"] * s["eps"] * (self.log_a - lse_row)
            lse_col = self.col_lse(f)
            g = s["tau_b"] * s["eps"] * (self.log_b - lse_col)
            lse_row = self.row_lse(g)
            self.bar.update(first_iteration + k + 1)
        error = _marginal_error_jit(
            self.a, self.b, f, g, lse_row, lse_col, s["eps"], s["tau_a"], s["tau_b"]
        )
        return f, g, lse_row, lse_col, error


_marginal_error_jit = jax.jit(_marginal_error)


def _kernel_steps_call(kernel: Kernel, passes: _LogPasses, state, n_steps: int):
    s = passes.s
    return _kernel_steps(
        kernel.K,
        kernel.row_min,
        passes.a,
        passes.b,
        *state,
        jnp.asarray(np.int32(n_steps)),
        s["eps"],
        s["tau_a"],
        s["tau_b"],
        precision=passes.precision,
    )


class _Correction:
    """The cluster-level correction of :func:`sinkhorn` (see its ``query_codes``)."""

    def __init__(self, passes: _LogPasses, codes, tau_a, tau_b, tol, dtype):
        self.passes = passes
        self.qj, self.rj = (jnp.asarray(c.astype(np.int32)) for c in codes[:2])
        self.segments = _onehot(codes[1], codes[3], dtype)
        self.n_query_clusters, self.n_ref_clusters = codes[2], codes[3]
        self.tau_a, self.tau_b, self.tol, self.dtype = tau_a, tau_b, tol, dtype

    def __call__(self, state, kernel: Kernel | None):
        """The corrected ``state``, or ``None`` if the correction changes nothing."""
        passes, s = self.passes, self.passes.s
        f, g = state[0], state[1]
        if kernel is not None:
            row_c = _kernel_initial_row_lse(
                kernel.K, kernel.row_min, g, s["eps"], self.segments, precision=passes.precision
            )
        else:
            row_c = passes.row_lse(g, self.segments)
        log_mass, log_ta, log_tb = (
            np.asarray(v, dtype=np.float64)
            for v in _cluster_problem(
                row_c,
                f,
                g,
                passes.log_a,
                passes.log_b,
                self.qj,
                self.rj,
                s["eps"],
                s["tau_a"],
                s["tau_b"],
                n_query_clusters=self.n_query_clusters,
                n_ref_clusters=self.n_ref_clusters,
            )
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
        new = _shift_potentials(
            f,
            g,
            row_c,
            jnp.asarray(x_shift.astype(self.dtype)),
            jnp.asarray(y_shift.astype(self.dtype)),
            self.qj,
            self.rj,
            s["eps"],
        )
        return (*new, state[3])


def _run_iterations(
    passes: _LogPasses,
    kernel: Kernel | None,
    correct: _Correction | None,
    *,
    threshold: float,
    max_iterations: int,
    inner_iterations: int,
) -> dict:
    """The iteration loop of :func:`sinkhorn`: checks, corrections, progress, interrupts.

    Checks fall on multiples of ``inner_iterations`` (and on the last iteration); the first
    correction comes early, after :data:`_EARLY_CORRECTION` iterations, if the error is still
    above the threshold there (an unrecorded look, not a check). Between two stops the
    iterations run in device calls of about :data:`_CHUNK_SECONDS` each (measured from the
    second call on), with an interrupt check after each.
    """
    s = passes.s
    bar = passes.bar
    g = jnp.zeros(passes.m, dtype=passes.x.dtype)
    f = jnp.zeros(passes.n, dtype=passes.x.dtype)
    if kernel is not None:
        lse_row = _kernel_initial_row_lse(
            kernel.K, kernel.row_min, g, s["eps"], precision=passes.precision
        )
    else:
        lse_row = passes.row_lse(g)
    state = (f, g, lse_row, g)
    errors: list[float] = []
    done = 0
    n_corrections = 0
    converged = False
    early_look = correct is not None and min(inner_iterations, max_iterations) > _EARLY_CORRECTION
    seconds_per_iteration = None
    calls = 0
    while done < max_iterations:
        look = early_look and done < _EARLY_CORRECTION
        stop = (
            _EARLY_CORRECTION
            if look
            else min((done // inner_iterations + 1) * inner_iterations, max_iterations)
        )
        steps = stop - done
        if seconds_per_iteration is None:
            steps = 1  # until one call is timed (the first one compiles)
        else:
            steps = max(1, min(steps, int(_CHUNK_SECONDS / seconds_per_iteration)))
        began = time.perf_counter()
        if kernel is not None:
            *new_state, err = _kernel_steps_call(kernel, passes, state, steps)
        else:
            *new_state, err = passes.steps(state, steps, done)
        err = float(err)
        calls += 1
        if calls > 1 and (kernel is not None or not passes.chunked):  # the first compiles
            seconds_per_iteration = max((time.perf_counter() - began) / steps, 1e-9)
        if kernel is not None and not math.isfinite(err):
            # scalings under- or overflowed: redo these iterations in the log domain
            logger.debug(
                "Sinkhorn: kernel mode gave a non-finite error after %d iterations; going on "
                "with log-domain updates from the last finite potentials.",
                done + steps,
            )
            kernel = None
            seconds_per_iteration, calls = None, 0
            state = (state[0], state[1], passes.row_lse(state[1]), state[3])
            continue
        state = tuple(new_state)
        done += steps
        bar.update(done, err)
        check_interrupt()
        if done < stop:
            continue
        if look:
            early_look = False
        else:  # a check
            errors.append(err)
            if not math.isfinite(err):
                break
            if err < threshold:
                converged = True
                break
        if correct is not None and done < max_iterations and math.isfinite(err):
            if err >= threshold:
                corrected = correct(state, kernel)
                if corrected is not None:
                    state = corrected
                    n_corrections += 1
                check_interrupt()
    return {
        "f": np.asarray(state[0]),
        "g": np.asarray(state[1]),
        "errors": errors,
        "n_iterations": done,
        "converged": converged,
        "kernel": kernel,
        "n_corrections": n_corrections,
    }


def _make_kernel(passes: _LogPasses, offset: float, epsilon: float, dtype) -> Kernel | None:
    """Build the kernel, or return ``None`` when the cost spread would make it underflow.

    Built in one device call, or for more than :data:`_CHUNK_PAIRS` pairs in interruptible
    row chunks written in place.
    """
    xj, yj, s, prec = passes.x, passes.y, passes.s, passes.precision
    if not passes.chunked:
        K, row_min, spread = _build_kernel(
            xj, yj, s["offset"], s["eps"], block=passes.block_x, precision=prec
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
                block=min(passes.block_x, rows),
                precision=prec,
            )

        n, m = passes.n, passes.m
        init = (
            jnp.zeros((n, m), dtype=xj.dtype),
            jnp.zeros(n, dtype=xj.dtype),
            jnp.zeros((), dtype=xj.dtype),
        )
        K, row_min, spread = passes.rows_x.run(
            launch, init, lambda done: passes.bar.rows("kernel", done, n)
        )
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
    return Kernel(K=K, row_min=row_min, epsilon=epsilon, offset=offset, dtype=dtype)


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
) -> dict[str, np.ndarray]:
    """Cluster-level sums of the plan ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``, one pass.

    The plan is walked once in row blocks of ``batch_size`` query cells: per block one matrix
    product gives ``C``, then ``P``, then the per-query-cluster sums through a one-hot
    (clusters x block) product and the per-reference-cluster sums of those through a
    (cells x clusters) one-hot product. Block results are accumulated in float64 on the host.

    Given the ``kernel`` of the :func:`sinkhorn` run, the blocks are read from it instead:
    ``P_ij = exp((f_i - r_i + g_max) / epsilon) K_ij exp((g_j - g_max) / epsilon)`` and
    ``C_ij = r_i - epsilon log K_ij``, with no inner products (``r_i = min_j C_ij``), in one
    device call over row blocks of at most 256 cells whose sums are accumulated in ``dtype``.
    If the row scalings would overflow (potentials far from those of a Sinkhorn run) the
    blocked cost is used.

    Parameters
    ----------
    x_aug, y_aug, offset
        The cost ``C_ij = offset + x_aug[i] . y_aug[j]`` (see :func:`sinkhorn`).
    f, g
        Potentials from :func:`sinkhorn`, shapes ``(n,)`` and ``(m,)``.
    epsilon
        The regularization the potentials were computed with.
    query_codes, ref_codes
        Cluster code of every query cell (``0..n_query_clusters-1``) and reference cell.
    n_query_clusters, n_ref_clusters
        Numbers of clusters ``Kq`` and ``Kr``.
    batch_size
        Query cells per block; does not change the result beyond float round-off.
    dtype
        ``numpy.float32`` (default) or ``numpy.float64`` for the computation.
    progress
        Show a tqdm progress bar over the blocks.
    precision
        Matrix-product precision (see :func:`sinkhorn`).
    kernel
        ``SinkhornOutput.kernel`` of the :func:`sinkhorn` run on the same ``x_aug``,
        ``y_aug``, ``offset``, ``epsilon`` and ``dtype``, or ``None``.

    Returns
    -------
    dict of numpy float64 arrays
        ``tm`` ``(Kq, m)``: ``sum_{i in k} P_ij``; ``mass`` ``(Kq, Kr)``:
        ``sum_{i in k, j in c} P_ij``; ``cost_mass`` ``(Kq, Kr)``: the same of ``P_ij C_ij``;
        ``cost_sum`` ``(Kq, Kr)``: ``sum_{i in k, j in c} C_ij`` (unweighted, computed exactly
        as ``n_k n_c offset + (sum_{i in k} x_i) . (sum_{j in c} y_j)`` in float64);
        ``row_mass`` ``(n,)`` = ``P 1``; ``col_mass`` ``(m,)`` = ``P^T 1``.
    """
    x, y, offset, epsilon, batch_size, dtype, prec = _check_common(
        x_aug, y_aug, offset, epsilon, batch_size, dtype, precision
    )
    n, m = x.shape[0], y.shape[0]
    n_query_clusters = _check_int(n_query_clusters, "n_query_clusters")
    n_ref_clusters = _check_int(n_ref_clusters, "n_ref_clusters")
    f = _check_vector(f, n, "f", "query cell").astype(np.float64)
    g = _check_vector(g, m, "g", "reference cell").astype(np.float64)
    if np.any(np.isnan(f)) or np.any(np.isnan(g)):
        msg = "f and g must not contain NaN; pass the potentials of a successful sinkhorn run."
        raise ValueError(msg)
    qcodes = _check_codes(query_codes, n, n_query_clusters, "query_codes", "query cell")
    rcodes = _check_codes(ref_codes, m, n_ref_clusters, "ref_codes", "reference cell")
    if kernel is not None:
        _check_kernel(kernel, n, m, offset, epsilon, dtype)

    block = min(batch_size, n)
    with _dtype_context(dtype):
        qj = jnp.asarray(qcodes.astype(np.int32))
        ref_onehot = _onehot(rcodes, n_ref_clusters, dtype)
        eps = jnp.asarray(np.asarray(epsilon, dtype=dtype))
        scales = None if kernel is None else _kernel_scales(kernel, f, g, epsilon, dtype)
        if scales is not None:
            tm, cost_mass, row_mass = _aggregate_kernel_chunks(
                kernel,
                *scales,
                qj,
                ref_onehot,
                eps,
                block=min(block, _KERNEL_AGGREGATE_ROWS),
                n_query_clusters=n_query_clusters,
                precision=prec,
                progress=progress,
            )
        else:
            tm, cost_mass, row_mass = _aggregate_blocked(
                x,
                y,
                offset,
                f,
                g,
                qj,
                ref_onehot,
                eps,
                block,
                n_query_clusters,
                dtype,
                prec,
                progress,
            )

    mass = cluster_sums(tm, rcodes, n_ref_clusters)
    col_mass = tm.sum(axis=0)
    cost_sum = _cost_sums(x, y, offset, qcodes, rcodes, n_query_clusters, n_ref_clusters)
    return {
        "tm": tm,
        "mass": mass,
        "cost_mass": cost_mass,
        "cost_sum": cost_sum,
        "row_mass": row_mass,
        "col_mass": col_mass,
    }


def _aggregate_kernel_chunks(
    kernel,
    row_scale,
    col_scale,
    qj,
    ref_onehot,
    eps,
    *,
    block,
    n_query_clusters,
    precision,
    progress,
):
    """:func:`_aggregate_kernel` over the whole kernel: one device call, or above
    :data:`_CHUNK_PAIRS` entries one call per chunk of rows (interruptible between chunks,
    sums accumulated in float64 on the host)."""
    n, m = kernel.shape
    rows = n
    if _chunked(n, m):
        rows = max(block, (_CHUNK_PAIRS // m) // block * block)
    tm = np.zeros((n_query_clusters, m), dtype=np.float64)
    cost_mass = np.zeros((n_query_clusters, ref_onehot.shape[1]), dtype=np.float64)
    row_mass = np.zeros(n, dtype=np.float64)
    with tqdm(total=n, desc="Aggregating plan", disable=not progress, leave=False) as bar:
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            whole = start == 0 and stop == n
            part = slice(start, stop)
            sums = _aggregate_kernel(
                kernel.K if whole else kernel.K[part],
                kernel.row_min if whole else kernel.row_min[part],
                row_scale if whole else row_scale[part],
                col_scale,
                qj if whole else qj[part],
                ref_onehot,
                eps,
                block=min(block, stop - start),
                n_query_clusters=n_query_clusters,
                precision=precision,
            )
            tm_c, cost_c, rows_c = (np.asarray(v, dtype=np.float64) for v in sums)
            tm += tm_c
            cost_mass += cost_c
            row_mass[part] = rows_c
            bar.update(stop - start)
            check_interrupt()
    return tm, cost_mass, row_mass


def _aggregate_blocked(
    x, y, offset, f, g, qj, ref_onehot, eps, block, n_query_clusters, dtype, prec, progress
):
    """Blocked pass of :func:`aggregate` from the cost; float64 sums accumulated on the host."""
    n, m = x.shape[0], y.shape[0]
    n_blocks = -(-n // block)
    tm = np.zeros((n_query_clusters, m), dtype=np.float64)
    cost_mass = np.zeros((n_query_clusters, ref_onehot.shape[1]), dtype=np.float64)
    row_mass = np.zeros(n, dtype=np.float64)
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
            n_query_clusters=n_query_clusters,
            precision=prec,
        )

    pending = launch(0)
    with tqdm(total=n_blocks, desc="Aggregating plan", disable=not progress, leave=False) as bar:
        for k in range(n_blocks):
            # dispatch the next block before reading this one back (asynchronous dispatch)
            following = launch(k + 1) if k + 1 < n_blocks else None
            tm_b, cost_mass_b, row_mass_b, start = pending
            tm += np.asarray(tm_b, dtype=np.float64)
            cost_mass += np.asarray(cost_mass_b, dtype=np.float64)
            first = k * block
            start = int(start)
            row_mass[first : start + block] = np.asarray(row_mass_b)[first - start :]
            pending = following
            bar.update(1)
            check_interrupt()
    return tm, cost_mass, row_mass


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
    """Row and column scalings of the plan on the kernel, or ``None`` if they would overflow."""
    g_max = float(np.max(g))
    row_log_scale = (f - np.asarray(kernel.row_min, dtype=np.float64) + g_max) / epsilon
    limit = math.log(float(np.finfo(dtype).max)) - 2.0
    if not math.isfinite(g_max) or not np.max(row_log_scale) <= limit:
        logger.debug("aggregate: plan scalings would overflow on the kernel; using the cost.")
        return None
    row_scale = np.exp(row_log_scale).astype(dtype)
    col_scale = np.exp((g - g_max) / epsilon).astype(dtype)
    return jnp.asarray(row_scale), jnp.asarray(col_scale)


def _cluster_point_sums(points: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sum of the rows of ``points`` per cluster, in float64 (one-hot matrix product)."""
    onehot = (codes[None, :] == np.arange(n_clusters)[:, None]).astype(np.float64)
    return onehot @ points.astype(np.float64, copy=False)


def _cost_sums(x, y, offset, qcodes, rcodes, n_query_clusters, n_ref_clusters) -> np.ndarray:
    """``sum_{i in k, j in c} C_ij``, exactly, from the cluster sums of the augmented vectors."""
    xs = _cluster_point_sums(x, qcodes, n_query_clusters)
    ys = _cluster_point_sums(y, rcodes, n_ref_clusters)
    nq = np.bincount(qcodes, minlength=n_query_clusters).astype(np.float64)
    nr = np.bincount(rcodes, minlength=n_ref_clusters).astype(np.float64)
    return offset * np.outer(nq, nr) + xs @ ys.T
