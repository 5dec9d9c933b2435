"""Label distance (METHOD section 4, steps 4-5) against a naive loop and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pairot.pp._markers import filter_genes_ava, filter_genes_ova, select_genes
from pairot.tl._cost._label_distance import (
    label_distance,
    marker_lists,
    normalize_label_distance,
    rank_distance,
)

MISSING = 250


# --------------------------------------------------------------------------------------------
# naive reference, written from METHOD section 4 step 4
# --------------------------------------------------------------------------------------------
def naive_rank_distance(query: dict, reference: dict, missing=MISSING):
    """``D[q][r]`` and the per-gene rows, from dicts cluster -> ordered list of genes."""
    D = {}
    rows = []
    for q, q_genes in query.items():
        D[q] = {}
        for r, r_genes in reference.items():
            if not q_genes:
                D[q][r] = missing
                continue
            terms = []
            for rq, gene in enumerate(q_genes):
                rr = r_genes.index(gene) if gene in r_genes else missing
                term = abs(math.log1p(rq) - math.log1p(rr))
                terms.append(term)
                rows.append((q, r, gene, rq, rr if gene in r_genes else None, term))
            D[q][r] = sum(terms) / len(terms)
    return D, rows


def as_markers(lists: dict, logfc: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """A marker_lists-like table from dict cluster -> genes, rows shuffled."""
    records = [
        (c, rank, gene, (logfc or {}).get((c, gene), 10.0 - rank), "all")
        for c, genes in lists.items()
        for rank, gene in enumerate(genes)
    ]
    table = pd.DataFrame(records, columns=["cluster", "rank", "gene", "logFC", "reference"])
    table["cluster"] = pd.Categorical(table["cluster"], categories=list(lists))
    table["rank"] = table["rank"].astype(np.int64)
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def random_lists(rng, n_clusters, genes, max_len, p_empty=0.2):
    lists = {}
    for i in range(n_clusters):
        n = 0 if rng.random() < p_empty else int(rng.integers(1, max_len + 1))
        lists[f"k{i}"] = list(rng.choice(genes, size=min(n, len(genes)), replace=False))
    return lists


# --------------------------------------------------------------------------------------------
# rank_distance
# --------------------------------------------------------------------------------------------
def test_rank_distance_hand_computed():
    query = {"q1": ["A", "B"], "q2": []}
    reference = {"r1": ["B", "A", "C"], "r2": ["C"], "r3": []}
    D, details = rank_distance(as_markers(query), as_markers(reference))
    log2, log251 = math.log(2), math.log(251)
    expected = np.array(
        [
            [log2, log251 - log2 / 2, log251 - log2 / 2],  # (|0-log2| + |log2-0|) / 2, ...
            [250.0, 250.0, 250.0],  # q2 has no markers
        ]
    )
    np.testing.assert_allclose(D, expected, rtol=1e-15)

    assert list(details.columns) == [
        "query_cluster",
        "reference_cluster",
        "gene",
        "rank_query",
        "rank_reference",
        "logFC_query",
        "logFC_reference",
        "contribution",
    ]
    assert len(details) == 6  # 2 genes x 3 reference clusters; q2 has no rows
    assert list(details["query_cluster"].cat.categories) == ["q1", "q2"]
    assert list(details["reference_cluster"].cat.categories) == ["r1", "r2", "r3"]
    r1 = details[details["reference_cluster"] == "r1"]
    assert list(r1["gene"]) == ["A", "B"]
    assert list(r1["rank_query"]) == [0, 1]
    assert list(r1["rank_reference"]) == [1.0, 0.0]
    assert list(r1["logFC_query"]) == [10.0, 9.0]
    assert list(r1["logFC_reference"]) == [9.0, 10.0]
    np.testing.assert_allclose(r1["contribution"], [log2, log2])
    r2 = details[details["reference_cluster"] == "r2"]
    assert r2["rank_reference"].isna().all() and r2["logFC_reference"].isna().all()
    np.testing.assert_allclose(r2["contribution"], [log251, log251 - log2])
    assert details["rank_query"].dtype == np.int64
    assert details["rank_reference"].dtype == np.float64


@pytest.mark.parametrize("seed", range(8))
def test_rank_distance_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(30)]
    query = random_lists(rng, 6, genes[:20], max_len=12)
    reference = random_lists(rng, 5, genes[5:], max_len=25)
    query["k_empty"] = []  # a query cluster without markers, last in category order
    reference["k_none"] = []  # a reference cluster without markers
    missing = [250, 7, 0][seed % 3]
    D, details = rank_distance(
        as_markers(query, seed=seed), as_markers(reference, seed=seed + 1), missing_rank=missing
    )
    expected, rows = naive_rank_distance(query, reference, missing)
    expected_matrix = np.array([[expected[q][r] for r in reference] for q in query])
    np.testing.assert_allclose(D, expected_matrix, rtol=1e-13, atol=1e-13)

    # details: same rows as the naive loop, sorted by query, reference, rank
    position_q = {c: i for i, c in enumerate(query)}
    position_r = {c: i for i, c in enumerate(reference)}
    rows.sort(key=lambda row: (position_q[row[0]], position_r[row[1]], row[3]))
    assert len(details) == len(rows)
    assert list(details["query_cluster"].astype(str)) == [row[0] for row in rows]
    assert list(details["reference_cluster"].astype(str)) == [row[1] for row in rows]
    assert list(details["gene"]) == [row[2] for row in rows]
    assert list(details["rank_query"]) == [row[3] for row in rows]
    expected_rr = np.array([np.nan if row[4] is None else row[4] for row in rows], dtype=float)
    np.testing.assert_array_equal(details["rank_reference"].to_numpy(), expected_rr)
    np.testing.assert_allclose(details["contribution"], [row[5] for row in rows], rtol=1e-13)
    # absent genes have NaN logFC_reference, present ones the reference logFC
    present = ~np.isnan(expected_rr)
    assert details["logFC_reference"].isna().to_numpy().tolist() == (~present).tolist()
    np.testing.assert_allclose(
        details["logFC_reference"].to_numpy()[present], 10.0 - expected_rr[present]
    )
    # D is the mean contribution of each (q, r) with markers
    means = details.groupby(["query_cluster", "reference_cluster"], observed=True)[
        "contribution"
    ].mean()
    for (q, r), value in means.items():
        assert value == pytest.approx(D[position_q[q], position_r[r]], rel=1e-13)


def test_rank_distance_uses_the_rank_column_and_any_cluster_column():
    # gaps in rank are honoured; a non-categorical cluster column gives sorted categories
    query = pd.DataFrame(
        {"cluster": ["b", "a", "a"], "rank": [0, 3, 0], "gene": ["X", "Y", "X"], "logFC": 1.0}
    )
    reference = pd.DataFrame({"cluster": ["z"], "rank": [2], "gene": ["Y"], "logFC": [2.0]})
    D, details = rank_distance(query, reference)
    a = (abs(0 - math.log1p(250)) + abs(math.log1p(3) - math.log1p(2))) / 2
    b = math.log1p(250)
    np.testing.assert_allclose(D, [[a], [b]])
    assert list(details["query_cluster"].cat.categories) == ["a", "b"]


def test_rank_distance_validation():
    good = as_markers({"a": ["X", "Y"]})
    with pytest.raises(ValueError, match="missing the column"):
        rank_distance(good.drop(columns="rank"), good)
    with pytest.raises(TypeError, match="query_markers must be a pandas DataFrame"):
        rank_distance({"cluster": []}, good)
    duplicated = pd.concat([good, good.iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="more than once"):
        rank_distance(good, duplicated)
    negative = good.assign(rank=[-1, 0])
    with pytest.raises(ValueError, match="0-based integer positions"):
        rank_distance(negative, good)
    missing_gene = good.assign(gene=["X", None])
    with pytest.raises(ValueError, match="missing value"):
        rank_distance(missing_gene, good)
    with pytest.raises(ValueError, match="missing_rank must be >= 0"):
        rank_distance(good, good, missing_rank=-1)
    with pytest.raises(TypeError, match="missing_rank"):
        rank_distance(good, good, missing_rank="250")


# --------------------------------------------------------------------------------------------
# normalize_label_distance
# --------------------------------------------------------------------------------------------
def test_normalize_hand_computed():
    D = np.array([[0.0, 1.0], [2.0, 3.0]])
    # quantile 0.5 of (0, 1, 2, 3) with linear interpolation: 1.5
    np.testing.assert_allclose(normalize_label_distance(D, 0.5), [[0, 2 / 3], [1, 1]])
    np.testing.assert_allclose(normalize_label_distance(D, 1.0), [[0, 1 / 3], [2 / 3, 1]])
    # default 0.33: position 0.33 * 3 = 0.99 between 0 and 1 -> 0.99
    np.testing.assert_allclose(normalize_label_distance(D), np.minimum(D / 0.99, 1.0), rtol=1e-12)
    # a DataFrame in, an array out
    out = normalize_label_distance(pd.DataFrame(D), 0.5)
    assert isinstance(out, np.ndarray)


def test_normalize_degenerate_quantile():
    D = np.array([[0.0, 0.0], [0.0, 5.0]])  # quantile 0.33 is 0
    out = normalize_label_distance(D, 0.33)
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(normalize_label_distance(np.zeros((2, 3))), np.zeros((2, 3)))
    assert normalize_label_distance(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("q_norm", [0, -0.1, 1.5, float("nan")])
def test_normalize_rejects_bad_q_norm(q_norm):
    with pytest.raises(ValueError, match="q_norm"):
        normalize_label_distance(np.ones((2, 2)), q_norm)


def test_normalize_rejects_bad_distances():
    with pytest.raises(TypeError, match="q_norm"):
        normalize_label_distance(np.ones((2, 2)), True)
    with pytest.raises(ValueError, match="non-finite"):
        normalize_label_distance(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="negative"):
        normalize_label_distance(np.array([[1.0, -1.0]]))


# --------------------------------------------------------------------------------------------
# label_distance
# --------------------------------------------------------------------------------------------
def test_label_distance_ties_the_steps_together():
    rng = np.random.default_rng(11)
    genes = [f"G{i}" for i in range(25)]
    query = as_markers(random_lists(rng, 5, genes, max_len=10))
    reference = as_markers(random_lists(rng, 7, genes, max_len=20, p_empty=0.0))
    D, L, details = label_distance(query, reference, q_norm=0.4, missing_rank=100)
    D_array, details_expected = rank_distance(query, reference, missing_rank=100)
    np.testing.assert_array_equal(D.to_numpy(), D_array)
    np.testing.assert_array_equal(L.to_numpy(), normalize_label_distance(D_array, 0.4))
    pd.testing.assert_frame_equal(details, details_expected)
    assert list(D.index) == list(query["cluster"].cat.categories)
    assert list(L.columns) == list(reference["cluster"].cat.categories)
    assert D.index.name == "query_cluster" and L.columns.name == "reference_cluster"
    assert ((L.to_numpy() >= 0) & (L.to_numpy() <= 1)).all()
    with pytest.raises(ValueError, match="q_norm"):
        label_distance(query, reference, q_norm=0.0)


# --------------------------------------------------------------------------------------------
# marker_lists
# --------------------------------------------------------------------------------------------
def de_tables(seed: int):
    rng = np.random.default_rng(seed)
    clusters = ["T cell", "B/plasma", "NK"]
    genes = [f"G{i}" for i in range(20)] + ["MT-CO1", "RPL10"]
    ova = pd.DataFrame([(c, g) for c in clusters for g in genes], columns=["cluster", "gene"])
    ava = pd.DataFrame(
        [(a, b, g) for a in clusters for b in clusters if a != b for g in genes],
        columns=["cluster", "versus", "gene"],
    )
    for table in (ova, ava):
        n = len(table)
        table["logFC"] = rng.choice([-1.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0], size=n)
        table["P.Value"] = rng.choice([0.001, 0.01, 0.2], size=n)
        table["adj.P.Val"] = np.minimum(table["P.Value"] * 3, 1.0)
        table["auroc"] = rng.choice([0.5, 0.65, 0.8, 0.95], size=n)
        table["cluster"] = pd.Categorical(table["cluster"], categories=clusters)
    ava["versus"] = pd.Categorical(ava["versus"], categories=clusters)
    # make clusters similar: share the top OVA genes so that AVA markers enter the lists
    ova.loc[ova["gene"].isin(["G0", "G1", "G2"]), ["logFC", "adj.P.Val", "auroc"]] = [5.0, 0, 1]
    return ova, ava


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("n_ova", "n_ava"), [(10, 3), (None, None), (2, 1)])
def test_marker_lists_equals_pp_building_blocks(seed, n_ova, n_ava):
    ova, ava = de_tables(seed)
    got = marker_lists(ova, ava, n_genes_ova=n_ova, n_genes_ava=n_ava)
    expected = select_genes(
        filter_genes_ova(ova), filter_genes_ava(ava), n_genes_ova=n_ova, n_genes_ava=n_ava
    )
    pd.testing.assert_frame_equal(got, expected)
    if n_ova is None:
        assert (got["reference"] != "all").any()  # the all-vs-all markers took part

    thresholds = {
        "logfc_threshold": 0.5,
        "adj_p_val_threshold": 0.5,
        "auroc_threshold": 0.5,
        "gene_filtering": False,
    }
    got = marker_lists(
        ova,
        ava,
        n_genes_ova=n_ova,
        n_genes_ava=n_ava,
        overlap_threshold_ava=0.1,
        overlap_n_genes_ava=5,
        **thresholds,
    )
    expected = select_genes(
        filter_genes_ova(ova, **thresholds),
        filter_genes_ava(ava, **thresholds),
        n_genes_ova=n_ova,
        n_genes_ava=n_ava,
        overlap_threshold_ava=0.1,
        overlap_n_genes_ava=5,
    )
    pd.testing.assert_frame_equal(got, expected)


def test_marker_lists_feed_label_distance():
    ova, ava = de_tables(3)
    query = marker_lists(ova, ava, n_genes_ova=10, n_genes_ava=3)
    reference = marker_lists(ova, ava, n_genes_ova=None, n_genes_ava=None)
    D, L, _ = label_distance(query, reference)
    assert D.shape == L.shape == (3, 3)
    assert list(D.index) == list(D.columns) == ["T cell", "B/plasma", "NK"]
    assert np.isfinite(D.to_numpy()).all()
    assert ((L.to_numpy() >= 0) & (L.to_numpy() <= 1)).all()
