"""The bookkeeping of the sparse mode against naive computations: layout, tile plans, cost
bounds (brute-force minima), mass bounds (dense plans) and the choice of the active set."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pairot.tl._ot._active import (
    Layout,
    choose_active,
    cost_lower_bounds,
    log_mass_bounds,
    skipped_log_mass,
)
from pairot.tl._ot._sparse import TilePlan


def _augmented(rng, n, m, kq, kr, d=12, scale=0.3):
    """Points like DatasetMap's: unit feature rows (scaled) plus label columns constant per
    cluster (the query's carry a label-distance row, the reference's a one-hot)."""
    qc = rng.integers(0, kq, n)
    rc = rng.integers(0, kr, m)
    fx = rng.normal(size=(n, d)) + 2 * rng.normal(size=(kq, d))[qc]
    fy = rng.normal(size=(m, d)) + 2 * rng.normal(size=(kr, d))[rc]
    fx /= np.linalg.norm(fx, axis=1, keepdims=True)
    fy /= np.linalg.norm(fy, axis=1, keepdims=True)
    label = rng.uniform(0, 1, size=(kq, kr))
    x = np.hstack([-scale * fx, 1.5 * label[qc]])
    y = np.hstack([fy, np.eye(kr)[rc]])
    return x, y, qc, rc


def test_layout_pads_clusters_to_whole_units_and_round_trips():
    codes = np.array([2, 0, 2, 2, 1, 0, 2])
    lay = Layout.of(codes, 4, unit=2)
    np.testing.assert_array_equal(lay.counts, [2, 1, 4, 0])
    np.testing.assert_array_equal(lay.start, [0, 2, 4, 8])
    np.testing.assert_array_equal(lay.stop, [2, 4, 8, 8])
    assert lay.n_padded == 8
    np.testing.assert_array_equal(lay.codes[lay.position], codes)  # every cell in its cluster
    assert lay.real.sum() == len(codes) and len(set(lay.position)) == len(codes)
    values = np.arange(len(codes)) * 10.0
    padded = lay.pad(values, -1.0)
    assert np.sum(padded == -1.0) == 1
    np.testing.assert_array_equal(lay.unpad(padded), values)
    # cells keep their order within a cluster
    np.testing.assert_array_equal(lay.position[codes == 2], [4, 5, 6, 7])


def test_tile_plan_covers_exactly_the_active_blocks():
    rng = np.random.default_rng(0)
    qc, rc = rng.integers(0, 3, 37), rng.integers(0, 4, 29)
    lx, ly = Layout.of(qc, 3, 8), Layout.of(rc, 4, 8)
    active = rng.random((3, 4)) < 0.5
    active[0, 0] = True
    plan = TilePlan.of(lx, ly, active, 4, 8)
    covered = np.zeros((lx.n_padded, ly.n_padded), dtype=bool)
    rows = np.asarray(plan.rows)[: plan.n_tiles]
    cols = np.asarray(plan.cols)[: plan.n_tiles]
    for r0, c0 in zip(rows, cols, strict=True):
        assert not covered[r0 : r0 + 4, c0 : c0 + 8].any()  # tiles do not overlap
        covered[r0 : r0 + 4, c0 : c0 + 8] = True
    expected = active[lx.codes][:, ly.codes]
    np.testing.assert_array_equal(covered, expected)
    assert plan.capacity >= plan.n_tiles
    np.testing.assert_array_equal(plan.row_cluster, lx.codes[rows])
    np.testing.assert_array_equal(plan.col_cluster, ly.codes[cols])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_lower_bounds_hold_and_are_exact_on_the_label_part(seed):
    rng = np.random.default_rng(seed)
    x, y, qc, rc = _augmented(rng, 300, 250, 5, 6)
    offset = 0.3
    lb = cost_lower_bounds(x, y, offset, qc, rc, 5, 6)
    cost = offset + x @ y.T
    for k, c in itertools.product(range(5), range(6)):
        block = cost[np.ix_(qc == k, rc == c)]
        if block.size:
            assert lb[k, c] <= block.min()
    # the label part is exact: with all cell features equal the bound is the cost itself
    x2, y2 = x.copy(), y.copy()
    x2[:, :12], y2[:, :12] = x[0, :12], y[0, :12]
    lb2 = cost_lower_bounds(x2, y2, offset, qc, rc, 5, 6)
    cost2 = offset + x2 @ y2.T
    for k, c in itertools.product(range(5), range(6)):
        block = cost2[np.ix_(qc == k, rc == c)]
        if block.size:
            assert block.min() - 1e-3 < lb2[k, c] <= block.min()


def test_cost_lower_bounds_use_the_cluster_spread():
    """Tight clusters: the bound through centroids and radii beats Cauchy-Schwarz."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(2, 8))
    fx = centres[0] + 0.01 * rng.normal(size=(50, 8))
    fy = centres[1] + 0.01 * rng.normal(size=(40, 8))
    x, y = np.vstack([fx]), np.vstack([fy])
    qc, rc = np.zeros(50, int), np.zeros(40, int)
    lb = cost_lower_bounds(x, y, 0.0, qc, rc, 1, 1)
    true_min = (x @ y.T).min()
    cauchy = -np.linalg.norm(x, axis=1).max() * np.linalg.norm(y, axis=1).max()
    assert lb[0, 0] <= true_min
    assert true_min - lb[0, 0] < 0.1 * (true_min - cauchy)


def test_mass_bounds_bound_the_dense_plan():
    rng = np.random.default_rng(4)
    x, y, qc, rc = _augmented(rng, 120, 90, 3, 4)
    offset, eps = 0.3, 0.05
    f = rng.normal(scale=0.2, size=120)
    g = rng.normal(scale=0.2, size=90)
    lb = cost_lower_bounds(x, y, offset, qc, rc, 3, 4)
    bounds = log_mass_bounds(f, g, eps, lb, qc, rc)
    plan = np.exp((f[:, None] + g[None, :] - (offset + x @ y.T)) / eps)
    for k, c in itertools.product(range(3), range(4)):
        mass = plan[np.ix_(qc == k, rc == c)].sum()
        assert np.log(mass) <= bounds[k, c] + 1e-9


def test_choose_active_keeps_the_blocks_above_the_tolerance_and_each_clusters_largest():
    rng = np.random.default_rng(5)
    log_bounds = rng.normal(scale=6.0, size=(4, 5)) - 20
    log_bounds[2] = -60.0  # a query cluster whose blocks are all below the tolerance
    log_bounds[2, 3] = -55.0
    present = np.ones((4, 5), dtype=bool)
    log_tol = np.log(1e-9)
    active = choose_active(log_bounds, log_tol, present)
    forced = np.zeros_like(present)
    forced[np.arange(4), log_bounds.argmax(axis=1)] = True
    forced[log_bounds.argmax(axis=0), np.arange(5)] = True
    np.testing.assert_array_equal(active, (log_bounds > log_tol) | forced)
    assert active[2, 3]  # kept although below the tolerance: query cluster 2's largest
    expected = np.log(np.exp(log_bounds[~active]).sum())
    assert skipped_log_mass(log_bounds, active) == pytest.approx(expected)
    assert skipped_log_mass(log_bounds, np.ones_like(active)) == -np.inf
    # absent blocks are never active
    present[1, 2] = False
    assert not choose_active(log_bounds, log_tol, present)[1, 2]
