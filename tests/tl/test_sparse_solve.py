"""The active-block (sparse) mode against the dense passes: the same potentials, plan sums and
outputs on problems with many, few and no skippable blocks; the certification; interrupts."""

from __future__ import annotations

import logging
import signal

import numpy as np
import ot_problems
import pytest

import pairot as pr
from pairot.tl import _ot
from pairot.tl._ot import _active, _progress, _sparse, aggregate

EPS = 0.05
#: Label distances (query x reference clusters).
MANY = np.where(np.eye(5) > 0, 0.1, 1.0)  # well separated: most blocks skippable
FEW = np.array(
    [[0.1, 0.3, 0.5, 1.0], [0.3, 0.1, 0.4, 0.6], [0.5, 0.4, 0.1, 0.5], [1.0, 0.6, 0.5, 0.2]]
)
NONE = np.zeros((1, 1))  # one cluster a side: nothing to skip
#: Two similar clusters (0, 1) that exchange mass, and a third apart.
SIMILAR = np.array([[0.1, 0.15, 1.0], [0.15, 0.1, 1.0], [1.0, 1.0, 0.1]])


@pytest.fixture
def sparse_everywhere(monkeypatch):
    """The active-block mode also on small problems and whatever share stays active."""
    monkeypatch.setattr(_sparse, "MIN_SPARSE_PAIRS", 0)
    monkeypatch.setattr(_sparse, "MAX_ACTIVE_SHARE", 1.0)


def problem(labels, seed=0, n=160, m=140):
    return ot_problems.clustered_problem(seed, labels, n, m, 6)


def sums(problem_, solution, **kwargs):
    x, y, offset, _, _, qc, rc = problem_[:7]
    return aggregate(
        x,
        y,
        offset,
        solution.f,
        solution.g,
        epsilon=EPS,
        query_codes=qc,
        ref_codes=rc,
        n_query_clusters=int(qc.max()) + 1,
        n_ref_clusters=int(rc.max()) + 1,
        dtype=np.float64,
        **kwargs,
    )


