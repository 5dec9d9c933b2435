"""DatasetMap against a dense float64 implementation of the whole model written from METHOD.md."""

import re

import anndata as ad
import numpy as np
import ot
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial.distance import jensenshannon
from scipy.stats import rankdata

import pairot as pr

# a larger epsilon than the default 0.05 so that both solvers converge tightly in seconds
EPS = 0.2


# ----------------------------------------------------------------------------- naive model
def naive_filter(table, keys):
    ok = (table["logFC"] >= 1.0) & (table["adj.P.Val"] <= 0.05) & (table["auroc"] >= 0.6)
    out = {}
    for row in table[ok].itertuples(index=False):
        gene = str(row.gene)
        if pr.pp.flag_uninformative_genes([gene])[0]:
            continue
        key = tuple(str(getattr(row, k)) for k in keys)
        out.setdefault(key, []).append((gene, float(row.logFC)))
    return {k: sorted(v, key=lambda t: -t[1]) for k, v in out.items()}


def naive_marker_lists(de_ova, de_ava, clusters, n_ova, n_ava):
    ova = naive_filter(de_ova, ["cluster"])
    ava = naive_filter(de_ava, ["cluster", "versus"])
    top = {c: [g for g, _ in ova.get((c,), [])[:10]] for c in clusters}
    lists = {}
    for a in clusters:
        entries = list(ova.get((a,), []))[: n_ova if n_ova is not None else None]
        for b in clusters:
            if b == a or not top[a]:
                continue
            ta, tb = set(top[a]), set(top[b])
            overlap = len(ta & tb) / len(ta | tb) * len(tb) / len(ta)
            if overlap >= 0.3:
                entries += ava.get((a, b), [])[: n_ava if n_ava is not None else None]
        entries = sorted(enumerate(entries), key=lambda t: (-t[1][1], t[0]))
        seen, genes = set(), []
        for _, (g, _) in entries:
            if g not in seen:
                seen.add(g)
                genes.append(g)
        lists[a] = genes
    return lists


def naive_label_distance(qlists, rlists, qc, rc):
    D = np.zeros((len(qc), len(rc)))
    for i, q in enumerate(qc):
        for j, r in enumerate(rc):
            if not qlists[q]:
                D[i, j] = 250
                continue
            terms = []
            for rq, g in enumerate(qlists[q]):
                rr = rlists[r].index(g) if g in rlists[r] else 250
                terms.append(abs(np.log1p(rq) - np.log1p(rr)))
            D[i, j] = np.mean(terms)
    return np.minimum(D / np.quantile(D, 0.33), 1.0)


def spearman_matrix(X, Y):
    def ranks(M):
        M = M.toarray() if sparse.issparse(M) else np.asarray(M)
        R = np.array([rankdata(row) for row in M], dtype=np.float64)
        R -= R.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(R, axis=1, keepdims=True)
        return np.divide(R, norms, out=np.zeros_like(R), where=norms > 0)

    return ranks(X) @ ranks(Y).T


def naive_model(q, r, *, epsilon=0.05, lf=0.5, ll=1.5):
    qc = list(q.obs["cell_type"].cat.categories)
    rc = list(r.obs["cell_type"].cat.categories)
    qlists = naive_marker_lists(q.uns["pairot"]["de_ova"], q.uns["pairot"]["de_ava"], qc, 10, 3)
    rlists = naive_marker_lists(
        r.uns["pairot"]["de_ova"], r.uns["pairot"]["de_ava"], rc, None, None
    )
    L = naive_label_distance(qlists, rlists, qc, rc)
    ql = q.obs["cell_type"].cat.codes.to_numpy()
    rl = r.obs["cell_type"].cat.codes.to_numpy()
    C = lf * 0.5 * (1 - spearman_matrix(q.X, r.X)) + ll * L[ql][:, rl]
    a = 1.0 / np.bincount(ql)[ql] / len(qc)
    b = 1.0 / np.bincount(rl)[rl] / len(rc)
    P = ot.sinkhorn(a, b, C, reg=epsilon, method="sinkhorn_log", stopThr=1e-10, numItermax=20_000)
    mean = np.zeros((len(qc), len(rc)))
    js = np.zeros_like(mean)
    tmass = np.zeros_like(mean)
    dist = np.zeros_like(mean)
    for k in range(len(qc)):
        tm = P[ql == k].sum(axis=0)
        p = tm / b
        for c in range(len(rc)):
            mean[k, c] = np.mean(tm[rl == c] / b[rl == c])
            js[k, c] = 1 - jensenshannon(p, (rl == c).astype(float), base=2)
            tmass[k, c] = tm[rl == c].sum() / a[ql == k].sum()
            block = P[np.ix_(ql == k, rl == c)]
            cost = C[np.ix_(ql == k, rl == c)]
            dist[k, c] = (block * cost).sum() / block.sum()
    return {
        "L": L,
        "C": C,
        "P": P,
        "mean": mean,
        "jensen_shannon": js,
        "transported_mass": tmass,
        "distance": dist,
    }


