"""Sinkhorn at atlas scale on an accelerator: per-iteration time against the upstream-style
baseline, time to converge, the physical floor, and peak device memory.

Meant for a GPU machine (it runs on a CPU too, at small sizes, to check it). It needs only
numpy and jax: pairot's OT backend is loaded from ``src/`` without importing the rest of the
package (no anndata / scanpy needed on the device)::

    python benchmarks/bench_gpu.py --sizes 50000 100000 --seed-scale
    python benchmarks/bench_gpu.py --sizes 2000 --seed-scale --scale 0.02   # a quick CPU check

Inputs are synthetic, built the way ``DatasetMap`` builds them: unit, mean-centred "Spearman"
vectors of ``--genes`` (350) dimensions scattered around one centre per cluster, 30 query and
40 reference clusters, a label-distance matrix where every query cluster matches one or two
reference clusters (0 to 0.5) and the rest lie near 1, augmented vectors
``x_aug = [-lambda_f/2 x, lambda_l L[k]]``, ``y_aug = [y, onehot(c)]``, epsilon 0.05, balanced
cluster marginals, float32, matrix products at precision "highest" (no TF32).

For each size n = m (and, with ``--seed-scale``, the seed tutorial's downsampled problem of
169,407 x 272,139 cells, scaled by ``--scale``), printed as JSON:

- per-iteration seconds of the baseline (``bench_ot.BaselineSinkhorn``: per-pair vmapped cosine
  with norms recomputed, label from a float column, plain log-domain Sinkhorn) and of pairot's
  blocked log-domain path, and their ratio (medians of interleaved repeats);
- kernel mode where the ``n x m`` kernel fits ``--kernel-budget-gb``: build and per-iteration time;
- pairot's solve to 1e-3 (what ``DatasetMap.solve`` runs, cluster correction on): wall time,
  iterations, corrections, mode; with ``--plain`` also without the correction;
- the physical floor of one log-domain iteration: ``4 n m d`` flops of inner products (two
  passes of ``n m`` products of length ``d``) at the matrix-product rate measured here on one
  ``batch_size x d x m`` product, and ``2 n m`` exponentials at the rate measured on one
  ``batch_size x m`` block; the floor is the larger of the two (they can overlap on a GPU),
  and the achieved fraction is floor / measured time per iteration;
- the active-block mode (``sparse=True``, ``DatasetMap.solve``'s default; ``--no-sparse`` skips
  it): solve to 1e-3 with tile kernels within ``--kernel-budget-gb``, iterations, mode, active
  share of the cell pairs, skipped-mass bound, and the outputs' aggregation on the active
  blocks; the other solves above run the dense passes (``sparse=False``);
- peak device memory (``memory_stats()["peak_bytes_in_use"]`` where the backend reports it),
  read after the log-domain solve and again at the end, beside ``(n + m) d`` and
  ``batch_size x m`` floats.

``--devices N`` splits pairot's solves and aggregations over the first N devices (0: all;
default 1); the baseline and the floor stay on one device, and the peak memory is the first
device's.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EPSILON = 0.05
SEED_SCALE = (169_407, 272_139)


def load_backend():
    """``pairot.tl._ot`` imported on its own (numpy, jax and tqdm only).

    ``pairot`` and ``pairot.tl`` are stood in for by bare packages over their folders, so that
    ``pairot.tl.__init__`` (which imports anndata and pandas) does not run; the engine's relative
    imports (``pairot._interrupt``, ``pairot._logging``: standard library and numpy only)
    resolve to the files in ``src/``.
    """
    name = "_pairot_standalone"
    folders = {
        name: HERE.parent / "src" / "pairot",
        f"{name}.tl": HERE.parent / "src" / "pairot" / "tl",
    }
    for module, folder in folders.items():
        if module not in sys.modules:
            package = types.ModuleType(module)
            package.__path__ = [str(folder)]
            sys.modules[module] = package
    return importlib.import_module(f"{name}.tl._ot")


def load_bench_ot():
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import bench_ot

    return bench_ot


# ----------------------------------------------------------------------------- inputs
def unit_rows(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=1, keepdims=True)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def synthetic_inputs(
    n: int,
    m: int,
    *,
    d: int = 350,
    n_query_clusters: int = 30,
    n_ref_clusters: int = 40,
    batch_size: int = 4096,
    seed: int = 0,
) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ref_clusters, d))
    # query cluster k is a variant of reference cluster k (or, past Kr, of a random one)
    parent = np.concatenate(
        [
            np.arange(min(n_query_clusters, n_ref_clusters)),
            rng.integers(0, n_ref_clusters, max(0, n_query_clusters - n_ref_clusters)),
        ]
    )
    q_centres = centres[parent] + 0.5 * rng.normal(size=(n_query_clusters, d))
    qc = rng.choice(n_query_clusters, n, p=rng.dirichlet(np.full(n_query_clusters, 2.0)))
    rc = rng.choice(n_ref_clusters, m, p=rng.dirichlet(np.full(n_ref_clusters, 2.0)))
    qc[:n_query_clusters] = np.arange(n_query_clusters)
    rc[:n_ref_clusters] = np.arange(n_ref_clusters)
    x = np.empty((n, d), dtype=np.float32)
    y = np.empty((m, d), dtype=np.float32)
    for start in range(0, n, 65536):
        rows = slice(start, min(n, start + 65536))
        x[rows] = unit_rows(q_centres[qc[rows]] + 2.0 * rng.normal(size=(len(qc[rows]), d)))
    for start in range(0, m, 65536):
        rows = slice(start, min(m, start + 65536))
        y[rows] = unit_rows(centres[rc[rows]] + 2.0 * rng.normal(size=(len(rc[rows]), d)))
    L = rng.uniform(0.85, 1.0, size=(n_query_clusters, n_ref_clusters))
    L[np.arange(n_query_clusters), parent] = rng.uniform(0.0, 0.3, n_query_clusters)
    second = rng.integers(0, n_ref_clusters, n_query_clusters)
    L[np.arange(n_query_clusters), second] = np.minimum(
        L[np.arange(n_query_clusters), second], rng.uniform(0.2, 0.5, n_query_clusters)
    )
    L = np.minimum(L, 1.0).astype(np.float32)
    lambda_feature, lambda_label = 0.5, 1.5
    x_aug = np.concatenate([(-0.5 * lambda_feature) * x, lambda_label * L[qc]], axis=1)
    y_aug = np.concatenate([y, np.eye(n_ref_clusters, dtype=np.float32)[rc]], axis=1)
    a = 1.0 / np.bincount(qc)[qc] / n_query_clusters
    b = 1.0 / np.bincount(rc)[rc] / n_ref_clusters
    return {
        "x": x,
        "y": y,
        "x_aug": x_aug.astype(np.float32),
        "y_aug": y_aug.astype(np.float32),
        "offset": 0.5 * lambda_feature,
        "query_codes": qc,
        "ref_codes": rc,
        "label_distance": L,
        "lambda_feature": lambda_feature,
        "lambda_label": lambda_label,
        "a": a,
        "b": b,
        "batch_size": batch_size,
    }


# ----------------------------------------------------------------------------- timing
def pairot_solve(backend, inputs: dict, n_iterations: int | None, **kwargs):
    """``bench_ot.pairot_solve`` on the standalone backend, at ``--precision``; a solve to the
    threshold (``n_iterations=None``) gets the cluster codes, as ``DatasetMap.solve`` does."""
    if n_iterations is None:
        kwargs = {"query_codes": inputs["query_codes"], "ref_codes": inputs["ref_codes"]} | kwargs
    kwargs = {"precision": inputs["precision"]} | kwargs
    return load_bench_ot().pairot_solve(inputs, n_iterations, solver=backend.sinkhorn, **kwargs)


def floor_rates(backend, inputs: dict, repeats: int = 5) -> dict:
    """Matrix-product flop rate and exponential rate on blocks the size of the solver's."""
    import jax
    import jax.numpy as jnp

    block = min(inputs["batch_size"], inputs["x_aug"].shape[0])
    u = jnp.asarray(inputs["x_aug"][:block])
    v = jnp.asarray(inputs["y_aug"])
    # the products the solver makes
    precision = backend._checks._PRECISIONS[inputs["precision"]]
    mm = jax.jit(lambda u, v: jnp.matmul(u, v.T, precision=precision))
    ex = jax.jit(lambda s: jnp.sum(jnp.exp(s), axis=1))
    s = jax.block_until_ready(mm(u, v))
    jax.block_until_ready(ex(s))
    t_mm, t_ex = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(u, v))
        t_mm.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(ex(s))
        t_ex.append(time.perf_counter() - start)
    m, d = v.shape
    return {
        "matmul_tflops": 2 * block * m * d / float(np.median(t_mm)) / 1e12,
        "exp_per_s": block * m / float(np.median(t_ex)),
    }


