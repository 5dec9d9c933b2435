"""The ``pairot`` command line: ``pairot run`` on two h5ad files, ``pairot demo`` on bundled data,
``pairot atlas`` on many h5ad files (its pipeline and outputs are in :mod:`pairot._atlas_run`).

``run`` and ``demo`` run the whole method and write tables, figures, ``run.json`` and a
self-contained ``report.html`` into the ``--out`` folder (see README, "Command line").

Exit codes: 0 success; 2 bad input or usage (missing or unreadable file, unknown column,
unwritable or occupied output folder, data the method rejects), reported as one line
``pairot: error: ...`` on stderr; 1 an unexpected internal error (one line, the traceback with
``-v``); 128 + the signal's number when interrupted: 130 for Ctrl-C (SIGINT), 143 for SIGTERM,
129 for SIGHUP, with one line on stderr. Output files are staged next to ``--out`` and moved
into place only when everything is written: a failed or interrupted run leaves nothing
behind (see :mod:`pairot._interrupt`).

By default one line per step goes to stdout (``pairot [mm:ss] ...``), with progress bars on
stderr when it is a terminal; ``-q`` keeps only warnings and errors, ``-v`` logs every
detail.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from ._atlas_defaults import ATLAS_DEFAULTS
from ._atlas_table import ROW_COLUMNS

#: Default of --min-shared-genes: ``pairot.pp._preprocess.MIN_SHARED_GENES`` (written out
#: here so that ``pairot --help`` does not import the preprocessing; a test keeps them equal).
MIN_SHARED_GENES = 50

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A user-facing error: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other pairot error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"pairot: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"expected a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _bootstrap_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or value == 1:
        msg = f"expected 0 (off) or an integer >= 2, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        msg = f"expected a positive number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"expected a number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _add_output_options(parser: argparse.ArgumentParser, overwrite_help: str) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (created; see --overwrite)"
    )
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)


def _add_preprocessing_options(method) -> None:
    """Options of the preprocessing, shared by ``run``, ``demo`` and ``atlas``."""
    method.add_argument(
        "--n-top-genes", type=_positive_int, default=500, help="highly variable genes (500)"
    )
    method.add_argument(
        "--min-shared-genes",
        type=_positive_int,
        default=MIN_SHARED_GENES,
        help="refuse studies that share fewer expressed genes, or fewer --n-top-genes, than "
        "this: with so few genes the cells' Spearman correlation carries no information; "
        f"lower it (e.g. to 1) to run anyway ({MIN_SHARED_GENES})",
    )
    method.add_argument(
        "--n-samples",
        type=_positive_int,
        default=None,
        help="fit the OT model on at most this many cells per cluster of each study "
        "(default: all cells)",
    )


def _add_small_cluster_options(method) -> None:
    method.add_argument(
        "--min-cells",
        type=_non_negative_int,
        default=5,
        help="clusters with fewer cells are handled by --small-clusters, with a warning; 0 "
        "keeps every cluster as it is (5)",
    )
    method.add_argument(
        "--small-clusters",
        choices=("drop", "merge", "keep"),
        default="drop",
        help="what happens to clusters below --min-cells: left out of the transport, merged "
        "into their most similar cluster, or kept (drop)",
    )


def _add_fit_options(method, *, tau: float = 1.0, label_distance_mode: str = "pairot") -> None:
    """Options of the OT fit, shared by ``run``, ``demo`` and ``atlas`` (``atlas`` with
    AtlasMap's defaults for the taus and the label distance)."""
    method.add_argument(
        "--epsilon", type=_positive_float, default=0.05, help="entropic regularization (0.05)"
    )
    method.add_argument(
        "--tau-a",
        type=_float,
        default=tau,
        help=f"query marginal relaxation in (0, 1]; 1 = balanced ({tau})",
    )
    method.add_argument(
        "--tau-b",
        type=_float,
        default=tau,
        help=f"reference marginal relaxation in (0, 1]; 1 = balanced ({tau})",
    )
    method.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1024,
        help="cells per block of the cost computation; memory only, not results (1024)",
    )
    method.add_argument("--seed", type=int, default=0, help="random seed (0)")
    method.add_argument(
        "--filter-genes",
        action="store_true",
        help="drop mitochondrial, ribosomal, lncRNA-like and immune-receptor genes before DE",
    )
    method.add_argument(
        "--embedding-layer",
        default=None,
        metavar="KEY",
        help="obsm key of an embedding shared by both studies, used as cell features "
        "instead of Spearman ranks of the HVGs",
    )
    method.add_argument(
        "--label-distance-mode",
        choices=("pairot", "robust", "auto"),
        default=label_distance_mode,
        help="label distance between clusters: 'pairot', the published method's ranked "
        "marker lists, or 'robust', the correlation of the clusters' AUROC profiles over all "
        "genes, for studies whose clusters have few markers (few samples, small clusters), "
        "or 'auto', the robust one weighted to the cell term's scale or left out, decided "
        f"from the pair ({label_distance_mode})",
    )
    method.add_argument(
        "--threshold-mapping",
        type=_float,
        default=0.25,
        help="minimum mapping score of a suggested match (0.25)",
    )


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``demo``, mirroring the Python API and its defaults."""
    _add_output_options(
        parser,
        "replace DIR if it is a previous pairot output (holds run.json); the old folder "
        "is replaced only once every new file is written",
    )
    parser.add_argument(
        "--no-cells",
        action="store_true",
        help="skip the per-cell mapping of the query cells (cells.parquet and its report section)",
    )
    method = parser.add_argument_group("method")
    _add_preprocessing_options(method)
    _add_small_cluster_options(method)
    _add_fit_options(method)
    method.add_argument(
        "--bootstrap",
        type=_bootstrap_count,
        default=0,
        metavar="N",
        help="confidence of each match: N resamples of the cells and samples (donors), "
        "seeded with --seed; adds mapping_low/high, distance_low/high and top_share to "
        "matches.csv and the intervals to the report (default 0: off)",
    )
    method.add_argument(
        "--threshold-distance",
        type=_float,
        default=1.0,
        help="maximum distance of a suggested match (1.0)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pairot`` argument parser."""
    from pairot import __version__

    parser = _Parser(
        prog="pairot",
        description="Match the cell-type clusters of a query single-cell study to those of a "
        "reference study with annotation-informed optimal transport.",
        epilog="Exit codes: 0 success, 2 bad input (one line 'pairot: error: ...' on stderr), "
        "1 internal error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM, 129 by SIGHUP; an "
        "interrupted run writes nothing and leaves an earlier output folder as it was.",
    )
    parser.add_argument("--version", action="version", version=f"pairot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = _Parser(add_help=False)
    talk = common.add_mutually_exclusive_group()
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every detail of every step (DEBUG), and the traceback of an error",
    )
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only warnings and errors: no step lines, progress bars or summary line",
    )

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run pairot on a query and a reference h5ad file",
        description="Run pairot on QUERY and REFERENCE (h5ad files with raw counts in X) and "
        "write mapping, distance, suggested matches, figures and report.html into --out.",
    )
    run.add_argument("query", help="query study (.h5ad; raw counts in X, or see --query-counts)")
    run.add_argument(
        "reference", help="reference study (.h5ad; raw counts in X, or see --ref-counts)"
    )
    columns = run.add_argument_group("obs columns (required)")
    for side, study in (("query", "query"), ("ref", "reference")):
        columns.add_argument(
            f"--{side}-cell-type",
            required=True,
            metavar="COL",
            help=f"obs column of the {study} holding each cell's cluster (cell type) label",
        )
    for side, study in (("query", "query"), ("ref", "reference")):
        columns.add_argument(
            f"--{side}-sample",
            required=True,
            metavar="COL",
            help=f"obs column of the {study} holding each cell's sample (donor or batch), "
            "for pseudobulk differential expression; at least two samples are needed",
        )
    genes = run.add_argument_group(
        "where the counts and the gene names are (a CELLxGENE file: --query-counts raw "
        "--query-gene-symbols feature_name)"
    )
    for side, study in (("query", "query"), ("ref", "reference")):
        genes.add_argument(
            f"--{side}-counts",
            type=_counts_location,
            default="X",
            metavar="WHERE",
            help=f"where the {study}'s raw counts are: X (default), raw (raw.X) or "
            "layers/NAME (a layer, read from disk in chunks)",
        )
    for side, study in (("query", "query"), ("ref", "reference")):
        genes.add_argument(
            f"--{side}-gene-symbols",
            default=None,
            metavar="COL",
            help=f"var column holding the {study}'s gene symbols (e.g. feature_name), when "
            "its var_names are ids (e.g. Ensembl); the outputs then name genes by symbol",
        )
    _add_method_options(run)
    run.set_defaults(func=_run_command)

    _add_atlas_parser(sub, common)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run pairot on a small bundled pair of PBMC studies",
        description="Run pairot on pairot.datasets.pbmc_demo() (about 340 + 340 cells, obs "
        "columns cell_type and sample_id) and write every output into --out.",
    )
    _add_method_options(demo)
    demo.set_defaults(func=_demo_command)
    return parser


