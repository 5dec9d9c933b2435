"""DatasetMap on AnnData preprocessed by the upstream pairOT package (issue 13).

Upstream's layout, built here BY HAND (plain loops, not pairot's converters): no
``uns["pairot"]``; ``uns["de_res_ova"] = {cluster: DataFrame indexed by gene, columns logFC,
P.Value, adj.P.Val, auroc}``, ``uns["de_res_ava"] = {c1: {c2: DataFrame}}``; the clusters in
``obs["cell_type_author"]``. After a write_h5ad / read_h5ad round trip, every DatasetMap result
must equal that of the pairot-preprocessed originals.
"""

from __future__ import annotations

import copy
import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pairot as pr

from ..pp.test_preprocess import SMALL, make_study

NAMES = ["CD4+ T cell", "B cell", "Mono 14+", "NK ñ-γ"]  # spaces, '+', unicode
VALUES = ["logFC", "P.Value", "adj.P.Val", "auroc"]
EPS = 0.2


def upstream_uns(de_ova: pd.DataFrame, de_ava: pd.DataFrame) -> dict:
    """Upstream's ``uns`` entries from pairot's long tables, with plain loops over rows."""
    ova, ava = {}, {}
    for row in de_ova.to_dict("records"):
        ova.setdefault(str(row["cluster"]), []).append(row)
    for row in de_ava.to_dict("records"):
        ava.setdefault(str(row["cluster"]), {}).setdefault(str(row["versus"]), []).append(row)

    def table(rows):
        return pd.DataFrame(
            {name: [float(r[name]) for r in rows] for name in VALUES},
            index=[str(r["gene"]) for r in rows],
        )

    return {
        "de_res_ova": {c: table(rows) for c, rows in ova.items()},
        "de_res_ava": {
            c1: {c2: table(rows) for c2, rows in inner.items()} for c1, inner in ava.items()
        },
    }


def upstream_study(processed: ad.AnnData) -> ad.AnnData:
    """The study as upstream's preprocess_adatas leaves it: same X / obs / var, the clusters
    in obs['cell_type_author'], the DE results as nested dicts in uns."""
    info = processed.uns["pairot"]
    obs = processed.obs.copy()
    obs["cell_type_author"] = obs[info["cell_type_key"]].astype(str).astype("category")
    out = ad.AnnData(X=processed.X.copy(), obs=obs, var=processed.var.copy())
    out.uns.update(upstream_uns(info["de_ova"], info["de_ava"]))
    return out


def results(dm: pr.tl.DatasetMap) -> dict:
    dm.init_geom(epsilon=EPS, batch_size=64)
    dm.init_problem(tau_a=1.0, tau_b=1.0)
    dm.solve(progress=False)
    return {
        "label_distance": dm.label_distance,
        "x": dm.geom.x,
        "y": dm.geom.y,
        "f": np.asarray(dm.ot_solution.f),
        "g": np.asarray(dm.ot_solution.g),
        "mapping": dm.compute_mapping(),
        "all_mappings": dm.compute_mapping(aggregation_method=None),
        "distance": dm.compute_distance(),
        "degs": {q: dict(dm.DEGs_label_distance[q]) for q in dm.query_clusters},
    }


