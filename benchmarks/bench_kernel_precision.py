"""Reduced-precision tile kernels: does a bfloat16 (or float16) store keep the outputs within
1e-4 of float32, and what does it cost here?

Run by hand (not by CI), after ``python benchmarks/ot_problems_data.py --problem 16k``::

    python benchmarks/bench_kernel_precision.py --problem 16k
    python benchmarks/bench_kernel_precision.py --problem 32k --threshold 1e-4

For each ``kernel_dtype`` (None = float32, "bfloat16"; "float16" with ``--float16``, which
needs a pairot that accepts it: it was measured, underflowed and dropped) one ``DatasetMap.solve``
in the active-block mode with every active block's tile kernel stored, after one solve that
compiles: wall time, iterations, per iteration; then the largest absolute differences of the
three mappings and of the distance (over the cluster pairs that carry at least 1e-6 of the
plan's mass) against the float32 store, and of the potentials (up to the constant of balanced
OT). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = Path("/tmp/pairot_ot")


def main() -> None:
    import anndata as ad

    import pairot as pr

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="16k")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--threshold", type=float, default=1e-3)
    parser.add_argument("--kernel-memory-budget", type=int, default=16 * 1024**3)
    parser.add_argument("--float16", action="store_true", help="also kernel_dtype='float16'")
    args = parser.parse_args()
    folder = args.data_dir / args.problem
    q = ad.read_h5ad(folder / "query.h5ad")
    r = ad.read_h5ad(folder / "reference.h5ad")
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(epsilon=0.05)
    dm.init_problem()
    kwargs = {
        "progress": False,
        "threshold": args.threshold,
        "kernel_memory_budget": args.kernel_memory_budget,
    }
    results = {}
    dtypes = (None, "bfloat16", "float16") if args.float16 else (None, "bfloat16")
    for kernel_dtype in dtypes:
        dm.solve(kernel_dtype=kernel_dtype, **kwargs)  # compiles
        start = time.perf_counter()
        solution = dm.solve(kernel_dtype=kernel_dtype, **kwargs)
        seconds = time.perf_counter() - start
        mapping = dm.compute_mapping(None)
        distance = dm.compute_distance()
        name = kernel_dtype or "float32"
        results[name] = (solution, mapping, distance)
        print(
            json.dumps(
                {
                    "problem": args.problem,
                    "kernel_dtype": name,
                    "solve_s": round(seconds, 3),
                    "iterations": int(solution.n_iterations),
                    "per_iteration_s": round(seconds / max(solution.n_iterations, 1), 4),
                    "mode": solution.mode,
                    "active_share": round(float(solution.active_share), 4),
                    "final_error": float(solution.errors[-1]),
                }
            ),
            flush=True,
        )
    base, base_mapping, base_distance = results["float32"]
    n_query = len(dm.query_clusters)
    mass = base_mapping["transported_mass"].to_numpy() / n_query
    carried = mass >= 1e-6
    for name in [d for d in dtypes if d]:
        solution, mapping, distance = results[name]
        shift = float(np.mean(solution.f - base.f))
        out = {
            "problem": args.problem,
            "compare": f"{name} / float32",
            "max_abs_diff_f": float(np.abs(solution.f - shift - base.f).max()),
            "max_abs_diff_g": float(np.abs(solution.g + shift - base.g).max()),
            "max_abs_diff_distance_mass_ge_1e-6": float(
                np.abs(distance.to_numpy() - base_distance.to_numpy())[carried].max()
            ),
        }
        for method, frame in mapping.items():
            diff = np.abs(frame.to_numpy() - base_mapping[method].to_numpy())
            out[f"max_abs_diff_mapping_{method}"] = float(diff.max())
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