_PER_STUDY = (
    "a value for every study, or NAME=VALUE for study NAME only (repeat the option; "
    "NAME=VALUE wins over the value for all)"
)


def _add_atlas_parser(sub, common) -> None:
    atlas = sub.add_parser(
        "atlas",
        parents=[common],
        help="harmonize the cell types of many h5ad files (every pair, or a star)",
        description="Preprocess FILE ... together, fit every pair of studies (or the pairs "
        "given), and write the harmonized table of cell types, every pair's mapping and "
        "distance, run.json and report.html (with a picture of the harmonized types) into "
        "--out. Run it again with the same --out to resume: the pairs already fitted with "
        "the same parameters and data are loaded, not fitted again. Options that take "
        "NAME=VALUE set one study's value; the study names are the files' names without "
        "'.h5ad' (or --names).",
        epilog="Example: pairot atlas smith.h5ad lee.h5ad kim.h5ad --cell-type cell_type "
        "--cell-type lee=annotation --sample donor_id --out atlas/",
    )
    atlas.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="the studies (.h5ad with raw counts in X, or see --counts), at least two",
    )
    atlas.add_argument(
        "--names",
        default=None,
        metavar="A,B,...",
        help="the studies' names, comma-separated, one per FILE in order (default: the file "
        "names without '.h5ad'); they name the table's columns and the pairs' folders",
    )
    columns = atlas.add_argument_group("obs columns (required)")
    columns.add_argument(
        "--cell-type",
        action="append",
        required=True,
        metavar="COL|NAME=COL",
        help="obs column holding each cell's cluster (cell type) label: " + _PER_STUDY,
    )
    columns.add_argument(
        "--sample",
        action="append",
        required=True,
        metavar="COL|NAME=COL",
        help="obs column holding each cell's sample (donor or batch), for pseudobulk "
        "differential expression (at least two samples per study): " + _PER_STUDY,
    )
    genes = atlas.add_argument_group(
        "where the counts and the gene names are (a CELLxGENE file: --counts raw "
        "--gene-symbols feature_name)"
    )
    genes.add_argument(
        "--counts",
        action="append",
        default=None,
        metavar="WHERE|NAME=WHERE",
        help="where a study's raw counts are: X (default), raw (raw.X) or layers/NAME (a "
        "layer, read from disk in chunks): " + _PER_STUDY,
    )
    genes.add_argument(
        "--gene-symbols",
        action="append",
        default=None,
        metavar="COL|NAME=COL",
        help="var column holding a study's gene symbols (e.g. feature_name), when its "
        "var_names are ids (e.g. Ensembl): " + _PER_STUDY,
    )
    _add_output_options(
        atlas,
        "preprocess and fit every pair again: discard the preprocessed studies and fits "
        "stored in DIR (by default a DIR written by an earlier 'pairot atlas' is resumed); "
        "also replaces a DIR holding another pairot output (run.json)",
    )
    which = atlas.add_argument_group("pairs")
    which.add_argument(
        "--pairs",
        default="all",
        metavar="all|A:B,...",
        help="the pairs to fit: all (every pair, default) or a comma-separated list of "
        "QUERY:REFERENCE pairs",
    )
    which.add_argument(
        "--reference",
        default=None,
        metavar="NAME",
        help="fit the star of pairs (S, NAME) for every other study S instead of all pairs",
    )
    method = atlas.add_argument_group("method")
    _add_preprocessing_options(method)
    defaults = ATLAS_DEFAULTS["init_problem"]
    _add_fit_options(
        method,
        tau=defaults["tau_a"],
        label_distance_mode=ATLAS_DEFAULTS["init_geom"]["label_distance_mode"],
    )
    method.add_argument(
        "--marginals",
        choices=("uniform", "balanced"),
        default=defaults["marginals_distribution"],
        help="mass of the cells: 'uniform', every cell the same (the atlas default: studies "
        "of different granularity), or 'balanced', every cluster the same, as in 'pairot "
        f"run' ({defaults['marginals_distribution']})",
    )
    method.add_argument(
        "--threshold-distance",
        type=_float,
        default=None,
        help="maximum distance of a link between two clusters (default: none; with "
        "pairot's label distance a coarse type and its subtypes are as far apart as "
        "unrelated types, see docs/method.md)",
    )
    method.add_argument(
        "--no-unmatched",
        action="store_true",
        help="skip the no-match flags (two solves fewer per pair; no link is then dropped "
        "because a pair flags one of its clusters as without a match)",
    )
    method.add_argument(
        "--no-join",
        action="store_true",
        help="keep every cluster in its own row (by default clusters of one study that "
        "nothing tells apart, not even the study's own DE, are joined as 'x | y')",
    )
    atlas.set_defaults(func=_atlas_command)