def peak_device_bytes() -> int | None:
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def gb(value) -> float | None:
    return None if value is None else round(value / 2**30, 3)


def run(n: int, m: int, args, backend, bench_ot) -> dict:
    inputs = synthetic_inputs(n, m, d=args.genes, batch_size=args.batch_size)
    inputs["precision"] = args.precision
    d = inputs["x_aug"].shape[1]
    out = {
        "n": n,
        "m": m,
        "d": d,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "clusters": [int(inputs["query_codes"].max()) + 1, int(inputs["ref_codes"].max()) + 1],
    }
    log = {"kernel_memory_budget": 0, "sparse": False}

    # solve to 1e-3, log domain first (its peak device memory is read right after)
    start = time.perf_counter()
    sol = pairot_solve(backend, inputs, None, **log)
    first = time.perf_counter() - start
    out["log_peak_device_gb_after_solve"] = gb(peak_device_bytes())
    out["(n+m)d float32 gb"] = gb((n + m) * d * 4)
    out["batch_size x m float32 gb"] = gb(args.batch_size * m * 4)
    start = time.perf_counter()
    sol = pairot_solve(backend, inputs, None, **log)
    out["log_solve_to_1e-3"] = {
        "seconds": round(time.perf_counter() - start, 3),
        "first_call_seconds_with_compile": round(first, 3),
        "iterations": sol.n_iterations,
        "corrections": sol.n_corrections,
        "converged": bool(sol.converged),
        "final_error": float(f"{sol.errors[-1]:.3e}"),
    }
    if args.plain:
        pairot_solve(backend, inputs, None, cluster_correction=False, **log)
        start = time.perf_counter()
        plain = pairot_solve(backend, inputs, None, cluster_correction=False, **log)
        out["log_solve_to_1e-3_plain"] = {
            "seconds": round(time.perf_counter() - start, 3),
            "iterations": plain.n_iterations,
            "converged": bool(plain.converged),
        }

    # per iteration: pairot log domain vs the baseline, interleaved
    its = args.iterations
    pairot_solve(backend, inputs, its, **log)
    tasks = {"pairot_log": lambda: pairot_solve(backend, inputs, its, **log)}
    if not args.no_baseline:
        baseline = bench_ot.BaselineSinkhorn(inputs, batch_size=args.baseline_batch_size)
        baseline(its)
        tasks["baseline"] = lambda: baseline(its)
    med = bench_ot.interleaved_medians(tasks, args.repeats)
    log_it = med["pairot_log"] / its
    out["pairot_log_per_iteration_s"] = round(log_it, 4)
    if "baseline" in med:
        base_it = med["baseline"] / its
        out["baseline_per_iteration_s"] = round(base_it, 4)
        out["ratio_baseline_over_pairot_log"] = round(base_it / log_it, 2)
        out["baseline_solve_estimate_s"] = round(base_it * sol.n_iterations, 2)

    rates = floor_rates(backend, inputs)
    matmul_floor = 4 * n * m * d / (rates["matmul_tflops"] * 1e12)
    exp_floor = 2 * n * m / rates["exp_per_s"]
    floor = max(matmul_floor, exp_floor)
    out["floor"] = {
        "matmul_tflops_measured": round(rates["matmul_tflops"], 2),
        "exp_per_s_measured": float(f"{rates['exp_per_s']:.3e}"),
        "matmul_floor_s": round(matmul_floor, 4),
        "exp_floor_s": round(exp_floor, 4),
        "achieved_fraction_log": round(floor / log_it, 3),
    }

    budget = int(args.kernel_budget_gb * 2**30)
    if n * m * 4 <= budget:
        kernel = {"kernel_memory_budget": budget, "sparse": False}
        pairot_solve(backend, inputs, its, **kernel)
        med = bench_ot.interleaved_medians(
            {
                "kernel": lambda: pairot_solve(backend, inputs, its, **kernel),
                "kernel_1": lambda: pairot_solve(backend, inputs, 1, **kernel),
            },
            args.repeats,
        )
        per_it = (med["kernel"] - med["kernel_1"]) / (its - 1)
        start = time.perf_counter()
        ksol = pairot_solve(backend, inputs, None, **kernel)
        out["kernel_mode"] = {
            "kernel_gb": gb(n * m * 4),
            "per_iteration_s": round(per_it, 5),
            "build_plus_one_iteration_s": round(med["kernel_1"], 4),
            "solve_to_1e-3_s": round(time.perf_counter() - start, 3),
            "iterations": ksol.n_iterations,
            "mode": ksol.mode,
        }
        del ksol
    if not args.no_sparse:
        out["sparse"] = sparse_solve(backend, inputs, budget)
    out["peak_device_gb_end"] = gb(peak_device_bytes())
    return out


