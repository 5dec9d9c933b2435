"""End-to-end tests of preprocess_adatas / rank_genes_limma against independent computations."""

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.metrics import roc_auc_score

import pairot as pr
from pairot.pp._limma import limma_ava, limma_ova

NAMES = ["CD4+/CD45RA+/CD25- Naive T", "B cell", "Mono 14+", "NK ñ-γ"]


#: The small synthetic studies here (60 genes) and their 10-20 HVGs are below the default
#: minimum of 50 genes for the cell term (pairot.pp._preprocess.MIN_SHARED_GENES), on purpose:
#: they test the preprocessing, not the mapping; the tests "too few shared genes" below test
#: the minimum itself.
SMALL = {"min_shared_genes": 5}


def make_study(seed, n_cells=240, n_genes=60, names=NAMES, n_samples=3, fmt="csr"):
    rng = np.random.default_rng(seed)
    k = len(names)
    labels = rng.integers(0, k, size=n_cells)
    samples = rng.integers(0, n_samples, size=n_cells)
    base = rng.gamma(2.0, 0.5, size=n_genes)
    rate = np.tile(base, (k, 1))
    for c in range(k):
        rate[c, 5 * c : 5 * c + 5] *= 8.0  # marker genes of cluster c
    lib = rng.lognormal(0.0, 0.3, size=n_cells)
    X = rng.poisson(rate[labels] * lib[:, None]).astype(np.float32)
    genes = [f"G{i:03d}" for i in range(n_genes)]
    genes[-1] = "MT-CO1"
    obs = pd.DataFrame(
        {
            "ct": pd.Categorical(np.array(names)[labels]),
            "donor": pd.Categorical([f"d{seed}_{s}" for s in samples]),
        },
        index=[f"s{seed}_c{i}" for i in range(n_cells)],
    )
    X = sparse.csr_matrix(X) if fmt == "csr" else X
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    adata.layers["counts"] = X.copy()
    adata.uns["note"] = "caller data"
    return adata


@pytest.fixture(scope="module")
def pair():
    a1 = make_study(1)
    a2 = make_study(2, n_cells=200, fmt="dense")
    # a gene expressed in study 1 only, and one with total exactly 10 in study 2
    X1 = a1.X.toarray()
    X1[:, 10] = 3
    a1.X = sparse.csr_matrix(X1)
    a1.layers["counts"] = a1.X.copy()
    col = np.zeros(a2.n_obs, dtype=np.float32)
    col[:10] = 1
    a2.X[:, 10] = col
    a2.layers["counts"] = a2.X.copy()
    return a1, a2


@pytest.fixture(scope="module")
def processed(pair):
    a1, a2 = pair
    return pr.pp.preprocess_adatas(
        a1,
        a2,
        "ct",
        "ct",
        "donor",
        "donor",
        n_top_genes=20,
        n_samples_auroc=10_000,
        n_samples_hvg_selection=100_000,
        **SMALL,
    )


def _dense(X):
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def test_shared_genes_rule(pair, processed):
    q, r = processed
    genes = list(q.uns["pairot"]["de_ova"]["gene"].cat.categories)
    t1 = _dense(pair[0].X).sum(0)
    t2 = _dense(pair[1].X).sum(0)
    expected = [g for g, x, y in zip(pair[0].var_names, t1, t2) if x > 10 and y > 10]
    assert genes == expected
    assert "G010" not in genes  # total exactly 10 in the reference
    assert q.uns["pairot"]["params"]["n_shared_genes"] == len(expected)


def test_outputs_are_raw_counts_of_same_hvgs(pair, processed):
    q, r = processed
    assert list(q.var_names) == list(r.var_names)
    assert q.n_vars == 20
    np.testing.assert_array_equal(_dense(q.X), _dense(pair[0][:, q.var_names].X))
    np.testing.assert_array_equal(_dense(r.X), _dense(pair[1][:, r.var_names].X))
    assert list(q.obs_names) == list(pair[0].obs_names)
    assert q.uns["pairot"]["cell_type_key"] == "ct"
    assert q.uns["pairot"]["sample_key"] == "donor"


