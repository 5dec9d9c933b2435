"""init_geom(label_distance_mode="robust"): the robust label distance against a plain-loop
computation, the argument checks, the default mode unchanged, bootstrap and the command line
honouring the mode, and one figure of benchmarks/bench_accuracy.py on its smallest regime."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot.cli import main
from pairot.tl import _bootstrap
from pairot.tl._cost._robust_label_distance import (
    LABEL_DISTANCE_MODES,
    check_mode,
    robust_label_distance,
    up_profiles,
)


# ------------------------------------------------------------------ against a naive loop
def _random_ova(rng, clusters, genes, *, drop_rows=0.1, nan_share=0.05):
    rows = []
    for c in clusters:
        for g in genes:
            if rng.random() < drop_rows:
                continue  # a (cluster, gene) row the table lacks
            auroc = float(rng.uniform(0.2, 1.0)) if rng.random() > nan_share else math.nan
            rows.append((c, g, float(rng.normal()), auroc))
    order = rng.permutation(len(rows))
    table = pd.DataFrame([rows[i] for i in order], columns=["cluster", "gene", "logFC", "auroc"])
    table["cluster"] = pd.Categorical(table["cluster"], categories=clusters)
    return table


def _naive_quantile(values, q):
    """numpy's default (linear) quantile, by hand."""
    values = sorted(values)
    position = q * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (position - low) * (values[high] - values[low])


def _naive_robust(query_ova, reference_ova, qc, rc, q_norm, dropped=()):
    """Plain loops over dicts: u = max(auroc - 0.5, 0), Pearson, 1 - S, step 5."""
    shared = [g for g in dict.fromkeys(query_ova["gene"]) if g in set(reference_ova["gene"])]
    genes = [g for g in shared if g not in dropped]

    def profile(table, cluster):
        lookup = {}
        for c, g, a in zip(table["cluster"], table["gene"], table["auroc"], strict=True):
            if c == cluster and not math.isnan(a):
                lookup[g] = max(a - 0.5, 0.0)
        return [lookup.get(g, 0.0) for g in genes]

    def pearson(x, y):
        n = len(x)
        mx, my = sum(x) / n, sum(y) / n
        sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
        sxx = sum((a - mx) ** 2 for a in x)
        syy = sum((b - my) ** 2 for b in y)
        if sxx == 0 or syy == 0:
            return 0.0
        return sxy / math.sqrt(sxx * syy)

    D = [[1.0 - pearson(profile(query_ova, q), profile(reference_ova, r)) for r in rc] for q in qc]
    scale = _naive_quantile([d for row in D for d in row], q_norm)
    L = [[min(d / scale, 1.0) for d in row] for row in D]
    return np.array(D), np.array(L)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_label_distance_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    qc = [f"q{i}" for i in range(4)]
    rc = [f"r{i}" for i in range(5)]
    genes = [f"G{i}" for i in range(30)]
    query = _random_ova(rng, qc, genes + ["ONLY_Q"])
    reference = _random_ova(rng, rc, genes[::-1] + ["ONLY_R"])  # other gene order
    D, L = robust_label_distance(query, reference, qc, rc, q_norm=0.4, gene_filtering=False)
    D_naive, L_naive = _naive_robust(query, reference, qc, rc, 0.4)
    np.testing.assert_allclose(D.to_numpy(), D_naive, rtol=0, atol=1e-12)
    np.testing.assert_allclose(L.to_numpy(), L_naive, rtol=0, atol=1e-12)
    assert list(L.index) == qc and list(L.columns) == rc
    assert L.index.name == "query_cluster" and L.columns.name == "reference_cluster"


def test_gene_filtering_leaves_out_uninformative_genes():
    rng = np.random.default_rng(5)
    qc, rc = ["a", "b", "c"], ["x", "y", "z"]
    genes = [f"GENE{i:05d}" for i in range(20)] + ["MT-CO1", "RPL3", "RPS6"]
    query = _random_ova(rng, qc, genes, drop_rows=0, nan_share=0)
    reference = _random_ova(rng, rc, genes, drop_rows=0, nan_share=0)
    D, L = robust_label_distance(query, reference, qc, rc, gene_filtering=True)
    dropped = {"MT-CO1", "RPL3", "RPS6"}
    D_naive, L_naive = _naive_robust(query, reference, qc, rc, 0.33, dropped=dropped)
    np.testing.assert_allclose(D.to_numpy(), D_naive, atol=1e-12)
    np.testing.assert_allclose(L.to_numpy(), L_naive, atol=1e-12)
    D_all, _ = robust_label_distance(query, reference, qc, rc, gene_filtering=False)
    assert not np.allclose(D_all.to_numpy(), D.to_numpy())


