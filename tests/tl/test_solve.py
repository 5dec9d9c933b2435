"""Blocked JAX Sinkhorn and plan aggregation against dense references (numpy and POT)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import ot
import pytest
from scipy.special import logsumexp

from pairot.tl._jax_backend import SinkhornOutput, aggregate, sinkhorn

# A few fixed shapes, so that the JIT compiles each kernel only a few times.
SHAPES = [(40, 55), (73, 90)]
D = 10


def make_problem(n: int, m: int, seed: int, *, uniform: bool = True):
    """Random augmented vectors whose cost ``offset + x . y`` lies in [0, 2]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    y = rng.normal(size=(m, D))
    ip = x @ y.T
    scale = rng.uniform(1.0, 1.9) / (ip.max() - ip.min())
    x *= scale
    offset = -ip.min() * scale + rng.uniform(0.0, 0.1)
    cost = offset + x @ y.T
    assert cost.min() >= 0 and cost.max() <= 2
    if uniform:
        a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    else:
        a, b = rng.uniform(0.2, 1.0, n), rng.uniform(0.2, 1.0, m)
        a /= a.sum()
        b /= b.sum()
    return x, y, offset, cost, a, b


def plan(cost, f, g, eps):
    return np.exp((f[:, None] + g[None, :] - cost) / eps)


def dense_sinkhorn(cost, a, b, eps, tau_a, tau_b, n_iterations):
    """Dense float64 log-domain Sinkhorn straight from the update formulas."""
    f = np.zeros(cost.shape[0])
    g = np.zeros(cost.shape[1])
    for _ in range(n_iterations):
        f = tau_a * (eps * np.log(a) - eps * logsumexp((g[None, :] - cost) / eps, axis=1))
        g = tau_b * (eps * np.log(b) - eps * logsumexp((f[:, None] - cost) / eps, axis=0))
    return f, g


def marginal_error(cost, f, g, a, b, eps, tau_a, tau_b):
    """The documented error: L1 violation of the relaxed optimality conditions."""
    p = plan(cost, f, g, eps)
    kappa_a = (1 - tau_a) / (tau_a * eps)
    kappa_b = (1 - tau_b) / (tau_b * eps)
    return (
        np.abs(p.sum(1) - a * np.exp(-f * kappa_a)).sum()
        + np.abs(p.sum(0) - b * np.exp(-g * kappa_b)).sum()
    )


def solve64(x, y, offset, a, b, eps, **kwargs):
    kwargs = {"threshold": 1e-11, "max_iterations": 20_000, "batch_size": 16} | kwargs
    return sinkhorn(x, y, offset, a, b, epsilon=eps, dtype=np.float64, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("shape", "eps", "uniform", "seed"),
    [
        (SHAPES[0], 0.05, True, 0),
        (SHAPES[0], 0.1, False, 1),
        (SHAPES[0], 0.5, True, 2),
        (SHAPES[1], 0.05, False, 3),
        (SHAPES[1], 0.1, True, 4),
        (SHAPES[1], 0.5, False, 5),
    ],
)
def test_balanced_matches_dense_and_pot(shape, eps, uniform, seed):
    x, y, offset, cost, a, b = make_problem(*shape, seed, uniform=uniform)
    out = solve64(x, y, offset, a, b, eps)
    assert isinstance(out, SinkhornOutput)
    assert out.converged
    assert out.f.dtype == np.float64 and out.f.shape == (shape[0],)
    assert out.g.shape == (shape[1],)
    # same iterates as the dense reference run for the same number of iterations
    f_ref, g_ref = dense_sinkhorn(cost, a, b, eps, 1.0, 1.0, out.n_iterations)
    np.testing.assert_allclose(out.f, f_ref, rtol=0, atol=1e-11)
    np.testing.assert_allclose(out.g, g_ref, rtol=0, atol=1e-11)
    # the converged plan is POT's
    p = plan(cost, out.f, out.g, eps)
    p_pot = ot.sinkhorn(
        a, b, cost, reg=eps, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000
    )
    np.testing.assert_allclose(p, p_pot, rtol=1e-6, atol=1e-9 * p_pot.max())
    np.testing.assert_allclose(p.sum(1), a, rtol=1e-8)
    np.testing.assert_allclose(p.sum(0), b, rtol=1e-8)
    # the reported error is the documented one
    err = marginal_error(cost, out.f, out.g, a, b, eps, 1.0, 1.0)
    np.testing.assert_allclose(out.errors[-1], err, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("tau_a", "tau_b"), [(1.0, 1.0), (0.9, 0.9), (1.0, 0.95)])
