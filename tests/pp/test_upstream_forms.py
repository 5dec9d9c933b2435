"""Upstream pairOT's dict forms of the DE results beside pairot's long tables (issue 13).

Pinned against hand-built dicts (plain loops over the long tables) and naive loops over the
dicts, never against the converters themselves.
"""

from __future__ import annotations

import itertools
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr

from .test_markers import AVA_HAND, OVA_HAND, naive_select, random_tables
from .test_preprocess import make_study

VALUES = ["logFC", "P.Value", "adj.P.Val", "auroc"]
NAMES = ["CD4+ T cell", "B cell", "Mono 14+", "NK ñ-γ"]  # spaces, '+', unicode; no '/'


# --------------------------------------------------------------------------------------------
# hand-built dict forms: plain loops over the long tables
# --------------------------------------------------------------------------------------------
def hand_ova_dict(de_ova, columns=VALUES):
    out = {}
    for cluster in de_ova["cluster"].cat.categories:
        rows = de_ova[de_ova["cluster"] == cluster]
        frame = pd.DataFrame(
            {c: rows[c].to_numpy(dtype=np.float64) for c in columns},
            index=pd.Index([str(g) for g in rows["gene"]], dtype=object),
        )
        out[str(cluster)] = frame
    return out


def hand_ava_dict(de_ava, columns=VALUES):
    out = {}
    for c1 in de_ava["cluster"].cat.categories:
        out[str(c1)] = {}
        for c2 in de_ava["versus"].cat.categories:
            if c2 == c1:
                continue
            rows = de_ava[(de_ava["cluster"] == c1) & (de_ava["versus"] == c2)]
            out[str(c1)][str(c2)] = pd.DataFrame(
                {c: rows[c].to_numpy(dtype=np.float64) for c in columns},
                index=pd.Index([str(g) for g in rows["gene"]], dtype=object),
            )
    return out


def assert_frames_equal(got, expected, *, check_index_name=False):
    """Same values, columns, gene index (and order); the index name only when asked."""
    assert isinstance(got, pd.DataFrame)
    assert list(got.columns) == list(expected.columns)
    assert list(got.index) == list(expected.index)
    if check_index_name:
        assert got.index.name == expected.index.name
    pd.testing.assert_frame_equal(
        got.set_axis(list(got.index), axis=0),
        expected.set_axis(list(expected.index), axis=0),
        check_index_type=False,
    )


def assert_ova_dicts_equal(got, expected):
    assert list(got) == list(expected)
    for key in expected:
        assert_frames_equal(got[key], expected[key])


def assert_ava_dicts_equal(got, expected):
    assert list(got) == list(expected)
    for key in expected:
        assert_ova_dicts_equal(got[key], expected[key])


@pytest.fixture(scope="module")
def study():
    return make_study(11, names=NAMES)


@pytest.fixture(scope="module")
def long_tables(study):
    return pr.pp.rank_genes_limma(study, "ct", "donor", result_format="long")


