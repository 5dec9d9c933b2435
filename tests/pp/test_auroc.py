import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import roc_auc_score

from pairot.pp._auroc import auroc_ova_ava, auroc_pairwise_loop


def sklearn_reference(X, labels, k):
    """OVA and AVA AUROCs from sklearn.metrics.roc_auc_score, one call per entry."""
    X = np.asarray(X, dtype=np.float64)
    n_genes = X.shape[1]
    ova = np.full((k, n_genes), np.nan)
    ava = np.full((k, k, n_genes), np.nan)
    for c in range(k):
        y = labels == c
        if 0 < y.sum() < y.size:
            for g in range(n_genes):
                ova[c, g] = roc_auc_score(y, X[:, g])
        for c2 in range(k):
            m = (labels == c) | (labels == c2)
            if c2 == c or not (labels == c).any() or not (labels == c2).any():
                continue
            for g in range(n_genes):
                ava[c, c2, g] = roc_auc_score(labels[m] == c, X[m, g])
    return ova, ava


def naive_pairs(X, labels, k):
    """AUROC by a double loop over cell pairs: (x_i > x_j) + 0.5 * (x_i == x_j)."""
    X = np.asarray(X, dtype=np.float64)
    n, n_genes = X.shape
    ova = np.full((k, n_genes), np.nan)
    ava = np.full((k, k, n_genes), np.nan)
    for g in range(n_genes):
        u = np.zeros((k, k))
        for i in range(n):
            for j in range(n):
                u[labels[i], labels[j]] += (X[i, g] > X[j, g]) + 0.5 * (X[i, g] == X[j, g])
        sizes = np.bincount(labels, minlength=k)
        for c1 in range(k):
            rest = n - sizes[c1]
            if sizes[c1] and rest:
                ova[c1, g] = (u[c1].sum() - u[c1, c1]) / (sizes[c1] * rest)
            for c2 in range(k):
                if c1 != c2 and sizes[c1] and sizes[c2]:
                    ava[c1, c2, g] = u[c1, c2] / (sizes[c1] * sizes[c2])
    return ova, ava


def assert_same(got, ref, atol=1e-9):
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        assert a.dtype == np.float64
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, equal_nan=True)


def tied_data(seed=0, n_cells=90, n_genes=7, k=5):
    rng = np.random.default_rng(seed)
    X = rng.poisson(0.8, size=(n_cells, n_genes)) * rng.integers(0, 2, size=(n_cells, n_genes))
    labels = rng.integers(0, k, size=n_cells)
    labels[:k] = np.arange(k)  # every cluster present
    return X, labels


@pytest.fixture(scope="module")
def data():
    X, labels = tied_data()
    return X, labels, 5, sklearn_reference(X, labels, 5)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "lil"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_matches_sklearn(data, fmt, dtype):
    X, labels, k, ref = data
    Xt = X.astype(dtype)
    if fmt != "dense":
        Xt = sp.csr_matrix(Xt).asformat(fmt)
    assert_same(auroc_ova_ava(Xt, labels, k), ref)


def test_float_values_with_ties():
    # normalized-like float values: many zeros, repeated non-zero values across cells
    rng = np.random.default_rng(3)
    counts = rng.poisson(0.6, size=(120, 6)).astype(np.float64)
    X = counts / np.where(rng.random(120) < 0.5, 2.0, 3.0)[:, None]
    labels = rng.integers(0, 4, size=120)
    ref = sklearn_reference(X, labels, 4)
    assert_same(auroc_ova_ava(sp.csr_matrix(X.astype(np.float32)), labels, 4), ref)
    assert_same(auroc_ova_ava(X, labels, 4), ref)