def _check_input_file(path: str, role: str) -> Path:
    file = Path(path)
    if not file.exists():
        msg = f"{role} file {path!r} does not exist"
        raise CLIError(msg)
    if not file.is_file():
        msg = f"{role} file {path!r} is not a file"
        raise CLIError(msg)
    return file


def _counts_location(text: str) -> str:
    from .pp._counts import COUNTS_VALUES, parse_counts

    try:
        return parse_counts(text, "counts").value
    except ValueError:
        msg = f"{text!r} is not a place of counts; pass {COUNTS_VALUES}, e.g. layers/counts"
        raise argparse.ArgumentTypeError(msg) from None


def _read_h5ad(path: str, role: str, counts: str = "X"):
    import anndata as ad

    file = _check_input_file(path, role)
    try:
        if counts.startswith("layers/"):
            # anndata's backed mode loads every layer into memory: read the file lazily
            # instead (the layer is then streamed from disk in chunks, as a dask array)
            lazy = _read_lazy(file)
            if lazy is not None:
                return lazy
        # backed: only obs, var and obsm are loaded; the counts are streamed in chunks
        return ad.read_h5ad(file, backed="r")
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
        msg = (
            f"cannot read {role} file {path!r} as h5ad: {type(err).__name__}: {err}; is it "
            "an .h5ad file written whole (not truncated)?"
        )
        raise CLIError(msg) from err


