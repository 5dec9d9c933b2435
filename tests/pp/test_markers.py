"""Tests of the marker building blocks (METHOD section 4, steps 1-3) against a naive reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from pairot.pp._markers import (
    filter_genes_ava,
    filter_genes_ova,
    select_genes,
    similar_clusters,
)

# --------------------------------------------------------------------------------------------
# naive pure-Python reference of METHOD section 4, steps 1-3
# --------------------------------------------------------------------------------------------
# official human symbols (the filter keeps only those; see tests/pp/test_gene_tables.py for
# names that are not): ordinary markers, plus names close to uninformative ones
INFORMATIVE = [
    "CD3E", "MS4A1", "GAPDH", "CD79A", "NKG7", "LYZ", "CD14", "FCGR3A", "GNLY", "PPBP",
    "CD8A", "IL7R", "CCR7", "S100A8", "IGHM", "RPS6KA1",
]  # fmt: skip
UNINFORMATIVE = ["MT-CO1", "RPL10", "LINC00123", "TRAC", "IGKC"]


def naive_filter(records, categories, labels, *, logfc, adj_p, auroc, gene_filtering):
    """Rows (dicts) passing the thresholds, sorted by labels (category order), -logFC."""
    position = {c: i for i, c in enumerate(categories)}
    kept = []
    for row in records:
        values = (row["logFC"], row["adj.P.Val"], row["auroc"])
        if any(math.isnan(v) for v in values):
            continue
        if row["logFC"] < logfc or row["adj.P.Val"] > adj_p or row["auroc"] < auroc:
            continue
        if gene_filtering and row["gene"] in UNINFORMATIVE:
            continue
        kept.append(row)
    # Python's sort is stable: ties in logFC keep the input order
    kept.sort(key=lambda r: (*[position[r[c]] for c in labels], -r["logFC"]))
    return kept


def naive_overlap(top, a, b):
    ta, tb = top[a], top[b]
    if not ta:
        return 0.0
    return len(ta & tb) / len(ta | tb) * (len(tb) / len(ta))


def naive_select(ova_rows, ava_rows, categories, *, n_ova, n_ava, threshold, n_overlap):
    """Marker lists as a list of (cluster, rank, gene, logFC, reference) tuples."""
    ova = {c: [] for c in categories}
    for row in ova_rows:
        ova[row["cluster"]].append((row["gene"], row["logFC"]))
    ava = {}
    for row in ava_rows:
        ava.setdefault((row["cluster"], row["versus"]), []).append((row["gene"], row["logFC"]))
    for markers in itertools.chain(ova.values(), ava.values()):
        markers.sort(key=lambda m: -m[1])

    def cut(markers, n):
        return markers if n is None else markers[:n]

    top = {c: {g for g, _ in cut(ova[c], n_overlap)} for c in categories}
    result = []
    for a in categories:
        candidates = [(g, lfc, "all") for g, lfc in cut(ova[a], n_ova)]
        for b in categories:
            if b != a and naive_overlap(top, a, b) >= threshold:
                candidates += [(g, lfc, str(b)) for g, lfc in cut(ava.get((a, b), []), n_ava)]
        candidates.sort(key=lambda m: -m[1])
        seen = set()
        for g, lfc, reference in candidates:
            if g in seen:
                continue
            seen.add(g)
            result.append((a, len(seen) - 1, g, lfc, reference))
    return result


# --------------------------------------------------------------------------------------------
# random tables
# --------------------------------------------------------------------------------------------
def random_tables(seed, n_clusters=5, n_genes=12):
    """Random OVA / AVA tables with ties, NaNs, uninformative genes and a marker-less cluster."""
    rng = np.random.default_rng(seed)
    categories = [f"c{i}" for i in range(n_clusters)][::-1]  # category order != sorted order
    genes = list(rng.choice(INFORMATIVE + UNINFORMATIVE, size=n_genes, replace=False))
    logfc_values = np.array([-1.0, 0.5, 0.99, 1.0, 1.5, 2.0, 2.5, 3.0, np.nan])

    def columns(n):
        logfc = rng.choice(logfc_values, size=n)
        adj = rng.choice([0.001, 0.01, 0.05, 0.0500001, 0.2, np.nan], size=n)
        auroc = rng.choice([0.5, 0.6, 0.59999, 0.7, 0.9, np.nan], size=n)
        return logfc, adj, auroc

    ova = pd.DataFrame([(c, g) for c in categories for g in genes], columns=["cluster", "gene"])
    ava = pd.DataFrame(
        [(a, b, g) for a in categories for b in categories if a != b for g in genes],
        columns=["cluster", "versus", "gene"],
    )
    for table in (ova, ava):
        logfc, adj, auroc = columns(len(table))
        table["logFC"] = logfc
        table["P.Value"] = adj / 2
        table["adj.P.Val"] = adj
        table["auroc"] = auroc
    # the last category has no OVA marker at all
    ova.loc[ova["cluster"] == categories[-1], "logFC"] = 0.0
    # shuffle the rows, so that stable tie-breaking follows the input order
    ova = ova.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    ava = ava.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    for table in (ova, ava):
        table["cluster"] = pd.Categorical(table["cluster"], categories=categories)
        table["gene"] = pd.Categorical(table["gene"], categories=genes)
        table["row_id"] = np.arange(len(table))
    ava["versus"] = pd.Categorical(ava["versus"], categories=categories)
    ava = ava[["cluster", "versus", "gene", "logFC", "P.Value", "adj.P.Val", "auroc", "row_id"]]
    return ova, ava, categories


def records(table):
    return [
        {k: (str(v) if k in ("cluster", "versus", "gene") else v) for k, v in row.items()}
        for row in table.to_dict("records")
    ]


THRESHOLDS = [
    {"logfc": 1.0, "adj_p": 0.05, "auroc": 0.6, "gene_filtering": True},
    {"logfc": 1.0, "adj_p": 0.05, "auroc": 0.6, "gene_filtering": False},
    {"logfc": 0.5, "adj_p": 0.2, "auroc": 0.5, "gene_filtering": True},
    {"logfc": -np.inf, "adj_p": 1.0, "auroc": 0.0, "gene_filtering": False},
]


def _kwargs(t):
    return {
        "logfc_threshold": t["logfc"],
        "adj_p_val_threshold": t["adj_p"],
        "auroc_threshold": t["auroc"],
        "gene_filtering": t["gene_filtering"],
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresholds", THRESHOLDS)
def test_filters_match_naive(seed, thresholds):
    ova, ava, categories = random_tables(seed)
    for table, func, labels in [
        (ova, filter_genes_ova, ("cluster",)),
        (ava, filter_genes_ava, ("cluster", "versus")),
    ]:
        before = table.copy(deep=True)
        out = func(table, **_kwargs(thresholds))
        pd.testing.assert_frame_equal(table, before)  # input untouched
        expected = naive_filter(records(table), categories, labels, **thresholds)
        assert out["row_id"].tolist() == [r["row_id"] for r in expected]
        # all columns carried over unchanged, fresh index, categories preserved
        reference = table.set_index("row_id").loc[out["row_id"]].reset_index()
        pd.testing.assert_frame_equal(out[reference.columns], reference)
        assert isinstance(out.index, pd.RangeIndex)
        for label in labels:
            assert list(out[label].cat.categories) == categories


@pytest.mark.parametrize("seed", range(8))
def test_select_genes_matches_naive(seed):
    rng = np.random.default_rng(100 + seed)
    ova, ava, categories = random_tables(seed, n_clusters=int(rng.integers(2, 7)))
    ova_f = filter_genes_ova(ova, **_kwargs(THRESHOLDS[2]))
    ava_f = filter_genes_ava(ava, **_kwargs(THRESHOLDS[2]))
    ova_rows, ava_rows = records(ova_f), records(ava_f)
    before = (ova_f.copy(deep=True), ava_f.copy(deep=True))
    n_values = [None, 0, 1, 3]
    n_from_ava = 0
    for n_overlap, threshold in itertools.product([None, 1, 3, 10], [0.0, 0.3, 0.5, 1.0]):
        similar = similar_clusters(
            ova_f, overlap_n_genes_ava=n_overlap, overlap_threshold_ava=threshold
        )
        top = {
            c: {r["gene"] for r in [r for r in ova_rows if r["cluster"] == c][:n_overlap]}
            for c in categories
        }
        expected_pairs = [
            (a, b, naive_overlap(top, a, b))
            for a in categories
            for b in categories
            if a != b and naive_overlap(top, a, b) >= threshold
        ]
        got_pairs = list(
            zip(
                similar["cluster"].astype(str),
                similar["similar"].astype(str),
                similar["overlap"],
                strict=True,
            )
        )
        assert got_pairs == expected_pairs

        for n_ova, n_ava in itertools.product(n_values, n_values):
            out = select_genes(
                ova_f,
                ava_f,
                n_genes_ova=n_ova,
                n_genes_ava=n_ava,
                overlap_n_genes_ava=n_overlap,
                overlap_threshold_ava=threshold,
            )
            expected = naive_select(
                ova_rows,
                ava_rows,
                categories,
                n_ova=n_ova,
                n_ava=n_ava,
                threshold=threshold,
                n_overlap=n_overlap,
            )
            got = list(
                zip(
                    out["cluster"].astype(str),
                    out["rank"],
                    out["gene"],
                    out["logFC"],
                    out["reference"],
                    strict=True,
                )
            )
            assert got == expected, (n_ova, n_ava, n_overlap, threshold)
            assert list(out["cluster"].cat.categories) == categories
            n_from_ava += int((out["reference"] != "all").sum())
    assert n_from_ava > 0  # the AVA blocks were exercised
    pd.testing.assert_frame_equal(ova_f, before[0])
    pd.testing.assert_frame_equal(ava_f, before[1])


# --------------------------------------------------------------------------------------------
# hand-computed examples
# --------------------------------------------------------------------------------------------
def _ova(rows, categories):
    table = pd.DataFrame(rows, columns=["cluster", "gene", "logFC"]).astype({"logFC": float})
    table["cluster"] = pd.Categorical(table["cluster"], categories=categories)
    table["gene"] = table["gene"].astype("category")
    return table


def _ava(rows, categories):
    table = pd.DataFrame(rows, columns=["cluster", "versus", "gene", "logFC"])
    table = table.astype({"logFC": float})
    for column in ("cluster", "versus"):
        table[column] = pd.Categorical(table[column], categories=categories)
    table["gene"] = table["gene"].astype("category")
    return table


OVA_HAND = _ova(
    [
        ("A", "g1", 3.0),
        ("A", "g2", 2.5),
        ("A", "g3", 2.0),
        ("A", "g4", 1.5),
        ("B", "g1", 2.8),
        ("B", "g2", 2.2),
        ("C", "g5", 4.0),
        ("E", "g1", 2.0),
        ("E", "g2", 1.9),
        ("E", "g3", 1.8),
        ("E", "g6", 1.7),
        ("E", "g7", 1.6),
    ],
    ["A", "B", "C", "D", "E"],
)
AVA_HAND = _ava(
    [
        ("B", "A", "gB1", 2.2),
        ("B", "A", "g1", 1.2),
        ("B", "A", "gB2", 5.0),
        ("B", "A", "gB3", 1.1),
        ("A", "B", "g3", 1.5),
        ("A", "E", "gA1", 1.3),
        ("E", "A", "gE1", 3.5),
    ],
    ["A", "B", "C", "D", "E"],
)


def test_overlap_hand_computed():
    # T(A) = {g1..g4}, T(B) = {g1, g2}, T(C) = {g5}, T(D) = {}, T(E) = {g1, g2, g3, g6, g7}
    out = similar_clusters(OVA_HAND, overlap_threshold_ava=0.0)
    overlap = {
        (a, b): o for a, b, o in zip(out["cluster"], out["similar"], out["overlap"], strict=True)
    }
    assert overlap[("A", "B")] == pytest.approx(2 / 4 * 2 / 4)  # 0.25
    assert overlap[("B", "A")] == pytest.approx(2 / 4 * 4 / 2)  # 1.0: asymmetric
    assert overlap[("A", "E")] == pytest.approx(3 / 6 * 5 / 4)  # 0.625
    assert overlap[("E", "A")] == pytest.approx(3 / 6 * 4 / 5)  # 0.4
    assert overlap[("B", "E")] == pytest.approx(2 / 5 * 5 / 2)  # 1.0
    assert overlap[("E", "B")] == pytest.approx(2 / 5 * 2 / 5)  # 0.16
    assert overlap[("A", "C")] == 0.0
    assert overlap[("D", "A")] == 0.0  # T(D) empty
    assert overlap[("A", "D")] == 0.0
    assert len(out) == 5 * 4  # threshold 0: every ordered pair b != a

    out = similar_clusters(OVA_HAND, overlap_threshold_ava=0.5)
    pairs = list(zip(out["cluster"].astype(str), out["similar"].astype(str), strict=True))
    assert pairs == [("A", "E"), ("B", "A"), ("B", "E")]
    assert list(out["cluster"].cat.categories) == ["A", "B", "C", "D", "E"]

    # only the top 2 markers count: T(A) = {g1, g2} = T(B) = T(E)
    out = similar_clusters(OVA_HAND, overlap_n_genes_ava=2, overlap_threshold_ava=1.0)
    pairs = list(zip(out["cluster"].astype(str), out["similar"].astype(str), strict=True))
    assert pairs == [("A", "B"), ("A", "E"), ("B", "A"), ("B", "E"), ("E", "A"), ("E", "B")]


def test_select_genes_hand_computed():
    out = select_genes(OVA_HAND, AVA_HAND, n_genes_ova=10, n_genes_ava=3)
    got = list(
        zip(
            out["cluster"].astype(str),
            out["rank"],
            out["gene"],
            out["logFC"],
            out["reference"],
            strict=True,
        )
    )
    assert got == [
        # A: similar to E (0.625 >= 0.3), not to B (0.25)
        ("A", 0, "g1", 3.0, "all"),
        ("A", 1, "g2", 2.5, "all"),
        ("A", 2, "g3", 2.0, "all"),
        ("A", 3, "g4", 1.5, "all"),
        ("A", 4, "gA1", 1.3, "E"),
        # B: similar to A (1.0) and E (1.0); the top 3 of B vs A are gB2, gB1, g1; g1 is
        # already in as an OVA marker with a higher logFC; the gB1 / g2 tie keeps OVA first
        ("B", 0, "gB2", 5.0, "A"),
        ("B", 1, "g1", 2.8, "all"),
        ("B", 2, "g2", 2.2, "all"),
        ("B", 3, "gB1", 2.2, "A"),
        ("C", 0, "g5", 4.0, "all"),
        # D has no marker; E: similar to A (0.4), not to B (0.16)
        ("E", 0, "gE1", 3.5, "A"),
        ("E", 1, "g1", 2.0, "all"),
        ("E", 2, "g2", 1.9, "all"),
        ("E", 3, "g3", 1.8, "all"),
        ("E", 4, "g6", 1.7, "all"),
        ("E", 5, "g7", 1.6, "all"),
    ]
    assert list(out.columns) == ["cluster", "rank", "gene", "logFC", "reference"]
    assert list(out["cluster"].cat.categories) == ["A", "B", "C", "D", "E"]

    out = select_genes(OVA_HAND, AVA_HAND, n_genes_ova=1, n_genes_ava=1)
    got = list(zip(out["cluster"].astype(str), out["gene"], out["reference"], strict=True))
    assert got == [
        ("A", "g1", "all"),
        ("A", "gA1", "E"),
        ("B", "gB2", "A"),
        ("B", "g1", "all"),
        ("C", "g5", "all"),
        ("E", "gE1", "A"),
        ("E", "g1", "all"),
    ]


def test_select_genes_blocks_in_category_order():
    # categories X, Z, Y: the AVA block of Z comes before that of Y, so ties follow that order
    categories = ["X", "Z", "Y"]
    ova = _ova([(c, g, v) for c in categories for g, v in [("h1", 3.0), ("h2", 2.0)]], categories)
    ava = _ava([("X", "Y", "gy", 2.0), ("X", "Y", "h1", 2.0), ("X", "Z", "gz", 2.0)], categories)
    out = select_genes(ova, ava)
    x = out[out["cluster"] == "X"]
    assert x["gene"].tolist() == ["h1", "h2", "gz", "gy"]
    assert x["reference"].tolist() == ["all", "all", "Z", "Y"]
    assert x["rank"].tolist() == [0, 1, 2, 3]


def test_select_genes_empty_and_no_similar():
    ova = _ova([], ["A", "B"])
    ava = _ava([], ["A", "B"])
    out = select_genes(ova, ava)
    assert len(out) == 0
    assert list(out.columns) == ["cluster", "rank", "gene", "logFC", "reference"]
    assert list(out["cluster"].cat.categories) == ["A", "B"]
    assert len(similar_clusters(ova)) == 0


def test_select_genes_resorts_unsorted_input():
    shuffled = OVA_HAND.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        select_genes(shuffled, AVA_HAND.iloc[::-1]), select_genes(OVA_HAND, AVA_HAND)
    )


def test_filter_hand_example():
    de = pd.DataFrame(
        {
            "cluster": pd.Categorical(["b", "a", "a", "a", "b", "a"], categories=["b", "a", "z"]),
            "gene": ["G1", "G2", "MT-CO1", "G3", "G4", "G5"],
            "logFC": [2.0, 1.0, 5.0, 3.0, 0.9, 1.0],
            "P.Value": [0.0] * 6,
            "adj.P.Val": [0.01, 0.05, 0.0, 0.01, 0.0, 0.06],
            "auroc": [0.9, 0.6, 1.0, np.nan, 1.0, 1.0],
        }
    )
    out = filter_genes_ova(de)
    assert out["gene"].tolist() == ["G1", "G2"]
    assert out["cluster"].tolist() == ["b", "a"]
    assert list(out["cluster"].cat.categories) == ["b", "a", "z"]
    out = filter_genes_ova(de, gene_filtering=False)
    assert out["gene"].tolist() == ["G1", "MT-CO1", "G2"]
    # a non-categorical cluster column becomes a Categorical of the sorted names
    out = filter_genes_ova(de.astype({"cluster": str}), gene_filtering=False)
    assert out["cluster"].tolist() == ["a", "a", "b"]
    assert list(out["cluster"].cat.categories) == ["a", "b"]
    assert out["gene"].tolist() == ["MT-CO1", "G2", "G1"]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def test_missing_columns_are_named():
    ova, ava, _ = random_tables(0)
    with pytest.raises(ValueError, match=r"de_res_ova is missing the column\(s\) \['auroc'\]"):
        filter_genes_ova(ova.drop(columns="auroc"))
    with pytest.raises(ValueError, match=r"\['versus'\].*it has the columns"):
        filter_genes_ava(ova)
    with pytest.raises(ValueError, match=r"de_res_ava is missing.*\['versus'\]"):
        select_genes(ova, ova)
    with pytest.raises(TypeError, match=r"de_res_ova\['cluster'\] is a dict, not a DataFrame"):
        filter_genes_ova(ova.to_dict())
    with pytest.raises(TypeError, match="de_res_ova must be upstream pairOT's .* or pairot's long"):
        filter_genes_ova(ova.to_numpy())
    with pytest.raises(TypeError, match=r"de_res_ova\['logFC'\] must be numeric"):
        filter_genes_ova(ova.astype({"logFC": str}))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"logfc_threshold": "1"}, TypeError, "logfc_threshold must be a real number"),
        ({"logfc_threshold": np.nan}, ValueError, "logfc_threshold must be a number, got NaN"),
        ({"adj_p_val_threshold": 1.5}, ValueError, r"adj_p_val_threshold must lie in \[0.0, 1.0\]"),
        ({"auroc_threshold": None}, TypeError, "auroc_threshold must be a real number"),
        ({"auroc_threshold": True}, TypeError, "auroc_threshold"),
        ({"gene_filtering": 1}, TypeError, "gene_filtering must be True or False"),
    ],
)
def test_filter_argument_validation(kwargs, error, match):
    ova, ava, _ = random_tables(0)
    with pytest.raises(error, match=match):
        filter_genes_ova(ova, **kwargs)
    with pytest.raises(error, match=match):
        filter_genes_ava(ava, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_genes_ova": -1}, ValueError, "n_genes_ova must be >= 0"),
        ({"n_genes_ava": 2.5}, TypeError, "n_genes_ava must be a non-negative integer or None"),
        ({"overlap_n_genes_ava": True}, TypeError, "overlap_n_genes_ava"),
        ({"overlap_threshold_ava": "0.3"}, TypeError, "overlap_threshold_ava must be a real"),
        ({"overlap_threshold_ava": np.nan}, ValueError, "overlap_threshold_ava.*NaN"),
    ],
)
def test_select_argument_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        select_genes(OVA_HAND, AVA_HAND, **kwargs)


def test_select_rejects_inconsistent_tables():
    duplicated = pd.concat([OVA_HAND, OVA_HAND.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="several rows for cluster 'A' and gene 'g1'"):
        select_genes(duplicated, AVA_HAND)
    duplicated = pd.concat([AVA_HAND, AVA_HAND.iloc[[1]]], ignore_index=True)
    with pytest.raises(ValueError, match="several rows for cluster 'B', versus 'A'"):
        select_genes(OVA_HAND, duplicated)
    other = AVA_HAND.copy()
    other["versus"] = other["versus"].cat.rename_categories({"E": "Q"})
    with pytest.raises(ValueError, match=r"clusters that de_res_ova does not have.*'Q'"):
        select_genes(OVA_HAND, other)
    with_nan = OVA_HAND.copy()
    with_nan.loc[0, "logFC"] = np.nan
    with pytest.raises(ValueError, match="logFC'\\] has NaN"):
        select_genes(with_nan, AVA_HAND)


def test_missing_labels_in_passing_rows():
    ova, _, _ = random_tables(0)
    ova = ova.astype({"gene": object})
    ova["logFC"] = 5.0
    ova["adj.P.Val"] = 0.0
    ova["auroc"] = 1.0
    ova.loc[3, "gene"] = None
    with pytest.raises(ValueError, match=r"de_res_ova\['gene'\] has 1 missing value"):
        filter_genes_ova(ova)
