"""Per-iteration time of ``DatasetMap.solve`` and the cost of the outputs, in iterations.

Run by hand (not by CI)::

    python benchmarks/bench_ot.py --sizes 2000 4000

For each size n, a simulated pair of n + n cells (350 HVGs) is preprocessed, the geometry is
built, and Sinkhorn runs a fixed number of iterations (threshold 0, so it never stops early);
the first call, which compiles, is timed apart. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def run(n: int, iterations: int, batch_size: int, n_genes: int) -> dict:
    import pairot as pr

    query, reference = pr.datasets.simulate_pair(
        n_cells_query=n,
        n_cells_reference=n,
        n_genes=n_genes,
        n_cell_types=10,
        random_state=0,
    )
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=350
    )
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(batch_size=batch_size, epsilon=0.05)
    dm.init_problem()
    start = time.perf_counter()
    dm.solve(threshold=1e-12, max_iterations=10, inner_iterations=10, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    dm.solve(threshold=1e-12, max_iterations=iterations, inner_iterations=10, progress=False)
    per_iteration = (time.perf_counter() - start) / iterations
    start = time.perf_counter()
    dm.compute_mapping(None)
    dm.compute_distance()
    outputs = time.perf_counter() - start
    dm.solve(progress=False)
    return {
        "n": n,
        "m": n,
        "d": int(dm.geom.x_aug.shape[1]),
        "batch_size": batch_size,
        "first_10_iterations_s": round(first, 3),
        "per_iteration_s": round(per_iteration, 4),
        "outputs_s": round(outputs, 3),
        "outputs_in_iterations": round(outputs / per_iteration, 2),
        "iterations_to_1e-3": int(dm.ot_solution.n_iterations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--genes", type=int, default=2000)
    args = parser.parse_args()
    print(f"# bench_ot: {os.cpu_count()} CPU cores", flush=True)
    for n in args.sizes:
        print(json.dumps(run(n, args.iterations, args.batch_size, args.genes)), flush=True)


if __name__ == "__main__":
    main()
