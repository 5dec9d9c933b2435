"""Upstream pairOT's preprocessing contracts that pairot keeps (issue 13).

``None`` for the subsample sizes means "all cells"; fractional counts are accepted with a
warning; the outputs carry ``cell_type_author`` / ``sample_id`` copies of the label columns.
"""

import numpy as np
import pandas as pd
import pytest

import pairot as pr

from .test_preprocess import SMALL, make_study


def _assert_same(a, b):
    """Equal DE results, whatever their form (long tables, dicts of tables, tuples)."""
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    else:
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)


def test_n_samples_auroc_none_means_all_cells():
    adata = make_study(5)
    everything = max(adata.obs["ct"].value_counts())
    expected = pr.pp.rank_genes_limma(adata, "ct", "donor", everything)  # positional, upstream
    _assert_same(pr.pp.rank_genes_limma(adata, "ct", "donor", None), expected)
    # a cap below the largest cluster subsamples, so the AUROCs change: None is not a cap
    capped = pr.pp.rank_genes_limma(adata, "ct", "donor", 20)
    with pytest.raises(AssertionError):
        _assert_same(capped, expected)


def test_preprocess_none_means_all_cells():
    a1, a2 = make_study(6), make_study(7, n_cells=200)
    kw = dict(n_top_genes=15, **SMALL)
    expected = pr.pp.preprocess_adatas(
        a1,
        a2,
        "ct",
        "ct",
        "donor",
        "donor",
        n_samples_auroc=10**6,
        n_samples_hvg_selection=10**6,
        **kw,
    )
    got = pr.pp.preprocess_adatas(
        a1,
        a2,
        "ct",
        "ct",
        "donor",
        "donor",
        n_samples_auroc=None,
        n_samples_hvg_selection=None,
        **kw,
    )
    for e, g in zip(expected, got, strict=True):
        assert list(e.var_names) == list(g.var_names)
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(e.uns["pairot"][key], g.uns["pairot"][key])
        assert g.uns["pairot"]["params"]["n_samples_auroc"] == 0  # 0 records "all cells"


@pytest.mark.parametrize("bad", [0, -3, 2.5, "all", True])
def test_n_samples_bad_values_name_the_argument(bad):
    adata = make_study(5)
    with pytest.raises((TypeError, ValueError), match="n_samples_auroc.*None"):
        pr.pp.rank_genes_limma(adata, "ct", "donor", bad)
    a2 = make_study(7)
    with pytest.raises((TypeError, ValueError), match="n_samples_hvg_selection.*None"):
        pr.pp.preprocess_adatas(
            adata, a2, "ct", "ct", "donor", "donor", n_samples_hvg_selection=bad
        )


# ------------------------------------------------------------------ non-integer counts
def _fractional(adata, values):
    out = adata.copy()
    out.X = values
    return out


def test_corrected_counts_are_accepted_with_a_warning(caplog):
    """Ambient-RNA-corrected counts (fractional, on a count scale) run, with one warning that
    says what was seen; the values reach the output unrounded."""
    a1, a2 = make_study(8), make_study(9, n_cells=200)
    X = a1.X.toarray().astype(np.float64)
    X *= np.random.default_rng(0).uniform(0.6, 1.0, size=X.shape)  # SoupX-like shrinkage
    X[0, :] += 40.0  # real studies have genes with many UMIs in a cell
    corrected = _fractional(a1, X)
    n_fractional = int(np.count_nonzero(X != np.rint(X)))
    with caplog.at_level("WARNING", logger="pairot"):
        q, _ = pr.pp.preprocess_adatas(
            corrected, a2, "ct", "ct", "donor", "donor", n_top_genes=15, **SMALL
        )
    (warning,) = [m for m in caplog.messages if "non-integer" in m]
    assert warning.startswith("adata1.X contains non-integer values")
    assert f"{n_fractional:,} of its {np.count_nonzero(X):,} non-zero values" in warning
    assert "count scale" in warning and "adata1.layers['counts']" in warning
    genes = corrected.var_names.get_indexer(q.var_names)
    np.testing.assert_array_equal(np.asarray(q.X), X[:, genes])
    np.testing.assert_array_equal(corrected.X, X)  # the caller's data is untouched
    de = q.uns["pairot"]["de_ova"]
    assert np.isfinite(de["logFC"]).all() and np.isfinite(de["auroc"]).all()


def test_log_transformed_and_normalized_values_are_refused():
    a1, a2 = make_study(8), make_study(9, n_cells=200)
    counts = a1.X.toarray().astype(np.float64)
    counts[0, :] += 40.0
    per_cell = counts / counts.sum(axis=1, keepdims=True) * 1e4
    args = ("ct", "ct", "donor", "donor")
    with pytest.raises(ValueError, match=r"largest value is .*: it looks log-transformed"):
        pr.pp.preprocess_adatas(_fractional(a1, np.log1p(per_cell)), a2, *args)
    with pytest.raises(ValueError, match=r"every cell sums to 10000: it looks normalized"):
        pr.pp.preprocess_adatas(_fractional(a1, per_cell), a2, *args)
    with pytest.raises(ValueError, match=r"adata\.X contains non-integer .*log-transformed"):
        pr.pp.rank_genes_limma(_fractional(a1, np.log1p(per_cell)), "ct", "donor")
    # integer counts stay silent, whatever their dtype
    pr.pp.rank_genes_limma(_fractional(a1, counts), "ct", "donor")


# --------------------------------------------------------- upstream's output obs columns
def test_outputs_carry_cell_type_author_and_sample_id(caplog):
    a1, a2 = make_study(10), make_study(11, n_cells=200)
    a2.obs["cell_type_author"] = "author's own"  # replaced in the output, with a warning
    before = a2.obs.copy()
    with caplog.at_level("WARNING", logger="pairot"):
        q, r = pr.pp.preprocess_adatas(
            a1, a2, "ct", "ct", "donor", "donor", n_top_genes=15, **SMALL
        )
    for out, original in ((q, a1), (r, a2)):
        assert (
            out.obs["cell_type_author"].astype(str).tolist()
            == original.obs["ct"].astype(str).tolist()
        )
        assert (
            out.obs["sample_id"].astype(str).tolist() == original.obs["donor"].astype(str).tolist()
        )
        assert out.obs["ct"].tolist() == out.obs["cell_type_author"].tolist()
    assert "sample_id" not in a1.obs and "cell_type_author" not in a1.obs  # inputs untouched
    pd.testing.assert_frame_equal(a2.obs, before)
    assert any("obs['cell_type_author'] holds the cluster labels" in m for m in caplog.messages)
    assert not any("adata1" in m and "replaced" in m for m in caplog.messages)


def test_upstream_column_names_used_as_inputs():
    """Inputs already named as upstream's (the seed tutorial) keep their columns as they are."""
    a1, a2 = make_study(10), make_study(11, n_cells=200)
    for a in (a1, a2):
        a.obs = a.obs.rename(columns={"ct": "cell_type_author", "donor": "sample_id"})
    args = ("cell_type_author",) * 2 + ("sample_id",) * 2
    q, _ = pr.pp.preprocess_adatas(a1, a2, *args, n_top_genes=15, **SMALL)
    assert list(q.obs.columns) == ["cell_type_author", "sample_id"]
    assert q.uns["pairot"]["cell_type_key"] == "cell_type_author"
