"""Sinkhorn split over several JAX devices: time per iteration, communication share, memory.

Run by hand (not by CI)::

    python benchmarks/bench_sharding.py                       # 1 and 2 CPU devices
    python benchmarks/bench_sharding.py --devices 1 2 4 --cells 8000

A CPU JAX fixes its device count at start-up, so every device count runs in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (on a GPU machine the subprocess uses
the first N GPUs instead). The problem is built like DatasetMap's augmented vectors (unit
features plus a label lookup, 8 x 8 clusters, float32, epsilon 0.05, ``batch_size`` 1024),
``--cells`` a side. For each device count and for log mode (the blocked cost, recomputed at
every update) and kernel mode (the stored kernel, each device holding its rows), printed:

- ``s/iter``: seconds per Sinkhorn iteration (median of ``--repeats`` device calls of
  ``--iterations`` iterations each, after a compiling call), the engine's own passes;
- ``no-comm s/iter`` and ``comm share``: the same work per device with every cross-device
  collective replaced by a local stand-in of the same shape (all-gather by tiling the local
  values, the reductions by nothing): ``1 - no_comm / with_comm`` is the share of the time
  spent in the collectives (on one device: none);
- ``MB/device``: the largest, over the devices, of the bytes one device holds of the solve's
  arrays (the cells' vectors, marginals, the state's potentials and log-sum-exps, and in
  kernel mode its rows of the kernel; not the temporaries of a pass, which ``batch_size``
  bounds); ``memory_stats`` peak where the platform reports one (CPU devices do not).

Figures are printed (and with ``--json`` written as JSON), never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def problem(cells: int, genes: int, seed: int = 0):
    """Augmented vectors as DatasetMap builds them (see tests/ot_problems.py), float32."""
    rng = np.random.default_rng(seed)
    k = 8
    labels = np.where(np.eye(k) > 0, 0.1, rng.uniform(0.3, 1.0, size=(k, k)))
    qc, rc = rng.integers(k, size=cells), rng.integers(k, size=cells)
    x = rng.normal(size=(cells, genes))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x[rng.integers(cells, size=cells)] + 0.3 * rng.normal(size=(cells, genes))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x_aug = np.concatenate([-0.25 * x, 1.5 * labels[qc]], axis=1).astype(np.float32)
    y_aug = np.concatenate([y, np.eye(k)[rc]], axis=1).astype(np.float32)
    a = (1.0 / np.bincount(qc, minlength=k)[qc] / k).astype(np.float32)
    b = (1.0 / np.bincount(rc, minlength=k)[rc] / k).astype(np.float32)
    return x_aug, y_aug, 0.25, a, b


def _timed(call, repeats: int) -> float:
    """Median seconds of ``call()`` (a device call, waited for) after one compiling call."""
    import jax

    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _no_comm_steps(passes, kernel_mode: bool):
    """The sharded iterations of ``passes`` with each collective replaced by a local stand-in
    of the same shape: the same work per device, no communication."""
    import jax.numpy as jnp
    from jax import lax

    from pairot.tl._ot._kernel import _kernel_row_lse
    from pairot.tl._ot._logdomain import _blocked_lse, _iterate
    from pairot.tl._ot._shard import ROWS, WHOLE, local_rows, sharded

    d = passes.devices.n
    n_local, m_local = passes.n_local, passes.m_local
    bx, by, prec = passes.block_x, passes.block_y, passes.precision

    def tile(v):  # stands in for the all-gather
        return jnp.tile(v, d)

    if not kernel_mode:

        def local(x, y, a, b, f, g, lse_row, lse_col, n_steps, offset, eps, tau_a, tau_b):
            inv = 1.0 / eps
            xl, yl = local_rows(x, n_local), local_rows(y, m_local)

            def row(g):
                return _blocked_lse(xl, y, tile(g) * inv, offset, inv, bx, prec)

            def col(f):
                return _blocked_lse(yl, x, tile(f) * inv, offset, inv, by, prec)

            return _iterate(row, col, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b)

        specs = (WHOLE, WHOLE, *(ROWS,) * 6, *(WHOLE,) * 5)
    else:

        def local(K, row_min, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b):
            inv = 1.0 / eps

            def row(g):
                return _kernel_row_lse(K, row_min, tile(g), inv, prec)

            def col(f):
                h = f - row_min
                u = jnp.exp((h - jnp.max(h)) * inv)
                partial = jnp.matmul(u, K, precision=prec)
                own = lax.dynamic_slice_in_dim(partial, 0, partial.shape[0] // d)
                return jnp.max(h) * inv + jnp.log(own)

            return _iterate(row, col, a, b, f, g, lse_row, lse_col, n_steps, eps, tau_a, tau_b)

        specs = (*(ROWS,) * 8, *(WHOLE,) * 4)
    return sharded(
        passes.devices, ("bench_no_comm", kernel_mode), local, specs, (*(ROWS,) * 4, WHOLE)
    )


def _device_bytes(arrays) -> dict:
    """Bytes of ``arrays`` (JAX arrays) held by each device."""
    held: dict = {}
    for array in arrays:
        for shard in array.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


def child(n_devices: int, args) -> dict:
    import jax
    import jax.numpy as jnp

    from pairot.tl._ot._checks import _PRECISIONS
    from pairot.tl._ot._passes import _LogPasses
    from pairot.tl._ot._progress import _ConvergenceBar
    from pairot.tl._ot._shard import resolve_devices
    from pairot.tl._ot._sharded import ShardedPasses

    devices = jax.devices()[:n_devices]
    x, y, offset, a, b = problem(args.cells, args.genes)
    scalars = {
        k: np.asarray(v, dtype=np.float32)
        for k, v in (("offset", offset), ("eps", 0.05), ("tau_a", 1.0), ("tau_b", 1.0))
    }
    bar = _ConvergenceBar(1e-3, False, "bench")
    prec = _PRECISIONS["highest"]
    devs = resolve_devices(devices)
    block = min(1024, args.cells)
    out = {"n_devices": n_devices, "platform": devices[0].platform, "cells": args.cells}
    for mode in ("log", "kernel"):
        if n_devices == 1:
            with jax.default_device(devices[0]):
                passes = _LogPasses(
                    jnp.asarray(x),
                    jnp.asarray(y),
                    jnp.asarray(a),
                    jnp.asarray(b),
                    {k: jnp.asarray(v) for k, v in scalars.items()},
                    block,
                    block,
                    prec,
                    bar,
                )
        else:
            passes = ShardedPasses(devs, x, y, a, b, scalars, block, block, prec, bar)
        kernel = (
            passes.make_kernel(offset, 0.05, np.dtype(np.float32)) if mode == "kernel" else None
        )
        if mode == "kernel" and kernel is None:
            out[mode] = {"error": "kernel would underflow"}
            continue
        state = passes.zero_state(kernel)
        steps = args.iterations
        if kernel is None:

            def run(state=state, passes=passes, steps=steps):
                return passes.steps(state, steps, 0)[-1]
        else:

            def run(state=state, passes=passes, kernel=kernel, steps=steps):
                return passes.kernel_steps(kernel, state, steps)[-1]

        per_iteration = _timed(run, args.repeats) / steps
        row = {"s_per_iteration": per_iteration}
        if n_devices > 1:
            fn = _no_comm_steps(passes, kernel is not None)
            s = passes.s
            n = passes.devices.scalar(steps, np.int32)
            if kernel is None:
                inputs = (passes.x, passes.y, passes.a, passes.b, *state, n, s["offset"])
            else:
                inputs = (kernel.K, kernel.row_min, passes.a, passes.b, *state, n)
            inputs = (*inputs, s["eps"], s["tau_a"], s["tau_b"])
            no_comm = _timed(lambda inputs=inputs, fn=fn: fn(*inputs)[-1], args.repeats) / steps
            row["no_comm_s_per_iteration"] = no_comm
            row["comm_share"] = max(0.0, 1.0 - no_comm / per_iteration)
        else:
            row["no_comm_s_per_iteration"] = per_iteration
            row["comm_share"] = 0.0
        arrays = [passes.x, passes.y, passes.a, passes.b, *state]
        if kernel is not None:
            arrays += [kernel.K, kernel.row_min]
        row["mb_per_device"] = max(_device_bytes(arrays).values()) / 1e6
        stats = [dev.memory_stats() for dev in devices]
        peaks = [st.get("peak_bytes_in_use") for st in stats if st]
        row["peak_mb_per_device"] = max(peaks) / 1e6 if peaks else None
        out[mode] = row
        del passes, kernel, state, run
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cells", type=int, default=6000)
    parser.add_argument("--genes", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args)))
        return
    rows = []
    for count in args.devices:
        env = dict(os.environ)
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
        command = [sys.executable, __file__, "--child", str(count)]
        for name in ("cells", "genes", "iterations", "repeats"):
            command += [f"--{name}", str(getattr(args, name))]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.cells:,} x {args.cells:,} cells, {args.genes} genes + 8 labels, float32")
    print(f"{'devices':>7} {'mode':>6} {'s/iter':>9} {'no-comm':>9} {'comm':>6} {'MB/dev':>8}")
    for row in rows:
        for mode in ("log", "kernel"):
            r = row[mode]
            print(
                f"{row['n_devices']:>7} {mode:>6} {r['s_per_iteration']:>9.4f} "
                f"{r['no_comm_s_per_iteration']:>9.4f} {r['comm_share']:>6.1%} "
                f"{r['mb_per_device']:>8.1f}"
                + (
                    ""
                    if r["peak_mb_per_device"] is None
                    else f"  peak {r['peak_mb_per_device']:.1f}"
                )
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
