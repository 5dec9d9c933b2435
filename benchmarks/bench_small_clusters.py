"""How much a small query cluster moves the other clusters' mapping scores.

With balanced marginals every cluster carries 1/K of the mass whatever its size. This adds a
query cluster of ``k`` cells to the PBMC demo (``k`` cells of 'Dendritic' relabelled), fits
the map with the cluster kept (``small_clusters="keep"``) and without it, and prints the
largest change of the other clusters' ``"mean"`` mapping scores and of their best score.

    python benchmarks/bench_small_clusters.py [--sizes 1 2 4 8 16 32]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

import pairot as pr


def fit(dm):
    dm.init_geom(batch_size=512)
    dm.init_problem()
    dm.solve(progress=False)
    return dm.compute_mapping()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    args = parser.parse_args()
    logging.getLogger("pairot").setLevel(logging.ERROR)
    query, reference = pr.datasets.pbmc_demo()
    print(
        "cells  K  markers  min label distance  max |shift| of other scores  "
        "shift of their best score (max, mean)"
    )
    for k in args.sizes:
        q = query.copy()
        labels = q.obs["cell_type"].astype(str).to_numpy().copy()
        labels[np.flatnonzero(labels == "Dendritic")[:k]] = "small"
        q.obs["cell_type"] = pd.Categorical(labels)
        qp, rp = pr.pp.preprocess_adatas(
            q, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=200
        )
        keep_map = pr.tl.DatasetMap(qp, rp, min_cells=None)
        kept = fit(keep_map)
        degs = keep_map.DEGs_label_distance["small"]
        n_markers = len(next(iter(degs.values())))
        label_row = keep_map.label_distance.loc["small"].min()
        dropped = fit(pr.tl.DatasetMap(qp[qp.obs["cell_type"] != "small"], rp, min_cells=None))
        others = dropped.index
        shift = (kept.loc[others] - dropped).abs().to_numpy()
        best = (kept.loc[others].max(axis=1) - dropped.max(axis=1)).abs().to_numpy()
        print(
            f"{k:5d} {len(kept):2d} {n_markers:8d} {label_row:19.3f}  {shift.max():27.3f}  "
            f"{best.max():18.3f} {best.mean():7.3f}"
        )


if __name__ == "__main__":
    main()