def test_hvgs_match_scanpy_directly(pair, processed):
    q, _ = processed
    genes = list(q.uns["pairot"]["de_ova"]["gene"].cat.categories)
    parts = [sparse.csr_matrix(_dense(a[:, genes].X)) for a in pair]
    joint = ad.AnnData(X=sparse.vstack(parts).astype(np.float32), var=pd.DataFrame(index=genes))
    joint.obs["batch"] = np.repeat(["q", "r"], [p.shape[0] for p in parts])
    sc.pp.normalize_total(joint, target_sum=1e4)
    sc.pp.log1p(joint)
    sc.pp.highly_variable_genes(joint, n_top_genes=20, batch_key="batch", flavor="seurat")
    expected = [g for g in genes if joint.var.loc[g, "highly_variable"]]
    assert list(q.var_names) == expected


def naive_pseudobulk_expr(adata, genes):
    X = _dense(adata[:, genes].X).astype(np.float64)
    df = pd.DataFrame(X, columns=genes)
    df["ct"] = adata.obs["ct"].astype(str).to_numpy()
    df["donor"] = adata.obs["donor"].astype(str).to_numpy()
    sums = df.groupby(["donor", "ct"]).sum()
    sizes = df.groupby(["donor", "ct"]).size()
    sums = sums[sizes >= 2]
    expr = np.log1p(sums.to_numpy() / sums.to_numpy().sum(1, keepdims=True) * 1e5)
    return expr.T, sums.index.get_level_values("ct").to_numpy()


def test_de_tables_match_independent_computation(pair, processed):
    for adata, out in zip(pair, processed):
        de_ova = out.uns["pairot"]["de_ova"]
        de_ava = out.uns["pairot"]["de_ava"]
        genes = list(de_ova["gene"].cat.categories)
        categories = list(de_ova["cluster"].cat.categories)
        assert categories == sorted(NAMES)
        expr, profile_ct = naive_pseudobulk_expr(adata, genes)
        codes = np.array([categories.index(c) for c in profile_ct])
        fc, p, adj = limma_ova(expr, codes, len(categories))
        afc, ap, aadj = limma_ava(expr, codes, len(categories))
        X = _dense(adata[:, genes].X).astype(np.float64)
        Xn = X / X.sum(1, keepdims=True) * 1e4
        cell_ct = adata.obs["ct"].astype(str).to_numpy()
        ova = de_ova.set_index(["cluster", "gene"], drop=False)
        for k, c in enumerate(categories):
            rows = ova.loc[c].loc[genes]
            np.testing.assert_allclose(rows["logFC"], fc[k], rtol=1e-10)
            np.testing.assert_allclose(rows["P.Value"], p[k], rtol=1e-10)
            np.testing.assert_allclose(rows["adj.P.Val"], adj[k], rtol=1e-10)
            for j in (0, 7, 33):
                expected = roc_auc_score(cell_ct == c, Xn[:, j])
                assert rows["auroc"].iloc[j] == pytest.approx(expected, abs=1e-9)
        ava = de_ava.set_index(["cluster", "versus", "gene"])
        assert len(de_ava) == len(categories) * (len(categories) - 1) * len(genes)
        for k1, c1 in enumerate(categories):
            for k2, c2 in enumerate(categories):
                if k1 == k2:
                    continue
                rows = ava.loc[(c1, c2)].loc[genes]
                np.testing.assert_allclose(rows["logFC"], afc[k1, k2], rtol=1e-10)
                np.testing.assert_allclose(rows["adj.P.Val"], aadj[k1, k2], rtol=1e-10)
                mask = np.isin(cell_ct, [c1, c2])
                j = 3
                expected = roc_auc_score(cell_ct[mask] == c1, Xn[mask, j])
                assert rows["auroc"].iloc[j] == pytest.approx(expected, abs=1e-9)
        # markers of each cluster are its own planted genes
        markers = pr.pp.filter_genes_ova(de_ova)
        for c in categories:
            top = markers[markers["cluster"] == c]["gene"].astype(str).head(3).tolist()
            planted = {f"G{i:03d}" for i in range(5 * NAMES.index(c), 5 * NAMES.index(c) + 5)}
            assert top and set(top) <= planted