def _read_lazy(file: Path):
    """``anndata.experimental.read_lazy`` of the file (``None`` where anndata or dask lacks it,
    with a warning: then the backed file's layers are loaded into memory)."""
    try:
        import dask.array  # noqa: F401 - read_lazy needs dask
        import h5py
        from anndata.experimental import read_lazy
    except ImportError:
        logging.getLogger("pairot").warning(
            "Reading a layer's counts: this anndata (or a missing dask) cannot read the file "
            "lazily, so its layers are loaded into memory; install 'pairot[dask]' with "
            "anndata >= 0.12 to stream them."
        )
        return None
    return read_lazy(h5py.File(file, "r"))


def _check_column(adata, column: str, option: str, role: str) -> None:
    if column not in adata.obs.columns:
        available = ", ".join(map(repr, map(str, adata.obs.columns[:20]))) or "none"
        msg = f"{option} {column!r} is not a column of the {role}'s obs; available: {available}"
        raise CLIError(msg)


def _parameters(args: argparse.Namespace, columns: dict[str, str]):
    from ._run import RunParameters

    return RunParameters(
        **columns,
        query_counts=getattr(args, "query_counts", "X"),
        ref_counts=getattr(args, "ref_counts", "X"),
        query_gene_symbols=getattr(args, "query_gene_symbols", None),
        ref_gene_symbols=getattr(args, "ref_gene_symbols", None),
        n_top_genes=args.n_top_genes,
        min_shared_genes=args.min_shared_genes,
        n_samples=args.n_samples,
        min_cells=args.min_cells or None,
        small_clusters=args.small_clusters,
        epsilon=args.epsilon,
        tau_a=args.tau_a,
        tau_b=args.tau_b,
        batch_size=args.batch_size,
        seed=args.seed,
        filter_genes=args.filter_genes,
        embedding_layer=args.embedding_layer,
        label_distance_mode=args.label_distance_mode,
        threshold_mapping=args.threshold_mapping,
        threshold_distance=args.threshold_distance,
        cells=not args.no_cells,
        n_bootstrap=args.bootstrap,
    )


