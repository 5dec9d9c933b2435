"""Atlas harmonization: pairot's ``AtlasMap`` against CellHint 1.0, and the atlas' time/memory.

Run by hand (not by CI). CellHint is a benchmark-only dependency, never one of pairot's::

    /work/venv/bin/pip install cellhint==1.0.0

    python benchmarks/bench_atlas.py                           # accuracy, easy + hard, seeds 0-2
    python benchmarks/bench_atlas.py --regimes hard --seeds 1 --show-links
    python benchmarks/bench_atlas.py --timing                  # 8 studies x 20,000 cells
    python benchmarks/bench_atlas.py --memory --cells 5000     # studies in memory vs files

**Accuracy.** For each regime and seed, ``pairot.datasets.simulate_atlas`` draws 5 studies of
one program of types annotated at different granularities (``fine``, ``mixed``, ``coarse``,
``fine``, ``mixed``), each lacking one shared type, one type held by one study only. Then:

- pairot: ``pr.pp.preprocess_studies(studies, "cell_type", "sample_id")`` (defaults: 500
  HVGs) and ``pr.tl.AtlasMap(prepared).solve().harmonize()``, all defaults (every pair,
  DatasetMap's defaults, the no-match flags, ``threshold_mapping=0.25``, no distance
  threshold, joins on); ``--pairot`` adds variants (:data:`PAIROT_VARIANTS`: uniform or
  relaxed marginals, ``label_distance_mode="robust"``) and ``--thresholds`` other
  ``harmonize(threshold_mapping=...)`` values;
- CellHint: the studies concatenated (``dataset`` and ``cell_type`` in ``obs``), normalized to
  1e4 counts per cell and ``log1p`` (the log-normalized expression its docs ask for), 500
  HVGs (scanpy, ``batch_key="dataset"``), scaled (max 10) and 50 PCA components in
  ``obsm["X_pca"]``, which ``cellhint.harmonize(adata, "dataset", "cell_type")`` uses by
  default (``use_rep`` left at its default, as its README does; ``--cellhint-rep X`` gives it
  the log-normalized expression of all genes instead); all other arguments default.

Both tables are scored by one rule (:func:`links_of_table`): two clusters of different studies
in one row are a link; the true links are those of the simulator's truth table (two labels
that hold cells of one finest type). Recall and precision of the links, and the share of true
rows (the set of clusters naming one finest type) that the method has as a row exactly.

**Time and memory** (``--timing``): 8 studies of 20,000 cells x 20,000 genes (the easy
regime's program with 8 studies, written to ``/tmp/pairot_bench_atlas`` as h5ad and read back
``backed="r"``), then wall time and peak RSS (sampled every 0.05 s by a thread) of
``preprocess_studies``, of every pair's fit (split into init_geom, the solve, the outputs and
the no-match solves, by timing the DatasetMap methods AtlasMap calls) and of ``harmonize``.

**Memory, studies in memory against studies as files** (``--memory``): the same data, two
child processes (one per mode, so neither inherits the other's heap), each: the studies
opened ``backed="r"``, ``preprocess_studies`` (in memory, or ``out_dir=`` a folder: the
files), ``AtlasMap`` on what it returned, ``solve()`` of every pair (``--max-pairs``),
``harmonize()``; the peak RSS of each stage (a thread's sample every 0.05 s), the RSS held
after each, and the process' ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import resource
import shutil
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import psutil

import pairot as pr

#: The two regimes of the issue: clearly separated types, and 15 subtypes differing by a few
#: weak markers (5 studies each). The lineage programs are the same in both.
REGIMES: dict[str, dict] = {
    "easy": {
        "n_studies": 5,
        "n_cells": 2000,
        "n_genes": 2000,
        "n_cell_types": 12,
        "n_lineages": 4,
        "n_markers_type": 20,
        "marker_log_fold_change": (1.5, 3.0),
    },
    "hard": {
        "n_studies": 5,
        "n_cells": 2000,
        "n_genes": 2000,
        "n_cell_types": 15,
        "n_lineages": 5,
        "n_markers_type": 3,
        "marker_log_fold_change": (0.7, 1.1),
    },
}
NONE_ENTRIES = {"NONE", "UNRESOLVED", "UNASSIGNED"}
#: pairot's variants (``--pairot``): ``AtlasMap(init_geom=..., init_problem=...)``.
#: ``default`` is DatasetMap's default (the published label distance, balanced marginals:
#: every cluster carries the same mass).
_UNIFORM = {"marginals_distribution": "uniform"}
_RELAXED = {"tau_a": 0.95, "tau_b": 0.95}
_ROBUST = {"label_distance_mode": "robust"}
PAIROT_VARIANTS: dict[str, dict[str, dict]] = {
    "default": {},
    "uniform": {"init_problem": _UNIFORM},
    "unbalanced": {"init_problem": _RELAXED},
    "uniform_unbalanced": {"init_problem": {**_UNIFORM, **_RELAXED}},
    "robust": {"init_geom": _ROBUST},
    "robust_uniform": {"init_geom": _ROBUST, "init_problem": _UNIFORM},
    "robust_uniform_unbalanced": {"init_geom": _ROBUST, "init_problem": {**_UNIFORM, **_RELAXED}},
    "auto": {"init_geom": {"label_distance_mode": "auto"}},
    "auto_uniform_unbalanced": {
        "init_geom": {"label_distance_mode": "auto"},
        "init_problem": {**_UNIFORM, **_RELAXED},
    },
}


# ------------------------------------------------------------------------------ scoring


def rows_of_table(table: pd.DataFrame, studies: list[str]) -> list[frozenset]:
    """Each row's clusters as ``frozenset((study, label))``: ``" | "`` joins split, ``NONE``
    (and CellHint's ``UNRESOLVED``) left out."""
    rows = []
    for values in table[studies].astype(str).itertuples(index=False):
        nodes = set()
        for study, value in zip(studies, values, strict=True):
            for label in value.split(" | "):
                if label not in NONE_ENTRIES:
                    nodes.add((study, label))
        if nodes:
            rows.append(frozenset(nodes))
    return rows


def links_of_table(table: pd.DataFrame, studies: list[str]) -> set[frozenset]:
    """The cross-study links a table implies: two clusters of different studies in one row."""
    links = set()
    for nodes in rows_of_table(table, studies):
        for x, y in itertools.combinations(sorted(nodes), 2):
            if x[0] != y[0]:
                links.add(frozenset((x, y)))
    return links


def score(table: pd.DataFrame, truth: pd.DataFrame, studies: list[str]) -> dict:
    true_links = links_of_table(truth, studies)
    found = links_of_table(table, studies)
    true_rows = set(rows_of_table(truth, studies))
    rows = set(rows_of_table(table, studies))
    hit = len(found & true_links)
    return {
        "true_links": len(true_links),
        "links": len(found),
        "recall": hit / len(true_links),
        "precision": hit / len(found) if found else float("nan"),
        "rows_exact": len(rows & true_rows),
        "true_rows": len(true_rows),
        "missed": true_links - found,
        "spurious": found - true_links,
    }


def kind_of_link(link: frozenset, truth: pd.DataFrame) -> str:
    """``fine-fine``, ``fine-lineage`` or ``lineage-lineage`` (by whether each label is a
    lineage name), and for a spurious link whether the two labels share a lineage."""
    lineages = set(truth["lineage"])
    kinds = sorted("lineage" if label in lineages else "fine" for _, label in link)
    return "-".join(kinds)


def describe(links: set[frozenset], truth: pd.DataFrame) -> str:
    if not links:
        return "-"
    counts = pd.Series([kind_of_link(x, truth) for x in links]).value_counts()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def same_lineage(link: frozenset, truth: pd.DataFrame) -> bool:
    lineage = dict(zip(truth["cell_type"], truth["lineage"], strict=True))
    names = [lineage.get(label, label) for _, label in link]
    return names[0] == names[1]


# ------------------------------------------------------------------------------ methods


def run_pairot(
    studies: dict[str, ad.AnnData], variants: list[str], thresholds: list[float]
) -> dict[str, tuple[pd.DataFrame, float]]:
    """pairot's harmonized table for each variant and ``harmonize(threshold_mapping=...)``
    (one preprocessing, counted in each; the first threshold's harmonize in the time)."""
    start = time.perf_counter()
    prepared = pr.pp.preprocess_studies(studies, "cell_type", "sample_id")
    t_pre = time.perf_counter() - start
    out = {}
    for variant in variants:
        start = time.perf_counter()
        atlas = pr.tl.AtlasMap(prepared, **PAIROT_VARIANTS[variant])
        atlas.solve(progress=False)
        for k, threshold in enumerate(thresholds):
            table = atlas.harmonize(threshold_mapping=threshold)
            name = "pairot" if variant == "default" else f"pairot_{variant}"
            if k or threshold != 0.25:
                name += f"@{threshold:g}"
            seconds = t_pre + time.perf_counter() - start
            out[name] = (table, seconds)
    return out


def run_cellhint(studies: dict[str, ad.AnnData], rep: str) -> tuple[pd.DataFrame, float]:
    import cellhint
    import scanpy as sc

    start = time.perf_counter()
    adata = ad.concat({name: a for name, a in studies.items()}, label="dataset", index_unique=None)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs["dataset"] = adata.obs["dataset"].astype(str)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if rep == "pca":
        hvg = sc.pp.highly_variable_genes(
            adata, n_top_genes=500, batch_key="dataset", inplace=False
        )
        sub = adata[:, hvg["highly_variable"].to_numpy()].copy()
        sc.pp.scale(sub, max_value=10)
        sc.pp.pca(sub, n_comps=50, random_state=0)
        adata.obsm["X_pca"] = sub.obsm["X_pca"]
        alignment = cellhint.harmonize(adata, "dataset", "cell_type")
    else:
        alignment = cellhint.harmonize(adata, "dataset", "cell_type", use_rep="X")
    relation = alignment.relation
    # columns D1, relation, D2, relation, ...: keep the datasets' columns
    table = relation.iloc[:, ::2].copy()
    return table, time.perf_counter() - start


def accuracy(args) -> None:
    results = []
    for regime in args.regimes:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            studies, truth = pr.datasets.simulate_atlas(**REGIMES[regime], random_state=seed)
            names = list(studies)
            runs = run_pairot(studies, args.pairot, args.thresholds)
            if not args.no_cellhint:
                runs["cellhint"] = run_cellhint(studies, args.cellhint_rep)
            tables = {method: table for method, (table, _) in runs.items()}
            for method, (table, seconds) in runs.items():
                s = score(table, truth, names)
                results.append(
                    {"regime": regime, "seed": seed, "method": method, **s, "seconds": seconds}
                )
                print(
                    f"{regime} seed {seed} {method}: recall {s['recall']:.2f} "
                    f"precision {s['precision']:.2f} ({s['links']} links, "
                    f"{s['true_links']} true), rows exact {s['rows_exact']}/{s['true_rows']}, "
                    f"{seconds:.0f} s; missed: {describe(s['missed'], truth)}; spurious: "
                    f"{describe(s['spurious'], truth)} "
                    f"({sum(same_lineage(x, truth) for x in s['spurious'])} within a lineage)",
                    flush=True,
                )
                if args.show_links:
                    for label, links in (("missed", s["missed"]), ("spurious", s["spurious"])):
                        for link in sorted(sorted(x) for x in links):
                            print(f"    {label}: {link[0]} -- {link[1]}")
            if args.show_links:
                print(truth.to_string())
                for method, table in tables.items():
                    print(f"--- {method}")
                    print(table[names].to_string())
    frame = pd.DataFrame(results)
    summary = frame.groupby(["regime", "method"], sort=False).agg(
        recall=("recall", "mean"),
        precision=("precision", "mean"),
        links_found=("links", "sum"),
        true_links=("true_links", "sum"),
        rows_exact=("rows_exact", "sum"),
        true_rows=("true_rows", "sum"),
        all_rows_exact=("rows_exact", lambda x: int((x == frame.loc[x.index, "true_rows"]).sum())),
        seconds=("seconds", "mean"),
    )
    print()
    print(
        "| regime | method | recall (mean) | precision (mean) | links found / true | rows "
        "exact | seeds with every row exact | s per atlas |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (regime, method), row in summary.iterrows():
        print(
            f"| {regime} | {method} | {row.recall:.1%} | {row.precision:.1%} | "
            f"{row.links_found:.0f} / {row.true_links:.0f} | "
            f"{row.rows_exact:.0f}/{row.true_rows:.0f} | "
            f"{row.all_rows_exact:.0f}/{args.seeds} | {row.seconds:.0f} |"
        )
    if args.csv:
        frame.drop(columns=["missed", "spurious"]).to_csv(args.csv, index=False)


# ------------------------------------------------------------------------------ timing


class PeakRSS:
    """A thread sampling this process' RSS; :meth:`window` gives the peak since its start."""

    def __init__(self, interval: float = 0.05):
        self._proc = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(interval)

    @contextmanager
    def window(self, record: dict, key: str):
        self._peak = self._proc.memory_info().rss
        start = time.perf_counter()
        yield
        record[f"{key}_s"] = time.perf_counter() - start
        self._peak = max(self._peak, self._proc.memory_info().rss)
        record[f"{key}_peak_gb"] = self._peak / 1e9


class MethodTimer:
    """Times the top-level calls of the DatasetMap methods AtlasMap's pair fit makes."""

    METHODS = ("init_geom", "solve", "compute_mapping", "compute_distance", "unmatched_clusters")

    def __init__(self):
        self.calls: list[tuple[str, float]] = []
        self._depth = 0
        cls = pr.tl.DatasetMap
        self._originals = {m: getattr(cls, m) for m in self.METHODS}
        for name, original in self._originals.items():
            setattr(cls, name, self._wrap(name, original))

    def _wrap(self, name, original):
        timer = self

        def wrapped(*args, **kwargs):
            timer._depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer._depth -= 1
                if timer._depth == 0:
                    timer.calls.append((name, time.perf_counter() - start))

        return wrapped

    def split(self) -> dict:
        """One pair's calls, in AtlasMap's order: init_geom, solve, compute_mapping,
        compute_distance, unmatched_clusters (the query's no-match solve), then the
        reference side's relaxed solve and its mapping."""
        out = {"init_geom": 0.0, "solve": 0.0, "outputs": 0.0, "no_match": 0.0}
        n_solve = 0
        for name, seconds in self.calls:
            if name == "solve":
                n_solve += 1
            if name == "init_geom":
                out["init_geom"] += seconds
            elif name == "unmatched_clusters" or n_solve >= 2:
                out["no_match"] += seconds
            elif name == "solve":
                out["solve"] += seconds
            else:
                out["outputs"] += seconds
        self.calls = []
        return out


def timing_data(args) -> dict[str, Path]:
    """The timing atlas' h5ad files (simulated and written once; found the next time)."""
    folder = Path(args.data_dir) / f"{args.n_studies}x{args.cells}x{args.genes}"
    names = [f"S{s + 1}" for s in range(args.n_studies)]
    params = {
        **REGIMES["easy"],
        "n_studies": args.n_studies,
        "n_cells": args.cells,
        "n_genes": args.genes,
    }
    paths = {name: folder / f"{name}.h5ad" for name in names}
    if not all(p.exists() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        studies, _ = pr.datasets.simulate_atlas(**params, random_state=0)
        for name, adata in studies.items():
            adata.write_h5ad(paths[name])
        del studies
        print(
            f"simulated and wrote {args.n_studies} x {args.cells} cells x {args.genes} genes "
            f"in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return paths


def timing(args) -> None:
    load_before = os.getloadavg()
    paths = timing_data(args)
    names = list(paths)
    studies = {name: ad.read_h5ad(paths[name], backed="r") for name in names}
    nnz = sum(int(h5_nnz(paths[name])) for name in names)
    print(f"{nnz:.3g} stored counts in all", flush=True)

    rss = PeakRSS()
    record: dict = {}
    print(f"RSS after opening (backed): {psutil.Process().memory_info().rss / 1e9:.2f} GB")
    with rss.window(record, "preprocess"):
        prepared = pr.pp.preprocess_studies(studies, "cell_type", "sample_id")
    print(
        f"preprocess_studies: {record['preprocess_s']:.0f} s, peak RSS "
        f"{record['preprocess_peak_gb']:.2f} GB",
        flush=True,
    )
    atlas = pr.tl.AtlasMap(prepared)
    timer = MethodTimer()
    pairs = list(itertools.combinations(names, 2))[: args.max_pairs]
    per_pair = []
    for k, (a, b) in enumerate(pairs):
        rec: dict = {}
        with rss.window(rec, "pair"):
            atlas.solve(pairs=[(a, b)], progress=False)
        rec.update(timer.split())
        rec.update(pair=f"{a}-{b}", n_a=prepared[a].n_obs, n_b=prepared[b].n_obs)
        per_pair.append(rec)
        print(
            f"pair {k + 1}/{len(pairs)} {a}-{b}: {rec['pair_s']:.1f} s (init_geom "
            f"{rec['init_geom']:.1f}, solve {rec['solve']:.1f}, outputs {rec['outputs']:.1f}, "
            f"no-match {rec['no_match']:.1f}), peak RSS {rec['pair_peak_gb']:.2f} GB, load "
            f"{os.getloadavg()[0]:.1f}",
            flush=True,
        )
    frame = pd.DataFrame(per_pair)
    with rss.window(record, "harmonize"):
        table = atlas.harmonize()
    # the per-pair cost against the number of cells: the pair (S1, S2) subsampled
    rng = np.random.default_rng(0)
    scaling = []
    for n in args.scaling:
        sub = {
            name: prepared[name][np.sort(rng.choice(prepared[name].n_obs, n, replace=False))].copy()
            for name in names[:2]
        }
        for _ in range(2):  # the second fit, without the JIT compilation for a new shape
            rec = {"n": n}
            with rss.window(rec, "pair"):
                pr.tl.AtlasMap(sub).solve(progress=False)
            rec.update(timer.split())
        scaling.append(rec)
        print(
            f"scaling: {n} x {n} cells: {rec['pair_s']:.1f} s (solve {rec['solve']:.1f}, "
            f"outputs {rec['outputs']:.1f}, no-match {rec['no_match']:.1f}), peak RSS "
            f"{rec['pair_peak_gb']:.2f} GB",
            flush=True,
        )
    prepared_gb = (
        sum(a.X.data.nbytes + a.X.indices.nbytes + a.X.indptr.nbytes for a in prepared.values())
        / 1e9
    )
    load_after = os.getloadavg()
    print()
    print(
        f"studies: {args.n_studies} x {args.cells} cells x {args.genes} genes; "
        f"{len(pairs)} pairs; harmonized rows {len(table)}"
    )
    print(
        f"preprocess_studies: {record['preprocess_s']:.1f} s, peak RSS "
        f"{record['preprocess_peak_gb']:.2f} GB"
    )
    cols = ["pair_s", "init_geom", "solve", "outputs", "no_match", "pair_peak_gb"]
    print("pairs: total " + ", ".join(f"{c} {frame[c].sum():.1f}" for c in cols[:-1]) + " s")
    print(
        "pairs: per pair mean "
        + ", ".join(f"{c} {frame[c].mean():.1f}" for c in cols[:-1])
        + f" s; min / max pair {frame['pair_s'].min():.1f} / {frame['pair_s'].max():.1f} s; "
        f"peak RSS max {frame['pair_peak_gb'].max():.2f} GB"
    )
    first = frame.iloc[0]
    print(
        f"first pair (includes JIT compilation): {first['pair_s']:.1f} s; pairs after the "
        f"first: mean {frame['pair_s'].iloc[1:].mean():.1f} s"
    )
    per_cell = sum(a.X.nnz for a in prepared.values()) / sum(a.n_obs for a in prepared.values())
    print(
        f"prepared studies' counts (500 HVGs, CSR) in memory: {prepared_gb:.2f} GB, "
        f"{per_cell:.0f} stored counts per cell"
    )
    later = frame.iloc[1:] if len(frame) > 1 else frame
    for rec in [*scaling, {"n": args.cells, **later[cols[:-1]].mean().to_dict()}]:
        print(
            f"pair {rec['n']} x {rec['n']}: {rec['pair_s']:.1f} s, solve {rec['solve']:.1f}, "
            f"outputs {rec['outputs']:.1f}, no-match {rec['no_match']:.1f}"
        )
    print(
        f"harmonize: {record['harmonize_s']:.2f} s, peak RSS {record['harmonize_peak_gb']:.2f} GB"
    )
    print(
        f"process peak RSS (ru_maxrss): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB"
    )
    print(
        f"load average (1, 5, 15 min) before {load_before}, after {load_after}; "
        f"cpus {os.cpu_count()}"
    )
    if args.csv:
        frame.to_csv(args.csv, index=False)
    if args.clean:
        shutil.rmtree(paths[names[0]].parent)


def memory_child(args) -> None:
    """One mode of ``--memory`` (``args.memory_child``: ``memory`` or ``files``); prints one
    JSON line."""
    import json
    import tempfile

    paths = timing_data(args)
    names = list(paths)
    studies = {name: ad.read_h5ad(paths[name], backed="r") for name in names}
    proc = psutil.Process()
    rss = PeakRSS()
    record: dict = {"mode": args.memory_child, "rss_open_gb": proc.memory_info().rss / 1e9}
    folder = tempfile.mkdtemp(prefix="pairot_bench_memory_")
    out_dir = None if args.memory_child == "memory" else Path(folder) / "studies"
    with rss.window(record, "preprocess"):
        prepared = pr.pp.preprocess_studies(
            studies, "cell_type", "sample_id", out_dir=out_dir, random_state=0
        )
    record["rss_after_preprocess_gb"] = proc.memory_info().rss / 1e9
    with rss.window(record, "atlas_init"):
        atlas = pr.tl.AtlasMap(prepared)
    pairs = list(itertools.combinations(names, 2))[: args.max_pairs]
    with rss.window(record, "pairs"):
        atlas.solve(pairs=pairs, progress=False)
    record["rss_after_pairs_gb"] = proc.memory_info().rss / 1e9
    with rss.window(record, "harmonize"):
        table = atlas.harmonize()
    record["n_pairs"], record["n_rows"] = len(pairs), len(table)
    record["ru_maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    if out_dir is not None:
        record["files_gb"] = sum(Path(p).stat().st_size for p in prepared.values()) / 1e9
    else:
        de = sum(
            sum(t.memory_usage(deep=True).sum() for k, t in a.uns["pairot"].items()
                if isinstance(t, pd.DataFrame))
            for a in prepared.values()
        )  # fmt: skip
        record["de_tables_gb"] = de / 1e9
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(record), flush=True)


def memory(args) -> None:
    """``--memory``: each mode in a child process of its own, then one table."""
    import json
    import subprocess

    timing_data(args)  # simulated once, before either child
    rows = []
    for mode in ("memory", "files"):
        command = [sys.executable, __file__, "--memory-child", mode]
        command += ["--n-studies", str(args.n_studies), "--cells", str(args.cells)]
        command += ["--genes", str(args.genes), "--data-dir", args.data_dir]
        if args.max_pairs is not None:
            command += ["--max-pairs", str(args.max_pairs)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows).set_index("mode").T
    print(frame.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"load average {os.getloadavg()}; cpus {os.cpu_count()}")


def h5_nnz(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return f["X"]["data"].shape[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regimes", type=lambda s: s.split(","), default=["easy", "hard"])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (3)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="start at this seed (0; 3 for held-out seeds)"
    )
    parser.add_argument(
        "--pairot",
        type=lambda s: s.split(","),
        default=["default"],
        help=f"pairot variants, comma-separated, of {list(PAIROT_VARIANTS)}",
    )
    parser.add_argument(
        "--thresholds",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.25],
        help="harmonize(threshold_mapping=...) values, comma-separated (default 0.25)",
    )
    parser.add_argument("--no-cellhint", action="store_true")
    parser.add_argument("--cellhint-rep", choices=["pca", "X"], default="pca")
    parser.add_argument("--show-links", action="store_true", help="list missed/spurious links")
    parser.add_argument("--timing", action="store_true", help="time and memory instead")
    parser.add_argument(
        "--memory", action="store_true", help="peak RSS, studies in memory against as files"
    )
    parser.add_argument("--memory-child", choices=["memory", "files"], help=argparse.SUPPRESS)
    parser.add_argument("--n-studies", type=int, default=8)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--max-pairs", type=int, default=None)
    parser.add_argument(
        "--scaling",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[5000, 10000],
        help="also fit (S1, S2) subsampled to these numbers of cells per study (twice each; "
        "the second fit is reported)",
    )
    parser.add_argument("--data-dir", default="/tmp/pairot_bench_atlas")
    parser.add_argument("--clean", action="store_true", help="remove the data afterwards")
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    logging.getLogger("pairot").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.memory_child:
        memory_child(args)
    elif args.memory:
        memory(args)
    elif args.timing:
        timing(args)
    else:
        accuracy(args)


if __name__ == "__main__":
    sys.exit(main())