def test_rank_genes_limma_equals_preprocess_tables(pair, processed):
    q, _ = processed
    genes = list(q.uns["pairot"]["de_ova"]["gene"].cat.categories)
    de_ova, de_ava = pr.pp.rank_genes_limma(pair[0][:, genes], "ct", "donor", result_format="long")
    pd.testing.assert_frame_equal(de_ova, q.uns["pairot"]["de_ova"])
    pd.testing.assert_frame_equal(de_ava, q.uns["pairot"]["de_ava"])


def test_caller_objects_unchanged(pair):
    a1, a2 = pair
    before = [
        (
            a.X.copy(),
            a.obs.copy(),
            a.var.copy(),
            copy.deepcopy(a.uns),
            {k: v.copy() for k, v in a.layers.items()},
        )
        for a in (a1, a2)
    ]
    pr.pp.preprocess_adatas(
        a1, a2, "ct", "ct", "donor", "donor", n_top_genes=10, filter_genes=True, **SMALL
    )
    for a, (X, obs, var, uns, layers) in zip((a1, a2), before):
        np.testing.assert_array_equal(_dense(a.X), _dense(X))
        pd.testing.assert_frame_equal(a.obs, obs)
        pd.testing.assert_frame_equal(a.var, var)
        assert a.uns == uns
        for key, value in layers.items():
            np.testing.assert_array_equal(_dense(a.layers[key]), _dense(value))
        assert "pairot" not in a.uns


def test_h5ad_round_trip(processed, tmp_path):
    for i, out in enumerate(processed):
        path = tmp_path / f"s{i}.h5ad"
        out.write_h5ad(path)
        back = ad.read_h5ad(path)
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(
                back.uns["pairot"][key], out.uns["pairot"][key], check_categorical=True
            )
        assert back.uns["pairot"]["params"] == out.uns["pairot"]["params"]
        assert back.uns["pairot"]["cell_type_key"] == "ct"
        assert list(back.obs["ct"].cat.categories) == sorted(NAMES)
        np.testing.assert_array_equal(_dense(back.X), _dense(out.X))
        # the seed tutorial's downsampling of the round-tripped object
        idx = pr.pp.downsample_indices(back.obs["ct"].to_numpy(), n_samples=20)
        view = back[idx, :]
        assert view.obs["ct"].value_counts().max() <= 20


def test_deterministic(pair, processed):
    again = pr.pp.preprocess_adatas(*pair, "ct", "ct", "donor", "donor", n_top_genes=20, **SMALL)
    for a, b in zip(again, processed):
        pd.testing.assert_frame_equal(a.uns["pairot"]["de_ova"], b.uns["pairot"]["de_ova"])
        assert list(a.var_names) == list(b.var_names)


def test_filter_genes_and_user_lists(pair):
    q, _ = pr.pp.preprocess_adatas(
        *pair,
        "ct",
        "ct",
        "donor",
        "donor",
        n_top_genes=10,
        filter_genes=True,
        genes_to_drop=["G002"],
        **SMALL,
    )
    genes = set(q.uns["pairot"]["de_ova"]["gene"].cat.categories)
    assert "MT-CO1" not in genes and "G002" not in genes and "G003" in genes
    q, _ = pr.pp.preprocess_adatas(
        *pair,
        "ct",
        "ct",
        "donor",
        "donor",
        n_top_genes=10,
        filter_genes=True,
        genes_to_keep=["MT-CO1"],
        **SMALL,
    )
    assert "MT-CO1" in set(q.uns["pairot"]["de_ova"]["gene"].cat.categories)


