"""The cluster-level correction of Sinkhorn: the coarse solver against POT, the per-cluster
pieces against dense numpy, and the corrected solver against POT's exact dual solvers."""

from __future__ import annotations

import logging

import numpy as np
import ot
import ot_problems
import pytest
from jax import lax
from scipy.special import logsumexp

import pairot as pr
from pairot.tl import _ot
from pairot.tl._ot import _checks, _correction, _kernel, _logdomain
from pairot.tl._ot._cluster_scaling import cluster_scaling

EPS = 0.05
BUDGETS = [0, _ot.DEFAULT_KERNEL_MEMORY_BUDGET]

#: Label distances of the test problems: query clusters 0 and 1 both match reference
#: cluster 0 and nothing matches reference cluster 1, so balanced marginals force mass across
#: label distance 1 (kernel entries ``exp(-1.5 / 0.05)``): the slow case of plain Sinkhorn.
LABELS = np.array([[0.1, 1, 1, 1], [0.2, 1, 1, 1], [1, 1, 0.1, 1], [1, 1, 1, 0.15]])


def clustered_problem(seed: int, n: int = 120, m: int = 150, d: int = 8):
    return ot_problems.clustered_problem(seed, LABELS, n, m, d)


def plan(cost, f, g, eps=EPS):
    return np.exp((np.asarray(f, float)[:, None] + np.asarray(g, float)[None, :] - cost) / eps)


def solve(problem, **kwargs):
    return ot_problems.solve(problem, **({"threshold": 1e-9, "max_iterations": 20_000} | kwargs))


def pot_relaxed(a, b, cost, tau_a, tau_b):
    """POT's plan of the relaxed problem in pairot's convention (tau = 1: hard marginal)."""
    return ot.unbalanced.sinkhorn_unbalanced(
        a,
        b,
        cost,
        reg=EPS,
        reg_m=tuple(np.inf if t == 1 else EPS * t / (1 - t) for t in (tau_a, tau_b)),
        reg_type="entropy",
        method="sinkhorn",
        stopThr=1e-13,
        numItermax=200_000,
    )


