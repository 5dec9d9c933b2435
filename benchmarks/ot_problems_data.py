"""Preprocessed, downsampled study pairs for the OT benchmarks (``bench_sparse.py``), cached.

Run by hand (not by CI)::

    python benchmarks/ot_problems_data.py --problem 16k 32k
    python benchmarks/ot_problems_data.py --problem seed   # about 4 min, 7.5 GB peak

Each problem is written to ``--data-dir/<name>/`` (default ``/tmp/pairot_ot/<name>/``):
``query.h5ad`` and ``reference.h5ad`` (outputs of ``pairot.pp.preprocess_adatas``, then
downsampled; ready for ``pr.tl.DatasetMap(query, reference)``), ``sizes.csv`` (cells per
cluster: simulated, after ``downsample_indices``, final) and ``meta.json`` (the recipe, the
truth, the sizes and the wall time and peak memory of the generation). ``meta.json`` is
written last: a second call that finds it with the same recipe does nothing.

Recipe (the seed tutorial's, METHOD.md section 9): ``pairot.datasets.simulate_pair`` (raw UMI
counts, two-level lineage -> cell-type programs, donor and study batch effects, geometric
type proportions with per-study noise), for ``seed`` minus five query types; then
``preprocess_adatas(..., n_top_genes=350, n_samples_auroc=10_000,
n_samples_hvg_selection=100_000)`` on all simulated cells; then
``pr.pp.downsample_indices(labels, n_samples=10_000)`` on each side; then, only where the
downsampled study is larger than the problem's exact size, a seeded random subset of that size
(every cluster kept).

Problems:

- ``seed``: the seed's downsampled size, exactly 169,407 query x 272,139 reference cells,
  30 x 35 clusters. 35 types in 8 lineages (4-5 sibling types each; lineage programs of 20
  genes, type programs of 10) are simulated in both studies, 2,000 genes, 24 and 48 donors;
  the query then loses ``L2_T1``, ``L2_T3``, ``L4_T2``, ``L6_T4`` and ``L8_T1`` (siblings of
  each stay in the query), so five reference clusters have no query counterpart. The cells
  per study before downsampling are chosen (from the type proportions of a cheap dry run of
  the same simulation, which does not depend on the number of cells) as the fewest whose
  capped cluster sizes reach the exact totals: about 1.1 M reference and 0.43 M query cells,
  about 20 reference and 10 query clusters above 10,000 before capping, rare clusters of a
  few hundred cells.
- ``16k``: 16,000 x 16,000 cells, 20 types in 5 lineages, one to one (same types both sides).
- ``32k``: 32,000 x 32,000 cells, 40 types in 8 lineages, one query type (with siblings)
  missing from the reference (``scenario="missing_type"``: 40 x 39 clusters).

At 16k and 32k no cluster reaches 10,000 cells, so downsampling keeps every cell.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: Bumped whenever a change alters the files written for the same recipe.
FORMAT_VERSION = 1
DEFAULT_DATA_DIR = Path("/tmp/pairot_ot")
CELL_TYPE, SAMPLE = "cell_type", "sample_id"
#: The seed tutorial's preprocessing parameters (METHOD.md section 9).
PREPROCESS = {"n_top_genes": 350, "n_samples_auroc": 10_000, "n_samples_hvg_selection": 100_000}
#: Cells kept per cluster by ``downsample_indices`` (the seed tutorial's ``n_samples``).
CAP = 10_000

#: Keyword arguments of ``simulate_pair`` (``n_cells_*`` filled in by ``plan`` for ``seed``),
#: plus ``drop_query`` (query types removed after simulation) and ``exact`` (final cells).
PROBLEMS: dict[str, dict] = {
    "seed": {
        "simulate": {
            "n_genes": 2000,
            "scenario": "one_to_one",
            "n_cell_types": 35,
            "n_lineages": 8,
            "n_samples_query": 24,
            "n_samples_reference": 48,
            "n_markers_lineage": 20,
            "n_markers_type": 10,
            "type_imbalance": 60.0,
            "composition_log_sd": 0.8,
            "min_cells_per_type": 200,
            "random_state": 5,
        },
        "drop_query": ["L2_T1", "L2_T3", "L4_T2", "L6_T4", "L8_T1"],
        "exact": [169_407, 272_139],
    },
    "16k": {
        "simulate": {
            "n_cells_query": 16_000,
            "n_cells_reference": 16_000,
            "n_genes": 2000,
            "scenario": "one_to_one",
            "n_cell_types": 20,
            "n_lineages": 5,
            "n_samples_query": 8,
            "n_samples_reference": 16,
            "n_markers_lineage": 20,
            "n_markers_type": 10,
            "type_imbalance": 20.0,
            "composition_log_sd": 0.5,
            "min_cells_per_type": 100,
            "random_state": 16,
        },
        "drop_query": [],
        "exact": None,
    },
    "32k": {
        "simulate": {
            "n_cells_query": 32_000,
            "n_cells_reference": 32_000,
            "n_genes": 2000,
            "scenario": "missing_type",
            "n_cell_types": 40,
            "n_lineages": 8,
            "n_samples_query": 8,
            "n_samples_reference": 16,
            "n_markers_lineage": 20,
            "n_markers_type": 10,
            "type_imbalance": 20.0,
            "composition_log_sd": 0.5,
            "min_cells_per_type": 100,
            "random_state": 32,
        },
        "drop_query": [],
        "exact": None,
    },
}


# --------------------------------------------------------------------------- memory
def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``, KiB on Linux), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


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


# --------------------------------------------------------------------------- sizes
def _allocate(n_cells: int, prop: np.ndarray, min_cells: int) -> np.ndarray:
    """Cells per type as ``simulate_pair`` allocates them: ``min_cells`` each, the rest in
    proportion to ``prop`` (largest remainder)."""
    n = np.where(prop > 0, min_cells, 0).astype(np.int64)
    share = prop * (n_cells - n.sum())
    extra = np.floor(share).astype(np.int64)
    remainder = n_cells - n.sum() - extra.sum()
    if remainder > 0:
        extra[np.argsort(-(share - extra), kind="stable")[:remainder]] += 1
    return n + extra


def _fewest_cells(prop: np.ndarray, keep: np.ndarray, target: int, min_cells: int) -> int:
    """The fewest simulated cells whose kept types, capped at ``CAP``, hold >= ``target``."""
    if np.minimum(_allocate(10**9, prop, min_cells)[keep], CAP).sum() < target:
        msg = f"{keep.sum()} clusters capped at {CAP} cannot hold {target} cells"
        raise ValueError(msg)
    lo, hi = target, 10**9
    while lo < hi:
        mid = (lo + hi) // 2
        if np.minimum(_allocate(mid, prop, min_cells)[keep], CAP).sum() >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def plan(spec: dict) -> dict:
    """``simulate_pair``'s keyword arguments with the numbers of cells filled in.

    For a problem with ``exact`` sizes, a dry run of the same simulation with few cells gives
    the expected type proportions (drawn before, and independently of, the numbers of cells),
    and the numbers of cells are the fewest whose capped cluster sizes reach the exact totals.
    """
    import pairot as pr

    kw = dict(spec["simulate"])
    if spec["exact"] is None:
        return kw
    n_types, min_cells = kw["n_cell_types"], kw["min_cells_per_type"]
    dry, _ = pr.datasets.simulate_pair(
        n_cells_query=n_types * min_cells, n_cells_reference=n_types * min_cells, **kw
    )
    types = dry.uns["simulation"]["cell_types"]
    keep_query = ~types["cell_type"].isin(spec["drop_query"]).to_numpy()
    for side, keep, target in (
        ("query", keep_query, spec["exact"][0]),
        ("reference", np.ones(len(types), dtype=bool), spec["exact"][1]),
    ):
        prop = types[f"proportion_{side}"].to_numpy()
        kw[f"n_cells_{side}"] = _fewest_cells(prop, keep, target, min_cells)
    return kw


# --------------------------------------------------------------------------- generation
def _downsample(adata, exact: int | None, seed: int):
    """``downsample_indices`` (the tutorial's call), then a seeded subset of ``exact`` cells
    if there are more; returns the subset and the cluster sizes after the first step."""
    import pairot as pr

    labels = adata.obs[CELL_TYPE].to_numpy()
    kept = pr.pp.downsample_indices(labels, n_samples=CAP)
    capped = pd.Series(labels[kept]).value_counts()
    if exact is not None and kept.size > exact:
        rng = np.random.default_rng(seed)
        kept = np.sort(rng.choice(kept, size=exact, replace=False))
    elif exact is not None and kept.size < exact:
        msg = f"only {kept.size} cells after downsampling, fewer than the exact {exact}"
        raise RuntimeError(msg)
    out = adata[kept].copy()
    lost = set(capped.index) - set(out.obs[CELL_TYPE].unique())
    if lost:
        msg = f"the trim to {exact} cells lost clusters {sorted(lost)}"
        raise RuntimeError(msg)
    return out, capped


def generate(name: str, folder: Path) -> dict:
    """Simulate, preprocess, downsample and write one problem; return its ``meta.json``."""
    import pairot as pr

    spec = PROBLEMS[name]
    recipe = {"format_version": FORMAT_VERSION, "name": name, **spec, "preprocess": PREPROCESS}
    meta_path = folder / "meta.json"
    if meta_path.exists() and (folder / "query.h5ad").exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == json.loads(json.dumps(recipe)):
            print(f"# {name}: cached in {folder}, nothing to do", flush=True)
            return meta
        print(f"# {name}: {folder} holds another recipe; regenerating", flush=True)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    sampler = RssSampler()
    steps: dict[str, dict] = {}
    start = time.perf_counter()

    def step(label: str, began: float) -> None:
        steps[label] = {"s": round(time.perf_counter() - began, 2), "peak_rss_gb": sampler.mark()}
        print(f"# {name}: {label} {json.dumps(steps[label])}", flush=True)

    t = time.perf_counter()
    kw = plan(spec)
    step("plan", t)
    t = time.perf_counter()
    query, reference = pr.datasets.simulate_pair(**kw)
    truth = query.uns["simulation"]["truth"]
    if spec["drop_query"]:
        keep = ~query.obs[CELL_TYPE].isin(spec["drop_query"]).to_numpy()
        query = query[keep].copy()
        for column in (CELL_TYPE, "cell_type_fine", "lineage"):
            query.obs[column] = query.obs[column].cat.remove_unused_categories()
        truth = truth[~truth["query_cluster"].isin(spec["drop_query"])]
    simulated = [query.obs[CELL_TYPE].value_counts(), reference.obs[CELL_TYPE].value_counts()]
    nnz = [int(query.X.nnz), int(reference.X.nnz)]
    step("simulate", t)

    t = time.perf_counter()
    query_pp, reference_pp = pr.pp.preprocess_adatas(
        query, reference, CELL_TYPE, CELL_TYPE, SAMPLE, SAMPLE, **PREPROCESS
    )
    simulated_cells = [query.n_obs, reference.n_obs]
    del query, reference
    step("preprocess", t)

    t = time.perf_counter()
    exact = spec["exact"] or [None, None]
    query_pp, capped_q = _downsample(query_pp, exact[0], seed=1)
    reference_pp, capped_r = _downsample(reference_pp, exact[1], seed=2)
    step("downsample", t)

    t = time.perf_counter()
    for file, adata in (("query.h5ad", query_pp), ("reference.h5ad", reference_pp)):
        adata.write_h5ad(folder / f".{file}.partial")
        os.replace(folder / f".{file}.partial", folder / file)
    step("write", t)

    sizes = []
    for side, adata, before, capped in (
        ("query", query_pp, simulated[0], capped_q),
        ("reference", reference_pp, simulated[1], capped_r),
    ):
        final = adata.obs[CELL_TYPE].value_counts()
        for cluster in sorted(before.index):
            sizes.append(
                {
                    "side": side,
                    "cluster": cluster,
                    "simulated": int(before[cluster]),
                    "downsampled": int(capped[cluster]),
                    "final": int(final[cluster]),
                }
            )
    sizes = pd.DataFrame(sizes)
    sizes.to_csv(folder / "sizes.csv", index=False)
    summary = {}
    for side, part in sizes.groupby("side"):
        summary[side] = {
            "clusters": len(part),
            "simulated_cells": int(part["simulated"].sum()),
            "final_cells": int(part["final"].sum()),
            "above_cap_before_downsampling": int((part["simulated"] > CAP).sum()),
            "final_min_median_max": [
                int(part["final"].min()),
                float(part["final"].median()),
                int(part["final"].max()),
            ],
            "simulated_min_max": [int(part["simulated"].min()), int(part["simulated"].max())],
        }
    meta = {
        "recipe": recipe,
        "simulate_pair_kwargs": kw,
        "simulated_cells": simulated_cells,
        "simulated_nnz": nnz,
        "cells": [query_pp.n_obs, reference_pp.n_obs],
        "genes": int(query_pp.n_vars),
        "summary": summary,
        "truth": truth.to_dict(orient="records"),
        "steps": steps,
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    meta_path.write_text(json.dumps(meta, indent=1, default=str))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", nargs="+", choices=list(PROBLEMS), default=["16k"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--verbose", action="store_true", help="pairot's progress lines")
    args = parser.parse_args()
    if args.verbose:
        import logging

        logging.basicConfig(format="%(relativeCreated)9.0f ms %(message)s")
        logging.getLogger("pairot").setLevel(logging.INFO)
    if len(args.problem) > 1:  # one process per problem: each peak memory is its own
        for name in args.problem:
            command = [
                sys.executable,
                __file__,
                "--problem",
                name,
                "--data-dir",
                str(args.data_dir),
            ]
            subprocess.run(command + ["--verbose"] * args.verbose, check=True)
        return
    for name in args.problem:
        meta = generate(name, args.data_dir / name)
        print(
            json.dumps(
                {
                    "problem": name,
                    "folder": str(args.data_dir / name),
                    "cells": meta["cells"],
                    "genes": meta["genes"],
                    "simulated_cells": meta["simulated_cells"],
                    "summary": meta["summary"],
                    "wall_s": meta["wall_s"],
                    "peak_rss_gb": meta["peak_rss_gb"],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