def test_auroc_subsample_is_stratified(pair):
    de_small, _ = pr.pp.rank_genes_limma(
        pair[0], "ct", "donor", n_samples_auroc=5, random_state=3, result_format="long"
    )
    de_full, _ = pr.pp.rank_genes_limma(pair[0], "ct", "donor", result_format="long")
    np.testing.assert_allclose(de_small["logFC"], de_full["logFC"])  # limma uses all cells
    assert not np.allclose(de_small["auroc"], de_full["auroc"])


def test_bad_inputs(pair):
    a1, a2 = pair
    with pytest.raises(KeyError, match="'celltype' is not a column of adata1.obs"):
        pr.pp.preprocess_adatas(a1, a2, "celltype", "ct", "donor", "donor")
    bad = a2.copy()
    bad.X = np.log1p(bad.X.astype(np.float32))  # log-transformed, not counts
    # the fixture keeps its counts in a layer too: the message names the option that reads it
    fix = r"adata2.layers\['counts'\] holds integer counts: pass counts_adata2='layers/counts'"
    with pytest.raises(ValueError, match="looks log-transformed.*" + fix):
        pr.pp.preprocess_adatas(a1, bad, "ct", "ct", "donor", "donor")
    del bad.layers["counts"]
    with pytest.raises(ValueError, match="looks log-transformed.*unnormalized counts"):
        pr.pp.preprocess_adatas(a1, bad, "ct", "ct", "donor", "donor")
    bad.X = -np.abs(bad.X)
    bad.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        pr.pp.preprocess_adatas(a1, bad, "ct", "ct", "donor", "donor")
    with pytest.raises(ValueError, match="n_top_genes"):
        pr.pp.preprocess_adatas(a1, a2, "ct", "ct", "donor", "donor", n_top_genes=0)
    with pytest.raises(TypeError, match="AnnData"):
        pr.pp.preprocess_adatas(a1.X, a2, "ct", "ct", "donor", "donor")


def test_pbmc_demo_round_trip_with_slash_names(tmp_path):
    query, reference = pr.datasets.pbmc_demo()
    q, r = pr.pp.preprocess_adatas(
        query,
        reference,
        n_top_genes=100,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
    )
    names = list(q.obs["cell_type"].cat.categories)
    assert any("/" in n for n in names) and any("+" in n for n in names)
    path = tmp_path / "q.h5ad"
    q.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert list(back.obs["cell_type"].cat.categories) == names
    for key in ("de_ova", "de_ava"):
        pd.testing.assert_frame_equal(back.uns["pairot"][key], q.uns["pairot"][key])
    # a well-known marker: CD14 is a top one-vs-all marker of the CD14+ monocytes
    markers = pr.pp.filter_genes_ova(back.uns["pairot"]["de_ova"])
    mono = markers[markers["cluster"] == "CD14+ Monocyte"]["gene"].astype(str).tolist()
    assert "CD14" in mono[:30] or "LYZ" in mono[:30] or "S100A8" in mono[:30]


