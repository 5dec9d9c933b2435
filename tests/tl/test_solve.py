"""Blocked JAX Sinkhorn and plan aggregation against dense references (numpy and POT)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import ot
import pytest
from scipy.special import logsumexp

from pairot.tl import _ot
from pairot.tl._ot import (
    Kernel,
    SinkhornOutput,
    _aggregate,
    _checks,
    _kernel,
    _passes,
    aggregate,
    sinkhorn,
)

# A few fixed shapes, so that the JIT compiles each kernel only a few times.
SHAPES = [(40, 55), (73, 90)]
D = 10
#: kernel_memory_budget values: 0 forces the blocked log-domain updates, the default precomputes
#: the kernel (every problem here is small enough and has a cost spread / epsilon <= 38).
BUDGETS = [0, _ot.DEFAULT_KERNEL_MEMORY_BUDGET]
MODES = {0: "log", _ot.DEFAULT_KERNEL_MEMORY_BUDGET: "kernel"}


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
@pytest.mark.parametrize("budget", BUDGETS)
def test_balanced_matches_dense_and_pot(shape, eps, uniform, seed, budget):
    x, y, offset, cost, a, b = make_problem(*shape, seed, uniform=uniform)
    out = solve64(x, y, offset, a, b, eps, kernel_memory_budget=budget)
    assert isinstance(out, SinkhornOutput)
    assert out.mode == MODES[budget]
    assert (out.kernel is not None) == (out.mode == "kernel")
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


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("tau_a", "tau_b"), [(1.0, 1.0), (0.9, 0.9), (1.0, 0.95)])
def test_error_definition_at_every_check(tau_a, tau_b, budget, caplog):
    eps = 0.05
    x, y, offset, cost, a, b = make_problem(*SHAPES[0], 8, uniform=False)
    if tau_b < 1:
        b = 0.7 * b
    with caplog.at_level(logging.ERROR, logger="pairot"):
        out = solve64(
            x,
            y,
            offset,
            a,
            b,
            eps,
            tau_a=tau_a,
            tau_b=tau_b,
            max_iterations=9,
            inner_iterations=3,
            kernel_memory_budget=budget,
        )
    assert out.mode == MODES[budget]
    assert out.n_iterations == 9 and out.errors.shape == (3,)
    for check, n_iterations in enumerate((3, 6, 9)):
        f, g = dense_sinkhorn(cost, a, b, eps, tau_a, tau_b, n_iterations)
        err = marginal_error(cost, f, g, a, b, eps, tau_a, tau_b)
        np.testing.assert_allclose(out.errors[check], err, rtol=1e-9)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("tau_a", "tau_b"), [(0.9, 0.9), (1.0, 0.95)])
def test_unbalanced_matches_pot_entropy(tau_a, tau_b, budget):
    eps = 0.1
    x, y, offset, cost, a, b = make_problem(*SHAPES[0], 7, uniform=False)
    b = 1.5 * b  # unequal masses are allowed when a marginal is relaxed
    out = solve64(x, y, offset, a, b, eps, tau_a=tau_a, tau_b=tau_b, kernel_memory_budget=budget)
    assert out.mode == MODES[budget]
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


@pytest.mark.parametrize("budget", BUDGETS)
def test_batch_size_invariance_float32(budget):
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
            kernel_memory_budget=budget,
        )
        for bs in (7, 32, 1000)  # ragged blocks (73 x 90 cells), and one block for all
    ]
    assert {out.mode for out in outs} == {MODES[budget]}
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
        # each query cell's mass per reference cluster (the per-cell mapping's sums)
        "row_cluster": np.stack([p[:, rcodes == c].sum(1) for c in range(kr)], axis=1),
    }


def kernel_of(x, y, offset, eps, *, dtype=np.float32, batch_size=1024) -> Kernel:
    """The kernel that sinkhorn builds for this cost (one iteration is enough)."""
    n, m = x.shape[0], y.shape[0]
    out = sinkhorn(
        x,
        y,
        offset,
        np.full(n, 1.0 / n),
        np.full(m, 1.0 / m),
        epsilon=eps,
        max_iterations=1,
        batch_size=batch_size,
        dtype=dtype,
        progress=False,
    )
    assert out.mode == "kernel"
    return out.kernel


@pytest.mark.parametrize("use_kernel", [False, True])
@pytest.mark.parametrize(
    ("dtype", "batch_size", "rtol"),
    [
        (np.float64, 16, 1e-10),
        (np.float64, 1000, 1e-10),
        (np.float32, 7, 1e-5),
        (np.float32, 32, 1e-5),
    ],
)
def test_aggregate_matches_dense(dtype, batch_size, rtol, use_kernel):
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
        kernel=kernel_of(x, y, offset, eps, dtype=dtype, batch_size=batch_size)
        if use_kernel
        else None,
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
        ({"kernel_memory_budget": -1}, "kernel_memory_budget"),
        ({"kernel_memory_budget": 1.5}, "kernel_memory_budget"),
        ({"precision": "bf16_3x", "dtype": np.float64}, "bf16_3x' needs dtype=np.float32"),
    ],
)
def test_sinkhorn_rejects_bad_arguments(kwargs, match):
    x, y, offset, _, a, b = make_problem(8, 9, 0)
    kwargs = {"epsilon": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        sinkhorn(x, y, offset, a, b, progress=False, **kwargs)


@pytest.mark.skipif("bf16_3x" not in _checks._PRECISIONS, reason="no DotAlgorithmPreset")
@pytest.mark.parametrize("budget", BUDGETS)
def test_bf16_3x_precision_matches_float32(budget):
    """Products from three bfloat16 products: the plan within float32 round-off of 'highest'
    (the scheme's accuracy; on a CPU XLA computes it in float32)."""
    x, y, offset, cost, a, b = make_problem(*SHAPES[1], 11)
    outs = [
        sinkhorn(
            x,
            y,
            offset,
            a,
            b,
            epsilon=0.1,
            progress=False,
            precision=precision,
            kernel_memory_budget=budget,
            threshold=1e-5,
        )
        for precision in ("highest", "bf16_3x")
    ]
    assert outs[0].n_iterations == outs[1].n_iterations
    P0, P1 = (plan(cost, o.f, o.g, 0.1) for o in outs)
    np.testing.assert_allclose(P1, P0, rtol=0, atol=1e-4 * P0.max())


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


# --------------------------------------------------------------------------- kernel mode
def solve32(x, y, offset, a, b, eps, **kwargs):
    kwargs = {"threshold": 1e-5, "max_iterations": 5000, "batch_size": 32} | kwargs
    return sinkhorn(x, y, offset, a, b, epsilon=eps, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("eps", "tau_a", "tau_b", "seed"),
    [(0.05, 1.0, 1.0, 31), (0.1, 1.0, 1.0, 32), (0.05, 0.95, 0.95, 33), (0.1, 1.0, 0.9, 34)],
)
def test_kernel_mode_matches_log_mode_float32(eps, tau_a, tau_b, seed):
    x, y, offset, cost, a, b = make_problem(*SHAPES[1], seed, uniform=False)
    if tau_b < 1:
        b = 1.3 * b
    kwargs = {"tau_a": tau_a, "tau_b": tau_b}
    log = solve32(x, y, offset, a, b, eps, kernel_memory_budget=0, **kwargs)
    ker = solve32(x, y, offset, a, b, eps, **kwargs)
    assert (log.mode, ker.mode) == ("log", "kernel")
    assert log.kernel is None and isinstance(ker.kernel, Kernel)
    assert ker.kernel.shape == SHAPES[1] and ker.kernel.epsilon == eps
    assert ker.f.dtype == np.float32 and ker.converged and log.converged
    assert ker.n_iterations == log.n_iterations
    np.testing.assert_allclose(ker.f, log.f, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ker.g, log.g, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ker.errors, log.errors, rtol=1e-3, atol=1e-6)
    # the kernel is exp((min_j C_ij - C_ij) / eps)
    row_min = cost.min(axis=1)
    np.testing.assert_allclose(np.asarray(ker.kernel.row_min), row_min, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(ker.kernel.K), np.exp((row_min[:, None] - cost) / eps), rtol=1e-4, atol=0
    )
    # and the float32 kernel-mode plan is POT's (float64) within the tolerance of the outputs
    p = plan(cost, ker.f.astype(np.float64), ker.g.astype(np.float64), eps)
    if tau_a == tau_b == 1.0:
        p_pot = ot.sinkhorn(
            a, b, cost, reg=eps, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000
        )
    else:
        rho = [eps * t / (1 - t) if t < 1 else np.inf for t in (tau_a, tau_b)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            p_pot = ot.unbalanced.sinkhorn_unbalanced(
                a, b, cost, reg=eps, reg_m=rho, reg_type="entropy", stopThr=1e-13,
                numItermax=100_000,
            )  # fmt: skip
    assert np.abs(p - p_pot).sum() < 1e-3


def test_kernel_memory_budget_threshold():
    x, y, offset, _, a, b = make_problem(*SHAPES[0], 41)
    nbytes = SHAPES[0][0] * SHAPES[0][1] * 4
    assert solve32(x, y, offset, a, b, 0.1, kernel_memory_budget=nbytes).mode == "kernel"
    assert solve32(x, y, offset, a, b, 0.1, kernel_memory_budget=nbytes - 1).mode == "log"
    # float64 kernels take twice the bytes
    out = solve64(x, y, offset, a, b, 0.1, kernel_memory_budget=nbytes)
    assert out.mode == "log"


def test_kernel_mode_off_when_kernel_would_underflow(caplog):
    # a cost spread within a row of ~1.2 at epsilon 0.015 is ~78 > 60: exp(-C / eps) would
    # leave float32's range
    x, y, offset, cost, a, b = make_problem(*SHAPES[0], 42)
    spread = (cost.max(1) - cost.min(1)).max()
    eps = 0.015
    assert spread / eps > 61
    with caplog.at_level(logging.DEBUG, logger="pairot"):
        out = solve32(x, y, offset, a, b, eps, max_iterations=30)
    assert out.mode == "log" and out.kernel is None
    assert any("underflow" in r.getMessage() for r in caplog.records)
    ref = solve32(x, y, offset, a, b, eps, max_iterations=30, kernel_memory_budget=0)
    np.testing.assert_array_equal(out.f, ref.f)
    # float64 has the range for it
    assert solve64(x, y, offset, a, b, eps, max_iterations=30).mode == "kernel"


def test_kernel_mode_falls_back_to_log_domain(monkeypatch, caplog):
    x, y, offset, _, a, b = make_problem(*SHAPES[1], 43, uniform=False)
    real_steps = _kernel._kernel_steps
    calls = []

    def failing_steps(*args, **kwargs):
        calls.append(1)
        *state, err = real_steps(*args, **kwargs)
        return (*state, np.nan if len(calls) == 2 else err)  # the second check overflows

    monkeypatch.setattr(_passes, "_kernel_steps", failing_steps)
    kwargs = {"threshold": 1e-4, "inner_iterations": 3}
    with caplog.at_level(logging.DEBUG, logger="pairot"):
        out = solve32(x, y, offset, a, b, 0.05, **kwargs)
    ref = solve32(x, y, offset, a, b, 0.05, kernel_memory_budget=0, **kwargs)
    assert len(calls) == 2
    assert any("non-finite" in r.getMessage() for r in caplog.records)
    assert out.mode == "log" and out.kernel is None and out.converged
    assert out.n_iterations == ref.n_iterations
    assert out.errors.shape == ref.errors.shape
    assert np.all(np.isfinite(out.errors))
    np.testing.assert_allclose(out.f, ref.f, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.g, ref.g, rtol=0, atol=1e-5)


def test_aggregate_kernel_checks_and_overflow_fallback(monkeypatch):
    eps = 0.1
    x, y, offset, cost, a, b = make_problem(*SHAPES[0], 44)
    n, m = SHAPES[0]
    qcodes, rcodes = np.arange(n) % 3, np.arange(m) % 2
    kernel = kernel_of(x, y, offset, eps)
    out = solve32(x, y, offset, a, b, eps)
    kwargs = {
        "epsilon": eps,
        "query_codes": qcodes,
        "ref_codes": rcodes,
        "n_query_clusters": 3,
        "n_ref_clusters": 2,
    }
    with pytest.raises(ValueError, match="kernel was computed for"):
        aggregate(x, y, offset, out.f, out.g, kernel=kernel, **(kwargs | {"epsilon": 0.2}))
    with pytest.raises(ValueError, match="kernel was computed for"):
        aggregate(
            x[:-1],
            y,
            offset,
            out.f[:-1],
            out.g,
            kernel=kernel,
            **(kwargs | {"query_codes": qcodes[:-1]}),
        )
    with pytest.raises(TypeError, match="kernel must be"):
        aggregate(x, y, offset, out.f, out.g, kernel=np.ones((n, m)), **kwargs)
    # potentials whose row scalings would overflow float32 on the kernel are detected ...
    f32 = np.dtype(np.float32)
    f, g = out.f.astype(np.float64), out.g.astype(np.float64)
    assert _aggregate._kernel_scales(kernel, f, g, eps, f32) is not None
    assert _aggregate._kernel_scales(kernel, f + 10.0, g, eps, f32) is None
    # ... and then the sums come from the cost, as without a kernel
    monkeypatch.setattr(_aggregate, "_kernel_scales", lambda *args: None)
    with_kernel = aggregate(x, y, offset, f, g, kernel=kernel, **kwargs)
    ref = dense_aggregate(cost, plan(cost, f, g, eps), qcodes, rcodes, 3, 2)
    for key, expected in ref.items():
        np.testing.assert_allclose(
            with_kernel[key], expected, rtol=1e-5, atol=1e-5 * expected.max(), err_msg=key
        )
