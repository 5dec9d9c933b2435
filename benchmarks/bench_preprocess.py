"""Speed and memory of ``pairot.pp.preprocess_adatas`` at scale, and of the AUROC kernel.

Run by hand (not by CI)::

    python benchmarks/bench_preprocess.py                 # 200k + 200k cells x 20k genes
    python benchmarks/bench_preprocess.py --cells 20000   # a quicker look

The simulated pair is written once to ``--cache`` (h5ad) by a child process, so that the
measured process holds only what a user's session would: the two loaded studies and
preprocessing. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def simulate(args) -> None:
    import pairot as pr

    start = time.perf_counter()
    query, reference = pr.datasets.simulate_pair(
        n_cells_query=args.cells,
        n_cells_reference=args.cells,
        n_genes=args.genes,
        n_cell_types=args.clusters,
        n_samples_query=args.samples,
        n_samples_reference=args.samples,
        mean_library_size=2000,
        random_state=0,
    )
    elapsed = time.perf_counter() - start
    nnz = query.X.nnz / query.n_obs
    query.write_h5ad(args.cache / "query.h5ad")
    reference.write_h5ad(args.cache / "reference.h5ad")
    print(
        json.dumps(
            {
                "simulate_s": round(elapsed, 1),
                "nnz_per_cell": round(nnz, 1),
                "simulate_peak_rss_gb": round(_peak_rss_gb(), 2),
            }
        )
    )


def preprocess(args) -> None:
    import anndata as ad

    import pairot as pr

    query = ad.read_h5ad(args.cache / "query.h5ad")
    reference = ad.read_h5ad(args.cache / "reference.h5ad")
    loaded_gb = _peak_rss_gb()
    start = time.perf_counter()
    q, r = pr.pp.preprocess_adatas(
        query,
        reference,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
        n_top_genes=500,
        n_samples_auroc=10_000,
        n_samples_hvg_selection=100_000,
    )
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "preprocess_s": round(elapsed, 1),
                "peak_rss_gb": round(_peak_rss_gb(), 2),
                "rss_after_loading_gb": round(loaded_gb, 2),
                "n_shared_genes": int(q.uns["pairot"]["params"]["n_shared_genes"]),
                "de_ava_rows_query": len(q.uns["pairot"]["de_ava"]),
            }
        )
    )


def auroc(args) -> None:
    import anndata as ad
    import numpy as np

    from pairot.pp._auroc import auroc_ova_ava, auroc_pairwise_loop
    from pairot.pp._preprocess import _library_normalized
    from pairot.pp._sampling import downsample_indices

    query = ad.read_h5ad(args.cache / "query.h5ad")
    codes = query.obs["cell_type"].cat.codes.to_numpy()
    k = len(query.obs["cell_type"].cat.categories)
    rows = downsample_indices(codes, 10_000, random_state=0)
    genes = np.arange(query.n_vars)
    X = _library_normalized(query.X, rows, genes)
    start = time.perf_counter()
    ova, ava = auroc_ova_ava(X, codes[rows], k)
    kernel = time.perf_counter() - start
    sub = genes[: args.loop_genes]
    start = time.perf_counter()
    ova_loop, ava_loop = auroc_pairwise_loop(X[:, sub], codes[rows], k)
    loop = (time.perf_counter() - start) * len(genes) / len(sub)
    diff = float(np.nanmax(np.abs(ava_loop - ava[:, :, sub])))
    print(
        json.dumps(
            {
                "auroc_cells": int(rows.size),
                "auroc_genes": int(len(genes)),
                "clusters": k,
                "kernel_s": round(kernel, 1),
                "pairwise_loop_s_extrapolated": round(loop, 1),
                "loop_genes_timed": int(len(sub)),
                "speedup": round(loop / kernel, 1),
                "max_abs_diff": diff,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000, help="cells per study")
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=30)
    parser.add_argument("--samples", type=int, default=8, help="samples per study")
    parser.add_argument(
        "--loop-genes",
        type=int,
        default=200,
        help="genes timed for the per-pair AUROC baseline (extrapolated)",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pairot_bench_preprocess"))
    parser.add_argument("--step", choices=["simulate", "preprocess", "auroc"], default=None)
    args = parser.parse_args()
    if args.step is not None:
        args.cache = args.cache / f"{args.cells}x{args.genes}"
        {"simulate": simulate, "preprocess": preprocess, "auroc": auroc}[args.step](args)
        return
    base = [
        sys.executable,
        __file__,
        "--cells",
        str(args.cells),
        "--genes",
        str(args.genes),
        "--clusters",
        str(args.clusters),
        "--samples",
        str(args.samples),
        "--loop-genes",
        str(args.loop_genes),
        "--cache",
        str(args.cache),
    ]
    cache = args.cache / f"{args.cells}x{args.genes}"
    cache.mkdir(parents=True, exist_ok=True)
    print(
        f"# {args.cells:,} + {args.cells:,} cells x {args.genes:,} genes, "
        f"{args.clusters} clusters, {args.samples} samples per study, "
        f"{os.cpu_count()} CPU cores",
        flush=True,
    )
    if not (cache / "reference.h5ad").exists():
        subprocess.run([*base, "--step", "simulate"], check=True)
    subprocess.run([*base, "--step", "preprocess"], check=True)
    subprocess.run([*base, "--step", "auroc"], check=True)


if __name__ == "__main__":
    main()
