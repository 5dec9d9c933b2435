"""Cold against warm starts of ``DatasetMap.solve(init=...)`` (issue 29), run by hand.

    python benchmarks/ot_problems_data.py --problem 16k 32k
    python benchmarks/bench_warm_start.py --problem 16k --inits zeros cluster multiscale

For the problem's files (``/tmp/pairot_ot/<name>/``, see ``ot_problems_data.py``; ``pbmc``:
the demo pair preprocessed with 150 HVGs):
``DatasetMap(q, r)``, ``init_geom(batch_size=1024, epsilon=0.05)``, ``init_problem()`` (or
``--tau``), one warm-up ``solve(init="zeros")`` (JIT compilation, the kernel), then for each
``--inits`` a ``solve(init=..., threshold=...)`` timed: wall time, iterations, the
downsample's iterations, the final error and the largest difference of the mean mapping and of
the distance against the ``zeros`` solve. One JSON line per start.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import anndata as ad
import numpy as np

import pairot as pr
from pairot.tl import _solve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", default="16k")
    parser.add_argument("--data-dir", default="/tmp/pairot_ot")
    parser.add_argument("--inits", nargs="+", default=["zeros", "cluster", "multiscale"])
    parser.add_argument("--threshold", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--sparse", choices=("auto", "off"), default="auto")
    parser.add_argument("--kernel-memory-budget", type=int, default=None)
    parser.add_argument("--cells", type=int, default=_solve.MULTISCALE_CELLS)
    parser.add_argument("--no-correction", action="store_true")
    parser.add_argument("--max-iterations", type=int, default=2000)
    parser.add_argument("--inner-iterations", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=0, help="resamples, warm and cold")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    _solve.MULTISCALE_CELLS = args.cells
    if args.problem == "pbmc":  # the demo pair, preprocessed as tests/tl/test_warm_start.py
        q, r = pr.pp.preprocess_adatas(
            *pr.datasets.pbmc_demo(), "cell_type", "cell_type", "sample_id", "sample_id",
            n_top_genes=150,
        )  # fmt: skip
    else:
        folder = Path(args.data_dir) / args.problem
        q = ad.read_h5ad(folder / "query.h5ad")
        r = ad.read_h5ad(folder / "reference.h5ad")
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(batch_size=1024, epsilon=0.05)
    dm.init_problem(tau_a=args.tau, tau_b=args.tau)
    options = {
        "progress": False,
        "threshold": args.threshold,
        "sparse": args.sparse == "auto",
        "kernel_memory_budget": args.kernel_memory_budget,
        "cluster_correction": not args.no_correction,
        "max_iterations": args.max_iterations,
        "inner_iterations": args.inner_iterations,
    }
    began = time.perf_counter()
    dm.solve(init="zeros", **options)
    warm_up = time.perf_counter() - began
    reference = None
    for init in args.inits:
        began = time.perf_counter()
        solution = dm.solve(init=init, **options)
        seconds = time.perf_counter() - began
        mapping = dm.compute_mapping().to_numpy()
        distance = dm.compute_distance().to_numpy()
        if init == "zeros":
            reference = (mapping, distance)
        line = {
            "problem": args.problem,
            "cells": [int(q.n_obs), int(r.n_obs)],
            "init": init,
            "start": solution.start,
            "threshold": args.threshold,
            "tau": args.tau,
            "seconds": round(seconds, 2),
            "warm_up_seconds": round(warm_up, 2),
            "iterations": int(solution.n_iterations),
            "start_iterations": int(solution.start_iterations),
            "error": float(solution.errors[-1]),
            "mode": solution.mode,
            "sparse": bool(solution.sparse),
            "multiscale_cells": args.cells,
            "cluster_correction": not args.no_correction,
            "converged": bool(solution.converged),
        }
        if reference is not None:
            line["max_mapping_diff"] = float(np.abs(mapping - reference[0]).max())
            line["max_distance_diff"] = float(np.abs(distance - reference[1]).max())
        print(json.dumps(line), flush=True)
    if args.bootstrap:
        bootstrap(dm, args)


def bootstrap(dm, args) -> None:
    """``dm.bootstrap(N)`` with the resamples started from the full fit's potentials and from
    the engine's start: the iterations of every resample, the time, and the largest difference
    of the intervals."""
    from pairot.tl import _bootstrap

    dm.solve(init="zeros", progress=False, threshold=args.threshold)
    solve = _bootstrap.run_sinkhorn
    tables = {}
    for warm in (True, False):
        iterations = []

        def counted(*a, iterations=iterations, **k):
            solution = solve(*a, **k)
            iterations.append(int(solution.n_iterations))
            return solution

        _bootstrap.run_sinkhorn, _bootstrap.WARM_START = counted, warm
        began = time.perf_counter()
        tables[warm] = dm.bootstrap(args.bootstrap, random_state=0, progress=False)
        line = {
            "problem": args.problem,
            "bootstrap": args.bootstrap,
            "warm": warm,
            "threshold": args.threshold,
            "iterations": iterations,
            "seconds": round(time.perf_counter() - began, 2),
        }
        print(json.dumps(line), flush=True)
    _bootstrap.run_sinkhorn, _bootstrap.WARM_START = solve, True
    columns = ["mapping_low", "mapping_high", "distance_low", "distance_high"]
    diff = np.abs(tables[True][columns].to_numpy() - tables[False][columns].to_numpy()).max()
    print(json.dumps({"max_interval_diff": float(diff)}), flush=True)


if __name__ == "__main__":
    main()
