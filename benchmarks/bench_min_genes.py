"""How many genes the cell term needs: the evidence behind ``MIN_SHARED_GENES`` (50).

On the PBMC demo pair (8 cell types, the same names in both studies), two series:

1. ``n`` highly variable genes out of all 721 shared genes. For each ``n``: the share of cells
   whose ``n`` HVG values are all equal (no rank vector, so no Spearman correlation with
   anyone), how often Spearman features alone give a query cell its true reference cluster
   (the cluster with the highest mean correlation; always answering the largest cluster
   scores 35%), the mean correlation between cells of the same and of different types, and
   how many of the 8 query clusters the whole method (label term included) maps best to
   their own type.
2. Only ``n`` shared genes (the reference's other genes renamed), all of them HVGs: the same
   figures, now with the label term's DE restricted to those genes as well, and the spread of
   the mapping (its largest entry; 1/8 = 0.125 is a uniform mapping).

3. With ``--real-pair DIR`` (``shared/data/realpairs/zeisel_tasic``): ``n`` HVGs on that real
   pair of studies (Zeisel 2015 against Tasic 2016 interneurons, 3,157 genes), scored against
   its published matches: how many of the 13 query types with a match get it as their top-1
   reference type, with the cell term alone (``lambda_label=0, lambda_feature=1``) and with
   the whole method (the defaults).

    python benchmarks/bench_min_genes.py [--genes 2 5 10 20 30 50 100 200 400]
    python benchmarks/bench_min_genes.py --real-pair ../shared/data/realpairs/zeisel_tasic
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

import pairot as pr
from pairot.tl._cost._features import spearman_features

COLUMNS = ("cell_type", "cell_type", "sample_id", "sample_id")


def figures(q, r) -> str:
    x, y = spearman_features(q.X), spearman_features(r.X)
    undefined = [np.mean(~np.any(f != 0, axis=1)) for f in (x, y)]
    rho = x @ y.T
    lq = q.obs["cell_type"].astype(str).to_numpy()
    lr = r.obs["cell_type"].astype(str).to_numpy()
    types = np.unique(lr)
    mean_rho = np.stack([rho[:, lr == t].mean(axis=1) for t in types], axis=1)
    alone = np.mean(types[mean_rho.argmax(axis=1)] == lq)
    same = lq[:, None] == lr[None, :]
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom()
    dm.init_problem()
    dm.solve(progress=False)
    mapping = dm.compute_mapping()
    own = int(sum(mapping.loc[t].idxmax() == t for t in mapping.index))
    return (
        f"{undefined[0]:10.0%} / {undefined[1]:4.0%}  {alone:14.0%}  "
        f"{rho[same].mean():8.3f} / {rho[~same].mean():6.3f}  {own:9d} of {len(mapping)}"
        f"  {mapping.to_numpy().max():11.3f}"
    )


def real_pair(folder: Path, sizes: list[int]) -> None:
    """Series 3: top-1 hits of the cell term alone and of the whole method per HVG count."""
    import anndata as ad

    query = ad.read_h5ad(folder / "query.h5ad")
    reference = ad.read_h5ad(folder / "reference.h5ad")
    truth = json.loads((folder / "truth.json").read_text())["truth"]
    scored = {q: set(t["accepted"]) for q, t in truth.items() if t["accepted"]}
    columns = ("cell_type", "cell_type", "pseudo_sample", "pseudo_sample")
    print(f"3. real pair {folder.name}: HVGs, top-1 hits of {len(scored)} query types")
    print("   n  no rank vector (q / r)  cell term alone  whole method")
    for n in sizes:
        q, r = pr.pp.preprocess_adatas(
            query, reference, *columns, n_top_genes=n, min_shared_genes=1
        )
        x, y = spearman_features(q.X), spearman_features(r.X)
        undefined = [np.mean(~np.any(f != 0, axis=1)) for f in (x, y)]
        hits = []
        for weights in ({"lambda_label": 0.0, "lambda_feature": 1.0}, {}):
            dm = pr.tl.DatasetMap(q, r)
            dm.init_geom(**weights)
            dm.init_problem()
            dm.solve(progress=False)
            best = dm.compute_mapping().idxmax(axis=1)
            hits.append(sum(best[t] in accepted for t, accepted in scored.items()))
        print(
            f"{n:4d}  {undefined[0]:10.0%} / {undefined[1]:4.0%}  {hits[0]:12d} / {len(scored)}"
            f"  {hits[1]:9d} / {len(scored)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--genes", type=int, nargs="+", default=[2, 5, 10, 20, 30, 50, 100, 200, 400]
    )
    parser.add_argument("--real-pair", type=Path, help="a folder of shared/data/realpairs")
    args = parser.parse_args()
    logging.getLogger("pairot").setLevel(logging.ERROR)
    if args.real_pair is not None:
        real_pair(args.real_pair, args.genes + [500, 1000])
        return
    query, reference = pr.datasets.pbmc_demo()
    header = "no rank vector (q / r)  Spearman alone  rho same / other type  method: own best"
    print(f"1. HVGs of 721 shared genes\n   n  {header}  max mapping")
    for n in args.genes:
        q, r = pr.pp.preprocess_adatas(
            query, reference, *COLUMNS, n_top_genes=n, min_shared_genes=1
        )
        print(f"{n:4d}  {figures(q, r)}")
    print(f"2. shared genes (all of them HVGs)\n   n  {header}  max mapping")
    for n in args.genes:
        ref = reference.copy()
        rng = np.random.default_rng(n)
        keep = set(rng.choice(ref.n_vars, size=n, replace=False))
        ref.var_names = [g if i in keep else f"OTHER{i}" for i, g in enumerate(ref.var_names)]
        q, r = pr.pp.preprocess_adatas(query, ref, *COLUMNS, n_top_genes=500, min_shared_genes=1)
        print(f"{q.n_vars:4d}  {figures(q, r)}")


if __name__ == "__main__":
    main()
