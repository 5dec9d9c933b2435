"""Streamed preprocessing: in-memory, backed and lazy (dask) inputs give the same results, the
counts are never loaded whole, and bad input is found while streaming."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import pairot as pr
from pairot.pp import _limma

ARGS = ("cell_type", "cell_type", "sample_id", "sample_id")
KW = {"n_top_genes": 120, "n_samples_auroc": 150, "n_samples_hvg_selection": 900}


def _lazy(path, chunks=(250, -1)):
    """An AnnData with a dask X from ``read_elem_lazy`` (obs and var in memory)."""
    from anndata.experimental import read_elem_lazy

    handle = h5py.File(path, "r")
    return ad.AnnData(
        X=read_elem_lazy(handle["X"], chunks=chunks),
        obs=ad.io.read_elem(handle["obs"]),
        var=ad.io.read_elem(handle["var"]),
        obsm=ad.io.read_elem(handle["obsm"]),
    )


def assert_same(expected, got):
    for e, g in zip(expected, got, strict=True):
        assert list(e.var_names) == list(g.var_names)
        assert type(e.X) is type(g.X)
        assert e.X.dtype == g.X.dtype
        if sparse.issparse(e.X):
            assert (e.X != g.X).nnz == 0
        else:
            np.testing.assert_array_equal(e.X, g.X)
        pd.testing.assert_frame_equal(e.obs, g.obs)
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(e.uns["pairot"][key], g.uns["pairot"][key])
        assert e.uns["pairot"]["params"].keys() == g.uns["pairot"]["params"].keys()
        assert sorted(e.obsm) == sorted(g.obsm)
        for key in e.obsm:
            np.testing.assert_array_equal(np.asarray(e.obsm[key]), np.asarray(g.obsm[key]))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A simulated pair in memory and on disk (CSR h5ad), with a few empty cells."""
    folder = tmp_path_factory.mktemp("stream")
    q, r = pr.datasets.simulate_pair(
        n_cells_query=1400, n_cells_reference=1800, n_genes=600, n_cell_types=5, random_state=3
    )
    X = q.X.tolil()
    X[[3, 700, 1399]] = 0  # cells without counts keep working
    X = X.tocsr()
    X.eliminate_zeros()
    q.X = X
    q.obsm["X_umap"] = np.random.default_rng(0).normal(size=(q.n_obs, 2)).astype(np.float32)
    paths = folder / "q.h5ad", folder / "r.h5ad"
    q.write_h5ad(paths[0])
    r.write_h5ad(paths[1])
    expected = pr.pp.preprocess_adatas(q, r, *ARGS, **KW)
    return q, r, paths, expected


def test_backed_input_equals_in_memory(pair):
    q, r, paths, expected = pair
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    qb, rb = (ad.read_h5ad(p, backed="r") for p in paths)
    got = pr.pp.preprocess_adatas(qb, rb, *ARGS, **KW, chunk_size=173)
    assert_same(expected, got)
    assert qb.isbacked and rb.isbacked  # the caller's objects are untouched
    qb.file.close()
    rb.file.close()
    # a backed file is never written to, also when opened for writing
    qw, rw = (ad.read_h5ad(p, backed="r+") for p in paths)
    pr.pp.preprocess_adatas(qw, rw, *ARGS, **KW, chunk_size=500)
    qw.file.close()
    rw.file.close()
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == before


def test_chunk_size_never_changes_results(pair):
    q, r, _, expected = pair
    for chunk_size in (1, 97, 10_000):
        got = pr.pp.preprocess_adatas(q, r, *ARGS, **KW, chunk_size=chunk_size)
        assert_same(expected, got)


def test_lazy_inputs_equal_in_memory(pair):
    from anndata.experimental import read_lazy

    _, _, paths, expected = pair
    lazy = [read_lazy(p) for p in paths]
    assert type(lazy[0].X).__module__.startswith("dask")
    assert_same(expected, pr.pp.preprocess_adatas(*lazy, *ARGS, **KW))
    # zarr stores, read lazily
    zarr_paths = [p.with_suffix(".zarr") for p in paths]
    for path, zpath in zip(paths, zarr_paths, strict=True):
        if not zpath.exists():
            ad.read_h5ad(path).write_zarr(zpath)
    assert_same(expected, pr.pp.preprocess_adatas(*map(read_lazy, zarr_paths), *ARGS, **KW))
    elem = [_lazy(p) for p in paths]
    assert_same(expected, pr.pp.preprocess_adatas(*elem, *ARGS, **KW))
    # the dask array rechunked by pairot to the chunk size asked for
    elem = [_lazy(p, chunks=(1000, -1)) for p in paths]
    for adata in elem:  # chunked along genes too
        adata.X = adata.X.rechunk((1000, 100))
    assert elem[0].X.numblocks[1] > 1
    assert_same(expected, pr.pp.preprocess_adatas(*elem, *ARGS, **KW, chunk_size=321))


