"""The active-block (sparse) mode's tile passes, split over several devices.

A tile list (:class:`~._sparse.TilePlan`) is cut into as many contiguous runs of equal
length as there are devices (tiles are listed row tile by row tile, so each device gets a
band of rows); each device runs the single-device tile kernels of :mod:`._tiles` on its run
and holds the stored tile kernels of its tiles, so that their memory is divided by the
device count. The cells' vectors and the potentials are on every device.

Every device walks the same number of slots (the longest run, :attr:`ShardedPlan.walk`); the
slots past the end of a shorter run repeat its first tile and carry an out-of-range segment,
so that the segment reductions drop them and the host ignores their sums. The per-segment
log-sum-exps of the devices are then combined with :func:`~._shard.combine_lse`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from . import _tiles
from ._shard import ROWS, WHOLE, Devices, combine_lse, sharded

_R, _W = ROWS, WHOLE

#: The segment of a slot past the end of a device's run: dropped by the segment reductions.
_DROPPED = 2**30


@dataclass
class ShardedPlan:
    """A :class:`~._sparse.TilePlan` cut into one run of tiles per device.

    ``rows``, ``cols`` and ``segments`` are split by device (``walk`` slots each); the host
    arrays (``row_tile``, ... in the order of ``plan``) are those of ``plan``.
    """

    plan: object  # the TilePlan
    devices: Devices
    starts: np.ndarray  # first tile of every device's run, and the end, (D + 1,)
    walk: int  # slots per device
    rows: jax.Array
    cols: jax.Array
    index: np.ndarray  # the plan's tile in every slot, (D * walk,)
    real: np.ndarray  # whether a slot holds a tile of its device's run, (D * walk,)
    segments: jax.Array | None = None

    @classmethod
    def of(cls, plan, devices: Devices) -> ShardedPlan:
        d = devices.n
        starts = np.linspace(0, plan.n_tiles, d + 1).round().astype(np.int64)
        walk = max(1, int(np.diff(starts).max()))
        # every device's slots: its tiles, then its first tile again (or the plan's first)
        index = np.empty((d, walk), dtype=np.int64)
        real = np.zeros((d, walk), dtype=bool)
        for k in range(d):
            count = starts[k + 1] - starts[k]
            first = starts[k] if count else 0
            index[k] = first
            index[k, :count] = np.arange(starts[k], starts[k + 1])
            real[k, :count] = True
        index, real = index.ravel(), real.ravel()
        rows_h = np.asarray(plan.rows)[: plan.n_tiles] if plan.n_tiles else np.zeros(1, int)
        cols_h = np.asarray(plan.cols)[: plan.n_tiles] if plan.n_tiles else np.zeros(1, int)
        if not plan.n_tiles:
            index[:] = 0
        out = cls(
            plan=plan,
            devices=devices,
            starts=starts,
            walk=walk,
            rows=devices.put_rows(rows_h[index].astype(np.int32)),
            cols=devices.put_rows(cols_h[index].astype(np.int32)),
            index=index,
            real=real,
        )
        out.segments = out.slot_codes(plan.row_tile)
        return out

    # the TilePlan attributes the passes read
    @property
    def n_tiles(self) -> int:
        return self.plan.n_tiles

    @property
    def capacity(self) -> int:
        """Slots of a pass's buffers, on all devices together."""
        return self.devices.n * self.walk

    @property
    def kernel_slots(self) -> int:
        return self.capacity

    @property
    def row_tile(self):
        return self.plan.row_tile

    @property
    def col_tile(self):
        return self.plan.col_tile

    @property
    def row_cluster(self):
        return self.plan.row_cluster

    @property
    def col_cluster(self):
        return self.plan.col_cluster

    def slot_codes(self, values: np.ndarray) -> jax.Array:
        """One code per tile (``values``, in the plan's order) in every device's slots;
        slots past a run's end get a dropped segment."""
        values = np.asarray(values, dtype=np.int64)
        codes = np.full(self.capacity, _DROPPED, dtype=np.int64)
        codes[self.real] = values[self.index[self.real]] if len(values) else 0
        return self.devices.put_rows(codes.astype(np.int32))

    def segments_by_cluster(self, n_clusters: int) -> jax.Array:
        return self.slot_codes(self.plan.row_tile * n_clusters + self.plan.col_cluster)

    def host(self, values) -> np.ndarray:
        """The per-slot ``values`` of a pass (first axis: slots) of the real tiles, in the
        plan's order."""
        return self.devices.to_host(values)[self.real]