# ------------------------------------------------------------------ the coarse solver
def random_coarse(seed: int, kq: int = 5, kr: int = 7, low: float = -8.0):
    rng = np.random.default_rng(seed)
    log_mass = rng.uniform(low, 0.0, size=(kq, kr))
    A = rng.uniform(0.5, 1.5, kq)
    B = rng.uniform(0.5, 1.5, kr)
    return log_mass, A / A.sum(), B / B.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_scaling_balanced_matches_pot(seed):
    log_mass, A, B = random_coarse(seed)
    x, y, converged = cluster_scaling(log_mass, np.log(A), np.log(B), tol=1e-12)
    assert converged
    T = np.exp(log_mass + x[:, None] + y[None, :])
    # the scaled matrix is the entropic plan with kernel M: POT's on the cost -log M, reg 1
    expected = ot.sinkhorn(
        A, B, -log_mass, reg=1.0, method="sinkhorn_log", stopThr=1e-14, numItermax=100_000
    )
    np.testing.assert_allclose(T, expected, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize(("tau_a", "tau_b"), [(0.9, 0.9), (1.0, 0.95), (0.7, 1.0)])
def test_cluster_scaling_relaxed_matches_pot(tau_a, tau_b):
    log_mass, A, B = random_coarse(3)
    B = 1.4 * B
    x, y, converged = cluster_scaling(
        log_mass, np.log(A), np.log(B), tau_a=tau_a, tau_b=tau_b, tol=1e-12
    )
    assert converged
    T = np.exp(log_mass + x[:, None] + y[None, :])
    reg_m = tuple(np.inf if t == 1 else t / (1 - t) for t in (tau_a, tau_b))
    expected = ot.unbalanced.sinkhorn_unbalanced(
        A,
        B,
        -log_mass,
        reg=1.0,
        reg_m=reg_m,
        reg_type="entropy",
        method="sinkhorn",
        stopThr=1e-14,
        numItermax=200_000,
    )
    np.testing.assert_allclose(T, expected, rtol=1e-7, atol=1e-13)


def test_cluster_scaling_wide_range_solves_what_sinkhorn_cannot():
    """Entries spread over exp(-40): Newton meets the marginals where 20,000 coarse Sinkhorn
    iterations (a naive loop) are still far off."""
    log_mass = np.array([[0.0, -40.0, -40.0], [-1.0, -40.0, -40.0], [-40.0, -40.0, 0.0]])
    A = np.full(3, 1 / 3)
    B = np.full(3, 1 / 3)
    x, y, converged = cluster_scaling(log_mass, np.log(A), np.log(B), tol=1e-12)
    assert converged
    T = np.exp(log_mass + x[:, None] + y[None, :])
    np.testing.assert_allclose(T.sum(axis=1), A, rtol=1e-10)
    np.testing.assert_allclose(T.sum(axis=0), B, rtol=1e-10)
    u, v = np.zeros(3), np.zeros(3)
    for _ in range(20_000):
        u = np.log(A) - logsumexp(log_mass + v[None, :], axis=1)
        v = np.log(B) - logsumexp(log_mass + u[:, None], axis=0)
    naive = np.exp(log_mass + u[:, None] + v[None, :])
    assert np.abs(naive.sum(axis=1) - A).sum() > 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_scaling_several_weakly_linked_groups(seed):
    """Three groups of clusters linked only by exp(-45)-small masses, with target masses that
    force mass across the weak links: every cluster's marginal is met."""
    rng = np.random.default_rng(seed)
    groups_q = np.repeat(np.arange(3), 3)
    groups_r = np.repeat(np.arange(3), 4)
    log_mass = np.where(
        groups_q[:, None] == groups_r[None, :],
        rng.uniform(-3, 0, (9, 12)),
        rng.uniform(-47, -43, (9, 12)),
    )
    A = rng.dirichlet(np.ones(9))
    B = rng.dirichlet(np.ones(12))
    x, y, converged = cluster_scaling(log_mass, np.log(A), np.log(B), tol=1e-12)
    assert converged
    T = np.exp(log_mass + x[:, None] + y[None, :])
    np.testing.assert_allclose(T.sum(axis=1), A, rtol=1e-9)
    np.testing.assert_allclose(T.sum(axis=0), B, rtol=1e-9)


def test_cluster_scaling_without_solution_returns_zero_shifts():
    log_mass, A, B = random_coarse(4, kq=3, kr=3)
    # a cluster with target mass but no plan mass cannot be corrected
    no_mass = log_mass.copy()
    no_mass[1] = -np.inf
    x, y, converged = cluster_scaling(no_mass, np.log(A), np.log(B))
    assert not converged and not x.any() and not y.any()
    nan = log_mass.copy()
    nan[0, 0] = np.nan
    x, y, converged = cluster_scaling(nan, np.log(A), np.log(B))
    assert not converged and not x.any() and not y.any()


def test_cluster_scaling_skips_clusters_without_mass():
    """A cluster that carries no mass on either side keeps shift 0; the others are solved."""
    log_mass, A, B = random_coarse(5, kq=4, kr=3)
    log_mass[2] = -np.inf
    log_a = np.log(A)
    log_a[2] = -np.inf
    B = B * np.exp(logsumexp(np.delete(log_a, 2))) / B.sum()
    x, y, converged = cluster_scaling(log_mass, log_a, np.log(B), tol=1e-12)
    assert converged and x[2] == 0
    keep = [0, 1, 3]
    T = np.exp(log_mass[keep] + x[keep, None] + y[None, :])
    np.testing.assert_allclose(T.sum(axis=1), np.exp(log_a[keep]), rtol=1e-10)
    np.testing.assert_allclose(T.sum(axis=0), B, rtol=1e-10)


# -------------------------------------------------------- per-cluster pieces on the device
@pytest.mark.parametrize("use_kernel", [False, True])
def test_cluster_row_lse_and_log_mass_match_dense(use_kernel):
    x_aug, y_aug, offset, a, b, qc, rc, cost = clustered_problem(1)
    rng = np.random.default_rng(0)
    f = rng.normal(scale=0.2, size=len(a))
    g = rng.normal(scale=0.2, size=len(b))
    kr, kq = rc.max() + 1, qc.max() + 1
    segments = np.eye(kr)[rc]
    with _checks._dtype_context(np.dtype(np.float64)):
        if use_kernel:
            K, row_min, _ = _kernel._build_kernel(
                x_aug, y_aug, offset, EPS, block=32, precision=lax.Precision.HIGHEST
            )
            row_c = _kernel._kernel_initial_row_lse(
                K, row_min, g, EPS, segments, precision=lax.Precision.HIGHEST
            )
        else:
            row_c = _logdomain._initial_row_lse(
                x_aug,
                y_aug,
                g,
                offset,
                EPS,
                segments,
                block_x=32,
                precision=lax.Precision.HIGHEST,
            )
        log_mass, log_ta, log_tb = _correction._cluster_problem(
            row_c,
            f,
            g,
            np.log(a),
            np.log(b),
            qc,
            rc,
            EPS,
            0.9,
            1.0,
            n_query_clusters=kq,
            n_ref_clusters=kr,
        )
        x_shift = np.linspace(-1, 1, kq)
        y_shift = np.linspace(2, -2, kr)
        f2, g2, lse_row = _correction._shift_potentials(f, g, row_c, x_shift, y_shift, qc, rc, EPS)
    s = (g[None, :] - cost) / EPS
    expected_row_c = np.stack([logsumexp(s[:, rc == c], axis=1) for c in range(kr)], axis=1)
    np.testing.assert_allclose(np.asarray(row_c), expected_row_c, rtol=1e-10)
    P = plan(cost, f, g)
    expected_mass = np.array(
        [[P[np.ix_(qc == k, rc == c)].sum() for c in range(kr)] for k in range(kq)]
    )
    np.testing.assert_allclose(np.exp(np.asarray(log_mass)), expected_mass, rtol=1e-10)
    kappa_a = (1 - 0.9) / (0.9 * EPS)
    np.testing.assert_allclose(
        np.exp(np.asarray(log_ta)), np.bincount(qc, a * np.exp(-kappa_a * f)), rtol=1e-10
    )
    np.testing.assert_allclose(np.exp(np.asarray(log_tb)), np.bincount(rc, b), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(f2), f + EPS * x_shift[qc], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g2), g + EPS * y_shift[rc], rtol=1e-12)
    expected_lse = logsumexp((np.asarray(g2)[None, :] - cost) / EPS, axis=1)
    np.testing.assert_allclose(np.asarray(lse_row), expected_lse, rtol=1e-10)