def test_profiles_and_constant_rows():
    table = pd.DataFrame(
        {
            "cluster": ["a", "a", "a", "b", "b"],
            "gene": ["G1", "G2", "G3", "G1", "G3"],
            "auroc": [0.9, 0.4, np.nan, 0.5, 0.5],
        }
    )
    u = up_profiles(table, ["b", "a"], pd.Index(["G3", "G2", "G1"]))
    np.testing.assert_array_equal(u, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.4]])
    # cluster b has a constant (all-zero) profile: correlation 0, D = 1 against everything
    D, _ = robust_label_distance(table, table, ["a", "b"], ["a", "b"], gene_filtering=False)
    np.testing.assert_allclose(D.loc["b"].to_numpy(), [1.0, 1.0])
    assert D.loc["a", "a"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"no rows for the cluster\(s\) \['c'\]"):
        up_profiles(table, ["a", "c"], pd.Index(["G1"]))
    with pytest.raises(ValueError, match="missing the column"):
        up_profiles(table.drop(columns="auroc"), ["a"], pd.Index(["G1"]))


def test_check_mode():
    assert LABEL_DISTANCE_MODES == ("pairot", "robust", "auto")
    assert check_mode("robust") == "robust"
    assert check_mode("auto") == "auto"
    with pytest.raises(
        ValueError, match=r"label_distance_mode='Robust'.*\['pairot', 'robust', 'auto'\]"
    ):
        check_mode("Robust")
    with pytest.raises(TypeError, match="label_distance_mode must be a string"):
        check_mode(None)


# ------------------------------------------------------------------------ in DatasetMap
@pytest.fixture(scope="module")
def studies():
    raw = pr.datasets.pbmc_demo()
    return pr.pp.preprocess_adatas(*raw, "cell_type", "cell_type", "sample_id", "sample_id", 200)


@pytest.fixture(scope="module")
def maps(studies):
    out = {}
    for mode in ("pairot", "robust"):
        dm = pr.tl.DatasetMap(*studies)
        dm.init_geom(batch_size=128, label_distance_mode=mode)
        dm.init_problem()
        dm.solve(progress=False)
        out[mode] = dm
    return out


def test_default_mode_is_the_published_one(studies, maps):
    dm = pr.tl.DatasetMap(*studies)
    dm.init_geom(batch_size=128)
    pairot = maps["pairot"]
    assert dm.label_distance_mode == pairot.label_distance_mode == "pairot"
    pd.testing.assert_frame_equal(dm.label_distance, pairot.label_distance)
    np.testing.assert_array_equal(dm.geom.x_aug, pairot.geom.x_aug)
    np.testing.assert_array_equal(dm.geom.y_aug, pairot.geom.y_aug)


def test_robust_mode_builds_the_robust_distance(studies, maps):
    dm = maps["robust"]
    info1, info2 = dm._info
    _, L = robust_label_distance(
        info1["de_ova"], info2["de_ova"], dm.query_clusters, dm.reference_clusters
    )
    pd.testing.assert_frame_equal(dm.label_distance, L)
    assert not np.allclose(L.to_numpy(), maps["pairot"].label_distance.to_numpy())
    # the cost's label columns are lambda_label * L[query cluster]
    k = len(dm.reference_clusters)
    expected = (1.5 * L.to_numpy(dtype=np.float32))[dm.geom.query_codes]
    np.testing.assert_allclose(dm.geom.x_aug[:, -k:], expected, rtol=1e-6)
    np.testing.assert_array_equal(
        dm.geom.x_aug[:, :-k], maps["pairot"].geom.x_aug[:, :-k]
    )  # same cell features
    params = dm.label_distance_params
    assert params["label_distance_mode"] == "robust" and params["q_norm"] == 0.33
    params["label_distance_mode"] = "changed"  # a copy
    assert dm.label_distance_mode == "robust"
    # the marker genes are listed in both modes
    q, r = dm.query_clusters[0], dm.reference_clusters[0]
    pd.testing.assert_frame_equal(
        dm.DEGs_label_distance[q][r], maps["pairot"].DEGs_label_distance[q][r]
    )


