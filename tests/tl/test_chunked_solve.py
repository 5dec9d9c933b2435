"""Sinkhorn in interruptible chunks: the same iterates as one device call, interrupts honoured
between chunks, progress shown as convergence."""

from __future__ import annotations

import signal

import numpy as np
import ot_problems
import pytest
from scipy.special import logsumexp

from pairot import _interrupt
from pairot.tl import _ot
from pairot.tl._ot import _aggregate, _chunks, _kernel, _passes, _progress, aggregate, sinkhorn

#: Label distances of a clustered problem (as in test_cluster_correction.py): mass must cross
#: label distance 1, so the run needs several checks and a correction.
LABELS = np.array([[0.1, 1, 1], [0.2, 1, 1], [1, 1, 0.1]])
EPS = 0.05


def clustered_problem(seed: int):
    return ot_problems.clustered_problem(seed, LABELS, 90, 110, 6)[:7]


def run(problem, **kwargs):
    return ot_problems.solve(problem, **({"threshold": 1e-8, "max_iterations": 400} | kwargs))


class Counter:
    """Wraps a backend function and counts its calls."""

    def __init__(self, function):
        self.function = function
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.mark.parametrize("budget", [0, _ot.DEFAULT_KERNEL_MEMORY_BUDGET])
@pytest.mark.parametrize("codes", [True, False])
def test_chunked_passes_give_the_same_solution(monkeypatch, budget, codes):
    problem = clustered_problem(0)
    extra = {} if codes else {"query_codes": None}
    whole = run(problem, kernel_memory_budget=budget, **extra)
    # passes over more than 200 pairs are split: 16-row chunks of 90 x 110 cells, which do
    # not grow with a time budget of 0 s per call
    monkeypatch.setattr(_chunks, "_CHUNK_PAIRS", 200)
    monkeypatch.setattr(_chunks, "_CHUNK_SECONDS", 0.0)
    lse_rows = Counter(_passes._lse_rows)
    kernel_rows = Counter(_kernel._kernel_rows)
    monkeypatch.setattr(_passes, "_lse_rows", lse_rows)
    monkeypatch.setattr(_passes, "_kernel_rows", kernel_rows)
    chunked = run(problem, kernel_memory_budget=budget, **extra)
    assert chunked.mode == whole.mode == ("log" if budget == 0 else "kernel")
    if budget == 0:
        # at least ceil(90 / 16) + ceil(110 / 16) calls per iteration
        assert lse_rows.calls >= chunked.n_iterations * 13
    else:
        assert kernel_rows.calls >= 6  # the kernel was built in chunks
    assert chunked.n_iterations == whole.n_iterations
    assert chunked.n_corrections == whole.n_corrections
    np.testing.assert_allclose(chunked.errors, whole.errors, rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(chunked.f, whole.f, rtol=0, atol=1e-10)
    np.testing.assert_allclose(chunked.g, whole.g, rtol=0, atol=1e-10)
    if budget:
        np.testing.assert_allclose(chunked.kernel.K, whole.kernel.K, rtol=1e-12)


def test_chunked_log_iterations_follow_the_dense_formulas(monkeypatch):
    """Five plain iterations in chunks against dense float64 updates written out here."""
    x_aug, y_aug, offset, a, b, _, _ = clustered_problem(1)
    monkeypatch.setattr(_chunks, "_CHUNK_PAIRS", 300)
    out = sinkhorn(
        x_aug,
        y_aug,
        offset,
        a,
        b,
        epsilon=EPS,
        dtype=np.float64,
        threshold=1e-30,
        max_iterations=5,
        inner_iterations=5,
        batch_size=8,
        progress=False,
        kernel_memory_budget=0,
    )
    cost = offset + x_aug @ y_aug.T
    f, g = np.zeros(len(a)), np.zeros(len(b))
    for _ in range(5):
        f = EPS * np.log(a) - EPS * logsumexp((g[None, :] - cost) / EPS, axis=1)
        g = EPS * np.log(b) - EPS * logsumexp((f[:, None] - cost) / EPS, axis=0)
    np.testing.assert_allclose(out.f, f, atol=1e-11)
    np.testing.assert_allclose(out.g, g, atol=1e-11)


def test_short_device_calls_do_not_move_the_checks(monkeypatch):
    """With a tiny time budget every call runs one iteration: checks and result unchanged."""
    problem = clustered_problem(2)
    whole = run(problem, kernel_memory_budget=0)
    steps = Counter(_passes._sinkhorn_steps)
    monkeypatch.setattr(_passes, "_sinkhorn_steps", steps)
    monkeypatch.setattr(_chunks, "_CHUNK_SECONDS", 1e-12)
    split = run(problem, kernel_memory_budget=0)
    # one iteration per call: until a call is timed, and then because of the time budget
    assert steps.calls == split.n_iterations
    assert split.n_iterations == whole.n_iterations
    np.testing.assert_allclose(split.errors, whole.errors, rtol=1e-6, atol=1e-14)
    np.testing.assert_allclose(split.f, whole.f, atol=1e-10)


def test_a_request_stops_a_chunked_pass_at_the_next_chunk(monkeypatch):
    problem = clustered_problem(3)
    monkeypatch.setattr(_chunks, "_CHUNK_PAIRS", 200)
    monkeypatch.setattr(_chunks, "_CHUNK_SECONDS", 0.0)
    lse_rows = Counter(_passes._lse_rows)
    monkeypatch.setattr(_passes, "_lse_rows", lse_rows)
    seen = {}
    original = _progress._ConvergenceBar.rows

    def rows(self, label, done, total):
        original(self, label, done, total)
        if lse_rows.calls >= 20 and not seen:
            seen["calls"] = lse_rows.calls
            _interrupt._request(signal.SIGINT)

    monkeypatch.setattr(_progress._ConvergenceBar, "rows", rows)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(problem, kernel_memory_budget=0)
    finally:
        _interrupt._clear()
    # the chunk queued behind the reported one (if the pass had one more) is the only one
    # dispatched after the request
    assert seen["calls"] <= lse_rows.calls <= seen["calls"] + 1


def test_a_request_stops_the_aggregation_between_blocks(monkeypatch):
    x_aug, y_aug, offset, a, b, qc, rc = clustered_problem(4)
    out = run((x_aug, y_aug, offset, a, b, qc, rc), kernel_memory_budget=0)
    blocks = Counter(_aggregate._aggregate_block)
    monkeypatch.setattr(_aggregate, "_aggregate_block", blocks)
    _interrupt._request(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            aggregate(
                x_aug,
                y_aug,
                offset,
                out.f,
                out.g,
                epsilon=EPS,
                query_codes=qc,
                ref_codes=rc,
                n_query_clusters=3,
                n_ref_clusters=3,
                batch_size=8,
                dtype=np.float64,
            )
    finally:
        _interrupt._clear()
    assert blocks.calls <= 2  # the first block and the one dispatched ahead of it


def test_chunked_kernel_aggregation_gives_the_same_sums(monkeypatch):
    x_aug, y_aug, offset, a, b, qc, rc = clustered_problem(6)
    out = run((x_aug, y_aug, offset, a, b, qc, rc))
    assert out.kernel is not None
    kwargs = {
        "epsilon": EPS,
        "query_codes": qc,
        "ref_codes": rc,
        "n_query_clusters": 3,
        "n_ref_clusters": 3,
        "batch_size": 8,
        "dtype": np.float64,
        "kernel": out.kernel,
    }
    whole = aggregate(x_aug, y_aug, offset, out.f, out.g, **kwargs)
    monkeypatch.setattr(_chunks, "_CHUNK_PAIRS", 1000)  # chunks of 8 rows x 110
    kernel_calls = Counter(_aggregate._aggregate_kernel)
    monkeypatch.setattr(_aggregate, "_aggregate_kernel", kernel_calls)
    chunked = aggregate(x_aug, y_aug, offset, out.f, out.g, **kwargs)
    assert kernel_calls.calls == 12  # ceil(90 / 8)
    for key in whole:
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-12, atol=1e-300)


def test_progress_shows_the_error_against_the_threshold(capsys, monkeypatch):
    problem = clustered_problem(5)
    monkeypatch.setattr(_chunks, "_CHUNK_PAIRS", 2000)
    monkeypatch.setattr(_chunks, "_CHUNK_SECONDS", 0.0)
    run(problem, kernel_memory_budget=0, progress=True, threshold=1e-6, dtype=np.float32)
    err = capsys.readouterr().err
    assert "target 1e-06" in err and "error " in err
    assert "query cells:" in err and "reference cells:" in err  # rows within a long pass
    assert "/400" not in err  # the bar's total is not the iteration cap
    assert "100%" in err  # converged: the bar is full


def test_interruptible_turns_ctrl_c_into_a_request_and_restores_the_handler(default_sigint):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with _interrupt.interruptible():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            signal.raise_signal(signal.SIGINT)  # recorded, not raised here
            assert _interrupt.requested() == signal.SIGINT
            _interrupt.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert _interrupt.requested() is None
    # a request after the last safe point still raises when the block ends
    with pytest.raises(KeyboardInterrupt):
        with _interrupt.interruptible():
            signal.raise_signal(signal.SIGINT)
    # a second Ctrl-C raises at once
    with pytest.raises(KeyboardInterrupt):
        with _interrupt.interruptible():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the second SIGINT did not raise")  # pragma: no cover
    assert _interrupt.requested() is None


def test_ctrl_c_during_dataset_map_solve(monkeypatch, default_sigint):
    """A real SIGINT in the middle of DatasetMap.solve ends it with KeyboardInterrupt at the
    next safe point; the object keeps no half-finished solution."""
    import pairot as pr

    query, reference = pr.datasets.pbmc_demo()
    q, r = pr.pp.preprocess_adatas(
        query, reference, "cell_type", "cell_type", "sample_id", "sample_id", n_top_genes=100
    )
    dataset_map = pr.tl.DatasetMap(q, r)
    dataset_map.init_geom(batch_size=64)
    dataset_map.init_problem()
    original = _progress._ConvergenceBar.update

    def update(self, iteration, error=None):
        original(self, iteration, error)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_progress._ConvergenceBar, "update", update)
    with pytest.raises(KeyboardInterrupt):
        dataset_map.solve(progress=False)
    assert dataset_map.ot_solution is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    solution = dataset_map.solve(progress=False)  # and it can be solved again
    assert solution.converged
