"""SOMA experiments (``tiledbsoma.ExperimentAxisQuery``) as studies: the same results as the
in-memory route on the same data, streamed in chunks of cells, the experiment never changed.

The experiments are written here from small simulated AnnData with ``tiledbsoma.io.from_anndata``:
one with the counts as ``X`` (the X layer ``"data"``) and symbols as ``var_names``, one as the
CELLxGENE Census stores a study (normalized values in ``"data"``, counts in the X layer
``"raw"``, Ensembl-like ids as ``var_names``, symbols in ``var["feature_name"]``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import pairot as pr
from pairot.pp import _soma

ARGS = ("cell_type", "cell_type", "sample_id", "sample_id")
KW = {"n_top_genes": 60, "n_samples_auroc": 80, "n_samples_hvg_selection": 300}
#: Cells of the query without its first donor (a value_filter on obs).
SUBSET = "sample_id != 'query_donor1'"


def assert_same(expected, got, *, var=True):
    """Two preprocessing outputs are identical (``var=False``: but for ``var``'s columns)."""
    for e, g in zip(expected, got, strict=True):
        assert list(e.var_names) == list(g.var_names)  # the shared genes and HVGs
        assert type(e.X) is type(g.X)
        assert e.X.dtype == g.X.dtype
        assert (e.X != g.X).nnz == 0
        assert list(e.obs_names) == list(g.obs_names)
        pd.testing.assert_frame_equal(e.obs, g.obs)
        if var:
            pd.testing.assert_frame_equal(e.var, g.var)
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(e.uns["pairot"][key], g.uns["pairot"][key])
        assert sorted(e.obsm) == sorted(g.obsm)
        for key in e.obsm:
            np.testing.assert_array_equal(np.asarray(e.obsm[key]), np.asarray(g.obsm[key]))


def census_like(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` (counts in X, symbols as var_names) as a CELLxGENE file: normalized values in
    X, counts in ``layers["raw"]``, ids as var_names, symbols in ``var["feature_name"]``; and
    ``var["messy_name"]``: symbols with one missing and two genes sharing one."""
    counts = sparse.csr_matrix(adata.X)
    normalized = counts.multiply(1e4 / np.maximum(counts.sum(axis=1), 1)).tocsr()
    normalized.data = np.log1p(normalized.data).astype(np.float32)
    symbols = adata.var_names.to_numpy(dtype=object)
    messy = symbols.copy()
    messy[0] = ""  # no symbol: the gene keeps its id
    messy[2] = messy[1]  # two ids, one symbol: the more expressed keeps it
    var = pd.DataFrame(
        {"feature_name": symbols, "messy_name": messy},
        index=pd.Index([f"ENSG{i:011d}" for i in range(adata.n_vars)]),
    )
    return ad.AnnData(
        X=sparse.csr_matrix(normalized, dtype=np.float32),
        obs=adata.obs.copy(),
        var=var,
        obsm=dict(adata.obsm),
        layers={"raw": counts},
    )


def snapshot(folder) -> dict:
    """Every file under ``folder``: its size, modification time and content hash."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            stat = os.stat(path)
            files[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns, digest)
    return files


@pytest.fixture(scope="module")
def soma(tmp_path_factory):
    """The pair in memory, its SOMA experiments and the in-memory route's outputs."""
    pytest.importorskip("tiledbsoma")
    import tiledbsoma.io  # binds tiledbsoma too

    folder = tmp_path_factory.mktemp("soma")
    q, r = pr.datasets.simulate_pair(
        n_cells_query=360, n_cells_reference=420, n_genes=240, n_cell_types=4, random_state=5
    )
    q.obsm["X_umap"] = np.random.default_rng(0).normal(size=(q.n_obs, 2)).astype(np.float32)
    qc, rc = census_like(q), census_like(r)
    uris = {
        "plain": str(folder / "plain"),
        "census": str(folder / "census"),
        "census_ref": str(folder / "census_ref"),
    }
    tiledbsoma.io.from_anndata(uris["plain"], q, measurement_name="RNA", X_layer_name="data")
    tiledbsoma.io.from_anndata(uris["census"], qc, measurement_name="RNA", X_layer_name="data")
    tiledbsoma.io.from_anndata(uris["census_ref"], rc, measurement_name="RNA")
    expected = pr.pp.preprocess_adatas(q, r, *ARGS, **KW)
    return {
        "tiledbsoma": tiledbsoma,
        "q": q,
        "r": r,
        "qc": qc,
        "uris": uris,
        "folder": folder,
        "expected": expected,
        "before": snapshot(folder),
    }


def _query(soma, key, value_filter=None):
    tiledbsoma = soma["tiledbsoma"]
    experiment = tiledbsoma.Experiment.open(soma["uris"][key])
    obs_query = tiledbsoma.AxisQuery(value_filter=value_filter) if value_filter else None
    return experiment, experiment.axis_query("RNA", obs_query=obs_query)


def test_counts_as_x_equal_in_memory(soma):
    experiment, query = _query(soma, "plain")
    with experiment, query:
        got = pr.pp.preprocess_adatas(query, soma["r"], *ARGS, **KW, chunk_size=37)
        assert_same(soma["expected"], got)
        # the default chunks (one here) give the same
        assert_same(soma["expected"], pr.pp.preprocess_adatas(query, soma["r"], *ARGS, **KW))
    assert snapshot(soma["folder"]) == soma["before"]


def test_census_layout_equals_counts_in_x_with_symbols(soma):
    """counts_adata1="raw" and gene_symbols_adata1="feature_name": the results of the same
    data with counts in X and symbols as var_names; the ids stay in var["gene_ids"]."""
    experiment, query = _query(soma, "census")
    with experiment, query:
        got = pr.pp.preprocess_adatas(
            query,
            soma["r"],
            *ARGS,
            **KW,
            chunk_size=50,
            counts_adata1="raw",
            gene_symbols_adata1="feature_name",
        )
    assert_same(soma["expected"], got, var=False)
    ids = pd.Series(soma["qc"].var_names, index=soma["qc"].var["feature_name"].to_numpy())
    assert list(got[0].var["gene_ids"]) == list(ids[got[0].var_names])
    assert got[0].uns["pairot"]["params"]["counts_adata1"] == "raw"
    assert snapshot(soma["folder"]) == soma["before"]


def test_subset_and_messy_symbols_equal_the_in_memory_census_file(soma):
    """A value_filter selecting some cells, symbols with a gap and a duplicate: the results of
    the same cells of the same CELLxGENE-shaped AnnData in memory (var included)."""
    qc = soma["qc"]
    keep = (qc.obs["sample_id"] != "query_donor1").to_numpy()
    kw = {**KW, "gene_symbols_adata1": "messy_name"}
    expected = pr.pp.preprocess_adatas(
        qc[keep].copy(), soma["r"], *ARGS, **kw, counts_adata1="layers/raw"
    )
    experiment, query = _query(soma, "census", SUBSET)
    with experiment, query:
        assert query.n_obs == keep.sum()
        got = pr.pp.preprocess_adatas(
            query, soma["r"], *ARGS, **kw, chunk_size=29, counts_adata1="raw"
        )
    assert_same(expected, got)
    # "layers/raw" names the same X layer
    experiment, query = _query(soma, "census", SUBSET)
    with experiment, query:
        again = pr.pp.preprocess_adatas(query, soma["r"], *ARGS, **kw, counts_adata1="layers/raw")
    assert_same(expected, again)
    assert snapshot(soma["folder"]) == soma["before"]


def test_soma_as_the_reference_and_as_both(soma):
    sym = {"counts_adata2": "raw", "gene_symbols_adata2": "feature_name"}
    experiment, query = _query(soma, "census_ref")
    with experiment, query:
        got = pr.pp.preprocess_adatas(soma["q"], query, *ARGS, **KW, **sym, chunk_size=64)
    assert_same(soma["expected"], got, var=False)
    experiment1, query1 = _query(soma, "plain")
    experiment2, query2 = _query(soma, "census_ref")
    with experiment1, query1, experiment2, query2:
        got = pr.pp.preprocess_adatas(query1, query2, *ARGS, **KW, **sym)
    assert_same(soma["expected"], got, var=False)
    assert snapshot(soma["folder"]) == soma["before"]


def test_names_without_id_columns_are_joinids_and_feature_ids(soma, tmp_path):
    """As in the Census: no obs_id / var_id column; the cells are named by their soma_joinid,
    the genes by var["feature_id"]; the results are those of the same data."""
    tiledbsoma = soma["tiledbsoma"]
    q = soma["q"].copy()
    q.var["feature_id"] = [f"ENSG{i:011d}" for i in range(q.n_vars)]
    uri = str(tmp_path / "census_names")
    tiledbsoma.io.from_anndata(uri, q, "RNA", obs_id_name="barcode", var_id_name="feature_name")
    with tiledbsoma.Experiment.open(uri) as experiment, experiment.axis_query("RNA") as query:
        got = pr.pp.preprocess_adatas(
            query, soma["r"], *ARGS, **KW, gene_symbols_adata1="feature_name"
        )
    out, expected = got[0], soma["expected"][0]
    assert list(out.obs_names) == [str(i) for i in range(q.n_obs)]
    assert list(out.obs["barcode"]) == list(q.obs_names)
    assert "soma_joinid" not in out.obs.columns and "soma_joinid" not in out.var.columns
    assert list(out.var_names) == list(expected.var_names)
    assert list(out.var["gene_ids"]) == list(q.var.loc[expected.var_names, "feature_id"])
    assert (out.X != expected.X).nnz == 0
    for key in ("de_ova", "de_ava"):
        pd.testing.assert_frame_equal(out.uns["pairot"][key], expected.uns["pairot"][key])


def test_rank_genes_limma_on_a_query(soma):
    q = soma["q"]
    expected = pr.pp.rank_genes_limma(q, "cell_type", "sample_id", 50, result_format="long")
    experiment, query = _query(soma, "census")
    with experiment, query:
        got = pr.pp.rank_genes_limma(
            query,
            "cell_type",
            "sample_id",
            50,
            result_format="long",
            counts="raw",
            gene_symbols="feature_name",
            chunk_size=100,
        )
    for e, g in zip(expected, got, strict=True):
        pd.testing.assert_frame_equal(e, g)


def test_chunks_read_only_their_cells(soma, monkeypatch):
    """Each read of the X layer asks for the cells of one chunk, never the whole query."""
    reads = []
    original = _soma.SomaRows.pairot_rows

    def recording(self, start, stop):
        reads.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(_soma.SomaRows, "pairot_rows", recording)
    experiment, query = _query(soma, "plain")
    with experiment, query:
        pr.pp.preprocess_adatas(query, soma["r"], *ARGS, **KW, chunk_size=40)
        n_obs = query.n_obs
    assert reads and max(reads) <= 40 < n_obs


def test_bad_layer_symbols_and_empty_query_are_clear_errors(soma):
    r = soma["r"]
    experiment, query = _query(soma, "census")
    with experiment, query:
        with pytest.raises(KeyError, match=r"counts_adata1='layers/missing'.*'data', 'raw'"):
            pr.pp.preprocess_adatas(query, r, *ARGS, **KW, counts_adata1="layers/missing")
        with pytest.raises(KeyError, match=r"gene_symbols_adata1='nope'.*feature_name"):
            pr.pp.preprocess_adatas(
                query, r, *ARGS, **KW, counts_adata1="raw", gene_symbols_adata1="nope"
            )
        # normalized values in X (the layer "data"): the message names the layer of counts
        with pytest.raises(ValueError, match=r"X\['raw'\].*counts_adata1='raw'"):
            pr.pp.preprocess_adatas(query, r, *ARGS, **KW)
        with pytest.raises(KeyError, match=r"'nope' is not a column"):
            pr.pp.preprocess_adatas(query, r, "nope", *ARGS[1:], **KW, counts_adata1="raw")
    experiment, query = _query(soma, "plain")
    with experiment, query:
        with pytest.raises(KeyError, match=r"counts_adata2='raw'.*X layers: \['data'\]"):
            pr.pp.preprocess_adatas(r, query, *ARGS, **KW, counts_adata2="raw")
    experiment, query = _query(soma, "plain", "cell_type == 'no such type'")
    with experiment, query:
        with pytest.raises(ValueError, match=r"adata1 is empty \(0 cells"):
            pr.pp.preprocess_adatas(query, r, *ARGS, **KW)
    assert snapshot(soma["folder"]) == soma["before"]


def test_import_pairot_never_imports_tiledbsoma():
    """``import pairot`` (and its preprocessing) works without tiledbsoma installed."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tiledbsoma"] = None  # any import of it fails
        import pairot as pr
        import pairot.pp
        from pairot.pp import _soma
        assert not _soma.is_soma_query(object())
        from pairot.pp._study import open_study
        q, _ = pr.datasets.simulate_pair(100, 100, 200, n_cell_types=2, random_state=0)
        assert open_study(q, "adata1", None).reader.shape == q.shape
        assert "tiledbsoma" not in sys.modules or sys.modules["tiledbsoma"] is None
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
