"""The pipeline behind ``pairot atlas``: many studies in, the harmonized table, every pair's
tables, the atlas picture, ``run.json`` and ``report.html`` out.

Free of argument parsing (:mod:`pairot.cli` reads the files and checks the columns):

- :class:`AtlasParameters` holds every option, per study where a study can differ.
- :class:`AtlasFolder` is the output folder. Unlike ``pairot run``'s it is written while the
  run goes: each finished pair is stored under ``DIR/fits/`` by :class:`pairot.tl.AtlasMap`
  (its ``out_dir``) at once, so that a second run into the same folder resumes, loading
  every pair whose parameters and data are unchanged. The other outputs are staged in a
  hidden folder inside ``DIR`` and moved into place at the end, ``run.json`` last: a folder
  without ``run.json`` holds an unfinished run.
- The preprocessed studies are files, ``DIR/studies/<safe name>.h5ad``
  (``preprocess_studies(..., out_dir=...)``), which the atlas reads pair by pair, so memory
  holds about two studies at a time; ``DIR/studies/preprocess.json`` records the input
  files (path, size, modification time), the options and the pairot version, and a second
  run with the same record reuses the files instead of preprocessing again. With
  ``n_samples`` each study's downsampled cells go to ``DIR/studies/downsampled/``.
- :func:`run_atlas` runs the steps and :func:`write_atlas_outputs` writes the files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from anndata import AnnData

from ._atlas_defaults import ATLAS_DEFAULTS
from ._interrupt import critical, discard_folder, remove_folder, unregister_folder
from ._logging import logger
from ._run import (
    StepTimer,
    _fresh_folder,
    _save_figure,
    holds_entries,
    package_versions,
    remove_stale_folders,
)

__all__ = [
    "ATLAS_FILES",
    "AtlasFolder",
    "AtlasParameters",
    "AtlasResult",
    "pair_folder_name",
    "run_atlas",
    "write_atlas_outputs",
]

#: Files and folders written into the output folder (besides ``fits/``, AtlasMap's store).
ATLAS_FILES = (
    "harmonization.csv",
    "harmonization.parquet",
    "disagreements.csv",
    "links.csv",
    "pairs",
    "atlas.png",
    "report.html",
    "run.json",
)
#: AtlasMap's ``out_dir`` inside the output folder: the stored fits that a rerun loads.
FITS = "fits"
#: The preprocessed studies' h5ad files inside the output folder, and their record.
STUDIES = "studies"
PREPROCESS_RECORD = "preprocess.json"


@dataclass
class AtlasParameters:
    """The options of one ``pairot atlas`` run; per-study ones are dicts name -> value.

    ``cell_type``, ``sample``, ``counts``, ``gene_symbols``: each study's obs columns, place of
    the counts and var column of the gene symbols (``preprocess_studies``' arguments).
    ``pairs``: ``None`` (every pair) or a list of ``(query, reference)``; ``reference``: the
    star around one study. The rest are ``pairot run``'s options of the same name; no
    distance threshold by default (``AtlasMap.harmonize``'s default, see docs/method.md).
    """

    cell_type: dict[str, str]
    sample: dict[str, str]
    counts: dict[str, str]
    gene_symbols: dict[str, str | None]
    pairs: list[tuple[str, str]] | None = None
    reference: str | None = None
    n_top_genes: int = 500
    min_shared_genes: int = 50
    n_samples: int | None = None
    epsilon: float = 0.05
    tau_a: float = ATLAS_DEFAULTS["init_problem"]["tau_a"]
    tau_b: float = ATLAS_DEFAULTS["init_problem"]["tau_b"]
    marginals: str = ATLAS_DEFAULTS["init_problem"]["marginals_distribution"]
    batch_size: int = 1024
    seed: int = 0
    filter_genes: bool = False
    embedding_layer: str | None = None
    label_distance_mode: str = ATLAS_DEFAULTS["init_geom"]["label_distance_mode"]
    threshold_mapping: float = 0.25
    threshold_distance: float | None = None
    unmatched: bool = True
    join: bool = True

    def atlas_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`pairot.tl.AtlasMap` (besides the studies)."""
        return {
            "init_geom": {
                "epsilon": self.epsilon,
                "batch_size": self.batch_size,
                "embedding_layer": self.embedding_layer,
                "label_distance_mode": self.label_distance_mode,
            },
            "init_problem": {
                "tau_a": self.tau_a,
                "tau_b": self.tau_b,
                "marginals_distribution": self.marginals,
            },
            "unmatched": None if self.unmatched else False,
        }

    def preprocess_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`pairot.pp.preprocess_studies` (besides the
        studies)."""
        return {
            "cell_type_column": dict(self.cell_type),
            "sample_column": dict(self.sample),
            "counts": dict(self.counts),
            "gene_symbols": dict(self.gene_symbols),
            "n_top_genes": self.n_top_genes,
            "min_shared_genes": self.min_shared_genes,
            "filter_genes": self.filter_genes,
            "random_state": self.seed,
            "store_pseudobulk": False,
        }


@dataclass
class AtlasResult:
    """What :func:`run_atlas` produced: the solved atlas, its table and what it did."""

    parameters: AtlasParameters
    atlas: Any
    table: pd.DataFrame
    disagreements: pd.DataFrame
    links: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def pair_folder_name(a: str, b: str) -> str:
    """``<a>__<b>``: a pair's folder under ``DIR/pairs`` (names are checked to be file-name
    safe and free of ``__`` by the command line)."""
    return f"{a}__{b}"


class AtlasFolder:
    """The output folder of ``pairot atlas``, resumable.

    :meth:`check` (before any computation) accepts a missing or empty folder, or one that an
    earlier ``pairot atlas`` wrote (it holds ``fits/``): that one is resumed, or, with
    ``overwrite``, its stored fits are discarded. A folder holding another pairot output
    (``run.json``) is accepted only with ``overwrite``; any other non-empty folder is
    refused. :meth:`open` (when the fits start) creates it and discards what ``overwrite``
    replaces; :meth:`publish` moves the staged outputs into place.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False):
        self.out = Path(out).absolute()
        self.overwrite = overwrite
        self.resumed = False
        self._created = False

    @property
    def fits(self) -> Path:
        return self.out / FITS

    @property
    def studies(self) -> Path:
        return self.out / STUDIES

    def check(self) -> None:
        out = self.out
        if not holds_entries(out):
            return
        if (out / FITS).is_dir():
            self.resumed = not self.overwrite
            return
        if not (out / "run.json").is_file():
            msg = (
                f"output folder {str(out)!r} is not empty and holds no pairot output (no "
                "fits/ or run.json); refusing to write into it even with --overwrite. Choose "
                "another --out."
            )
            raise FileExistsError(msg)
        if not self.overwrite:
            msg = (
                f"output folder {str(out)!r} holds another pairot output (run.json, no "
                "fits/); pass --overwrite to replace it, or choose another --out."
            )
            raise FileExistsError(msg)

    def open(self) -> None:
        """Create the folder (or empty what ``overwrite`` replaces) just before the fits."""
        self.check()
        if not self.out.exists():
            self.out.mkdir(parents=True)
            self._created = True
        elif self.overwrite:
            with critical():
                for entry in self.out.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        remove_folder(entry)
                    else:
                        entry.unlink()
        else:
            remove_stale_folders(self.out)
        self.fits.mkdir(exist_ok=True)

    def abandon(self) -> None:
        """After a failure: remove the folder if this run created it and stored no pair."""
        if self._created and not any((self.fits / "pairs").glob("*/pair.json")):
            remove_folder(self.out)

    def stage(self) -> Path:
        """A new hidden, locked folder inside the output folder for the outputs."""
        return _fresh_folder(self.out / "outputs", "tmp")

    def publish(self, staging: Path) -> None:
        """Move every staged entry into place (``run.json`` last), replacing earlier ones."""
        with critical():
            (self.out / "run.json").unlink(missing_ok=True)
            entries = sorted(staging.iterdir(), key=lambda p: p.name == "run.json")
            for entry in entries:
                target = self.out / entry.name
                if target.is_dir() and not target.is_symlink():
                    old = _fresh_folder(self.out / entry.name, "old")
                    os.replace(target, old / entry.name)
                    os.replace(entry, target)
                    discard_folder(old)
                else:
                    os.replace(entry, target)
            unregister_folder(staging)
            remove_folder(staging)


