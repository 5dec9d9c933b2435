"""Per-iteration time of ``DatasetMap.solve`` against an upstream-style baseline Sinkhorn.

Run by hand (not by CI)::

    python benchmarks/bench_ot.py --sizes 2000 4000 8000
    python benchmarks/bench_ot.py --sizes 4000 8000 --memory   # peak memory of each path

For each size n, a simulated pair of n + n cells (10 cell types) is preprocessed with 350 HVGs
and the geometry and marginals are built by ``DatasetMap`` (epsilon 0.05, balanced). Three
solvers then run on the same problem, interleaved (the order rotates every repeat), after one
untimed call each that compiles:

- ``baseline``: log-domain Sinkhorn written from METHOD section 5 the way the upstream
  implementation evaluates the cost: the label code is appended to each cell's features as a
  float column, and a per-pair cost function (cosine with both norms recomputed per pair, the
  label distance looked up from the float column) is ``jax.vmap``-ed over the pairs of row
  blocks of ``batch_size`` cells; ``f`` from row log-sum-exps over query blocks, ``g`` as a
  column reduction (``logsumexp(axis=0)``) over blocks of reference columns.
- ``pairot``: ``pairot.tl._ot.sinkhorn`` with its defaults, the call ``DatasetMap.solve``
  makes (kernel mode at these sizes: the kernel is built once per solve).
- ``pairot_log``: the same with ``kernel_memory_budget=0`` (blocked log-domain updates, the
  path taken when the kernel does not fit the budget).

Each runs ``--iterations`` iterations (the threshold is never reached). Printed per size, as
JSON: seconds per iteration of each (for ``pairot``, without the kernel build, which is timed
apart and also reported amortized over a real solve), the ratios, the time of a solve to the
default threshold 1e-3 for each, and the largest difference between the baseline's potentials
and pairot's after the same number of iterations (checked < 1e-4). With ``--memory``, each
pairot path also runs once in a fresh process that reports its peak resident memory during that
first solve (compilation included, the same for both paths) above the memory held before it.
Figures are printed, never asserted (except the agreement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np

EPSILON = 0.05


# --------------------------------------------------------------------------- inputs
def make_inputs(n: int, *, n_genes: int = 2000, batch_size: int = 1024, seed: int = 0) -> dict:
    """Simulate, preprocess and build the geometry and marginals through ``DatasetMap``."""
    import pairot as pr

    query, reference = pr.datasets.simulate_pair(
        n_cells_query=n,
        n_cells_reference=n,
        n_genes=n_genes,
        n_cell_types=10,
        random_state=seed,
    )
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=350
    )
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(batch_size=batch_size, epsilon=EPSILON)
    dm.init_problem()
    geom = dm.geom
    return {
        "dm": dm,
        "x": np.asarray(geom.x, dtype=np.float32),
        "y": np.asarray(geom.y, dtype=np.float32),
        "x_aug": geom.x_aug,
        "y_aug": geom.y_aug,
        "offset": float(geom.offset),
        "query_codes": geom.query_codes,
        "ref_codes": geom.ref_codes,
        "label_distance": geom.label_distance,
        "lambda_feature": geom.lambda_feature,
        "lambda_label": geom.lambda_label,
        "a": dm._problem["a"],
        "b": dm._problem["b"],
        "batch_size": batch_size,
    }


# --------------------------------------------------------------------------- baseline
def upstream_cost_function(label_distance, lambda_feature: float, lambda_label: float):
    """Per-pair cost on feature vectors that carry their label code as a last float column."""
    import jax.numpy as jnp

    table = jnp.asarray(label_distance, dtype=jnp.float32)

    def cost(xi, yj):
        u, v = xi[:-1], yj[:-1]
        norms = jnp.linalg.norm(u) * jnp.linalg.norm(v)
        cos = jnp.where(norms > 0, jnp.dot(u, v) / jnp.where(norms > 0, norms, 1.0), 0.0)
        label = table[xi[-1].astype(jnp.int32), yj[-1].astype(jnp.int32)]
        return lambda_feature * 0.5 * (1.0 - cos) + lambda_label * label

    return cost


def with_label_column(features: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.concatenate([features, codes[:, None].astype(np.float32)], axis=1).astype(np.float32)


def padded_blocks(points: np.ndarray, block: int) -> np.ndarray:
    """Rows split in blocks of ``block``, the last one padded with copies of the first row."""
    n = points.shape[0]
    n_blocks = -(-n // block)
    pad = np.repeat(points[:1], n_blocks * block - n, axis=0)
    return np.concatenate([points, pad]).reshape(n_blocks, block, points.shape[1])


class BaselineSinkhorn:
    """Plain log-domain Sinkhorn, upstream style (see the module docstring)."""

    def __init__(self, inputs: dict, batch_size: int | None = None):
        import jax
        import jax.numpy as jnp
        from jax import lax
        from jax.scipy.special import logsumexp

        batch_size = batch_size or inputs["batch_size"]
        xs = with_label_column(inputs["x"], inputs["query_codes"])
        ys = with_label_column(inputs["y"], inputs["ref_codes"])
        n, m = xs.shape[0], ys.shape[0]
        bx, by = min(batch_size, n), min(batch_size, m)
        self.cost = upstream_cost_function(
            inputs["label_distance"], inputs["lambda_feature"], inputs["lambda_label"]
        )
        pair_cost = jax.vmap(jax.vmap(self.cost, (None, 0)), (0, None))  # (B, d), (m, d) -> (B, m)
        self.pair_cost = pair_cost
        eps = EPSILON
        # the arrays are arguments of the jitted function, not constants closed over (XLA
        # would embed and constant-fold them, which takes seconds already at 800 cells)
        self._args = (
            jnp.asarray(xs),
            jnp.asarray(ys),
            jnp.asarray(padded_blocks(xs, bx)),
            jnp.asarray(padded_blocks(ys, by)),
            jnp.log(jnp.asarray(inputs["a"], dtype=jnp.float32)),
            jnp.log(jnp.asarray(inputs["b"], dtype=jnp.float32)),
        )

        def update_f(g, y_all, x_blocks, log_a):
            def block_lse(xb):
                return logsumexp((g[None, :] - pair_cost(xb, y_all)) / eps, axis=1)

            lse = lax.map(block_lse, x_blocks).reshape(-1)[:n]
            return eps * (log_a - lse)

        def update_g(f, x_all, y_blocks, log_b):
            def block_lse(yb):  # cost of all query cells against a block of reference cells
                return logsumexp((f[:, None] - pair_cost(x_all, yb)) / eps, axis=0)

            lse = lax.map(block_lse, y_blocks).reshape(-1)[:m]
            return eps * (log_b - lse)

        @partial(jax.jit, static_argnames="n_iterations")
        def run(f, g, x_all, y_all, x_blocks, y_blocks, log_a, log_b, n_iterations):
            def body(_, state):
                f, g = state
                f = update_f(g, y_all, x_blocks, log_a)
                g = update_g(f, x_all, y_blocks, log_b)
                return f, g

            return lax.fori_loop(0, n_iterations, body, (f, g))

        self._run = run
        self.n, self.m = n, m
        self.x_all, self.y_all = self._args[0], self._args[1]

    def __call__(self, n_iterations: int):
        import jax
        import jax.numpy as jnp

        zeros_f = jnp.zeros(self.n, dtype=jnp.float32)
        zeros_g = jnp.zeros(self.m, dtype=jnp.float32)
        f, g = jax.block_until_ready(
            self._run(zeros_f, zeros_g, *self._args, n_iterations=n_iterations)
        )
        return np.asarray(f), np.asarray(g)


# --------------------------------------------------------------------------- pairot
def pairot_solve(inputs: dict, n_iterations: int | None, *, solver=None, **kwargs):
    """The call ``DatasetMap.solve`` makes; a fixed number of iterations if given.

    ``solver``: the ``sinkhorn`` function to call (default pairot's, imported here).
    """
    if solver is None:
        from pairot.tl._ot import sinkhorn as solver

    fixed = {} if n_iterations is None else {"threshold": 1e-30, "max_iterations": n_iterations}
    return solver(
        inputs["x_aug"],
        inputs["y_aug"],
        inputs["offset"],
        inputs["a"],
        inputs["b"],
        epsilon=EPSILON,
        batch_size=inputs["batch_size"],
        progress=False,
        **fixed,
        **kwargs,
    )


def kernel_build(inputs: dict) -> None:
    """The kernel-mode setup alone (what one solve adds to its iterations)."""
    import jax
    import jax.numpy as jnp

    from pairot.tl._ot import _checks, _kernel

    n = inputs["x_aug"].shape[0]
    out = _kernel._build_kernel(
        jnp.asarray(inputs["x_aug"]),
        jnp.asarray(inputs["y_aug"]),
        jnp.asarray(np.float32(inputs["offset"])),
        jnp.asarray(np.float32(EPSILON)),
        block=min(inputs["batch_size"], n),
        precision=_checks._PRECISIONS["highest"],
    )
    jax.block_until_ready(out)


def machine_header(name: str, device: str = "") -> str:
    """First line of a benchmark's output: platform, cores, jax version and backend, date."""
    import jax

    backend = jax.default_backend() + (f": {device}" if device else "")
    return (
        f"# {name}: {platform.platform()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"({backend}), {time.strftime('%Y-%m-%d')}"
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(tasks: dict, repeats: int) -> dict:
    """Median seconds of each task, the tasks run in rotating order so that load from other
    processes falls on all of them alike."""
    times = {name: [] for name in tasks}
    names = list(tasks)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            times[name].append(timed(tasks[name]))
    return {name: float(np.median(v)) for name, v in times.items()}


# --------------------------------------------------------------------------- memory
def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return -1


def memory_probe(path: str, mode: str) -> None:
    """Child process: peak resident memory of one solve (compilation included) above the
    memory held once JAX is initialized and the inputs are loaded."""
    import jax.numpy as jnp

    data = dict(np.load(path))
    inputs = {k: data[k] for k in ("x_aug", "y_aug", "a", "b")}
    inputs["offset"] = float(data["offset"])
    inputs["batch_size"] = int(data["batch_size"])
    budget = {} if mode == "pairot" else {"kernel_memory_budget": 0}
    jnp.zeros(1).block_until_ready()  # initialize the runtime
    before = _rss_kb("VmRSS")
    out = pairot_solve(inputs, 10, **budget)
    peak = _rss_kb("VmHWM")
    print(json.dumps({"mode": out.mode, "extra_peak_mb": round((peak - before) / 1024, 1)}))


def measure_memory(inputs: dict) -> dict:
    n, m = inputs["x_aug"].shape[0], inputs["y_aug"].shape[0]
    out = {
        "n x m float32 (MB)": round(n * m * 4 / 2**20, 1),
        "batch_size x m float32 (MB)": round(inputs["batch_size"] * m * 4 / 2**20, 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.npz")
        np.savez(
            path,
            **{k: inputs[k] for k in ("x_aug", "y_aug", "a", "b", "offset", "batch_size")},
        )
        for mode in ("pairot_log", "pairot"):
            res = subprocess.run(
                [sys.executable, __file__, "--probe", path, mode],
                check=True,
                capture_output=True,
                text=True,
            )
            probe = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"{mode} extra peak RSS (MB)"] = probe["extra_peak_mb"]
    return out


# --------------------------------------------------------------------------- main
def run(n: int, iterations: int, repeats: int, batch_size: int, n_genes: int, memory: bool):
    inputs = make_inputs(n, n_genes=n_genes, batch_size=batch_size)
    baseline = BaselineSinkhorn(inputs)

    # one untimed call each (compilation), then the agreement check
    reference = pairot_solve(inputs, None)
    n_solve = reference.n_iterations
    f_base, g_base = baseline(n_solve)
    diff_base = 0.0
    for kwargs in ({}, {"kernel_memory_budget": 0}):
        out = pairot_solve(inputs, n_solve, **kwargs)
        diff = max(np.abs(out.f - f_base).max(), np.abs(out.g - g_base).max())
        if not diff < 1e-4:
            msg = f"baseline and pairot ({out.mode}) differ by {diff:.2e} after {n_solve} its"
            raise AssertionError(msg)
        diff_base = max(diff_base, diff)
    baseline(iterations)
    pairot_solve(inputs, iterations, kernel_memory_budget=0)
    kernel_build(inputs)

    tasks = {
        "baseline": lambda: baseline(iterations),
        "pairot": lambda: pairot_solve(inputs, iterations),
        "pairot_log": lambda: pairot_solve(inputs, iterations, kernel_memory_budget=0),
        "kernel_build": lambda: kernel_build(inputs),
        "pairot_solve": lambda: pairot_solve(inputs, None),
    }
    med = interleaved_medians(tasks, repeats)
    base_it = med["baseline"] / iterations
    kernel_it = (med["pairot"] - med["kernel_build"]) / iterations
    log_it = med["pairot_log"] / iterations
    result = {
        "n": n,
        "m": n,
        "d": int(inputs["x_aug"].shape[1]),
        "batch_size": batch_size,
        "iterations_timed": iterations,
        "repeats": repeats,
        "baseline_per_iteration_s": round(base_it, 4),
        "pairot_per_iteration_s": round(kernel_it, 5),
        "pairot_kernel_build_s": round(med["kernel_build"], 4),
        "pairot_log_per_iteration_s": round(log_it, 4),
        "ratio_baseline_over_pairot": round(base_it / kernel_it, 1),
        "ratio_baseline_over_pairot_log": round(base_it / log_it, 2),
        "iterations_to_1e-3": n_solve,
        "solve_to_1e-3_baseline_s": round(base_it * n_solve, 3),
        "solve_to_1e-3_pairot_s": round(med["pairot_solve"], 3),
        "ratio_solve_to_1e-3": round(base_it * n_solve / med["pairot_solve"], 1),
        "pairot_per_iteration_incl_build_s": round(med["pairot_solve"] / n_solve, 4),
        "max_abs_diff_potentials_vs_baseline": float(f"{diff_base:.2e}"),
    }
    if memory:
        result["memory"] = measure_memory(inputs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--probe", nargs=2, metavar=("NPZ", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        memory_probe(*args.probe)
        return
    print(machine_header("bench_ot"), flush=True)
    for n in args.sizes:
        res = run(n, args.iterations, args.repeats, args.batch_size, args.genes, args.memory)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