# ----------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def preprocessed():
    query, reference = pr.datasets.pbmc_demo()
    return pr.pp.preprocess_adatas(
        query,
        reference,
        n_top_genes=200,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
    )


@pytest.fixture(scope="module")
def fitted(preprocessed):
    dm = pr.tl.DatasetMap(*preprocessed)
    dm.init_geom(batch_size=64, epsilon=EPS)
    dm.init_problem()
    dm.solve(threshold=1e-5, max_iterations=20_000, progress=False)
    return dm


@pytest.fixture(scope="module")
def reference_model(preprocessed):
    return naive_model(*preprocessed, epsilon=EPS)


def test_label_distance_matches_naive(fitted, reference_model):
    np.testing.assert_allclose(fitted.label_distance.to_numpy(), reference_model["L"], atol=1e-12)
    assert fitted.label_distance.to_numpy().min() < 0.9  # not degenerate


def test_mapping_sums_say_what_each_mapping_means(fitted, reference_model):
    """Balanced OT: the "mean" mapping sums to 1 down each column (the share of each reference
    cell's mass by query cluster, averaged over the reference cluster); "transported_mass"
    sums to 1 along each row (where each query cluster's mass goes). The same holds for the
    independent dense POT plan."""
    mappings = fitted.compute_mapping(None)
    mean = mappings["mean"].to_numpy()
    mass = mappings["transported_mass"].to_numpy()
    np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=2e-3)
    np.testing.assert_allclose(mass.sum(axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(reference_model["mean"].sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(reference_model["transported_mass"].sum(axis=1), 1.0, atol=1e-6)
    # balanced marginals give every cell of reference cluster c the same b_j = 1 / (n_c C_r),
    # so "mean" = C_r / C_q * "transported_mass" (equal here: 8 clusters on each side)
    n_q, n_r = len(fitted.query_clusters), len(fitted.reference_clusters)
    np.testing.assert_allclose(mean, n_r / n_q * mass, rtol=1e-9, atol=1e-12)


def test_mean_mapping_is_read_per_reference_cell(preprocessed):
    """With uniform marginals the two readings part: "mean" columns still sum to 1, its rows
    do not; "transported_mass" rows sum to 1."""
    dm = pr.tl.DatasetMap(*preprocessed)
    dm.init_geom(batch_size=64, epsilon=EPS)
    dm.init_problem(marginals_distribution="uniform")
    dm.solve(threshold=1e-5, max_iterations=20_000, progress=False)
    mappings = dm.compute_mapping(None)
    mean = mappings["mean"].to_numpy()
    mass = mappings["transported_mass"].to_numpy()
    np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(mass.sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(mean.sum(axis=1) - 1.0).max() > 0.05
    assert np.abs(mass.sum(axis=0) - 1.0).max() > 0.05


def test_degs_ranks_start_at_one(fitted, preprocessed):
    """DEGs_label_distance: rank 1 = top marker, NaN where the gene is not a reference marker,
    and the rank distance recomputed from these 1-based ranks with log (251 for an absent
    gene) is the raw D and, normalized, the label distance."""
    degs = fitted.DEGs_label_distance
    qc, rc = fitted.query_clusters, fitted.reference_clusters
    D = np.zeros((len(qc), len(rc)))
    seen_absent = False
    for i, q in enumerate(qc):
        for j, r in enumerate(rc):
            table = degs[q][r]
            assert list(table.columns[:4]) == ["rank_query", "logFC_query", "rank_ref", "logFC_ref"]
            assert table.index.name == "gene" and table.index.is_unique
            assert table["rank_query"].dtype == np.int64
            assert table["rank_ref"].dtype == np.float64
            if table.empty:
                D[i, j] = 250
                continue
            assert table["rank_query"].tolist() == list(range(1, len(table) + 1))
            present = table["rank_ref"].dropna()
            assert (present >= 1).all() and (present == np.round(present)).all()
            seen_absent |= bool(table["rank_ref"].isna().any())
            assert table["logFC_ref"].isna().equals(table["rank_ref"].isna())
            ranks_ref = table["rank_ref"].fillna(251).to_numpy()
            terms = np.abs(np.log(table["rank_query"].to_numpy()) - np.log(ranks_ref))
            np.testing.assert_allclose(table["contribution"].to_numpy(), terms, atol=1e-12)
            D[i, j] = terms.mean()
    assert seen_absent
    np.testing.assert_allclose(D, fitted._rank_distance.to_numpy(), rtol=1e-12, atol=1e-12)
    L = np.minimum(D / np.quantile(D, 0.33), 1.0)
    np.testing.assert_allclose(fitted.label_distance.to_numpy(), L, atol=1e-12)
    # the top marker of a query cluster in its own namesake's list: present, rank from 1
    table = degs["CD19+ B"]["CD19+ B"]
    assert table["rank_query"].iloc[0] == 1
    assert table["rank_ref"].min() >= 1


def test_cost_matches_dense(fitted, reference_model):
    np.testing.assert_allclose(fitted.geom.cost(), reference_model["C"], atol=1e-5)


def test_plan_matches_pot(fitted, reference_model):
    geom, sol = fitted.geom, fitted.ot_solution
    assert sol.converged
    P = np.exp(
        (np.asarray(sol.f, float)[:, None] + np.asarray(sol.g, float)[None, :] - geom.cost())
        / geom.epsilon
    )
    np.testing.assert_allclose(P, reference_model["P"], atol=1e-4 / P.size, rtol=1e-3)


@pytest.mark.parametrize("method", ["mean", "jensen_shannon", "transported_mass"])
def test_mappings_match_naive(fitted, reference_model, method):
    got = fitted.compute_mapping(method)
    np.testing.assert_allclose(got.to_numpy(), reference_model[method], atol=1e-4)
    assert list(got.index) == list(fitted.adata1.obs["cell_type"].cat.categories)


def test_all_mappings_at_once(fitted):
    both = fitted.compute_mapping(None)
    assert set(both) == {"mean", "jensen_shannon", "transported_mass"}
    pd.testing.assert_frame_equal(both["mean"], fitted.compute_mapping("mean"))


def test_distance_matches_naive(fitted, reference_model):
    np.testing.assert_allclose(
        fitted.compute_distance().to_numpy(), reference_model["distance"], atol=1e-4
    )


def test_subsampled_distance_is_seeded(fitted, reference_model):
    d1 = fitted.compute_distance(n_samples=20, random_state=1)
    d2 = fitted.compute_distance(n_samples=20, random_state=1)
    pd.testing.assert_frame_equal(d1, d2)
    full = fitted.compute_distance()
    assert np.abs(d1.to_numpy() - full.to_numpy()).max() < 0.2


@pytest.mark.parametrize("budget", [0, None], ids=["blocked-log", "kernel"])
def test_batch_size_does_not_change_results(preprocessed, fitted, budget):
    """The fixture runs with batch_size 64 (kernel mode by default); the blocked log-domain
    path with another batch size, and kernel mode, give the same outputs."""
    assert fitted.ot_solution.mode == "kernel"
    dm = pr.tl.DatasetMap(*preprocessed)
    dm.init_geom(batch_size=1000 if budget is None else 37, epsilon=EPS)
    dm.init_problem()
    dm.solve(threshold=1e-5, max_iterations=20_000, progress=False, kernel_memory_budget=budget)
    assert dm.ot_solution.mode == ("log" if budget == 0 else "kernel")
    assert dm.ot_solution.n_iterations == fitted.ot_solution.n_iterations
    np.testing.assert_allclose(dm.ot_solution.f, fitted.ot_solution.f, atol=1e-5)
    for method in ("mean", "jensen_shannon", "transported_mass"):
        np.testing.assert_allclose(
            dm.compute_mapping(method), fitted.compute_mapping(method), atol=1e-6
        )
    np.testing.assert_allclose(dm.compute_distance(), fitted.compute_distance(), atol=1e-6)


def test_h5ad_round_trip_and_downsampled_view(preprocessed, tmp_path):
    paths = []
    for i, adata in enumerate(preprocessed):
        paths.append(tmp_path / f"{i}.h5ad")
        adata.write_h5ad(paths[-1])
    q, r = (ad.read_h5ad(p) for p in paths)
    q = q[pr.pp.downsample_indices(q.obs["cell_type"].to_numpy(), n_samples=25), :]
    assert q.is_view
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(batch_size=50, epsilon=EPS)
    assert dm.geom.x.shape == (q.n_obs, q.n_vars)
    assert dm.geom.y.shape == (r.n_obs, r.n_vars)
    dm.init_problem(tau_a=1.0, tau_b=1.0)
    dm.solve(threshold=1e-5, max_iterations=20_000, progress=False)
    expected = naive_model(q.copy(), r, epsilon=EPS)
    np.testing.assert_allclose(dm.label_distance.to_numpy(), expected["L"], atol=1e-12)
    np.testing.assert_allclose(dm.compute_mapping().to_numpy(), expected["mean"], atol=1e-4)
    assert "pairot" in q.uns and q.is_view  # nothing written into the caller's object


def test_unbalanced_plan_matches_pot(preprocessed):
    dm = pr.tl.DatasetMap(*preprocessed)
    dm.init_geom(batch_size=100, epsilon=EPS)
    dm.init_problem(tau_a=0.9, tau_b=0.95)
    dm.solve(threshold=1e-5, max_iterations=20_000, progress=False)
    eps = EPS
    C = dm.geom.cost()
    P = np.exp(
        (
            np.asarray(dm.ot_solution.f, float)[:, None]
            + np.asarray(dm.ot_solution.g, float)[None, :]
            - C
        )
        / eps
    )
    a, b = dm.ot_prob.a, dm.ot_prob.b
    expected = ot.unbalanced.sinkhorn_unbalanced(
        a,
        b,
        C,
        reg=eps,
        reg_m=(eps * 0.9 / 0.1, eps * 0.95 / 0.05),
        reg_type="entropy",
        method="sinkhorn",
        stopThr=1e-10,
        numItermax=20_000,
    )
    np.testing.assert_allclose(P, expected, atol=1e-4 / P.size, rtol=1e-2)


def test_embedding_features(preprocessed):
    q, r = preprocessed
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom(embedding_layer="X_pca")
    e1, e2 = q.obsm["X_pca"], r.obsm["X_pca"]
    cos = (e1 @ e2.T) / np.outer(np.linalg.norm(e1, axis=1), np.linalg.norm(e2, axis=1))
    np.testing.assert_allclose(dm.geom.x @ dm.geom.y.T, cos, atol=1e-5)
    with pytest.raises(KeyError, match="X_missing"):
        dm.init_geom(embedding_layer="X_missing")


def _feature_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "cell features of" in r.getMessage()]


def test_uninformative_cell_features_are_warned(preprocessed, caplog):
    """Too few HVGs: most cells have no rank vector; the warning says the cell term carries
    no information and the mapping rests on the label term alone."""
    query, reference = pr.datasets.pbmc_demo()
    few = pr.pp.preprocess_adatas(
        query,
        reference,
        "cell_type",
        "cell_type",
        "sample_id",
        "sample_id",
        10,
        min_shared_genes=10,
    )
    # independent count of the cells whose 10 HVG values are all equal
    X1 = few[0].X.toarray() if sparse.issparse(few[0].X) else np.asarray(few[0].X)
    share = np.mean(np.ptp(X1, axis=1) == 0)
    assert share > 0.5
    with caplog.at_level("WARNING", logger="pairot"):
        pr.tl.DatasetMap(*few).init_geom()
    (message,) = _feature_warnings(caplog)
    assert message == (
        f"The cell features of adata1 carry no information: {share:.0%} of its cells have all "
        "their 10 highly variable gene values equal (e.g. all zero), so they have no rank "
        "vector. The cell term of the cost (lambda_feature) then cannot tell cells apart, and "
        "the mapping rests on the label term (the marker genes) alone; use more highly "
        "variable genes (preprocess_adatas(n_top_genes=...), at least 50) or a shared "
        "embedding (init_geom(embedding_layer='X_pca'))."
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="pairot"):
        pr.tl.DatasetMap(*few).init_geom(lambda_feature=0.0)  # no cell term: nothing to say
        pr.tl.DatasetMap(*preprocessed).init_geom()  # 200 HVGs: informative
    assert _feature_warnings(caplog) == []
    # an embedding that is the same for every reference cell
    q, r = (a.copy() for a in preprocessed)
    r.obsm["X_pca"] = np.tile(r.obsm["X_pca"][:1], (r.n_obs, 1))
    with caplog.at_level("WARNING", logger="pairot"):
        pr.tl.DatasetMap(q, r).init_geom(embedding_layer="X_pca")
    (message,) = _feature_warnings(caplog)
    assert re.match(
        r"The cell features of adata2 carry no information: its cells' feature vectors are "
        r"\(nearly\) all the same \(total variance [0-9.e+-]+ across cells, below 0\.01\)\. ",
        message,
    ), message
    assert message.endswith("use a shared embedding that separates the cells.")


def test_select_similar_clusters():
    mapping = pd.DataFrame(
        [[0.9, 0.3, 0.1], [0.2, 0.5, 0.6]], index=["q1", "q2"], columns=["r1", "r2", "r3"]
    )
    distance = pd.DataFrame(
        [[0.2, 1.5, 0.3], [0.9, 0.4, 0.5]], index=mapping.index, columns=mapping.columns
    )
    got = pr.tl.DatasetMap.select_similar_clusters(mapping, distance, output="table")
    assert list(zip(got["query"], got["reference"])) == [("q1", "r1"), ("q2", "r3"), ("q2", "r2")]
    # ranks count each query cluster's matches from 1 (1 = best match)
    assert list(got["rank"]) == [1, 1, 2]
    top1 = pr.tl.DatasetMap.select_similar_clusters(mapping, distance, n_top=1, output="table")
    assert list(top1["reference"]) == ["r1", "r3"]
    assert list(top1["rank"]) == [1, 1]


def test_solve_devices_argument(fitted):
    """One CPU device here: the solve ran on it; a bad ``devices`` is refused before any work,
    leaving the solution as it was."""
    solution = fitted.ot_solution
    assert solution.n_devices == 1
    with pytest.raises(TypeError, match=r"devices must be None or a list of jax devices"):
        fitted.solve(devices="gpu", progress=False)
    with pytest.raises(ValueError, match=r"devices must not be empty"):
        fitted.solve(devices=[], progress=False)
    assert fitted.ot_solution is solution


def test_stage_errors_and_bad_arguments(preprocessed):
    dm = pr.tl.DatasetMap(*preprocessed)
    with pytest.raises(RuntimeError, match="init_geom"):
        dm.init_problem()
    with pytest.raises(RuntimeError, match="init_geom"):
        dm.compute_mapping()
    with pytest.raises(ValueError, match="epsilon"):
        dm.init_geom(epsilon=0)
    with pytest.raises(ValueError, match="batch_size"):
        dm.init_geom(batch_size=0)
    dm.init_geom()
    with pytest.raises(RuntimeError, match="init_problem"):
        dm.solve()
    with pytest.raises(ValueError, match="tau_a"):
        dm.init_problem(tau_a=1.5)
    with pytest.raises(ValueError, match="marginals_distribution"):
        dm.init_problem(marginals_distribution="weird")
    with pytest.raises(ValueError, match="shape"):
        dm.init_problem(a=np.ones(3))
    dm.init_problem()
    with pytest.raises(RuntimeError, match="solve"):
        dm.compute_distance()
    dm.solve(progress=False, max_iterations=20)
    with pytest.raises(ValueError, match="aggregation_method"):
        dm.compute_mapping("median")


def test_inputs_validated(preprocessed):
    q, r = preprocessed
    with pytest.raises(ValueError, match="same genes"):
        pr.tl.DatasetMap(q, r[:, ::-1])
    raw = q.copy()
    del raw.uns["pairot"]
    with pytest.raises(ValueError, match="preprocess_adatas"):
        pr.tl.DatasetMap(raw, r)
