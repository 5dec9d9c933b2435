"""What the active-block mode costs where nothing can be skipped.

Run by hand (not by CI)::

    python benchmarks/bench_sparse_overhead.py                  # 16,000 cells a side
    python benchmarks/bench_sparse_overhead.py --cells 8000 --repeats 5

Two problems from one simulated pair (``pairot.datasets.simulate_pair``, 12 types, 350 HVGs,
epsilon 0.05, balanced marginals):

- ``one_cluster``: the cost of the simulated pair without its label term, every cell given
  one cluster code a side (one block, uniform marginals);
- ``no_label_term``: the 12 clusters kept, ``init_geom(lambda_label=0)``: every label distance
  contributes 0, so no block is cheaper to skip than another.

For each, the solve ``DatasetMap.solve`` makes (``sinkhorn`` with the cluster codes) with
``sparse=True`` (the default) and ``sparse=False`` is timed
interleaved, ``--repeats`` times each after one warm-up call of each, in kernel mode (the
default budget) and in log mode (``kernel_memory_budget=0``); printed: the medians, their
ratio (sparse / dense) and whether the sparse call ran the active-block passes. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def problems(cells: int) -> dict:
    """``name: (x_aug, y_aug, offset, a, b, query_codes, ref_codes)`` as DatasetMap solves."""
    import pairot as pr

    query, reference = pr.datasets.simulate_pair(
        cells, cells, 2000, n_cell_types=12, n_samples_query=4, random_state=0
    )
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=350
    )
    out = {}
    for name, lambda_label in (("one_cluster", 0.0), ("no_label_term", 0.0)):
        dm = pr.tl.DatasetMap(q, r)
        dm.init_geom(epsilon=0.05, lambda_label=lambda_label)
        dm.init_problem()
        g, p = dm.geom, dm._problem
        qc, rc, a, b = g.query_codes, g.ref_codes, p["a"], p["b"]
        if name == "one_cluster":  # every cell in one cluster a side: one block
            qc, rc = np.zeros_like(qc), np.zeros_like(rc)
            a, b = np.full(len(qc), 1 / len(qc)), np.full(len(rc), 1 / len(rc))
        out[name] = (g.x_aug, g.y_aug, g.offset, a, b, qc, rc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=16_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from pairot.tl._ot import DEFAULT_KERNEL_MEMORY_BUDGET, sinkhorn

    for name, (x, y, offset, a, b, qc, rc) in problems(args.cells).items():
        for label, budget in (("kernel", DEFAULT_KERNEL_MEMORY_BUDGET), ("log", 0)):
            kwargs = {
                "epsilon": 0.05,
                "progress": False,
                "kernel_memory_budget": budget,
                "query_codes": qc,
                "ref_codes": rc,
            }
            times = {True: [], False: []}
            sparse_ran = None
            for repeat in range(args.repeats + 1):
                for sparse in (True, False):
                    start = time.perf_counter()
                    solution = sinkhorn(x, y, offset, a, b, sparse=sparse, **kwargs)
                    if repeat:  # the first of each compiles
                        times[sparse].append(time.perf_counter() - start)
                    if sparse:
                        sparse_ran = bool(solution.sparse)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(
                json.dumps(
                    {
                        "problem": name,
                        "cells": args.cells,
                        "mode": label,
                        "sparse_s": round(med[True], 4),
                        "dense_s": round(med[False], 4),
                        "ratio_sparse_over_dense": round(med[True] / med[False], 4),
                        "active_block_passes": sparse_ran,
                        "iterations": int(solution.n_iterations),
                        "times": {str(k): [round(t, 4) for t in v] for k, v in times.items()},
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
