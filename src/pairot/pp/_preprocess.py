"""The public preprocessing entry points: ``preprocess_adatas`` and ``rank_genes_limma``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._interrupt import check as check_interrupt
from .._interrupt import interruptible_call
from .._logging import logger, progress_logger
from ._auroc import LabelledColumns, auroc_columns
from ._gene_filter import gene_filter_mask
from ._hvg import combine_statistics, hvg_rows, study_statistics
from ._limma import group_statistics, limma_ava, limma_ova
from ._pseudobulk import LogExpression, Profiles, profiles_of, stored_pseudobulk
from ._reader import CountReader, _is_dask, x_of
from ._sampling import downsample_indices
from ._stream import AurocBuilder, PassSpec, run_pass, stack_rows
from ._upstream import ava_to_dict, ova_to_dict
from ._validate import argument_text, check_adata, check_count_matrix, get_labels, study

#: Minimum total count over all cells for a gene to count as expressed in a study.
MIN_TOTAL_COUNT = 10
#: Minimum number of cells of a (sample, cluster) pair to form a pseudobulk profile.
MIN_CELLS_PER_PROFILE = 2
#: Each pseudobulk profile is scaled to this many counts before ``log1p``.
PSEUDOBULK_TARGET_SUM = 1e5
#: The result forms of :func:`rank_genes_limma`: upstream's dicts or pairot's long tables.
RESULT_FORMATS = ("dict", "long")
#: Default of ``preprocess_adatas(min_shared_genes=...)``: the fewest shared genes (after the
#: expression rule and the gene filter) and highly variable genes that the cell term of the
#: cost can rest on. The cell term is the Spearman correlation of two cells' HVG values; with
#: few genes most of a cell's values are zero, so its rank vector is mostly one block of ties
#: (or undefined when all values are equal) and the correlation is noise. On the PBMC demo
#: pair (``benchmarks/bench_min_genes.py``, figures in benchmarks/README.md) Spearman features
#: alone give a query cell its true reference cluster 75-81% of the time with 50 to 400 HVGs,
#: 59% with 30, 44% with 20 and 37% with 10 (where half the cells have all their HVG values
#: equal), against 35% for always answering the largest cluster. With fewer than about 30
#: shared genes the whole method fails as well: the label term's DE has as few genes, and the
#: mapping turns nearly uniform (largest entry 0.17-0.38 with 2-19 shared genes, against 1.0
#: from 29 on; 8 of 8 clusters mapped to their own type from 46 on).
MIN_SHARED_GENES = 50

OVA_COLUMNS = ["cluster", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"]
AVA_COLUMNS = ["cluster", "versus", "gene", "logFC", "P.Value", "adj.P.Val", "auroc"]


def _check_positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{argument} must be a positive integer, got {value!r}."
        raise TypeError(msg)
    if value < 1:
        msg = f"{argument} must be >= 1, got {value}."
        raise ValueError(msg)
    return int(value)


def _check_max_cells(value, argument: str) -> int | None:
    """A cap on cells (a positive integer), or ``None`` for all cells (upstream's meaning)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = (
            f"{argument} must be a positive integer or None (all cells), got {value!r}; pass "
            f"e.g. {argument}=10_000."
        )
        raise TypeError(msg)
    if value < 1:
        msg = f"{argument} must be >= 1 or None (all cells), got {value}."
        raise ValueError(msg)
    return int(value)


def _check_distinct_columns(cluster_column, sample_column, cluster_arg: str, sample_arg: str):
    if isinstance(cluster_column, str) and cluster_column == sample_column:
        msg = (
            f"{argument_text(cluster_arg)} and {argument_text(sample_arg)} are both "
            f"{cluster_column!r}; pass the column of cluster labels and the column of "
            "samples / donors, two different columns."
        )
        raise ValueError(msg)


