"""``label_distance_mode="auto"``: the rule on constructed cases with a known answer, the
cell-term figures against naive loops, and the records in ``DatasetMap``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pairot as pr
from pairot.tl._cost._auto_label_distance import (
    ALPHA,
    cell_term_summary,
    choose,
    coverage_association,
    decide,
    label_cell_association,
)
from pairot.tl._cost._robust_label_distance import robust_label_distance


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------- cell-term figures
def test_cell_term_summary_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    x, y = unit_rows(rng, 60, 8), unit_rows(rng, 50, 8)
    qc, rc = rng.integers(0, 3, 60), rng.integers(0, 4, 50)
    M, s = cell_term_summary(x, y, qc, rc, 3, 4)  # fewer cells than the subsample: all used
    spreads = []
    for i in range(60):
        m = [np.mean([0.5 * (1 - x[i] @ y[j]) for j in range(50) if rc[j] == c]) for c in range(4)]
        spreads.append(max(m) - min(m))
    assert s == pytest.approx(np.median(spreads))
    for k in range(3):
        for c in range(4):
            pairs = [
                0.5 * (1 - x[i] @ y[j])
                for i in range(60)
                for j in range(50)
                if qc[i] == k and rc[j] == c
            ]
            assert M[k, c] == pytest.approx(np.mean(pairs))


def test_cell_term_summary_subsamples_every_cluster_and_is_seeded():
    rng = np.random.default_rng(1)
    x, y = unit_rows(rng, 900, 6), unit_rows(rng, 700, 6)
    qc = np.r_[np.zeros(895, dtype=int), np.ones(5, dtype=int)]  # one rare query cluster
    rc = rng.integers(0, 5, 700)
    a = cell_term_summary(x, y, qc, rc, 2, 5, max_cells=100)
    b = cell_term_summary(x, y, qc, rc, 2, 5, max_cells=100)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert np.isfinite(a[0]).all()  # the 5-cell cluster is kept


# ------------------------------------------------------------- the association test
def test_row_spearman_is_scipy_spearman_row_by_row():
    rng = np.random.default_rng(2)
    L = np.minimum(rng.random((6, 9)) * 1.5, 1.0)  # ties at 1, as a saturated L has
    M = rng.random((6, 9))
    observed, _ = label_cell_association(L, M, n_permutations=9)
    expected = np.mean([stats.spearmanr(L[k], M[k]).statistic for k in range(6)])
    assert observed == pytest.approx(expected)


def test_a_label_term_of_pure_noise_gets_no_weight():
    """Calibration: for label distances drawn independently of the cells the test rejects at
    about its level, so about 95% of them get lambda_label = 0."""
    rng = np.random.default_rng(3)
    M = rng.random((10, 12))
    decisions = [decide(rng.random((10, 12)), M, 0.05) for _ in range(60)]
    none = [d for d in decisions if d.label_distance == "none"]
    assert len(none) >= 52  # 60 * 0.95 = 57 expected
    assert all(d.lambda_label == 0.0 and d.lambda_feature == 1.0 for d in none)
    assert all("no better than chance" in d.reason for d in none)
    assert all(d.p_value >= ALPHA for d in none)


def test_a_decisive_label_term_keeps_a_weight_on_the_cell_terms_scale():
    rng = np.random.default_rng(4)
    M = rng.random((10, 12))
    L = np.minimum((M - M.min(axis=1, keepdims=True)) * 3 + 0.05 * rng.random((10, 12)), 1.0)
    d = decide(L, M, 0.042)
    assert d.label_distance == "robust"
    assert d.lambda_label == d.cell_scale == 0.042 and d.lambda_feature == 1.0
    assert d.p_value == pytest.approx(1 / 200) and d.p_value < ALPHA
    assert d.association > 0.8
    record = d.record()
    assert set(record) == {
        "label_distance", "lambda_feature", "lambda_label", "cell_scale", "association",
        "p_value", "reason",
    }  # fmt: skip


def test_constant_label_term_or_flat_cells_get_no_weight():
    M = np.random.default_rng(5).random((4, 5))
    d = decide(np.ones((4, 5)), M, 0.05)
    assert (d.label_distance, d.lambda_label) == ("none", 0.0) and "constant" in d.reason
    L = np.minimum(M * 2, 1.0)
    d = decide(L, M, 0.0)
    assert (d.label_distance, d.lambda_label) == ("none", 0.0) and "does not vary" in d.reason


# --------------------------------------- which label distance (the tested variant)
def agreeing(rng, M, noise=0.05):
    """A label distance whose rows rank the reference clusters as ``M`` does."""
    return np.minimum((M - M.min(axis=1, keepdims=True)) * 3 + noise * rng.random(M.shape), 1.0)


def test_coverage_association_counts_a_constant_row_as_no_agreement():
    rng = np.random.default_rng(6)
    M = rng.random((8, 10))
    L = agreeing(rng, M)
    full, p_full = coverage_association(L, M)
    L[:6] = 1.0  # six clusters without markers: their rows say nothing
    part, p_part = coverage_association(L, M)
    left_out, p_left_out = label_cell_association(L, M)
    assert part == pytest.approx(left_out * 2 / 8)  # 2 informative rows of 8
    assert p_part == p_left_out  # observed and null means scaled alike
    assert part < full


def test_choose_gives_a_label_distance_of_pure_noise_no_weight():
    """Two candidates of pure noise: each test rejects at about alpha, so 'none' at least
    about 1 - 2 * alpha of the time."""
    rng = np.random.default_rng(7)
    M = rng.random((10, 12))
    picks = [
        choose({"robust": rng.random((10, 12)), "pairot": rng.random((10, 12))}, M, 0.05)
        for _ in range(60)
    ]
    none = [p for p in picks if p[0] == "none"]
    assert len(none) >= 48  # 60 * (1 - 2 * 0.05) = 54 expected at worst
    assert all(weight == 0.0 for _, weight, _ in none)
    assert all(min(p for _, p in tests.values()) >= ALPHA for _, _, tests in none)


def test_choose_takes_the_label_distance_that_agrees_with_the_cells():
    rng = np.random.default_rng(8)
    M = rng.random((10, 12))
    good, noise = agreeing(rng, M), rng.random((10, 12))
    for candidates in ({"robust": noise, "pairot": good}, {"pairot": good, "robust": noise}):
        name, weight, tests = choose(candidates, M, 0.03)
        assert (name, weight) == ("pairot", 0.03)
        assert tests["pairot"][0] > 0.8 and tests["pairot"][1] < ALPHA
    # both agree: the stronger agreement wins, whatever the order
    weaker = agreeing(rng, M, noise=0.6)
    assert choose({"robust": weaker, "pairot": good}, M, 0.03)[0] == "pairot"
    assert choose({"pairot": weaker, "robust": good}, M, 0.03)[0] == "robust"
    # a label distance with only a few informative rows loses to one that covers every cluster
    sparse = good.copy()
    sparse[3:] = 1.0
    assert choose({"pairot": sparse, "robust": weaker}, M, 0.03)[0] == "robust"
    # no scale to weigh against: none
    assert choose({"robust": good}, M, 0.0)[:2] == ("none", 0.0)


# -------------------------------------------------------------------- in DatasetMap
@pytest.fixture(scope="module")
def studies():
    raw = pr.datasets.pbmc_demo()
    return pr.pp.preprocess_adatas(*raw, "cell_type", "cell_type", "sample_id", "sample_id", 200)


def test_auto_mode_in_dataset_map_records_its_decision(studies):
    dm = pr.tl.DatasetMap(*studies)
    dm.init_geom(batch_size=128, label_distance_mode="auto")
    assert dm.label_distance_mode == "auto"
    record = dm.label_distance_params["auto_decision"]
    assert record["label_distance"] == "robust"  # the PBMC halves share their cell types
    info1, info2 = dm._info
    _, L = robust_label_distance(
        info1["de_ova"], info2["de_ova"], dm.query_clusters, dm.reference_clusters
    )
    pd.testing.assert_frame_equal(dm.label_distance, L)
    # the geometry uses the decided weights
    assert dm.geom.lambda_feature == record["lambda_feature"] == 1.0
    assert dm.geom.lambda_label == pytest.approx(record["lambda_label"])
    M, s = cell_term_summary(
        dm.geom.x, dm.geom.y, dm.geom.query_codes, dm.geom.ref_codes,
        len(dm.query_clusters), len(dm.reference_clusters),
    )  # fmt: skip
    assert record["cell_scale"] == pytest.approx(s) and record["lambda_label"] == pytest.approx(s)
    n_ref = len(dm.reference_clusters)
    label_columns = dm.geom.x_aug[:, -n_ref:]
    expected = (record["lambda_label"] * L.to_numpy())[dm.geom.query_codes]
    np.testing.assert_allclose(label_columns, expected, rtol=1e-6)
    # a copy: changing it does not change the map
    dm.label_distance_params["auto_decision"]["lambda_label"] = -1
    assert dm.label_distance_params["auto_decision"]["lambda_label"] == record["lambda_label"]
    dm.init_problem()
    dm.solve(progress=False)
    best = dm.compute_mapping().idxmax(axis=1)
    assert (best == best.index).all()


def test_auto_mode_refuses_weights(studies):
    dm = pr.tl.DatasetMap(*studies)
    with pytest.raises(ValueError, match=r"'auto' decides the weights itself.*lambda_label=1.0"):
        dm.init_geom(label_distance_mode="auto", lambda_label=1.0)


# ------------------------------------------------------------ label-term diagnostics
def test_label_term_diagnostics_kernel_on_a_hand_made_case():
    from pairot.tl._cost._label_diagnostics import label_term_diagnostics

    L = np.array([[0.2, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.5, 0.999]])
    # reference cluster "c" is close to every query cluster (a hub): centring removes it
    M = np.array([[0.30, 0.45, 0.28], [0.40, 0.42, 0.35], [0.44, 0.41, 0.36]])
    table = label_term_diagnostics(L, M, [4, 0, 2], [10, 20, 30], ["q1", "q2", "q3"], list("abc"))
    assert table.index.tolist() == ["q1", "q2", "q3"]
    assert table["n_markers"].tolist() == [4, 0, 2]
    assert table["n_cells"].tolist() == [10, 20, 30]
    np.testing.assert_allclose(table["saturated_share"], [2 / 3, 1.0, 2 / 3])
    assert table["constant_row"].tolist() == [False, True, False]
    assert table["label_nearest"].tolist() == ["a", None, "b"]
    # column means a 0.38, b 0.4267, c 0.33; centred rows q1 (-0.08, 0.023, -0.05),
    # q2 (0.02, -0.0067, 0.02), q3 (0.06, -0.0167, 0.03): argmin a, b, b (uncentred: c, c, c)
    assert table["cell_nearest"].tolist() == ["a", "b", "b"]
    assert table["disagree"].tolist() == [False, False, False]
    M2 = M.copy()
    M2[2] = [0.30, 0.50, 0.36]  # q3's cells now prefer a
    # column means a 0.3333, b 0.4567, c 0.33: q1 centred (-0.033, -0.007, -0.05) -> c, q3
    # (-0.033, 0.043, 0.03) -> a: both now disagree with their label rows (a and b)
    table = label_term_diagnostics(L, M2, [4, 0, 2], [1, 1, 1], ["q1", "q2", "q3"], list("abc"))
    assert table["cell_nearest"].tolist() == ["c", "b", "a"]
    assert table["disagree"].tolist() == [True, False, True]


def test_label_term_diagnostics_in_dataset_map_match_hand_counts(studies):
    dm = pr.tl.DatasetMap(*studies)
    with pytest.raises(ValueError, match=r"call init_geom\(\) first"):
        dm.label_term_diagnostics()
    dm.init_geom(batch_size=128)
    table = dm.label_term_diagnostics()
    degs = dm.DEGs_label_distance
    first = dm.reference_clusters[0]
    L = dm.label_distance
    labels = pd.Series(np.asarray(dm.query_labels, dtype=object))
    for q in dm.query_clusters:
        assert table.loc[q, "n_markers"] == len(degs[q][first])
        assert table.loc[q, "n_cells"] == int((labels == q).sum())
        assert table.loc[q, "saturated_share"] == pytest.approx(float((L.loc[q] >= 0.999).mean()))
        if not table.loc[q, "constant_row"]:
            assert table.loc[q, "label_nearest"] == L.loc[q].idxmin()
    # the PBMC halves share their cell types: the cells' nearest cluster is the own type, but
    # for the 10 memory T cells, nearest to the regulatory T cells (as measured)
    own = table["cell_nearest"] == table.index
    assert own.sum() == 7 and not own["CD4+/CD45RO+ Memory"]
