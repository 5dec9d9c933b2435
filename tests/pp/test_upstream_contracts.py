"""Upstream pairOT's preprocessing contracts that pairot keeps (issue 13).

``None`` for the subsample sizes means "all cells"; fractional counts are accepted with a
warning; the outputs carry ``cell_type_author`` / ``sample_id`` copies of the label columns.
"""

import pandas as pd
import pytest

import pairot as pr

from .test_preprocess import make_study


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
    kw = dict(n_top_genes=15)
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
