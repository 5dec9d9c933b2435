"""DatasetMap.bootstrap: resampled cells against a fresh fit on explicitly duplicated cells,
resampled donors against limma on explicitly rebuilt studies, determinism, intervals, errors,
the fallbacks when donors cannot be resampled, and the command line's columns."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.tl import _bootstrap
from pairot.tl._answers import _matches
from pairot.tl._dataset_map import StageError

SOLVE = {"threshold": 1e-6, "max_iterations": 5000, "progress": False}
INTERVAL_COLUMNS = ["mapping_low", "mapping_high", "distance_low", "distance_high", "top_share"]


@pytest.fixture(scope="module")
def raw():
    return pr.datasets.pbmc_demo()


@pytest.fixture(scope="module")
def preprocessed(raw):
    return pr.pp.preprocess_adatas(
        *raw,
        n_top_genes=200,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
    )


def _fit(query, reference, **solve):
    dm = pr.tl.DatasetMap(query, reference)
    dm.init_geom(batch_size=128)
    dm.init_problem()
    dm.solve(**{**SOLVE, **solve})
    return dm


@pytest.fixture(scope="module")
def fitted(preprocessed):
    return _fit(*preprocessed)


@pytest.fixture(scope="module")
def table(fitted):
    return fitted.bootstrap(4, random_state=3, progress=False)


def _without_pseudobulk(adata):
    out = adata.copy()
    out.uns["pairot"] = {k: v for k, v in adata.uns["pairot"].items() if k != "pseudobulk"}
    return out


# ------------------------------------------------------------------------------ the table
def test_table_layout_and_point_estimates(fitted, table):
    assert list(table.columns) == list(_matches.BOOTSTRAP_COLUMNS)
    mapping, distance = fitted.compute_mapping(), fitted.compute_distance()
    assert len(table) == mapping.size
    assert list(table["query"][:: mapping.shape[1]]) == list(mapping.index)
    assert list(table["reference"][: mapping.shape[1]]) == list(mapping.columns)
    np.testing.assert_array_equal(table["mapping"], mapping.to_numpy().ravel())
    np.testing.assert_array_equal(table["distance"], distance.to_numpy().ravel())
    assert (table["mapping_low"] <= table["mapping_high"]).all()
    assert (table["distance_low"] <= table["distance_high"]).all()
    # every resample has one top match per query cluster
    np.testing.assert_allclose(table.groupby("query", sort=False)["top_share"].sum(), 1.0)
    assert table.attrs["resample"] == ["cells", "samples"]
    assert table.attrs["samples_resampled"] == ["query", "reference"]
    assert fitted.bootstrap_results is table


def test_intervals_are_the_percentiles_of_the_draws(fitted, table):
    fitted.bootstrap(4, random_state=3, progress=False)
    draws = fitted._bootstrap_state[2]
    for column in ("mapping", "distance"):
        low, high = np.quantile(draws[column], [0.05, 0.95], axis=0)
        np.testing.assert_allclose(table[f"{column}_low"], low.ravel(), rtol=1e-12)
        np.testing.assert_allclose(table[f"{column}_high"], high.ravel(), rtol=1e-12)
    n_bootstrap, n_query, n_ref = draws["mapping"].shape
    top = draws["mapping"].argmax(axis=2)
    share = [[np.mean(top[:, k] == c) for c in range(n_ref)] for k in range(n_query)]
    np.testing.assert_array_equal(table["top_share"], np.ravel(share))


def test_same_seed_same_table_other_seed_other_table(fitted, table):
    again = fitted.bootstrap(4, random_state=3, progress=False)
    pd.testing.assert_frame_equal(again, table)
    other = fitted.bootstrap(4, random_state=4, progress=False)
    assert not np.array_equal(other["mapping_low"], table["mapping_low"])
    assert not np.array_equal(other["distance_high"], table["distance_high"])


def test_clear_matches_keep_their_point_estimate_inside(fitted):
    """Cells only: the one-to-one matches of the demo (mapping about 1) stay the top match in
    every resample and their interval holds the point estimate (up to the solver's
    tolerance)."""
    cells = fitted.bootstrap(5, resample="cells", random_state=0, progress=False)
    clear = cells[cells["mapping"] > 0.9]
    assert len(clear) >= 4
    assert (clear["top_share"] == 1.0).all()
    assert (clear["mapping_low"] <= clear["mapping"] + 1e-4).all()
    assert (clear["mapping"] <= clear["mapping_high"] + 1e-4).all()
    assert (clear["distance_high"] - clear["distance_low"] > 0).all()  # it does vary


# ------------------------------------------------------------------------ resampled cells
@pytest.mark.filterwarnings("ignore:Observation names are not unique")
@pytest.mark.parametrize("layout", ["duplicated", "weighted"])
def test_cell_resample_equals_a_fresh_fit_on_duplicated_cells(
    preprocessed, fitted, monkeypatch, layout
):
    """Resample 0 of ``resample="cells"`` equals a new DatasetMap on the AnnData objects that
    hold every drawn cell as often as it was drawn (features and label distance rebuilt from
    scratch), in both layouts of the solve (duplicated rows; unique cells with weights)."""
    monkeypatch.setattr(_bootstrap, "CELL_LAYOUT", layout)
    seed = 11
    fitted.bootstrap(2, resample="cells", random_state=seed, progress=False)
    draws = fitted._bootstrap_state[2]

    rng = np.random.default_rng([seed, 0, 0])
    rows, wq = _bootstrap.draw_cells(fitted.geom.query_codes, rng)
    cols, wr = _bootstrap.draw_cells(fitted.geom.ref_codes, rng)
    query, reference = preprocessed
    dup_q = query[np.repeat(rows, wq.astype(int))].copy()
    dup_r = reference[np.repeat(cols, wr.astype(int))].copy()
    dup_q.obs_names_make_unique()
    dup_r.obs_names_make_unique()
    for original, duplicated in ((query, dup_q), (reference, dup_r)):
        column = original.uns["pairot"]["cell_type_key"]
        counts = original.obs[column].value_counts()
        pd.testing.assert_series_equal(duplicated.obs[column].value_counts()[counts.index], counts)
    fresh = _fit(dup_q, dup_r)
    pd.testing.assert_frame_equal(fresh.label_distance, fitted.label_distance)
    np.testing.assert_allclose(draws["mapping"][0], fresh.compute_mapping().to_numpy(), atol=2e-5)
    np.testing.assert_allclose(draws["distance"][0], fresh.compute_distance().to_numpy(), atol=2e-5)


def test_draw_cells_is_stratified():
    codes = np.array([0, 1, 0, 2, 1, 0, 0, 2, 2, 2, 1])
    rows, weights = _bootstrap.draw_cells(codes, np.random.default_rng(0))
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(
        np.bincount(codes[rows], weights=weights), np.bincount(codes).astype(float)
    )
    dup, ones = _bootstrap.draw_cells(codes, np.random.default_rng(0), "duplicated")
    np.testing.assert_array_equal(dup, np.repeat(rows, weights.astype(int)))
    assert (ones == 1).all()


# ---------------------------------------------------------------------- resampled donors
def _study(dm, name):
    info = dm._info[0 if name == "adata1" else 1]
    de, reason = _bootstrap.study_de(info, name, 0.6)
    assert de is not None, reason
    return info, de


@pytest.mark.parametrize("name", ["adata1", "adata2"])
def test_identity_donor_draw_reproduces_the_stored_de(fitted, name):
    """Every donor once: limma on the stored profiles gives the DE tables' limma columns."""
    info, de = _study(fitted, name)
    ones = np.ones(de.n_donors)
    for scheme in ("duplicated", "bayesian"):
        ova, ava = de.tables(ones, scheme)
        for kind, rebuilt in (("ova", ova), ("ava", ava)):
            stored = info[f"de_{kind}"]
            rows = np.flatnonzero(stored["auroc"].to_numpy() >= 0.6)
            assert len(rebuilt) == rows.size > 0
            for column in ("logFC", "P.Value", "adj.P.Val", "auroc"):
                np.testing.assert_allclose(
                    rebuilt[column].to_numpy(),
                    stored[column].to_numpy()[rows],
                    rtol=1e-12,
                    atol=1e-300,
                    equal_nan=True,
                )