def sparse_solve(backend, inputs: dict, budget: int) -> dict:
    """The active-block mode (``DatasetMap.solve``'s default): a solve to 1e-3 with the tile
    kernels within ``budget`` (after one that compiles), and the outputs' aggregation on the
    active blocks against the dense aggregation."""
    kwargs = {"kernel_memory_budget": budget, "sparse": True}
    pairot_solve(backend, inputs, None, **kwargs)
    start = time.perf_counter()
    sol = pairot_solve(backend, inputs, None, **kwargs)
    seconds = time.perf_counter() - start
    out = {
        "solve_to_1e-3_s": round(seconds, 3),
        "iterations": sol.n_iterations,
        "corrections": sol.n_corrections,
        "mode": sol.mode,
        "active_share": None if not sol.sparse else round(sol.active_share, 4),
        "skipped_mass_bound": float(f"{sol.skipped_mass_bound:.3e}"),
        "blocks": [sol.n_active_blocks, sol.n_blocks],
        "peak_device_gb_after_solve": gb(peak_device_bytes()),
    }
    if sol.sparse:
        common = {
            "epsilon": EPSILON,
            "query_codes": inputs["query_codes"],
            "ref_codes": inputs["ref_codes"],
            "n_query_clusters": int(inputs["query_codes"].max()) + 1,
            "n_ref_clusters": int(inputs["ref_codes"].max()) + 1,
            "batch_size": inputs["batch_size"],
        }
        points = (inputs["x_aug"], inputs["y_aug"], inputs["offset"], sol.f, sol.g)
        start = time.perf_counter()
        backend.aggregate(*points, active=sol.blocks, **common)
        out["aggregate_active_s"] = round(time.perf_counter() - start, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[50_000, 100_000])
    parser.add_argument("--seed-scale", action="store_true", help="also 169,407 x 272,139")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the seed-scale problem")
    parser.add_argument("--genes", type=int, default=350)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--baseline-batch-size", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kernel-budget-gb", type=float, default=48.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--plain", action="store_true", help="also solve without correction")
    parser.add_argument("--no-sparse", action="store_true", help="skip the active-block mode")
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="devices the solves and aggregations are split over (the first N of "
        "jax.devices(); 0: all of them); 1 by default, as the figures so far",
    )
    parser.add_argument(
        "--precision",
        default="highest",
        help="matrix-product precision of pairot's solver: highest (float32), bf16_3x, high",
    )
    args = parser.parse_args()
    import jax

    logging.getLogger("pairot").setLevel(logging.ERROR)  # fixed-iteration runs "do not converge"
    backend = load_backend()
    devices = jax.devices() if args.devices == 0 else jax.devices()[: args.devices]
    backend = types.SimpleNamespace(
        **{name: getattr(backend, name) for name in dir(backend) if not name.startswith("__")}
    )
    backend.sinkhorn = functools.partial(backend.sinkhorn, devices=devices)
    backend.aggregate = functools.partial(backend.aggregate, devices=devices)
    bench_ot = load_bench_ot()
    device = jax.local_devices()[0]
    print(bench_ot.machine_header("bench_gpu", device.device_kind), flush=True)
    print(json.dumps({"n_devices": len(devices)}), flush=True)
    shapes = [(s, s) for s in args.sizes]
    if args.seed_scale:
        shapes.append(tuple(max(2, int(round(v * args.scale))) for v in SEED_SCALE))
    for n, m in shapes:
        print(json.dumps(run(n, m, args, backend, bench_ot)), flush=True)


if __name__ == "__main__":
    main()
