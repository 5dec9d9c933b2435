"""Device sharding: a solve's 1-D mesh, padded row placement, cross-device log-sum-exps.

A solve runs on the devices of ``devices=`` (default: all of them, ``jax.devices()``, which
in a multi-process run started with ``jax.distributed.initialize`` are the devices of every
process). With one device the engine runs its single-device code unchanged (on that device);
with several, every pass over the cost runs row-sharded over a :class:`jax.sharding.Mesh` of
the devices, with one axis, :data:`AXIS` (see :mod:`._sharded`).

**Padding.** A side of ``n`` cells is padded to ``n_pad``, the next multiple of the device
count, and device ``k`` holds rows ``k n_pad / D .. (k + 1) n_pad / D``. Padded rows repeat
the first cell's vector with zero mass and ``-inf`` potential: every cost they add is a cost
that already occurs (so row minima, cost spreads and the kernel-mode decision are those of the
unpadded problem), and every plan entry they touch is ``exp(-inf) = 0``.

**Stable combination.** A log-sum-exp over cells held by several devices is combined from
the devices' partial ones ``l_k`` as ``M + log sum_k exp(l_k - M)`` with ``M = max_k l_k``
(an all-reduce max, then an all-reduce sum of the shifted exponentials): no overflow, and
``-inf`` where every partial is ``-inf``.

Host transfers go through :meth:`Devices.to_host`, which also works for arrays spanning the
devices of other processes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: The name of the mesh axis the cells are sharded over.
AXIS = "cells"
ROWS = PartitionSpec(AXIS)
WHOLE = PartitionSpec()


def resolve_devices(devices) -> Devices:
    """The checked ``devices`` argument of :func:`~._driver.sinkhorn` and
    :func:`~._aggregate.aggregate`: ``None`` for all devices (``jax.devices()``), or a
    non-empty list or tuple of distinct :class:`jax.Device` of one platform."""
    if devices is None:
        return Devices(tuple(jax.devices()))
    if isinstance(devices, Devices):
        return devices
    fix = "pass None (all devices) or a list of jax devices, e.g. devices=jax.devices()[:2]"
    if isinstance(devices, jax.Device):
        msg = f"devices must be a list of jax devices, got the single device {devices!r}; {fix}."
        raise TypeError(msg)
    if not isinstance(devices, list | tuple):
        msg = f"devices must be None or a list of jax devices, got {type(devices).__name__}; {fix}."
        raise TypeError(msg)
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        msg = f"devices must hold jax devices only, got {bad[0]!r}; {fix}."
        raise TypeError(msg)
    if not devices:
        msg = f"devices must not be empty; {fix}."
        raise ValueError(msg)
    if len(set(devices)) != len(devices):
        msg = f"devices must not repeat a device, got {list(devices)!r}; list each device once."
        raise ValueError(msg)
    platforms = sorted({d.platform for d in devices})
    if len(platforms) > 1:
        msg = (
            f"devices must all be of one platform, got {', '.join(platforms)}; pass e.g. "
            "jax.devices('gpu')."
        )
        raise ValueError(msg)
    if jax.process_count() > 1 and not any(d.process_index == jax.process_index() for d in devices):
        msg = (
            f"devices holds no device of this process (process {jax.process_index()} of "
            f"{jax.process_count()}); in a multi-process run every process passes the same "
            "devices, and each must own some of them (devices=None uses all)."
        )
        raise ValueError(msg)
    return Devices(tuple(devices))


@dataclass(frozen=True, eq=False)
class Devices:
    """The devices of a solve and their 1-D mesh over the cells (see the module docstring)."""

    devices: tuple

    @property
    def n(self) -> int:
        """The number of devices."""
        return len(self.devices)

    @cached_property
    def mesh(self) -> Mesh:
        return Mesh(np.array(self.devices, dtype=object), (AXIS,))

    @cached_property
    def rows(self) -> NamedSharding:
        """Arrays split along their first axis, one block of rows per device."""
        return NamedSharding(self.mesh, ROWS)

    @cached_property
    def whole(self) -> NamedSharding:
        """Arrays replicated on every device."""
        return NamedSharding(self.mesh, WHOLE)

    def placed(self):
        """A context: on one device, JAX's default device while the single-device code runs
        on it (a no-op on the default device already); on several, nothing (the sharded
        passes place their arrays themselves)."""
        if self.n == 1:
            return jax.default_device(self.devices[0])
        return contextlib.nullcontext()

    def padded(self, n: int) -> int:
        """``n`` rounded up to a multiple of the device count."""
        return -(-n // self.n) * self.n

    def pad(self, values, fill=None) -> np.ndarray:
        """``values`` (along axis 0) padded to :meth:`padded` rows: copies of its first row
        (``fill=None``) or ``fill``."""
        values = np.asarray(values)
        extra = self.padded(values.shape[0]) - values.shape[0]
        if extra == 0:
            return values
        if fill is None:
            tail = np.repeat(values[:1], extra, axis=0)
        else:
            tail = np.full((extra, *values.shape[1:]), fill, dtype=values.dtype)
        return np.concatenate([values, tail])

    def put_rows(self, values, fill=None) -> jax.Array:
        """``values`` padded (:meth:`pad`) and split by rows over the devices."""
        return jax.device_put(self.pad(values, fill), self.rows)

    def put(self, values, pad: bool = False, fill=None) -> jax.Array:
        """``values`` on every device (padded along axis 0 with ``pad``)."""
        values = self.pad(values, fill) if pad else np.asarray(values)
        return jax.device_put(values, self.whole)

    def zeros(self, shape: tuple, dtype) -> jax.Array:
        """Zeros split by rows, made on the devices (no host copy)."""
        key = (self.devices, "zeros", tuple(shape), np.dtype(dtype).name)
        if key not in _COMPILED:
            _COMPILED[key] = jax.jit(lambda: jnp.zeros(shape, dtype=dtype), out_shardings=self.rows)
        return _COMPILED[key]()

    def scalar(self, value, dtype) -> jax.Array:
        return jax.device_put(np.asarray(value, dtype=dtype), self.whole)

    def to_host(self, array) -> np.ndarray:
        """A numpy copy of ``array``, also when it spans other processes' devices (gathered
        onto every device first)."""
        if not isinstance(array, jax.Array) or array.is_fully_addressable:
            return np.asarray(array)
        if not array.is_fully_replicated:
            key = (self.devices, "replicate")
            if key not in _COMPILED:
                _COMPILED[key] = jax.jit(lambda v: v, out_shardings=self.whole)
            array = _COMPILED[key](array)
        return np.asarray(array.addressable_data(0))


def combine_lse(partial, axis_name: str = AXIS):
    """``LSE`` over the devices of each entry of ``partial`` (inside ``shard_map``): the
    all-reduce max, then the all-reduce sum of the shifted exponentials; ``-inf`` where
    every device's value is ``-inf``."""
    top = lax.pmax(partial, axis_name)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    total = lax.psum(jnp.exp(partial - safe), axis_name)
    return jnp.where(jnp.isfinite(top), safe + jnp.log(total), -jnp.inf)


def local_rows(array, n_local: int):
    """This device's ``n_local`` rows of a replicated ``array`` (inside ``shard_map``)."""
    return lax.dynamic_slice_in_dim(array, lax.axis_index(AXIS) * n_local, n_local, axis=0)


def gather(local):
    """The whole of a row-sharded vector, from every device's rows (inside ``shard_map``)."""
    return lax.all_gather(local, AXIS, tiled=True)


#: The sharded functions built so far, by devices and key (jit caches their compilations).
_COMPILED: dict = {}


def sharded(devices: Devices, key: tuple, function, in_specs, out_specs, **jit_kwargs):
    """``jax.jit(jax.shard_map(function, ...))`` over the mesh of ``devices``, built once per
    ``(devices, key)``: ``key`` must name ``function`` and every value its closure holds."""
    full = (devices.devices, *key)
    if full not in _COMPILED:
        _COMPILED[full] = jax.jit(
            # check_vma=False: the single-device kernels run unchanged on each device's rows
            # (their loop carries start device-invariant and turn device-varying)
            jax.shard_map(
                function,
                mesh=devices.mesh,
                in_specs=in_specs,
                out_specs=out_specs,
                check_vma=False,
            ),
            **jit_kwargs,
        )
    return _COMPILED[full]
