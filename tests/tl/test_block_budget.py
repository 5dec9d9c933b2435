"""The rows per block are capped by ``block_memory_budget``, whatever ``batch_size`` says; the
results are those of the uncapped run up to float round-off."""

from __future__ import annotations

import logging

import numpy as np
import ot_problems
import pytest

import pairot as pr
from pairot.tl import _ot
from pairot.tl._ot import _aggregate, _kernel, _passes, aggregate, sinkhorn

#: Label distances of a clustered problem (as in test_chunked_solve.py).
LABELS = np.array([[0.1, 1, 1], [0.2, 1, 1], [1, 1, 0.1]])
N, M, KR = 90, 110, 3
EPS = 0.05
#: A few kB: 7 query rows against 110 + 3 values (1.25 * 7 * 113 * 4 = 3,955 bytes), 9
#: reference rows against 90 (4,050 bytes), 4 aggregation rows against 110 (3,520 bytes).
TINY = 4096
BUDGETS = [0, _ot.DEFAULT_KERNEL_MEMORY_BUDGET]


class Recorder:
    """Wraps an engine function and records the static keyword arguments of its calls."""

    def __init__(self, function, *names):
        self.function = function
        self.names = names
        self.seen: set[tuple] = set()

    def __call__(self, *args, **kwargs):
        self.seen.add(tuple(kwargs[name] for name in self.names))
        return self.function(*args, **kwargs)


def problem(seed: int = 0):
    return ot_problems.clustered_problem(seed, LABELS, N, M, 6)[:7]


def solve(data, **kwargs):
    kwargs = {
        "dtype": np.float32,
        "batch_size": 64,
        "threshold": 1e-5,
        "max_iterations": 400,
    } | kwargs
    return ot_problems.solve(data, **kwargs)


def assert_close(actual, expected, rtol=1e-6, err_msg=""):
    """Equal to ``rtol`` relative to the largest value (float32 round-off)."""
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max(), err_msg=err_msg
    )


def test_default_budget_does_not_cap_small_problems(caplog):
    assert _ot.DEFAULT_BLOCK_MEMORY_BUDGET == 1024**3
    with caplog.at_level(logging.INFO, logger="pairot"):
        solve(problem(), batch_size=10_000)
    assert "block_memory_budget" not in caplog.text


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_tiny_budget_gives_the_same_solution_in_smaller_blocks(monkeypatch, caplog, budget):
    data = problem()
    whole = solve(data, kernel_memory_budget=budget)
    steps = Recorder(_passes._sinkhorn_steps, "block_x", "block_y")
    rows = Recorder(_passes._initial_row_lse, "block_x")  # the start, the corrections
    build = Recorder(_kernel._build_kernel, "block")
    monkeypatch.setattr(_passes, "_sinkhorn_steps", steps)
    monkeypatch.setattr(_passes, "_initial_row_lse", rows)
    monkeypatch.setattr(_passes, "_build_kernel", build)
    with caplog.at_level(logging.INFO, logger="pairot"):
        capped = solve(data, kernel_memory_budget=budget, block_memory_budget=TINY)
    assert capped.mode == whole.mode == ("log" if budget == 0 else "kernel")
    if budget == 0:
        assert steps.seen == {(7, 9)}
        assert rows.seen == {(7,)}
    else:  # only the kernel is built in blocks
        assert build.seen == {(7,)}
    lines = [r.getMessage() for r in caplog.records if "block_memory_budget" in r.getMessage()]
    assert lines == [
        "Sinkhorn: batch_size=64 would need about 36.2 kB per block against 110 reference "
        "cells; using 7 rows per block, and 9 against the 90 query cells (block_memory_budget "
        "4.0 KiB)."
    ]
    assert capped.converged and capped.n_corrections == whole.n_corrections >= 1
    assert capped.n_iterations == whole.n_iterations
    assert_close(capped.f, whole.f, err_msg="f")
    assert_close(capped.g, whole.g, err_msg="g")
    assert_close(capped.errors, whole.errors, rtol=1e-3, err_msg="errors")


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_tiny_budget_gives_the_same_aggregate_in_smaller_blocks(monkeypatch, caplog, budget):
    x_aug, y_aug, offset, a, b, qc, rc = data = problem(1)
    out = solve(data, kernel_memory_budget=budget)
    kwargs = {
        "epsilon": EPS,
        "query_codes": qc,
        "ref_codes": rc,
        "n_query_clusters": 3,
        "n_ref_clusters": KR,
        "batch_size": 64,
        "kernel": out.kernel,
    }
    whole = aggregate(x_aug, y_aug, offset, out.f, out.g, **kwargs)
    blocks = Recorder(_aggregate._aggregate_block, "block")
    kernel_blocks = Recorder(_aggregate._aggregate_kernel, "block")
    monkeypatch.setattr(_aggregate, "_aggregate_block", blocks)
    monkeypatch.setattr(_aggregate, "_aggregate_kernel", kernel_blocks)
    with caplog.at_level(logging.INFO, logger="pairot"):
        capped = aggregate(x_aug, y_aug, offset, out.f, out.g, block_memory_budget=TINY, **kwargs)
    assert (kernel_blocks if budget else blocks).seen == {(4,)}
    assert (
        "aggregate: batch_size=64 would need about 56.3 kB per block against 110 reference "
        "cells; using 4 rows per block (block_memory_budget 4.0 KiB)."
    ) in caplog.text
    for key in whole:
        assert_close(capped[key], whole[key], err_msg=key)


