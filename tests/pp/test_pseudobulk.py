import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from pairot.pp._pseudobulk import log_normalize, pseudobulk


def naive_pseudobulk(X, clusters, samples, min_cells):
    df = pd.DataFrame(X)
    df["cluster"] = clusters
    df["sample"] = samples
    out = {}
    for (s, c), group in df.groupby(["sample", "cluster"]):
        if len(group) >= min_cells:
            out[(s, c)] = group.drop(columns=["cluster", "sample"]).to_numpy().sum(axis=0)
    return out


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_pseudobulk_matches_groupby(fmt):
    rng = np.random.default_rng(0)
    X = rng.poisson(0.7, size=(120, 9)).astype(np.float32)
    clusters = rng.integers(0, 4, size=120)
    samples = rng.integers(0, 3, size=120)
    clusters[:1] = 3
    samples[:1] = 2
    clusters[clusters == 3] = 2  # cluster 3 keeps one cell in sample 2: below min_cells
    clusters[0] = 3
    Xin = X if fmt == "dense" else sparse.csr_matrix(X).asformat(fmt)
    gene_index = np.array([4, 0, 8])
    bulk = pseudobulk(
        Xin, clusters, samples, n_clusters=4, n_samples=3, gene_index=gene_index, min_cells=2
    )
    expected = naive_pseudobulk(X, clusters, samples, 2)
    got = {(int(s), int(c)): row for s, c, row in zip(bulk.sample, bulk.cluster, bulk.counts)}
    assert set(got) == set(expected)
    for key, row in got.items():
        np.testing.assert_allclose(row, expected[key][gene_index])
    assert 3 not in set(bulk.cluster.tolist())
    sizes = pd.crosstab(samples, clusters)
    for s, c, n in zip(bulk.sample, bulk.cluster, bulk.n_cells):
        assert sizes.loc[s, c] == n


def test_log_normalize():
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 5.0, 10.0]])
    got = log_normalize(counts, 1e5)
    expected = np.array(
        [
            np.log1p(np.array([0.25, 0.75, 0.0]) * 1e5),
            np.zeros(3),
            np.log1p(np.array([0.25, 0.25, 0.5]) * 1e5),
        ]
    )
    np.testing.assert_allclose(got, expected)
