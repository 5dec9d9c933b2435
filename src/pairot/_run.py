"""The whole pairot pipeline behind the command line: preprocess, fit, outputs, files.

Two pieces, both free of argument parsing so they can be tested and reused:

- :func:`run_pipeline` takes two raw-count AnnData objects and runs preprocessing, optional
  downsampling, the OT fit and every output, timing each step (:class:`RunResult`).
- :class:`OutputFolder` stages the files in a temporary folder next to the destination and
  moves them into place only at the end, so a failed run leaves no half-written output;
  :func:`write_outputs` writes the tables, figures, ``run.json`` and ``report.html`` into it.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no stale-folder detection
    fcntl = None

from ._interrupt import check as check_interrupt
from ._interrupt import critical, discard_folder, register_folder, remove_folder, unregister_folder
from ._logging import logger, progress_logger

__all__ = [
    "DEMO_COLUMNS",
    "OUTPUT_FILES",
    "OutputFolder",
    "RunParameters",
    "RunResult",
    "StepTimer",
    "package_versions",
    "run_pipeline",
    "write_outputs",
]

#: Files written into the output folder, in the order they are written.
OUTPUT_FILES = (
    "mapping.parquet",
    "mapping_jensen_shannon.parquet",
    "mapping_transported_mass.parquet",
    "distance.parquet",
    "label_distance.parquet",
    "matches.csv",
    "unmatched.csv",
    "cells.parquet",
    "mapping.png",
    "distance.png",
    "report.html",
    "run.json",
)

#: The obs columns of :func:`pairot.datasets.pbmc_demo`, as :class:`RunParameters` fields.
DEMO_COLUMNS = {
    "query_cell_type": "cell_type",
    "ref_cell_type": "cell_type",
    "query_sample": "sample_id",
    "ref_sample": "sample_id",
}

_VERSIONED_PACKAGES = ("pairot", "numpy", "scipy", "pandas", "anndata", "scanpy", "jax")


@dataclass
class RunParameters:
    """Parameters of one pipeline run; the defaults are those of the Python API.

    Attributes
    ----------
    query_cell_type, ref_cell_type
        ``obs`` columns with the cluster labels of the query and the reference.
    query_sample, ref_sample
        ``obs`` columns with the sample (donor) of each cell, for pseudobulk DE.
    query_counts, ref_counts
        Where each study's raw counts are: ``"X"``, ``"raw"`` or ``"layers/<name>"``
        (``counts_adata1`` / ``counts_adata2`` of :func:`pairot.pp.preprocess_adatas`).
    query_gene_symbols, ref_gene_symbols
        The ``var`` column naming each study's genes (``gene_symbols_adata1`` / ``_adata2``),
        or ``None`` for the ``var_names``.
    n_top_genes
        Highly variable genes kept by :func:`pairot.pp.preprocess_adatas`.
    min_shared_genes
        The fewest shared genes (and ``n_top_genes``) that
        :func:`pairot.pp.preprocess_adatas` accepts (``min_shared_genes``; 50).
    n_samples
        If given, at most this many cells per cluster of each study enter the OT fit
        (:func:`pairot.pp.downsample_indices`); ``None`` keeps every cell.
    min_cells, small_clusters
        Clusters below ``min_cells`` cells and what happens to them (see
        :class:`pairot.tl.DatasetMap`); listed apart in the report and ``run.json``.
    epsilon, tau_a, tau_b, batch_size
        Entropic regularization, marginal relaxations and block size of the OT fit.
    seed
        Seed of the preprocessing subsamples and of the downsampling.
    filter_genes
        Drop uninformative genes (mitochondrial, ribosomal, ...) before DE.
    embedding_layer
        ``obsm`` key of a shared embedding used as cell features instead of Spearman ranks.
    label_distance_mode
        ``"pairot"`` (the published method), ``"robust"`` or ``"auto"`` (its decision is
        in ``run.json`` under ``data.label_distance_decision`` and in the report), see
        :meth:`pairot.tl.DatasetMap.init_geom`.
    threshold_mapping, threshold_distance
        Thresholds of :meth:`pairot.tl.DatasetMap.select_similar_clusters`.
    unmatched_tau_a, min_retained, max_mapping_ratio
        Parameters of :meth:`pairot.tl.DatasetMap.unmatched_clusters` (``tau_a`` of its
        relaxed solve and its two thresholds).
    cells
        Compute the per-cell mapping of the query cells
        (:meth:`pairot.tl.DatasetMap.compute_cell_mapping`) and write ``cells.parquet``.
    n_bootstrap
        Resamples of :meth:`pairot.tl.DatasetMap.bootstrap` (cells and samples, seeded with
        ``seed``); 0 (default) skips it. With resamples, ``matches.csv`` and the report get
        the intervals of the mapping and the distance and the top-match share.
    """

    query_cell_type: str
    ref_cell_type: str
    query_sample: str
    ref_sample: str
    query_counts: str = "X"
    ref_counts: str = "X"
    query_gene_symbols: str | None = None
    ref_gene_symbols: str | None = None
    n_top_genes: int = 500
    min_shared_genes: int = 50  # pairot.pp._preprocess.MIN_SHARED_GENES (a test checks)
    n_samples: int | None = None
    min_cells: int | None = 5
    small_clusters: str = "drop"
    epsilon: float = 0.05
    tau_a: float = 1.0
    tau_b: float = 1.0
    batch_size: int = 1024
    seed: int = 0
    filter_genes: bool = False
    embedding_layer: str | None = None
    label_distance_mode: str = "pairot"
    threshold_mapping: float = 0.25
    threshold_distance: float = 1.0
    unmatched_tau_a: float = 0.95
    min_retained: float = 0.6
    max_mapping_ratio: float = 0.7
    cells: bool = True
    n_bootstrap: int = 0


@dataclass
class RunResult:
    """Everything one pipeline run produced.

    Attributes
    ----------
    parameters
        The parameters of the run.
    dataset_map
        The solved :class:`pairot.tl.DatasetMap`.
    mappings
        The three mapping tables, keyed ``"mean"``, ``"jensen_shannon"``,
        ``"transported_mass"`` (query clusters x reference clusters).
    distance
        Plan-weighted mean cost between clusters (query x reference).
    label_distance
        The normalized label distance L (query x reference).
    matches
        Output of ``select_similar_clusters(..., output="table")`` on the ``"mean"``
        mapping and the distance (the long table, with the ranks).
    timings
        Seconds spent in each step, in the order the steps ran.
    summary
        Data summaries: cells and clusters per study, shared genes, HVGs, Sinkhorn result.
    unmatched
        Output of ``unmatched_clusters``: the query clusters flagged as having no match in
        the reference, with score, reason and components (``None`` when not computed).
    cells
        The per-cell mapping of the query cells, ``None`` with ``parameters.cells=False``.
    cell_summary, cell_counts
        ``cell_mapping_summary()`` and ``best_cluster_shares()`` of the query, or ``None``.
    bootstrap
        The table of :meth:`pairot.tl.DatasetMap.bootstrap`, or ``None`` without resamples.
    """

    parameters: RunParameters
    dataset_map: Any
    mappings: dict[str, pd.DataFrame]
    distance: pd.DataFrame
    label_distance: pd.DataFrame
    matches: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    unmatched: pd.DataFrame | None = None
    cells: pd.DataFrame | None = None
    cell_summary: pd.DataFrame | None = None
    cell_counts: pd.DataFrame | None = None
    bootstrap: pd.DataFrame | None = None

    @property
    def mapping(self) -> pd.DataFrame:
        """The ``"mean"`` mapping, the headline table."""
        return self.mappings["mean"]


class StepTimer:
    """Adds the wall time of named steps to a dict; announces each step as it starts.

    The announcement is one INFO line on the ``pairot.progress`` logger (the command line
    prints it), the timing one INFO line on ``pairot`` when the step ends.
    """

    def __init__(self, timings: dict[str, float]):
        self.timings = timings

    @contextmanager
    def __call__(self, step: str, description: str | None = None) -> Iterator[None]:
        progress_logger.info("%s", description or step)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[step] = self.timings.get(step, 0.0) + elapsed
        check_interrupt()
        logger.info("%s done in %.2f s.", step, elapsed)


def package_versions() -> dict[str, str]:
    """Installed versions of pairot and the packages that shape its results."""
    versions = {"python": sys.version.split()[0]}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - a broken environment
            versions[name] = "not installed"
    return versions


def _cluster_counts(adata: AnnData, column: str) -> dict[str, int]:
    counts = adata.obs[column].astype(str).value_counts(sort=False)
    order = (
        [str(c) for c in adata.obs[column].cat.categories]
        if isinstance(adata.obs[column].dtype, pd.CategoricalDtype)
        else sorted(counts.index)
    )
    return {c: int(counts[c]) for c in order if c in counts.index}


def _study_summary(raw: AnnData, fitted: AnnData, column: str) -> dict[str, Any]:
    clusters = _cluster_counts(fitted, column)
    return {
        "n_cells": int(raw.n_obs),
        "n_cells_fit": int(fitted.n_obs),
        "n_genes": int(raw.n_vars),
        "n_clusters": len(clusters),
        "cells_per_cluster_fit": clusters,
    }


def _warn_label_term(diagnostics: pd.DataFrame, mode: str) -> None:
    """One WARNING when the label term looks unreliable: the label term's nearest reference
    cluster differs from the cell term's for most query clusters whose label row is not
    constant (docs/method.md#accuracy-on-real-studies)."""
    informative = diagnostics[~diagnostics["constant_row"]]
    n_disagree = int(informative["disagree"].sum())
    if informative.empty or 2 * n_disagree <= len(informative):
        return
    names = ", ".join(map(str, informative.index[informative["disagree"]][:8]))
    logger.warning(
        "The label term looks unreliable: for %d of the %d query clusters with an informative "
        "label row, its nearest reference cluster is not the one their cells resemble most "
        "(%s%s); %d clusters keep 3 markers or fewer. The label term moves all cells of a "
        "cluster together, so check these matches; label distance mode %r%s "
        "(docs/method.md#accuracy-on-real-studies).",
        n_disagree,
        len(informative),
        names,
        ", ..." if n_disagree > 8 else "",
        int((diagnostics["n_markers"] <= 3).sum()),
        mode,
        "" if mode == "auto" else "; --label-distance-mode auto weighs it by the cells",
    )


def run_pipeline(
    adata_query: AnnData,
    adata_ref: AnnData,
    parameters: RunParameters,
    *,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> RunResult:
    """Run the whole method on a query and a reference study.

    Steps, each timed: :func:`pairot.pp.preprocess_adatas`, optional per-cluster
    downsampling of both studies, :class:`pairot.tl.DatasetMap` (``init_geom``,
    ``init_problem``, ``solve``), the three mappings, the distance,
    ``select_similar_clusters`` and ``unmatched_clusters`` (one extra, relaxed solve).

    Parameters
    ----------
    adata_query, adata_ref
        Raw-count studies with the ``obs`` columns named in ``parameters``; not modified.
    parameters
        The run's parameters.
    progress
        Show the Sinkhorn progress bar on stderr.
    timings
        A dict to add the step timings to (e.g. one that already holds the reading time);
        a new one by default.

    Returns
    -------
    The :class:`RunResult`.
    """
    import pairot as pr

    p = parameters
    timings = {} if timings is None else timings
    step = StepTimer(timings)

    from .pp._validate import study_names

    with (
        step(
            "preprocess",
            f"Preprocessing {adata_query.n_obs:,} query and {adata_ref.n_obs:,} reference "
            f"cells: shared genes, pseudobulk differential expression, AUROC, {p.n_top_genes} "
            "highly variable genes",
        ),
        study_names(),  # messages say "query", "--query-sample", ...
    ):
        query, ref = pr.pp.preprocess_adatas(
            adata_query,
            adata_ref,
            cell_type_column_adata1=p.query_cell_type,
            cell_type_column_adata2=p.ref_cell_type,
            sample_column_adata1=p.query_sample,
            sample_column_adata2=p.ref_sample,
            counts_adata1=p.query_counts,
            counts_adata2=p.ref_counts,
            gene_symbols_adata1=p.query_gene_symbols,
            gene_symbols_adata2=p.ref_gene_symbols,
            n_top_genes=p.n_top_genes,
            min_shared_genes=p.min_shared_genes,
            filter_genes=p.filter_genes,
            random_state=p.seed,
            # the summed profiles are kept only for the donor resampling of --bootstrap
            store_pseudobulk=bool(p.n_bootstrap),
        )
    if p.n_samples is not None:
        with step("downsample", f"Downsampling to at most {p.n_samples:,} cells per cluster"):
            query = query[
                pr.pp.downsample_indices(
                    query.obs[p.query_cell_type].to_numpy(), p.n_samples, random_state=p.seed
                ),
                :,
            ]
            ref = ref[
                pr.pp.downsample_indices(
                    ref.obs[p.ref_cell_type].to_numpy(), p.n_samples, random_state=p.seed
                ),
                :,
            ]
    with step("init_geom", "Label distance between clusters and cell features"), study_names():
        dataset_map = pr.tl.DatasetMap(
            query, ref, min_cells=p.min_cells, small_clusters=p.small_clusters
        )
        dataset_map.init_geom(
            epsilon=p.epsilon,
            batch_size=p.batch_size,
            embedding_layer=p.embedding_layer,
            label_distance_mode=p.label_distance_mode,
        )
        diagnostics = dataset_map.label_term_diagnostics()
        _warn_label_term(diagnostics, p.label_distance_mode)
    with step("init_problem", "Marginals of the transport problem"):
        dataset_map.init_problem(tau_a=p.tau_a, tau_b=p.tau_b)
    with step(
        "solve", f"Optimal transport (Sinkhorn) between {query.n_obs:,} x {ref.n_obs:,} cells"
    ):
        solution = dataset_map.solve(progress=progress)
    with step("mapping", "Mapping scores (mean, Jensen-Shannon, transported mass)"):
        mappings = dataset_map.compute_mapping(None)
    with step("distance", "Distances between clusters"):
        distance = dataset_map.compute_distance()
    intervals = None
    if p.n_bootstrap:
        with step(
            "bootstrap",
            f"Confidence of each match: {p.n_bootstrap} resamples of the cells and samples",
        ):
            intervals = dataset_map.bootstrap(p.n_bootstrap, random_state=p.seed, progress=progress)
    with step("select_similar_clusters", "Suggested matches"):
        matches = dataset_map.select_similar_clusters(
            mappings["mean"],
            distance,
            threshold_mapping=p.threshold_mapping,
            threshold_distance=p.threshold_distance,
            output="table",
            intervals=intervals,
        )
    with step("unmatched_clusters", "Query clusters without a match (a relaxed solve)"):
        unmatched = dataset_map.unmatched_clusters(
            tau_a=p.unmatched_tau_a,
            min_retained=p.min_retained,
            max_mapping_ratio=p.max_mapping_ratio,
        )
    cells = cell_summary = cell_counts = None
    if p.cells:
        with step("cell_mapping", "Per-cell mapping of the query cells"):
            cells = dataset_map.compute_cell_mapping("query")
            cell_summary = dataset_map.cell_mapping_summary("query")
            cell_counts = dataset_map.best_cluster_shares("query")

    errors = np.asarray(solution.errors, dtype=np.float64)
    final_error = float(errors[-1]) if errors.size else float("nan")
    summary = {
        "query": _study_summary(adata_query, dataset_map.adata1, p.query_cell_type),
        "reference": _study_summary(adata_ref, dataset_map.adata2, p.ref_cell_type),
        "small_clusters": dataset_map.small_clusters.to_dict("records"),
        "n_shared_genes": int(query.uns["pairot"]["params"]["n_shared_genes"]),
        "n_hvgs": int(query.n_vars),
        "sinkhorn": {
            "n_iterations": int(solution.n_iterations),
            "converged": bool(solution.converged),
            "n_cluster_corrections": int(solution.n_corrections),
            "mode": solution.mode,
            "sparse": bool(solution.sparse),
            "active_share": float(solution.active_share),
            "skipped_mass_bound": float(solution.skipped_mass_bound),
            "n_active_blocks": solution.n_active_blocks,
            "n_blocks": solution.n_blocks,
            "n_devices": int(solution.n_devices),
            "final_error": final_error if math.isfinite(final_error) else None,
        },
        "n_matches": int(len(matches)),
        "unmatched_query_clusters": [str(q) for q in unmatched.index[unmatched["unmatched"]]],
    }
    table = diagnostics.reset_index()
    summary["label_term_diagnostics"] = (
        table.astype(object).where(table.notna(), None).to_dict("records")
    )
    decision = dataset_map.label_distance_params.get("auto_decision")
    if decision is not None:  # label_distance_mode="auto": what it decided and why
        summary["label_distance_decision"] = dict(decision)
    if intervals is not None:
        summary["bootstrap"] = {
            key: intervals.attrs[key]
            for key in ("n_bootstrap", "random_state", "confidence", "resample")
            if key in intervals.attrs
        }
        summary["bootstrap"]["samples_resampled"] = list(intervals.attrs["samples_resampled"])
        summary["bootstrap"]["n_not_converged"] = intervals.attrs["n_not_converged"]
    return RunResult(
        parameters=p,
        dataset_map=dataset_map,
        mappings=mappings,
        distance=distance,
        label_distance=dataset_map.label_distance,
        matches=matches,
        timings=timings,
        summary=summary,
        unmatched=unmatched,
        cells=cells,
        cell_summary=cell_summary,
        cell_counts=cell_counts,
        bootstrap=intervals,
    )


#: ``obsm`` keys tried, in order, for the report's embedding of the query cells.
EMBEDDING_KEYS = ("X_umap", "X_tsne", "X_pca")


def _query_embedding(result: RunResult) -> tuple[str, np.ndarray] | None:
    """The first of :data:`EMBEDDING_KEYS` in the fitted query's ``obsm`` (2 columns), or
    ``None``."""
    obsm = result.dataset_map.adata1.obsm
    for key in EMBEDDING_KEYS:
        if key in obsm:
            values = np.asarray(obsm[key])
            if values.ndim == 2 and values.shape[1] >= 2 and len(values) == len(result.cells):
                return key, values[:, :2].astype(np.float64)
    return None


def _deg_tables(result: RunResult, n_genes: int) -> dict[tuple[str, str], pd.DataFrame]:
    """The top query marker genes behind each suggested match."""
    degs = result.dataset_map.DEGs_label_distance
    tables = {}
    for query_cluster, reference_cluster in zip(
        result.matches["query"], result.matches["reference"]
    ):
        table = degs[query_cluster][reference_cluster]
        tables[(str(query_cluster), str(reference_cluster))] = table.head(n_genes)
    return tables


def _top_markers(result: RunResult, n_genes: int) -> dict[str, list[str]]:
    """The top query marker genes (``rank_query`` order) of each unmatched query cluster."""
    if result.unmatched is None:
        return {}
    degs = result.dataset_map.DEGs_label_distance
    reference = list(result.mapping.columns)
    markers = {}
    for query_cluster in result.unmatched.index[result.unmatched["unmatched"]]:
        table = degs[query_cluster][reference[0]] if reference else None
        if table is None or table.empty:
            markers[str(query_cluster)] = []
            continue
        ordered = table.sort_values("rank_query", kind="stable")
        markers[str(query_cluster)] = [str(g) for g in ordered.index[:n_genes]]
    return markers


def _save_figure(ax, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = ax.figure
    try:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    finally:
        plt.close(figure)


def write_outputs(
    result: RunResult,
    folder: Path,
    *,
    run_info: Mapping[str, Any] | None = None,
    n_report_genes: int = 10,
) -> dict[str, Any]:
    """Write every output file of a run into ``folder`` (normally a staging folder).

    Parameters
    ----------
    result
        The run to write.
    folder
        An existing, empty folder.
    run_info
        Extra fields for ``run.json`` (e.g. the command and the input files).
    n_report_genes
        Marker genes shown per suggested match in the report.

    Returns
    -------
    The content written to ``run.json``.
    """
    from . import pl
    from ._report import common_order, write_report

    folder = Path(folder)
    timings = result.timings
    step = StepTimer(timings)
    with step("write_tables", "Writing the tables"):
        result.mapping.to_parquet(folder / "mapping.parquet")
        for method in ("jensen_shannon", "transported_mass"):
            result.mappings[method].to_parquet(folder / f"mapping_{method}.parquet")
        result.distance.to_parquet(folder / "distance.parquet")
        result.label_distance.to_parquet(folder / "label_distance.parquet")
        result.matches.to_csv(folder / "matches.csv", index=False)
        if result.unmatched is not None:
            result.unmatched.to_csv(folder / "unmatched.csv")
        else:
            pd.DataFrame(columns=["query", "unmatched", "score", "reason"]).to_csv(
                folder / "unmatched.csv", index=False
            )
        if result.cells is not None:
            result.cells.to_parquet(folder / "cells.parquet")
    with step("figures", "Drawing mapping.png and distance.png"):
        # the two figures in one row and column order, the mapping's diagonal order
        mapping, distance, _ = common_order(result.mapping, result.distance, None)
        _save_figure(
            pl.mapping(mapping, sort_by_score=False, backend="matplotlib"), folder / "mapping.png"
        )
        _save_figure(pl.distance(distance, backend="matplotlib"), folder / "distance.png")

    parameters = asdict(result.parameters)
    versions = package_versions()
    with step("report", "Writing report.html"):
        write_report(
            folder / "report.html",
            mapping=result.mapping,
            distance=result.distance,
            label_distance=result.label_distance,
            matches=result.matches,
            deg_tables=_deg_tables(result, n_report_genes),
            unmatched=result.unmatched,
            unmatched_markers=_top_markers(result, n_report_genes),
            summary=result.summary,
            parameters=parameters,
            versions=versions,
            run_info=run_info,
            cell_summary=result.cell_summary,
            cell_counts=result.cell_counts,
            cells=result.cells,
            embedding=None if result.cells is None else _query_embedding(result),
        )
    timings_s = {k: round(v, 4) for k, v in timings.items() if k != "total"}
    timings_s["total"] = round(sum(v for k, v in timings.items() if k != "total"), 4)
    info = {
        **dict(run_info or {}),
        "parameters": parameters,
        "versions": versions,
        "data": result.summary,
        "timings_s": timings_s,
        "files": [f for f in OUTPUT_FILES if f != "cells.parquet" or result.cells is not None],
    }
    (folder / "run.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info


#: Names of pairot's temporary folders next to an output folder OUT: ``.OUT.pairot-tmp-HEX``
#: (files being written) and ``.OUT.pairot-old-HEX`` (a replaced output, while swapping).
_TEMPORARY_NAME = re.compile(r"^\.(?P<out>.+)\.pairot-(?P<kind>tmp|old)-[0-9a-f]{8}$")
#: A temporary folder younger than this is never taken for stale (its owner may be about to
#: lock it).
_STALE_AFTER_SECONDS = 10.0


def _lock_folder(folder: Path) -> int | None:
    """An open descriptor of ``folder`` holding an exclusive ``flock`` on it (released by the
    kernel when this process ends, however it ends), or ``None`` where flock is missing."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # pragma: no cover - a file system without locks
        os.close(descriptor)
        return None
    return descriptor


def _fresh_folder(out: Path, kind: str) -> Path:
    """A new hidden, locked folder next to ``out``, removed if the process is interrupted.

    Permissions come from the umask, unlike mkdtemp.
    """
    for _ in range(100):
        folder = out.parent / f".{out.name}.pairot-{kind}-{secrets.token_hex(4)}"
        with critical():
            try:
                folder.mkdir()
            except FileExistsError:  # pragma: no cover - a name clash, draw again
                continue
            register_folder(folder, _lock_folder(folder))
        return folder
    msg = f"cannot create a temporary folder next to {str(out)!r}."  # pragma: no cover
    raise FileExistsError(msg)  # pragma: no cover


def _is_stale(folder: Path) -> bool:
    """Whether no live process holds ``folder``'s lock (and it is not brand new)."""
    if fcntl is None:  # pragma: no cover - Windows: cannot tell
        return False
    try:
        if time.time() - folder.lstat().st_mtime < _STALE_AFTER_SECONDS:
            return False
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a running pairot holds it
    finally:
        os.close(descriptor)
    return True


def remove_stale_folders(parent: Path) -> list[Path]:
    """Remove the temporary folders that killed pairot runs left in ``parent``.

    A folder counts as stale when no live process holds its lock. A stale
    ``.OUT.pairot-old-HEX`` whose ``OUT`` is missing holds the previous output of a run killed
    while swapping folders: it is moved back to ``OUT`` instead. Returns the folders handled.
    """
    handled = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return handled
    for folder in sorted(entries):
        match = _TEMPORARY_NAME.match(folder.name)
        if match is None or folder.is_symlink() or not folder.is_dir() or not _is_stale(folder):
            continue
        saved = folder / match["out"]
        destination = parent / match["out"]
        if match["kind"] == "old" and saved.is_dir() and not os.path.lexists(destination):
            os.replace(saved, destination)
            logger.warning(
                "Restored %s from %s, left by a pairot run killed while replacing it.",
                destination,
                folder.name,
            )
        else:
            logger.info("Removing %s, left by a pairot run that was killed.", folder)
        remove_folder(folder)
        handled.append(folder)
    return handled


def holds_entries(out: Path) -> bool:
    """Whether the output path ``out`` is a folder with something in it; ``False`` for a
    missing path or an empty folder, ``FileExistsError`` for anything that is not a folder
    (``pairot run``'s and ``pairot atlas``' destination checks start so)."""
    if not out.exists() and not out.is_symlink():
        return False
    if not out.is_dir() or out.is_symlink():
        msg = f"output path {str(out)!r} exists and is not a folder; choose another --out."
        raise FileExistsError(msg)
    return any(out.iterdir())


class OutputFolder:
    """Stage output files next to ``out`` and move them into place only on :meth:`commit`.

    On entering, the destination is checked and a hidden staging folder is created in its
    parent (creating missing parents), so an unwritable destination fails before any
    computation. If the block ends without :meth:`commit` (an error, an interrupt), the staging
    folder and any parent folders created here are removed: nothing half-written is left.

    An existing ``out`` that is an empty folder is replaced. A non-empty one is replaced only
    with ``overwrite=True`` and only if it holds a ``run.json`` (a previous pairot output);
    the replacement happens at :meth:`commit`, after every new file is complete, so a failed
    run leaves the previous outputs untouched.

    Parameters
    ----------
    out
        The destination folder.
    overwrite
        Allow replacing a previous pairot output folder.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False):
        self.out = Path(out).absolute()
        self.overwrite = overwrite
        self.path: Path | None = None
        self._created_parents: list[Path] = []
        self._committed = False

    def _check_destination(self) -> None:
        out = self.out
        if not holds_entries(out):
            return
        if not self.overwrite:
            msg = (
                f"output folder {str(out)!r} already exists and is not empty; pass "
                "--overwrite to replace it, or choose another --out."
            )
            raise FileExistsError(msg)
        if not (out / "run.json").is_file():
            msg = (
                f"output folder {str(out)!r} is not a pairot output (no run.json); refusing "
                "to replace it even with --overwrite. Choose another --out."
            )
            raise FileExistsError(msg)

    def __enter__(self) -> OutputFolder:
        self._check_destination()
        missing = []
        parent = self.out.parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created_parents.append(folder)
            if not missing:
                remove_stale_folders(self.out.parent)
            self.path = _fresh_folder(self.out, "tmp")
        except BaseException:
            self._remove_created_parents()
            raise
        return self

    def commit(self) -> Path:
        """Move the staged files into place (replacing an allowed previous output).

        Runs as a critical section of :mod:`pairot._interrupt`: an interrupt waits for it, so
        the destination holds either the old or the new output, whole.
        """
        if self.path is None:
            msg = "OutputFolder.commit() called outside its with-block."
            raise RuntimeError(msg)
        check_interrupt()
        with critical():
            self._check_destination()
            out = self.out
            backup = None
            if out.exists():
                backup = _fresh_folder(out, "old")
                os.replace(out, backup / out.name)
            try:
                os.replace(self.path, out)
            except BaseException:
                if backup is not None:
                    os.replace(backup / out.name, out)
                    discard_folder(backup)
                raise
            if backup is not None:
                discard_folder(backup)
            unregister_folder(self.path, committed_as=out)
            self._committed = True
            self.path = out
        return out

    def _remove_created_parents(self) -> None:
        for folder in reversed(self._created_parents):
            try:
                folder.rmdir()
            except OSError:  # pragma: no cover - someone else wrote into it
                break
        self._created_parents = []

    def __exit__(self, *exc) -> bool:
        if not self._committed:
            with critical():
                if self.path is not None:
                    discard_folder(self.path)
                    self.path = None
                self._remove_created_parents()
        return False
