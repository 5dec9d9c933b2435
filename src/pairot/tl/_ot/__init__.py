"""pairot's optimal-transport engine: blocked Sinkhorn and one-pass plan aggregation in JAX.

Every JAX-specific line of pairot lives in this package, so that a JAX version change touches
it alone. The engine imports nothing from the layers above it (the rest of ``pairot.tl``,
``pairot.pp``, ``pairot.pl``): only numpy, scipy, JAX, tqdm and pairot's own interrupt and
logging helpers; no two of its modules import each other. Only stable public JAX API is used
(``jax.numpy``, ``jax.lax``, ``jax.jit``, and for several devices ``jax.sharding`` and
``jax.shard_map``).

**Several devices.** ``sinkhorn(devices=...)`` and ``aggregate(devices=...)`` (default: all
of ``jax.devices()``) split every pass by rows of cells over a 1-D mesh of the devices; with
one device the code below runs unchanged on it (see :mod:`._shard`).

The transport cost between query cell ``i`` and reference cell ``j`` is affine in the inner
product of their augmented vectors::

    C_ij = offset + x_aug[i] . y_aug[j]

and is never stored in full: it is computed in row blocks of ``batch_size`` cells (fewer
where a block would exceed ``block_memory_budget`` bytes), one matrix product per block.
Every reduction runs along the rows of a block (reductions down columns are several times
slower on CPU): the query potential ``f`` is computed from row blocks of ``C`` (query blocks
against all reference cells), the reference potential ``g`` from row blocks of ``C^T``
(reference blocks against all query cells).

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

Modules, one concept each, listed so that each imports only modules above it:

- ``_checks``: argument checks of the entry points, precisions, the float64 context;
- ``_blocks``: the rows per block of the cost, capped by a memory budget;
- ``_chunks``: a long pass split into interruptible device calls;
- ``_progress``: the convergence progress bar;
- ``_shard``: device sharding: the devices' mesh, padded row placement, the cross-device
  log-sum-exp;
- ``_logdomain``: the blocked log-sum-exp passes and log-domain iterations (jitted);
- ``_kernel``: kernel mode's :class:`Kernel`, its jitted construction and iterations, and its
  underflow check;
- ``_passes``: the passes of a solve on one device (log domain and kernel mode, whole or
  chunked), and the host-side iteration loop that chunked, sharded and active-tile passes share;
- ``_cluster_scaling``: the cluster-level problem's Newton solver (numpy);
- ``_correction``: the cluster-level correction of a solve, on the device;
- ``_cluster_sums``: host-side sums per cluster (a matrix's columns, the cost exactly);
- ``_sharded``: the dense passes (log and kernel mode) and the correction split over devices;
- ``_active``: the active-block bookkeeping: cell layout, cost bounds, active set;
- ``_tiles``: the jitted passes over lists of active tiles;
- ``_sharded_tiles``: those tile passes split over devices;
- ``_sparse``: the active-block (sparse) mode: its blocks, its passes, its aggregation;
- ``_driver``: :func:`sinkhorn`, its mode choice and its iteration loop;
- ``_warm``: warm starts for ``sinkhorn(init=...)``: potentials of a solve on some of the
  cells extended to all by one c-transform pass (:func:`extend_potentials`), and the
  cluster-level start (:func:`cluster_potentials`);
- ``_block_sums``: the plan's sums per row block (jitted kernels, from the cost or the kernel)
  and the host walk over their calls;
- ``_sharded_aggregate``: the outputs' aggregation split over devices;
- ``_aggregate``: :func:`aggregate`, the cluster-level sums of the plan: its checks, its
  dispatch (active tiles, several devices, one device) and its one-device pass.
"""

from __future__ import annotations

from ._aggregate import aggregate
from ._blocks import DEFAULT_BLOCK_MEMORY_BUDGET
from ._cluster_sums import cluster_sums
from ._driver import SinkhornOutput, sinkhorn
from ._kernel import DEFAULT_KERNEL_MEMORY_BUDGET, Kernel
from ._shard import resolve_devices
from ._warm import cluster_potentials, extend_potentials

__all__ = [
    "DEFAULT_BLOCK_MEMORY_BUDGET",
    "DEFAULT_KERNEL_MEMORY_BUDGET",
    "Kernel",
    "SinkhornOutput",
    "aggregate",
    "cluster_potentials",
    "cluster_sums",
    "extend_potentials",
    "resolve_devices",
    "sinkhorn",
]