def test_single_cell_cluster_zero_gene_empty_cluster():
    X, labels = tied_data(seed=1, n_cells=40, n_genes=5, k=3)
    X[:, 2] = 0  # a gene that is all zeros
    labels = labels.copy()
    labels[labels == 1] = 0
    labels[7] = 1  # cluster 1 has a single cell
    k = 4  # cluster 3 has no cell
    ova, ava = auroc_ova_ava(sp.csr_matrix(X), labels, k)
    ref = sklearn_reference(X, labels, k)
    assert_same((ova, ava), ref)
    # all-zero gene: 0.5 wherever defined
    present = [0, 1, 2]
    np.testing.assert_array_equal(ova[present, 2], 0.5)
    sub = ava[np.ix_(present, present, [2])][..., 0]
    np.testing.assert_array_equal(sub[~np.eye(3, dtype=bool)], 0.5)
    # empty cluster: NaN everywhere it appears; diagonal NaN
    assert np.isnan(ova[3]).all() and np.isnan(ava[3]).all() and np.isnan(ava[:, 3]).all()
    assert np.isnan(ava[np.arange(k), np.arange(k)]).all()
    assert np.isfinite(ova[1]).all() and np.isfinite(ava[1, 0]).all()


def test_cluster_with_all_cells():
    X, _ = tied_data(seed=2, n_cells=20, n_genes=3, k=2)
    labels = np.zeros(20, dtype=int)
    ova, ava = auroc_ova_ava(X, labels, 2)
    assert np.isnan(ova).all() and np.isnan(ava).all()


