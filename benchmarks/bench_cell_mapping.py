"""The extra cost of the per-cell mapping, in Sinkhorn iterations of the same problem.

Run by hand (not by CI)::

    python benchmarks/bench_cell_mapping.py                       # demo and 20,000 x 20,000
    python benchmarks/bench_cell_mapping.py --problems demo
    python benchmarks/bench_cell_mapping.py --problems 20k --modes log kernel sparse

For every problem (``demo``: the bundled PBMC pair; ``20k``: ``pr.datasets.simulate_pair``
with 20,000 + 20,000 cells, 30 cell types, 2,000 genes, 350 HVGs) and every reachable mode
(``log``: ``solve(sparse=False, kernel_memory_budget=0)``; ``kernel``: ``solve(sparse=False)``;
``sparse``: ``solve(sparse=True)``, where the active-block mode applies), the script

1. times one Sinkhorn iteration as ``(t(2 N) - t(N)) / N`` from two warm solves of ``N`` and
   ``2 N`` iterations (after a warm-up solve that compiles), so one-off set-up (kernel build,
   active set) cancels;
2. times :func:`pairot.tl._ot.aggregate` on the solution (its kernel or active blocks, as
   ``DatasetMap`` does) with ``per_cell=False`` and ``per_cell=True``, each once to compile
   and then the best of ``--repeat`` runs;
3. times the host side of both per-cell tables (``cell_mapping_frame``, query and reference);

and prints the extra aggregation time and the host time divided by the time of one iteration.
Last, the memory of the extra arrays at the seed's size (600,929 x 1,265,624 cells, 30 x 35
clusters): ``n Kr`` float64 sums for the query side (the reference side's ``Kq x m`` sums are
the ``tm`` the cluster mapping already keeps) and the two output tables. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

import pairot as pr
from pairot.tl._answers import _cell_mapping
from pairot.tl._ot import aggregate

MODES = {
    "log": {"sparse": False, "kernel_memory_budget": 0},
    "kernel": {"sparse": False},
    "sparse": {"sparse": True},
}
#: Seed's size (METHOD.md section 9) and cluster counts of the brief.
SEED = {"n": 600_929, "m": 1_265_624, "kq": 30, "kr": 35}


def problem(name: str):
    if name == "demo":
        query, reference = pr.datasets.pbmc_demo()
        column, genes = "cell_type", 500
    else:
        n = int(name.rstrip("k")) * 1000
        query, reference = pr.datasets.simulate_pair(n, n, 2000, n_cell_types=30, random_state=0)
        column, genes = "cell_type", 350
    return pr.pp.preprocess_adatas(
        query, reference, column, column, "sample_id", "sample_id", n_top_genes=genes
    )


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def one_mode(name, mode, query, reference, iterations, repeat) -> dict | None:
    """The figures of one mode on one problem (``None`` where the mode is not reachable)."""
    dm = pr.tl.DatasetMap(query, reference)
    dm.init_geom(batch_size=1024, epsilon=0.05)
    dm.init_problem()
    options = dict(progress=False, threshold=1e-12, inner_iterations=iterations, **MODES[mode])
    dm.solve(max_iterations=iterations, **options)  # compiles
    t1, _ = timed(lambda: dm.solve(max_iterations=iterations, **options))
    t2, solution = timed(lambda: dm.solve(max_iterations=2 * iterations, **options))
    if mode == "sparse" and not solution.sparse:
        print(f"[{name}] sparse: not reachable here (dense passes ran); skipped", flush=True)
        return None
    if mode != "log" and solution.mode != "kernel":
        print(f"[{name}] {mode}: ran in {solution.mode} mode; skipped", flush=True)
        return None
    per_iteration = max(t2 - t1, 1e-9) / iterations
    geom = dm.geom
    blocks = getattr(solution, "blocks", None)

    def aggregation(per_cell, geom=geom, solution=solution, blocks=blocks):
        return aggregate(
            geom.x_aug,
            geom.y_aug,
            geom.offset,
            solution.f,
            solution.g,
            epsilon=geom.epsilon,
            query_codes=geom.query_codes,
            ref_codes=geom.ref_codes,
            n_query_clusters=len(dm.query_clusters),
            n_ref_clusters=len(dm.reference_clusters),
            batch_size=geom.batch_size,
            kernel=solution.kernel,
            active=blocks,
            per_cell=per_cell,
        )

    times = {}
    for per_cell in (False, True):
        aggregation(per_cell)
        times[per_cell] = min(timed(lambda p=per_cell: aggregation(p))[0] for _ in range(repeat))
    out = aggregation(True)
    host, _ = timed(
        lambda out=out: (
            _cell_mapping.cell_mapping_frame(
                out["row_cluster"], query.obs_names, dm.reference_clusters, "reference"
            ),
            _cell_mapping.cell_mapping_frame(
                out["tm"].T, reference.obs_names, dm.query_clusters, "query"
            ),
        )
    )
    extra = times[True] - times[False]
    row = {
        "problem": name,
        "cells": f"{query.n_obs:,} x {reference.n_obs:,}",
        "mode": mode,
        "iteration_s": per_iteration,
        "aggregate_s": times[False],
        "aggregate_per_cell_s": times[True],
        "extra_iterations": extra / per_iteration,
        "host_tables_s": host,
        "host_iterations": host / per_iteration,
    }

    print(
        f"[{name}] {mode}: iteration {per_iteration:.4f} s; aggregate {times[False]:.3f} s "
        f"-> {times[True]:.3f} s with per-cell sums (+{extra:.3f} s = "
        f"{row['extra_iterations']:+.2f} iterations); both tables on the host {host:.3f} s "
        f"({row['host_iterations']:.2f} iterations)",
        flush=True,
    )
    return row


def run(name: str, modes: list[str], iterations: int, repeat: int) -> list[dict]:
    began = time.perf_counter()
    query, reference = problem(name)
    print(
        f"[{name}] preprocessed {query.n_obs:,} x {reference.n_obs:,} cells in "
        f"{time.perf_counter() - began:.0f} s",
        flush=True,
    )
    rows = []
    for mode in modes:
        row = one_mode(name, mode, query, reference, iterations, repeat)
        if row is not None:
            rows.append(row)
    return rows


def memory_at_seed() -> None:
    n, m, kq, kr = SEED["n"], SEED["m"], SEED["kq"], SEED["kr"]
    gib = 2.0**30
    print(
        f"seed size {n:,} x {m:,} cells, {kq} x {kr} clusters (float64):\n"
        f"  extra sums of the pass, query side n*Kr: {n * kr * 8 / gib:.2f} GiB "
        f"(the reference side's Kq*m = {m * kq * 8 / gib:.2f} GiB is the tm the mapping keeps)\n"
        f"  tables: query n*(Kr+4) {n * (kr + 4) * 8 / gib:.2f} GiB, reference m*(Kq+4) "
        f"{m * (kq + 4) * 8 / gib:.2f} GiB; never n*m = {n * m * 4 / gib:,.0f} GiB (float32)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=["demo", "20k"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("pairot").setLevel(logging.ERROR)  # the short solves do not converge
    rows = []
    for name in args.problems:
        rows += run(name, args.modes, args.iterations, args.repeat)
    if rows:
        table = pd.DataFrame(rows)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.round(4).to_string(index=False))
    memory_at_seed()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
