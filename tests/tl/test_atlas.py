"""``AtlasMap``: many studies fitted pair by pair with ``DatasetMap`` and harmonized.

On two studies it equals ``DatasetMap`` (mapping, distance, matches, no-match flags,
exactly); the reverse direction is the same plan read from the other side, and equals a
reversed fit when the cost is symmetric; the harmonized rows are known on constructed
atlases (a split, a merge, a type of one study, three studies with renamed labels, two
clusters of one study that are one type); a second solve with the same folder fits nothing;
bad input gets one clear error; the caller's AnnData is never modified.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.tl._atlas import _store

KW = {"n_top_genes": 80, "n_samples_auroc": 60, "n_samples_hvg_selection": 400}
GEOM = {"batch_size": 256}


@pytest.fixture(scope="module")
def sim():
    """Three studies of one program of 4 types (2 lineages x 2): A and C share the query's
    donors 1-3 and 4-6, B is the reference."""
    q, r = pr.datasets.simulate_pair(
        n_cells_query=1000,
        n_cells_reference=500,
        n_genes=300,
        n_cell_types=4,
        n_samples_query=6,
        random_state=3,
    )
    first = q.obs["sample_id"].astype(str).isin([f"query_donor{i}" for i in (1, 2, 3)]).to_numpy()
    return {"A": q[first].copy(), "B": r.copy(), "C": q[~first].copy()}


def relabel(adata, mapping, drop=()):
    out = adata[~adata.obs["cell_type"].isin(list(drop)).to_numpy()].copy()
    labels = out.obs["cell_type"].astype(str).map(lambda c: mapping.get(c, c))
    out.obs["cell_type"] = pd.Categorical(labels)
    return out


def prep(studies):
    return pr.pp.preprocess_studies(studies, "cell_type", "sample_id", **KW)


@pytest.fixture(scope="module")
def pair(sim):
    return prep({"A": sim["A"], "B": sim["B"]})


def snapshot(adata):
    return (adata.X.copy(), adata.obs.copy(), sorted(adata.uns["pairot"]), adata.n_obs)


def assert_unchanged(adata, snap):
    x, obs, keys, n = snap
    assert adata.n_obs == n and (adata.X != x).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert sorted(adata.uns["pairot"]) == keys


def counting(monkeypatch):
    calls = []
    original = pr.tl.DatasetMap.solve

    def solve(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pr.tl.DatasetMap, "solve", solve)
    return calls


#: the atlas's documented defaults, written out (docs/method.md#many-studies-atlas)
ATLAS_GEOM = {"label_distance_mode": "robust"}
ATLAS_PROBLEM = {"marginals_distribution": "uniform", "tau_a": 0.95, "tau_b": 0.95}
#: DatasetMap's (the published method's) defaults, written out
PUBLISHED_GEOM = {"label_distance_mode": "pairot"}
PUBLISHED_PROBLEM = {"marginals_distribution": "balanced", "tau_a": 1.0, "tau_b": 1.0}


@pytest.mark.parametrize(
    ("atlas_options", "geom", "problem"),
    [
        ({}, ATLAS_GEOM, ATLAS_PROBLEM),  # the atlas's defaults are those documented
        (  # the published method per pair, when asked for
            {"init_geom": PUBLISHED_GEOM, "init_problem": PUBLISHED_PROBLEM},
            PUBLISHED_GEOM,
            PUBLISHED_PROBLEM,
        ),
    ],
    ids=["atlas-defaults", "published"],
)
def test_two_studies_equal_dataset_map(pair, atlas_options, geom, problem):
    snaps = {name: snapshot(adata) for name, adata in pair.items()}
    options = {**atlas_options, "init_geom": {**GEOM, **atlas_options.get("init_geom", {})}}
    atlas = pr.tl.AtlasMap(pair, **options).solve(progress=False)
    dm = pr.tl.DatasetMap(pair["A"], pair["B"])
    dm.init_geom(**GEOM, **geom)
    dm.init_problem(**problem)
    dm.solve(progress=False)
    mappings = dm.compute_mapping(None)
    distance = dm.compute_distance()
    pd.testing.assert_frame_equal(atlas.mapping("A", "B"), mappings["mean"], check_exact=True)
    pd.testing.assert_frame_equal(
        atlas.mapping("A", "B", "transported_mass"), mappings["transported_mass"], check_exact=True
    )
    pd.testing.assert_frame_equal(atlas.distance("A", "B"), distance, check_exact=True)
    expected = pr.tl.DatasetMap.select_similar_clusters(mappings["mean"], distance, output="table")
    pd.testing.assert_frame_equal(atlas.matches("A", "B"), expected, check_exact=True)
    unmatched = dm.unmatched_clusters()
    got = atlas.unmatched("A", "B")
    assert list(got.index) == list(unmatched.index)
    for column in ("unmatched", "score", "retained", "mapping_ratio", "reason"):
        np.testing.assert_array_equal(got[column].to_numpy(), unmatched[column].to_numpy())
    # the reverse direction is the same plan read from B: mean <-> transported_mass, transposed
    reverse = atlas.mapping("B", "A")
    np.testing.assert_array_equal(reverse.to_numpy(), mappings["transported_mass"].to_numpy().T)
    assert list(reverse.index) == dm.reference_clusters
    np.testing.assert_array_equal(atlas.distance("B", "A").to_numpy(), distance.to_numpy().T)
    assert atlas.pairs == [("A", "B")] and atlas.solve_log == {("A", "B"): "fitted"}
    for name, adata in pair.items():
        assert_unchanged(adata, snaps[name])
    with pytest.raises(KeyError, match="'Z' is not a study of this atlas"):
        atlas.mapping("A", "Z")


def mirrored_rule(pair, tau=0.95, min_retained=0.6, max_ratio=0.7):
    """The reference side's no-match rule computed by hand from two independent fits (the
    computation AtlasMap's _pair.py held before it moved into DatasetMap): the fit, and a
    fresh fit with tau_b relaxed; retained = b-cluster's share of the plan mass over its
    share of b; mapping_ratio = its best reverse "mean" (the forward transported_mass,
    transposed) over the median best of the other b-clusters."""
    fits = []
    for tau_b in (1.0, tau):
        dm = pr.tl.DatasetMap(pair["A"], pair["B"])
        dm.init_geom(**GEOM)
        dm.init_problem(tau_b=tau_b)
        dm.solve(progress=False)
        fits.append(dm)
    dm, relaxed = fits
    labels_a = pd.Categorical(dm.query_labels, categories=dm.query_clusters).codes
    labels_b = pd.Categorical(dm.reference_labels, categories=dm.reference_clusters).codes
    mass_a = np.bincount(labels_a, weights=dm.ot_prob.a)
    mass_b = np.bincount(labels_b, weights=dm.ot_prob.b)
    moved = (mass_a[:, None] * relaxed.compute_mapping("transported_mass").to_numpy()).sum(0)
    retained = moved / moved.sum() / mass_b
    reverse = dm.compute_mapping("transported_mass").to_numpy().T
    best = reverse.max(axis=1)
    typical = np.array([np.median(np.delete(best, k)) for k in range(best.size)])
    ratio = best / typical
    return pd.DataFrame(
        {
            "retained": retained,
            "mapping_ratio": ratio,
            "score": np.maximum(retained / min_retained, ratio / max_ratio),
            "best_mapping": best,
            "best_query": np.asarray(dm.query_clusters)[reverse.argmax(axis=1)],
        },
        index=dm.reference_clusters,
    )


def test_reference_side_no_match_rule_is_the_mirrored_rule(pair):
    dm = pr.tl.DatasetMap(pair["A"], pair["B"])
    dm.init_geom(**GEOM)
    dm.init_problem()
    dm.solve(progress=False)
    query = dm.unmatched_clusters()
    table = dm.unmatched_clusters("reference")
    assert table.index.name == "reference" and list(table.index) == dm.reference_clusters
    assert "best_query" in table.columns and "closest_query" in table.columns
    expected = mirrored_rule(pair)
    for column in ("retained", "mapping_ratio", "score", "best_mapping"):
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-6, err_msg=column)
    assert list(table["best_query"]) == list(expected["best_query"])
    np.testing.assert_array_equal(table["unmatched"], expected["score"] < 1)
    assert table["reason"].str.contains("reference marginal is relaxed").all()
    # the query side is unchanged by the reference side's call (the object is left alone)
    pd.testing.assert_frame_equal(dm.unmatched_clusters(), query, check_exact=True)
    # the atlas reads both sides from DatasetMap's one rule
    atlas = pr.tl.AtlasMap(
        pair, init_geom={**GEOM, **PUBLISHED_GEOM}, init_problem=PUBLISHED_PROBLEM
    ).solve(progress=False)
    got = atlas.unmatched("B", "A")
    for column in ("unmatched", "score", "retained", "mapping_ratio", "best_mapping", "reason"):
        np.testing.assert_array_equal(got[column].to_numpy(), table[column].to_numpy())
    assert list(got["best_match"]) == list(table["best_query"])
    with pytest.raises(ValueError, match="side must be 'query' or 'reference', got 'both'"):
        dm.unmatched_clusters("both")


def test_reverse_reading_equals_the_reversed_fit_when_the_cost_is_symmetric(pair):
    """With the robust label distance (a correlation, symmetric) the cost of (B, A) is the
    transpose of that of (A, B): the reverse reading is then the reversed fit's answer. The
    distance of a cluster pair whose plan mass is negligible (entries near exp(-30) in
    float32) is an average over round-off-sized weights and agrees only to about 1e-2."""
    geom = {**GEOM, "label_distance_mode": "robust"}
    solve = {"threshold": 1e-5}
    atlas = pr.tl.AtlasMap(
        pair, init_geom=geom, init_problem=PUBLISHED_PROBLEM, solve=solve, unmatched=False
    ).solve(progress=False)
    dm = pr.tl.DatasetMap(pair["B"], pair["A"])
    dm.init_geom(**geom)
    dm.init_problem()
    dm.solve(progress=False, **solve)
    for method in ("mean", "transported_mass"):
        pd.testing.assert_frame_equal(
            atlas.mapping("B", "A", method),
            dm.compute_mapping(method),
            check_exact=False,
            atol=1e-4,
        )
    got, expected = atlas.distance("B", "A"), dm.compute_distance()
    pd.testing.assert_index_equal(got.index, expected.index)
    pd.testing.assert_index_equal(got.columns, expected.columns)
    carried = dm.compute_mapping("transported_mass").to_numpy() > 1e-3
    assert carried.sum() >= 4
    difference = np.abs(got.to_numpy() - expected.to_numpy())
    assert difference[carried].max() < 1e-4
    assert difference.max() < 2e-2


def columns(table, names):
    return [tuple(row) for row in table[[*names, "relation"]].itertuples(index=False)]


def test_split_then_merge_by_study_order(sim, tmp_path, monkeypatch):
    """A annotates lineage L1 as one type that B resolves into L1_T1 and L1_T2: A's L1
    appears in both rows ("split"); with B first the same rows read "merge"."""
    studies = prep({"A": relabel(sim["A"], {"L1_T1": "L1", "L1_T2": "L1"}), "B": sim["B"]})
    atlas = pr.tl.AtlasMap(studies, out_dir=tmp_path, init_geom=GEOM).solve(progress=False)
    table = atlas.harmonize()
    assert columns(table, ["A", "B"]) == [
        ("L1", "L1_T1", "split"),
        ("L1", "L1_T2", "split"),
        ("L2_T1", "L2_T1", "one-to-one"),
        ("L2_T2", "L2_T2", "one-to-one"),
    ]
    assert list(table.columns[:3]) == ["A", "B", "relation"]
    assert table["group"].tolist() == [0, 0, 1, 2]
    assert atlas.disagreements().empty
    # the table behaves as a plain DataFrame: slices joined again (as a wide repr does)
    wide = pd.concat([table.iloc[:, :2], table.iloc[:, 2:]], axis=1)
    pd.testing.assert_frame_equal(wide, table)
    with pd.option_context("display.width", 40, "display.max_columns", 3):
        assert "..." in repr(table)
    assert set(table.attrs) == {"params"}
    # links(): every link the rows rest on, the kept ones between the rows' clusters
    links = atlas.links()
    kept = {tuple(r) for r in links.loc[links["kept"], ["cluster_1", "cluster_2"]].to_numpy()}
    assert kept == {("L1", "L1_T1"), ("L1", "L1_T2"), ("L2_T1", "L2_T1"), ("L2_T2", "L2_T2")}
    # with the published label distance the distance threshold of select_similar_clusters
    # cuts the split (documented); with the atlas's robust one the split stays
    assert columns(atlas.harmonize(threshold_distance=1.0), ["A", "B"]) == columns(
        table, ["A", "B"]
    )
    published = pr.tl.AtlasMap(
        studies, init_geom={**GEOM, **PUBLISHED_GEOM}, init_problem=PUBLISHED_PROBLEM
    ).solve(progress=False)
    cut = published.harmonize(threshold_distance=1.0)
    assert "L1" in set(cut.loc[cut["B"] == "NONE", "A"])
    # B first: the same pair, loaded from the folder, read the other way round
    calls = counting(monkeypatch)
    flipped = pr.tl.AtlasMap(
        {"B": studies["B"], "A": studies["A"]}, out_dir=tmp_path, init_geom=GEOM
    )
    flipped.solve(pairs=[("A", "B")], progress=False)
    assert calls == [] and flipped.solve_log == {("A", "B"): "loaded"}
    assert columns(flipped.harmonize(), ["B", "A"]) == [
        ("L1_T1", "L1", "merge"),
        ("L1_T2", "L1", "merge"),
        ("L2_T1", "L2_T1", "one-to-one"),
        ("L2_T2", "L2_T2", "one-to-one"),
    ]


@pytest.fixture(scope="module")
def three(sim, tmp_path_factory):
    """A and C rename the types their own way and lack L2_T2, which only B has."""
    studies = prep(
        {
            "A": relabel(sim["A"], {"L1_T1": "a1", "L1_T2": "a2", "L2_T1": "a3"}, drop=["L2_T2"]),
            "B": sim["B"],
            "C": relabel(
                sim["C"], {"L1_T1": "c-one", "L1_T2": "c-two", "L2_T1": "c-three"}, drop=["L2_T2"]
            ),
        }
    )
    out = tmp_path_factory.mktemp("atlas")
    atlas = pr.tl.AtlasMap(studies, out_dir=out, init_geom=GEOM).solve(progress=False)
    return studies, out, atlas


def test_three_studies_with_renamed_labels_and_a_type_of_one_study(three):
    studies, _, atlas = three
    assert atlas.pairs == [("A", "B"), ("A", "C"), ("B", "C")]
    table = atlas.harmonize()
    assert columns(table, ["A", "B", "C"]) == [
        ("a1", "L1_T1", "c-one", "one-to-one"),
        ("a2", "L1_T2", "c-two", "one-to-one"),
        ("a3", "L2_T1", "c-three", "one-to-one"),
        ("NONE", "L2_T2", "NONE", "unique"),
    ]
    assert (table.loc[:2, "n_links"] == 3).all() and (table.loc[:2, "n_reciprocal"] == 3).all()
    # B's L2_T2 receives mass from every cluster of A and C (balanced marginals), passes the
    # mapping threshold in the reverse reading, and is flagged "no match": the dropped links
    # are listed, never hidden
    assert bool(atlas.unmatched("B", "A").at["L2_T2", "unmatched"])
    assert bool(atlas.unmatched("B", "C").at["L2_T2", "unmatched"])
    found = atlas.disagreements()
    assert set(found["kind"]) == {"flagged_but_matched"}
    assert all("B:L2_T2" in c for c in found["clusters"])
    # any pair in either direction
    assert atlas.mapping("C", "A").shape == (3, 3)
    np.testing.assert_array_equal(
        atlas.distance("C", "A").to_numpy(), atlas.distance("A", "C").to_numpy().T
    )


def test_two_clusters_of_one_study_that_are_one_type_are_joined(sim):
    """B splits L1_T2 at random into two labels: no marker between them in B's own DE, so
    they are one row "L1_T2a | L1_T2b"; a real split (test above) stays two rows."""
    b = sim["B"].copy()
    labels = b.obs["cell_type"].astype(str).to_numpy().copy()
    where = np.flatnonzero(labels == "L1_T2")
    half = np.random.default_rng(0).random(where.size) < 0.5
    labels[where[half]], labels[where[~half]] = "L1_T2a", "L1_T2b"
    b.obs["cell_type"] = pd.Categorical(labels)
    studies = prep({"A": sim["A"], "B": b})
    atlas = pr.tl.AtlasMap(studies, init_geom=GEOM, unmatched=False).solve(progress=False)
    assert columns(atlas.harmonize(), ["A", "B"]) == [
        ("L1_T1", "L1_T1", "one-to-one"),
        ("L1_T2", "L1_T2a | L1_T2b", "one-to-one"),
        ("L2_T1", "L2_T1", "one-to-one"),
        ("L2_T2", "L2_T2", "one-to-one"),
    ]
    assert atlas.harmonize()["joined"].tolist() == ["", "B", "", ""]
    apart = atlas.harmonize(join=False)
    assert apart.loc[apart["A"] == "L1_T2", "B"].tolist() == ["L1_T2a", "L1_T2b"]


def test_resume_loads_every_stored_pair_and_refits_what_changed(
    three, tmp_path, monkeypatch, caplog
):
    studies, shared, fitted = three
    out = tmp_path / "copy"  # the fixture's folder stays as it is for the other tests
    shutil.copytree(shared, out)
    calls = counting(monkeypatch)
    again = pr.tl.AtlasMap(studies, out_dir=out, init_geom=GEOM).solve(progress=False)
    assert calls == [] and set(again.solve_log.values()) == {"loaded"}
    one = pr.tl.AtlasMap(studies, out_dir=out, init_geom=GEOM).solve([("A", "B")], progress=False)
    with pytest.raises(KeyError, match=r"pair \(C, A\) is not fitted; fitted pairs: \(A, B\)"):
        one.mapping("C", "A")
    for a, b in [("A", "B"), ("C", "B"), ("B", "C")]:
        pd.testing.assert_frame_equal(again.mapping(a, b), fitted.mapping(a, b), check_exact=True)
        pd.testing.assert_frame_equal(again.distance(a, b), fitted.distance(a, b), check_exact=True)
    pd.testing.assert_frame_equal(again.harmonize(), fitted.harmonize())
    meta = json.loads((_store.pair_dir(out, "A", "B") / "pair.json").read_text())
    assert meta["init_geom"] == {"batch_size": 256, **ATLAS_GEOM} and meta["a"] == "A"
    assert meta["init_problem"] == ATLAS_PROBLEM
    assert (_store.pair_dir(out, "A", "B") / "mapping_mean.csv").is_file()
    # an interrupted run: one pair's folder missing, a temporary folder left behind
    shutil.rmtree(_store.pair_dir(out, "A", "C"))
    (out / "pairs" / ".tmp-A__C-dead").mkdir()
    resumed = pr.tl.AtlasMap(studies, out_dir=out, init_geom=GEOM).solve(progress=False)
    assert resumed.solve_log == {("A", "B"): "loaded", ("A", "C"): "fitted", ("B", "C"): "loaded"}
    assert len(calls) == 3  # the fit, and the two relaxed solves of the no-match flags
    # a changed parameter refits, with a log line naming it
    calls.clear()
    with caplog.at_level(logging.INFO, logger="pairot"):
        changed = pr.tl.AtlasMap(
            studies, out_dir=out, init_geom={"batch_size": 256, "epsilon": 0.1}
        )
        changed.solve(pairs=[("A", "B")], progress=False)
    assert changed.solve_log == {("A", "B"): "fitted"} and len(calls) == 3
    assert "init_geom.epsilon '<unset>' -> 0.1" in caplog.text
    stored = json.loads((_store.pair_dir(out, "A", "B") / "pair.json").read_text())
    assert stored["init_geom"]["epsilon"] == 0.1


def test_an_interrupted_write_leaves_no_pair(three, tmp_path, monkeypatch):
    _, _, atlas = three
    result = atlas._pair("A", "B")

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(KeyboardInterrupt):
        _store.write_pair(tmp_path, result, {"init_geom": {}})
    assert list((tmp_path / "pairs").iterdir()) == []


def test_bad_inputs(pair, sim):
    a, b = pair["A"], pair["B"]
    with pytest.raises(ValueError, match="1 study"):
        pr.tl.AtlasMap({"A": a})
    with pytest.raises(TypeError, match="dict of study name"):
        pr.tl.AtlasMap([a, b])
    with pytest.raises(ValueError, match="different genes"):
        pr.tl.AtlasMap({"A": a, "B": b[:, 1:].copy()})
    with pytest.raises(ValueError, match="preprocess_studies"):
        pr.tl.AtlasMap({"A": a, "B": sim["B"]})
    with pytest.raises(ValueError, match="uses for its own columns"):
        pr.tl.AtlasMap({"A": a, "relation": b})
    with pytest.raises(ValueError, match="differ only in case"):
        pr.tl.AtlasMap({"A": a, "a": b})
    bad = b.copy()
    del bad.obs[bad.uns["pairot"]["cell_type_key"]]
    with pytest.raises(KeyError, match="has no column 'cell_type'"):
        pr.tl.AtlasMap({"A": a, "B": bad})
    with pytest.raises(TypeError, match="unknown option.*epsilonn"):
        pr.tl.AtlasMap(pair, init_geom={"epsilonn": 0.1})
    with pytest.raises(ValueError, match="per-cell weights"):
        pr.tl.AtlasMap(pair, init_problem={"a": np.ones(a.n_obs)})
    atlas = pr.tl.AtlasMap(pair)
    with pytest.raises(KeyError, match="unknown studies \\['Z'\\]"):
        atlas.solve(pairs=[("A", "Z")])
    with pytest.raises(ValueError, match="twice"):
        atlas.solve(pairs=[("A", "B"), ("B", "A")])
    with pytest.raises(ValueError, match="not both"):
        atlas.solve(pairs=[("A", "B")], reference="A")
    with pytest.raises(KeyError, match="reference='Z' is not a study"):
        atlas.solve(reference="Z")
    with pytest.raises(ValueError, match="call solve\\(\\) first"):
        atlas.harmonize()
    with pytest.raises(KeyError, match="none: call solve\\(\\) first"):
        atlas.distance("A", "B")


def test_a_star_around_one_study(three):
    """solve(reference="B"): pairs (A, B) and (C, B) only; A and C, never fitted together,
    are assumed compatible and meet in one row through B."""
    studies, out, _ = three
    star = pr.tl.AtlasMap(studies, out_dir=out, init_geom=GEOM).solve(reference="B", progress=False)
    assert star.solve_log == {("A", "B"): "loaded", ("C", "B"): "fitted"}
    table = star.harmonize()
    assert columns(table, ["A", "B", "C"])[:3] == [
        ("a1", "L1_T1", "c-one", "one-to-one"),
        ("a2", "L1_T2", "c-two", "one-to-one"),
        ("a3", "L2_T1", "c-three", "one-to-one"),
    ]
    assert (table.loc[:2, "n_tested"] == 2).all() and (table.loc[:2, "n_links"] == 2).all()
    # a later solve adds the pair (A, C): the next harmonize reads it (nothing stale is kept)
    star.solve([("A", "C")], progress=False)
    assert (star.harmonize().loc[:2, "n_tested"] == 3).all()


def fake(a, b, rows, cols, links):
    """A PairResult whose "mean" mapping (and transported mass) is 1 on ``links``, else 0."""
    from pairot.tl._atlas._pair import PairResult

    values = pd.DataFrame(
        0.0, index=pd.Index(rows, name="query"), columns=pd.Index(cols, name="reference")
    )
    for k, c in links:
        values.loc[k, c] = 1.0
    distance = 1.5 - values
    return PairResult(a, b, values, values.copy(), distance, None, None)


def test_rows_are_maximal_cliques_and_open_triangles_are_reported():
    from pairot.tl._atlas import _harmonize

    clusters = {"A": ["T"], "B": ["T1", "T2"], "C": ["u1", "u2"]}
    results = {
        ("A", "B"): fake("A", "B", ["T"], ["T1", "T2"], [("T", "T1"), ("T", "T2")]),
        ("A", "C"): fake("A", "C", ["T"], ["u1", "u2"], [("T", "u1"), ("T", "u2")]),
        ("B", "C"): fake("B", "C", ["T1", "T2"], ["u1", "u2"], [("T1", "u1"), ("T2", "u2")]),
    }
    run = lambda results: _harmonize.harmonize(  # noqa: E731
        ["A", "B", "C"],
        clusters,
        results,
        threshold_mapping=0.25,
        threshold_distance=None,
        separated=lambda *_: True,
    )
    table, disagreements, links = run(results)
    assert columns(table, ["A", "B", "C"]) == [
        ("T", "T1", "u1", "split"),
        ("T", "T2", "u2", "split"),
    ]
    assert disagreements.empty and len(links) == 6
    # B and C disagree with A: B's T2 and C's u2 are linked to A's T, not to each other
    results[("B", "C")] = fake("B", "C", ["T1", "T2"], ["u1", "u2"], [("T1", "u1")])
    table, disagreements, _ = run(results)
    assert columns(table, ["A", "B", "C"]) == [
        ("T", "T1", "u1", "split"),
        ("T", "T2", "NONE", "split"),
        ("T", "NONE", "u2", "split"),
    ]
    assert disagreements["kind"].tolist() == ["not_transitive"]
    assert disagreements["clusters"].tolist() == ["B:T2; A:T; C:u2"]