def assert_same_potentials(sparse, dense, tol, qc, rc):
    """Equal up to one constant per connected group of active blocks (``f + t``, ``g - t``):
    blocks that exchange no mass decouple, and with them the constant of balanced OT."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    active = sparse.blocks.active
    kq, kr = active.shape
    rows, cols = np.nonzero(active)
    graph = coo_matrix((np.ones(len(rows)), (rows, kq + cols)), shape=(kq + kr, kq + kr))
    _, component = connected_components(graph, directed=False)
    f_shift = np.zeros_like(dense.f)
    g_shift = np.zeros_like(dense.g)
    for c in np.unique(component):
        cells = np.isin(qc, np.flatnonzero(component[:kq] == c))
        refs = np.isin(rc, np.flatnonzero(component[kq:] == c))
        shift = np.mean(sparse.f[cells] - dense.f[cells])
        f_shift[cells], g_shift[refs] = shift, -shift
    np.testing.assert_allclose(sparse.f - f_shift, dense.f, atol=tol)
    np.testing.assert_allclose(sparse.g - g_shift, dense.g, atol=tol)


@pytest.mark.parametrize(
    ("labels", "skipped"),
    [(MANY, True), (FEW, True), (np.zeros((2, 2)), False)],
    ids=["many", "few", "none"],
)
@pytest.mark.parametrize("budget", [0, 20_000, None], ids=["log", "mixed", "kernel"])
def test_sparse_and_dense_agree(sparse_everywhere, labels, skipped, budget):
    prob = problem(labels)
    # a tight solve that still skips: per-block tolerance 1e-8 of the plan's mass
    kwargs = {"threshold": 1e-8, "max_iterations": 3000, "sparse_tolerance": 1.0}
    if budget is not None:
        kwargs["kernel_memory_budget"] = budget
    dense = ot_problems.solve(prob, sparse=False, **kwargs)
    sparse = ot_problems.solve(prob, sparse=True, **kwargs)
    assert dense.converged and sparse.converged
    assert sparse.sparse and not dense.sparse
    assert sparse.n_blocks == labels.size
    assert (sparse.n_active_blocks < labels.size) is skipped
    assert sparse.skipped_mass_bound <= labels.size * 1e-8
    share = sparse.blocks.kernel_share
    assert sparse.mode == {1.0: "kernel", 0.0: "log"}.get(share, "kernel+log")
    assert share == {0: 0.0, None: 1.0}.get(budget, share)
    if budget == 20_000 and labels is MANY:
        assert 0 < share < 1
    assert_same_potentials(sparse, dense, 1e-6, prob[5], prob[6])

    ref = sums(prob, dense)
    got = sums(prob, sparse, active=sparse.blocks)
    mass = ref["mass"]
    np.testing.assert_allclose(got["tm"], ref["tm"], atol=1e-9)
    np.testing.assert_allclose(got["row_mass"], ref["row_mass"], atol=1e-9)
    np.testing.assert_allclose(got["col_mass"], ref["col_mass"], atol=1e-9)
    np.testing.assert_allclose(got["mass"], mass, atol=1e-9)
    np.testing.assert_array_equal(got["cost_sum"], ref["cost_sum"])
    carried = mass >= 1e-9
    np.testing.assert_allclose(
        got["cost_mass"][carried] / got["mass"][carried],
        ref["cost_mass"][carried] / mass[carried],
        rtol=1e-6,
    )
    # what the skipped blocks carry in the dense plan is below the tolerance
    skipped_blocks = ~sparse.blocks.active
    assert np.all(mass[skipped_blocks] <= 1e-8)


def test_unbalanced_sparse_and_dense_agree(sparse_everywhere):
    prob = problem(MANY, seed=3)
    kwargs = {"threshold": 1e-8, "max_iterations": 3000, "tau_a": 0.95, "tau_b": 0.95}
    kwargs["sparse_tolerance"] = 1.0
    dense = ot_problems.solve(prob, sparse=False, **kwargs)
    sparse = ot_problems.solve(prob, sparse=True, **kwargs)
    assert sparse.sparse and sparse.n_active_blocks < sparse.n_blocks
    # relaxed marginals fix every constant: the potentials themselves agree
    np.testing.assert_allclose(sparse.f, dense.f, atol=1e-6)
    np.testing.assert_allclose(sparse.g, dense.g, atol=1e-6)
    mass = sums(prob, dense)["mass"]
    np.testing.assert_allclose(sums(prob, sparse, active=sparse.blocks)["mass"], mass, atol=1e-9)


def test_certification_brings_back_a_block_skipped_wrongly(sparse_everywhere, monkeypatch, caplog):
    """Start with only the diagonal blocks active although clusters 0 and 1 exchange mass:
    the restricted problem converges, the final bounds refuse it, the blocks come back and
    the solve ends at the dense solution."""
    prob = problem(SIMILAR, seed=1)
    original = _sparse.make_blocks

    def diagonal_start(*args, **kwargs):
        blocks, f0, g0 = original(*args, **kwargs)
        blocks.active = np.eye(3, dtype=bool) & blocks.present
        return blocks, f0, g0

    monkeypatch.setattr(_sparse, "make_blocks", diagonal_start)
    kwargs = {"max_iterations": 3000, "cluster_correction": False}
    with caplog.at_level(logging.DEBUG, logger="pairot"):
        sparse = ot_problems.solve(prob, sparse=True, threshold=1e-4, **kwargs)
    assert sparse.converged
    # a check below the threshold that did not end the solve: the certification refused it
    assert sparse.errors[0] < 1e-4 and len(sparse.errors) > 1
    assert "more active blocks" in caplog.text
    assert sparse.blocks.active[0, 1] and sparse.blocks.active[1, 0]
    dense = ot_problems.solve(prob, sparse=False, threshold=1e-10, **kwargs)
    mass = sums(prob, dense)["mass"]
    assert mass[0, 1] > 1e-3  # the block skipped at first carries real mass
    np.testing.assert_allclose(sums(prob, sparse, active=sparse.blocks)["mass"], mass, atol=1e-4)


@pytest.mark.parametrize("labels", [NONE, np.zeros((2, 2))], ids=["one_cluster", "no_label"])
def test_nothing_to_skip_runs_the_dense_passes(monkeypatch, labels):
    """One cluster a side, or all label distances 0: all cell pairs stay active, so the
    dense passes run, with the same result as sparse=False."""
    monkeypatch.setattr(_sparse, "MIN_SPARSE_PAIRS", 0)
    calls = []
    original = _sparse.make_blocks
    monkeypatch.setattr(
        _sparse, "make_blocks", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    prob = problem(labels)
    solution = ot_problems.solve(prob, sparse=True, threshold=1e-6)
    assert not solution.sparse and solution.blocks is None
    assert solution.active_share == 1.0 and solution.skipped_mass_bound == 0.0
    assert solution.mode == "kernel"
    dense = ot_problems.solve(prob, sparse=False, threshold=1e-6)
    np.testing.assert_array_equal(solution.f, dense.f)
    # one cluster a side is decided without computing any bound
    assert len(calls) == (0 if labels is NONE else 1)


def test_small_problems_run_the_dense_passes():
    solution = ot_problems.solve(problem(MANY), sparse=True, threshold=1e-6)
    assert not solution.sparse


def test_interrupt_between_tile_calls(sparse_everywhere, monkeypatch):
    """Passes split into many device calls check for an interrupt between calls."""
    monkeypatch.setattr(_sparse, "CALL_PAIRS", 1)  # one tile per call
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(_sparse, "check_interrupt", check)
    with pytest.raises(KeyboardInterrupt):
        ot_problems.solve(problem(MANY), sparse=True, kernel_memory_budget=0)
    assert len(calls) == 7


def test_ctrl_c_during_a_sparse_dataset_map_solve(sparse_everywhere, monkeypatch, default_sigint):
    """A real SIGINT during a tile pass of DatasetMap.solve ends it at the next safe point; the
    object keeps no half-finished solution and solves again."""
    query, reference = pr.datasets.pbmc_demo()
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=100
    )
    dataset_map = pr.tl.DatasetMap(q, r)
    dataset_map.init_geom(batch_size=64)
    dataset_map.init_problem()
    monkeypatch.setattr(_sparse, "CALL_PAIRS", 1)
    original = _progress._ConvergenceBar.rows

    def rows(self, *args, **kwargs):
        original(self, *args, **kwargs)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_progress._ConvergenceBar, "rows", rows)
    with pytest.raises(KeyboardInterrupt):
        dataset_map.solve(progress=False, kernel_memory_budget=0)
    assert dataset_map.ot_solution is None
    monkeypatch.setattr(_progress._ConvergenceBar, "rows", original)
    solution = dataset_map.solve(progress=False)
    assert solution.converged and solution.sparse


def test_dataset_map_outputs_agree(sparse_everywhere):
    """Mapping (all three), distance (exact and on a subsample) through DatasetMap."""
    query, reference = pr.datasets.simulate_pair(600, 600, 800, n_cell_types=6, random_state=2)
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=200
    )
    dataset_map = pr.tl.DatasetMap(q, r)
    dataset_map.init_geom()
    dataset_map.init_problem()
    out = {}
    for sparse in (False, True):
        solution = dataset_map.solve(
            progress=False, threshold=1e-6, sparse=sparse, sparse_tolerance=1e-3
        )
        assert solution.converged and solution.sparse is sparse
        out[sparse] = (
            dataset_map.compute_mapping(None),
            dataset_map.compute_distance(),
            dataset_map.compute_distance(n_samples=40),
        )
        if sparse:
            assert solution.blocks.parts[0].kernel is None  # released with the outputs
            assert solution.n_active_blocks < solution.n_blocks
    mass = out[False][0]["transported_mass"].to_numpy() / 6
    # "jensen_shannon" takes a square root of the mass outside a cluster, so the up to 1e-9 of
    # it that a skipped block may carry moves it by up to about 1e-3
    tolerance = {"mean": 1e-5, "transported_mass": 1e-5, "jensen_shannon": 2e-3}
    for method, frame in out[True][0].items():
        np.testing.assert_allclose(
            frame.to_numpy(), out[False][0][method].to_numpy(), atol=tolerance[method]
        )
    # a block with less than ~1e-8 of the mass is not pinned down by a solve to 1e-6 (its
    # mass differs between valid solutions, e.g. 6.6e-9 dense and below the 1e-9 tolerance
    # sparse); the distance of the pairs that carry mass agrees
    carried = mass >= 1e-6
    for k in (1, 2):
        np.testing.assert_allclose(
            out[True][k].to_numpy()[carried], out[False][k].to_numpy()[carried], atol=1e-4
        )


@pytest.mark.parametrize(("kernel_dtype", "tolerance"), [("bfloat16", 2e-3)])
def test_half_precision_tile_kernels_are_close(sparse_everywhere, kernel_dtype, tolerance):
    """Potentials within ``tolerance * epsilon`` of the float32 tile kernels' (measured)."""
    prob = problem(MANY, seed=4)
    x, y, offset, a, b, qc, rc = prob[:7]
    kwargs = {
        "epsilon": EPS,
        "progress": False,
        "query_codes": qc,
        "ref_codes": rc,
        "threshold": 1e-6,
    }
    full = _ot.sinkhorn(x, y, offset, a, b, **kwargs)
    half = _ot.sinkhorn(x, y, offset, a, b, kernel_dtype=kernel_dtype, **kwargs)
    assert half.blocks.parts[0].kernel.dtype.name == kernel_dtype
    assert full.blocks.parts[0].kernel.dtype.name == "float32"
    assert_same_potentials(half, full, tolerance * EPS, qc, rc)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sparse": "yes"}, TypeError, "sparse must be True or False"),
        ({"sparse_tolerance": 0.0}, ValueError, "sparse_tolerance must be"),
        ({"sparse_tolerance": 2.0}, ValueError, "sparse_tolerance must be"),
        ({"kernel_dtype": "float16"}, ValueError, "kernel_dtype must be None or 'bfloat16'"),
    ],
)
def test_bad_sparse_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ot_problems.solve(problem(MANY), **kwargs)


def test_aggregate_rejects_foreign_blocks(sparse_everywhere):
    prob = problem(MANY)
    solution = ot_problems.solve(prob, sparse=True, threshold=1e-6)
    other = problem(MANY, seed=5, n=150)
    with pytest.raises(ValueError, match="active must be the blocks of the sinkhorn run"):
        sums(other, ot_problems.solve(other, sparse=False), active=solution.blocks)
    with pytest.raises(ValueError, match="active must be a boolean array of shape"):
        sums(prob, solution, active=np.ones((2, 2), dtype=bool))


def test_lower_bounds_margin_is_small():
    """The round-off margin of the cost bounds is a factor of at most ~1.01 on a block's mass
    bound at epsilon 0.05 (so it cannot keep many blocks active)."""
    x, y, offset, _, _, qc, rc, cost = problem(MANY)
    lb = _active.cost_lower_bounds(x, y, offset, qc, rc, 5, 5)
    for k in range(5):
        exact = cost[np.ix_(qc == k, rc == k)].min()
        assert exact - lb[k, k] >= 0