# --------------------------------------------------------------------------------------------
# rank_genes_limma: upstream's dicts by default, the long tables on request
# --------------------------------------------------------------------------------------------
def test_rank_genes_limma_returns_upstream_dicts(study, long_tables):
    de_ova, de_ava = long_tables
    de_res_ova, de_res_ava = pr.pp.rank_genes_limma(study, "ct", "donor")
    assert list(de_res_ova) == sorted(NAMES)  # the cluster categories' order
    assert_ova_dicts_equal(de_res_ova, hand_ova_dict(de_ova))
    assert_ava_dicts_equal(de_res_ava, hand_ava_dict(de_ava))
    for cluster, frame in de_res_ova.items():
        assert list(frame.columns) == VALUES
        assert list(frame.index) == list(study.var_names)
        assert frame.index.name == "gene"
        assert cluster not in de_res_ava[cluster]  # no c1 == c2 entry
        assert set(de_res_ava[cluster]) == set(NAMES) - {cluster}
    # c1 versus c2: logFC of c1 over c2, the negative of c2 versus c1, the same p-values
    a, b = sorted(NAMES)[:2]
    np.testing.assert_allclose(
        de_res_ava[a][b]["logFC"], -de_res_ava[b][a]["logFC"], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(de_res_ava[a][b]["P.Value"], de_res_ava[b][a]["P.Value"])
    # positional n_samples_auroc keeps working with both forms
    capped = pr.pp.rank_genes_limma(study, "ct", "donor", 20, result_format="long")
    capped_dict = pr.pp.rank_genes_limma(study, "ct", "donor", 20)
    assert_ova_dicts_equal(capped_dict[0], hand_ova_dict(capped[0]))


@pytest.mark.parametrize("bad", ["wide", "Dict", None, 1])
def test_rank_genes_limma_result_format_checked(study, bad):
    with pytest.raises(ValueError, match=r"result_format must be one of \['dict', 'long'\]"):
        pr.pp.rank_genes_limma(study, "ct", "donor", result_format=bad)


# --------------------------------------------------------------------------------------------
# converters
# --------------------------------------------------------------------------------------------
def test_converters_match_hand_built_dicts_and_invert(long_tables):
    de_ova, de_ava = long_tables
    de_res_ova, de_res_ava = pr.pp.de_tables_to_dicts(de_ova, de_ava)
    assert_ova_dicts_equal(de_res_ova, hand_ova_dict(de_ova))
    assert_ava_dicts_equal(de_res_ava, hand_ava_dict(de_ava))
    back_ova, back_ava = pr.pp.de_tables_from_dicts(de_res_ova, de_res_ava)
    pd.testing.assert_frame_equal(back_ova, de_ova)
    pd.testing.assert_frame_equal(back_ava, de_ava)
    # from hand-built dicts (index without a name, object dtype) to the same long tables
    back_ova, back_ava = pr.pp.de_tables_from_dicts(hand_ova_dict(de_ova), hand_ava_dict(de_ava))
    pd.testing.assert_frame_equal(back_ova, de_ova)
    pd.testing.assert_frame_equal(back_ava, de_ava)


def test_from_dicts_order_columns_and_extra_columns():
    """Cluster order = dict order; columns in any order; extra columns dropped; pairs
    missing from the AVA dict are simply absent."""
    genes = ["g2", "g1"]

    def frame(offset, columns=VALUES):
        values = {c: np.arange(2.0) + offset + i / 10 for i, c in enumerate(VALUES)}
        values["note"] = ["x", "y"]
        return pd.DataFrame(values, index=genes)[columns]

    ova = {"z": frame(0, [*VALUES[::-1], "note"]), "a": frame(1)}
    ava = {"a": {"z": frame(2)}}
    de_ova, de_ava = pr.pp.de_tables_from_dicts(ova, ava)
    assert list(de_ova.columns) == ["cluster", "gene", *VALUES]
    assert list(de_ova["cluster"].cat.categories) == ["z", "a"]
    assert de_ova["cluster"].astype(str).tolist() == ["z", "z", "a", "a"]
    assert de_ova["gene"].astype(str).tolist() == genes * 2
    np.testing.assert_array_equal(de_ova["auroc"], [0.3, 1.3, 1.3, 2.3])
    assert list(de_ava["versus"].cat.categories) == ["z", "a"]
    assert de_ava[["cluster", "versus"]].astype(str).drop_duplicates().values.tolist() == [
        ["a", "z"]
    ]
    np.testing.assert_array_equal(de_ava["logFC"], [2.0, 3.0])


def test_h5ad_round_trip_of_the_dicts(tmp_path, long_tables):
    """What read_h5ad gives back (sorted keys, object index, no index name) converts to the
    same long tables, up to the cluster order, which h5ad does not keep."""
    de_ova, de_ava = long_tables
    adata = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    adata.uns["de_res_ova"] = hand_ova_dict(de_ova)
    adata.uns["de_res_ava"] = hand_ava_dict(de_ava)
    adata.write_h5ad(tmp_path / "dicts.h5ad")
    back = ad.read_h5ad(tmp_path / "dicts.h5ad")
    assert sorted(back.uns["de_res_ova"]) == sorted(NAMES)
    got_ova, got_ava = pr.pp.de_tables_from_dicts(back.uns["de_res_ova"], back.uns["de_res_ava"])
    order = list(got_ova["cluster"].cat.categories)
    assert order == list(back.uns["de_res_ova"])  # dict order
    expected_ova = de_ova.assign(cluster=de_ova["cluster"].cat.reorder_categories(order))
    expected_ova = expected_ova.sort_values("cluster", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(got_ova, expected_ova)
    expected_ava = de_ava.assign(
        cluster=de_ava["cluster"].cat.reorder_categories(order),
        versus=de_ava["versus"].cat.reorder_categories(order),
    )
    expected_ava = expected_ava.sort_values(["cluster", "versus"], kind="stable")
    pd.testing.assert_frame_equal(got_ava, expected_ava.reset_index(drop=True))


def test_slash_in_cluster_names_is_a_clear_error_after_h5ad(tmp_path):
    """h5ad cannot hold a dict key with '/': anndata (0.12) writes 'CD4+/CD8+' as a group
    'CD4+' holding 'CD8+', so the dicts come back nested. The conversion says so and points
    to the long tables, which store any name."""
    de = pd.DataFrame({c: [1.0] for c in VALUES}, index=["g1"])
    adata = ad.AnnData(np.zeros((1, 1), dtype=np.float32))
    adata.uns["de_res_ova"] = {"CD4+/CD8+": de, "B": de}
    adata.uns["de_res_ava"] = {"CD4+/CD8+": {"B": de}, "B": {"CD4+/CD8+": de}}
    # in memory the names work
    de_ova, de_ava = pr.pp.de_tables_from_dicts(adata.uns["de_res_ova"], adata.uns["de_res_ava"])
    assert list(de_ova["cluster"].cat.categories) == ["CD4+/CD8+", "B"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # anndata: '/' will be disallowed
        adata.write_h5ad(tmp_path / "slash.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nested groups carry no encoding metadata
        back = ad.read_h5ad(tmp_path / "slash.h5ad")
    hint = r"cluster name with '/' \(e.g. 'CD4\+/CD8\+'\).*pairot's long tables"
    with pytest.raises(TypeError, match=hint):
        pr.pp.de_tables_from_dicts(back.uns["de_res_ova"], {})
    with pytest.raises(TypeError, match=hint):
        pr.pp.filter_genes_ava(back.uns["de_res_ava"])
    # the long tables keep the name through h5ad
    long = ad.AnnData(np.zeros((1, 1), dtype=np.float32))
    long.uns["pairot"] = {"de_ova": de_ova, "de_ava": de_ava}
    long.write_h5ad(tmp_path / "long.h5ad")
    back = ad.read_h5ad(tmp_path / "long.h5ad").uns["pairot"]
    assert list(back["de_ova"]["cluster"].cat.categories) == ["CD4+/CD8+", "B"]
    pd.testing.assert_frame_equal(back["de_ava"], de_ava)


def _frame(genes=("g1", "g2"), columns=VALUES):
    return pd.DataFrame({c: np.ones(len(genes)) for c in columns}, index=list(genes))


@pytest.mark.parametrize(
    ("ova", "ava", "error", "match"),
    [
        ([1], {}, TypeError, "de_res_ova must be a dict"),
        ({"a": _frame()}, [1], TypeError, "de_res_ava must be a dict"),
        ({"a": np.ones(2)}, {}, TypeError, r"de_res_ova\['a'\] must be a pandas DataFrame"),
        ({1: _frame()}, {}, TypeError, r"has the key 1 \(int\).*str\(k\)"),
        (
            {"a": _frame(columns=VALUES[:3])},
            {},
            ValueError,
            r"de_res_ova\['a'\] is missing the column\(s\) \['auroc'\]",
        ),
        (
            {"a": _frame().astype({"logFC": str})},
            {},
            TypeError,
            r"de_res_ova\['a'\]\['logFC'\] must be numeric",
        ),
        ({"a": _frame(("g1", "g1"))}, {}, ValueError, "lists the gene 'g1' more than once"),
        (
            {"a": _frame().reset_index(drop=True)},
            {},
            ValueError,
            r"indexed by gene names \(strings\).*set_index\('gene'\)",
        ),
        (
            {"a": _frame(), "b": _frame()},
            {"a": {"q": _frame()}},
            ValueError,
            r"de_res_ava\['a'\] has the cluster\(s\) \['q'\] that are not among",
        ),
        (
            {"a": _frame(), "b": _frame()},
            {"q": {"a": _frame()}},
            ValueError,
            r"de_res_ava has the cluster\(s\) \['q'\]",
        ),
        (
            {"a": _frame()},
            {"a": {"a": _frame()}},
            ValueError,
            r"de_res_ava\['a'\] has an entry for 'a' itself",
        ),
        ({"a": _frame()}, {"a": _frame()}, TypeError, "looks like upstream's one-vs-all"),
        ({"a": {"b": _frame()}}, {}, TypeError, "looks like upstream's all-vs-all"),
        (
            {"a": _frame(), "b": _frame()},
            {"a": {"b": _frame(("g1", "g1"))}},
            ValueError,
            r"de_res_ava\['a'\]\['b'\] lists the gene 'g1'",
        ),
    ],
)
def test_malformed_dicts_are_clear_errors(ova, ava, error, match):
    with pytest.raises(error, match=match):
        pr.pp.de_tables_from_dicts(ova, ava)


def test_malformed_long_tables_are_clear_errors(long_tables):
    de_ova, de_ava = long_tables
    with pytest.raises(ValueError, match=r"de_ova is missing the column\(s\) \['auroc'\]"):
        pr.pp.de_tables_to_dicts(de_ova.drop(columns="auroc"), de_ava)
    with pytest.raises(TypeError, match="de_ava must be a pandas DataFrame"):
        pr.pp.de_tables_to_dicts(de_ova, {})
    doubled = pd.concat([de_ova, de_ova.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="several rows for cluster 'B cell' and gene 'G000'"):
        pr.pp.de_tables_to_dicts(doubled, de_ava)
    itself = de_ava.copy()
    itself.loc[0, "versus"] = itself.loc[0, "cluster"]
    with pytest.raises(ValueError, match="versus itself"):
        pr.pp.de_tables_to_dicts(de_ova, itself)
    other = de_ava.assign(cluster=de_ava["cluster"].cat.rename_categories({"B cell": "Q"}))
    with pytest.raises(ValueError, match=r"de_ava has the cluster\(s\) \['Q'\] that de_ova"):
        pr.pp.de_tables_to_dicts(de_ova, other)


# --------------------------------------------------------------------------------------------
# filter_genes_ova / filter_genes_ava on dicts
# --------------------------------------------------------------------------------------------
def naive_filter_dict(frames, *, logfc=1.0, auroc=0.6, adj=0.05, gene_filtering=True):
    """Per DataFrame: the passing rows sorted by logFC descending (Python's stable sort)."""
    out = {}
    for key, frame in frames.items():
        rows = []
        for position, (gene, row) in enumerate(frame.iterrows()):
            values = (row["logFC"], row["adj.P.Val"], row["auroc"])
            if any(np.isnan(v) for v in values):
                continue
            if row["logFC"] < logfc or row["adj.P.Val"] > adj or row["auroc"] < auroc:
                continue
            if gene_filtering and pr.pp.flag_uninformative_genes([gene])[0]:
                continue
            rows.append((position, row["logFC"]))
        rows.sort(key=lambda r: -r[1])
        out[key] = frame.iloc[[p for p, _ in rows]]
    return out


def _dicts_with_extras(seed):
    ova, ava, categories = random_tables(seed)
    ova_dict = hand_ova_dict(ova, [*VALUES, "row_id"])
    ava_dict = hand_ava_dict(ava, [*VALUES, "row_id"])
    for frame in itertools.chain(ova_dict.values(), *(d.values() for d in ava_dict.values())):
        frame.index.name = "symbol"
        frame["row_id"] = frame["row_id"].astype(np.int64)
        frame["note"] = "kept"
    return ova, ava, ova_dict, ava_dict, categories


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "thresholds",
    [
        {},
        {"logfc": 0.5, "auroc": 0.5, "adj": 0.2, "gene_filtering": False},
        {"logfc": -np.inf, "auroc": 0.0, "adj": 1.0, "gene_filtering": True},
    ],
)
def test_filter_dicts_match_naive_loop_and_long_path(seed, thresholds):
    ova, ava, ova_dict, ava_dict, categories = _dicts_with_extras(seed)
    args = (
        thresholds.get("logfc", 1.0),
        thresholds.get("auroc", 0.6),
        thresholds.get("adj", 0.05),
        thresholds.get("gene_filtering", True),
    )  # upstream's positional order: logFC, AUROC, adjusted p-value, gene filtering
    before = {k: v.copy(deep=True) for k, v in ova_dict.items()}
    got_ova = pr.pp.filter_genes_ova(ova_dict, *args)
    got_ava = pr.pp.filter_genes_ava(ava_dict, *args)
    for key in ova_dict:  # the caller's dict untouched
        pd.testing.assert_frame_equal(ova_dict[key], before[key])
    assert got_ova is not ova_dict

    expected_ova = naive_filter_dict(ova_dict, **thresholds)
    assert list(got_ova) == list(ova_dict)
    for key, frame in expected_ova.items():
        pd.testing.assert_frame_equal(got_ova[key], frame)  # columns, dtypes, index name
    assert list(got_ava) == list(ava_dict)
    for c1, inner in ava_dict.items():
        assert list(got_ava[c1]) == list(inner)
        for c2, frame in naive_filter_dict(inner, **thresholds).items():
            pd.testing.assert_frame_equal(got_ava[c1][c2], frame)

    # the long path: the same genes in the same order
    kwargs = dict(zip(["logfc_threshold", "auroc_threshold", "adj_p_val_threshold"], args[:3]))
    long_ova = pr.pp.filter_genes_ova(ova, **kwargs, gene_filtering=args[3])
    long_ava = pr.pp.filter_genes_ava(ava, **kwargs, gene_filtering=args[3])
    for key in categories:
        rows = long_ova[long_ova["cluster"] == key]
        assert got_ova[key]["row_id"].tolist() == rows["row_id"].tolist()
        for c2 in categories:
            if c2 != key:
                rows = long_ava[(long_ava["cluster"] == key) & (long_ava["versus"] == c2)]
                assert got_ava[key][c2]["row_id"].tolist() == rows["row_id"].tolist()
    # a cluster without passing genes keeps an empty DataFrame with the same columns
    if not thresholds:
        last = got_ova[categories[-1]]
        assert len(last) == 0
        assert list(last.columns) == list(ova_dict[categories[-1]].columns)


def test_filter_on_rank_genes_limma_dicts_equals_long(study, long_tables):
    de_res_ova, de_res_ava = pr.pp.rank_genes_limma(study, "ct", "donor")
    got = pr.pp.filter_genes_ova(de_res_ova)
    long = pr.pp.filter_genes_ova(long_tables[0])
    assert_ova_dicts_equal(got, hand_ova_dict(long))
    assert all(len(frame) for frame in got.values())  # planted markers pass
    got = pr.pp.filter_genes_ava(de_res_ava)
    long = pr.pp.filter_genes_ava(long_tables[1])
    assert_ava_dicts_equal(got, hand_ava_dict(long))


def test_threshold_spellings():
    ova, ava, ova_dict, _, _ = _dicts_with_extras(0)
    upstream = pr.pp.filter_genes_ova(ova_dict, 0.5, 0.7, 0.2)
    pairot = pr.pp.filter_genes_ova(
        ova_dict, logfc_threshold=0.5, auroc_threshold=0.7, adj_p_val_threshold=0.2
    )
    keywords = pr.pp.filter_genes_ova(
        ova_dict, logfc_threshold=0.5, aucroc_threshold=0.7, adj_pval_threshold=0.2
    )
    for key in ova_dict:
        pd.testing.assert_frame_equal(upstream[key], pairot[key])
        pd.testing.assert_frame_equal(upstream[key], keywords[key])
    strict = pr.pp.filter_genes_ova(ova_dict, auroc_threshold=0.95)
    assert sum(map(len, strict.values())) < sum(map(len, upstream.values()))
    for function, table in ((pr.pp.filter_genes_ova, ova), (pr.pp.filter_genes_ava, ava)):
        with pytest.raises(TypeError, match="aucroc_threshold or its alias auroc_threshold"):
            function(table, aucroc_threshold=0.6, auroc_threshold=0.7)
        with pytest.raises(TypeError, match="adj_pval_threshold or its alias adj_p_val"):
            function(table, 1.0, 0.6, 0.01, adj_p_val_threshold=0.05)
        with pytest.raises(ValueError, match=r"aucroc_threshold must lie in \[0.0, 1.0\]"):
            function(table, 1.0, 1.5)
        with pytest.raises(ValueError, match=r"auroc_threshold must lie in \[0.0, 1.0\]"):
            function(table, auroc_threshold=1.5)
        with pytest.raises(ValueError, match=r"adj_pval_threshold must lie in"):
            function(table, adj_pval_threshold=-1)
    with pytest.raises(TypeError, match="overlap_threshold or its alias"):
        pr.pp.select_genes(OVA_HAND, AVA_HAND, overlap_threshold=0.3, overlap_threshold_ava=0.3)
    with pytest.raises(TypeError, match="overlap_n_genes or its alias"):
        pr.pp.similar_clusters(OVA_HAND, overlap_n_genes=3, overlap_n_genes_ava=3)


# --------------------------------------------------------------------------------------------
# select_genes on dicts
# --------------------------------------------------------------------------------------------
def naive_select_full(ova_rows, ava_rows, categories, *, n_max, remove_duplicates, **kwargs):
    """naive_select plus upstream's n_genes_max and remove_duplicated_genes=False."""
    if remove_duplicates:
        lists = naive_select(ova_rows, ava_rows, categories, **kwargs)
    else:
        # the same concatenation and stable sort, without dropping repeated genes
        lists = []
        for a in categories:
            candidates = naive_candidates(ova_rows, ava_rows, categories, a, **kwargs)
            lists += [(a, i, g, lfc, ref) for i, (g, lfc, ref) in enumerate(candidates)]
    if n_max is not None:
        lists = [row for row in lists if row[1] < n_max]
    return lists


def naive_candidates(ova_rows, ava_rows, categories, a, *, n_ova, n_ava, threshold, n_overlap):
    def markers(rows):
        return sorted([(r["gene"], r["logFC"]) for r in rows], key=lambda m: -m[1])

    def cut(values, n):
        return values if n is None else values[:n]

    ova = {c: markers([r for r in ova_rows if r["cluster"] == c]) for c in categories}
    top = {c: {g for g, _ in cut(ova[c], n_overlap)} for c in categories}
    candidates = [(g, lfc, "all") for g, lfc in cut(ova[a], n_ova)]
    for b in categories:
        ta, tb = top[a], top[b]
        overlap = len(ta & tb) / len(ta | tb) * len(tb) / len(ta) if ta else 0.0
        if b == a or overlap < threshold:
            continue
        pair = [r for r in ava_rows if r["cluster"] == a and r["versus"] == b]
        candidates += [(g, lfc, b) for g, lfc in cut(markers(pair), n_ava)]
    return sorted(candidates, key=lambda m: -m[1])


def _rows(frames, **labels):
    return [
        {**labels, "gene": str(gene), "logFC": float(lfc)}
        for gene, lfc in zip(frames.index, frames["logFC"], strict=True)
    ]


@pytest.mark.parametrize("seed", range(4))
def test_select_genes_dicts_match_naive_and_long(seed):
    rng = np.random.default_rng(seed)
    ova, ava, ova_dict, ava_dict, categories = _dicts_with_extras(seed)
    thresholds = (0.5, 0.5, 0.2, True)
    ova_f = pr.pp.filter_genes_ova(ova_dict, *thresholds)
    ava_f = pr.pp.filter_genes_ava(ava_dict, *thresholds)
    long_ova = pr.pp.filter_genes_ova(ova, *thresholds)
    long_ava = pr.pp.filter_genes_ava(ava, *thresholds)
    ova_rows = [r for c, f in ova_f.items() for r in _rows(f, cluster=c)]
    ava_rows = [
        r
        for c1, inner in ava_f.items()
        for c2, f in inner.items()
        for r in _rows(f, cluster=c1, versus=c2)
    ]
    n_from_ava = 0
    for _ in range(12):
        n_ova, n_ava, n_max = (rng.choice([None, 0, 1, 3, 10]) for _ in range(3))
        threshold = float(rng.choice([0.0, 0.3, 0.6]))
        n_overlap = rng.choice([None, 2, 10])
        remove = bool(rng.integers(2))
        args = (n_ova, n_ava, n_max, threshold, n_overlap, remove)  # upstream's order
        got = pr.pp.select_genes(ova_f, ava_f, *args)
        expected = naive_select_full(
            ova_rows,
            ava_rows,
            categories,
            n_max=n_max,
            remove_duplicates=remove,
            n_ova=n_ova,
            n_ava=n_ava,
            threshold=threshold,
            n_overlap=n_overlap,
        )
        assert list(got) == categories
        flat = [
            (c, i, g, lfc, ref)
            for c, frame in got.items()
            for i, (g, lfc, ref) in enumerate(
                zip(frame.index, frame["logFC"], frame["reference"], strict=True)
            )
        ]
        assert flat == expected, args
        for cluster, frame in got.items():
            # every column of the source frames, then reference (upstream keeps them all)
            assert list(frame.columns) == [*VALUES, "row_id", "note", "reference"]
            assert frame["row_id"].dtype == np.int64
            assert frame.index.name == "gene"
            if remove:
                assert frame.index.is_unique
            for gene, row in frame.iterrows():
                ref = row["reference"]
                source = ova_f[cluster] if ref == "all" else ava_f[cluster][ref]
                assert row.drop("reference").tolist() == source.loc[gene].tolist()
        # the long path holds the same lists, with a 0-based rank
        long = pr.pp.select_genes(long_ova, long_ava, *args)
        assert list(long.columns) == ["cluster", "rank", "gene", "logFC", "reference"]
        assert [tuple(r) for r in long.astype({"cluster": str}).itertuples(index=False)] == flat
        n_from_ava += sum(int((f["reference"] != "all").sum()) for f in got.values())
    assert n_from_ava > 0


def test_select_genes_defaults_and_hand_example():
    def frame(rows):
        return pd.DataFrame(
            {"logFC": rows["logFC"].to_numpy(dtype=float)},
            index=pd.Index(rows["gene"].astype(str).tolist(), dtype=object),
        )

    ova = {c: frame(OVA_HAND[OVA_HAND["cluster"] == c]) for c in "ABCDE"}
    ava = {c1: {} for c1 in "ABCDE"}
    for (c1, c2), rows in AVA_HAND.groupby(["cluster", "versus"], observed=True, sort=False):
        ava[c1][c2] = frame(rows)
    got = pr.pp.select_genes(ova, ava)  # defaults 10, 3, None, 0.3, 10, True
    assert got["B"].index.tolist() == ["gB2", "g1", "g2", "gB1"]
    assert got["B"]["reference"].tolist() == ["A", "all", "all", "A"]
    assert got["A"]["reference"].tolist() == ["all"] * 4 + ["E"]
    assert len(got["D"]) == 0 and list(got["D"].columns) == ["logFC", "reference"]
    capped = pr.pp.select_genes(ova, ava, n_genes_max=2)
    assert {c: f.index.tolist() for c, f in capped.items()} == {
        c: f.index.tolist()[:2] for c, f in got.items()
    }
    # remove_duplicated_genes=False: g1 is an OVA marker of B and one of B versus A
    kept = pr.pp.select_genes(ova, ava, remove_duplicated_genes=False)
    assert kept["B"].index.tolist() == ["gB2", "g1", "g2", "gB1", "g1"]
    assert kept["B"]["reference"].tolist() == ["A", "all", "all", "A", "A"]
    similar = pr.pp.similar_clusters(ova, overlap_threshold=0.5)
    expected = pr.pp.similar_clusters(OVA_HAND, overlap_threshold_ava=0.5)
    pd.testing.assert_frame_equal(similar, expected)


def _de_frame(rows):
    """An upstream DE DataFrame: rows (gene, logFC, P.Value, adj.P.Val, auroc), gene index."""
    return pd.DataFrame(
        [r[1:] for r in rows],
        columns=VALUES,
        index=pd.Index([r[0] for r in rows], dtype=object),
        dtype=np.float64,
    )


# hand-made filtered dicts (sorted by logFC), each row's p-values and AUROC distinct so the
# source of every output row can be told
OVA_FOUR = {
    "T": _de_frame(
        [
            ("g1", 3.0, 1e-6, 2e-6, 0.91),
            ("g2", 2.5, 2e-6, 3e-6, 0.82),
            ("g3", 2.0, 3e-6, 4e-6, 0.73),
            ("g4", 1.5, 4e-6, 5e-6, 0.64),
        ]
    ),
    "NK": _de_frame(
        [
            ("g1", 2.8, 1e-5, 2e-5, 0.95),
            ("g2", 2.2, 2e-5, 3e-5, 0.85),
            ("n1", 2.1, 3e-5, 4e-5, 0.75),
        ]
    ),
    "B": _de_frame([("b1", 4.0, 1e-4, 2e-4, 0.99), ("b2", 3.0, 2e-4, 3e-4, 0.88)]),
    "pDC": _de_frame([]),
}
AVA_FOUR = {
    "T": {
        "NK": _de_frame(
            [
                ("t1", 2.6, 1e-3, 2e-3, 0.71),
                ("g3", 1.9, 2e-3, 3e-3, 0.72),
                ("t2", 1.2, 3e-3, 4e-3, 0.73),
                ("t3", 1.1, 4e-3, 5e-3, 0.74),
            ]
        ),
        "B": _de_frame([("tb", 9.0, 5e-3, 6e-3, 0.99)]),
        "pDC": _de_frame([]),
    },
    "NK": {
        "T": _de_frame([("n1", 2.1, 1e-2, 2e-2, 0.61), ("n2", 1.8, 2e-2, 3e-2, 0.62)]),
        "B": _de_frame([]),
        "pDC": _de_frame([("np", 7.0, 3e-2, 4e-2, 0.63)]),
    },
    "B": {"T": _de_frame([]), "NK": _de_frame([]), "pDC": _de_frame([])},
    "pDC": {"T": _de_frame([]), "NK": _de_frame([]), "B": _de_frame([])},
}


def naive_upstream_select(ova, ava, n_ova, n_ava, threshold=0.3, n_overlap=10):
    """Upstream's loop in plain pandas: concat the head(n) frames, stable sort, drop repeats."""
    top = {c: set(f.head(n_overlap).index) for c, f in ova.items()}
    out = {}
    for a, frame in ova.items():
        parts = [frame.head(n_ova).assign(reference="all")]
        for b in ova:
            ta, tb = top[a], top[b]
            overlap = len(ta & tb) / len(ta | tb) * len(tb) / len(ta) if ta else 0.0
            if b != a and overlap >= threshold:
                parts.append(ava[a][b].head(n_ava).assign(reference=b))
        res = pd.concat(parts).sort_values("logFC", ascending=False, kind="stable")
        res = res[~res.index.duplicated(keep="first")]
        res.index.name = "gene"
        out[a] = res
    return out


@pytest.mark.parametrize(("n_ova", "n_ava"), [(10, 3), (2, 1), (3, 10)])
def test_select_genes_dicts_keep_every_de_column(n_ova, n_ava):
    before = {c: f.copy(deep=True) for c, f in OVA_FOUR.items()}
    got = pr.pp.select_genes(OVA_FOUR, AVA_FOUR, n_ova, n_ava)
    expected = naive_upstream_select(OVA_FOUR, AVA_FOUR, n_ova, n_ava)
    assert list(got) == list(expected) == ["T", "NK", "B", "pDC"]
    for cluster, frame in expected.items():
        assert list(got[cluster].columns) == [*VALUES, "reference"]
        pd.testing.assert_frame_equal(got[cluster], frame, check_exact=True)
    for cluster, frame in OVA_FOUR.items():  # the caller's frames untouched
        pd.testing.assert_frame_equal(frame, before[cluster])


def test_select_genes_dicts_carry_the_source_rows_by_hand():
    got = pr.pp.select_genes(OVA_FOUR, AVA_FOUR)
    # o(T, NK) = 2/5 * 3/4 = 0.3 and o(NK, T) = 2/5 * 4/3: similar both ways; B, pDC alone
    t = got["T"]
    assert t.index.tolist() == ["g1", "t1", "g2", "g3", "g4", "t2"]
    assert t["reference"].tolist() == ["all", "NK", "all", "all", "all", "NK"]
    # g3 is a one-vs-all marker (logFC 2.0) and one versus NK (1.9): the OVA row is kept
    assert t.loc["g3"].tolist() == [2.0, 3e-6, 4e-6, 0.73, "all"]
    assert t.loc["t1"].tolist() == [2.6, 1e-3, 2e-3, 0.71, "NK"]
    nk = got["NK"]
    # n1 ties at logFC 2.1 in the OVA and the AVA frame: concatenation order, the OVA row
    assert nk.index.tolist() == ["g1", "g2", "n1", "n2"]
    assert nk.loc["n1"].tolist() == [2.1, 3e-5, 4e-5, 0.75, "all"]
    assert nk.loc["n2"].tolist() == [1.8, 2e-2, 3e-2, 0.62, "T"]
    assert got["B"]["P.Value"].tolist() == [1e-4, 2e-4]
    assert got["pDC"].empty and list(got["pDC"].columns) == [*VALUES, "reference"]
    # extra columns, in order of first appearance over all frames; missing ones are NaN
    ova = {c: f.assign(extra=1) if c == "NK" else f for c, f in OVA_FOUR.items()}
    ava = {c1: dict(inner) for c1, inner in AVA_FOUR.items()}
    ava["T"]["NK"] = AVA_FOUR["T"]["NK"].assign(reference="x", late="y")
    mixed = pr.pp.select_genes(ova, ava)
    for frame in mixed.values():
        assert list(frame.columns) == [*VALUES, "extra", "late", "reference"]
    np.testing.assert_array_equal(mixed["NK"]["extra"], [1, 1, 1, np.nan])  # n2: from NK vs T
    assert mixed["T"].loc["t1", "late"] == "y" and mixed["T"].loc["t1", "reference"] == "NK"
    assert np.isnan(mixed["T"].loc["g1", "extra"]) and pd.isna(mixed["T"].loc["g1", "late"])


def test_select_genes_forms_must_match():
    ova = {"A": pd.DataFrame({"logFC": [2.0]}, index=["g"])}
    with pytest.raises(TypeError, match="must be in the same form"):
        pr.pp.select_genes(ova, AVA_HAND)
    with pytest.raises(TypeError, match="de_res_ava must be upstream pairOT's"):
        pr.pp.select_genes(ova, [1])
    with pytest.raises(ValueError, match=r"de_res_ava has the cluster\(s\) \['B'\]"):
        pr.pp.select_genes(ova, {"B": {"A": ova["A"]}})
    with pytest.raises(TypeError, match="n_genes_max must be a non-negative integer"):
        pr.pp.select_genes(ova, {}, n_genes_max=2.5)
    with pytest.raises(TypeError, match="remove_duplicated_genes must be True or False"):
        pr.pp.select_genes(ova, {}, remove_duplicated_genes="yes")