def _execute(args: argparse.Namespace, load, run_info: dict) -> int:
    """Stage the output folder, load the studies, run, write, move into place."""
    from ._run import OutputFolder, StepTimer, run_pipeline, write_outputs

    with OutputFolder(args.out, overwrite=args.overwrite) as staging:
        timings: dict[str, float] = {}
        with StepTimer(timings)("read", load.description):
            adata_query, adata_ref, parameters = load()
        if parameters.embedding_layer is not None:
            for adata, role in ((adata_query, "query"), (adata_ref, "reference")):
                if parameters.embedding_layer not in adata.obsm:
                    available = ", ".join(map(repr, adata.obsm.keys())) or "none"
                    msg = (
                        f"--embedding-layer {parameters.embedding_layer!r} is not in the "
                        f"{role}'s obsm; available: {available}"
                    )
                    raise CLIError(msg)
        bars = not args.quiet and _isatty(sys.stderr)
        result = run_pipeline(adata_query, adata_ref, parameters, progress=bars, timings=timings)
        info = write_outputs(result, staging.path, run_info=run_info)
        out = staging.commit()
    if not args.quiet:
        summary = info["data"]
        sinkhorn = summary["sinkhorn"]
        print(
            f"pairot {args.command}: wrote {out}/ ({summary['query']['n_cells_fit']} query and "
            f"{summary['reference']['n_cells_fit']} reference cells, {summary['n_hvgs']} HVGs, "
            f"{summary['n_matches']} suggested matches, Sinkhorn "
            f"{'converged' if sinkhorn['converged'] else 'NOT converged'} after "
            f"{sinkhorn['n_iterations']} iterations, {info['timings_s']['total']:.1f} s); "
            f"open {out / 'report.html'}"
        )
    return EXIT_OK


def _run_command(args: argparse.Namespace) -> int:
    columns = {
        "query_cell_type": args.query_cell_type,
        "ref_cell_type": args.ref_cell_type,
        "query_sample": args.query_sample,
        "ref_sample": args.ref_sample,
    }

    def load():
        adata_query = _read_h5ad(args.query, "query", args.query_counts)
        adata_ref = _read_h5ad(args.reference, "reference", args.ref_counts)
        for adata, role, side in ((adata_query, "query", "query"), (adata_ref, "reference", "ref")):
            _check_column(adata, columns[f"{side}_cell_type"], f"--{side}-cell-type", role)
            _check_column(adata, columns[f"{side}_sample"], f"--{side}-sample", role)
        return adata_query, adata_ref, _parameters(args, columns)

    for path, role in ((args.query, "query"), (args.reference, "reference")):
        _check_input_file(path, role)  # before any step line or folder
    load.description = f"Reading {args.query} (query) and {args.reference} (reference)"
    run_info = {
        "command": "run",
        "query": str(Path(args.query).absolute()),
        "reference": str(Path(args.reference).absolute()),
    }
    return _execute(args, load, run_info)


