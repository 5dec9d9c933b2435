"""``preprocess_studies``: N studies preprocessed at once; with two studies it equals
``preprocess_adatas``; genes missing in one study are left out of all; every pair is what
``DatasetMap`` takes; bad input gets one clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import pairot as pr

KW = {"n_top_genes": 80, "n_samples_auroc": 60, "n_samples_hvg_selection": 400}


@pytest.fixture(scope="module")
def three():
    full, r = pr.datasets.simulate_pair(
        n_cells_query=800, n_cells_reference=500, n_genes=300, n_cell_types=4, random_state=2
    )
    for adata in (full, r):
        adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    half = np.random.default_rng(0).permutation(full.n_obs) < full.n_obs // 2
    q, third = full[half].copy(), full[~half].copy()  # two studies of one program
    third.obs = third.obs.rename(columns={"cell_type": "label", "sample_id": "donor"})
    third = third[:, 20:].copy()  # the third study lacks the first 20 genes
    return {"A": q, "B": r, "C": third}


def assert_outputs_equal(e, g):
    assert list(e.var_names) == list(g.var_names)
    assert (e.X != g.X).nnz == 0
    pd.testing.assert_frame_equal(e.obs, g.obs)
    for key in ("de_ova", "de_ava"):
        pd.testing.assert_frame_equal(e.uns["pairot"][key], g.uns["pairot"][key])


def test_two_studies_equal_preprocess_adatas(three):
    a, b = three["A"], three["B"]
    expected = pr.pp.preprocess_adatas(
        a, b, "cell_type", "cell_type", "sample_id", "sample_id", **KW
    )
    got = pr.pp.preprocess_studies({"A": a, "B": b}, "cell_type", "sample_id", **KW)
    assert list(got) == ["A", "B"]
    for e, g in zip(expected, got.values(), strict=True):
        assert_outputs_equal(e, g)
    assert got["A"].uns["pairot"]["study"] == "A"
    assert got["B"].uns["pairot"]["params"]["counts_B"] == "X"


def test_three_studies(three):
    columns = {"A": "cell_type", "B": "cell_type", "C": "label"}
    samples = {"A": "sample_id", "B": "sample_id", "C": "donor"}
    out = pr.pp.preprocess_studies(three, columns, samples, **KW)
    genes = list(out["A"].var_names)
    assert all(list(o.var_names) == genes for o in out.values())
    missing = set(three["A"].var_names[:20])
    for name, o in out.items():  # every DE table is on the genes all three share
        tested = set(o.uns["pairot"]["de_ova"]["gene"])
        assert not tested & missing, name
        assert len(tested) == o.uns["pairot"]["params"]["n_shared_genes"]
    # each study's DE equals rank_genes_limma on that study restricted to the shared genes
    shared = list(dict.fromkeys(out["C"].uns["pairot"]["de_ova"]["gene"]))
    c = three["C"][:, shared].copy()
    ova, _ = pr.pp.rank_genes_limma(c, "label", "donor", 60, result_format="long")
    got = out["C"].uns["pairot"]["de_ova"].reset_index(drop=True)
    pd.testing.assert_frame_equal(ova.reset_index(drop=True), got, check_categorical=False)
    # and any pair is what DatasetMap takes
    dm = pr.tl.DatasetMap(out["C"], out["A"])
    dm.init_geom(batch_size=256, epsilon=0.05)
    dm.init_problem()
    dm.solve(progress=False)
    mapping = dm.compute_mapping()
    assert mapping.shape == (len(out["C"].obs["label"].cat.categories), 4)
    assert (mapping.idxmax(axis=1) == mapping.index).all()  # the same simulated types


def test_bad_input(three):
    a, b = three["A"], three["B"]
    with pytest.raises(ValueError, match=r"studies has 1 study \(\['A'\]\); .*at least two"):
        pr.pp.preprocess_studies({"A": a}, "cell_type", "sample_id")
    with pytest.raises(TypeError, match="studies must be a dict of study name -> AnnData"):
        pr.pp.preprocess_studies([a, b], "cell_type", "sample_id")
    with pytest.raises(ValueError, match="differ only in case"):
        pr.pp.preprocess_studies({"a": a, "A": b}, "cell_type", "sample_id")
    with pytest.raises(KeyError, match=r"cell_type_column is a dict without the studies \['B'\]"):
        pr.pp.preprocess_studies({"A": a, "B": b}, {"A": "cell_type"}, "sample_id")
    with pytest.raises(KeyError, match=r"cell_type_column\['B'\]='ct' is not a column of B.obs"):
        pr.pp.preprocess_studies({"A": a, "B": b}, {"A": "cell_type", "B": "ct"}, "sample_id")
    with pytest.raises(KeyError, match=r"counts\['A'\]='layers/x' but A has no layer 'x'"):
        pr.pp.preprocess_studies(
            {"A": a, "B": b}, "cell_type", "sample_id", counts={"A": "layers/x", "B": "X"}
        )
    few = three["C"][:, :30].copy()
    few.obs = few.obs.rename(columns={"label": "cell_type", "donor": "sample_id"})

    def expressed(adata):
        return set(adata.var_names[np.asarray(adata.X.sum(axis=0)).ravel() > 10])

    n_shared = len(expressed(a) & expressed(b) & expressed(few))
    message = rf"^The 3 studies \(A, B, C\) share only {n_shared} genes .* in all of them, "
    with pytest.raises(ValueError, match=message + ".*Check that all studies"):
        pr.pp.preprocess_studies({"A": a, "B": b, "C": few}, "cell_type", "sample_id")


def assert_same(e, g, where: str = "") -> None:
    """Recursive exact equality of what ``read_h5ad`` gives back (arrays, frames, dicts)."""
    if isinstance(e, dict):
        assert sorted(e) == sorted(g), where
        for key in e:
            assert_same(e[key], g[key], f"{where}/{key}")
    elif isinstance(e, pd.DataFrame):
        pd.testing.assert_frame_equal(e, g, check_exact=True, obj=where)
    elif sparse.issparse(e):
        assert sparse.issparse(g) and e.dtype == g.dtype and e.shape == g.shape, where
        assert (e != g).nnz == 0, where
    elif isinstance(e, np.ndarray):
        assert e.dtype == g.dtype, where
        np.testing.assert_array_equal(e, g, err_msg=where)
    else:
        assert type(e) is type(g) and e == g, where


def test_out_dir_files_equal_the_in_memory_outputs(three, tmp_path):
    """With out_dir each study is a file (named by its safe name) that reads back as the
    in-memory output written and read back, bit for bit (X, obs, var, obsm, every uns entry
    with the stored pseudobulk); a non-empty folder is refused without overwrite."""
    import anndata as ad

    from pairot.pp._study_files import study_h5ad

    columns = {"A": "cell_type", "B": "cell_type", "C": "label"}
    samples = {"A": "sample_id", "B": "sample_id", "C": "donor"}
    names = {"A": "A", "B": "b with space!", "C": "C"}  # a name that is no file name
    studies = {names[k]: v for k, v in three.items()}
    cols = {names[k]: v for k, v in columns.items()}
    samps = {names[k]: v for k, v in samples.items()}
    kw = {**KW, "store_pseudobulk": True}
    memory = pr.pp.preprocess_studies(studies, cols, samps, **kw)
    out = tmp_path / "studies"
    paths = pr.pp.preprocess_studies(studies, cols, samps, out_dir=out, **kw)
    assert list(paths) == list(studies)
    assert paths == {name: study_h5ad(out, name).absolute() for name in studies}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    for name, path in paths.items():
        memory[name].write_h5ad(tmp_path / "expected.h5ad")
        e, g = ad.read_h5ad(tmp_path / "expected.h5ad"), ad.read_h5ad(path)
        assert_same(e.X, g.X, f"{name}.X")
        for part in ("obs", "var"):
            pd.testing.assert_frame_equal(getattr(e, part), getattr(g, part), check_exact=True)
        assert_same(dict(e.obsm), dict(g.obsm), f"{name}.obsm")
        assert_same(dict(e.uns), dict(g.uns), f"{name}.uns")
        assert "pseudobulk" in str(sorted(g.uns["pairot"]))  # the stored profiles came along
    with pytest.raises(FileExistsError, match="is not empty.*overwrite=True"):
        pr.pp.preprocess_studies(studies, cols, samps, out_dir=out, **kw)
    with pytest.raises(ValueError, match="overwrite=True is given without out_dir"):
        pr.pp.preprocess_studies(studies, cols, samps, overwrite=True, **kw)
    (out / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        pr.pp.preprocess_studies(studies, cols, samps, out_dir=out / "file", **kw)