# ----------------------------------------------------------------- the corrected solver
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("seed", [0, 1])
def test_corrected_sinkhorn_matches_pot_in_fewer_iterations(seed, budget):
    problem = clustered_problem(seed)
    x_aug, y_aug, offset, a, b, qc, rc, cost = problem
    fast = solve(problem, kernel_memory_budget=budget)
    assert fast.converged and fast.n_corrections >= 1
    assert fast.mode == ("log" if budget == 0 else "kernel")
    P = plan(cost, fast.f, fast.g)
    # an independent solver of the same entropic problem: L-BFGS on the smooth dual
    expected = ot.smooth.smooth_ot_dual(a, b, cost, EPS, reg_type="kl", stopThr=1e-15)
    np.testing.assert_allclose(P, expected, rtol=1e-5, atol=1e-9 * expected.max())
    np.testing.assert_allclose(P.sum(axis=1), a, rtol=1e-6)
    np.testing.assert_allclose(P.sum(axis=0), b, rtol=1e-6)
    # plain Sinkhorn: the slow mode; at 1e-3 it needs many times the iterations
    plain = solve(problem, threshold=1e-3, cluster_correction=False, kernel_memory_budget=budget)
    quick = solve(problem, threshold=1e-3, kernel_memory_budget=budget)
    assert plain.converged and quick.converged and plain.n_corrections == 0
    assert plain.n_iterations >= 10 * quick.n_iterations
    # without codes nothing is corrected either
    uncoded = solve(problem, threshold=1e-3, query_codes=None, kernel_memory_budget=budget)
    assert uncoded.n_iterations == plain.n_iterations and uncoded.n_corrections == 0