def _demo_command(args: argparse.Namespace) -> int:
    from ._run import DEMO_COLUMNS

    columns = DEMO_COLUMNS

    def load():
        from .datasets import pbmc_demo

        adata_query, adata_ref = pbmc_demo()
        return adata_query, adata_ref, _parameters(args, columns)

    load.description = "Loading the bundled PBMC demo pair"

    run_info = {
        "command": "demo",
        "query": "pairot.datasets.pbmc_demo() query",
        "reference": "pairot.datasets.pbmc_demo() reference",
    }
    return _execute(args, load, run_info)


_UNSAFE_NAME = re.compile(r"[/\\\x00:,=]|__|^\.|^$")


def _study_names(files: list[str], names: str | None) -> list[str]:
    """The studies' names: ``--names`` or the files' names without ``.h5ad``."""
    if names is None:
        found = [Path(f).name.removesuffix(".h5ad") for f in files]
        source = "the file names (without .h5ad)"
    else:
        found = [n.strip() for n in names.split(",")]
        source = "--names"
        if len(found) != len(files):
            msg = (
                f"--names gives {len(found)} name(s) ({names!r}) for {len(files)} FILE(s); "
                "give one name per file, comma-separated, in the files' order"
            )
            raise CLIError(msg)
    if len(found) < 2:
        msg = (
            f"pairot atlas needs at least two studies, got {len(found)} ({', '.join(files)}); "
            "for one pair of files, 'pairot run QUERY REFERENCE' does the same"
        )
        raise CLIError(msg)
    seen: dict[str, str] = {}
    for name, file in zip(found, files, strict=True):
        if name.casefold() in seen:
            msg = (
                f"two studies are named {name!r} by {source} ({seen[name.casefold()]} and "
                f"{file}); give distinct names with --names A,B,..."
            )
            raise CLIError(msg)
        seen[name.casefold()] = file
        if _UNSAFE_NAME.search(name):
            msg = (
                f"the study name {name!r} (from {source}) cannot name a folder and an option "
                "value: it must not be empty, start with '.', or hold '/', '\\', ':', ',', "
                "'=' or '__'; give other names with --names A,B,..."
            )
            raise CLIError(msg)
    reserved = [name for name in found if name in ROW_COLUMNS]
    if reserved:
        msg = (
            f"the study name(s) {reserved} (from {source}) are columns of the harmonized "
            f"table ({', '.join(sorted(ROW_COLUMNS))}); give other names with --names A,B,..."
        )
        raise CLIError(msg)
    return found


def _per_study(
    values: list[str] | None, option: str, names: list[str], default, check=None
) -> dict:
    """Each study's value of a per-study option: ``VALUE`` for all, ``NAME=VALUE`` for one."""
    common, own = None, {}
    for text in values or []:
        head, sep, tail = text.partition("=")
        if sep and head in names:
            if head in own and own[head] != tail:
                msg = f"{option} gives study {head!r} two values ({own[head]!r} and {tail!r})"
                raise CLIError(msg)
            if not tail:
                msg = f"{option} {text!r} gives study {head!r} an empty value"
                raise CLIError(msg)
            own[head] = tail
        else:
            if common is not None and common != text:
                msg = (
                    f"{option} is given twice for all studies ({common!r} and {text!r}); give "
                    f"one value for all and NAME=VALUE for the studies that differ ({names})"
                )
                raise CLIError(msg)
            common = text
    out = {name: own.get(name, default if common is None else common) for name in names}
    if check is not None:
        out = {name: None if v is None else check(v) for name, v in out.items()}
    return out


def _required(values: dict, option: str) -> dict:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        msg = (
            f"{option} gives no column for the studies {missing}; give {option} COL for "
            f"every study, or {option} {missing[0]}=COL"
        )
        raise CLIError(msg)
    return values


