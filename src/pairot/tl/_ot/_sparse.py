"""The active-block (sparse) mode of Sinkhorn: passes over the blocks that can carry mass.

Annotation-informed costs are nearly block-sparse: a (query cluster, reference cluster) block
at label distance ``L`` pays ``lambda_label * L`` on top of the cell term, a factor
``exp(-lambda_label * L / epsilon)`` on its plan entries. :class:`ActiveBlocks` keeps, for the
current potentials, the blocks whose mass bound (:mod:`._active`) is not negligible, and
:class:`SparsePasses` runs every Sinkhorn pass (updates, cluster-level correction) on their
tiles only (:mod:`._tiles`); :func:`aggregate_active` does the same for the outputs.

Rules:

- **Tolerance.** A block is skipped while its mass bound is at most ``tolerance`` (absolute
  plan mass; :func:`~pairot.tl._ot.sinkhorn` passes ``sparse_tolerance * threshold``); the
  bounds of all skipped blocks together are reported (``skipped_mass_bound``).
- **Start.** The first active set comes from cluster-constant potentials that solve the
  cluster-level problem on the blocks' mean costs (exact, from cluster sums), with the cost
  lower bounds for the mass bounds: the blocks whose bound exceeds a tenth of the tolerance.
- **Updates.** At every check the bounds are evaluated at the current potentials: if a
  skipped block's bound exceeds the tolerance, the blocks above a tenth of it are
  brought back; if far fewer blocks would do (a fifth fewer cell pairs, with the same
  margin), the set shrinks.
- **Certification.** A solve converges only when, at its final potentials, no skipped
  block's bound exceeds the tolerance; otherwise blocks come back and it goes on. The plan
  entries left out carry in all at most ``skipped_mass_bound``, and the true marginal error
  is at most the one measured plus twice that.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from ..._interrupt import check as check_interrupt
from . import _tiles
from ._active import (
    Layout,
    choose_active,
    cost_lower_bounds,
    log_mass_bounds,
    skipped_log_mass,
)
from ._cluster_scaling import cluster_scaling
from ._cluster_sums import _cost_sums, cluster_sums
from ._kernel import _kernel_exponent_limit
from ._passes import host_steps
from ._sharded_tiles import ShardedTiles

logger = logging.getLogger("pairot")

#: Tile shapes ``(rows, cols, cost)``: ``cost`` is the time per cell pair of a log-domain
#: tile pass relative to the dense blocked pass, measured on the 2-core CPU at d = 389
#: (256 x 512: 0.84, 256 x 256: 1.10, 128 x 256: 1.36, 128 x 128: 1.53; the smaller ones,
#: for small clusters only, are rough). Clusters are padded to a multiple of ``cols``.
TILE_SHAPES = (
    (256, 512, 0.84),
    (256, 256, 1.10),
    (128, 256, 1.36),
    (128, 128, 1.53),
    (64, 64, 2.5),
    (32, 32, 5.0),
    (16, 16, 10.0),
)
#: Default skipped-mass tolerance relative to the Sinkhorn threshold.
DEFAULT_SPARSE_TOLERANCE = 1e-3
#: Above this share of active cell pairs the dense passes run instead (same result).
MAX_ACTIVE_SHARE = 0.8
#: Below this many cell pairs the dense passes run (their single fused device call is faster).
MIN_SPARSE_PAIRS = 2**22
#: Cell pairs per device call of a log-domain tile pass (kernel passes take 16 times more).
CALL_PAIRS = 2**27
#: Shrink the active set when the new one has at most this share of the current cell pairs.
_SHRINK = 0.8
#: Blocks taken in or kept when the set changes: bound above the tolerance divided by this
#: (a margin, so that small changes of the potentials do not toggle blocks at every check).
_MARGIN = 10.0


def _pow2_floor(v: int) -> int:
    return 1 << max(int(v), 1).bit_length() - 1


def tile_shape(query_counts: np.ndarray, ref_counts: np.ndarray) -> tuple[int, int]:
    """``(rows, cols)`` of the tile shape of :data:`TILE_SHAPES` with the least estimated
    time per pass: its relative cost times the padded cell pairs (clusters padded to a
    multiple of ``cols`` on both sides)."""

    def padded(counts, unit):
        return float((-(-counts // unit) * unit).sum())

    best = min(
        TILE_SHAPES,
        key=lambda t: t[2] * padded(query_counts, t[1]) * padded(ref_counts, t[1]),
    )
    return best[0], best[1]


def _capacity(n: int) -> int:
    """``n`` rounded up to one of few sizes (``2^k (1 + j / 8)``): few compiled shapes."""
    if n <= 16:
        return 16
    step = _pow2_floor(n) // 8
    return -(-n // step) * step


def _device_codes(values: np.ndarray, capacity: int) -> jax.Array:
    pad = np.zeros(capacity - len(values), np.int64)
    return jnp.asarray(np.concatenate([values, pad]).astype(np.int32))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


@dataclass
class TilePlan:
    """Tiles of the blocks of ``active`` with ``u``-side rows and ``v``-side columns."""

    rows: jax.Array  # first padded row of every tile (capacity,)
    cols: jax.Array  # first padded column of every tile (capacity,)
    row_tile: np.ndarray  # row tile index, host (n_tiles,)
    col_tile: np.ndarray  # column tile index, host (n_tiles,)
    row_cluster: np.ndarray  # host (n_tiles,)
    col_cluster: np.ndarray  # host (n_tiles,)
    n_tiles: int
    capacity: int
    segments: jax.Array  # row tile of every slot (capacity,)

    @classmethod
    def of(cls, lu: Layout, lv: Layout, active: np.ndarray, tr: int, tc: int) -> TilePlan:
        rows, cols, rcl, ccl = [], [], [], []
        col_starts = [np.arange(lv.start[c], lv.stop[c], tc) for c in range(len(lv.start))]
        for k in range(len(lu.start)):
            row_starts = np.arange(lu.start[k], lu.stop[k], tr)
            partners = np.flatnonzero(active[k])
            if not len(row_starts) or not len(partners):
                continue
            cs = np.concatenate([col_starts[c] for c in partners])
            cc = np.concatenate([np.full(len(col_starts[c]), c) for c in partners])
            rows.append(np.repeat(row_starts, len(cs)))
            cols.append(np.tile(cs, len(row_starts)))
            rcl.append(np.full(len(row_starts) * len(cs), k))
            ccl.append(np.tile(cc, len(row_starts)))
        rows_h, cols_h = _cat(rows), _cat(cols)
        capacity = _capacity(len(rows_h))
        return cls(
            rows=_device_codes(rows_h, capacity),
            cols=_device_codes(cols_h, capacity),
            row_tile=rows_h // tr,
            col_tile=cols_h // tc,
            row_cluster=_cat(rcl),
            col_cluster=_cat(ccl),
            n_tiles=len(rows_h),
            capacity=capacity,
            segments=_device_codes(rows_h // tr, capacity),
        )

    def segments_by_cluster(self, n_clusters: int) -> jax.Array:
        """Segment ``row_tile * n_clusters + col_cluster`` of every slot."""
        return _device_codes(self.row_tile * n_clusters + self.col_cluster, self.capacity)

    # what the passes read (a :class:`~._sharded_tiles.ShardedPlan` has them too)
    @property
    def walk(self) -> int:
        """Slots a pass walks."""
        return self.n_tiles

    @property
    def kernel_slots(self) -> int:
        """Slots of the stored tile kernels."""
        return self.n_tiles

    def slot_codes(self, values: np.ndarray) -> jax.Array:
        """One code per tile in every slot (0 in the unused ones, which hold ``-inf``)."""
        return _device_codes(values, self.capacity)

    def host(self, values) -> np.ndarray:
        """The per-slot ``values`` of a pass (first axis: slots) of the tiles."""
        return np.asarray(values[: self.n_tiles])


@dataclass
class Part:
    """Blocks of the active set evaluated one way: from stored tile kernels (``kernel``) or
    from the cost (``kernel is None``), with their tile plans."""

    blocks: np.ndarray  # (Kq, Kr) mask
    row_plan: TilePlan  # query rows x reference columns
    col_plan: TilePlan | None  # reference rows x query columns (cost part only)
    kernel: jax.Array | None = field(default=None, repr=False)  # (n_tiles, tr, tc)
    row_min: jax.Array | None = field(default=None, repr=False)  # (n_tiles, tr)
    row_cluster_segments: jax.Array | None = field(default=None, repr=False)
    col_segments: jax.Array | None = field(default=None, repr=False)


@dataclass
class ActiveBlocks:
    """The active-block state of a solve: layouts, cost bounds, active set and its parts.

    Kept in :class:`~pairot.tl._ot.SinkhornOutput` (``blocks``) so that the outputs pass the
    same blocks (and reuses the tile kernels).
    """

    lx: Layout
    ly: Layout
    tr: int
    tc: int
    lower_bounds: np.ndarray  # (Kq, Kr) cost lower bounds
    present: np.ndarray  # (Kq, Kr) both clusters have cells
    active: np.ndarray  # (Kq, Kr)
    epsilon: float
    log_tolerance: float
    skipped_log_bound: float = -math.inf
    parts: list[Part] = field(default_factory=list, repr=False)
    #: the :class:`~._shard.Devices` of the solve whose parts these are (``None`` before one)
    devices: object = field(default=None, repr=False)

    def pairs(self, mask: np.ndarray) -> int:
        """Cell pairs in the blocks of ``mask``."""
        return int(self.lx.counts @ mask.astype(np.int64) @ self.ly.counts)

    @property
    def active_pairs(self) -> int:
        return self.pairs(self.active)

    @property
    def total_pairs(self) -> int:
        return int(self.lx.counts.sum() * self.ly.counts.sum())

    @property
    def active_share(self) -> float:
        return self.active_pairs / max(self.total_pairs, 1)

    @property
    def skipped_mass_bound(self) -> float:
        """Upper bound of the plan mass of all skipped blocks at the last evaluation."""
        return math.exp(min(self.skipped_log_bound, 700.0))

    @property
    def kernel_share(self) -> float:
        """Share of the active cell pairs evaluated from stored tile kernels."""
        stored = sum(self.pairs(p.blocks) for p in self.parts if p.kernel is not None)
        return stored / max(self.active_pairs, 1)

    def bounds(self, f_pad, g_pad) -> np.ndarray:
        """Log mass bounds of every block at the padded potentials."""
        return log_mass_bounds(
            np.asarray(f_pad),
            np.asarray(g_pad),
            self.epsilon,
            self.lower_bounds,
            self.lx.codes,
            self.ly.codes,
        )

    def tiles_per_block(self) -> np.ndarray:
        """``(Kq, Kr)`` tiles of every block."""
        rows = (self.lx.stop - self.lx.start) // self.tr
        cols = (self.ly.stop - self.ly.start) // self.tc
        return np.outer(rows, cols)

    def release(self) -> None:
        """Drop the stored tile kernels (their memory)."""
        for part in self.parts:
            part.kernel = part.row_min = None


def _initial_potentials(x, y, offset, a, b, lx, ly, epsilon, tau_a, tau_b):
    """Cluster-constant potentials solving the cluster-level problem on the blocks' mean costs
    (``log sum exp(-C / eps) >= log(n_k n_c) - mean C / eps``, Jensen), in units of eps."""

    qc, rc = lx.codes[lx.position], ly.codes[ly.position]
    kq, kr = len(lx.counts), len(ly.counts)
    sums = _cost_sums(x, y, offset, qc, rc, kq, kr)
    pairs = np.outer(lx.counts, ly.counts).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mass = np.where(
            pairs > 0, np.log(pairs) - sums / np.maximum(pairs, 1) / epsilon, -np.inf
        )
        log_a = np.log(np.bincount(qc, weights=a, minlength=kq))
        log_b = np.log(np.bincount(rc, weights=b, minlength=kr))
    xs, ys, _ = cluster_scaling(log_mass, log_a, log_b, tau_a=tau_a, tau_b=tau_b, tol=1e-6)
    return xs, ys


def cluster_potentials(
    x,
    y,
    offset,
    a,
    b,
    query_codes,
    ref_codes,
    n_query_clusters,
    n_ref_clusters,
    *,
    epsilon,
    tau_a,
    tau_b,
) -> tuple[np.ndarray, np.ndarray]:
    """The cluster-constant potentials the active-block mode starts from (see
    :func:`_initial_potentials`), one per cell in the cells' order: a start for the dense
    passes too."""
    lx = Layout.of(query_codes, n_query_clusters, 1)
    ly = Layout.of(ref_codes, n_ref_clusters, 1)
    xs, ys = _initial_potentials(x, y, offset, a, b, lx, ly, epsilon, tau_a, tau_b)
    return epsilon * xs[np.asarray(query_codes)], epsilon * ys[np.asarray(ref_codes)]


def make_blocks(
    x,
    y,
    offset,
    a,
    b,
    query_codes,
    ref_codes,
    n_query_clusters,
    n_ref_clusters,
    *,
    epsilon,
    tau_a,
    tau_b,
    tolerance,
    start=None,
) -> tuple[ActiveBlocks, np.ndarray, np.ndarray]:
    """The first active set and the starting potentials ``(f, g)`` (padded): the
    cluster-constant ones, or ``start`` (one potential per cell, in the cells' order), whose
    mass bounds then choose the first active set."""
    tr, tc = tile_shape(
        np.bincount(query_codes, minlength=n_query_clusters),
        np.bincount(ref_codes, minlength=n_ref_clusters),
    )
    lx = Layout.of(query_codes, n_query_clusters, tc)
    ly = Layout.of(ref_codes, n_ref_clusters, tc)
    lb = cost_lower_bounds(x, y, offset, query_codes, ref_codes, n_query_clusters, n_ref_clusters)
    present = np.outer(lx.counts > 0, ly.counts > 0)
    if start is None:
        xs, ys = _initial_potentials(x, y, offset, a, b, lx, ly, epsilon, tau_a, tau_b)
        f0 = np.where(lx.real, epsilon * xs[lx.codes], -np.inf)
        g0 = np.where(ly.real, epsilon * ys[ly.codes], -np.inf)
    else:
        f0 = lx.pad(np.asarray(start[0], dtype=np.float64), -np.inf)
        g0 = ly.pad(np.asarray(start[1], dtype=np.float64), -np.inf)
    blocks = ActiveBlocks(
        lx=lx,
        ly=ly,
        tr=tr,
        tc=tc,
        lower_bounds=lb,
        present=present,
        active=present.copy(),
        epsilon=float(epsilon),
        log_tolerance=math.log(tolerance),
    )
    log_bounds = blocks.bounds(f0, g0)
    # with the same margin as later changes: the first iterations move the potentials
    blocks.active = choose_active(log_bounds, blocks.log_tolerance - math.log(_MARGIN), present)
    blocks.skipped_log_bound = skipped_log_mass(log_bounds, blocks.active)
    return blocks, f0, g0


def blocks_for(active, query_codes, ref_codes, n_query_clusters, n_ref_clusters, epsilon):
    """The :class:`ActiveBlocks` of a solve on these cells (``active`` itself, with its tile
    kernels), or, for a ``(Kq, Kr)`` mask, new blocks on these cells with that active set."""
    if isinstance(active, ActiveBlocks):
        same = (
            np.array_equal(active.lx.codes[active.lx.position], query_codes)
            and np.array_equal(active.ly.codes[active.ly.position], ref_codes)
            and math.isclose(active.epsilon, epsilon)
        )
        if not same:
            msg = (
                "active must be the blocks of the sinkhorn run on these same cells and epsilon "
                "(SinkhornOutput.blocks), or a (query clusters x reference clusters) boolean "
                "mask."
            )
            raise ValueError(msg)
        return active
    mask = np.asarray(active)
    if mask.shape != (n_query_clusters, n_ref_clusters) or mask.dtype != bool:
        msg = (
            f"active must be a boolean array of shape ({n_query_clusters}, {n_ref_clusters}) "
            f"(query clusters x reference clusters), got {mask.dtype} of shape {mask.shape}."
        )
        raise ValueError(msg)
    tr, tc = tile_shape(
        np.bincount(query_codes, minlength=n_query_clusters),
        np.bincount(ref_codes, minlength=n_ref_clusters),
    )
    lx = Layout.of(query_codes, n_query_clusters, tc)
    ly = Layout.of(ref_codes, n_ref_clusters, tc)
    present = np.outer(lx.counts > 0, ly.counts > 0)
    return ActiveBlocks(
        lx=lx,
        ly=ly,
        tr=tr,
        tc=tc,
        lower_bounds=np.zeros(present.shape),
        present=present,
        active=mask & present,
        epsilon=float(epsilon),
        log_tolerance=-math.inf,
    )


def _int(v: int) -> jax.Array:
    return jnp.asarray(np.int32(v))


class SparsePasses:
    """The passes of a Sinkhorn solve on the active tiles, in the padded cell order.

    Same interface as the dense passes (``row_lse``, ``col_lse``, ``steps``), plus
    :meth:`refresh` (active-set update and certification at a check). The active blocks are
    split in two parts: as many as fit ``kernel_memory_budget`` get stored tile kernels
    (kernel mode: matrix-vector products), the others are evaluated from the cost.
    """

    chunked = True

    def __init__(
        self,
        blocks: ActiveBlocks,
        x,
        y,
        a,
        b,
        scalars,
        precision,
        bar,
        dtype,
        kernel_memory_budget: int,
        kernel_dtype=None,
        devices=None,
    ):
        # several devices: every tile list cut into one run per device (_sharded_tiles)
        blocks.devices = devices
        devices = devices if devices is not None and devices.n > 1 else None
        self.devices = devices
        self.tiles = _tiles if devices is None else ShardedTiles(devices)
        self.blocks = blocks
        lx, ly = blocks.lx, blocks.ly
        put = jnp.asarray if devices is None else devices.put
        self.put = put
        self.x = put(lx.pad(np.asarray(x, dtype=dtype), 0))
        self.y = put(ly.pad(np.asarray(y, dtype=dtype), 0))
        self.a = put(lx.pad(np.asarray(a, dtype=dtype), 0))
        self.b = put(ly.pad(np.asarray(b, dtype=dtype), 0))
        self.log_a, self.log_b = jnp.log(self.a), jnp.log(self.b)
        self.s = scalars
        self.inv_eps = 1.0 / scalars["eps"]
        self.precision = precision
        self.bar = bar
        self.dtype = np.dtype(dtype)
        self.kernel_dtype = jnp.dtype(dtype if kernel_dtype is None else kernel_dtype)
        self.kernel_memory_budget = int(kernel_memory_budget)
        self.n, self.m = lx.n_padded, ly.n_padded
        self.n_query_clusters, self.n_ref_clusters = blocks.present.shape
        self.balanced = float(scalars["tau_a"]) == 1.0 and float(scalars["tau_b"]) == 1.0
        self._per_call = max(1, CALL_PAIRS // (blocks.tr * blocks.tc))
        self._rebuild()

    # ------------------------------------------------------------------ set-up
    def _kernel_blocks(self) -> np.ndarray:
        """Active blocks, largest mass bound first, whose tile kernels fit the budget."""
        blocks = self.blocks
        tile_bytes = blocks.tr * blocks.tc * self.kernel_dtype.itemsize
        chosen = np.zeros_like(blocks.active)
        if tile_bytes > self.kernel_memory_budget:
            return chosen
        # the budget is per device: each holds the tile kernels of its run of tiles
        n_devices = 1 if self.devices is None else self.devices.n
        room = self.kernel_memory_budget * n_devices // tile_bytes
        tiles = blocks.tiles_per_block()
        order = np.argsort(-self._last_bounds, axis=None, kind="stable")
        for flat in order:
            k, c = divmod(int(flat), blocks.active.shape[1])
            if blocks.active[k, c] and tiles[k, c] <= room:
                chosen[k, c] = True
                room -= tiles[k, c]
        return chosen

    def _rebuild(self, log_bounds: np.ndarray | None = None) -> None:
        blocks = self.blocks
        blocks.parts = []
        self._last_bounds = (
            np.zeros(blocks.active.shape) if log_bounds is None else np.nan_to_num(log_bounds)
        )
        stored = self._kernel_blocks()
        kernel_part = None
        if stored.any():
            kernel_part = self._kernel_part(stored)
            if kernel_part is None:
                stored[:] = False
        rest = blocks.active & ~stored
        if rest.any():
            blocks.parts.append(
                Part(
                    blocks=rest,
                    row_plan=self._plan(blocks.lx, blocks.ly, rest),
                    col_plan=self._plan(blocks.ly, blocks.lx, rest.T),
                )
            )
        if kernel_part is not None:
            blocks.parts.append(kernel_part)
        for part in blocks.parts:
            plan = part.row_plan
            part.row_cluster_segments = plan.segments_by_cluster(self.n_ref_clusters)
            part.col_segments = plan.slot_codes(plan.col_tile)
        logger.debug(
            "Sinkhorn: %d active blocks of %d (%.1f%% of the cell pairs; %.1f%% of them from "
            "stored tile kernels), tiles of %d x %d.",
            int(blocks.active.sum()),
            int(blocks.present.sum()),
            100 * blocks.active_share,
            100 * blocks.kernel_share,
            blocks.tr,
            blocks.tc,
        )

    def _kernel_part(self, mask: np.ndarray) -> Part | None:
        """Stored tile kernels of the blocks of ``mask``, or ``None`` if a tile row's cost
        spread would make them underflow."""
        blocks = self.blocks
        tr, tc = blocks.tr, blocks.tc
        plan = self._plan(blocks.lx, blocks.ly, mask)
        init = (
            self.tiles.full((plan.kernel_slots, tr, tc), 0, self.kernel_dtype),
            self.tiles.full((plan.kernel_slots, tr), 0, self.dtype),
            self.put(np.zeros((), dtype=self.dtype)),
        )

        def launch(out, t0, t1):
            return self.tiles.build_tile_kernels(
                *out,
                self.x,
                self.y,
                self.s["offset"],
                self.s["eps"],
                plan.rows,
                plan.cols,
                t0,
                t1,
                tr=tr,
                tc=tc,
                precision=self.precision,
            )

        kernel, row_min, spread = self._walk(launch, init, plan.walk, self._per_call, "kernel")
        exponent = float(spread) / blocks.epsilon
        # bfloat16 has float32's exponent range
        limit = _kernel_exponent_limit(
            np.dtype(np.float64 if self.dtype == np.float64 else np.float32)
        )
        if not exponent <= limit:
            logger.debug(
                "Sinkhorn: no stored tile kernels (cost spread within a tile row / epsilon = "
                "%.1f > %.1f).",
                exponent,
                limit,
            )
            return None
        return Part(blocks=mask, row_plan=plan, col_plan=None, kernel=kernel, row_min=row_min)

    @property
    def kernel_mode(self) -> bool:
        return any(p.kernel is not None for p in self.blocks.parts)

    def drop_kernel(self) -> None:
        """Evaluate every active block from the cost from now on."""
        self.kernel_memory_budget = 0
        self._rebuild(self._last_bounds)

    def _walk(self, launch, out, n_tiles: int, per_call: int, label: str):
        """``out = launch(out, t0, t1)`` over the tiles in device calls of ``per_call`` tiles,
        waiting for each and checking for an interrupt between calls when there are several."""
        for t0 in range(0, n_tiles, per_call):
            t1 = min(n_tiles, t0 + per_call)
            out = launch(out, _int(t0), _int(t1))
            if n_tiles > per_call:
                jax.block_until_ready(out)
                self.bar.rows(label, t1, n_tiles, unit="tiles")
                check_interrupt()
        return out

    # ------------------------------------------------------------------ passes
    def _row_partials(self, part: Part, g):
        tr, tc = self.blocks.tr, self.blocks.tc
        plan = part.row_plan
        if part.kernel is not None:
            out = self.tiles.full((plan.capacity, tr), -np.inf, self.dtype)

            def launch(out, t0, t1):
                return self.tiles.kernel_row_partials(
                    out,
                    part.kernel,
                    part.row_min,
                    g,
                    self.inv_eps,
                    plan.cols,
                    t0,
                    t1,
                    tc=tc,
                    precision=self.precision,
                )

            return self._walk(
                launch, out, plan.walk, 16 * self._per_call, "query cells, active tiles"
            )
        return self._cost_partials(self.x, self.y, g, plan, "query cells, active tiles")

    def _cost_partials(self, u, v, potential, plan: TilePlan, label: str):
        """Per-tile log-sum-exps from the cost: ``u`` rows against ``v`` columns, whose
        potential is ``potential``."""
        h = potential * self.inv_eps
        out = self.tiles.full((plan.capacity, self.blocks.tr), -np.inf, self.dtype)

        def launch(out, t0, t1):
            return self.tiles.tile_lse_partials(
                out,
                u,
                v,
                h,
                self.s["offset"],
                self.inv_eps,
                plan.rows,
                plan.cols,
                t0,
                t1,
                tr=self.blocks.tr,
                tc=self.blocks.tc,
                precision=self.precision,
            )

        return self._walk(launch, out, plan.walk, self._per_call, label)

    def row_lse(self, g, segments=None):
        """``LSE_j((g_j - C_ij) / eps)`` per padded query cell over its active blocks; with
        ``segments`` (any non-None value) per reference cluster, ``(n, Kr)``, ``-inf`` for
        skipped blocks."""
        tr = self.blocks.tr
        n_row_tiles = self.n // tr
        kr = self.n_ref_clusters
        out = None
        for part in self.blocks.parts:
            parts = self._row_partials(part, g)
            if segments is None:
                lse = self.tiles.combine(parts, part.row_plan.segments, n_segments=n_row_tiles)
                lse = lse.reshape(-1)
            else:
                lse = self.tiles.combine(
                    parts, part.row_cluster_segments, n_segments=n_row_tiles * kr
                )
                lse = lse.reshape(n_row_tiles, kr, tr).transpose(0, 2, 1).reshape(self.n, kr)
            out = lse if out is None else jnp.logaddexp(out, lse)
        return out

    def col_lse(self, f):
        """``LSE_i((f_i - C_ij) / eps)`` per padded reference cell over its active blocks."""
        tr, tc = self.blocks.tr, self.blocks.tc
        out = None
        for part in self.blocks.parts:
            if part.kernel is not None:
                plan = part.row_plan
                buffer = self.tiles.full((plan.capacity, tc), -np.inf, self.dtype)

                def launch(out, t0, t1, part=part, plan=plan):
                    return self.tiles.kernel_col_partials(
                        out,
                        part.kernel,
                        part.row_min,
                        f,
                        self.inv_eps,
                        plan.rows,
                        t0,
                        t1,
                        tr=tr,
                        precision=self.precision,
                    )

                partials = self._walk(
                    launch,
                    buffer,
                    plan.n_tiles,
                    16 * self._per_call,
                    "reference cells, active tiles",
                )
                segments, n_segments = part.col_segments, self.m // tc
            else:
                plan = part.col_plan
                partials = self._cost_partials(
                    self.y, self.x, f, plan, "reference cells, active tiles"
                )
                segments, n_segments = plan.segments, self.m // tr
            lse = self.tiles.combine(partials, segments, n_segments=n_segments).reshape(-1)
            out = lse if out is None else jnp.logaddexp(out, lse)
        return out

    def _plan(self, lu: Layout, lv: Layout, mask: np.ndarray):
        """The tiles of the blocks of ``mask`` (cut into one run per device on several)."""
        plan = TilePlan.of(lu, lv, mask, self.blocks.tr, self.blocks.tc)
        return plan if self.devices is None else self.tiles.plan(plan)

    def _host(self, values) -> np.ndarray:
        return np.asarray(values) if self.devices is None else self.devices.to_host(values)

    def potentials(self, state) -> tuple[np.ndarray, np.ndarray]:
        """``(f, g)`` of ``state`` on the host (padded layout)."""
        return self._host(state[0]), self._host(state[1])

    def initial_state(self, f0, g0, kernel=None):
        """The state of the padded start potentials ``(f0, g0)`` with both log-sum-exps
        (``kernel`` is unused: the tile kernels are the passes' own)."""
        f = self.put(np.asarray(f0, dtype=self.dtype))
        g = self.put(np.asarray(g0, dtype=self.dtype))
        return (f, g, self.row_lse(g), self.col_lse(f))

    def steps(self, state, n_steps: int, first_iteration: int):
        """``n_steps`` iterations on the active tiles from ``state``, then the marginal error."""
        return host_steps(self, state, n_steps, first_iteration, update=_update)

    # ------------------------------------------------------------- active set
    def refresh(self, state, converged: bool):
        """Update the active set at a check; ``(state, certified)``.

        ``certified``: at the potentials of ``state`` no skipped block's mass bound exceeds
        the tolerance, and the set was kept. When the set changes, the row and column
        log-sum-exps of ``state`` are recomputed on the new set.
        """
        blocks = self.blocks
        state = self.recenter(state)
        f, g = state[0], state[1]
        log_bounds = blocks.bounds(self._host(f), self._host(g))
        blocks.skipped_log_bound = skipped_log_mass(log_bounds, blocks.active)
        need = choose_active(log_bounds, blocks.log_tolerance, blocks.present)
        want = choose_active(log_bounds, blocks.log_tolerance - math.log(_MARGIN), blocks.present)
        if (need & ~blocks.active).any():
            new, what = blocks.active | want, "more"
        elif not converged and blocks.pairs(want) <= _SHRINK * blocks.active_pairs:
            new, what = want, "fewer"
        else:
            return state, True
        logger.debug(
            "Sinkhorn: %s active blocks (%d -> %d; skipped mass bound %.2e, per-block "
            "tolerance %.2e).",
            what,
            int(blocks.active.sum()),
            int(new.sum()),
            blocks.skipped_mass_bound,
            math.exp(blocks.log_tolerance),
        )
        blocks.active = new
        blocks.skipped_log_bound = skipped_log_mass(log_bounds, new)
        self._rebuild(log_bounds)
        return self.recenter((f, g, self.row_lse(g), self.col_lse(f))), False

    def recenter(self, state):
        """Balanced OT leaves one constant free per connected group of active blocks (``f + t``,
        ``g - t`` there give the same plan on them): set it so that the group's mean ``f`` and
        mean ``g`` are equal. Without it, corrections on decoupled groups let the potentials
        drift apart in magnitude (losing float32 digits of ``f + g``) and make the mass bounds
        of the blocks between groups arbitrary."""
        if not self.balanced:
            return state
        f, g, lse_row, lse_col = state
        blocks = self.blocks
        kq, kr = blocks.active.shape
        rows, cols = np.nonzero(blocks.active)
        graph = coo_matrix((np.ones(len(rows)), (rows, kq + cols)), shape=(kq + kr, kq + kr))
        _, group = connected_components(graph, directed=False)
        fh = self._host(f).astype(np.float64)
        gh = self._host(g).astype(np.float64)
        f_ok, g_ok = np.isfinite(fh), np.isfinite(gh)
        fq, gr = group[blocks.lx.codes], group[kq + blocks.ly.codes]
        n = int(group.max()) + 1
        f_mean = np.bincount(fq[f_ok], weights=fh[f_ok], minlength=n)
        g_mean = np.bincount(gr[g_ok], weights=gh[g_ok], minlength=n)
        f_mean /= np.maximum(np.bincount(fq[f_ok], minlength=n), 1)
        g_mean /= np.maximum(np.bincount(gr[g_ok], minlength=n), 1)
        t = 0.5 * (f_mean - g_mean)
        if np.abs(t).max(initial=0.0) < 1e-3 * self.blocks.epsilon:
            return state
        tf = self.put(t[fq].astype(self.dtype))
        tg = self.put(t[gr].astype(self.dtype))
        inv_eps = 1.0 / self.blocks.epsilon
        return (f - tf, g + tg, lse_row + tf * inv_eps, lse_col - tg * inv_eps)


@jax.jit
def _update(log_marginal, lse, tau, eps):
    return tau * eps * (log_marginal - lse)


def aggregate_active(
    blocks: ActiveBlocks,
    x,
    y,
    offset,
    f,
    g,
    *,
    epsilon,
    dtype,
    precision,
    progress,
    per_cell=False,
    devices=None,
):
    """Cluster-level sums of the plan over the active tiles (see
    :func:`~pairot.tl._ot.aggregate`); skipped blocks contribute nothing. ``f`` and ``g`` are
    the potentials in the original cell order. Reuses the stored tile kernels.

    With ``per_cell``, also ``row_cluster``: every tile lies in one reference cluster, so a
    query cell's sum per reference cluster is the sum of its tile row sums there (host side,
    from the row sums the tiles return anyway).

    With ``devices`` (several), every tile list is cut into one run per device
    (:mod:`._sharded_tiles`); the blocks' parts must then be those of a solve on the same
    devices, or none."""
    lx, ly = blocks.lx, blocks.ly
    tr, tc = blocks.tr, blocks.tc
    kq, kr = blocks.present.shape
    tiles = _tiles if devices is None else ShardedTiles(devices)
    put = jnp.asarray if devices is None else devices.put
    if not blocks.parts:
        plan = TilePlan.of(lx, ly, blocks.active, tr, tc)
        if devices is not None:
            plan = tiles.plan(plan)
        blocks.parts = [Part(blocks=blocks.active, row_plan=plan, col_plan=None)]
    fj = put(lx.pad(np.asarray(f, dtype=dtype), -np.inf))
    gj = put(ly.pad(np.asarray(g, dtype=dtype), -np.inf))
    xj = put(lx.pad(np.asarray(x, dtype=dtype), 0))
    yj = put(ly.pad(np.asarray(y, dtype=dtype), 0))
    off = put(np.asarray(offset, dtype=dtype))
    eps = put(np.asarray(epsilon, dtype=dtype))
    tm = np.zeros(kq * ly.n_padded)
    cost_mass = np.zeros(kq * kr)
    row_mass = np.zeros(lx.n_padded)
    row_cluster = np.zeros(lx.n_padded * kr) if per_cell else None
    total = sum(p.row_plan.n_tiles for p in blocks.parts)
    base = max(1, CALL_PAIRS // (tr * tc))
    with tqdm(total=total, desc="Aggregating plan", disable=not progress, leave=False) as bar:
        for part in blocks.parts:
            plan = part.row_plan
            out = (
                tiles.full((plan.capacity, tc), 0, dtype),
                tiles.full((plan.capacity,), 0, dtype),
                tiles.full((plan.capacity, tr), 0, dtype),
            )
            per_call = base * (8 if part.kernel is not None else 1)
            for t0 in range(0, plan.walk, per_call):
                t1 = min(plan.walk, t0 + per_call)
                out = tiles.aggregate_tiles(
                    *out,
                    xj,
                    yj,
                    fj,
                    gj,
                    off,
                    eps,
                    plan.rows,
                    plan.cols,
                    _int(t0),
                    _int(t1),
                    part.kernel,
                    part.row_min,
                    tr=tr,
                    tc=tc,
                    precision=precision,
                )
                jax.block_until_ready(out)
                bar.update(round((t1 - t0) * plan.n_tiles / max(plan.walk, 1)))
                check_interrupt()
            n_t = plan.n_tiles
            col_h, cost_h, row_h = (plan.host(v).astype(np.float64) for v in out)
            cols_h, rows_h = plan.col_tile * tc, plan.row_tile * tr
            index = plan.row_cluster[:, None] * ly.n_padded + cols_h[:, None] + np.arange(tc)
            tm += np.bincount(index.ravel(), weights=col_h.ravel(), minlength=tm.size)
            cost_mass += np.bincount(
                plan.row_cluster * kr + plan.col_cluster, weights=cost_h, minlength=kq * kr
            )
            row_index = (rows_h[:, None] + np.arange(tr)).ravel()
            row_mass += np.bincount(row_index, weights=row_h.ravel(), minlength=lx.n_padded)
            if per_cell:
                cell_index = (row_index.reshape(n_t, tr) * kr + plan.col_cluster[:, None]).ravel()
                row_cluster += np.bincount(
                    cell_index, weights=row_h.ravel(), minlength=row_cluster.size
                )
    tm = tm.reshape(kq, ly.n_padded)[:, ly.position]
    rcodes = ly.codes[ly.position]
    out = {
        "tm": tm,
        "mass": cluster_sums(tm, rcodes, kr),
        "cost_mass": cost_mass.reshape(kq, kr),
        "row_mass": row_mass[lx.position],
        "col_mass": tm.sum(axis=0),
    }
    if per_cell:
        out["row_cluster"] = row_cluster.reshape(lx.n_padded, kr)[lx.position]
    return out
