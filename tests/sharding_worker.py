"""Solves small problems on several JAX devices and saves what the sharding tests compare.

Run by tests/tl/test_sharding.py in a subprocess (the device count of a CPU JAX is fixed at
start-up: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``), alone or as one of several
processes of a ``jax.distributed`` run::

    python sharding_worker.py OUT.npz --runs 1:log,kernel 3:all [--dataset-map 1 4]
        [--dataset-map-inits zeros cluster multiscale]
        [--coordinator HOST:PORT --processes P --process-id I]

For every device count and configuration of :data:`CONFIGS` it names (``all``: every one)
it saves the potentials, the solve's figures and the outputs' sums of
:func:`~pairot.tl._ot.aggregate` (keys ``"{config}/{count}/{name}"``); with several processes
every one writes its own file. ``--dataset-map`` adds ``DatasetMap.solve(devices=...)`` on
the first ``COUNT`` devices (keys ``"dataset_map/{count}/{name}"``), and
``--dataset-map-inits`` the same with ``solve(init=...)`` (keys
``"dataset_map_{init}/{count}/{name}"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: name -> (sinkhorn options, engine settings changed for it)
CONFIGS = {
    "log": ({"kernel_memory_budget": 0, "sparse": False}, {}),
    # plain Sinkhorn, stopped before it converges: the same iterates all the same
    "log_plain": (
        {
            "kernel_memory_budget": 0,
            "sparse": False,
            "cluster_correction": False,
            "max_iterations": 50,
        },
        {},
    ),
    "log_chunked": ({"kernel_memory_budget": 0, "sparse": False}, {"chunk_pairs": 1500}),
    "kernel": ({"sparse": False}, {}),
    "kernel_chunked": ({"sparse": False}, {"chunk_pairs": 1500}),
    "kernel_relaxed": ({"sparse": False, "tau_a": 0.9}, {}),
    # active blocks, some from stored tile kernels and some from the cost ("kernel+log")
    "sparse": ({"kernel_memory_budget": 20_000}, {"sparse_everywhere": True}),
    # warm starts (sinkhorn(init=...)): see warm_start below
    "log_warm": ({"kernel_memory_budget": 0, "sparse": False}, {"warm": True}),
    "kernel_warm": ({"sparse": False}, {"warm": True}),
    "sparse_warm": ({"kernel_memory_budget": 20_000}, {"sparse_everywhere": True, "warm": True}),
}
#: The problem: 4 x 4 clusters, 101 x 87 cells (neither a multiple of 3 or 4: padding).
N, M, D = 101, 87, 6
LABELS = np.array(
    [[0.1, 0.3, 0.5, 1.0], [0.3, 0.1, 0.4, 0.6], [0.5, 0.4, 0.1, 0.5], [1.0, 0.6, 0.5, 0.2]]
)
EPS = 0.05


def problem():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ot_problems

    return ot_problems.clustered_problem(3, LABELS, N, M, D)


def warm_start(prob):
    """A start for ``sinkhorn(init=...)``: the cluster-level reference potential on every
    third reference cell, extended to all cells by the c-transform passes."""
    from pairot.tl._ot import cluster_potentials, extend_potentials

    x, y, offset, a, b, qc, rc = prob[:7]
    kq, kr = LABELS.shape
    _, g = cluster_potentials(x, y, offset, a, b, qc, rc, kq, kr, epsilon=EPS, tau_a=1.0, tau_b=1.0)
    known = np.arange(0, len(g), 3)
    return extend_potentials(
        x, y, offset, a, b, y[known], g[known], epsilon=EPS, dtype=np.float64, batch_size=16
    )


def run(config: str, devices, prob):
    """The solve and outputs of one configuration on ``devices``, as a dict of arrays."""
    from pairot.tl._ot import _chunks, _sparse, aggregate, sinkhorn

    options, settings = CONFIGS[config]
    saved = (_chunks._CHUNK_PAIRS, _sparse.MIN_SPARSE_PAIRS, _sparse.MAX_ACTIVE_SHARE)
    try:
        if "chunk_pairs" in settings:
            _chunks._CHUNK_PAIRS = settings["chunk_pairs"]
        if settings.get("sparse_everywhere"):
            _sparse.MIN_SPARSE_PAIRS, _sparse.MAX_ACTIVE_SHARE = 0, 1.0
        x, y, offset, a, b, qc, rc = prob[:7]
        if settings.get("warm"):
            options = {**options, "init": warm_start(prob)}
        solution = sinkhorn(
            x,
            y,
            offset,
            a,
            b,
            epsilon=EPS,
            dtype=np.float64,
            batch_size=16,
            progress=False,
            threshold=1e-5,
            query_codes=qc,
            ref_codes=rc,
            devices=devices,
            **options,
        )
        sums = aggregate(
            x,
            y,
            offset,
            solution.f,
            solution.g,
            epsilon=EPS,
            query_codes=qc,
            ref_codes=rc,
            n_query_clusters=LABELS.shape[0],
            n_ref_clusters=LABELS.shape[1],
            batch_size=16,
            dtype=np.float64,
            kernel=solution.kernel,
            active=solution.blocks,
            devices=devices,
        )
    finally:
        _chunks._CHUNK_PAIRS, _sparse.MIN_SPARSE_PAIRS, _sparse.MAX_ACTIVE_SHARE = saved
    out = {f"sums_{k}": v for k, v in sums.items()}
    out.update(
        f=solution.f,
        g=solution.g,
        n_iterations=solution.n_iterations,
        converged=solution.converged,
        n_devices=solution.n_devices,
        mode=solution.mode,
        sparse=solution.sparse,
        n_corrections=solution.n_corrections,
        start=solution.start,
    )
    return out


_PAIR: list = []


def run_dataset_map(devices, init: str = "auto"):
    """``DatasetMap.solve(devices=..., init=...)`` on a small simulated pair (203 x 181 cells,
    4 types; the multiscale start on at most 20 cells per cluster): the potentials, the three
    mappings and the distance, as a dict of arrays."""
    import pairot as pr
    from pairot.tl import _solve

    if not _PAIR:
        query, reference = pr.datasets.simulate_pair(
            203, 181, 400, n_cell_types=4, n_lineages=2, random_state=3
        )
        _PAIR.extend(
            pr.pp.preprocess_adatas(
                query, reference, "cell_type", "cell_type", "sample_id", "sample_id",
                n_top_genes=120,
            )
        )  # fmt: skip
    dm = pr.tl.DatasetMap(*_PAIR)
    dm.init_geom(batch_size=32)
    dm.init_problem()
    saved = _solve.MULTISCALE_CELLS
    _solve.MULTISCALE_CELLS = 20
    try:
        solution = dm.solve(devices=devices, progress=False, threshold=1e-5, init=init)
    finally:
        _solve.MULTISCALE_CELLS = saved
    out = {
        "start": solution.start,
        "f": solution.f,
        "g": solution.g,
        "n_devices": solution.n_devices,
        "n_iterations": solution.n_iterations,
        "distance": dm.compute_distance().to_numpy(),
    }
    for method in ("mean", "jensen_shannon", "transported_mass"):
        out[f"mapping_{method}"] = dm.compute_mapping(method).to_numpy()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--runs", nargs="+", default=["1:all"])
    parser.add_argument("--coordinator")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--dataset-map", nargs="*", type=int, default=[])
    parser.add_argument("--dataset-map-inits", nargs="*", default=[])
    args = parser.parse_args(argv)

    import jax

    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.processes,
            process_id=args.process_id,
        )
    prob = problem()
    devices = jax.devices()
    saved = {"device_count": len(devices), "process_count": jax.process_count()}
    for spec in args.runs:
        count, configs = spec.split(":")
        configs = list(CONFIGS) if configs == "all" else configs.split(",")
        for config in configs:
            for name, value in run(config, devices[: int(count)], prob).items():
                saved[f"{config}/{count}/{name}"] = np.asarray(value)
    for count in args.dataset_map:
        for name, value in run_dataset_map(devices[:count]).items():
            saved[f"dataset_map/{count}/{name}"] = np.asarray(value)
        for init in args.dataset_map_inits:
            for name, value in run_dataset_map(devices[:count], init).items():
                saved[f"dataset_map_{init}/{count}/{name}"] = np.asarray(value)
    np.savez(args.out, **saved)


if __name__ == "__main__":
    main()