@pytest.mark.parametrize(("n_cells", "n_top"), [(40, 15), (25, 30)])
def test_hvgs_on_subsamples_match_scanpy_batched(n_cells, n_top):
    """Per-study statistics combined as scanpy combines batches, also with genes that have no
    count in one study's subsample (scanpy drops those from that batch's statistics)."""
    from pairot.pp._hvg import select_hvgs

    rng = np.random.default_rng(5)
    X1 = sparse.csr_matrix(rng.poisson(rng.gamma(0.6, 1.0, size=80), size=(120, 80)))
    X2 = sparse.csr_matrix(rng.poisson(rng.gamma(0.6, 1.0, size=80), size=(90, 80)))
    X2[:, 3] = 0
    X2[:2, 3] = 5  # rare in study 2: likely absent from its subsample
    genes = pd.Index([f"g{i}" for i in range(80)])
    idx = np.arange(80)
    got = select_hvgs(X1, X2, idx, idx, genes, n_top_genes=n_top, n_samples=n_cells, random_state=0)
    draw = np.random.default_rng([0, 1])
    rows1 = np.sort(draw.choice(120, size=n_cells, replace=False))
    rows2 = np.sort(draw.choice(90, size=n_cells, replace=False))
    joint = ad.AnnData(
        X=sparse.vstack([X1[rows1], X2[rows2]]).astype(np.float32), var=pd.DataFrame(index=genes)
    )
    joint.obs["batch"] = pd.Categorical(np.repeat(["a", "b"], n_cells))
    sc.pp.normalize_total(joint, target_sum=1e4)
    sc.pp.log1p(joint)
    sc.pp.highly_variable_genes(joint, n_top_genes=n_top, batch_key="batch", flavor="seurat")
    np.testing.assert_array_equal(got, np.flatnonzero(joint.var["highly_variable"]))


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_auroc_subsample_rows_match_dense(fmt):
    """The streamed AUROC subsample (sampled rows, tested genes, each row scaled to 1e4 over
    those genes, float32, by gene with each cell's cluster code) equals a dense computation,
    whatever the chunk size, and gives the AUROCs of that dense matrix."""
    from pairot.pp._auroc import auroc_columns, auroc_pairwise_loop
    from pairot.pp._reader import CountReader
    from pairot.pp._stream import AurocBuilder, PassSpec, run_pass

    rng = np.random.default_rng(2)
    dense = rng.poisson(0.8, size=(40, 12)).astype(np.float32)
    dense[5] = 0  # a cell without counts stays zero
    X = dense if fmt == "dense" else sparse.csr_matrix(dense).asformat(fmt)
    rows = np.array([0, 3, 5, 6, 7, 19, 20, 21, 33, 39])
    codes = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2])
    genes = np.array([1, 2, 4, 7, 8, 11])
    take = np.zeros(40, dtype=bool)
    take[rows] = True
    reader = CountReader(X, name="adata", chunk_size=3)
    assert reader.n_chunks > 3
    spec = PassSpec(gene_index=genes, auroc_counts=True)
    counts = run_pass(reader, spec, take_auroc=take).auroc_counts
    builder = AurocBuilder(counts, codes, 3)
    run_pass(reader, PassSpec(gene_index=genes, auroc=True), take_auroc=take, auroc_into=builder)
    got = builder.result()
    sub = dense[rows][:, genes].astype(np.float64)
    totals = sub.sum(axis=1, keepdims=True)
    expected = np.divide(sub * 1e4, totals, out=np.zeros_like(sub), where=totals > 0)
    assert got.codes.dtype == np.uint8 and got.data.dtype == np.float32
    np.testing.assert_array_equal(got.sizes, np.bincount(codes, minlength=3))
    for g in range(genes.size):
        stored = np.flatnonzero(expected[:, g])  # in row order, as the chunks arrive
        lo, hi = got.indptr[g], got.indptr[g + 1]
        np.testing.assert_allclose(got.data[lo:hi], expected[stored, g], rtol=1e-6)
        np.testing.assert_array_equal(got.codes[lo:hi], codes[stored])
    ova, ava = auroc_columns(got)
    ova_loop, ava_loop = auroc_pairwise_loop(expected.astype(np.float32), codes, 3)
    np.testing.assert_allclose(ova, ova_loop, rtol=1e-12)
    np.testing.assert_allclose(ava, ava_loop, rtol=1e-12)