def test_checks_stay_every_inner_iterations_and_early_correction_only_when_needed():
    problem = clustered_problem(0)
    out = solve(problem, threshold=1e-9, inner_iterations=7)
    # checks at 7, 14, ...: the early correction (after 2 iterations) is not a check
    assert out.n_iterations % 7 == 0 and out.errors.shape == (out.n_iterations // 7,)
    assert out.n_corrections >= 2
    # an error already below the threshold after 2 iterations: nothing to correct, and the
    # look counts as a check that ends the solve
    easy = solve(problem, threshold=10.0)
    assert easy.converged and easy.n_iterations == 2 and easy.n_corrections == 0
    assert easy.errors.shape == (1,) and easy.errors[0] < 10.0
    # fewer iterations in all than the early correction needs: plain iterations
    short = solve(problem, max_iterations=2, inner_iterations=10)
    assert short.n_iterations == 2 and short.n_corrections == 0


def test_no_correction_above_the_cluster_limit(monkeypatch, caplog):
    problem = clustered_problem(0)
    monkeypatch.setattr(_correction, "_MAX_CORRECTION_CLUSTERS", 7)  # 4 + 4 clusters here
    with caplog.at_level(logging.INFO, logger="pairot"):
        out = solve(problem, threshold=1e-3)
    assert out.n_corrections == 0
    assert "no cluster-level correction for 4 + 4 clusters (more than 7" in caplog.text
    plain = solve(problem, threshold=1e-3, cluster_correction=False)
    np.testing.assert_array_equal(out.f, plain.f)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("tau_a", "tau_b"), [(0.95, 0.9), (1.0, 0.9), (0.8, 1.0)])
def test_corrected_sinkhorn_unbalanced_matches_pot(tau_a, tau_b, budget):
    problem = clustered_problem(2)
    x_aug, y_aug, offset, a, b, qc, rc, cost = problem
    b = 1.3 * b
    out = solve(
        (x_aug, y_aug, offset, a, b, qc, rc, cost),
        tau_a=tau_a,
        tau_b=tau_b,
        kernel_memory_budget=budget,
    )
    assert out.converged and out.n_corrections >= 1
    expected = pot_relaxed(a, b, cost, tau_a, tau_b)
    P = plan(cost, out.f, out.g)
    np.testing.assert_allclose(P, expected, rtol=1e-5, atol=1e-9 * expected.max())


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("tau", [1.0, 0.9])
def test_correction_with_cells_and_clusters_without_mass(tau, budget):
    """Zero marginal entries (a whole query cluster and a few cells) leave those rows empty and
    the correction still applies; the rest is the plan of the problem without them."""
    x_aug, y_aug, offset, a, b, qc, rc, cost = clustered_problem(3)
    a = a.copy()
    a[qc == 1] = 0.0
    a[:3] = 0.0
    a /= a.sum()
    out = solve(
        (x_aug, y_aug, offset, a, b, qc, rc, cost),
        tau_a=tau,
        tau_b=tau,
        kernel_memory_budget=budget,
    )
    assert out.converged and out.n_corrections >= 1
    P = plan(cost, out.f, out.g)
    keep = a > 0
    assert np.all(P[~keep] == 0)
    if tau == 1.0:
        expected = ot.smooth.smooth_ot_dual(
            a[keep], b, cost[keep], EPS, reg_type="kl", stopThr=1e-15
        )
    else:
        expected = pot_relaxed(a[keep], b, cost[keep], tau, tau)
    np.testing.assert_allclose(P[keep], expected, rtol=1e-5, atol=1e-9 * expected.max())


