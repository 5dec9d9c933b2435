"""Cost of ``compute_mapping(None)`` + ``compute_distance()``, in Sinkhorn iterations.

Run by hand (not by CI)::

    python benchmarks/bench_outputs.py --sizes 2000 4000 8000

For each size the problem of ``bench_ot.py`` (simulated pair, 10 cell types, 350 HVGs,
epsilon 0.05, balanced) is solved with ``DatasetMap.solve`` (pairot's defaults: kernel mode at
these sizes). Then, interleaved (the order rotates every repeat), after one untimed call each
whose time (compilation included) is reported as ``cold``:

- ``outputs_kernel``: ``dm.compute_mapping(None)`` + ``dm.compute_distance()`` with the one
  aggregation pass reading the kernel of the solve (``aggregate(..., kernel=...)``);
- ``outputs_blocked``: the same with the pass recomputing the cost in blocks
  (``kernel=None``, the path without a kernel);
- ``per_cluster_loop``: an upstream-style baseline: for every query cluster, one full pass over
  the plan in row blocks (upstream per-pair cost, rows of other clusters masked), giving that
  cluster's column sums, cost-weighted and unweighted cost sums; the same final formulas;
- ``iteration_kernel`` / ``iteration_log``: one Sinkhorn iteration of the same problem in
  kernel mode (steady state, kernel prebuilt) and in log-domain mode, the units of the output
  costs.

The aggregation is called through ``DatasetMap`` (its cache cleared before each call); the
kernel is handed to ``pairot.tl._ot.aggregate`` by a thin wrapper when DatasetMap does
not pass it itself. Printed as JSON; the outputs of all three are checked to agree (< 1e-4).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from functools import partial

import numpy as np
from bench_ot import (
    EPSILON,
    BaselineSinkhorn,
    interleaved_medians,
    machine_header,
    make_inputs,
    padded_blocks,
)


@contextmanager
def aggregation_kernel(kernel):
    """Make ``DatasetMap``'s full aggregation pass use ``kernel`` (``None``: the cost)."""
    from pairot.tl import _ot

    original = _ot.aggregate

    def wrapped(x_aug, y_aug, *args, **kwargs):
        full = kernel is not None and (x_aug.shape[0], y_aug.shape[0]) == kernel.shape
        kwargs["kernel"] = kernel if full else None
        return original(x_aug, y_aug, *args, **kwargs)

    _ot.aggregate = wrapped
    try:
        yield
    finally:
        _ot.aggregate = original


def dm_outputs(dm, kernel) -> dict:
    dm._aggregates = None
    with aggregation_kernel(kernel):
        out = dm.compute_mapping(None)
        out["distance"] = dm.compute_distance()
    return {k: v.to_numpy() for k, v in out.items()}


class PerClusterLoop:
    """Upstream-style outputs: one pass over the plan per query cluster."""

    def __init__(self, inputs: dict, baseline: BaselineSinkhorn):
        import jax
        import jax.numpy as jnp
        from jax import lax

        n = inputs["x"].shape[0]
        block = min(inputs["batch_size"], n)
        x_rows = np.concatenate(
            [inputs["x"], inputs["query_codes"][:, None].astype(np.float32)], axis=1
        )
        x_blocks = jnp.asarray(padded_blocks(x_rows, block))
        y_all = baseline.y_all
        pair_cost = baseline.pair_cost
        n_blocks = x_blocks.shape[0]

        @jax.jit
        def cluster_pass(f, g, rows, x_blocks, y_all):  # arrays as arguments: no constant folding
            pad = n_blocks * block - n
            f_b = jnp.concatenate([f, jnp.zeros(pad, f.dtype)]).reshape(n_blocks, block)
            r_b = jnp.concatenate([rows, jnp.zeros(pad, rows.dtype)]).reshape(n_blocks, block)

            def one(args):
                xb, fb, rb = args
                cost = pair_cost(xb, y_all)
                plan = jnp.exp((fb[:, None] + g[None, :] - cost) / EPSILON) * rb[:, None]
                return plan.sum(0), (plan * cost).sum(0), (cost * rb[:, None]).sum(0)

            tm, pc, cs = lax.map(one, (x_blocks, f_b, r_b))
            return tm.sum(0), pc.sum(0), cs.sum(0)

        self.cluster_pass = partial(cluster_pass, x_blocks=x_blocks, y_all=y_all)
        self.inputs = inputs

    def __call__(self, f, g) -> dict:
        import jax.numpy as jnp

        from pairot.tl import _aggregate
        from pairot.tl._answers import _scores

        inp = self.inputs
        qc, rc = inp["query_codes"], inp["ref_codes"]
        kq, kr = inp["label_distance"].shape
        f, g = jnp.asarray(f, jnp.float32), jnp.asarray(g, jnp.float32)
        tm = np.zeros((kq, rc.size))
        cost_mass, cost_sum = np.zeros((kq, kr)), np.zeros((kq, kr))
        for k in range(kq):
            rows = jnp.asarray((qc == k).astype(np.float32))
            tm_k, pc_k, cs_k = (np.asarray(v, np.float64) for v in self.cluster_pass(f, g, rows))
            tm[k] = tm_k
            cost_mass[k] = np.bincount(rc, weights=pc_k, minlength=kr)
            cost_sum[k] = np.bincount(rc, weights=cs_k, minlength=kr)
        mass = _aggregate.cluster_sums(tm, rc, kr)
        a, b = inp["a"], inp["b"]
        return {
            "mean": _scores.mapping_mean(tm, b, rc, kr),
            "jensen_shannon": _scores.mapping_jensen_shannon(tm, b, rc, kr),
            "transported_mass": _scores.mapping_transported_mass(mass, a, qc),
            "distance": _scores.cluster_distance(mass, cost_mass, cost_sum, qc, rc),
        }