def _atlas_pairs(text: str, names: list[str]) -> list[tuple[str, str]] | None:
    if text.strip() == "all":
        return None
    pairs = []
    for item in text.split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or a not in names or b not in names or a == b:
            msg = (
                f"--pairs has the entry {item.strip()!r}; give all, or QUERY:REFERENCE pairs "
                f"of two different studies among {names}, comma-separated"
            )
            raise CLIError(msg)
        pairs.append((a, b))
    return pairs


def _counts_value(text: str) -> str:
    try:
        return _counts_location(text)
    except argparse.ArgumentTypeError as err:
        msg = f"--counts: {err}"
        raise CLIError(msg) from None


def _atlas_parameters(args: argparse.Namespace, names: list[str]):
    from ._atlas_run import AtlasParameters

    if args.reference is not None and args.reference not in names:
        msg = f"--reference {args.reference!r} is not a study; the studies are {names}"
        raise CLIError(msg)
    pairs = _atlas_pairs(args.pairs, names)
    if pairs is not None and args.reference is not None:
        msg = "give --pairs A:B,... or --reference NAME, not both"
        raise CLIError(msg)
    return AtlasParameters(
        cell_type=_required(_per_study(args.cell_type, "--cell-type", names, None), "--cell-type"),
        sample=_required(_per_study(args.sample, "--sample", names, None), "--sample"),
        counts=_per_study(args.counts, "--counts", names, "X", _counts_value),
        gene_symbols=_per_study(args.gene_symbols, "--gene-symbols", names, None),
        pairs=pairs,
        reference=args.reference,
        n_top_genes=args.n_top_genes,
        min_shared_genes=args.min_shared_genes,
        n_samples=args.n_samples,
        epsilon=args.epsilon,
        tau_a=args.tau_a,
        tau_b=args.tau_b,
        marginals=args.marginals,
        batch_size=args.batch_size,
        seed=args.seed,
        filter_genes=args.filter_genes,
        embedding_layer=args.embedding_layer,
        label_distance_mode=args.label_distance_mode,
        threshold_mapping=args.threshold_mapping,
        threshold_distance=args.threshold_distance,
        unmatched=not args.no_unmatched,
        join=not args.no_join,
    )


def _check_study_column(adata, column: str, option: str, name: str, names: list[str]) -> None:
    if column in adata.obs.columns:
        return
    available = ", ".join(map(repr, map(str, adata.obs.columns[:20]))) or "none"
    hint = ""
    if "=" in column:
        hint = (
            f" (to set one study's column write {option} NAME=COL, NAME one of {', '.join(names)})"
        )
    msg = (
        f"{option} {column!r} is not an obs column of study {name!r}{hint}; available: {available}"
    )
    raise CLIError(msg)


def _atlas_command(args: argparse.Namespace) -> int:
    from ._atlas_run import AtlasFolder, run_atlas, write_atlas_outputs
    from ._interrupt import keep_on_interrupt
    from ._run import StepTimer

    names = _study_names(args.files, args.names)
    files = dict(zip(names, args.files, strict=True))
    for name, path in files.items():
        _check_input_file(path, f"study {name!r}")  # before any step line or folder
    parameters = _atlas_parameters(args, names)
    folder = AtlasFolder(args.out, overwrite=args.overwrite)
    folder.check()
    timings: dict[str, float] = {}
    with StepTimer(timings)("read", f"Reading {len(names)} studies"):
        studies = {}
        for name, path in files.items():
            adata = _read_h5ad(path, f"study {name!r}", parameters.counts[name])
            _check_study_column(adata, parameters.cell_type[name], "--cell-type", name, names)
            _check_study_column(adata, parameters.sample[name], "--sample", name, names)
            if parameters.embedding_layer is not None and (
                parameters.embedding_layer not in adata.obsm
            ):
                available = ", ".join(map(repr, adata.obsm.keys())) or "none"
                msg = (
                    f"--embedding-layer {parameters.embedding_layer!r} is not in study "
                    f"{name!r}'s obsm; available: {available}"
                )
                raise CLIError(msg)
            studies[name] = adata
    bars = not args.quiet and _isatty(sys.stderr)
    keep_on_interrupt(
        f"the pairs finished so far are kept in {folder.fits} (no other output written): "
        "run the same command again to resume"
    )
    result = run_atlas(studies, parameters, folder, progress=bars, timings=timings, sources=files)
    run_info = {
        "command": "atlas",
        "files": {name: str(Path(path).absolute()) for name, path in files.items()},
    }
    staging = folder.stage()
    try:
        info = write_atlas_outputs(result, staging, run_info=run_info)
        folder.publish(staging)
    except BaseException:
        from ._interrupt import discard_folder

        discard_folder(staging)
        raise
    if not args.quiet:
        data = info["data"]
        print(
            f"pairot atlas: wrote {folder.out}/ ({len(names)} studies, {data['n_rows']} "
            f"harmonized cell types in {data['n_groups']} groups, {data['n_links']} links, "
            f"{data['n_disagreements']} disagreement(s); pairs {data['n_pairs_fitted']} "
            f"fitted, {data['n_pairs_loaded']} loaded; {info['timings_s']['total']:.1f} s); "
            f"open {folder.out / 'report.html'}"
        )
    return EXIT_OK


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # pragma: no cover - closed or replaced stream
        return False