def assert_results_equal(got: dict, expected: dict) -> None:
    pd.testing.assert_frame_equal(got["label_distance"], expected["label_distance"])
    for key in ("x", "y", "f", "g"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(got["mapping"], expected["mapping"], rtol=0, atol=1e-12)
    for method, table in expected["all_mappings"].items():
        pd.testing.assert_frame_equal(got["all_mappings"][method], table, rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(got["distance"], expected["distance"], rtol=0, atol=1e-12)
    for q, per_reference in expected["degs"].items():
        for r, table in per_reference.items():
            pd.testing.assert_frame_equal(got["degs"][q][r], table)


@pytest.fixture(scope="module")
def processed():
    a1 = make_study(21, names=NAMES)
    a2 = make_study(22, n_cells=200, names=NAMES[::-1][:3] + ["pDC"])
    return pr.pp.preprocess_adatas(a1, a2, "ct", "ct", "donor", "donor", n_top_genes=20, **SMALL)


@pytest.fixture(scope="module")
def expected(processed):
    return results(pr.tl.DatasetMap(*processed))


@pytest.fixture(scope="module")
def upstream_files(processed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("upstream")
    out = []
    for name, adata in zip(("query", "reference"), processed, strict=True):
        path = folder / f"{name}.h5ad"
        upstream_study(adata).write_h5ad(path)
        out.append(ad.read_h5ad(path))
    return out


def test_the_hand_built_files_have_upstream_layout(upstream_files, processed):
    q, _ = upstream_files
    assert "pairot" not in q.uns
    assert isinstance(q.uns["de_res_ova"], dict)
    frame = q.uns["de_res_ova"]["CD4+ T cell"]
    assert list(frame.columns) == VALUES
    assert frame.index.dtype == object
    assert set(q.uns["de_res_ava"]["B cell"]) == set(NAMES) - {"B cell"}
    assert list(q.uns["de_res_ova"]) == sorted(NAMES)  # h5ad gives the keys back sorted
    # the loop above agrees with the converter it must not rely on
    de_res_ova, _ = pr.pp.de_tables_to_dicts(
        processed[0].uns["pairot"]["de_ova"], processed[0].uns["pairot"]["de_ava"]
    )
    np.testing.assert_array_equal(frame.to_numpy(), de_res_ova["CD4+ T cell"].to_numpy())


def test_dataset_map_on_upstream_files_equals_pairot_files(upstream_files, expected, caplog):
    before = [copy.deepcopy(dict(a.uns)) for a in upstream_files]
    obs_before = [a.obs.copy() for a in upstream_files]
    with caplog.at_level(logging.INFO, logger="pairot"):
        dm = pr.tl.DatasetMap(*upstream_files)
    converted = [r for r in caplog.records if "converted upstream pairOT DE results" in r.message]
    assert [r.getMessage().split(":")[0] for r in converted] == ["adata1", "adata2"]
    assert_results_equal(results(dm), expected)
    for adata, uns, obs in zip(upstream_files, before, obs_before, strict=True):
        assert "pairot" not in adata.uns  # the caller's AnnData is not modified
        assert list(adata.uns) == list(uns)
        for key in ("de_res_ova",):
            for cluster, frame in uns[key].items():
                pd.testing.assert_frame_equal(adata.uns[key][cluster], frame)
        pd.testing.assert_frame_equal(adata.obs, obs)


def test_one_upstream_and_one_pairot_study(upstream_files, processed, expected):
    dm = pr.tl.DatasetMap(processed[0], upstream_files[1])
    assert_results_equal(results(dm), expected)


def test_upstream_files_downsampled_views(upstream_files, processed):
    """The tutorial's downsampling on obs['cell_type_author'] works on upstream files."""
    q, r = upstream_files
    keep = pr.pp.downsample_indices(q.obs["cell_type_author"].to_numpy(), n_samples=20)
    dm = pr.tl.DatasetMap(q[keep, :], r)
    reference = pr.tl.DatasetMap(processed[0][keep, :], processed[1])
    dm.init_geom(epsilon=EPS)
    reference.init_geom(epsilon=EPS)
    pd.testing.assert_frame_equal(dm.label_distance, reference.label_distance)


def test_slash_in_names_works_in_memory(processed):
    """Upstream's dicts hold any name in memory; only h5ad cannot store '/' in a key (see
    tests/pp/test_upstream_forms.py for the error after a round trip)."""
    renamed = []
    for adata in processed:
        a = adata.copy()
        info = a.uns["pairot"]
        mapping = {c: c.replace(" ", "/") for c in info["de_ova"]["cluster"].cat.categories}
        key = info["cell_type_key"]
        a.obs[key] = a.obs[key].cat.rename_categories(mapping)
        for table in ("de_ova", "de_ava"):
            for column in ("cluster", "versus"):
                if column in info[table]:
                    info[table][column] = info[table][column].cat.rename_categories(mapping)
        renamed.append(a)
    expected = results(pr.tl.DatasetMap(*renamed))
    upstream = [upstream_study(a) for a in renamed]
    got = results(pr.tl.DatasetMap(*upstream))
    assert "CD4+/T/cell" in got["mapping"].index
    assert_results_equal(got, expected)


def test_missing_results_and_columns_are_clear_errors(upstream_files, processed):
    q, r = upstream_files
    bare = ad.AnnData(q.X, obs=q.obs.copy(), var=q.var.copy())
    with pytest.raises(
        ValueError, match=r"uns\['pairot'\] is missing.*so are upstream.*uns\['de_res_ova'\]"
    ):
        pr.tl.DatasetMap(bare, r)
    half = bare.copy()
    half.uns["de_res_ova"] = q.uns["de_res_ova"]
    with pytest.raises(ValueError, match=r"has 'de_res_ova' but not 'de_res_ava'"):
        pr.tl.DatasetMap(half, r)
    no_column = q.copy()
    del no_column.obs["cell_type_author"]
    with pytest.raises(KeyError, match=r"no column 'cell_type_author'.*obs has: 'ct', 'donor'"):
        pr.tl.DatasetMap(no_column, r)
    broken = q.copy()
    broken.uns["de_res_ova"] = dict(q.uns["de_res_ova"])
    broken.uns["de_res_ova"]["B cell"] = broken.uns["de_res_ova"]["B cell"].drop(columns="auroc")
    with pytest.raises(ValueError, match=r"adata1.uns\['de_res_ova'\]\['B cell'\] is missing"):
        pr.tl.DatasetMap(broken, r)
    relabeled = q.copy()
    relabeled.obs["cell_type_author"] = relabeled.obs["cell_type_author"].cat.rename_categories(
        {"B cell": "Plasma"}
    )
    dm = pr.tl.DatasetMap(relabeled, r)
    with pytest.raises(ValueError, match=r"clusters \['Plasma'\]"):
        dm.init_geom(epsilon=EPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pairot files still need no conversion
        pr.tl.DatasetMap(*processed)