def test_error_definition_at_every_check(tau_a, tau_b, caplog):
    eps = 0.05
    x, y, offset, cost, a, b = make_problem(*SHAPES[0], 8, uniform=False)
    if tau_b < 1:
        b = 0.7 * b
    with caplog.at_level(logging.ERROR, logger="pairot"):
        out = solve64(
            x, y, offset, a, b, eps, tau_a=tau_a, tau_b=tau_b, max_iterations=9, inner_iterations=3
        )
    assert out.n_iterations == 9 and out.errors.shape == (3,)
    for check, n_iterations in enumerate((3, 6, 9)):
        f, g = dense_sinkhorn(cost, a, b, eps, tau_a, tau_b, n_iterations)
        err = marginal_error(cost, f, g, a, b, eps, tau_a, tau_b)
        np.testing.assert_allclose(out.errors[check], err, rtol=1e-9)


@pytest.mark.parametrize(("tau_a", "tau_b"), [(0.9, 0.9), (1.0, 0.95)])
def test_unbalanced_matches_pot_entropy(tau_a, tau_b):
    eps = 0.1
    x, y, offset, cost, a, b = make_problem(*SHAPES[0], 7, uniform=False)
    b = 1.5 * b  # unequal masses are allowed when a marginal is relaxed
    out = solve64(x, y, offset, a, b, eps, tau_a=tau_a, tau_b=tau_b)
    assert out.converged
    f_ref, g_ref = dense_sinkhorn(cost, a, b, eps, tau_a, tau_b, out.n_iterations)
    np.testing.assert_allclose(out.f, f_ref, rtol=0, atol=1e-11)
    np.testing.assert_allclose(out.g, g_ref, rtol=0, atol=1e-11)

    rho = [eps * t / (1 - t) if t < 1 else np.inf for t in (tau_a, tau_b)]
    p = plan(cost, out.f, out.g, eps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "c is overwritten by the one matrix"
        p_entropy = ot.unbalanced.sinkhorn_unbalanced(
            a,
            b,
            cost,
            reg=eps,
            reg_m=rho,
            method="sinkhorn",
            reg_type="entropy",
            stopThr=1e-13,
            numItermax=100_000,
        )
        p_kl = ot.unbalanced.sinkhorn_unbalanced(
            a,
            b,
            cost,
            reg=eps,
            reg_m=rho,
            method="sinkhorn",
            reg_type="kl",
            stopThr=1e-13,
            numItermax=100_000,
        )
    # tau = rho / (rho + eps) with P = exp((f + g - C) / eps) is POT's reg_type="entropy"
    np.testing.assert_allclose(p, p_entropy, rtol=1e-6, atol=1e-9 * p_entropy.max())
    # ... not reg_type="kl" (entropy relative to a b^T), which is a different problem
    assert np.abs(p - p_kl).max() > 1e-3 * p.max()
    # optimality conditions of the relaxed problem
    rho_a, rho_b = rho
    np.testing.assert_allclose(p.sum(1), a * np.exp(-out.f / rho_a), rtol=1e-8)
    np.testing.assert_allclose(p.sum(0), b * np.exp(-out.g / rho_b), rtol=1e-8)


def test_batch_size_invariance_float32():
    x, y, offset, cost, a, b = make_problem(*SHAPES[1], 11, uniform=False)
    outs = [
        sinkhorn(
            x,
            y,
            offset,
            a,
            b,
            epsilon=0.05,
            batch_size=bs,
            threshold=1e-5,
            inner_iterations=3,
            progress=False,
        )
        for bs in (7, 32, 1000)  # ragged blocks (73 x 90 cells), and one block for all
    ]
    ref = outs[0]
    assert ref.f.dtype == np.float32 and ref.converged
    assert ref.errors.size >= 5
    for out in outs[1:]:
        assert out.n_iterations == ref.n_iterations
        np.testing.assert_allclose(out.f, ref.f, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out.g, ref.g, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out.errors, ref.errors, rtol=0, atol=1e-5)
    # and float32 agrees with the dense float64 iterates at the same iteration count
    f64, g64 = dense_sinkhorn(cost, a, b, 0.05, 1.0, 1.0, ref.n_iterations)
    np.testing.assert_allclose(ref.f, f64, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ref.g, g64, rtol=0, atol=1e-5)


def test_determinism():
    x, y, offset, _, a, b = make_problem(*SHAPES[1], 12)
    first = sinkhorn(x, y, offset, a, b, epsilon=0.05, batch_size=32, progress=False)
    second = sinkhorn(x, y, offset, a, b, epsilon=0.05, batch_size=32, progress=False)
    np.testing.assert_array_equal(first.f, second.f)
    np.testing.assert_array_equal(first.g, second.g)
    np.testing.assert_array_equal(first.errors, second.errors)


def test_errors_recorded_every_inner_iterations():
    x, y, offset, _, a, b = make_problem(*SHAPES[1], 13)
    out = sinkhorn(
        x,
        y,
        offset,
        a,
        b,
        epsilon=0.05,
        batch_size=32,
        threshold=1e-4,
        inner_iterations=5,
        progress=False,
    )
    assert out.converged
    assert out.n_iterations % 5 == 0
    assert out.errors.shape == (out.n_iterations // 5,)
    assert out.errors[-1] < 1e-4
    assert np.all(out.errors[:-1] >= 1e-4)


def test_not_converged_warns(caplog):
    x, y, offset, _, a, b = make_problem(*SHAPES[1], 14)
    with caplog.at_level(logging.WARNING, logger="pairot"):
        out = sinkhorn(
            x,
            y,
            offset,
            a,
            b,
            epsilon=0.05,
            batch_size=32,
            threshold=1e-12,
            max_iterations=7,
            inner_iterations=3,
            progress=False,
        )
    assert not out.converged
    assert out.n_iterations == 7
    assert out.errors.shape == (3,)  # checks after iterations 3, 6 and 7
    records = [r for r in caplog.records if r.name == "pairot"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "did not converge" in records[0].getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pairot"):
        out = sinkhorn(x, y, offset, a, b, epsilon=0.05, batch_size=32, progress=False)
    assert out.converged
    assert not [r for r in caplog.records if r.name == "pairot"]


def test_progress_goes_to_stderr(capsys):
    x, y, offset, _, a, b = make_problem(*SHAPES[1], 15)
    sinkhorn(x, y, offset, a, b, epsilon=0.05, batch_size=32, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Sinkhorn" in captured.err and "error" in captured.err
    sinkhorn(x, y, offset, a, b, epsilon=0.05, batch_size=32, progress=False)
    assert capsys.readouterr().err == ""


def dense_aggregate(cost, p, qcodes, rcodes, kq, kr):
    """Naive loops over cluster pairs."""
    tm = np.stack([p[qcodes == k].sum(0) for k in range(kq)])
    mass = np.zeros((kq, kr))
    cost_mass = np.zeros((kq, kr))
    cost_sum = np.zeros((kq, kr))
    for k in range(kq):
        for c in range(kr):
            block = np.ix_(qcodes == k, rcodes == c)
            mass[k, c] = p[block].sum()
            cost_mass[k, c] = (p[block] * cost[block]).sum()
            cost_sum[k, c] = cost[block].sum()
    return {
        "tm": tm,
        "mass": mass,
        "cost_mass": cost_mass,
        "cost_sum": cost_sum,
        "row_mass": p.sum(1),
        "col_mass": p.sum(0),
    }


@pytest.mark.parametrize(
    ("dtype", "batch_size", "rtol"),
    [
        (np.float64, 16, 1e-10),
        (np.float64, 1000, 1e-10),
        (np.float32, 7, 1e-5),
        (np.float32, 32, 1e-5),
    ],
)
def test_aggregate_matches_dense(dtype, batch_size, rtol):
    eps = 0.1
    n, m = SHAPES[1]
    x, y, offset, cost, a, b = make_problem(n, m, 21, uniform=False)
    rng = np.random.default_rng(3)
    kq, kr = 5, 4
    qcodes = rng.integers(0, kq - 1, n)  # the last query cluster is empty
    rcodes = rng.integers(0, kr, m)
    # potentials from a few dense iterations: the plan need not be converged
    f, g = dense_sinkhorn(cost, a, b, eps, 1.0, 1.0, 5)
    ref = dense_aggregate(cost, plan(cost, f, g, eps), qcodes, rcodes, kq, kr)
    out = aggregate(
        x,
        y,
        offset,
        f,
        g,
        epsilon=eps,
        query_codes=qcodes,
        ref_codes=rcodes,
        n_query_clusters=kq,
        n_ref_clusters=kr,
        batch_size=batch_size,
        dtype=dtype,
    )
    assert set(out) == set(ref)
    for key, expected in ref.items():
        assert out[key].shape == expected.shape, key
        np.testing.assert_allclose(
            out[key], expected, rtol=rtol, atol=rtol * expected.max(), err_msg=key
        )
    np.testing.assert_array_equal(out["tm"][kq - 1], 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"tau_a": 0.0}, "tau_a"),
        ({"tau_b": 1.5}, "tau_b"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_iterations": 2.5}, "max_iterations"),
        ({"inner_iterations": 0}, "inner_iterations"),
        ({"threshold": -1.0}, "threshold"),
        ({"dtype": np.int32}, "dtype"),
        ({"precision": "fast"}, "precision"),
    ],
)
def test_sinkhorn_rejects_bad_arguments(kwargs, match):
    x, y, offset, _, a, b = make_problem(8, 9, 0)
    kwargs = {"epsilon": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        sinkhorn(x, y, offset, a, b, progress=False, **kwargs)


def test_sinkhorn_rejects_bad_inputs():
    x, y, offset, _, a, b = make_problem(8, 9, 0)
    with pytest.raises(ValueError, match="same number of columns"):
        sinkhorn(x, y[:, :-1], offset, a, b, epsilon=0.1)
    with pytest.raises(ValueError, match="x_aug"):
        sinkhorn(x[0], y, offset, a, b, epsilon=0.1)
    with pytest.raises(ValueError, match="y_aug"):
        sinkhorn(x, np.where(y > 0, np.nan, y), offset, a, b, epsilon=0.1)
    with pytest.raises(ValueError, match=r"a must have shape \(8,\)"):
        sinkhorn(x, y, offset, a[:-1], b, epsilon=0.1)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn(x, y, offset, -a, b, epsilon=0.1)
    with pytest.raises(ValueError, match="same total mass"):
        sinkhorn(x, y, offset, a, 2 * b, epsilon=0.1)
    with pytest.raises(ValueError, match="offset"):
        sinkhorn(x, y, float("inf"), a, b, epsilon=0.1)


def test_aggregate_rejects_bad_codes():
    x, y, offset, _, _, _ = make_problem(8, 9, 0)
    f, g = np.zeros(8), np.zeros(9)
    kwargs = {"epsilon": 0.1, "n_query_clusters": 2, "n_ref_clusters": 3}
    with pytest.raises(ValueError, match="query_codes"):
        aggregate(
            x, y, offset, f, g, query_codes=np.full(8, 2), ref_codes=np.zeros(9, int), **kwargs
        )
    with pytest.raises(ValueError, match="ref_codes"):
        aggregate(
            x, y, offset, f, g, query_codes=np.zeros(8, int), ref_codes=np.zeros(8, int), **kwargs
        )
    with pytest.raises(ValueError, match="f must have shape"):
        aggregate(
            x,
            y,
            offset,
            f[:-1],
            g,
            query_codes=np.zeros(8, int),
            ref_codes=np.zeros(9, int),
            **kwargs,
        )
