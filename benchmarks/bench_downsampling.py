"""What downsampling changes: a fit on every cell against fits on fewer cells per cluster.

Run by hand (not by CI), after ``ot_problems_data.py`` wrote the problem::

    python benchmarks/ot_problems_data.py --problem seed       # about 4 min, 7.5 GB peak
    python benchmarks/bench_downsampling.py --problem seed --n-samples 5000 2000 1000

The problem's cells (for ``seed``: the seed's downsampled size, 169,407 x 272,139 cells, at
most 10,000 cells per cluster) are the "full" fit here; each ``--n-samples N`` refits after
``pr.pp.downsample_indices(labels, n_samples=N)`` on both sides (seed 0), as the seed tutorial
downsamples. Every fit runs the seed tutorial's calls (``init_geom(batch_size=12288,
epsilon=0.05)``, ``init_problem()``, ``solve()``, ``compute_mapping()``, ``compute_distance()``,
DatasetMap's defaults). Printed per ``N``: cells, wall time of solve + outputs, the largest
absolute difference of the ``"mean"`` mapping and of the distance against the full fit (the
distance over the cluster pairs whose full-fit plan mass is at least 1e-9), and the query
clusters whose top-1 reference cluster changes. Peak resident memory of the process at the end.

This is a proxy for issue 29's question (the full 600,929 x 1,265,624 pair against its
10,000-per-cluster downsample): the same comparison one step further down, where the full fit
still runs on this machine.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np

import pairot as pr

BATCH_SIZE = {"seed": 12288}


def fit(query, reference, batch_size: int):
    began = time.perf_counter()
    dm = pr.tl.DatasetMap(query, reference)
    dm.init_geom(batch_size=batch_size, epsilon=0.05)
    dm.init_problem()
    solution = dm.solve(progress=False)
    mapping = dm.compute_mapping()
    mass = dm.compute_mapping("transported_mass")
    distance = dm.compute_distance()
    seconds = time.perf_counter() - began
    return mapping, mass, distance, seconds, int(solution.n_iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="seed")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/pairot_ot"))
    parser.add_argument("--n-samples", type=int, nargs="+", default=[5000, 2000, 1000])
    args = parser.parse_args()
    logging.getLogger("pairot").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    folder = args.data_dir / args.problem
    if not (folder / "meta.json").exists():
        parser.error(f"run python benchmarks/ot_problems_data.py --problem {args.problem} first")
    query = ad.read_h5ad(folder / "query.h5ad")
    reference = ad.read_h5ad(folder / "reference.h5ad")
    key_q = query.uns["pairot"]["cell_type_key"]
    key_r = reference.uns["pairot"]["cell_type_key"]
    batch_size = BATCH_SIZE.get(args.problem, 1024)
    full_map, full_mass, full_dist, seconds, iters = fit(query, reference, batch_size)
    print(
        f"full: {query.n_obs} x {reference.n_obs} cells, {iters} iterations, "
        f"{seconds:.0f} s (solve + outputs)",
        flush=True,
    )
    n_query_clusters = full_map.shape[0]
    carried = full_mass.to_numpy() / n_query_clusters >= 1e-9  # plan mass of the pair
    top = full_map.idxmax(axis=1)
    for n in args.n_samples:
        rows = pr.pp.downsample_indices(query.obs[key_q].to_numpy(), n_samples=n)
        cols = pr.pp.downsample_indices(reference.obs[key_r].to_numpy(), n_samples=n)
        q, r = query[np.sort(rows)].copy(), reference[np.sort(cols)].copy()
        mapping, _, distance, seconds, iters = fit(q, r, batch_size)
        mapping = mapping.reindex_like(full_map)
        distance = distance.reindex_like(full_dist)
        d_map = np.nanmax(np.abs(mapping.to_numpy() - full_map.to_numpy()))
        d_dist = np.nanmax(np.abs(distance.to_numpy() - full_dist.to_numpy())[carried])
        changed = [
            f"{k}: {top[k]} -> {b}" for k, b in mapping.idxmax(axis=1).items() if b != top[k]
        ]
        print(
            f"n_samples={n}: {q.n_obs} x {r.n_obs} cells, {iters} iterations, {seconds:.0f} s; "
            f"max |mapping - full| {d_map:.4f}, max |distance - full| {d_dist:.4f} "
            f"(on {int(carried.sum())} cluster pairs with plan mass >= 1e-9); top-1 changed "
            f"for {len(changed)} of {n_query_clusters} query clusters {changed}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory {peak:.1f} GB")


if __name__ == "__main__":
    main()
