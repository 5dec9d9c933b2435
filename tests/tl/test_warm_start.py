"""Warm starts of Sinkhorn (``sinkhorn(init=...)``, ``DatasetMap.solve(init=...)``, the
bootstrap's resamples): every start gives the cold start's answer within the stopping rule,
the c-transform extension against a naive loop, the warm start's fewer iterations, and the
errors for bad starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import ot_problems
import pytest
import sharding_worker as worker
from scipy.special import logsumexp

import pairot as pr
from pairot.tl import _bootstrap, _solve
from pairot.tl._ot import _sparse, cluster_potentials, extend_potentials, sinkhorn

LABELS = np.array([[0.1, 0.3, 0.5, 1.0], [0.3, 0.1, 0.4, 0.6], [0.5, 0.4, 0.1, 0.5]])
EPS = 0.05
#: the stopping rule of every comparison, and the agreement asked of every start
THRESHOLD, TOL = 1e-5, 1e-5
SOLVE = {"threshold": THRESHOLD, "progress": False}
MODES = {
    "log": {"kernel_memory_budget": 0, "sparse": False},
    "kernel": {"sparse": False},
    "sparse": {"kernel_memory_budget": 20_000},
}


def _run_worker(args: list[str], n_devices: int) -> subprocess.CompletedProcess:
    """tests/sharding_worker.py on ``n_devices`` XLA host devices (as tests/tl/test_sharding.py
    runs it)."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n_devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    source = str(Path(pr.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, worker.__file__, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _plan(problem, solution):
    cost = problem[7]
    return np.exp((solution.f[:, None] + solution.g[None, :] - cost) / EPS)


# ------------------------------------------------------------------------------- engine
def test_extension_against_a_naive_loop():
    x, y, offset, a, b, _, _, cost = ot_problems.clustered_problem(1, LABELS, 13, 11, 5)
    known = np.array([0, 3, 4, 9])
    g_known = np.random.default_rng(0).normal(scale=0.1, size=known.size)
    tau_a, tau_b = 0.9, 0.8
    f, g = extend_potentials(
        x, y, offset, a, b, y[known], g_known,
        epsilon=EPS, tau_a=tau_a, tau_b=tau_b, dtype=np.float64, batch_size=4,
    )  # fmt: skip
    f_loop = np.empty(len(a))
    for i in range(len(a)):
        terms = [(g_known[k] - cost[i, j]) / EPS for k, j in enumerate(known)]
        f_loop[i] = tau_a * EPS * (np.log(a[i]) - logsumexp(terms))
    g_loop = np.empty(len(b))
    for j in range(len(b)):
        terms = [(f_loop[i] - cost[i, j]) / EPS for i in range(len(a))]
        g_loop[j] = tau_b * EPS * (np.log(b[j]) - logsumexp(terms))
    np.testing.assert_allclose(f, f_loop, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, g_loop, rtol=1e-10, atol=1e-12)


def _engine_starts(problem, tau_a):
    """Each start of the engine: the cluster-level potentials, a downsample's solution
    extended, and a cold solution moved by a constant (the balanced problem's free one)."""
    x, y, offset, a, b, qc, rc = problem[:7]
    kq, kr = LABELS.shape
    cluster = cluster_potentials(
        x, y, offset, a, b, qc, rc, kq, kr, epsilon=EPS, tau_a=tau_a, tau_b=1.0
    )
    rows, cols = np.arange(0, len(a), 2), np.arange(0, len(b), 3)
    a_s = a[rows] / a[rows].sum()
    b_s = b[cols] / b[cols].sum()
    small = sinkhorn(
        x[rows], y[cols], offset, a_s, b_s,
        epsilon=EPS, tau_a=tau_a, dtype=np.float64, progress=False, threshold=1e-3,
    )  # fmt: skip
    extended = extend_potentials(
        x, y, offset, a, b, y[cols], small.g, epsilon=EPS, tau_a=tau_a, dtype=np.float64
    )
    return {"cluster": cluster, "multiscale": extended}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("tau_a", [1.0, 0.9])
def test_every_engine_start_gives_the_cold_plan(mode, tau_a, monkeypatch):
    if mode == "sparse":
        monkeypatch.setattr(_sparse, "MIN_SPARSE_PAIRS", 0)
        monkeypatch.setattr(_sparse, "MAX_ACTIVE_SHARE", 1.0)
    problem = ot_problems.clustered_problem(2, LABELS, 90, 70, 6)
    options = {**MODES[mode], "threshold": THRESHOLD, "tau_a": tau_a}
    cold = ot_problems.solve(problem, **options)
    assert cold.converged and cold.start == ("cluster" if mode == "sparse" else "zeros")
    assert cold.sparse is (mode == "sparse")
    for name, init in _engine_starts(problem, tau_a).items():
        warm = ot_problems.solve(problem, init=init, **options)
        assert warm.converged and warm.start == "given", name
        assert warm.mode == cold.mode and warm.sparse == cold.sparse, name
        np.testing.assert_allclose(
            _plan(problem, warm), _plan(problem, cold), atol=TOL, err_msg=name
        )
        if mode == "sparse":
            assert warm.skipped_mass_bound <= 1e-3 * THRESHOLD, name
    # the cold solution as its own start: converged at the first look
    again = ot_problems.solve(problem, init=(cold.f, cold.g), **options)
    assert again.n_iterations <= 2