def test_correction_float32_agrees_between_modes():
    problem = clustered_problem(0)
    outs = [
        solve(problem, dtype=np.float32, threshold=1e-4, kernel_memory_budget=budget)
        for budget in BUDGETS
    ]
    assert [o.mode for o in outs] == ["log", "kernel"]
    assert outs[0].n_iterations == outs[1].n_iterations
    cost = problem[-1]
    P0, P1 = (plan(cost, o.f, o.g) for o in outs)
    np.testing.assert_allclose(P0, P1, rtol=0, atol=1e-4 * P0.max())


def test_correction_rejects_bad_codes():
    problem = clustered_problem(0)
    qc = problem[5]
    with pytest.raises(ValueError, match="query_codes must have shape"):
        solve(problem, query_codes=qc[:-1])
    with pytest.raises(ValueError, match=r"ref_codes must lie in \[0, 150\)"):
        solve(problem, ref_codes=np.full(150, 150))
    with pytest.raises(ValueError, match="query_codes must hold integer cluster codes"):
        solve(problem, query_codes=qc + 0.5)


def dense_outputs(P, cost, qc, rc, b):
    """Mean mapping and distance straight from METHOD section 7 on a dense plan."""
    kq, kr = qc.max() + 1, rc.max() + 1
    tm = np.stack([P[qc == k].sum(axis=0) for k in range(kq)])
    mean = np.array([[np.mean(tm[k, rc == c] / b[rc == c]) for c in range(kr)] for k in range(kq)])
    dist = np.array(
        [
            [
                (P[np.ix_(qc == k, rc == c)] * cost[np.ix_(qc == k, rc == c)]).sum()
                / P[np.ix_(qc == k, rc == c)].sum()
                for c in range(kr)
            ]
            for k in range(kq)
        ]
    )
    return mean, dist


def test_dataset_map_demo_converges_in_a_few_iterations(caplog):
    """The PBMC demo at the defaults (epsilon 0.05, float32): plain Sinkhorn needs hundreds of
    iterations, the corrected one a few dozen, and its outputs are the closer to the exact ones
    (POT's L-BFGS on the dual, float64)."""
    q, r = pr.datasets.pbmc_demo()
    q, r = pr.pp.preprocess_adatas(
        q,
        r,
        cell_type_column_adata1="cell_type",
        cell_type_column_adata2="cell_type",
        sample_column_adata1="sample_id",
        sample_column_adata2="sample_id",
        n_top_genes=350,
    )
    dm = pr.tl.DatasetMap(q, r)
    dm.init_geom()
    dm.init_problem()
    geom, a, b = dm.geom, dm.ot_prob.a, dm.ot_prob.b
    cost = geom.cost()
    exact = ot.smooth.smooth_ot_dual(a, b, cost, geom.epsilon, reg_type="kl", stopThr=1e-15)
    mean, dist = dense_outputs(exact, cost, geom.query_codes, geom.ref_codes, b)
    iterations = {}
    for correction, atol in ((False, 2e-3), (True, 1e-4)):
        with caplog.at_level(logging.WARNING, logger="pairot"):
            dm.solve(progress=False, cluster_correction=correction)
        assert dm.ot_solution.converged
        iterations[correction] = dm.ot_solution.n_iterations
        np.testing.assert_allclose(dm.compute_mapping().to_numpy(), mean, atol=atol)
        np.testing.assert_allclose(dm.compute_distance().to_numpy(), dist, atol=atol)
    assert iterations[False] >= 300 and iterations[True] == 10  # the first check
    with pytest.raises(TypeError, match="cluster_correction must be True or False, got 'no'"):
        dm.solve(progress=False, cluster_correction="no")