def test_identity_donor_draw_reproduces_the_label_distance(fitted, monkeypatch):
    monkeypatch.setattr(_bootstrap, "DONOR_SCHEME", "duplicated")
    resampler = _bootstrap.Resampler(fitted, ("samples",), 0)
    donors = {name: np.ones(de.n_donors) for name, de in resampler.studies.items()}
    np.testing.assert_array_equal(
        resampler.label_distance(donors), fitted.label_distance.to_numpy()
    )


@pytest.mark.parametrize("name", ["adata1", "adata2"])
def test_classic_donor_draw_equals_limma_on_the_rebuilt_study(raw, preprocessed, fitted, name):
    """A classic draw with a donor twice equals rank_genes_limma on the raw cells of the
    drawn donors, the repeated donor's cells copied under a new sample name."""
    info, de = _study(fitted, name)
    stored = info["pseudobulk"]
    samples = list(stored["samples"])
    drawn = np.array([0, 0, 2, 3])
    np.testing.assert_array_equal(de.donors, np.arange(4))
    raw_study = raw[0 if name == "adata1" else 1]
    genes = list(stored["genes"])
    parts = []
    for copy, code in enumerate(drawn):
        cells = raw_study[raw_study.obs["sample_id"] == samples[code], genes].copy()
        cells.obs["sample_id"] = f"{samples[code]}_copy{copy}"
        cells.obs_names = [f"{n}_copy{copy}" for n in cells.obs_names]
        parts.append(cells)
    rebuilt_study = ad.concat(parts)
    de_ova, de_ava = pr.pp.rank_genes_limma(
        rebuilt_study, "cell_type", "sample_id", result_format="long"
    )
    ova, ava = de.tables(np.bincount(drawn, minlength=4), "duplicated")
    for mine, theirs, keys in (
        (ova, de_ova, ["cluster", "gene"]),
        (ava, de_ava, ["cluster", "versus", "gene"]),
    ):
        for frame in (mine, theirs):
            for key in keys:
                frame[key] = frame[key].astype(str)
        merged = mine.merge(theirs, on=keys, suffixes=("", "_ref"), validate="1:1")
        assert len(merged) == len(mine) > 0
        for column in ("logFC", "P.Value", "adj.P.Val"):
            np.testing.assert_allclose(
                merged[column], merged[f"{column}_ref"], rtol=1e-7, atol=1e-12, equal_nan=True
            )