def _check_limma_design(
    clusters: pd.Categorical,
    samples: pd.Categorical,
    *,
    name: str,
    cluster_arg: str,
    cluster_column: str,
    sample_arg: str,
    sample_column: str,
) -> None:
    """Raise ``ValueError`` unless the pseudobulk profiles of a study can be fitted by limma.

    A profile is a (sample, cluster) pair with at least ``MIN_CELLS_PER_PROFILE`` cells.
    One-vs-all limma (design ``~ is_c``) needs at least 3 profiles and all-vs-all limma
    (``~ 0 + cluster``) one more profile than clusters with profiles, both from at least two
    clusters: one residual degree of freedom. Clusters without a profile of their own (e.g. a
    cluster of one cell) are allowed: their limma statistics are NaN. Checked from the labels
    alone, before any expensive step. Each message starts with the problem in plain words and
    what to do; the limma details follow in parentheses.
    """
    who = study(name, start=True)
    cluster_given = argument_text(cluster_arg, cluster_column)
    sample_given = argument_text(sample_arg, sample_column)
    n_clusters = len(clusters.categories)
    if n_clusters < 2:
        only = clusters.categories[0] if n_clusters else None
        msg = (
            f"{who} has a single cluster ({only!r}) in {cluster_given}; differential "
            "expression needs at least two clusters: check the column, or pass a study with "
            "more cell types."
        )
        raise ValueError(msg)
    n_samples = len(samples.categories)
    pair = np.asarray(samples.codes, dtype=np.int64) * n_clusters + np.asarray(clusters.codes)
    sizes = np.bincount(pair, minlength=n_samples * n_clusters)
    kept = np.flatnonzero(sizes >= MIN_CELLS_PER_PROFILE)
    n_profiles = kept.size
    n_present = np.unique(kept % n_clusters).size
    needed = max(3, n_present + 1)
    profile = (
        f"a pseudobulk profile sums the counts of one cluster's cells in one sample and needs "
        f">= {MIN_CELLS_PER_PROFILE} cells"
    )
    if n_samples < 2:
        msg = (
            f"{who} has only one sample (donor) in {sample_given}, and pseudobulk "
            "differential expression needs at least two: give "
            f"{argument_text(sample_arg)} the column that identifies the donors or batches, "
            "or use a study with more samples. (limma needs at least "
            f"{needed} pseudobulk profiles for {n_present} cluster(s), one residual degree of "
            f"freedom; one sample gives {n_profiles}, one per cluster; {profile}.)"
        )
        raise ValueError(msg)
    if n_present < 2:
        msg = (
            f"{who} has only {n_present} cluster with at least {MIN_CELLS_PER_PROFILE} cells "
            "in one sample (donor), and differential expression needs two such clusters: "
            f"check {cluster_given} and {sample_given}, or pass a study with more cells per "
            f"cluster and sample. (limma compares pseudobulk profiles of at least two "
            f"clusters; {profile}; {sample_given} has {n_samples} samples.)"
        )
        raise ValueError(msg)
    if n_profiles < needed:
        msg = (
            f"{who} has too few samples (donors) per cluster for pseudobulk differential "
            f"expression: give {argument_text(sample_arg)} a column with more samples, so "
            f"that at least one cluster has >= {MIN_CELLS_PER_PROFILE} cells in each of two "
            "samples, or merge clusters. (limma needs at least "
            f"{needed} pseudobulk profiles for {n_present} clusters, one residual degree of "
            f"freedom, and has {n_profiles}; {profile}; {sample_given} has {n_samples} "
            "samples.)"
        )
        raise ValueError(msg)


@dataclass
class _Study:
    """One study as the passes read it: its counts' reader, labels and in-memory annotations."""

    name: str
    reader: CountReader
    obs: pd.DataFrame
    var: pd.DataFrame
    obsm: dict
    clusters: pd.Categorical | None = None
    samples: pd.Categorical | None = None


def _in_memory_frame(frame) -> pd.DataFrame:
    """``obs`` / ``var`` as a pandas DataFrame (a lazy AnnData holds them as ``Dataset2D``)."""
    if isinstance(frame, pd.DataFrame):
        return frame
    return frame.to_memory()


def _open_study(adata: AnnData, name: str, chunk_size: int | None) -> _Study:
    """The reader and annotations of a study, in memory, backed or lazy; nothing is loaded."""
    X, rows, genes = x_of(adata)
    check_count_matrix(X, name)
    reader = CountReader(X, name=name, chunk_size=chunk_size, rows=rows, genes=genes)
    obs = _in_memory_frame(adata.obs)
    var = _in_memory_frame(adata.var)
    return _Study(name=name, reader=reader, obs=obs, var=var, obsm=dict(adata.obsm.items()))


def _check_chunk_size(chunk_size) -> int | None:
    if chunk_size is None:
        return None
    return _check_positive_int(chunk_size, "chunk_size")


def _profiles(study_: _Study) -> Profiles:
    return profiles_of(
        study_.clusters.codes,
        study_.samples.codes,
        n_clusters=len(study_.clusters.categories),
        n_samples=len(study_.samples.categories),
        min_cells=MIN_CELLS_PER_PROFILE,
    )


def _warn_missing_profiles(profiles: Profiles, clusters: pd.Categorical, name: str) -> None:
    missing = sorted(set(range(len(clusters.categories))) - set(profiles.cluster.tolist()))
    if missing:
        logger.warning(
            "%s: clusters %s have no (sample, cluster) pair with >= %d cells; their limma "
            "statistics are NaN.",
            study(name),
            [clusters.categories[k] for k in missing],
            MIN_CELLS_PER_PROFILE,
        )


def _limma(expr: LogExpression, profiles: Profiles, n_clusters: int, name: str):
    """One-vs-all and all-vs-all limma of the summed profiles; ``expr``'s counts are released
    once the per-cluster statistics are computed (gene-blocked)."""
    start = time.perf_counter()
    statistics = group_statistics(expr, profiles.cluster, n_clusters)
    expr.release()
    ova = limma_ova(expr, profiles.cluster, n_clusters, statistics=statistics)
    ava = limma_ava(expr, profiles.cluster, n_clusters, statistics=statistics)
    logger.info(
        "%s: limma on %d pseudobulk profiles x %d genes in %.1f s",
        study(name),
        expr.shape[1],
        expr.shape[0],
        time.perf_counter() - start,
    )
    return ova, ava


def _auroc(normalized: LabelledColumns, name: str):
    """AUROCs of the normalized subsample (each gene's values with their cells' clusters)."""
    start = time.perf_counter()
    n_rows, n_genes = normalized.shape
    ova_auc, ava_auc = auroc_columns(normalized)
    del normalized
    logger.info(
        "%s: AUROC on %d cells x %d genes in %.1f s",
        study(name),
        n_rows,
        n_genes,
        time.perf_counter() - start,
    )
    return ova_auc, ava_auc


