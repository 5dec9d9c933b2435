"""The usage of METHOD section 9 (the seed tutorial "Reduce Compute Requirements") runs unchanged.

The tutorial's block is pasted verbatim into the test below; only the setup around it (the
demo pair written to and read from h5ad, the working folder) is test code.
"""

# ruff: noqa: E702, B018
from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd

import pairot as pr

matplotlib.use("Agg")


def test_tutorial_runs_verbatim(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    # Setup: the demo pair as h5ad files with the tutorial's obs column names.
    query, reference = pr.datasets.pbmc_demo()
    for adata, name in ((query, "query_raw.h5ad"), (reference, "reference_raw.h5ad")):
        adata.obs = adata.obs.rename(columns={"cell_type": "cell_type_author"})
        adata.write_h5ad(tmp_path / name)
    adata_query_raw = ad.read_h5ad(tmp_path / "query_raw.h5ad")
    adata_ref_raw = ad.read_h5ad(tmp_path / "reference_raw.h5ad")
    path_q = tmp_path / "adata_query_preprocessed.h5ad"
    monkeypatch.chdir(tmp_path)

    # ---- METHOD section 9, verbatim ---------------------------------------------------
    # fmt: off
    adata_query, adata_ref = pr.pp.preprocess_adatas(
        adata_query_raw, adata_ref_raw, n_top_genes=350,
        cell_type_column_adata1="cell_type_author", cell_type_column_adata2="cell_type_author",
        sample_column_adata1="sample_id", sample_column_adata2="sample_id",
        n_samples_auroc=10_000, n_samples_hvg_selection=100_000)
    adata_query.write_h5ad(path_q); adata_query = ad.read_h5ad(path_q)   # cache round trip
    adata_query = adata_query[pr.pp.downsample_indices(
        adata_query.obs.cell_type_author.to_numpy(), n_samples=10_000), :]
    dataset_map = pr.tl.DatasetMap(adata_query, adata_ref)
    dataset_map.init_geom(batch_size=12288, epsilon=0.05)
    dataset_map.geom.x.shape; dataset_map.geom.y.shape
    dataset_map.init_problem(tau_a=1.0, tau_b=1.0)
    dataset_map.solve()
    mapping = dataset_map.compute_mapping()
    ax = pr.pl.mapping(mapping, sort_by_score=False, backend="matplotlib"); ax.set_title("...")
    distance = dataset_map.compute_distance()
    ax = pr.pl.distance(distance, backend="matplotlib")
    mapping.to_parquet("mapping_mean.parquet"); pd.read_parquet("mapping_mean.parquet")
    # fmt: on
    # ---- end of the tutorial ------------------------------------------------------------

    # The cache round trip and the downsampling kept every cell and the HVGs.
    assert path_q.is_file()
    assert adata_query.n_obs == query.n_obs
    assert adata_query.n_vars == adata_ref.n_vars == 350
    assert dataset_map.geom.x.shape == (query.n_obs, 350)
    assert dataset_map.geom.y.shape == (reference.n_obs, 350)

    # The clusters with clear markers map one-to-one onto their namesakes.
    assert mapping.shape == (8, 8)
    for cluster in ("CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic"):
        assert mapping.loc[cluster].idxmax() == cluster
        assert mapping.loc[cluster, cluster] > 0.9
        assert distance.loc[cluster].idxmin() == cluster
    assert np.all((distance.to_numpy() >= 0) & (distance.to_numpy() <= 2))

    # The figures are matplotlib Axes; the title was set on the mapping heatmap.
    assert isinstance(ax, matplotlib.axes.Axes)
    titles = [a.get_title() for fig in map(plt.figure, plt.get_fignums()) for a in fig.axes]
    assert "..." in titles
    plt.close("all")

    # The parquet file landed in the working folder and reads back equal to the mapping.
    back = pd.read_parquet(tmp_path / "mapping_mean.parquet")
    pd.testing.assert_frame_equal(back, mapping)