@pytest.mark.parametrize("name", ["adata1", "adata2"])
def test_bayesian_donor_draw_equals_weighted_limma_by_qr(fitted, name):
    """Donor weights: the DE tables equal limma's general weighted least-squares fits
    (``lm_fit(weights=)``, pinned to R's ``lmFit(weights = w)``), one per cluster and one
    with contrasts, on the stored profiles normalized by hand."""
    from pairot.pp._limma import contrasts_fit, ebayes, lm_fit, p_adjust_bh

    info, de = _study(fitted, name)
    weights = de.draw(np.random.default_rng(5), "bayesian")
    assert weights.shape == (4,) and np.all(weights > 0)
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-12)
    ova, ava = de.tables(weights, "bayesian")

    stored = info["pseudobulk"]
    counts = np.asarray(stored["counts"], dtype=np.float64)
    expr = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e5).T
    labels = np.asarray(stored["cluster"])
    w = weights[np.asarray(stored["sample"])]
    clusters = list(np.asarray(stored["clusters"]).astype(str))
    genes = list(np.asarray(stored["genes"]).astype(str))
    k = len(clusters)
    expected_ova = {}
    for c in range(k):
        design = np.column_stack([np.ones(labels.size), labels == c])
        fit = lm_fit(expr, design, weights=w)
        p = ebayes(fit).p_value[:, 1]
        expected_ova[c] = (fit.coefficients[:, 1], p, p_adjust_bh(p))
    fit = lm_fit(expr, np.eye(k)[labels], weights=w)
    i1, i2 = np.triu_indices(k, 1)
    cm = np.zeros((k, i1.size))
    cm[i1, np.arange(i1.size)], cm[i2, np.arange(i1.size)] = 1.0, -1.0
    fit2 = contrasts_fit(fit, cm)
    p2 = ebayes(fit2).p_value
    adj2 = p_adjust_bh(p2, axis=0)
    pair = {(int(a), int(b)): j for j, (a, b) in enumerate(zip(i1, i2))}

    gene_index = {g: i for i, g in enumerate(genes)}
    names = {"P.Value": "p", "adj.P.Val": "adj"}
    for row in ova.rename(columns=names).sample(200, random_state=0).itertuples():
        c, g = clusters.index(str(row.cluster)), gene_index[str(row.gene)]
        logfc, p, adj = (values[g] for values in expected_ova[c])
        np.testing.assert_allclose([row.logFC, row.p, row.adj], [logfc, p, adj], rtol=1e-8)
    for row in ava.rename(columns=names).sample(200, random_state=0).itertuples():
        a, b = clusters.index(str(row.cluster)), clusters.index(str(row.versus))
        g = gene_index[str(row.gene)]
        j = pair[(min(a, b), max(a, b))]
        sign = 1.0 if a < b else -1.0
        expected = [sign * fit2.coefficients[g, j], p2[g, j], adj2[g, j]]
        np.testing.assert_allclose([row.logFC, row.p, row.adj], expected, rtol=1e-8)


