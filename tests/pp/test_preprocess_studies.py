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
