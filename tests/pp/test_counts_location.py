"""Counts in ``raw`` or a layer, genes named by a ``var`` column of symbols (the CELLxGENE
layout): every combination with in-memory, backed and lazy inputs gives the outputs of the
same data with counts in ``X`` and symbols as ``var_names``; bad options get one clear error;
the caller's objects and files are never changed."""

from __future__ import annotations

import hashlib
import logging

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import pairot as pr

ARGS = ("cell_type", "cell_type", "sample_id", "sample_id")
KW = {"n_top_genes": 80, "n_samples_auroc": 60, "n_samples_hvg_selection": 400}


def cellxgene_form(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` as a CELLxGENE file holds it: normalized log values in ``X``, the counts in
    ``raw.X`` and in ``layers["counts"]``, Ensembl-like ids as ``var_names`` and the symbols
    in ``var["feature_name"]`` (also in ``raw.var``)."""
    counts = sparse.csr_matrix(adata.X, dtype=np.float32)
    ids = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    var = pd.DataFrame({"feature_name": np.asarray(adata.var_names)}, index=ids)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    normalized = sparse.diags(1e4 / np.maximum(totals, 1)) @ counts
    normalized.data = np.log1p(normalized.data)
    out = ad.AnnData(
        X=sparse.csr_matrix(normalized, dtype=np.float32), obs=adata.obs.copy(), var=var
    )
    out.raw = ad.AnnData(X=counts.copy(), obs=adata.obs.copy(), var=var.copy())
    out.layers["counts"] = counts.copy()
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    q, r = pr.datasets.simulate_pair(
        n_cells_query=500, n_cells_reference=600, n_genes=300, n_cell_types=4, random_state=1
    )
    q.X = sparse.csr_matrix(q.X, dtype=np.float32)
    cxg = cellxgene_form(q)
    path = tmp_path_factory.mktemp("cxg") / "q.h5ad"
    cxg.write_h5ad(path)
    expected = pr.pp.preprocess_adatas(q, r, *ARGS, **KW)
    return q, r, cxg, path, expected


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open(path, access: str):
    if access == "backed":
        return ad.read_h5ad(path, backed="r")
    if access == "lazy":
        from anndata.experimental import read_lazy

        return read_lazy(h5py.File(path, "r"))
    return ad.read_h5ad(path)


def assert_same(expected, got, *, ids: pd.Series | None):
    for e, g in zip(expected, got, strict=True):
        assert list(e.var_names) == list(g.var_names)
        assert (e.X != g.X).nnz == 0 and e.X.dtype == g.X.dtype
        pd.testing.assert_frame_equal(e.obs, g.obs)
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(e.uns["pairot"][key], g.uns["pairot"][key])
        for key, value in e.uns["pairot"]["pseudobulk"].items():
            np.testing.assert_array_equal(value, g.uns["pairot"]["pseudobulk"][key])
    query = got[0]
    if ids is not None:  # the ids stay beside the symbols
        assert query.var["gene_ids"].tolist() == ids.loc[query.var_names].tolist()
    else:
        assert "gene_ids" not in query.var.columns


@pytest.mark.parametrize("access", ["memory", "backed", "lazy"])
@pytest.mark.parametrize("counts", ["raw", "layers/counts"])
@pytest.mark.parametrize("symbols", [None, "feature_name"])
def test_counts_and_symbols_equal_counts_in_x(studies, tmp_path, access, counts, symbols):
    q, r, cxg, path, expected = studies
    if symbols is None:  # symbols as var_names: the same file with the symbols as index
        renamed = cxg.copy()
        renamed.var_names = cxg.var["feature_name"].to_numpy()
        renamed.raw = ad.AnnData(X=cxg.raw.X.copy(), obs=cxg.obs.copy(), var=renamed.var.copy())
        path = tmp_path / "symbols.h5ad"
        renamed.write_h5ad(path)
    before = _digest(path)
    query = _open(path, access)
    got = pr.pp.preprocess_adatas(
        query, r, *ARGS, **KW, counts_adata1=counts, gene_symbols_adata1=symbols
    )
    id_of = pd.Series(cxg.var_names, index=cxg.var["feature_name"].to_numpy())
    assert_same(expected, got, ids=id_of if symbols else None)
    params = got[0].uns["pairot"]["params"]
    assert params["counts_adata1"] == counts and params["counts_adata2"] == "X"
    assert params["gene_symbols_adata1"] == (symbols or "")
    assert _digest(path) == before  # the file is only read


def test_symbols_on_the_reference_and_views(studies):
    q, r, cxg, path, _ = studies
    cells = np.sort(np.random.default_rng(0).choice(q.n_obs, 420, replace=False))
    expected = pr.pp.preprocess_adatas(r, q[cells].copy(), *ARGS, **KW)
    backed = ad.read_h5ad(path, backed="r")
    for view in (cxg[cells], backed[cells]):
        got = pr.pp.preprocess_adatas(
            r, view, *ARGS, **KW, counts_adata2="raw", gene_symbols_adata2="feature_name"
        )
        for e, g in zip(expected, got, strict=True):
            assert list(e.var_names) == list(g.var_names)
            assert (e.X != g.X).nnz == 0
            pd.testing.assert_frame_equal(e.uns["pairot"]["de_ova"], g.uns["pairot"]["de_ova"])
        assert "gene_ids" in got[1].var.columns


def test_mapping_identical(studies):
    q, r, cxg, _, expected = studies
    got = pr.pp.preprocess_adatas(
        cxg, r, *ARGS, **KW, counts_adata1="raw", gene_symbols_adata1="feature_name"
    )
    maps = []
    for pair in (expected, got):
        dm = pr.tl.DatasetMap(*pair)
        dm.init_geom(batch_size=256, epsilon=0.05)
        dm.init_problem()
        dm.solve(progress=False)
        maps.append(dm.compute_mapping())
    pd.testing.assert_frame_equal(maps[0], maps[1], rtol=0, atol=0)


def test_symbols_fall_back_to_raw_var_only_columns(studies):
    """``raw.var`` without the symbol column: the column of ``var`` is used (same genes)."""
    q, r, cxg, _, expected = studies
    plain = cxg.copy()
    plain.raw = ad.AnnData(
        X=cxg.raw.X.copy(), obs=cxg.obs.copy(), var=pd.DataFrame(index=cxg.var_names)
    )
    got = pr.pp.preprocess_adatas(
        plain, r, *ARGS, **KW, counts_adata1="raw", gene_symbols_adata1="feature_name"
    )
    assert list(got[0].var_names) == list(expected[0].var_names)


def test_duplicated_and_missing_symbols(studies, caplog):
    """Several ids with one symbol: the most expressed keeps it; a missing symbol: the id."""
    q, r, cxg, _, _ = studies
    counts = q.X.toarray()
    totals = counts.sum(axis=0)
    a, b = np.argsort(-totals)[[10, 40]]  # two expressed genes, a more expressed than b
    c = int(np.argsort(-totals)[60])
    symbols = cxg.var["feature_name"].astype(object).to_numpy().copy()
    symbols[b] = symbols[a]  # b now shares a's symbol
    symbols[c] = np.nan  # c has none
    dup = cxg.copy()
    dup.var["feature_name"] = symbols
    dup.raw = ad.AnnData(X=cxg.raw.X.copy(), obs=cxg.obs.copy(), var=dup.var.copy())
    # the same data with symbols as var_names: b left out, c named by its id
    names = np.asarray(q.var_names, dtype=object).copy()
    names[c] = cxg.var_names[c]
    keep = np.ones(q.n_vars, dtype=bool)
    keep[b] = False
    plain = ad.AnnData(X=q.X[:, keep].copy(), obs=q.obs.copy(), var=pd.DataFrame(index=names[keep]))
    expected = pr.pp.preprocess_adatas(plain, r, *ARGS, **{**KW, "min_shared_genes": 1})
    with caplog.at_level(logging.WARNING, logger="pairot"):
        got = pr.pp.preprocess_adatas(
            dup,
            r,
            *ARGS,
            **{**KW, "min_shared_genes": 1},
            counts_adata1="raw",
            gene_symbols_adata1="feature_name",
        )
    assert any(
        "name several expressed genes" in m and repr(symbols[a]) in m for m in caplog.messages
    )
    for e, g in zip(expected, got, strict=True):
        assert list(e.var_names) == list(g.var_names)
        pd.testing.assert_frame_equal(e.uns["pairot"]["de_ova"], g.uns["pairot"]["de_ova"])
    # the gene without a symbol is named by its id, so it pairs only with a study naming it so
    assert cxg.var_names[c] not in set(got[0].var_names)
    missing = cxg.copy()
    missing.var["feature_name"] = np.where(np.arange(q.n_vars) == c, None, symbols).astype(object)
    missing.var.loc[missing.var_names[b], "feature_name"] = symbols[b + 1] + "-x"
    ova, _ = pr.pp.rank_genes_limma(
        missing,
        "cell_type",
        "sample_id",
        result_format="long",
        counts="layers/counts",
        gene_symbols="feature_name",
    )
    assert cxg.var_names[c] in set(ova["gene"])
    with pytest.raises(ValueError, match="gene_symbols='feature_name' names several genes alike"):
        pr.pp.rank_genes_limma(
            dup, "cell_type", "sample_id", counts="raw", gene_symbols="feature_name"
        )


def test_rank_genes_limma_counts_and_symbols(studies):
    q, _, cxg, _, _ = studies
    expected = pr.pp.rank_genes_limma(q, "cell_type", "sample_id", result_format="long")
    got = pr.pp.rank_genes_limma(
        cxg,
        "cell_type",
        "sample_id",
        result_format="long",
        counts="layers/counts",
        gene_symbols="feature_name",
    )
    for e, g in zip(expected, got, strict=True):
        pd.testing.assert_frame_equal(e, g)


def test_bad_options(studies):
    q, r, cxg, _, _ = studies
    snapshot = cxg.copy()
    with pytest.raises(
        KeyError,
        match=r"counts_adata1='layers/missing' but adata1 has no layer 'missing' "
        r"\(its layers: \['counts'\]\)",
    ):
        pr.pp.preprocess_adatas(cxg, r, *ARGS, counts_adata1="layers/missing")
    with pytest.raises(ValueError, match=r"counts_adata2='raw' but adata2.raw is None"):
        pr.pp.preprocess_adatas(cxg, r, *ARGS, counts_adata2="raw")
    with pytest.raises(ValueError, match=r"counts_adata1='counts' is not a place of counts; pass"):
        pr.pp.preprocess_adatas(cxg, r, *ARGS, counts_adata1="counts")
    with pytest.raises(
        KeyError, match=r"gene_symbols_adata1='symbol' but adata1.raw.var has no column 'symbol'"
    ):
        pr.pp.preprocess_adatas(cxg, r, *ARGS, counts_adata1="raw", gene_symbols_adata1="symbol")
    with pytest.raises(TypeError, match="gene_symbols_adata2=3 must be None or the name"):
        pr.pp.preprocess_adatas(cxg, r, *ARGS, gene_symbols_adata2=3)
    with pytest.raises(ValueError, match="counts='raw' but adata.raw is None"):
        pr.pp.rank_genes_limma(q, "cell_type", "sample_id", counts="raw")
    # X refused as normalized: the message names the option that reads the counts
    with pytest.raises(
        ValueError,
        match=r"adata1.X contains non-integer values.*"
        r"adata1.raw.X holds integer counts: pass counts_adata1='raw'",
    ):
        pr.pp.preprocess_adatas(cxg, r, *ARGS)
    assert (snapshot.X != cxg.X).nnz == 0 and (snapshot.raw.X != cxg.raw.X).nnz == 0
    pd.testing.assert_frame_equal(snapshot.var, cxg.var)
    assert list(snapshot.layers) == list(cxg.layers)