def test_seurat_statistics_in_gene_blocks_equal_scanpy(monkeypatch):
    """Per-gene statistics from scanpy on blocks of genes, binned and selected over all genes,
    equal scanpy's highly_variable_genes on the whole matrix exactly."""
    from pairot.pp import _hvg

    rng = np.random.default_rng(11)
    counts = rng.poisson(rng.gamma(0.5, 2.0, size=300), size=(400, 300)).astype(np.float32)
    counts[:, 5] = 0
    counts[0, 5] = 40  # an outlying mean: likely alone in its bin
    X = sparse.csr_matrix(counts[:, counts.sum(axis=0) > 0])
    adata = ad.AnnData(X=X)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    expected = sc.pp.highly_variable_genes(adata, n_top_genes=40, flavor="seurat", inplace=False)
    monkeypatch.setattr(_hvg, "_HVG_BLOCK_VALUES", 700)  # blocks of a few genes
    got = _hvg._seurat_statistics(adata.X, 40)
    for column in ("means", "dispersions", "dispersions_norm"):
        np.testing.assert_array_equal(got[column].to_numpy(), expected[column].to_numpy())
    np.testing.assert_array_equal(got["highly_variable"], expected["highly_variable"])


def test_auroc_builder_refuses_counts_that_changed_between_passes():
    """Column counts from an earlier pass size the AUROC subsample; rows that do not fit them
    (the data changed between the passes) are an error, never a write out of bounds."""
    from pairot.pp._stream import AurocBuilder

    part = sparse.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]], dtype=np.float32))
    builder = AurocBuilder(np.array([1, 1, 1]), np.array([1, 0]), 2)
    builder.add(part)
    columns = builder.result()
    np.testing.assert_array_equal(columns.data, [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(columns.codes, [1, 0, 1])
    short = AurocBuilder(np.array([1, 0, 1]), np.array([0, 0]), 1)
    with pytest.raises(RuntimeError, match="changed between two passes"):
        short.add(part)
    unfinished = AurocBuilder(np.array([1, 1, 2]), np.array([0, 0, 0]), 1)
    unfinished.add(part)
    with pytest.raises(RuntimeError, match="changed between two passes"):
        unfinished.result()


# --------------------------------------------------------------------- too few shared genes
def _naive_shared(a1, a2):
    """The genes expressed (total count > 10) in both studies: a plain loop over gene names."""
    t1 = dict(zip(a1.var_names, _dense(a1.X).sum(0), strict=True))
    t2 = dict(zip(a2.var_names, _dense(a2.X).sum(0), strict=True))
    return [g for g in a1.var_names if t1[g] > 10 and g in t2 and t2[g] > 10]


def _sharing(a2, keep):
    """A copy of ``a2`` whose genes beyond the first ``keep`` get names no other study has."""
    out = a2.copy()
    out.var_names = [g if i < keep else f"OTHER{i}" for i, g in enumerate(a2.var_names)]
    return out


def test_one_shared_gene_of_300_is_refused_with_the_numbers():
    """Two studies sharing one gene of 300 used to run with a warning and give a uniform
    mapping; now a ValueError gives the numbers and the way to run anyway."""
    a1 = make_study(31, n_genes=300)
    a2 = _sharing(make_study(32, n_genes=300, fmt="dense"), 0)
    a2.var_names = [*a2.var_names[:-1], a1.var_names[7]]  # the one shared gene
    assert len(_naive_shared(a1, a2)) == 1
    with pytest.raises(ValueError) as info:
        pr.pp.preprocess_adatas(a1, a2, "ct", "ct", "donor", "donor", n_top_genes=80)
    message = str(info.value)
    assert message.startswith(
        "adata1 and adata2 share only 1 gene expressed (total count > 10) in both, fewer than "
        "min_shared_genes=50: the cell term of the cost (the Spearman correlation"
    ), message
    assert "carries no information" in message and "label term" in message
    assert message.endswith("to run anyway, pass min_shared_genes=1.")
    # lowered explicitly, it runs (with the old warning) on the one gene
    q, r = pr.pp.preprocess_adatas(
        a1, a2, "ct", "ct", "donor", "donor", n_top_genes=80, min_shared_genes=1
    )
    assert list(q.var_names) == list(r.var_names) == [a1.var_names[7]]
    assert q.uns["pairot"]["params"]["min_shared_genes"] == 1


def test_min_shared_genes_boundary_against_a_naive_count(pair):
    a1, a2 = pair
    a2 = _sharing(a2, 40)
    n_shared = len(_naive_shared(a1, a2))
    assert 30 < n_shared < 50
    args = (a1, a2, "ct", "ct", "donor", "donor")  # n_top_genes=500: all shared genes
    q, _ = pr.pp.preprocess_adatas(*args, n_top_genes=500, min_shared_genes=n_shared)
    assert q.uns["pairot"]["params"]["n_shared_genes"] == n_shared
    assert q.uns["pairot"]["params"]["min_shared_genes"] == n_shared
    with pytest.raises(ValueError, match=f"share only {n_shared} genes expressed .* in both, "):
        pr.pp.preprocess_adatas(*args, n_top_genes=500, min_shared_genes=n_shared + 1)
    # the count is taken after the gene filter: dropping 3 genes goes below
    drop = _naive_shared(a1, a2)[:3]
    with pytest.raises(
        ValueError,
        match=f"share only {n_shared - 3} genes expressed .* in both and pass the gene filter, "
        f"fewer than min_shared_genes={n_shared - 1}",
    ):
        pr.pp.preprocess_adatas(
            *args, n_top_genes=500, min_shared_genes=n_shared - 1, genes_to_drop=drop
        )


def test_n_top_genes_below_min_shared_genes_is_refused_before_reading(pair):
    a1, a2 = pair
    log = a2.copy()
    log.X = np.log1p(_dense(log.X))  # would be refused when read: the check comes first
    args = (a1, log, "ct", "ct", "donor", "donor")
    with pytest.raises(ValueError) as info:
        pr.pp.preprocess_adatas(*args, n_top_genes=20)
    message = str(info.value)
    assert message.startswith("n_top_genes=20 is below min_shared_genes=50: the cell term")
    assert message.endswith(
        "Use at least n_top_genes=50 (500 by default), or pass min_shared_genes=20 to run "
        "with 20 highly variable genes anyway."
    )
    with pytest.raises(ValueError, match="looks log-transformed"):  # lowered: read, refused
        pr.pp.preprocess_adatas(*args, n_top_genes=20, min_shared_genes=20)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"min_shared_genes=0 must be >= 1 .* pass e\.g\. min_shared_genes=1"),
        (-5, ValueError, "min_shared_genes=-5 must be >= 1"),
        (2.5, TypeError, "min_shared_genes=2.5 must be a positive integer .* got float"),
        (True, TypeError, "min_shared_genes=True must be a positive integer"),
        ("50", TypeError, "min_shared_genes='50' must be a positive integer"),
    ],
)
def test_bad_min_shared_genes(pair, value, error, match):
    with pytest.raises(error, match=match):
        pr.pp.preprocess_adatas(*pair, "ct", "ct", "donor", "donor", min_shared_genes=value)