def test_dask_distributed_client_runs_the_chunks(pair):
    """With a dask.distributed client the chunk work runs as tasks on its workers."""
    distributed = pytest.importorskip("distributed")
    _, _, paths, expected = pair
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            processes=True,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = pr.pp.preprocess_adatas(*(_lazy(p) for p in paths), *ARGS, **KW)
        # tasks of pairot's chunk function ran on the workers
        ran = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(ran) == 2 and sum(ran.values()) > 0
    assert_same(expected, got)


def test_dense_inputs_in_memory_backed_and_lazy(pair, tmp_path):
    q, r, _, _ = pair
    qd, rd = q.copy(), r.copy()
    qd.X, rd.X = q.X.toarray(), r.X.toarray()
    expected = pr.pp.preprocess_adatas(qd, rd, *ARGS, **KW)
    assert isinstance(expected[0].X, np.ndarray)
    paths = tmp_path / "qd.h5ad", tmp_path / "rd.h5ad"
    qd.write_h5ad(paths[0])
    rd.write_h5ad(paths[1])
    backed = [ad.read_h5ad(p, backed="r") for p in paths]
    assert_same(expected, pr.pp.preprocess_adatas(*backed, *ARGS, **KW, chunk_size=211))
    assert_same(expected, pr.pp.preprocess_adatas(*(_lazy(p) for p in paths), *ARGS, **KW))
    # and the sparse input's DE tables: the same counts, another container
    sparse_out = pr.pp.preprocess_adatas(q, r, *ARGS, **KW)
    for s, d in zip(sparse_out, expected, strict=True):
        pd.testing.assert_frame_equal(s.uns["pairot"]["de_ava"], d.uns["pairot"]["de_ava"])
        np.testing.assert_array_equal(s.X.toarray(), d.X)


def test_views_of_backed_and_csc_files(pair, tmp_path):
    q, r, paths, _ = pair
    rows = np.flatnonzero(q.obs["cell_type"].to_numpy() != q.obs["cell_type"].cat.categories[0])
    rows = rows[::2]
    genes = np.arange(0, q.n_vars, 3)[::-1]  # a gene subset, in another order
    expected = pr.pp.preprocess_adatas(q[rows, genes], r, *ARGS, **KW)
    qb = ad.read_h5ad(paths[0], backed="r")
    got = pr.pp.preprocess_adatas(qb[rows, genes], r, *ARGS, **KW, chunk_size=150)
    assert_same(expected, got)
    # a file stored by genes (CSC) works too, with a warning that it is slow
    qc = q.copy()
    qc.X = sparse.csc_matrix(q.X)
    path = tmp_path / "qc.h5ad"
    qc.write_h5ad(path)
    expected = pr.pp.preprocess_adatas(q, r, *ARGS, **KW)
    got = pr.pp.preprocess_adatas(ad.read_h5ad(path, backed="r"), r, *ARGS, **KW)
    assert_same(expected, got)


def test_rank_genes_limma_backed_and_lazy(pair):
    q, _, paths, _ = pair
    long = {"n_samples_auroc": 200, "result_format": "long"}
    expected = pr.pp.rank_genes_limma(q, "cell_type", "sample_id", **long)
    backed = ad.read_h5ad(paths[0], backed="r")
    for adata, kwargs in ((backed, {"chunk_size": 111}), (_lazy(paths[0]), {})):
        got = pr.pp.rank_genes_limma(adata, "cell_type", "sample_id", **long, **kwargs)
        for e, g in zip(expected, got, strict=True):
            pd.testing.assert_frame_equal(e, g)