def iteration_timers(inputs: dict, solution, n_kernel: int, n_log: int):
    """One Sinkhorn iteration in kernel mode (kernel prebuilt) and in log mode, timed."""
    import jax
    import jax.numpy as jnp

    from pairot.tl._ot import _checks, _kernel, _logdomain

    f32 = np.float32
    kernel = solution.kernel
    a = jnp.asarray(inputs["a"].astype(f32))
    b = jnp.asarray(inputs["b"].astype(f32))
    x = jnp.asarray(inputs["x_aug"])
    y = jnp.asarray(inputs["y_aug"])
    state = (jnp.asarray(solution.f), jnp.asarray(solution.g)) * 2
    one, eps, off = (
        jnp.asarray(f32(1)),
        jnp.asarray(f32(EPSILON)),
        jnp.asarray(f32(inputs["offset"])),
    )
    kernel_steps = jnp.asarray(np.int32(n_kernel))
    log_steps = jnp.asarray(np.int32(n_log))
    block = min(inputs["batch_size"], x.shape[0])
    prec = _checks._PRECISIONS["highest"]

    def kernel_iterations():
        jax.block_until_ready(
            _kernel._kernel_steps(
                kernel.K, kernel.row_min, a, b, *state, kernel_steps, eps, one, one, precision=prec
            )
        )

    def log_iterations():
        jax.block_until_ready(
            _logdomain._sinkhorn_steps(
                x, y, a, b, *state, log_steps, off, eps, one, one,
                block_x=block, block_y=block, precision=prec,
            )
        )  # fmt: skip

    return kernel_iterations, log_iterations


def run(n: int, repeats: int, batch_size: int, n_genes: int, n_kernel: int, n_log: int) -> dict:
    inputs = make_inputs(n, n_genes=n_genes, batch_size=batch_size)
    dm = inputs["dm"]
    solution = dm.solve(progress=False)
    if solution.kernel is None:
        msg = "the solve did not run in kernel mode; raise kernel_memory_budget"
        raise RuntimeError(msg)
    baseline = PerClusterLoop(inputs, BaselineSinkhorn(inputs))
    kernel_its, log_its = iteration_timers(inputs, solution, n_kernel, n_log)

    tasks = {
        "outputs_kernel": lambda: dm_outputs(dm, solution.kernel),
        "outputs_blocked": lambda: dm_outputs(dm, None),
        "per_cluster_loop": lambda: baseline(solution.f, solution.g),
        "iteration_kernel": kernel_its,
        "iteration_log": log_its,
    }
    cold, results = {}, {}
    for name, task in tasks.items():
        start = time.perf_counter()
        results[name] = task()
        cold[name] = time.perf_counter() - start
    ref = results["outputs_blocked"]
    agreement = {
        name: max(float(np.nanmax(np.abs(results[name][k] - ref[k]))) for k in ref)
        for name in ("outputs_kernel", "per_cluster_loop")
    }
    for name, diff in agreement.items():
        if not diff < 1e-4:
            msg = f"{name} differs from the blocked outputs by {diff:.2e}"
            raise AssertionError(msg)

    med = interleaved_medians(tasks, repeats)
    it_kernel = med["iteration_kernel"] / n_kernel
    it_log = med["iteration_log"] / n_log
    out_k, out_b, loop = med["outputs_kernel"], med["outputs_blocked"], med["per_cluster_loop"]
    return {
        "n": n,
        "m": n,
        "query_clusters": int(inputs["label_distance"].shape[0]),
        "repeats": repeats,
        "iteration_kernel_s": round(it_kernel, 5),
        "iteration_log_s": round(it_log, 4),
        "outputs_kernel_s": round(out_k, 4),
        "outputs_blocked_s": round(out_b, 4),
        "per_cluster_loop_s": round(loop, 3),
        "outputs_kernel_in_kernel_iterations": round(out_k / it_kernel, 1),
        "outputs_kernel_in_log_iterations": round(out_k / it_log, 2),
        "outputs_blocked_in_log_iterations": round(out_b / it_log, 2),
        "per_cluster_loop_over_outputs_kernel": round(loop / out_k, 1),
        "per_cluster_loop_over_outputs_blocked": round(loop / out_b, 1),
        "cold_outputs_kernel_s": round(cold["outputs_kernel"], 3),
        "cold_outputs_blocked_s": round(cold["outputs_blocked"], 3),
        "cold_per_cluster_loop_s": round(cold["per_cluster_loop"], 3),
        "max_abs_diff_vs_blocked": {k: float(f"{v:.2e}") for k, v in agreement.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--kernel-iterations", type=int, default=20)
    parser.add_argument("--log-iterations", type=int, default=4)
    args = parser.parse_args()
    print(machine_header("bench_outputs"), flush=True)
    for n in args.sizes:
        res = run(
            n,
            args.repeats,
            args.batch_size,
            args.genes,
            args.kernel_iterations,
            args.log_iterations,
        )
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