def test_default_minimum_is_documented_and_shared():
    """One number: the preprocessing, the command line and its pipeline agree."""
    from pairot._run import RunParameters
    from pairot.cli import MIN_SHARED_GENES as CLI_DEFAULT
    from pairot.pp._preprocess import MIN_SHARED_GENES

    assert MIN_SHARED_GENES == 50
    assert CLI_DEFAULT == RunParameters("a", "b", "c", "d").min_shared_genes == MIN_SHARED_GENES
    default = pr.pp.preprocess_adatas.__wrapped__.__kwdefaults__["min_shared_genes"]
    assert default == MIN_SHARED_GENES


# ----------------------------------------------------------------------------- float16 X
def _float16_pair(pair):
    """The pair with the query's counts in float16 (dense: scipy.sparse has no float16)."""
    a1 = pair[0].copy()
    a1.X = _dense(a1.X).astype(np.float16)
    return a1, pair[1]


def _assert_same_outputs(got, expected):
    for g, e in zip(got, expected, strict=True):
        assert list(g.var_names) == list(e.var_names)
        assert g.X.dtype == np.float32
        np.testing.assert_array_equal(_dense(g.X), _dense(e.X))
        for key in ("de_ova", "de_ava"):
            pd.testing.assert_frame_equal(g.uns["pairot"][key], e.uns["pairot"][key])