def test_sharded_warm_starts_equal_the_cold_solve(tmp_path):
    """On 2 XLA host devices (tests/sharding_worker.py in a subprocess) every mode started from
    an extended start gives the one-device cold start's plan, and DatasetMap's cluster and
    multiscale starts give its cold start's answers."""
    out = tmp_path / "two.npz"
    configs = "log,kernel,sparse,log_warm,kernel_warm,sparse_warm"
    inits = ["zeros", "cluster", "multiscale"]
    done = _run_worker(
        [str(out), "--runs", f"2:{configs}", "1:log", "--dataset-map", "2"]
        + ["--dataset-map-inits", *inits],
        2,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(np.load(out))
    problem = worker.problem()
    cost = problem[7]
    reference = np.exp((results["log/1/f"][:, None] + results["log/1/g"][None, :] - cost) / EPS)
    for config in configs.split(","):
        key = f"{config}/2/"
        assert int(results[key + "n_devices"]) == 2 and bool(results[key + "converged"]), config
        cold_start = "cluster" if config == "sparse" else "zeros"
        assert str(results[key + "start"]) == ("given" if "warm" in config else cold_start)
        f, g = results[key + "f"], results[key + "g"]
        plan = np.exp((f[:, None] + g[None, :] - cost) / EPS)
        np.testing.assert_allclose(plan, reference, atol=TOL, err_msg=config)
    # DatasetMap.solve(init=...) on the 2 devices against its cold start there
    cold = "dataset_map_zeros/2/"
    assert int(results[cold + "n_devices"]) == 2
    for init in inits[1:]:
        key = f"dataset_map_{init}/2/"
        assert str(results[key + "start"]) == init and int(results[key + "n_devices"]) == 2
        for name in ("mapping_mean", "mapping_transported_mass", "distance"):
            np.testing.assert_allclose(
                results[key + name], results[cold + name], atol=TOL, err_msg=f"{init}: {name}"
            )


def test_bad_engine_starts_are_refused():
    problem = ot_problems.clustered_problem(2, LABELS, 30, 20, 6)
    f, g = np.zeros(30), np.zeros(20)
    with pytest.raises(TypeError, match=r"init must be None or a pair \(f0, g0\).*got ndarray"):
        ot_problems.solve(problem, init=f)
    with pytest.raises(ValueError, match=r"init\[1\] must have shape \(20,\).*got shape \(21,\)"):
        ot_problems.solve(problem, init=(f, np.zeros(21)))
    with pytest.raises(ValueError, match=r"init\[0\] \(a start potential\).*1 NaN"):
        ot_problems.solve(problem, init=(np.where(np.arange(30) == 3, np.nan, 0.0), g))


# --------------------------------------------------------------------------- DatasetMap
@pytest.fixture(scope="module")
def pair():
    query, reference = pr.datasets.pbmc_demo()
    return pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=150
    )


def _map(query, reference):
    dm = pr.tl.DatasetMap(query, reference)
    dm.init_geom(batch_size=128)
    dm.init_problem()
    return dm


@pytest.fixture(scope="module")
def dm(pair):
    return _map(*pair)


@pytest.fixture(scope="module")
def subset(pair):
    """A map solved on every second query and every third reference cell of the pair."""
    query, reference = pair
    sub = _map(query[::2], reference[::3])
    sub.solve(**SOLVE)
    return sub


def _answers(dm):
    return dm.compute_mapping().to_numpy(), dm.compute_distance().to_numpy()