def test_robust_mode_argument_errors(studies):
    dm = pr.tl.DatasetMap(*studies)
    with pytest.raises(ValueError, match=r"label_distance_mode='marker'.*choose one of"):
        dm.init_geom(label_distance_mode="marker")
    with pytest.raises(TypeError, match="label_distance_mode must be a string"):
        dm.init_geom(label_distance_mode=1)
    with pytest.raises(pr.tl._dataset_map.StageError, match="init_geom"):
        _ = dm.label_distance_mode
    assert dm.geom is None


def test_bootstrap_honours_the_robust_mode(maps, caplog):
    dm = maps["robust"]
    with caplog.at_level(logging.INFO, logger="pairot"):
        table = dm.bootstrap(2, random_state=1, progress=False)
    assert table.attrs["label_distance_mode"] == "robust"
    assert table.attrs["resample"] == ["cells"] and table.attrs["samples_resampled"] == []
    assert "robust label distance" in caplog.text
    # the point estimates are those of the robust fit
    point = table.set_index(["query", "reference"])["mapping"]
    mapping = dm.compute_mapping().stack()
    np.testing.assert_allclose(point.loc[mapping.index].to_numpy(), mapping.to_numpy())
    assert "label_distance" not in dm._bootstrap_state[2]
    # samples alone: a warning, then the cells are resampled
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairot"):
        table = dm.bootstrap(2, resample="samples", random_state=1, progress=False)
    assert table.attrs["resample"] == ["cells"]
    assert "robust label distance" in caplog.text and "resampling the cells" in caplog.text
    # the published mode still resamples the donors
    table = maps["pairot"].bootstrap(2, resample="samples", random_state=1, progress=False)
    assert table.attrs["label_distance_mode"] == "pairot"
    assert table.attrs["samples_resampled"] == ["query", "reference"]
    assert _bootstrap.label_params(object())["label_distance_mode"] == "pairot"


def test_cli_label_distance_mode(maps, tmp_path, capsys):
    out = tmp_path / "robust"
    code = main(
        ["demo", "--out", str(out), "--quiet", "--no-cells", "--n-top-genes", "200"]
        + ["--label-distance-mode", "robust"]
    )
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"]["label_distance_mode"] == "robust"
    written = pd.read_parquet(out / "label_distance.parquet")
    expected = maps["robust"].label_distance
    np.testing.assert_allclose(
        written.loc[expected.index, expected.columns].to_numpy(), expected.to_numpy()
    )
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", str(tmp_path / "x"), "--label-distance-mode", "markers"])
    assert exit_.value.code == 2
    assert "--label-distance-mode" in capsys.readouterr().err


# ------------------------------------------------------------- one benchmark figure
#: The "tiny" regime of benchmarks/bench_accuracy.py (its NOISY studies, smaller).
TINY = {
    "n_cell_types": 6,
    "mean_library_size": 800.0,
    "marker_log_fold_change": (0.5, 1.2),
    "n_markers_type": 3,
    "n_markers_lineage": 15,
    "study_effect_sd": 0.4,
    "donor_effect_sd": 0.2,
    "dispersion": 0.4,
    "n_samples_query": 2,
    "n_samples_reference": 2,
}


def test_tiny_regime_accuracy_figure():
    """Seeds 0-2 of the benchmark's "tiny" regime: top-1 correct query clusters (of 18) as
    ``bench_accuracy.py --regimes tiny --seeds 3`` printed them (benchmarks/README.md):
    default 13, robust 17, Spearman alone 13."""
    correct = {"default": 0, "robust": 0, "spearman": 0}
    fits = {
        "default": {},
        "robust": {"label_distance_mode": "robust"},
        "spearman": {"lambda_label": 0.0},
    }
    for seed in range(3):
        query, reference = pr.datasets.simulate_pair(240, 240, 800, random_state=seed, **TINY)
        q, r = pr.pp.preprocess_adatas(
            query, reference, "cell_type", "cell_type", "sample_id", "sample_id", 300
        )
        truth = query.uns["simulation"]["truth"].set_index("query_cluster")["reference_cluster"]
        for method, kwargs in fits.items():
            dm = pr.tl.DatasetMap(q, r)
            dm.init_geom(**kwargs)
            dm.init_problem()
            dm.solve(progress=False)
            best = dm.compute_mapping().idxmax(axis=1)
            correct[method] += int((best == truth.reindex(best.index)).sum())
    assert correct == {"default": 13, "robust": 17, "spearman": 13}