class ShardedTiles:
    """The functions of :mod:`._tiles` (same signatures) on every device's run of slots."""

    def __init__(self, devices: Devices):
        self.devices = devices

    def full(self, shape, value, dtype) -> jax.Array:
        """A buffer of per-slot values (first axis: slots, split by device)."""
        key = (self.devices.devices, "full", tuple(shape), float(value), np.dtype(dtype).name)
        return sharded(
            self.devices,
            key[1:],
            lambda: jnp.full((shape[0] // self.devices.n, *shape[1:]), value, dtype=dtype),
            (),
            _R,
        )()

    def plan(self, plan) -> ShardedPlan:
        return ShardedPlan.of(plan, self.devices)

    def _run(self, name, key, args, in_specs, out_specs, static, combined=None, donate=()):
        """The tile function ``_tiles.<name>`` (with its static arguments ``static``) on every
        device's run of slots: ``args`` split as ``in_specs``, the results as ``out_specs``,
        with ``combined`` (inside ``shard_map``) applied to them if given; ``key`` names the
        compiled function (:func:`~._shard.sharded`)."""
        tile_function = getattr(_tiles, name)

        def local(*local_args):
            out = tile_function(*local_args, **static)
            return out if combined is None else combined(out)

        fn = sharded(self.devices, key, local, in_specs, out_specs, donate_argnums=donate)
        return fn(*args)

    def tile_lse_partials(self, out, u, v, h, offset, inv_eps, rows, cols, t0, t1, **static):
        return self._run(
            "tile_lse_partials",
            ("tile_lse_partials", *sorted(static.items())),
            (out, u, v, h, offset, inv_eps, rows, cols, t0, t1),
            (_R, _W, _W, _W, _W, _W, _R, _R, _W, _W),
            _R,
            static,
            donate=(0,),
        )

    def combine(self, partials, segments, *, n_segments):
        return self._run(
            "combine",
            ("combine", n_segments),
            (partials, segments),
            (_R, _R),
            _W,
            {"n_segments": n_segments},
            combined=combine_lse,
        )

    def build_tile_kernels(
        self, kernel, row_min, spread, x, y, offset, eps, rows, cols, t0, t1, **static
    ):
        def spread_over_devices(out):
            kernel, row_min, spread = out
            return kernel, row_min, jax.lax.pmax(spread, "cells")

        return self._run(
            "build_tile_kernels",
            ("build_tile_kernels", *sorted(static.items())),
            (kernel, row_min, spread, x, y, offset, eps, rows, cols, t0, t1),
            (_R, _R, _W, _W, _W, _W, _W, _R, _R, _W, _W),
            (_R, _R, _W),
            static,
            combined=spread_over_devices,
            donate=(0, 1),
        )

    def _kernel_partials(
        self, name, out, kernel, row_min, potential, inv_eps, index, t0, t1, **static
    ):
        """The row or the column partials of the stored tile kernels (``_tiles.<name>``)."""
        return self._run(
            name,
            (name, *sorted(static.items())),
            (out, kernel, row_min, potential, inv_eps, index, t0, t1),
            (_R, _R, _R, _W, _W, _R, _W, _W),
            _R,
            static,
            donate=(0,),
        )

    def kernel_row_partials(self, out, kernel, row_min, g, inv_eps, cols, t0, t1, **static):
        return self._kernel_partials(
            "kernel_row_partials", out, kernel, row_min, g, inv_eps, cols, t0, t1, **static
        )

    def kernel_col_partials(self, out, kernel, row_min, f, inv_eps, rows, t0, t1, **static):
        return self._kernel_partials(
            "kernel_col_partials", out, kernel, row_min, f, inv_eps, rows, t0, t1, **static
        )

    def aggregate_tiles(
        self,
        col_sums,
        cost_sums,
        row_sums,
        x,
        y,
        f,
        g,
        offset,
        eps,
        rows,
        cols,
        t0,
        t1,
        kernel=None,
        row_min=None,
        **static,
    ):
        with_kernel = kernel is not None
        sums = (col_sums, cost_sums, row_sums)
        extra = (kernel, row_min) if with_kernel else ()
        return self._run(
            "aggregate_tiles",
            ("aggregate_tiles", with_kernel, *sorted(static.items())),
            (*sums, x, y, f, g, offset, eps, rows, cols, t0, t1, *extra),
            (_R, _R, _R, *(_W,) * 6, _R, _R, _W, _W, *((_R, _R) if with_kernel else ())),
            (_R, _R, _R),
            static,
            donate=(0, 1, 2),
        )