def _file_identity(path: str | os.PathLike) -> dict[str, Any]:
    stat = Path(path).stat()
    return {"path": str(Path(path).absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _preprocess_record(studies, parameters: AtlasParameters, sources) -> dict | None:
    """What the preprocessed files in ``DIR/studies`` were made from (None: unknown)."""
    import pairot as pr

    from .tl._atlas._store import jsonable

    if sources is None or set(sources) != set(studies):
        return None
    record = {
        "format": 1,
        "pairot": getattr(pr, "__version__", "unknown"),
        "studies": list(studies),
        "inputs": {name: _file_identity(sources[name]) for name in studies},
        "options": jsonable(parameters.preprocess_options()),
    }
    return json.loads(json.dumps(record))  # as it reads back


def _preprocessed_files(studies, parameters: AtlasParameters, folder: AtlasFolder, sources):
    """The studies preprocessed into ``DIR/studies`` (name -> path), reused when
    ``preprocess.json`` records the same inputs and options."""
    import pairot as pr

    from .pp._study_files import study_h5ad

    out = folder.studies
    record = _preprocess_record(studies, parameters, sources)
    record_path = out / PREPROCESS_RECORD
    if record is not None and record_path.is_file():
        paths = {name: study_h5ad(out, name).absolute() for name in studies}
        try:
            stored = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored == record and all(path.is_file() for path in paths.values()):
            logger.info("Preprocessed studies reused from %s (same inputs and options).", out)
            return paths
        logger.info("The inputs or options changed since %s was written: preprocessing.", out)
    record_path.unlink(missing_ok=True)  # no stale record may vouch for the new files
    paths = pr.pp.preprocess_studies(
        dict(studies), **parameters.preprocess_options(), out_dir=out, overwrite=True
    )
    if record is not None:
        record_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return paths


def _downsample(paths: dict[str, Path], parameters: AtlasParameters, folder: AtlasFolder):
    """Each study's downsampled cells, written to ``DIR/studies/downsampled/`` one study at
    a time (name -> path)."""
    import anndata

    import pairot as pr

    from .pp._study_files import study_h5ad, write_atomically

    out = folder.studies / "downsampled"
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, path in paths.items():
        adata = anndata.read_h5ad(path)
        labels = adata.obs[adata.uns["pairot"]["cell_type_key"]].to_numpy()
        keep = pr.pp.downsample_indices(labels, parameters.n_samples, random_state=parameters.seed)
        subset = adata[keep, :].copy()
        del adata
        written[name] = study_h5ad(out, name).absolute()
        write_atomically(subset, written[name])
        del subset
    return written


def _names_for_messages(names: list[str]) -> dict[str, str]:
    """How the preprocessing's messages name the studies and their options (study_names)."""
    words = {"n_top_genes": "--n-top-genes", "min_shared_genes": "--min-shared-genes"}
    for name in names:
        words[name] = name
        for argument, option in (
            ("cell_type_column", "--cell-type"),
            ("sample_column", "--sample"),
            ("counts", "--counts"),
            ("gene_symbols", "--gene-symbols"),
        ):
            words[f"{argument}[{name!r}]"] = f"{option} (study {name})"
    return words


def run_atlas(
    studies: Mapping[str, AnnData],
    parameters: AtlasParameters,
    folder: AtlasFolder,
    *,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    sources: Mapping[str, str | os.PathLike] | None = None,
) -> AtlasResult:
    """Preprocess the studies together, fit the pairs into ``folder`` (resuming what is
    stored there) and harmonize.

    Steps, each timed: :func:`pairot.pp.preprocess_studies`, optional per-cluster
    downsampling, :meth:`pairot.tl.AtlasMap.solve` with ``out_dir=folder.fits`` (a stored
    pair with the same parameters and data is loaded, not fitted) and
    :meth:`pairot.tl.AtlasMap.harmonize`. ``studies`` are never modified.

    The preprocessed studies are written to ``DIR/studies/`` and the atlas reads them from
    there, two at a time. ``sources``: the input file of each study (``pairot atlas``'s
    FILEs); with it, a second run whose inputs (path, size, modification time) and options
    are unchanged reuses the preprocessed files; without it they are made again.
    """
    import pairot as pr

    from .pp._validate import study_names

    p = parameters
    names = list(studies)
    timings = {} if timings is None else timings
    step = StepTimer(timings)
    n_cells = sum(int(adata.n_obs) for adata in studies.values())
    with (
        step(
            "preprocess",
            f"Preprocessing {len(names)} studies ({n_cells:,} cells): shared genes, each "
            f"study's pseudobulk differential expression and AUROC, {p.n_top_genes} highly "
            "variable genes",
        ),
        study_names(_names_for_messages(names)),
    ):
        folder.open()
        try:
            prepared = _preprocessed_files(studies, p, folder, sources)
        except BaseException:
            folder.abandon()
            raise
    try:
        if p.n_samples is not None:
            with step("downsample", f"Downsampling to at most {p.n_samples:,} cells per cluster"):
                prepared = _downsample(prepared, p, folder)
        atlas = pr.tl.AtlasMap(prepared, out_dir=folder.fits, **p.atlas_options())
        with step("pairs", "Fitting the pairs (stored pairs with the same inputs are loaded)"):
            atlas.solve(p.pairs, reference=p.reference, progress=progress)
    except BaseException:
        folder.abandon()
        raise
    with step("harmonize", "Harmonizing the cell types of all studies"):
        table = atlas.harmonize(p.threshold_mapping, p.threshold_distance, join=p.join)
        disagreements = atlas.disagreements(p.threshold_mapping, p.threshold_distance, join=p.join)
        links = atlas.links(p.threshold_mapping, p.threshold_distance, join=p.join)
    log = [
        {"query": a, "reference": b, "status": status, "folder": f"pairs/{pair_folder_name(a, b)}"}
        for (a, b), status in atlas.solve_log.items()
    ]
    summary = {
        "studies": {
            name: {
                "n_cells": int(studies[name].n_obs),
                "n_cells_fit": atlas._files[name].n_obs,
                "n_genes": int(studies[name].n_vars),
                "n_clusters": len(atlas._files[name].cluster_sizes),
                "cells_per_cluster_fit": dict(atlas._files[name].cluster_sizes),
            }
            for name in names
        },
        "n_shared_genes": int(atlas._files[names[0]].params["n_shared_genes"]),
        "n_hvgs": atlas._files[names[0]].n_vars,
        "pairs": log,
        "n_pairs_fitted": sum(row["status"] == "fitted" for row in log),
        "n_pairs_loaded": sum(row["status"] == "loaded" for row in log),
        "resumed": folder.resumed,
        "n_rows": len(table),
        "n_groups": int(table["group"].nunique()),
        "relations": {str(k): int(v) for k, v in table["relation"].value_counts().items()},
        "n_links": int(links["kept"].sum()),
        "n_links_dropped": int((~links["kept"].astype(bool)).sum()),
        "n_disagreements": len(disagreements),
    }
    logger.info(
        "Pairs: %d fitted, %d loaded from %s.",
        summary["n_pairs_fitted"],
        summary["n_pairs_loaded"],
        folder.fits,
    )
    return AtlasResult(p, atlas, table, disagreements, links, timings, summary)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy without ``attrs`` (pandas cannot print or concatenate frames holding frames)."""
    out = frame.copy()
    out.attrs = {}
    return out


def _write_pair(result: AtlasResult, a: str, b: str, folder: Path) -> None:
    atlas = result.atlas
    folder.mkdir(parents=True)
    atlas.mapping(a, b).to_parquet(folder / f"mapping_{a}_to_{b}.parquet")
    atlas.mapping(b, a).to_parquet(folder / f"mapping_{b}_to_{a}.parquet")
    atlas.distance(a, b).to_parquet(folder / "distance.parquet")
    if result.parameters.unmatched:
        for side, other in ((a, b), (b, a)):
            atlas.unmatched(side, other).to_csv(folder / f"unmatched_{side}.csv")


def write_atlas_outputs(
    result: AtlasResult, staging: Path, *, run_info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write every output of an atlas run into ``staging`` (an empty folder); returns the
    content of ``run.json``."""
    from . import pl
    from ._atlas_report import write_atlas_report

    staging = Path(staging)
    step = StepTimer(result.timings)
    table = _plain(result.table)
    with step("write_tables", "Writing the tables"):
        table.to_csv(staging / "harmonization.csv", index=False)
        table.to_parquet(staging / "harmonization.parquet", index=False)
        _plain(result.disagreements).to_csv(staging / "disagreements.csv", index=False)
        _plain(result.links).to_csv(staging / "links.csv", index=False)
        (staging / "pairs").mkdir()
        for a, b in result.atlas.pairs:
            _write_pair(result, a, b, staging / "pairs" / pair_folder_name(a, b))
    with step("figure", "Drawing atlas.png"):
        _save_figure(
            pl.atlas(table, _plain(result.links), backend="matplotlib"), staging / "atlas.png"
        )
    parameters = asdict(result.parameters)
    versions = package_versions()
    with step("report", "Writing report.html"):
        write_atlas_report(
            staging / "report.html",
            result=result,
            png=(staging / "atlas.png").read_bytes(),
            parameters=parameters,
            versions=versions,
            run_info=run_info,
        )
    timings = result.timings
    timings_s = {k: round(v, 4) for k, v in timings.items() if k != "total"}
    timings_s["total"] = round(sum(v for k, v in timings.items() if k != "total"), 4)
    info = {
        **dict(run_info or {}),
        "parameters": parameters,
        "versions": versions,
        "data": result.summary,
        "timings_s": timings_s,
        "files": [*ATLAS_FILES, FITS],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (staging / "run.json").write_text(
        json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return info