def test_explicit_zeros_duplicates_and_negatives():
    X, labels = tied_data(seed=4, n_cells=50, n_genes=4, k=3)
    ref = sklearn_reference(X, labels, 3)
    # stored (explicit) zeros tie with implicit zeros
    csc = sp.csc_matrix(X.astype(np.float64))
    rows, cols = np.nonzero(X == 0)
    data = np.concatenate([csc.tocoo().data, np.zeros(rows.size // 2)])
    r = np.concatenate([csc.tocoo().row, rows[: rows.size // 2]])
    c = np.concatenate([csc.tocoo().col, cols[: rows.size // 2]])
    explicit = sp.csc_matrix((data, (r, c)), shape=X.shape)
    assert explicit.nnz == csc.nnz + rows.size // 2 > csc.nnz
    assert_same(auroc_ova_ava(explicit, labels, 3), ref)
    # non-canonical input with duplicate entries: duplicates are summed (scipy semantics)
    coo = sp.coo_matrix(X)
    dup = sp.coo_matrix(
        (np.concatenate([coo.data, coo.data]), (np.tile(coo.row, 2), np.tile(coo.col, 2))),
        shape=X.shape,
    )
    assert_same(auroc_ova_ava(dup.tocsr(), labels, 3), sklearn_reference(2 * X, labels, 3))
    # negative values are ordered correctly around the zero tie group
    Xn = X - 1.0
    assert_same(auroc_ova_ava(sp.csr_matrix(Xn), labels, 3), sklearn_reference(Xn, labels, 3))


def test_baseline_equals_kernel():
    X, labels = tied_data(seed=5, n_cells=150, n_genes=12, k=6)
    labels[labels == 5] = 4  # cluster 5 empty
    for Xt in (X, sp.csr_matrix(X.astype(np.float32))):
        assert_same(auroc_pairwise_loop(Xt, labels, 6), auroc_ova_ava(Xt, labels, 6), atol=1e-12)


def test_blocks_and_progress(monkeypatch, capsys):
    # many small gene blocks give the same result as one block; progress bar runs
    import pairot.pp._auroc as mod

    X, labels = tied_data(seed=6, n_cells=80, n_genes=9, k=4)
    full = auroc_ova_ava(sp.csr_matrix(X), labels, 4)
    monkeypatch.setattr(mod, "_BLOCK_NNZ", 5)
    monkeypatch.setattr(mod, "_BLOCK_DENSE", 100)
    assert_same(auroc_ova_ava(sp.csr_matrix(X), labels, 4, progress=True), full, atol=0)
    assert_same(auroc_ova_ava(X, labels, 4, progress=True), full, atol=0)


def test_shapes_and_validation():
    ova, ava = auroc_ova_ava(np.zeros((5, 0)), np.zeros(5, int), 2)
    assert ova.shape == (2, 0) and ava.shape == (2, 2, 0)
    ova, ava = auroc_ova_ava(sp.csr_matrix((0, 3)), np.zeros(0, int), 2)
    assert ova.shape == (2, 3) and np.isnan(ova).all() and np.isnan(ava).all()
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match="labels must lie"):
        auroc_ova_ava(X, [0, 1, 2, 0], 2)
    with pytest.raises(ValueError, match="labels must lie"):
        auroc_ova_ava(X, [0, 1, -1, 0], 2)
    with pytest.raises(ValueError, match="one entry per cell"):
        auroc_ova_ava(X, [0, 1, 1], 2)
    with pytest.raises(TypeError, match="integer cluster codes"):
        auroc_ova_ava(X, ["a", "b", "a", "b"], 2)
    bad = np.array([[np.nan, 1.0], [0.0, np.inf]])
    for fn in (auroc_ova_ava, auroc_pairwise_loop):
        for Xb in (bad, sp.csr_matrix(bad)):
            with pytest.raises(ValueError, match="NaN"):
                fn(Xb, [0, 1], 2)
    with pytest.raises(TypeError, match="numbers"):
        auroc_ova_ava(np.array([["a"], ["b"]]), [0, 1], 2)
    with pytest.raises(ValueError, match="n_clusters"):
        auroc_ova_ava(X, [0, 0, 0, 0], 0)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(min_value=1, max_value=14).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int64, (n, 3), elements=st.integers(0, 3)),
            hnp.arrays(np.int64, (n,), elements=st.integers(0, 3)),
        )
    ),
    st.sampled_from(["dense", "csr", "csc"]),
)
def test_property_naive_pairs(xl, fmt):
    X, labels = xl
    k = 4
    Xt = X if fmt == "dense" else sp.csr_matrix(X).asformat(fmt)
    ova, ava = auroc_ova_ava(Xt, labels, k)
    assert_same((ova, ava), naive_pairs(X, labels, k), atol=1e-12)
    both = ~np.isnan(ava) & ~np.isnan(ava.transpose(1, 0, 2))
    np.testing.assert_allclose((ava + ava.transpose(1, 0, 2))[both], 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [5, 300])
def test_labelled_columns_match_sklearn(k):
    """The AUROC subsample as preprocessing keeps it (each gene's stored values with their
    cells' cluster codes, no rows; codes in uint8, or uint16 above 256 clusters) gives the
    AUROCs of the matrix it came from, against scikit-learn; clusters without cells are NaN."""
    from pairot.pp._auroc import LabelledColumns, auroc_columns, code_dtype_for

    rng = np.random.default_rng(5)
    n_cells = 2 * k + 60
    labels = rng.integers(0, k, size=n_cells)
    labels[:k] = np.arange(k)  # every cluster has a cell ...
    labels[labels == k - 1] = 0  # ... but the last one
    scale = rng.choice([0.5, 1.0], n_cells)[:, None]  # ties within and across cells
    X = (rng.poisson(0.7, size=(n_cells, 6)) * scale).astype(np.float32)
    csc = sp.csc_matrix(X)
    dtype = code_dtype_for(k)
    assert dtype == (np.uint8 if k <= 256 else np.uint16)
    columns = LabelledColumns(
        csc.data,
        labels[csc.indices].astype(dtype),
        csc.indptr.astype(np.int64),
        np.bincount(labels, minlength=k).astype(np.int64),
    )
    assert columns.shape == X.shape
    ova, ava = auroc_columns(columns)
    assert np.isnan(ova[k - 1]).all() and np.isnan(ava[k - 1]).all()
    if k <= 5:
        assert_same((ova, ava), sklearn_reference(X, labels, k))
    else:  # sklearn for every entry is slow at 300 clusters: the kernel on the matrix, and a
        # few entries against sklearn
        assert_same((ova, ava), auroc_ova_ava(X, labels, k))
        for c1, c2, g in [(0, 1, 0), (2, 299 - 1, 3), (150, 7, 5)]:
            m = (labels == c1) | (labels == c2)
            assert ava[c1, c2, g] == pytest.approx(roc_auc_score(labels[m] == c1, X[m, g]))
        y = labels == 3
        assert ova[3, 2] == pytest.approx(roc_auc_score(y, X[:, 2]))
