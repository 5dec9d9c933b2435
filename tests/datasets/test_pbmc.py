"""Tests of the real pbmc68k_reduced demo pair against the bundled original."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from pairot.datasets import pbmc_demo
from pairot.datasets._pbmc import recover_counts


@pytest.fixture(scope="module")
def original():
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="module")
def pair():
    return pbmc_demo(random_state=0)


def kept_types(original, threshold=16):
    sizes = original.obs["bulk_labels"].value_counts()
    return {str(c) for c, n in sizes.items() if n >= threshold}


def test_counts_reproduce_the_original_log_values(original, pair):
    raw = pd.DataFrame(
        original.raw.X.toarray(), index=original.obs_names, columns=original.raw.var_names
    )
    for adata in pair:
        X = adata.X.toarray().astype(np.float64)
        assert adata.X.dtype == np.float32
        assert X.min() >= 0
        np.testing.assert_array_equal(X, np.rint(X))
        # re-normalize the way pbmc68k_reduced was normalized: total counts of the cell over
        # all genes of the original data (obs n_counts), target sum 1e4, log1p
        n_counts = original.obs.loc[adata.obs_names, "n_counts"].to_numpy(dtype=np.float64)
        relog = np.log1p(X / n_counts[:, None] * 1e4)
        expected = raw.loc[adata.obs_names, adata.var_names].to_numpy()
        np.testing.assert_allclose(relog, expected, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(adata.obs["n_counts_original"].to_numpy(), n_counts)
        assert list(adata.var_names) == list(original.raw.var_names)


def test_split_is_disjoint_and_covers_the_kept_cells(original, pair):
    q, r = pair
    kept = kept_types(original)
    expected_cells = set(original.obs_names[original.obs["bulk_labels"].astype(str).isin(kept)])
    assert set(q.obs_names).isdisjoint(r.obs_names)
    assert set(q.obs_names) | set(r.obs_names) == expected_cells
    assert q.n_obs + r.n_obs == len(expected_cells)
    # stratified: every kept type split as evenly as possible
    nq = q.obs["cell_type"].value_counts()
    nr = r.obs["cell_type"].value_counts()
    for cell_type in kept:
        assert abs(nq[cell_type] - nr[cell_type]) <= 1


def test_labels_are_preserved_exactly(original, pair):
    kept = kept_types(original)
    dropped = set(original.obs["bulk_labels"].astype(str)) - kept
    assert dropped == {"CD34+", "CD4+/CD45RA+/CD25- Naive T"}
    for adata in pair:
        assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
        assert set(adata.obs["cell_type"].cat.categories) == kept
        original_labels = original.obs.loc[adata.obs_names, "bulk_labels"].astype(str)
        assert (adata.obs["cell_type"].astype(str) == original_labels).all()
        assert sorted(adata.uns["pbmc_demo"]["dropped_cell_types"]) == sorted(dropped)
    assert any("/" in c and " " in c and "+" in c for c in kept)


def test_pseudo_donors_give_two_cells_per_sample_and_type(pair):
    for adata, name in zip(pair, ("query", "reference"), strict=True):
        assert isinstance(adata.obs["sample_id"].dtype, pd.CategoricalDtype)
        assert list(adata.obs["sample_id"].cat.categories) == [
            f"{name}_donor{d}" for d in range(1, 5)
        ]
        table = pd.crosstab(adata.obs["sample_id"], adata.obs["cell_type"])
        assert table.to_numpy().min() >= 2
        # dealt round robin: sizes of one type differ by at most one between donors
        assert (table.max(axis=0) - table.min(axis=0)).max() <= 1


def test_embeddings_kept_for_the_kept_cells(original, pair):
    for adata in pair:
        rows = original.obs_names.get_indexer(adata.obs_names)
        np.testing.assert_array_equal(adata.obsm["X_pca"], original.obsm["X_pca"][rows])
        np.testing.assert_array_equal(adata.obsm["X_umap"], original.obsm["X_umap"][rows])


def test_seeded(pair):
    q2, r2 = pbmc_demo(random_state=0)
    assert list(q2.obs_names) == list(pair[0].obs_names)
    pd.testing.assert_frame_equal(q2.obs, pair[0].obs)
    assert (q2.X != pair[0].X).nnz == 0
    q3, _ = pbmc_demo(random_state=1)
    assert set(q3.obs_names) != set(pair[0].obs_names)


def test_h5ad_round_trip(pair, tmp_path):
    for k, adata in enumerate(pair):
        path = tmp_path / f"pbmc_{k}.h5ad"
        adata.write_h5ad(path)
        back = ad.read_h5ad(path)
        assert (back.X != adata.X).nnz == 0
        pd.testing.assert_frame_equal(back.obs, adata.obs)
        np.testing.assert_array_equal(back.obsm["X_pca"], adata.obsm["X_pca"])


def test_recover_counts_rejects_values_that_are_not_log_counts():
    n_counts = np.array([100.0, 200.0])
    good = np.log1p(np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 5.0]]) / n_counts[:, None] * 1e4)
    np.testing.assert_array_equal(recover_counts(good, n_counts).toarray(), [[1, 0, 3], [0, 2, 5]])
    with pytest.raises(ValueError, match="near-integers"):
        recover_counts(good * 1.1, n_counts)
    with pytest.raises(ValueError, match="n_counts"):
        recover_counts(good, n_counts[:1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_samples"):
        pbmc_demo(n_samples=0)
    with pytest.raises(ValueError, match="min_cells_per_type"):
        pbmc_demo(min_cells_per_type=10_000)
