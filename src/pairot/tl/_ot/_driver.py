"""The Sinkhorn solver: argument checks, mode choice and the iteration loop.

:func:`sinkhorn` validates its arguments, picks kernel or log mode, and runs
:class:`_Iterations`: device calls of several iterations each, a check of the marginal
error every ``inner_iterations`` iterations, a cluster-level correction after an unconverged
check (and once early), and an interrupt check between any two device calls.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from ..._interrupt import check as check_interrupt
from . import _chunks, _correction, _sparse
from ._blocks import _SOLVE_FACTOR, _capped_blocks, _check_budget
from ._checks import (
    _check_codes,
    _check_common,
    _check_init,
    _check_int,
    _check_marginal,
    _check_scalar,
    _dtype_context,
)
from ._correction import _Correction, _correction_codes
from ._kernel import DEFAULT_KERNEL_MEMORY_BUDGET, Kernel
from ._passes import _LogPasses
from ._progress import _ConvergenceBar
from ._shard import resolve_devices
from ._sharded import ShardedCorrection, ShardedPasses
from ._sparse import DEFAULT_SPARSE_TOLERANCE, ActiveBlocks, SparsePasses

logger = logging.getLogger("pairot")


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
    sparse
        Whether the passes ran on the active blocks only (see ``sparse`` of :func:`sinkhorn`).
    active_share
        Share of the ``n x m`` cell pairs in the active blocks at the end (1 for dense passes).
    skipped_mass_bound
        Upper bound of the plan mass of all skipped blocks at the final potentials, summed
        (0 for dense passes).
    n_active_blocks, n_blocks
        Active (query cluster, reference cluster) blocks at the end and blocks in all
        (``None`` for dense passes).
    blocks
        The active-block state (:class:`~._sparse.ActiveBlocks`, with any stored tile kernels)
        for :func:`aggregate`, or ``None`` for dense passes.
    n_devices
        Number of devices the solve ran on (its passes split by rows over them when more
        than one).
    devices
        Those devices (pass them to :func:`aggregate` with the kernel or blocks).
    start
        Where the iterations started: ``"zeros"`` (``f = g = 0``, the dense passes'
        default), ``"cluster"`` (the active-block mode's cluster-level potentials) or
        ``"given"`` (``init``); a caller that built ``init`` may name it (``"multiscale"``,
        ...).
    start_iterations
        Iterations of a smaller solve that built the start (``0`` for none).
    """

    f: np.ndarray
    g: np.ndarray
    errors: np.ndarray
    n_iterations: int
    converged: bool
    mode: str = "log"
    kernel: Kernel | None = field(default=None, repr=False, compare=False)
    n_corrections: int = 0
    sparse: bool = False
    active_share: float = 1.0
    skipped_mass_bound: float = 0.0
    n_active_blocks: int | None = None
    n_blocks: int | None = None
    blocks: ActiveBlocks | None = field(default=None, repr=False, compare=False)
    n_devices: int = 1
    devices: tuple = field(default=(), repr=False, compare=False)
    start: str = "zeros"
    start_iterations: int = 0

    def __repr__(self) -> str:
        """One line: what a notebook shows for ``dataset_map.solve()``, never the arrays."""
        error = float(self.errors[-1]) if len(self.errors) else float("nan")
        state = "converged" if self.converged else "NOT converged"
        passes = f"sparse, {self.active_share:.1%} of pairs active" if self.sparse else "dense"
        on = "" if self.n_devices == 1 else f", on {self.n_devices} devices"
        if self.start not in ("zeros", "cluster"):
            on += f", {self.start} start"
            if self.start_iterations:
                on += f" ({self.start_iterations} iterations on a downsample)"
        return (
            f"SinkhornOutput({state} in {self.n_iterations} iterations, marginal error "
            f"{error:.2e}, {np.size(self.f):,} x {np.size(self.g):,} cells, {self.mode} mode, "
            f"{passes}{on})"
        )


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
    block_memory_budget: int | None = None,
    sparse: bool = True,
    sparse_tolerance: float = DEFAULT_SPARSE_TOLERANCE,
    kernel_dtype=None,
    devices=None,
    init=None,
) -> SinkhornOutput:
    """Log-domain Sinkhorn on the cost ``C_ij = offset + x_aug[i] . y_aug[j]``.

    Starting from ``f = g = 0`` (or from ``init``), each iteration updates ``f`` then ``g``::

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

    **Active blocks** (``sparse=True`` with cluster codes, see :mod:`._sparse`). Cells are
    grouped by cluster; a (query cluster, reference cluster) block whose plan mass is
    certified below ``sparse_tolerance * threshold`` (an upper bound from the potentials'
    cluster log-sum-exps and a lower bound of the block's cost) is skipped in every pass.
    The active set is updated at every check, and a solve converges only when, at its final
    potentials, no skipped block's bound exceeds the tolerance (else blocks come back and it
    goes on). The active blocks' tile kernels are stored while they fit
    ``kernel_memory_budget`` (kernel mode on those tiles), the others are evaluated from the
    cost. Problems below 2**22 cell pairs, or where more than 80% of the cell pairs must stay
    active, run the dense passes (same solution).

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
        correction), at most as many as ``block_memory_budget`` allows; does not change the
        result beyond float round-off.
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
        target exactly (:func:`~pairot.tl._ot._cluster_scaling.cluster_scaling`, a dual ascent
        step solved by Newton's method on ``Kq + Kr`` unknowns). It costs one pass over the
        cost that keeps one log-sum-exp per reference cluster (in kernel mode one
        kernel-matrix product with ``Kr`` columns) and removes the slow mode of Sinkhorn on
        annotation-informed costs, where mass must move between clusters linked only by
        ``exp(-lambda_label / epsilon)``-small kernel entries. The fixed point and the
        stopping rule are unchanged. Skipped (with an INFO log) above 1,000 clusters in all,
        where its Newton steps get expensive.
    cluster_correction
        Apply the cluster-level correction when codes are given (default ``True``).
    block_memory_budget
        Bytes one row block of the cost may take, ``None`` for
        :data:`~._blocks.DEFAULT_BLOCK_MEMORY_BUDGET` (1 GiB). The rows per block are
        ``batch_size`` capped so that ``1.25 * rows * width * itemsize`` fits (``width = m``
        for query blocks, ``m + Kr`` with the cluster correction, and ``n`` for reference
        blocks; a pass holds about 1.25 such blocks), at least 1; an INFO line says when the
        cap applies. Like ``batch_size``, it changes the result by float round-off only.
    sparse
        Skip the blocks that carry no mass (default ``True``; needs ``query_codes`` and
        ``ref_codes``); ``False`` always runs the dense passes.
    sparse_tolerance
        A block is skipped while its plan mass bound is at most ``sparse_tolerance *
        threshold`` (default 1e-3: 1e-6 of the plan's unit mass at the default threshold, a
        thousandth of what the stopping rule allows for the whole marginal error).
    kernel_dtype
        Storage type of the active blocks' tile kernels: ``None`` (``dtype``) or
        ``"bfloat16"`` (half the memory, products accumulated in float32; opt-in: outputs
        within 1e-6 of float32 on simulated 16k and 32k pairs, but 4x slower on a CPU).
    devices
        The devices to split the passes over (see :func:`resolve_devices`).
    init
        ``None`` (default): the dense passes start from ``f = g = 0``, the active-block
        passes from their cluster-level potentials. Or start potentials ``(f0, g0)``, shapes
        ``(n,)`` and ``(m,)`` (no NaN or ``+inf``), in every mode: the iterations start from
        the state of ``g0`` (its row log-sum-exps; the first update replaces ``f``), and the
        active-block mode takes its first active set from the mass bounds at ``(f0, g0)``.
        Any start leads to the same fixed point; the stopping rule and the skipped-mass
        certificate are unchanged. ``SinkhornOutput.start`` says which start ran.

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
    budget = _check_budget(block_memory_budget)
    if not isinstance(sparse, bool | np.bool_):
        msg = f"sparse must be True or False, got {sparse!r}."
        raise TypeError(msg)
    sparse_tolerance = _check_scalar(
        sparse_tolerance, "sparse_tolerance", low=0.0, high=1.0, hint="; pass e.g. 1e-3"
    )
    kernel_dtype = _check_kernel_dtype(kernel_dtype, dtype)
    init = _check_init(init, n, m)
    codes = None
    if cluster_correction and query_codes is not None and ref_codes is not None:
        codes = _correction_codes(query_codes, ref_codes, n, m)
    clusters = None
    if sparse and query_codes is not None and ref_codes is not None:
        clusters = _cluster_codes(query_codes, ref_codes, n, m)
    if tau_a == 1.0 and tau_b == 1.0:
        sa, sb = a.sum(), b.sum()
        if abs(sa - sb) > 1e-5 * max(sa, sb):
            msg = (
                f"a and b must carry the same total mass for balanced OT (tau_a = tau_b = 1), got "
                f"sum(a) = {sa!r} and sum(b) = {sb!r}; normalize both to sum 1, or relax a "
                "marginal with tau_a < 1 or tau_b < 1."
            )
            raise ValueError(msg)

    block_x, block_y = _capped_blocks(
        "Sinkhorn",
        batch_size,
        [
            (min(batch_size, n), m + (0 if codes is None else codes[3]), m, "reference cells"),
            (min(batch_size, m), n, n, "query cells"),
        ],
        itemsize=dtype.itemsize,
        factor=_SOLVE_FACTOR,
        budget=budget,
    )
    devs = resolve_devices(devices)
    sharded = devs.n > 1
    # kernel mode's budget is per device: each device holds its rows of the kernel
    kernel_bytes = (devs.padded(n) // devs.n) * (devs.padded(m) if sharded else m) * dtype.itemsize
    with _dtype_context(dtype), devs.placed():
        scalars = {
            name: np.asarray(value, dtype=dtype)
            for name, value in (
                ("offset", offset),
                ("eps", epsilon),
                ("tau_a", tau_a),
                ("tau_b", tau_b),
            )
        }
        bar = _ConvergenceBar(
            threshold,
            progress,
            f"{n:,} x {m:,} cells" + (f" on {devs.n} devices" if sharded else ""),
        )
        try:
            blocks = start = None
            if clusters is not None:
                blocks, start = _active_blocks(
                    x,
                    y,
                    offset,
                    a,
                    b,
                    clusters,
                    epsilon,
                    tau_a,
                    tau_b,
                    sparse_tolerance * threshold,
                    init,
                )
            if start is None:
                start = init
            kernel = None
            if blocks is not None:
                passes = SparsePasses(
                    blocks,
                    x,
                    y,
                    a,
                    b,
                    {k: jnp.asarray(v) for k, v in scalars.items()},
                    prec,
                    bar,
                    dtype,
                    kernel_memory_budget,
                    kernel_dtype,
                    devices=devs,
                )
                if codes is not None:
                    codes = (blocks.lx.codes, blocks.ly.codes, codes[2], codes[3])
            else:
                if sharded:
                    passes = ShardedPasses(
                        devs,
                        x.astype(dtype, copy=False),
                        y.astype(dtype, copy=False),
                        a,
                        b,
                        scalars,
                        block_x,
                        block_y,
                        prec,
                        bar,
                    )
                else:
                    passes = _LogPasses(
                        jnp.asarray(x.astype(dtype, copy=False)),
                        jnp.asarray(y.astype(dtype, copy=False)),
                        jnp.asarray(a.astype(dtype)),
                        jnp.asarray(b.astype(dtype)),
                        {k: jnp.asarray(v) for k, v in scalars.items()},
                        block_x,
                        block_y,
                        prec,
                        bar,
                    )
                if 0 < kernel_bytes <= kernel_memory_budget:
                    kernel = passes.make_kernel(offset, epsilon, dtype)
                else:
                    logger.debug(
                        "Sinkhorn: log-domain updates (kernel of %d bytes > "
                        "kernel_memory_budget=%d).",
                        kernel_bytes,
                        kernel_memory_budget,
                    )
            correct = None
            if codes is not None:
                correction = ShardedCorrection if isinstance(passes, ShardedPasses) else _Correction
                correct = correction(passes, codes, tau_a, tau_b, 1e-2 * threshold, dtype)
            result = _Iterations(
                passes,
                kernel,
                correct,
                threshold=threshold,
                max_iterations=max_iterations,
                inner_iterations=inner_iterations,
                start=start,
            ).run()
            f, g = passes.potentials(result.state)
            if blocks is not None:
                f, g = blocks.lx.unpad(f), blocks.ly.unpad(g)
        finally:
            bar.close()
    errors = result.errors
    done = result.done
    kernel = result.kernel
    mode = "log" if kernel is None else "kernel"
    if blocks is not None:
        share = blocks.kernel_share
        mode = "kernel" if share == 1.0 else "log" if share == 0.0 else "kernel+log"
    if not result.converged:
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
            "cluster-level corrections%s).",
            errors[-1],
            done,
            mode,
            result.n_corrections,
            ""
            if blocks is None
            else f"; {int(blocks.active.sum())} of {int(blocks.present.sum())} blocks active, "
            f"{100 * blocks.active_share:.1f}% of the cell pairs, skipped mass <= "
            f"{blocks.skipped_mass_bound:.1e}",
        )
    return SinkhornOutput(
        start="given" if init is not None else "zeros" if blocks is None else "cluster",
        f=f,
        g=g,
        errors=np.asarray(errors, dtype=np.float64),
        n_iterations=done,
        converged=result.converged,
        mode=mode,
        kernel=kernel,
        n_corrections=result.n_corrections,
        sparse=blocks is not None,
        active_share=1.0 if blocks is None else blocks.active_share,
        skipped_mass_bound=0.0 if blocks is None else blocks.skipped_mass_bound,
        n_active_blocks=None if blocks is None else int(blocks.active.sum()),
        n_blocks=None if blocks is None else int(blocks.present.sum()),
        blocks=blocks,
        n_devices=devs.n,
        devices=devs.devices,
    )


def _check_kernel_dtype(kernel_dtype, dtype: np.dtype):
    """``None`` (the computation's dtype) or bfloat16 (float16's range is too narrow: its
    kernels underflowed on a simulated 32k x 32k pair, measured)."""
    if kernel_dtype is None:
        return None
    try:
        out = jnp.dtype(kernel_dtype)
    except TypeError:
        out = None
    if out == jnp.dtype(dtype):
        return None
    if out != jnp.dtype(jnp.bfloat16) or dtype != np.float32:
        msg = (
            f"kernel_dtype must be None or 'bfloat16' (with dtype=np.float32), got "
            f"{kernel_dtype!r}; pass kernel_dtype=None for full precision."
        )
        raise ValueError(msg)
    return out


def _cluster_codes(query_codes, ref_codes, n: int, m: int):
    """The checked codes ``(query, ref, Kq, Kr)`` for the active-block mode."""
    qcodes = _check_codes(query_codes, n, None, "query_codes", "query cell")
    rcodes = _check_codes(ref_codes, m, None, "ref_codes", "reference cell")
    return qcodes, rcodes, int(qcodes.max()) + 1, int(rcodes.max()) + 1


def _active_blocks(x, y, offset, a, b, clusters, epsilon, tau_a, tau_b, tolerance, init=None):
    """The first active set and start potentials (``init``'s, padded, if given), or
    ``(None, None)`` for the dense passes (a small problem, or one where nearly every cell
    pair must stay active)."""
    n, m = x.shape[0], y.shape[0]
    if clusters[2] * clusters[3] == 1:
        logger.debug("Sinkhorn: dense passes (one cluster a side: nothing to skip).")
        return None, None
    if n * m < _sparse.MIN_SPARSE_PAIRS:
        logger.debug(
            "Sinkhorn: dense passes (%d cell pairs, below the sparse mode's minimum).", n * m
        )
        return None, None
    blocks, f0, g0 = _sparse.make_blocks(
        x,
        y,
        offset,
        a,
        b,
        *clusters,
        epsilon=epsilon,
        tau_a=tau_a,
        tau_b=tau_b,
        tolerance=tolerance,
        start=init,
    )
    if blocks.active_share > _sparse.MAX_ACTIVE_SHARE:
        logger.info(
            "Sinkhorn: dense passes: %.0f%% of the cell pairs can carry mass (%d of %d blocks).",
            100 * blocks.active_share,
            int(blocks.active.sum()),
            int(blocks.present.sum()),
        )
        return None, None
    return blocks, (f0, g0)


@dataclass
class _Iterations:
    """The iteration loop of :func:`sinkhorn` and where it stands: checks, corrections,
    progress, interrupts.

    Checks fall on multiples of ``inner_iterations`` (and on the last iteration); the first
    correction comes early, after :data:`~._correction._EARLY_CORRECTION` iterations, if the
    error is still above the threshold there (a look that counts as a check only when it finds
    the error already below the threshold, and then ends the solve). Between two stops the
    iterations run in device calls of about :data:`~._chunks._CHUNK_SECONDS` each (measured
    from the second call on), with an interrupt check after each.

    ``state`` is ``(f, g, lse_row, lse_col)`` on the device, with ``lse_row = LSE_j((g_j -
    C_ij) / eps)`` and ``lse_col = LSE_i((f_i - C_ij) / eps)`` of the potentials before the
    last ``g`` update (see :func:`~._logdomain._iterate`); ``kernel`` is ``None`` in log mode
    (also after a fall-back from kernel mode).
    """

    passes: _LogPasses | SparsePasses
    kernel: Kernel | None
    correct: _Correction | None
    threshold: float
    max_iterations: int
    inner_iterations: int
    #: start potentials ``(f, g)`` (the active-block mode's, padded, or ``init``), or
    #: ``None`` for ``f = g = 0``
    start: tuple | None = None
    state: tuple = ()
    #: iterations run
    done: int = 0
    #: the marginal error at every check
    errors: list[float] = field(default_factory=list)
    n_corrections: int = 0
    converged: bool = False
    #: whether the early correction's look at the error (not a check) is still to come
    early_look: bool = False
    #: iteration of an extra look, after the active set changed at a check below the threshold
    look_at: int | None = None
    #: measured on the device calls after the first (which compiles); ``None`` until then
    seconds_per_iteration: float | None = None
    #: device calls of iterations in the current mode
    calls: int = 0

    def run(self) -> _Iterations:
        """Iterate until the error at a check is below the threshold, or non-finite, or until
        ``max_iterations``."""
        self.state = self._initial_state()
        self.early_look = (
            self.correct is not None
            and min(self.inner_iterations, self.max_iterations) > _correction._EARLY_CORRECTION
        )
        while self.done < self.max_iterations:
            look, stop = self._next_stop()
            err = self._iterate_towards(stop)
            if err is None:  # kernel mode broke down: these iterations again, in the log domain
                continue
            self.passes.bar.update(self.done, err)
            check_interrupt()
            if self.done < stop:
                continue
            if look:
                self.early_look = False
                self.look_at = None
                # already below the threshold: the look counts as a check (the same error
                # measure), so a problem solved in two iterations stops there
                if math.isfinite(err) and err < self.threshold:
                    self.errors.append(err)
                    if self._converged(err):
                        self.converged = True
                        break
            else:  # a check
                self.errors.append(err)
                if not math.isfinite(err):
                    break
                if self._converged(err):
                    self.converged = True
                    break
            if self._needs_correction(err):
                self._correct()
        return self

    def _converged(self, err: float) -> bool:
        """Below the threshold, and in the active-block mode certified: no skipped block can
        carry more than the tolerance (else blocks come back and the loop goes on)."""
        if isinstance(self.passes, SparsePasses):
            self.state, certified = self.passes.refresh(self.state, err < self.threshold)
            check_interrupt()
            if err < self.threshold and not certified:
                # blocks came back at a solution of the smaller problem: look again soon
                self.look_at = self.done + _correction._EARLY_CORRECTION
            return err < self.threshold and certified
        return err < self.threshold

    def _initial_state(self) -> tuple:
        """``f = g = 0`` and the row log-sum-exps of ``g``, or the state of the start
        potentials (the active-block mode's also has the column log-sum-exps)."""
        if self.start is not None:
            return self.passes.initial_state(*self.start, kernel=self.kernel)
        return self.passes.zero_state(self.kernel)

    def _next_stop(self) -> tuple[bool, int]:
        """``(look, stop)``: the iteration count of the next stop, and whether it is the early
        correction's look rather than a check (checks fall on multiples of
        ``inner_iterations`` and on the last iteration)."""
        early = _correction._EARLY_CORRECTION
        if self.early_look and self.done < early:
            return True, early
        following = (self.done // self.inner_iterations + 1) * self.inner_iterations
        following = min(following, self.max_iterations)
        if self.look_at is not None and self.done < self.look_at < following:
            return True, self.look_at
        return False, following

    def _steps(self, remaining: int) -> int:
        """Iterations in the next device call: one until a call is timed (the first compiles),
        then as many as fit in about :data:`~._chunks._CHUNK_SECONDS`."""
        if self.seconds_per_iteration is None:
            return 1
        per_call = int(_chunks._CHUNK_SECONDS / self.seconds_per_iteration)
        return max(1, min(remaining, per_call))

    def _iterate_towards(self, stop: int) -> float | None:
        """One device call of iterations towards ``stop``; its marginal error, or ``None``
        when kernel mode gave a non-finite one (and the loop is now in log mode)."""
        steps = self._steps(stop - self.done)
        began = time.perf_counter()
        if self.kernel is not None:
            *new_state, err = self.passes.kernel_steps(self.kernel, self.state, steps)
        else:
            *new_state, err = self.passes.steps(self.state, steps, self.done)
        err = float(err)
        self._timed(began, steps)
        if self.kernel is not None and not math.isfinite(err):
            self._fall_back_to_log(steps)
            return None
        if isinstance(self.passes, SparsePasses) and self.passes.kernel_mode:
            if not math.isfinite(err):
                logger.debug(
                    "Sinkhorn: tile kernels gave a non-finite error after %d iterations; going "
                    "on from the cost.",
                    self.done + steps,
                )
                self.passes.drop_kernel()
                f, g = self.state[0], self.state[1]
                self.state = (f, g, self.passes.row_lse(g), self.passes.col_lse(f))
                return None
        self.state = tuple(new_state)
        self.done += steps
        return err

    def _timed(self, began: float, steps: int) -> None:
        """Count the call and time it (not in chunked log mode, whose calls are row chunks)."""
        self.calls += 1
        if self.calls > 1 and (self.kernel is not None or not self.passes.chunked):
            self.seconds_per_iteration = max((time.perf_counter() - began) / steps, 1e-9)

    def _fall_back_to_log(self, steps: int) -> None:
        """Scalings under- or overflowed: go on in the log domain from the last checked state."""
        logger.debug(
            "Sinkhorn: kernel mode gave a non-finite error after %d iterations; going on "
            "with log-domain updates from the last finite potentials.",
            self.done + steps,
        )
        self.kernel = None
        self.seconds_per_iteration, self.calls = None, 0
        f, g, _, lse_col = self.state
        self.state = (f, g, self.passes.row_lse(g), lse_col)

    def _needs_correction(self, err: float) -> bool:
        return (
            self.correct is not None
            and self.done < self.max_iterations
            and math.isfinite(err)
            and err >= self.threshold
        )

    def _correct(self) -> None:
        corrected = self.correct(self.state, self.kernel)
        if corrected is not None:
            self.state = corrected
            self.n_corrections += 1
            if isinstance(self.passes, SparsePasses):
                # the shifts move whole clusters' potentials: the active set follows at once
                self.state, _ = self.passes.refresh(self.state, False)
        check_interrupt()