@pytest.mark.parametrize("kernel_memory_budget", [0, None], ids=["log", "kernel"])
def test_dataset_map_outputs_with_a_tiny_budget(monkeypatch, caplog, kernel_memory_budget):
    query, reference = pr.datasets.pbmc_demo()
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=100
    )
    maps = []
    aggregate_kernel, aggregate_block = _aggregate._aggregate_kernel, _aggregate._aggregate_block
    for block_memory_budget in (None, 64 * 1024):
        dm = pr.tl.DatasetMap(q, r)
        dm.init_geom(batch_size=128)
        dm.init_problem()
        kernel_blocks = Recorder(aggregate_kernel, "block")
        blocks = Recorder(aggregate_block, "block")
        monkeypatch.setattr(_aggregate, "_aggregate_kernel", kernel_blocks)
        monkeypatch.setattr(_aggregate, "_aggregate_block", blocks)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pairot"):
            dm.solve(
                progress=False,
                kernel_memory_budget=kernel_memory_budget,
                block_memory_budget=block_memory_budget,
            )
            out = {k: dm.compute_mapping(k).to_numpy() for k in ("mean", "transported_mass")}
            out["distance"] = dm.compute_distance().to_numpy()
        out["f"] = dm.ot_solution.f
        maps.append(out)
        used = (blocks if kernel_memory_budget == 0 else kernel_blocks).seen
        m = dm.geom.y_aug.shape[0]
        if block_memory_budget is None:
            assert "block_memory_budget" not in caplog.text
            assert used == {(128,)}
        else:  # the aggregation's rows, from the budget the solve was given
            assert used == {(65536 // (2 * m * 4),)}
            assert "Sinkhorn: batch_size=128 would need about" in caplog.text
            assert "aggregate: batch_size=128 would need about" in caplog.text
    for key in maps[0]:
        assert_close(maps[1][key], maps[0][key], err_msg=key)
    solution = dm.ot_solution
    with pytest.raises(ValueError, match="block_memory_budget must be an integer >= 1, got 0"):
        dm.solve(progress=False, block_memory_budget=0)
    assert dm.ot_solution is solution and dm._block_memory_budget == 64 * 1024


@pytest.mark.parametrize("bad", [0, -1, 2.5, "1GB", True])
def test_a_bad_budget_is_refused(bad):
    x_aug, y_aug, offset, a, b, qc, rc = problem()
    message = rf"block_memory_budget must be an integer >= 1, got {bad!r}; pass a number of bytes"
    with pytest.raises(ValueError, match=message):
        sinkhorn(x_aug, y_aug, offset, a, b, epsilon=EPS, block_memory_budget=bad)
    with pytest.raises(ValueError, match=message):
        aggregate(
            x_aug,
            y_aug,
            offset,
            np.zeros(N),
            np.zeros(M),
            epsilon=EPS,
            query_codes=qc,
            ref_codes=rc,
            n_query_clusters=3,
            n_ref_clusters=KR,
            block_memory_budget=bad,
        )
