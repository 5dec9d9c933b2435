"""Cost of interruptible chunks: log-domain Sinkhorn iterations as one device call per check
(pairot before the chunks), fused calls of about 1 s, and row chunks of about 1 s (the
default above 2^27 cell pairs), side by side, interleaved.

Prints the median seconds per iteration of each, their ratios, the number of interrupt checks
per solve and the largest gap between two of them. Run by hand::

    python benchmarks/bench_chunked.py [--n 9000] [--m 9000] [--genes 350] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pairot.tl._ot import _block_sums, _chunks, _driver, sinkhorn

#: The modules of the OT engine that check for interrupts.
CHECKING = (_chunks, _driver, _block_sums)


def problem(n: int, m: int, genes: int, clusters: int, seed: int = 0):
    """Augmented vectors shaped like DatasetMap's: unit features and a label lookup."""
    rng = np.random.default_rng(seed)
    qc, rc = rng.integers(0, clusters, n), rng.integers(0, clusters, m)
    labels = np.where(np.eye(clusters, dtype=bool), 0.1, 1.0)
    x = rng.normal(size=(n, genes)).astype(np.float32)
    y = rng.normal(size=(m, genes)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x_aug = np.concatenate([-0.25 * x, 1.5 * labels[qc]], axis=1).astype(np.float32)
    y_aug = np.concatenate([y, np.eye(clusters)[rc]], axis=1).astype(np.float32)
    a = 1.0 / np.bincount(qc)[qc] / clusters
    b = 1.0 / np.bincount(rc)[rc] / clusters
    return x_aug, y_aug, 0.25, a, b


MODES = {
    "one call per check": (2**62, 1e9),
    "fused ~1 s calls": (2**62, 1.0),
    "row chunks (default)": (2**27, 1.0),
}


def run(data, iterations: int, mode: str):
    _chunks._CHUNK_PAIRS, _chunks._CHUNK_SECONDS = MODES[mode]
    calls, gaps, last = [0], [], [time.perf_counter()]
    original = _chunks.check_interrupt

    def check():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        calls[0] += 1
        original()

    for module in CHECKING:
        module.check_interrupt = check
    try:
        start = time.perf_counter()
        sinkhorn(
            *data,
            epsilon=0.05,
            max_iterations=iterations,
            inner_iterations=iterations,
            threshold=1e-30,
            kernel_memory_budget=0,
            progress=False,
            batch_size=1024,
        )
        seconds = time.perf_counter() - start
    finally:
        for module in CHECKING:
            module.check_interrupt = original
    return seconds, calls[0], max(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=9000)
    parser.add_argument("--m", type=int, default=9000)
    parser.add_argument("--genes", type=int, default=350)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = problem(args.n, args.m, args.genes, args.clusters)
    print(
        f"{args.n:,} x {args.m:,} cells, {data[0].shape[1]} features, "
        f"{args.iterations} iterations per solve"
    )
    for mode in MODES:  # compile every path first
        run(data, 2, mode)
    times = {mode: [] for mode in MODES}
    info = {}
    for _ in range(args.repeats):
        for mode in MODES:
            seconds, calls, gap = run(data, args.iterations, mode)
            times[mode].append(seconds / args.iterations)
            info[mode] = (calls, gap)
    base = statistics.median(times["one call per check"])
    for mode in MODES:
        calls, gap = info[mode]
        median = statistics.median(times[mode])
        print(
            f"{mode:22s}: {median:.3f} s per iteration ({median / base:.3f}x), {calls} "
            f"interrupt checks per solve, longest gap between checks {gap:.2f} s"
        )


if __name__ == "__main__":
    main()