def test_gene_blocked_limma_equals_one_block(monkeypatch):
    """limma fitted in blocks of a few genes equals the fit of all genes at once."""
    from pairot.pp._pseudobulk import LogExpression

    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), [3, 4, 2, 5])
    counts = rng.poisson(rng.gamma(1.0, 20.0, size=300), size=(labels.size, 300)).astype(float)
    counts[:, 7] = 0  # a gene without counts (zero variance)
    expr = LogExpression(counts)
    whole = np.log1p(counts * (1e5 / counts.sum(axis=1, keepdims=True))).T
    one = _limma.limma_ova(whole, labels, 4), _limma.limma_ava(whole, labels, 4)
    monkeypatch.setattr(_limma, "BLOCK_VALUES", 7 * labels.size)  # blocks of 7 genes
    blocked = _limma.limma_ova(expr, labels, 4), _limma.limma_ava(expr, labels, 4)
    for a, b in zip(one, blocked, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-300)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import anndata as ad
    import pairot as pr

    q_path, r_path = sys.argv[1:3]
    args = ("cell_type", "cell_type", "sample_id", "sample_id")
    kw = dict(n_top_genes=40, n_samples_auroc=150, n_samples_hvg_selection=1500)
    kw["min_shared_genes"] = 40  # 40 HVGs, below the default minimum: memory, not mapping
    q, r = ad.read_h5ad(q_path, backed="r"), ad.read_h5ad(r_path, backed="r")
    pr.pp.preprocess_adatas(q[::25], r[::25], *args, **kw)  # compile the numba kernels
    tracemalloc.start()
    out = pr.pp.preprocess_adatas(q, r, *args, **kw, chunk_size=1500)
    streamed = tracemalloc.get_traced_memory()[1]
    del out
    tracemalloc.reset_peak()
    whole = r.X.to_memory()  # what loading one study's counts costs, measured the same way
    loaded = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"streamed": streamed, "loaded": loaded, "nnz": int(whole.nnz)}))
    """
)


def test_streamed_peak_memory_stays_below_the_counts(tmp_path):
    """On files ~20 chunks long, the traced peak of a streamed run stays below the size of one
    study's counts; loading those counts, measured the same way, exceeds it. A run that read a
    count matrix whole would fail."""
    q, r = pr.datasets.simulate_pair(
        n_cells_query=30_000,
        n_cells_reference=30_000,
        n_genes=400,
        n_cell_types=5,
        mean_library_size=500,
        random_state=0,
    )
    paths = [tmp_path / "q.h5ad", tmp_path / "r.h5ad"]
    q.write_h5ad(paths[0])
    r.write_h5ad(paths[1])
    counts_bytes = r.X.data.nbytes + r.X.indices.nbytes + r.X.indptr.nbytes
    del q, r
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["loaded"] >= counts_bytes  # the measure sees a full load
    assert figures["streamed"] < 0.6 * counts_bytes, (figures, counts_bytes)


# ------------------------------------------------------------------------ bad input, streamed
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1.0, "contains negative values (min -1.0)"),
        (np.nan, "contains NaN or infinite values"),
    ],
)
def test_bad_counts_found_while_streaming(pair, tmp_path, value, message):
    q, r, _, _ = pair
    bad = q.copy()
    X = bad.X.tolil()
    X[1300, 5] = value  # in the last chunks
    bad.X = X.tocsr()
    path = tmp_path / "bad.h5ad"
    bad.write_h5ad(path)
    with pytest.raises(ValueError, match=re.escape("adata1.X " + message)) as memory:
        pr.pp.preprocess_adatas(bad, r, *ARGS, **KW)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError) as streamed:
        pr.pp.preprocess_adatas(backed, r, *ARGS, **KW, chunk_size=100)
    assert str(streamed.value) == str(memory.value)
    with pytest.raises(ValueError) as lazy:
        pr.pp.preprocess_adatas(_lazy(path), r, *ARGS, **KW)
    assert str(lazy.value) == str(memory.value)


def test_fractional_counts_judged_over_the_whole_study(pair, tmp_path, caplog):
    """Fractional values are judged on the whole study, whatever the chunks: log-transformed
    data is refused with one message in memory, backed and lazy; corrected counts pass with
    one warning."""
    q, r, _, _ = pair
    logged = q.copy()
    logged.X = logged.X.astype(np.float32)
    logged.X.data = np.log1p(logged.X.data)
    path = tmp_path / "log.h5ad"
    logged.write_h5ad(path)
    messages = []
    for adata, kwargs in (
        (logged, {}),
        (ad.read_h5ad(path, backed="r"), {"chunk_size": 100}),
        (_lazy(path), {}),
    ):
        with pytest.raises(ValueError, match="looks log-transformed") as error:
            pr.pp.preprocess_adatas(adata, r, *ARGS, **KW, **kwargs)
        messages.append(str(error.value))
    assert messages[0] == messages[1] == messages[2]

    corrected = q.copy()
    corrected.X = corrected.X.astype(np.float32)
    corrected.X.data *= (
        np.random.default_rng(1).uniform(0.7, 1.0, corrected.X.nnz).astype(np.float32)
    )
    path = tmp_path / "corrected.h5ad"
    corrected.write_h5ad(path)
    warnings = []
    for adata, kwargs in ((corrected, {}), (ad.read_h5ad(path, backed="r"), {"chunk_size": 100})):
        caplog.clear()
        with caplog.at_level("WARNING", logger="pairot"):
            pr.pp.preprocess_adatas(adata, r, *ARGS, **KW, **kwargs)
        warnings.append([m for m in caplog.messages if "non-integer" in m])
    assert len(warnings[0]) == 1
    assert warnings[0] == warnings[1]


def test_missing_column_and_x_none_on_backed(pair, tmp_path):
    _, r, paths, _ = pair
    backed = ad.read_h5ad(paths[0], backed="r")
    with pytest.raises(KeyError, match="cell_type_column_adata1='celltype' is not a column"):
        pr.pp.preprocess_adatas(backed, r, "celltype", *ARGS[1:], **KW)
    empty = ad.AnnData(obs=backed.obs.copy(), var=backed.var.copy())
    path = tmp_path / "nox.h5ad"
    empty.write_h5ad(path)
    with pytest.raises(ValueError, match=r"adata1.X is None"):
        pr.pp.preprocess_adatas(ad.read_h5ad(path, backed="r"), r, *ARGS, **KW)


def test_corrupt_file_is_one_clear_error(pair, tmp_path):
    q, r, paths, _ = pair
    path = tmp_path / "corrupt.h5ad"
    path.write_bytes(paths[1].read_bytes())
    with h5py.File(path, "r+") as handle:  # entries pointing outside the matrix
        indices = handle["X/indices"]
        indices[len(indices) // 2 : len(indices) // 2 + 50] = 10**6
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(OSError, match=r"cannot read cells \d+\.\.\d+ of adata2.X in .*corrupt"):
        pr.pp.preprocess_adatas(q, backed, *ARGS, **KW, chunk_size=400)
    with pytest.raises(OSError, match=r"cannot read cells \d+\.\.\d+ of adata2.X"):
        pr.pp.preprocess_adatas(q, _lazy(path), *ARGS, **KW)


def test_no_output_is_read_beside_an_auroc_subsample(pair, monkeypatch):
    """The memory order of the passes (docs/method.md, "How the counts are read"): each study
    is read four times, and the output counts of either study are read only once every
    study's AUROC subsample has been evaluated and dropped, so the largest transient (a
    subsample) never meets an output; the results are those of the module's fixture."""
    from pairot.pp import _pass_auroc, _study

    q, r, _, expected = pair
    events = []
    real_pass, real_auroc = _study.run_pass, _pass_auroc.auroc_columns

    def recording_pass(reader, spec, **kwargs):
        kinds = [
            kind
            for kind, on in (
                ("scan", spec.scan),
                ("pseudobulk", spec.pseudobulk),
                ("auroc", spec.auroc),
                ("output", spec.output_index is not None),
            )
            if on
        ]
        events.append((reader.name, "+".join(kinds)))
        return real_pass(reader, spec, **kwargs)

    def recording_auroc(columns, **kwargs):
        events.append(("auroc of", columns.shape[0]))
        return real_auroc(columns, **kwargs)

    monkeypatch.setattr(_study, "run_pass", recording_pass)
    monkeypatch.setattr(_pass_auroc, "auroc_columns", recording_auroc)
    got = pr.pp.preprocess_adatas(q, r, *ARGS, **KW)
    assert_same(expected, got)
    passes = [e for e in events if e[0] != "auroc of"]
    assert passes == [
        ("adata1", "scan"),
        ("adata2", "scan"),
        ("adata1", "pseudobulk"),
        ("adata2", "pseudobulk"),
        ("adata1", "auroc"),
        ("adata2", "auroc"),
        ("adata1", "output"),
        ("adata2", "output"),
    ]
    kinds = [e[1] if e[0] != "auroc of" else "evaluated" for e in events]
    assert kinds.index("output") > max(i for i, k in enumerate(kinds) if k == "evaluated")