def _tables(
    limma_results, auroc_results, genes: pd.Index, clusters: pd.Categorical
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long one-vs-all and all-vs-all DE tables of one study.

    Each column is built once and handed to pandas without a copy (no consolidation of the
    float columns), and each cluster x cluster x gene array is dropped once its column exists.
    """
    (ova_fc, ova_p, ova_adj), ava_limma = limma_results
    ova_auc, ava_auc = auroc_results
    del limma_results, auroc_results
    n_clusters = len(clusters.categories)
    n_genes = len(genes)
    categories = clusters.categories
    # codes in the smallest signed dtype of each: pandas keeps them as they are (no copy)
    gene_codes = np.arange(n_genes, dtype=_code_dtype(n_genes))
    cluster_codes = np.arange(n_clusters, dtype=_code_dtype(n_clusters))
    ova = pd.DataFrame(
        {
            "cluster": pd.Categorical.from_codes(np.repeat(cluster_codes, n_genes), categories),
            "gene": pd.Categorical.from_codes(np.tile(gene_codes, n_clusters), genes),
            "logFC": ova_fc.ravel(),
            "P.Value": ova_p.ravel(),
            "adj.P.Val": ova_adj.ravel(),
            "auroc": ova_auc.ravel(),
        },
        copy=False,
    )
    first, second = np.nonzero(~np.eye(n_clusters, dtype=bool))
    columns = {
        "cluster": pd.Categorical.from_codes(np.repeat(cluster_codes[first], n_genes), categories),
        "versus": pd.Categorical.from_codes(np.repeat(cluster_codes[second], n_genes), categories),
        "gene": pd.Categorical.from_codes(np.tile(gene_codes, first.size), genes),
    }
    arrays = [*ava_limma, ava_auc]
    del ava_limma, ava_auc
    for key in ("logFC", "P.Value", "adj.P.Val", "auroc"):
        columns[key] = arrays.pop(0)[first, second].ravel()
    return ova, pd.DataFrame(columns, copy=False)


def _code_dtype(n_categories: int) -> np.dtype:
    """The integer dtype pandas stores the codes of ``n_categories`` categories in (code -1
    means missing, so int8 holds up to 126 categories)."""
    for dtype in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _auroc_rows(clusters: pd.Categorical, n_samples_auroc: int | None, random_state: int):
    if n_samples_auroc is None:
        rows = np.arange(len(clusters))
    else:
        rows = downsample_indices(clusters.codes, n_samples_auroc, random_state=random_state)
    take = np.zeros(len(clusters), dtype=bool)
    take[rows] = True
    return take, np.asarray(clusters.codes)[rows]


def _scan(study_: _Study) -> np.ndarray:
    """Pass 1: the count checks and each gene's total count."""
    start = time.perf_counter()
    totals = run_pass(study_.reader, PassSpec(scan=True)).totals
    logger.info(
        "%s: checked %d x %d counts (%s, %d chunks of <= %d cells) in %.1f s",
        study(study_.name),
        *study_.reader.shape,
        study_.reader.source,
        study_.reader.n_chunks,
        study_.reader.chunk_rows,
        time.perf_counter() - start,
    )
    return totals


@interruptible_call
def rank_genes_limma(
    adata: AnnData,
    cluster_label: str,
    sample_label: str,
    n_samples_auroc: int | None = 10_000,
    *,
    random_state: int = 0,
    chunk_size: int | None = None,
    result_format: str = "dict",
) -> tuple[dict, dict] | tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudobulk limma and AUROC for every cluster (one-vs-all) and cluster pair (all-vs-all).

    See docs/method.md#pseudobulk-differential-expression.

    Counts of each (sample, cluster) pair with at least 2 cells are summed, scaled to 1e5 and
    ``log1p``-transformed; limma fits ``~ is_cluster`` per cluster (one-vs-all) and one
    ``~ 0 + cluster`` model with every pairwise contrast (all-vs-all). The AUROC of each gene
    is computed on library-size-normalized single-cell values of a stratified subsample of at
    most ``n_samples_auroc`` cells per cluster. ``adata`` is not modified.

    Parameters
    ----------
    adata
        Raw UMI counts in ``X`` (in memory, backed or dask, as in :func:`preprocess_adatas`);
        every gene of ``adata`` is tested.
    cluster_label, sample_label
        Columns of ``adata.obs`` with the cluster and the sample (donor) of each cell.
    n_samples_auroc
        Maximum number of cells per cluster used for the AUROC; ``None`` uses all cells. May
        be given by position, as in upstream pairOT.
    random_state
        Seed of the AUROC subsample.
    chunk_size
        Cells read at once from ``X`` (see :func:`preprocess_adatas`).
    result_format
        ``"dict"`` (default): upstream pairOT's form, the tuple ``(de_res_ova, de_res_ava)``
        of dicts of DataFrames; ``"long"``: pairot's long tables ``(de_ova, de_ava)``, the
        form :func:`preprocess_adatas` stores in ``uns["pairot"]``. See
        docs/method.md#de-table-forms; :func:`de_tables_to_dicts` /
        :func:`de_tables_from_dicts` convert between them.

    Returns
    -------
    With ``result_format="dict"``:

    de_res_ova
        ``{cluster: DataFrame}``, one per cluster in category order, indexed by gene (index
        name ``"gene"``, genes in ``adata``'s order), columns ``logFC, P.Value, adj.P.Val,
        auroc``.
    de_res_ava
        ``{c1: {c2: DataFrame}}`` for every ordered pair ``c1 != c2``: ``c1`` versus ``c2``,
        the same columns; ``logFC`` is ``c1 - c2`` and ``auroc`` has ``c1`` as the positive
        class.

    With ``result_format="long"``:

    de_ova
        One row per (cluster, gene): ``cluster, gene, logFC, P.Value, adj.P.Val, auroc``.
    de_ava
        One row per ordered cluster pair and gene, both directions present:
        ``cluster, versus, gene, logFC, P.Value, adj.P.Val, auroc``; ``logFC`` is
        ``cluster - versus`` and ``auroc`` has ``cluster`` as the positive class.

    Notes
    -----
    Messy data, case by case (see also :func:`preprocess_adatas`):

    - A cluster with a single cell (more generally, without any (sample, cluster) pair of at
      least 2 cells) gets no pseudobulk profile: its one-vs-all rows and every all-vs-all
      pair involving it have NaN ``logFC`` / ``P.Value`` / ``adj.P.Val`` (a warning is
      logged), while its ``auroc`` is still computed from its cells. It then has no marker
      genes downstream (label distance 1 to every reference cluster).
    - A cluster present in one sample only works when that sample holds at least 2 of its
      cells: it gets one profile, and the residual degrees of freedom come from the clusters
      seen in several samples.
    - Too few profiles for limma (fewer than 3, or not more profiles than clusters with
      profiles, or profiles of fewer than two clusters) is a ``ValueError`` naming the study
      and asking for more samples, raised before any computation; so is a single cluster.

    Raises
    ------
    KeyError
        A column is not in ``adata.obs`` (the message lists the columns that exist).
    ValueError
        ``X`` is not counts (negative, NaN / infinite values, or fractional values that look
        log-transformed or normalized, see :func:`preprocess_adatas`), labels are
        missing, gene names are duplicated, the study is empty, or the design is too small
        for limma (see Notes).
    """
    check_adata(adata, "adata")
    n_samples_auroc = _check_max_cells(n_samples_auroc, "n_samples_auroc")
    chunk_size = _check_chunk_size(chunk_size)
    if not isinstance(result_format, str) or result_format not in RESULT_FORMATS:
        msg = (
            f"result_format must be one of {list(RESULT_FORMATS)}, got {result_format!r}; "
            "'dict' gives upstream pairOT's dicts of DataFrames, 'long' pairot's long tables."
        )
        raise ValueError(msg)
    _check_distinct_columns(cluster_label, sample_label, "cluster_label", "sample_label")
    study_ = _open_study(adata, "adata", chunk_size)
    study_.clusters = get_labels(study_, cluster_label, "adata", "cluster_label")
    study_.samples = get_labels(study_, sample_label, "adata", "sample_label")
    _check_limma_design(
        study_.clusters,
        study_.samples,
        name="adata",
        cluster_arg="cluster_label",
        cluster_column=cluster_label,
        sample_arg="sample_label",
        sample_column=sample_label,
    )
    clusters = study_.clusters
    n_clusters = len(clusters.categories)
    profiles = _profiles(study_)
    _warn_missing_profiles(profiles, clusters, "adata")
    take_auroc, auroc_codes = _auroc_rows(clusters, n_samples_auroc, random_state)
    spec = PassSpec(scan=True, n_profiles=profiles.n_profiles, auroc_counts=True)
    start = time.perf_counter()
    result = run_pass(study_.reader, spec, profile=profiles.of_cell, take_auroc=take_auroc)
    logger.info(
        "adata: read %d x %d counts (%s) in %.1f s",
        *study_.reader.shape,
        study_.reader.source,
        time.perf_counter() - start,
    )
    expr = LogExpression(result.profile_sums, PSEUDOBULK_TARGET_SUM)
    counts, result = result.auroc_counts, None
    limma_results = _limma(expr, profiles, n_clusters, "adata")
    del expr
    genes = pd.Index(np.asarray(study_.var.index.astype(str)))
    normalized = AurocBuilder(counts, auroc_codes, n_clusters)
    run_pass(study_.reader, PassSpec(auroc=True), take_auroc=take_auroc, auroc_into=normalized)
    aurocs = [_auroc(normalized.result(), "adata")]
    del normalized
    de_ova, de_ava = _tables(limma_results, aurocs.pop(), genes, clusters)
    if result_format == "long":
        return de_ova, de_ava
    return ova_to_dict(de_ova, argument="de_ova"), ava_to_dict(de_ava, argument="de_ava")


_NO_INFORMATION = (
    "the cell term of the cost (the Spearman correlation of the cells' values at the highly "
    "variable genes) carries no information with so few genes (a cell's values are then "
    "mostly zeros, whose ranks tie), so the mapping would rest on the label term (the marker "
    "genes) alone"
)


def _check_min_shared_genes(value, n_top_genes: int) -> int:
    """The checked ``min_shared_genes``; ``ValueError`` when ``n_top_genes`` is below it."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        msg = (
            f"{argument_text('min_shared_genes', value)} must be a positive integer (the "
            f"fewest genes the cell term may use; default {MIN_SHARED_GENES}), got "
            f"{type(value).__name__}."
        )
        raise TypeError(msg)
    if value < 1:
        msg = (
            f"{argument_text('min_shared_genes', value)} must be >= 1 (the fewest genes the "
            f"cell term may use; default {MIN_SHARED_GENES}); pass e.g. "
            f"{argument_text('min_shared_genes', 1)} to allow any number of genes."
        )
        raise ValueError(msg)
    value = int(value)
    if n_top_genes < value:
        msg = (
            f"{argument_text('n_top_genes', n_top_genes)} is below "
            f"{argument_text('min_shared_genes', value)}: {_NO_INFORMATION}. Use at least "
            f"{argument_text('n_top_genes', value)} (500 by default), or pass "
            f"{argument_text('min_shared_genes', n_top_genes)} to run with {n_top_genes} "
            "highly variable genes anyway."
        )
        raise ValueError(msg)
    return value


def _check_shared_genes(n_shared: int, min_shared_genes: int, *, filtered: bool) -> None:
    """``ValueError`` when fewer than ``min_shared_genes`` genes are shared."""
    if n_shared >= min_shared_genes:
        return
    after = " and pass the gene filter" if filtered else ""
    msg = (
        f"{study('adata1', start=True)} and {study('adata2')} share only {n_shared} "
        f"gene{'s' if n_shared != 1 else ''} expressed (total count > {MIN_TOTAL_COUNT}) in "
        f"both{after}, fewer than {argument_text('min_shared_genes', min_shared_genes)}: "
        f"{_NO_INFORMATION}. Check that both studies name genes the same way (e.g. both gene "
        "symbols, not symbols and Ensembl IDs, and the same species); to run anyway, pass "
        f"{argument_text('min_shared_genes', n_shared)}."
    )
    raise ValueError(msg)


def _as_gene_list(genes, argument: str) -> list[str] | None:
    if genes is None:
        return None
    if isinstance(genes, str) or not isinstance(genes, Iterable):
        msg = f"{argument} must be a list of gene names, got {genes!r}."
        raise TypeError(msg)
    return [str(g) for g in genes]


@interruptible_call
def preprocess_adatas(
    adata1: AnnData,
    adata2: AnnData,
    cell_type_column_adata1: str,
    cell_type_column_adata2: str,
    sample_column_adata1: str,
    sample_column_adata2: str,
    n_top_genes: int = 500,
    filter_genes: bool = False,
    n_samples_auroc: int | None = 10_000,
    n_samples_hvg_selection: int | None = 100_000,
    *,
    random_state: int = 0,
    genes_to_keep: Iterable[str] | None = None,
    genes_to_drop: Iterable[str] | None = None,
    chunk_size: int | None = None,
    store_pseudobulk: bool = True,
    min_shared_genes: int = MIN_SHARED_GENES,
) -> tuple[AnnData, AnnData]:
    """Prepare a query (``adata1``) and a reference (``adata2``) study for ``DatasetMap``.

    See docs/method.md#preprocessing.

    Steps: keep the genes expressed (total count > 10) in both studies, in ``adata1``'s order;
    optionally drop uninformative genes; run pseudobulk limma and AUROC differential expression
    per study (:func:`rank_genes_limma`) on all shared genes; select ``n_top_genes`` highly
    variable genes jointly over both studies (at most ``n_samples_hvg_selection`` cells of each,
    study as batch). The caller's objects are not modified.

    Parameters
    ----------
    adata1, adata2
        Query and reference study: raw UMI counts in ``X``, gene symbols as ``var_names``.
        ``X`` may be in memory (dense or sparse), on disk (``anndata.read_h5ad(path,
        backed="r")``, also a view of it) or a lazy dask array (e.g.
        ``anndata.experimental.read_lazy``); all give the same results (see Notes).
    cell_type_column_adata1, cell_type_column_adata2
        Columns of ``obs`` with each cell's cluster label.
    sample_column_adata1, sample_column_adata2
        Columns of ``obs`` with each cell's sample / donor, for pseudobulk profiles.
    n_top_genes
        Number of highly variable genes kept in the outputs.
    filter_genes
        Before differential expression, keep only official human gene symbols
        (:data:`~pairot.pp.OFFICIAL_GENES`) and drop mitochondrial, ribosomal, lncRNA and
        immune-receptor segment genes (:data:`~pairot.pp.FILTERED_GENES`), as decided by
        :func:`~pairot.pp.gene_filter_mask` (see docs/method.md#gene-filtering).
    n_samples_auroc
        Maximum number of cells per cluster used for the AUROC; ``None``: all cells.
    n_samples_hvg_selection
        Maximum number of cells per study used to select highly variable genes; ``None``:
        all cells.
    random_state
        Seed of the AUROC and HVG subsamples.
    genes_to_keep, genes_to_drop
        With ``filter_genes``, genes never dropped by the gene filter; genes always dropped
        (also without ``filter_genes``).
    chunk_size
        Cells read at once from ``X``. By default as many as hold about 16 million stored
        counts (e.g. 11,000 cells of 1,500 non-zero genes). With a dask ``X`` its own row
        chunks are used unless ``chunk_size`` is given. It bounds memory and does not change
        any result.
    store_pseudobulk
        Keep the summed counts of the pseudobulk profiles in ``uns["pairot"]["pseudobulk"]``
        (``4 * profiles * shared genes`` bytes per study: 92 KB for the demo, about 0.29 GB
        and 1.38 GB for an atlas pair of 3,600 and 17,392 profiles x 19,819 genes), which
        :meth:`pairot.tl.DatasetMap.bootstrap` needs to resample the samples (donors).
        ``False`` leaves them out; ``bootstrap`` then resamples the cells only, with a warning.
    min_shared_genes
        The fewest genes the cell term of the cost may rest on (default
        :data:`MIN_SHARED_GENES`, 50): fewer shared genes (expressed in both studies, after
        the gene filter) or a smaller ``n_top_genes`` is a ``ValueError``, because the
        Spearman correlation of the cells' HVG values then carries no information and the
        mapping would rest on the label term alone (docs/method.md#preprocessing). An integer
        >= 1; lower it (e.g. to 1) to run anyway.

    Returns
    -------
    Two new AnnData objects with the highly variable genes (same genes, same order), raw
    counts in ``X``, the cluster and sample columns as Categoricals of strings, copied also to
    ``obs["cell_type_author"]`` and ``obs["sample_id"]`` (where upstream pairOT's outputs
    have them; a different input column of that name is replaced in the output, with a
    warning), and
    ``uns["pairot"] = {"cell_type_key", "sample_key", "de_ova", "de_ava", "params",
    "pseudobulk"}`` where ``de_ova`` / ``de_ava`` are the tables of :func:`rank_genes_limma`
    over all shared genes and ``pseudobulk`` the summed counts behind their limma columns
    (:func:`pairot.pp._pseudobulk.stored_pseudobulk`: profiles x shared genes in float32,
    ``4 * profiles * genes`` bytes; absent with ``store_pseudobulk=False``), which
    :meth:`pairot.tl.DatasetMap.bootstrap` resamples by sample (donor).

    Notes
    -----
    Input checks and messy data, case by case:

    - ``X`` must hold raw counts: any numeric dtype (float holding whole numbers is fine),
      dense or sparse; float16 is read chunk by chunk as float32 (exactly; the outputs hold
      float32), with a warning when its values exceed 2048 (float16 then skips integers, so
      the counts may have been rounded), and a sparse float16 matrix on disk (scipy.sparse
      cannot hold one) is a ``TypeError`` saying how to rewrite it as float32; negative or
      NaN / infinite values are a ``ValueError`` pointing to the raw counts. Fractional
      values are a ``ValueError`` when the study's largest value is below 30
      (log-transformed) or every cell has the same total (normalized); otherwise they are
      read as counts on a count scale (ambient-RNA-corrected counts, counts rebuilt from
      normalized data) with a warning saying what was seen (docs/method.md#inputs).
    - Views (``adata[cells, genes]``) are accepted and give the result of their copies.
    - Large studies: the counts are read in chunks of ``chunk_size`` cells, four times per
      study (checks and gene totals; pseudobulk sums and the HVG subsample; the AUROC
      subsample; the output counts, read once every study's AUROC subsample is gone), and
      never held whole. Memory is bounded by a chunk, one subsample at a time, one study's
      pseudobulk profiles x genes, the DE tables and the outputs. A backed file is only read,
      never written. With a dask ``X``, each chunk is one dask task: a ``dask.distributed``
      client, when one is active, runs them on its workers. A chunk that cannot be read (a
      truncated or corrupt file) is an ``OSError`` naming the study, the cells and the file.
    - Cluster and sample labels are converted to strings, in the order of the original values
      (a categorical column keeps its order; numbers come in numeric order, so ``1, 2, 10``
      become ``"1", "2", "10"``). Unused categories are dropped (INFO log); missing labels,
      a missing column (``KeyError`` listing the columns) and one column given as both the
      cluster and the sample column are errors. Names with ``/``, ``+``, spaces or unicode
      work and survive ``write_h5ad`` / ``read_h5ad``.
    - Duplicated ``var_names``: ``ValueError`` (fix: ``adata.var_names_make_unique()``); an
      empty study (0 cells or 0 genes) or no shared expressed gene: ``ValueError``.
    - Fewer shared genes than ``min_shared_genes`` (50), e.g. two studies that share one gene
      of 300, or ``n_top_genes`` below it: ``ValueError`` giving the numbers (before any
      expensive step for ``n_top_genes``; after the count scan for the shared genes).
    - Fewer shared genes than ``n_top_genes`` (but at least ``min_shared_genes``): a warning,
      and all shared genes are kept.
    - A single cluster, a cluster of one cell, a cluster in one sample only and too few
      pseudobulk profiles behave as described in :func:`rank_genes_limma`; the checks run
      before any expensive step.
    """
    check_adata(adata1, "adata1")
    check_adata(adata2, "adata2")
    n_top_genes = _check_positive_int(n_top_genes, "n_top_genes")
    min_shared_genes = _check_min_shared_genes(min_shared_genes, n_top_genes)
    n_samples_auroc = _check_max_cells(n_samples_auroc, "n_samples_auroc")
    n_samples_hvg_selection = _check_max_cells(n_samples_hvg_selection, "n_samples_hvg_selection")
    chunk_size = _check_chunk_size(chunk_size)
    for flag, value in (("filter_genes", filter_genes), ("store_pseudobulk", store_pseudobulk)):
        if not isinstance(value, bool | np.bool_):
            msg = f"{flag} must be True or False, got {value!r}."
            raise TypeError(msg)
    keep = _as_gene_list(genes_to_keep, "genes_to_keep")
    drop = _as_gene_list(genes_to_drop, "genes_to_drop")
    columns = {
        "adata1": (cell_type_column_adata1, sample_column_adata1),
        "adata2": (cell_type_column_adata2, sample_column_adata2),
    }
    studies = {
        "adata1": _open_study(adata1, "adata1", chunk_size),
        "adata2": _open_study(adata2, "adata2", chunk_size),
    }
    for name, study_ in studies.items():
        ct_col, sample_col = columns[name]
        cluster_arg, sample_arg = f"cell_type_column_{name}", f"sample_column_{name}"
        _check_distinct_columns(ct_col, sample_col, cluster_arg, sample_arg)
        study_.clusters = get_labels(study_, ct_col, name, cluster_arg)
        study_.samples = get_labels(study_, sample_col, name, sample_arg)
    for name, study_ in studies.items():
        ct_col, sample_col = columns[name]
        _check_limma_design(
            study_.clusters,
            study_.samples,
            name=name,
            cluster_arg=f"cell_type_column_{name}",
            cluster_column=ct_col,
            sample_arg=f"sample_column_{name}",
            sample_column=sample_col,
        )

    # pass 1: count checks and gene totals
    expressed = {}
    for name, study_ in studies.items():
        check_interrupt()
        progress_logger.info(
            "Checking %s's counts (%d cells x %d genes, %s).",
            study(name),
            *study_.reader.shape,
            study_.reader.source,
        )
        totals = _scan(study_)
        expressed[name] = study_.var.index[totals > MIN_TOTAL_COUNT]
    genes = expressed["adata1"][expressed["adata1"].isin(expressed["adata2"])]
    logger.info(
        "%d genes are expressed (total count > %d) in both studies.", len(genes), MIN_TOTAL_COUNT
    )
    if filter_genes:
        flagged = gene_filter_mask(
            np.asarray(genes, dtype=object), keep=keep, drop=drop, what="the shared genes"
        )
    else:
        flagged = genes.isin(drop or [])
    if flagged.any():
        logger.info("Dropping %d uninformative genes.", int(flagged.sum()))
        genes = genes[~np.asarray(flagged)]
    if len(genes) == 0:
        msg = (
            f"{study('adata1', start=True)} and {study('adata2')} share no gene expressed "
            "(total count > 10) in both studies; check that var_names use the same gene "
            "identifiers (e.g. both symbols)."
        )
        raise ValueError(msg)
    _check_shared_genes(len(genes), min_shared_genes, filtered=bool(flagged.any()))
    genes = pd.Index(np.asarray(genes, dtype=str))
    gene_index = {
        name: study_.var.index.get_indexer(genes).astype(np.int64)
        for name, study_ in studies.items()
    }

    # pass 2: pseudobulk sums (then limma) and the HVG subsample (then its statistics)
    all_hvgs = n_top_genes >= len(genes)
    if all_hvgs:
        logger.warning(
            "n_top_genes=%d is not smaller than the %d shared genes; using all shared genes.",
            n_top_genes,
            len(genes),
        )
    rng = np.random.default_rng([random_state, 1])
    hvg_tables, limma_results, take_auroc, auroc_counts = [], {}, {}, {}
    stored_profiles = {}
    for name, study_ in studies.items():
        n_cells = study_.reader.shape[0]
        take_hvg = None
        if not all_hvgs:
            take_hvg = np.zeros(n_cells, dtype=bool)
            n_max = n_cells if n_samples_hvg_selection is None else n_samples_hvg_selection
            take_hvg[hvg_rows(n_cells, n_max, rng)] = True
        profiles = _profiles(study_)
        _warn_missing_profiles(profiles, study_.clusters, name)
        check_interrupt()
        progress_logger.info(
            "Differential expression of %s's %d clusters (pseudobulk limma, AUROC).",
            study(name),
            len(study_.clusters.categories),
        )
        take_auroc[name] = _auroc_rows(study_.clusters, n_samples_auroc, random_state)
        spec = PassSpec(
            gene_index=gene_index[name],
            n_profiles=profiles.n_profiles,
            hvg=not all_hvgs,
            auroc_counts=True,
        )
        start = time.perf_counter()
        result = run_pass(
            study_.reader,
            spec,
            profile=profiles.of_cell,
            take_hvg=take_hvg,
            take_auroc=take_auroc[name][0],
        )
        auroc_counts[name] = result.auroc_counts
        logger.info(
            "%s: pseudobulk sums of %d profiles%s in %.1f s",
            study(name),
            profiles.n_profiles,
            "" if all_hvgs else " and the HVG subsample",
            time.perf_counter() - start,
        )
        # kept (float32) for DatasetMap.bootstrap's resampling of the samples (donors)
        if store_pseudobulk:
            stored_profiles[name] = stored_pseudobulk(
                result.profile_sums, profiles, study_.clusters, study_.samples, genes
            )
        # limma first: it frees the summed counts before scanpy copies the HVG subsample
        expr = LogExpression(result.profile_sums, PSEUDOBULK_TARGET_SUM)
        result.profile_sums = None
        limma_results[name] = _limma(expr, profiles, len(study_.clusters.categories), name)
        del expr
        if not all_hvgs:
            sub = stack_rows(result.hvg, len(genes), np.float32)
            hvg_tables.append(study_statistics(sub, genes, n_top_genes))
            del sub
        del result

    if all_hvgs:
        hvg = np.arange(len(genes))
    else:
        check_interrupt()
        progress_logger.info(
            "Selecting %d highly variable genes among %d shared genes.", n_top_genes, len(genes)
        )
        hvg = combine_statistics(hvg_tables, genes, n_top_genes)
    del hvg_tables

    params = {
        "n_top_genes": n_top_genes,
        "filter_genes": bool(filter_genes),
        # None (all cells) is stored as 0: h5ad cannot hold None in uns
        "n_samples_auroc": n_samples_auroc or 0,
        "n_samples_hvg_selection": n_samples_hvg_selection or 0,
        "random_state": int(random_state),
        "n_shared_genes": len(genes),
        "min_shared_genes": min_shared_genes,
        "min_total_count": MIN_TOTAL_COUNT,
        "min_cells_per_profile": MIN_CELLS_PER_PROFILE,
        "pseudobulk_target_sum": PSEUDOBULK_TARGET_SUM,
        "store_pseudobulk": bool(store_pseudobulk),
    }
    if keep:
        params["genes_to_keep"] = np.asarray(keep, dtype=str)
    if drop:
        params["genes_to_drop"] = np.asarray(drop, dtype=str)

    # pass 3: the AUROC subsample, then the DE tables
    tables = {}
    for name, study_ in studies.items():
        clusters = study_.clusters
        take, auroc_codes = take_auroc.pop(name)
        counts = auroc_counts.pop(name)
        normalized = AurocBuilder(
            np.zeros(len(genes), dtype=np.int64) if counts is None else counts,
            auroc_codes,
            len(clusters.categories),
        )
        spec = PassSpec(gene_index=gene_index[name], auroc=True)
        check_interrupt()
        start = time.perf_counter()
        run_pass(study_.reader, spec, take_auroc=take, auroc_into=normalized)
        logger.info("%s: AUROC subsample read in %.1f s", study(name), time.perf_counter() - start)
        aurocs = [_auroc(normalized.result(), name)]
        del normalized  # the subsample's values, before the tables are built
        tables[name] = _tables(limma_results.pop(name), aurocs.pop(), genes, clusters)

    # pass 4: the output counts, read once every subsample is gone (never held beside one)
    outputs = []
    for name, study_ in studies.items():
        ct_col, sample_col = columns[name]
        out_columns = gene_index[name][hvg]
        dense = study_.reader.dense
        check_interrupt()
        start = time.perf_counter()
        spec = PassSpec(output_index=out_columns, output_dense=dense)
        result = run_pass(study_.reader, spec)
        X_out = stack_rows(result.output, out_columns.size, study_.reader.dtype, dense=dense)
        del result
        logger.info("%s: output counts read in %.1f s", study(name), time.perf_counter() - start)
        de_ova, de_ava = tables.pop(name)
        obs = study_.obs.copy()
        obs[ct_col] = study_.clusters
        obs[sample_col] = study_.samples
        _upstream_columns(obs, ct_col, sample_col, name)
        var = study_.var.iloc[out_columns].copy()
        var.index = genes[hvg]
        out = AnnData(
            X=X_out,
            obs=obs,
            var=var,
            obsm={key: _materialized(value) for key, value in study_.obsm.items()},
            uns={
                "pairot": {
                    "cell_type_key": ct_col,
                    "sample_key": sample_col,
                    "study": name,
                    "de_ova": de_ova,
                    "de_ava": de_ava,
                    "params": dict(params),
                }
            },
        )
        if store_pseudobulk:
            out.uns["pairot"]["pseudobulk"] = stored_profiles.pop(name)
        outputs.append(out)
    return outputs[0], outputs[1]


#: The obs columns upstream pairOT's preprocessing writes the clusters and samples to; code
#: written against its outputs reads them, so pairot's outputs carry them too.
UPSTREAM_COLUMNS = {"cluster": "cell_type_author", "sample": "sample_id"}


def _upstream_columns(obs: pd.DataFrame, ct_col: str, sample_col: str, name: str) -> None:
    """Add ``cell_type_author`` / ``sample_id`` copies of the cluster and sample columns to
    the output's ``obs`` (a copy), warning when they replace a different column of that name."""
    for kind, column, source in (
        ("cluster", UPSTREAM_COLUMNS["cluster"], ct_col),
        ("sample", UPSTREAM_COLUMNS["sample"], sample_col),
    ):
        if column == source:
            continue
        if column in obs.columns and column not in (ct_col, sample_col):
            logger.warning(
                "%s: the output's obs[%r] holds the %s labels (a copy of obs[%r], as upstream "
                "pairOT writes them); the input's own %r column is replaced there (the input "
                "is unchanged).",
                study(name),
                column,
                kind,
                source,
                column,
            )
        elif column in obs.columns:
            # the other label column has this name (e.g. clusters in "sample_id"): keep it
            logger.warning(
                "%s: obs[%r] is the %s column, so the upstream copy of the %s labels is not "
                "written there.",
                study(name),
                column,
                "cluster" if column == ct_col else "sample",
                kind,
            )
            continue
        obs[column] = obs[source]


def _materialized(value):
    """An ``obsm`` entry as an in-memory copy (computed when it is a dask array)."""
    if _is_dask(value):
        value = value.compute()
    if isinstance(value, pd.DataFrame):
        return value.copy()
    if sparse.issparse(value):
        return value.copy()
    return np.array(value)