@pytest.mark.parametrize("name", ["adata1", "adata2"])
def test_corrected_donor_draw_against_a_naive_fit(fitted, name):
    """The default donor draw: the drawn profiles (a donor drawn twice, twice; a cluster's
    only profile once), each cluster's squared deviations from its mean summed by a loop and
    scaled by k_c / (k_c - 1), the rest from lm_fit's QR fit of the same profiles."""
    from pairot.pp._limma import LinearModelFit, contrasts_fit, ebayes, lm_fit, p_adjust_bh

    info, de = _study(fitted, name)
    stored = info["pseudobulk"]
    cluster = np.asarray(stored["cluster"]).copy()
    sample = np.asarray(stored["sample"])
    # give cluster 0 a single profile (donor 1's), so the rule for such clusters is exercised
    only = np.flatnonzero((cluster == 0) & (sample != 1))
    keep = np.setdiff1d(np.arange(cluster.size), only)
    counts = np.asarray(stored["counts"], dtype=np.float64)[keep]
    cluster, sample = cluster[keep], sample[keep]
    de = _bootstrap.StudyDE(
        counts,
        cluster,
        sample,
        de.n_clusters,
        {"ova": info["de_ova"], "ava": info["de_ava"]},
        pd.Index(np.asarray(stored["clusters"]).astype(str)),
        pd.Index(np.asarray(stored["genes"]).astype(str)),
        0.6,
        1e5,
    )
    draw = np.array([0.0, 2.0, 1.0, 1.0])  # donor 1 twice, donor 0 left out
    ova, ava = de.tables(draw)

    rows = []
    for donor, times in enumerate(draw.astype(int)):
        for row in np.flatnonzero(sample == donor):
            rows += [row] * (1 if cluster[row] == 0 else times)
    rows = np.array(rows)
    assert (cluster[rows] == 0).sum() == 1
    expr = np.log1p(counts[rows] / counts[rows].sum(axis=1, keepdims=True) * 1e5).T
    labels = cluster[rows]
    k = de.n_clusters
    k_c = np.bincount(cluster, minlength=k)
    within = np.zeros(expr.shape[0])
    for c in range(k):
        block = expr[:, labels == c]
        sq = ((block - block.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        within += sq * (k_c[c] / (k_c[c] - 1) if k_c[c] > 1 else 1.0)
    n = labels.size

    def corrected(fit, rss, df):
        return LinearModelFit(
            fit.coefficients,
            fit.stdev_unscaled,
            np.sqrt(rss / df),
            np.full(expr.shape[0], float(df)),
            fit.cov_coefficients,
        )

    gene_index = {g: i for i, g in enumerate(np.asarray(stored["genes"]).astype(str))}
    names = list(np.asarray(stored["clusters"]).astype(str))
    rename = {"P.Value": "p", "adj.P.Val": "adj"}
    for c in range(k):
        design = np.column_stack([np.ones(n), labels == c])
        fit = lm_fit(expr, design)
        rest = expr[:, labels != c]
        # the rest's spread: within its clusters (corrected) plus between them
        between = np.zeros(expr.shape[0])
        for other in set(range(k)) - {c}:
            size = (labels == other).sum()
            means = expr[:, labels == other].mean(axis=1)
            between += size * (means - rest.mean(axis=1)) ** 2
        own = expr[:, labels == c]
        within_c = ((own - own.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        factor_c = k_c[c] / (k_c[c] - 1) if k_c[c] > 1 else 1.0
        rss = within + between
        assert np.all(rss >= within_c * factor_c - 1e-9)
        p = ebayes(corrected(fit, rss, n - 2)).p_value[:, 1]
        adj = p_adjust_bh(p)
        mine = ova[ova["cluster"].astype(str) == names[c]].rename(columns=rename)
        g = mine["gene"].astype(str).map(gene_index).to_numpy()
        np.testing.assert_allclose(mine["logFC"], fit.coefficients[g, 1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mine["p"], p[g], rtol=1e-8)
        np.testing.assert_allclose(mine["adj"], adj[g], rtol=1e-8)
    fit = lm_fit(expr, np.eye(k)[labels])
    i1, i2 = np.triu_indices(k, 1)
    cm = np.zeros((k, i1.size))
    cm[i1, np.arange(i1.size)], cm[i2, np.arange(i1.size)] = 1.0, -1.0
    eb = ebayes(contrasts_fit(corrected(fit, within, n - k), cm))
    adj2 = p_adjust_bh(eb.p_value, axis=0)
    pair = {(int(a), int(b)): j for j, (a, b) in enumerate(zip(i1, i2))}
    for row in ava.rename(columns=rename).sample(300, random_state=0).itertuples():
        a, b = names.index(str(row.cluster)), names.index(str(row.versus))
        j, g = pair[(min(a, b), max(a, b))], gene_index[str(row.gene)]
        np.testing.assert_allclose([row.p, row.adj], [eb.p_value[g, j], adj2[g, j]], rtol=1e-8)


def test_corrected_draws_keep_the_marker_lists_near_the_full_fit(fitted):
    """Fitting a donor drawn twice as two replicates lets more genes pass the adj.P.Val
    filter than the full fit; the corrected draw keeps the mean marker count near it."""
    resampler = _bootstrap.Resampler(fitted, ("samples",), 0)
    labels = resampler.labels
    full = sum(len(labels.fixed(name)) for name in resampler.studies)
    totals = {scheme: [] for scheme in ("corrected", "duplicated")}
    for index in range(12):
        for scheme in totals:
            rng = np.random.default_rng([0, index, 1])
            count = 0
            for name, de in resampler.studies.items():
                tables = de.tables(de.draw(rng, scheme), scheme)
                count += len(labels.markers(name, *tables))
            totals[scheme].append(count)
    corrected, duplicated = np.mean(totals["corrected"]), np.mean(totals["duplicated"])
    assert duplicated > 1.15 * full
    assert abs(corrected - full) < 0.1 * full


def test_resampled_donors_change_the_label_distance(fitted):
    fitted.bootstrap(4, resample="samples", random_state=3, progress=False)
    L = fitted._bootstrap_state[2]["label_distance"]
    assert L.shape == (4, *fitted.label_distance.shape)
    assert ((L >= 0) & (L <= 1)).all()
    assert not np.allclose(L, fitted.label_distance.to_numpy())


def test_stored_pseudobulk_survives_h5ad(preprocessed, tmp_path):
    query = preprocessed[0]
    query.write_h5ad(tmp_path / "q.h5ad")
    back = ad.read_h5ad(tmp_path / "q.h5ad").uns["pairot"]["pseudobulk"]
    stored = query.uns["pairot"]["pseudobulk"]
    assert set(back) == set(stored)
    for key, value in stored.items():
        np.testing.assert_array_equal(np.asarray(back[key]).astype(value.dtype), value)
    assert stored["counts"].dtype == np.float32
    assert stored["counts"].shape == (stored["cluster"].size, stored["genes"].size)


# ------------------------------------------------------------------------ fallbacks
def test_files_without_profiles_resample_cells_with_a_warning(preprocessed, caplog):
    query, reference = preprocessed
    dm = _fit(_without_pseudobulk(query), reference)
    with caplog.at_level(logging.WARNING, logger="pairot"):
        out = dm.bootstrap(2, progress=False)
    text = caplog.text
    assert "samples (donors) of adata1 are not resampled" in text
    assert "no pseudobulk profiles" in text and "preprocess_adatas" in text
    assert out.attrs["resample"] == ["cells", "samples"]
    assert out.attrs["samples_resampled"] == ["reference"]

    dm = _fit(_without_pseudobulk(query), _without_pseudobulk(reference))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairot"):
        out = dm.bootstrap(2, resample="samples", progress=False)
    assert "resampling the cells instead" in caplog.text
    assert out.attrs["resample"] == ["cells"]


def test_store_pseudobulk_false_leaves_the_profiles_out(raw, preprocessed, caplog):
    query, reference = pr.pp.preprocess_adatas(
        *raw,
        n_top_genes=200,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
        store_pseudobulk=False,
    )
    for new, old in zip((query, reference), preprocessed):
        info = new.uns["pairot"]
        assert "pseudobulk" not in info and info["params"]["store_pseudobulk"] is False
        # everything else is what the default gives
        pd.testing.assert_frame_equal(info["de_ova"], old.uns["pairot"]["de_ova"])
        np.testing.assert_array_equal(new.X.toarray(), old.X.toarray())
    dm = _fit(query, preprocessed[1])
    with caplog.at_level(logging.WARNING, logger="pairot"):
        out = dm.bootstrap(2, progress=False)
    assert "store_pseudobulk=False" in caplog.text and "store_pseudobulk=True" in caplog.text
    assert out.attrs["samples_resampled"] == ["reference"]
    with pytest.raises(TypeError, match="store_pseudobulk must be True or False, got 'no'"):
        pr.pp.preprocess_adatas(
            *raw, "cell_type", "cell_type", "sample_id", "sample_id", store_pseudobulk="no"
        )


def test_too_few_donors_are_not_resampled(preprocessed, caplog):
    query, reference = preprocessed
    few = query.copy()
    stored = dict(few.uns["pairot"]["pseudobulk"])
    stored["sample"] = stored["sample"] % 2  # two donors left
    few.uns["pairot"] = {**few.uns["pairot"], "pseudobulk": stored}
    dm = _fit(few, reference)
    with caplog.at_level(logging.WARNING, logger="pairot"):
        out = dm.bootstrap(2, progress=False)
    assert "only 2 sample(s)" in caplog.text and "limma needs replicates" in caplog.text
    assert out.attrs["samples_resampled"] == ["reference"]


# ----------------------------------------------------------------------- errors and stages
def test_stages(preprocessed):
    dm = pr.tl.DatasetMap(*preprocessed)
    with pytest.raises(StageError, match="init_geom"):
        dm.bootstrap(2)
    with pytest.raises(StageError, match="call bootstrap"):
        _ = dm.bootstrap_results
    dm.init_geom()
    dm.init_problem()
    with pytest.raises(StageError, match="solve"):
        dm.bootstrap(2)
    dm.solve(progress=False)
    dm.bootstrap(2, resample="cells", progress=False)
    assert len(dm.bootstrap_results) == 64
    dm.solve(progress=False)  # a new solution: the old intervals are not its own
    with pytest.raises(StageError, match="call bootstrap"):
        _ = dm.bootstrap_results


@pytest.mark.parametrize(
    ("arguments", "error", "fragment"),
    [
        ({"n_bootstrap": 1}, ValueError, "n_bootstrap must be >= 2"),
        ({"n_bootstrap": "20"}, TypeError, "n_bootstrap must be an integer"),
        ({"n_bootstrap": True}, TypeError, "n_bootstrap"),
        ({"resample": "donors"}, ValueError, "unknown value"),
        ({"resample": ()}, ValueError, "resample must be"),
        ({"resample": 3}, TypeError, "resample must be"),
        ({"confidence": 1.0}, ValueError, "confidence must lie in"),
        ({"confidence": float("nan")}, ValueError, "confidence"),
        ({"confidence": "0.9"}, TypeError, "confidence"),
        ({"random_state": -1}, ValueError, "random_state must be >= 0"),
        ({"random_state": 1.5}, TypeError, "random_state"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_bad_arguments(fitted, arguments, error, fragment):
    with pytest.raises(error, match=fragment):
        fitted.bootstrap(**{"n_bootstrap": 2, **arguments})


def test_select_similar_clusters_with_intervals(fitted, table):
    mapping, distance = fitted.compute_mapping(), fitted.compute_distance()
    plain = fitted.select_similar_clusters(mapping, distance, output="table")
    with_intervals = fitted.select_similar_clusters(
        mapping, distance, output="table", intervals=table
    )
    pd.testing.assert_frame_equal(with_intervals[plain.columns], plain)
    keyed = table.set_index(["query", "reference"])
    for _, row in with_intervals.iterrows():
        for column in INTERVAL_COLUMNS:
            assert row[column] == keyed.loc[(row["query"], row["reference"]), column]
    with pytest.raises(ValueError, match="lacks the column"):
        fitted.select_similar_clusters(
            mapping, distance, output="table", intervals=table[["query"]]
        )
    # the dict (the default) has no room for the intervals: an error, no longer ignored
    for output in ({}, {"output": "dict"}):
        with pytest.raises(ValueError, match="intervals= adds columns .* pass output='table'"):
            fitted.select_similar_clusters(mapping, distance, intervals=table, **output)


# --------------------------------------------------------------------------- command line
def test_cli_bootstrap_writes_the_columns(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pairot.cli", "demo", "-q", "--n-top-genes", "200"]
    proc = subprocess.run(
        [*command, "--bootstrap", "3", "--seed", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    matches = pd.read_csv(out / "matches.csv")
    assert INTERVAL_COLUMNS == list(matches.columns[-5:])
    assert matches[INTERVAL_COLUMNS].notna().all().all()
    assert ((matches["top_share"] >= 0) & (matches["top_share"] <= 1)).all()
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"]["n_bootstrap"] == 3
    assert info["parameters"]["seed"] == 2
    assert info["data"]["bootstrap"]["random_state"] == 2
    assert "bootstrap" in info["timings_s"]
    report = (out / "report.html").read_text()
    assert "top-match share" in report and "percentile intervals" in report

    bad = subprocess.run(
        [*command, "--bootstrap", "1", "--out", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert bad.returncode == 2
    assert "--bootstrap" in bad.stderr and "0 (off) or an integer >= 2" in bad.stderr