@pytest.mark.parametrize("mode", list(MODES))
def test_every_start_gives_the_cold_answer(dm, subset, mode, monkeypatch):
    if mode == "sparse":
        monkeypatch.setattr(_sparse, "MIN_SPARSE_PAIRS", 0)
        monkeypatch.setattr(_sparse, "MAX_ACTIVE_SHARE", 1.0)
    monkeypatch.setattr(_solve, "MULTISCALE_CELLS", 30)
    cold = dm.solve(init="zeros", **MODES[mode], **SOLVE)
    assert cold.converged and cold.sparse is (mode == "sparse")
    mapping, distance = _answers(dm)
    # a skipped block's distance is its unweighted mean cost (compute_distance): compare the
    # blocks that carry mass, which every certified active set holds
    carried = dm.compute_mapping("transported_mass").to_numpy() / mapping.shape[0] > 1e-7
    for init in ("cluster", "multiscale", subset):
        warm = dm.solve(init=init, **MODES[mode], **SOLVE)
        name = init if isinstance(init, str) else "map"
        assert warm.converged and warm.start == name and warm.sparse == cold.sparse
        assert (warm.start_iterations > 0) is (name == "multiscale")
        warm_mapping, warm_distance = _answers(dm)
        np.testing.assert_allclose(warm_mapping, mapping, atol=TOL, err_msg=name)
        np.testing.assert_allclose(
            warm_distance[carried], distance[carried], atol=TOL, err_msg=name
        )
        if mode != "sparse":
            np.testing.assert_allclose(warm_distance, distance, atol=TOL, err_msg=name)


def test_auto_is_the_cold_start_below_its_size_and_multiscale_above(dm, monkeypatch):
    cold = dm.solve(init="zeros", **SOLVE)
    auto = dm.solve(**SOLVE)
    assert auto.start == "zeros" and auto.start_iterations == 0
    np.testing.assert_array_equal(auto.f, cold.f)  # bit-identical below the size
    np.testing.assert_array_equal(auto.g, cold.g)
    monkeypatch.setattr(_solve, "AUTO_MULTISCALE_PAIRS", 0)
    monkeypatch.setattr(_solve, "MULTISCALE_CELLS", 10)  # 80 x 80 of 340 x 339 cells
    above = dm.solve(**SOLVE)
    assert above.start == "multiscale" and above.start_iterations > 0
    assert "multiscale start" in repr(above)
    # a downsample of more than MULTISCALE_MAX_SHARE of the cell pairs: the cold start
    monkeypatch.setattr(_solve, "MULTISCALE_CELLS", 10_000)
    assert dm.solve(**SOLVE).start == "zeros"


def test_warm_starts_take_fewer_iterations(dm, monkeypatch):
    """Plain Sinkhorn (no cluster-level correction), checked every iteration: from f = g = 0
    it needs about 500 iterations to 1e-3 on the demo (its slow mode, docs/method.md), from
    the multiscale or the cluster-level start a few."""
    monkeypatch.setattr(_solve, "MULTISCALE_CELLS", 30)
    plain = {"threshold": 1e-3, "progress": False, "cluster_correction": False}
    plain |= {"inner_iterations": 1, "max_iterations": 2000}
    cold = dm.solve(init="zeros", **plain)
    assert cold.converged and cold.n_iterations > 100
    for init in ("multiscale", "cluster"):
        warm = dm.solve(init=init, **plain)
        assert warm.converged and warm.n_iterations < cold.n_iterations / 10, init


def test_bootstrap_warm_resamples_equal_cold_ones(pair, monkeypatch):
    dm = _map(*pair)
    dm.solve(threshold=1e-6, progress=False)
    starts = []

    def recorded(*args, **kwargs):
        solution = _solve.run_sinkhorn(*args, **kwargs)
        starts.append((solution.start, solution.n_iterations))
        return solution

    monkeypatch.setattr(_bootstrap, "run_sinkhorn", recorded)
    warm = dm.bootstrap(2, resample="cells", random_state=1, progress=False)
    monkeypatch.setattr(_bootstrap, "WARM_START", False)
    cold = dm.bootstrap(2, resample="cells", random_state=1, progress=False)
    numeric = [c for c in cold.columns if cold[c].dtype.kind == "f"]
    np.testing.assert_allclose(warm[numeric].to_numpy(), cold[numeric].to_numpy(), atol=TOL)
    assert [start for start, _ in starts] == ["given"] * 2 + ["zeros"] * 2


def test_bad_starts_are_refused(dm, pair, subset):
    with pytest.raises(ValueError, match=r"init must be one of \('auto'.*got 'warm'; pass init="):
        dm.solve(init="warm", **SOLVE)
    with pytest.raises(TypeError, match=r"init must be a string or a DatasetMap, got int; pass"):
        dm.solve(init=3, **SOLVE)
    query, reference = pair
    unsolved = _map(query[::2], reference[::2])
    with pytest.raises(ValueError, match=r"init \(a DatasetMap\) has no solution yet: call init"):
        dm.solve(init=unsolved, **SOLVE)
    other = query.copy()
    other.obs_names = ["other_" + name for name in other.obs_names]
    foreign = _map(other, reference)
    foreign.solve(**SOLVE)
    with pytest.raises(ValueError, match=r"(\d+) of its \1 query cells \(e\.g\. \[.other_"):
        dm.solve(init=foreign, **SOLVE)
    with pytest.raises(ValueError, match=r"init is this DatasetMap itself"):
        dm.solve(init=dm, **SOLVE)