class _BarSafeHandler(logging.StreamHandler):
    """A stream handler that writes around an active tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _ElapsedFormatter(logging.Formatter):
    """``pairot [mm:ss] message``, the time since the command started."""

    def __init__(self):
        super().__init__()
        self.start = time.monotonic()

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(time.monotonic() - self.start)
        return f"pairot [{seconds // 60:02d}:{seconds % 60:02d}] {record.getMessage()}"


def _configure_logging(verbose: bool, quiet: bool):
    """Route pairot's loggers to stderr; returns a function that undoes it.

    Default: the step lines of the ``pairot.progress`` logger on stdout (so that stderr holds
    only warnings, errors and progress bars) and every warning on stderr; ``-q``: warnings and
    errors only; ``-v``: every record of the ``pairot`` logger (DEBUG) on stderr.
    """
    main_logger = logging.getLogger("pairot")
    progress = logging.getLogger("pairot.progress")
    saved = (main_logger.level, progress.level)
    handlers = []
    handler = _BarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    main_logger.addHandler(handler)
    main_logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handlers.append((main_logger, handler))
    if not quiet and not verbose:
        lines = _BarSafeHandler(sys.stdout)
        lines.setFormatter(_ElapsedFormatter())
        lines.setLevel(logging.INFO)
        progress.addHandler(lines)
        progress.setLevel(logging.INFO)
        handlers.append((progress, lines))

    def restore() -> None:
        for logger, h in handlers:
            logger.removeHandler(h)
        main_logger.setLevel(saved[0])
        progress.setLevel(saved[1])

    return restore


def main(argv: list[str] | None = None) -> int:
    """Run the ``pairot`` command line in this process; returns the exit code.

    The console script is :func:`console_main`, which also handles signals.
    """
    args = build_parser().parse_args(argv)
    from ._interrupt import keep_on_interrupt

    keep_on_interrupt(None)
    verbose = getattr(args, "verbose", False)
    restore_logging = _configure_logging(verbose, getattr(args, "quiet", False))
    try:
        import matplotlib

        matplotlib.use("Agg")  # figures are only written to files
        return args.func(args)
    except KeyboardInterrupt:
        from ._interrupt import announce

        return announce()
    except (CLIError, ValueError, KeyError, TypeError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if verbose:
            traceback.print_exc()
        print(f"pairot: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - report bugs on one line unless verbose
        if verbose:
            traceback.print_exc()
        print(
            f"pairot: internal error: {type(err).__name__}: {_one_line(err)} (rerun with -v "
            "for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        restore_logging()


def console_main() -> NoReturn:
    """Entry point of the ``pairot`` console script: :func:`main` with signal handling.

    SIGINT, SIGTERM and SIGHUP become a request that the run honours at its next safe point;
    a watchdog ends the process within about a second if it does not get there (see
    :mod:`pairot._interrupt`). The process leaves through ``os._exit`` after flushing.
    """
    from ._interrupt import finish_process, install_process_handlers

    install_process_handlers()
    finish_process(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