def test_float16_counts_are_read_exactly_as_float32(pair, caplog):
    """float16 holds every count up to 2048 exactly and float32 holds every float16: the
    counts are read chunk by chunk as float32 and give the float32 study's result."""
    a1, a2 = _float16_pair(pair)
    before = a1.X.copy()
    as32 = a1.copy()
    as32.X = a1.X.astype(np.float32)
    args = ("ct", "ct", "donor", "donor")
    expected = pr.pp.preprocess_adatas(as32, a2, *args, n_top_genes=20, **SMALL)
    with caplog.at_level("INFO", logger="pairot"):
        got = pr.pp.preprocess_adatas(a1, a2, *args, n_top_genes=20, chunk_size=37, **SMALL)
    _assert_same_outputs(got, expected)
    assert "adata1.X holds float16 values; they are read as float32." in caplog.messages
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "float16" in r.msg]
    assert a1.X.dtype == np.float16 and np.array_equal(a1.X, before)  # the caller's X
    # a DatasetMap on float16 counts builds the same Spearman features
    features = pr.tl._cost._features.spearman_features
    np.testing.assert_array_equal(features(a1.X), features(as32.X))


def test_float16_backed_and_lazy(pair, tmp_path):
    import dask.array as da

    a1, a2 = _float16_pair(pair)
    args = ("ct", "ct", "donor", "donor")
    expected = pr.pp.preprocess_adatas(a1, a2, *args, n_top_genes=20, **SMALL)
    path = tmp_path / "q16.h5ad"
    a1.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    assert backed.X.dtype == np.float16  # an h5py dataset of float16
    got = pr.pp.preprocess_adatas(backed, a2, *args, n_top_genes=20, chunk_size=50, **SMALL)
    _assert_same_outputs(got, expected)
    lazy = a1.copy()
    lazy.X = da.from_array(a1.X, chunks=(41, -1))
    _assert_same_outputs(
        pr.pp.preprocess_adatas(lazy, a2, *args, n_top_genes=20, **SMALL), expected
    )


def test_float16_sparse_on_disk_is_a_clear_error(pair, tmp_path):
    """scipy.sparse (so also anndata) cannot hold float16: a sparse float16 X can only come
    from a file written by hand. pairot names the study, the dtype and the fix."""
    import h5py

    path = tmp_path / "sparse16.h5ad"
    pair[0].write_h5ad(path)  # CSR float32
    with h5py.File(path, "r+") as handle:
        data = handle["X/data"][:]
        del handle["X/data"]
        handle["X"].create_dataset("data", data=data.astype(np.float16))
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(TypeError) as info:
        pr.pp.preprocess_adatas(backed, pair[1], "ct", "ct", "donor", "donor", **SMALL)
    message = str(info.value)
    assert message.startswith("adata1.X is a sparse matrix of float16 values on disk")
    assert "data.astype('float32')" in message and "scipy.sparse has" not in message


def test_float16_overflow_and_rounding_are_explained(pair, caplog):
    a1, a2 = _float16_pair(pair)
    big = a1.copy()
    big.X = big.X.copy()
    big.X[0, 0] = 3001  # float16 keeps 3000: every 2nd integer above 2048
    with caplog.at_level("WARNING", logger="pairot"):
        pr.pp.preprocess_adatas(big, a2, "ct", "ct", "donor", "donor", n_top_genes=20, **SMALL)
    (warning,) = [m for m in caplog.messages if "float16" in m]
    assert warning.startswith("adata1.X holds float16 values up to 3000; float16 holds every")
    assert "may have been rounded" in warning
    inf = a1.copy()
    inf.X = inf.X.copy()
    inf.X[0, 0] = np.inf  # what a count above 65504 becomes in float16
    with pytest.raises(ValueError, match=r"NaN or infinite .* float16 holds at most 65504"):
        pr.pp.preprocess_adatas(inf, a2, "ct", "ct", "donor", "donor", n_top_genes=20, **SMALL)
