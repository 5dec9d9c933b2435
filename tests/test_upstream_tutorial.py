"""Upstream pairOT's Tutorial, cell by cell, as its users wrote it (issue 13).

The calls follow upstream's documented signatures (positional arguments where upstream takes
them, its keyword names, its result forms); each result is checked against pairot's own
tables, computed another way, so that a silent difference fails.
"""

# ruff: noqa: B018
from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd

import pairot as pr

matplotlib.use("Agg")


def test_upstream_tutorial_cells(tmp_path):
    import matplotlib.pyplot as plt

    query, reference = pr.datasets.pbmc_demo()
    for adata, name in ((query, "query.h5ad"), (reference, "reference.h5ad")):
        adata.obs = adata.obs.rename(columns={"cell_type": "cell_type_author"})
        # upstream's h5ad files cannot hold '/' in a cluster name (its dict keys nest)
        adata.obs["cell_type_author"] = adata.obs["cell_type_author"].cat.rename_categories(
            lambda name: name.replace("/", "|")
        )
        adata.write_h5ad(tmp_path / name)
    adata_query_raw = ad.read_h5ad(tmp_path / "query.h5ad")
    adata_ref_raw = ad.read_h5ad(tmp_path / "reference.h5ad")

    # The gene tables, as the Tutorial shows them.
    official = pr.pp.OFFICIAL_GENES["feature_name"]
    sample = pr.pp.FILTERED_GENES.set_index("feature_name").sample(10, random_state=0)
    assert official.is_unique and {"CD3E", "MS4A1", "GAPDH"} <= set(official)
    assert list(sample.columns) == ["origin", "filter_type"] and len(sample) == 10

    # Preprocessing with upstream's argument names; None = all cells.
    adata_query, adata_ref = pr.pp.preprocess_adatas(
        adata_query_raw,
        adata_ref_raw,
        n_top_genes=200,
        filter_genes=True,
        cell_type_column_adata1="cell_type_author",
        cell_type_column_adata2="cell_type_author",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
        n_samples_auroc=None,
        n_samples_hvg_selection=None,
    )
    filtered = set(pr.pp.FILTERED_GENES["feature_name"])
    assert not set(adata_query.var_names) & filtered  # no mitochondrial / ribosomal HVG
    assert set(adata_query.var_names) <= set(official)
    assert (adata_query.obs["cell_type_author"] == adata_query_raw.obs["cell_type_author"]).all()
    assert (adata_query.obs["sample_id"] == adata_query_raw.obs["sample_id"]).all()

    # Upstream's DE building blocks on the stored tables, in its dict forms.
    de_res_ova, de_res_ava = pr.pp.de_tables_to_dicts(
        adata_query.uns["pairot"]["de_ova"], adata_query.uns["pairot"]["de_ava"]
    )
    ova = pr.pp.filter_genes_ova(de_res_ova, 1.0, 0.6, 0.05, True)  # upstream's order
    ava = pr.pp.filter_genes_ava(
        de_res_ava,
        logfc_threshold=1.0,
        aucroc_threshold=0.6,
        adj_pval_threshold=0.05,
        gene_filtering=True,
    )
    selected = pr.pp.select_genes(ova, ava, 10, 3, None, 0.3, 10, True)
    assert set(selected) == set(adata_query.obs["cell_type_author"].cat.categories)

    # The map, with an upstream keyword that pairot honours as the same computation.
    dataset_map = pr.tl.DatasetMap(adata_query, adata_ref)
    dataset_map.init_geom(batch_size=512, epsilon=0.05, relative_epsilon=None)
    dataset_map.init_problem(tau_a=1.0, tau_b=1.0)
    prob = dataset_map.ot_prob
    assert prob.a.shape == (adata_query.n_obs,) and prob.tau_a == 1.0
    shown = repr(dataset_map.solve())
    assert "\n" not in shown and "converged" in shown
    mapping = dataset_map.compute_mapping()
    distance = dataset_map.compute_distance()

    # The query's marker lists behind the label distance are those select_genes gives.
    for cluster, genes in selected.items():
        table = dataset_map.DEGs_label_distance[cluster][dataset_map.reference_clusters[0]]
        columns = table[["rank_query", "logFC_query", "rank_ref", "logFC_ref"]]
        assert list(columns.index) == list(genes.index), cluster
        np.testing.assert_allclose(columns["logFC_query"], genes["logFC"])
        assert set(genes["reference"]) <= {"all", *selected}

    # Plots sized in pixels, the Sankey with upstream's keywords.
    ax = pr.pl.mapping(mapping, width=800, height=600, backend="matplotlib")
    assert tuple(ax.figure.get_size_inches() * ax.figure.dpi) == (800, 600)
    fig = pr.pl.sankey(cluster_mapping=mapping, cluster_distance=distance, filter_threshold=0.1)
    assert fig.layout.title is not None
    plt.close("all")

    # Suggested matches with no threshold, in upstream's dict form (the default).
    matches = dataset_map.select_similar_clusters(
        mapping, distance, threshold_mapping=None, threshold_distance=None
    )
    for q, refs in matches.items():
        assert refs == list(mapping.loc[q].sort_values(ascending=False, kind="stable").index)
    for cluster in ("CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic"):
        assert matches[cluster][0] == cluster

    # An h5ad cached by upstream's preprocessing (its uns keys) maps the same.
    cached = adata_query.copy()
    del cached.uns["pairot"]
    cached.uns["de_res_ova"], cached.uns["de_res_ava"] = de_res_ova, de_res_ava
    cached.write_h5ad(tmp_path / "upstream_cached.h5ad")
    again = pr.tl.DatasetMap(ad.read_h5ad(tmp_path / "upstream_cached.h5ad"), adata_ref)
    again.init_geom(batch_size=512, epsilon=0.05)
    again.init_problem()
    again.solve(progress=False)
    pd.testing.assert_frame_equal(again.compute_mapping(), mapping, atol=1e-10)
