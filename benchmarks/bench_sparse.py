"""The OT solve through ``DatasetMap`` on cached problems: sparse against dense, side by side.

Run by hand (not by CI)::

    python benchmarks/ot_problems_data.py --problem 16k            # once: writes the data
    python benchmarks/bench_sparse.py --problem 16k --modes sparse dense
    python benchmarks/bench_sparse.py --problem 32k --modes sparse dense --repeat 3
    python benchmarks/bench_sparse.py --problem seed --modes sparse   # the seed's size

For ``--problem`` (a folder ``--data-dir/<problem>`` written by ``ot_problems_data.py``), every
mode runs in a fresh child process (this script with ``--child``), which reads the two h5ad
files and runs the seed tutorial's calls (METHOD.md section 9)::

    dm = pr.tl.DatasetMap(query, reference)
    dm.init_geom(batch_size=..., epsilon=0.05)     # 12288 for seed (the tutorial's), else 1024
    dm.init_problem()
    dm.solve(sparse=..., kernel_memory_budget=...) # --repeat times
    dm.compute_mapping(None)                        # all three aggregation methods
    dm.compute_distance()

``--modes sparse`` is ``solve(sparse=True)``, ``dense`` is ``solve(sparse=False)``; while
``DatasetMap.solve`` has no ``sparse`` keyword (found with ``inspect.signature``), ``dense`` is
the plain ``solve()`` and ``sparse`` is reported unavailable and not run. The child prints one
JSON line: wall time of every step (the first solve includes JIT compilation; with
``--repeat`` > 1 the median of the later solves is reported too, and the time per iteration
comes from the warm solves), iterations, marginal error, ``ot_solution.mode``, for sparse
solves ``active_share``, ``skipped_mass_bound``, ``n_active_blocks`` and ``n_blocks`` (where
the solution has them), the peak resident memory of the process (``ru_maxrss``) and, from a
thread sampling the resident memory every 0.2 s, the memory before and the peak during each
step. The child writes its mapping (three tables) and distance as parquet to a temporary
folder; with two modes in one run the parent prints the ratios sparse / dense of solve time
and time per iteration and the largest absolute differences of the outputs: every mapping, and
the distance over the cluster pairs whose dense plan mass (``transported_mass`` times the
query cluster's marginal mass, 1 / query clusters under the default balanced marginals) is at
least 1e-9 (the distance elsewhere is a mean cost over almost no mass). Then a short table.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_DATA_DIR = Path("/tmp/pairot_ot")
EPSILON = 0.05
#: Batch size per problem: the seed tutorial's 12288 at the seed's size, 1024 otherwise.
BATCH_SIZE = {"seed": 12288}
MAPPING_METHODS = ("mean", "jensen_shannon", "transported_mass")
#: Plan mass below which a cluster pair's distance is left out of the comparison.
MASS_FLOOR = 1e-9
SPARSE_FIELDS = ("active_share", "skipped_mass_bound", "n_active_blocks", "n_blocks")


def has_sparse_keyword() -> bool:
    from pairot.tl import DatasetMap

    return "sparse" in inspect.signature(DatasetMap.solve).parameters


# --------------------------------------------------------------------------- child
class RssSampler:
    """A daemon thread sampling this process's resident memory every ``interval`` seconds;
    ``mark()`` returns the peak since the previous mark (GiB) and starts a new interval."""

    def __init__(self, interval: float = 0.2):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._interval = interval
        self._peak = self.rss()
        threading.Thread(target=self._run, daemon=True).start()

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while True:
            self._peak = max(self._peak, self.rss())
            time.sleep(self._interval)

    def mark(self) -> float:
        now = self.rss()
        peak, self._peak = max(self._peak, now), now
        return round(peak / 1024**3, 3)


def _scalar(value):
    """A JSON-friendly copy of a solution attribute (numpy scalars to Python numbers)."""
    if value is None:
        return None
    try:
        return value.item()
    except (AttributeError, ValueError):
        return value


def child(config: dict) -> None:
    """Run one mode on one problem; print one JSON line; save the outputs as parquet."""
    import gc

    sampler = RssSampler()
    steps: dict[str, dict] = {}

    def timed(label: str, call):
        before = round(sampler.rss() / 1024**3, 3)
        sampler.mark()
        start = time.perf_counter()
        out = call()
        steps[label] = {
            "s": round(time.perf_counter() - start, 3),
            "rss_before_gb": before,
            "peak_rss_gb": sampler.mark(),
        }
        return out

    import anndata as ad
    import jax

    import pairot as pr

    folder = Path(config["folder"])
    query = timed("read_query", lambda: ad.read_h5ad(folder / "query.h5ad"))
    reference = timed("read_reference", lambda: ad.read_h5ad(folder / "reference.h5ad"))
    dm = timed("DatasetMap", lambda: pr.tl.DatasetMap(query, reference))
    timed("init_geom", lambda: dm.init_geom(batch_size=config["batch_size"], epsilon=EPSILON))
    timed("init_problem", lambda: dm.init_problem())
    kwargs = {"progress": config["progress"]}
    if config["kernel_memory_budget"] is not None:
        kwargs["kernel_memory_budget"] = config["kernel_memory_budget"]
    if has_sparse_keyword():
        kwargs["sparse"] = config["mode"] == "sparse"
        if config.get("sparse_tolerance") is not None and kwargs["sparse"]:
            kwargs["sparse_tolerance"] = config["sparse_tolerance"]
    solve_s = []
    for repeat in range(config["repeat"]):
        if repeat:  # free the previous solution (and its kernel) before the next solve
            dm.ot_solution = None
            gc.collect()
        label = "solve" if repeat == 0 else f"solve_{repeat + 1}"
        timed(label, lambda: dm.solve(**kwargs))
        solve_s.append(steps[label]["s"])
    solution = dm.ot_solution
    mapping = timed("compute_mapping", lambda: dm.compute_mapping(None))
    distance = timed("compute_distance", lambda: dm.compute_distance())

    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    for method, frame in mapping.items():
        frame.to_parquet(out / f"mapping_{method}.parquet")
    distance.to_parquet(out / "distance.parquet")

    n_iterations = int(solution.n_iterations)
    warm = solve_s[1:] or solve_s
    errors = getattr(solution, "errors", None)
    figures = {
        "problem": config["problem"],
        "mode": config["mode"],
        "sparse_keyword": "sparse" in kwargs,
        "cells": [query.n_obs, reference.n_obs],
        "clusters": [len(dm.query_clusters), len(dm.reference_clusters)],
        "features": int(dm.geom.x.shape[1]),
        "batch_size": config["batch_size"],
        "kernel_memory_budget": config["kernel_memory_budget"],
        "ot_mode": getattr(solution, "mode", None),
        "n_iterations": n_iterations,
        "converged": bool(solution.converged),
        "final_error": None if errors is None or len(errors) == 0 else float(errors[-1]),
        "n_corrections": _scalar(getattr(solution, "n_corrections", None)),
        "solve_s": solve_s,
        "solve_s_first": solve_s[0],
        "solve_s_median": statistics.median(warm),
        "per_iteration_s": statistics.median(warm) / max(n_iterations, 1),
        "mapping_s": steps["compute_mapping"]["s"],
        "distance_s": steps["compute_distance"]["s"],
        "steps": steps,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
        "jax": jax.__version__,
        "devices": [str(device) for device in jax.devices()],
        "out": str(out),
    }
    if config["mode"] == "sparse":
        for name in SPARSE_FIELDS:
            figures[name] = _scalar(getattr(solution, name, None))
    print(json.dumps(figures), flush=True)


# --------------------------------------------------------------------------- parent
def run_child(config: dict) -> dict | None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, __file__, "--child", json.dumps(config)]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        failed = {"problem": config["problem"], "mode": config["mode"]}
        print(json.dumps({**failed, "error": f"child exited with {proc.returncode}"}), flush=True)
        return None
    figures = json.loads(lines[-1])
    print(json.dumps(figures), flush=True)
    return figures


def compare(sparse: dict, dense: dict) -> dict:
    """Ratios sparse / dense and the largest differences of the outputs."""
    import numpy as np
    import pandas as pd

    def read(figures: dict, name: str) -> pd.DataFrame:
        return pd.read_parquet(Path(figures["out"]) / f"{name}.parquet")

    out = {
        "problem": dense["problem"],
        "compare": "sparse / dense",
        "solve_ratio_first": sparse["solve_s_first"] / dense["solve_s_first"],
        "solve_ratio": sparse["solve_s_median"] / dense["solve_s_median"],
        "per_iteration_ratio": sparse["per_iteration_s"] / dense["per_iteration_s"],
        "iterations": [sparse["n_iterations"], dense["n_iterations"]],
        "outputs_ratio": (sparse["mapping_s"] + sparse["distance_s"])
        / (dense["mapping_s"] + dense["distance_s"]),
        "peak_rss_gb": [sparse["peak_rss_gb"], dense["peak_rss_gb"]],
    }
    for method in MAPPING_METHODS:
        a, b = read(sparse, f"mapping_{method}"), read(dense, f"mapping_{method}")
        out[f"max_abs_diff_mapping_{method}"] = float(
            np.nanmax(np.abs(a.to_numpy() - b.to_numpy()))
        )
    # plan mass of a pair: transported_mass times the query cluster's marginal mass, which is
    # 1 / (query clusters) under init_problem's default balanced marginals
    mass = read(dense, "mapping_transported_mass").to_numpy() / dense["clusters"][0]
    keep = mass >= MASS_FLOOR
    diff = np.abs(read(sparse, "distance").to_numpy() - read(dense, "distance").to_numpy())
    out["max_abs_diff_distance_mass_ge_1e-9"] = float(diff[keep].max()) if keep.any() else None
    out["pairs_mass_ge_1e-9"] = [int(keep.sum()), int(keep.size)]
    well = mass >= 1e-6
    out["max_abs_diff_distance_mass_ge_1e-6"] = float(diff[well].max()) if well.any() else None
    out["max_abs_diff_distance_all_pairs"] = float(np.nanmax(diff))
    return out


def table(results: list[dict]) -> str:
    head = "| mode | ot_mode | iterations | first solve (s) | solve (s) | per iteration (ms) |"
    head += " mapping (s) | distance (s) | peak RSS (GB) | active share |"
    rows = [head, "|" + " --- |" * 10]
    for r in results:
        share = r.get("active_share")
        rows.append(
            f"| {r['mode']} | {r['ot_mode']} | {r['n_iterations']} | {r['solve_s_first']:.2f} "
            f"| {r['solve_s_median']:.2f} | {1e3 * r['per_iteration_s']:.2f} "
            f"| {r['mapping_s']:.2f} | {r['distance_s']:.2f} | {r['peak_rss_gb']:.2f} "
            f"| {'-' if share is None else f'{share:.4g}'} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=("seed", "16k", "32k"), default="16k")
    parser.add_argument(
        "--modes", nargs="+", choices=("sparse", "dense"), default=["sparse", "dense"]
    )
    parser.add_argument("--kernel-memory-budget", type=int, default=None, help="bytes; 0 = log")
    parser.add_argument(
        "--sparse-tolerance", type=float, default=None, help="solve(sparse_tolerance=...)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="solves per mode (>= 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 12288 / 1024")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--progress", action="store_true", help="solve(progress=True)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    folder = args.data_dir / args.problem
    if not (folder / "meta.json").exists():
        parser.error(
            f"no data in {folder}: run python benchmarks/ot_problems_data.py --problem "
            f"{args.problem} --data-dir {args.data_dir} first"
        )
    sparse_available = has_sparse_keyword()
    batch_size = args.batch_size or BATCH_SIZE.get(args.problem, 1024)
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "problem": args.problem,
                "batch_size": batch_size,
                "sparse_keyword": sparse_available,
                "repeat": args.repeat,
            }
        ),
        flush=True,
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_sparse_") as tmp:
        for mode in dict.fromkeys(args.modes):
            if mode == "sparse" and not sparse_available:
                reason = "DatasetMap.solve has no sparse keyword"
                print(json.dumps({"mode": "sparse", "available": False, "why": reason}))
                continue
            config = {
                "problem": args.problem,
                "folder": str(folder),
                "mode": mode,
                "batch_size": batch_size,
                "kernel_memory_budget": args.kernel_memory_budget,
                "sparse_tolerance": args.sparse_tolerance,
                "repeat": args.repeat,
                "progress": args.progress,
                "out": str(Path(tmp) / mode),
            }
            figures = run_child(config)
            if figures is not None:
                results[mode] = figures
        if "sparse" in results and "dense" in results:
            print(json.dumps(compare(results["sparse"], results["dense"])), flush=True)
    if results:
        print(table(list(results.values())), flush=True)


if __name__ == "__main__":
    main()
