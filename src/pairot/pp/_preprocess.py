"""The public preprocessing entry points: ``preprocess_adatas`` and ``rank_genes_limma``.

Each is a short orchestration of named steps (one file each: ``_study``, ``_pass_scan``,
``_shared_genes``, ``_pass_pseudobulk``, ``_pass_auroc``, ``_de_tables``, ``_pass_output``);
the order of the steps is the memory order of the four passes over the counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._interrupt import interruptible_call
from ._constants import (
    MIN_CELLS_PER_PROFILE,
    MIN_SHARED_GENES,
    MIN_TOTAL_COUNT,
    PSEUDOBULK_TARGET_SUM,
)
from ._counts import check_gene_symbols, parse_counts
from ._de_tables import de_tables
from ._pass_auroc import auroc_rows, evaluate, read_subsample, subsample_aurocs
from ._pass_output import output_adata, read_output_counts
from ._pass_pseudobulk import (
    highly_variable_genes,
    hvg_statistics,
    hvg_subsample,
    keep_pseudobulk,
    pseudobulk_expression,
    pseudobulk_limma,
    read_pseudobulk,
    read_whole_study,
    uses_all_genes,
)
from ._pass_scan import expressed_genes
from ._shared_genes import gene_positions, shared_genes
from ._stream import AurocBuilder
from ._study import (
    Columns,
    check_limma_design,
    check_unique_symbols,
    open_study,
    read_labels,
    study_profiles,
)
from ._study_files import safe_name, spill, study_h5ad, unspill, write_atomically
from ._upstream import ava_to_dict, ova_to_dict
from ._validate import (
    as_gene_list,
    check_adata,
    check_chunk_size,
    check_flag,
    check_max_cells,
    check_min_shared_genes,
    check_positive_int,
    check_result_format,
    study,
)

logger = logging.getLogger("pairot")

__all__ = ["MIN_SHARED_GENES", "preprocess_adatas", "rank_genes_limma"]


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
    counts: str = "X",
    gene_symbols: str | None = None,
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
        Raw UMI counts in ``X`` (or where ``counts`` says; in memory, backed or dask, as in
        :func:`preprocess_adatas`); every gene of ``adata`` is tested.
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
    counts
        Where the counts are: ``"X"`` (default), ``"raw"`` (``adata.raw.X``, with the genes of
        ``adata.raw.var``) or ``"layers/<name>"`` (see :func:`preprocess_adatas`).
    gene_symbols
        A ``var`` column whose values name the genes in the tables (e.g. ``"feature_name"``
        of a CELLxGENE file), as scanpy's ``gene_symbols=``; ``None`` (default): the
        ``var_names``. Here every gene is tested, so the symbols must be unique (a
        ``ValueError`` names the repeated ones); :func:`preprocess_adatas` also resolves
        repeated symbols.

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
    n_samples_auroc = check_max_cells(n_samples_auroc, "n_samples_auroc")
    chunk_size = check_chunk_size(chunk_size)
    check_result_format(result_format)
    location = parse_counts(counts, "counts")
    gene_symbols = check_gene_symbols(gene_symbols, "gene_symbols")
    columns = Columns("adata", cluster_label, sample_label, "cluster_label", "sample_label")
    columns.check_distinct()
    study_ = open_study(
        adata, "adata", chunk_size, location, gene_symbols, arguments=("counts", "gene_symbols")
    )
    check_unique_symbols(study_, "gene_symbols")
    read_labels(study_, columns)
    check_limma_design(study_, columns)
    clusters = study_.clusters
    n_clusters = len(clusters.categories)
    profiles = study_profiles(study_)
    take_auroc, auroc_codes = auroc_rows(clusters, n_samples_auroc, random_state)

    # passes 1 and 2 in one (every gene is tested): checks and pseudobulk sums, then limma
    result = read_whole_study(study_, profiles, take_auroc)
    expr = pseudobulk_expression(result)
    counts, result = result.auroc_counts, None
    limma_results = pseudobulk_limma(expr, profiles, n_clusters, "adata")
    del expr
    genes = study_.gene_names

    # pass 3: the AUROC subsample, then the DE tables
    normalized = AurocBuilder(counts, auroc_codes, n_clusters)
    read_subsample(study_, normalized, take_auroc)
    aurocs = [evaluate(normalized, "adata")]
    del normalized
    de_ova, de_ava = de_tables(limma_results, aurocs.pop(), genes, clusters)
    if result_format == "long":
        return de_ova, de_ava
    return ova_to_dict(de_ova, argument="de_ova"), ava_to_dict(de_ava, argument="de_ava")


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
    counts_adata1: str = "X",
    counts_adata2: str = "X",
    gene_symbols_adata1: str | None = None,
    gene_symbols_adata2: str | None = None,
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
        Query and reference study: raw UMI counts in ``X`` (or where ``counts_adata1`` /
        ``counts_adata2`` say), gene symbols as ``var_names`` (or in the ``var`` column
        ``gene_symbols_adata1`` / ``gene_symbols_adata2`` name). The counts may be in memory
        (dense or sparse), on disk (``anndata.read_h5ad(path, backed="r")``, also a view of
        it) or lazy dask arrays (e.g. ``anndata.experimental.read_lazy``); all give the same
        results (see Notes).
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
    counts_adata1, counts_adata2
        Where each study's raw counts are: ``"X"`` (default), ``"raw"`` (``adata.raw.X``, with
        the genes of ``adata.raw.var``: all of them, also for a view that subsets the genes,
        as anndata's ``raw`` does) or ``"layers/<name>"`` (``adata.layers[name]``). A CELLxGENE
        file keeps normalized values in ``X`` and the counts in ``raw``: pass ``"raw"``.
        Backed and lazy studies stream ``raw.X`` and layers in chunks, as ``X`` (anndata
        loads a backed file's layers into memory when it opens it; ``read_lazy`` does not).
    gene_symbols_adata1, gene_symbols_adata2
        A ``var`` column (of ``raw.var`` with ``"raw"``, or of ``var`` when raw's genes are all
        in it) whose values name each study's genes, as scanpy's ``gene_symbols=``: e.g.
        ``"feature_name"`` for a CELLxGENE file with Ensembl ids as ``var_names``. The genes
        are then matched, filtered, tested and selected by symbol, and the outputs'
        ``var_names`` are symbols, with the original ids in ``var["gene_ids"]``. A gene
        without a symbol (missing or empty) keeps its id (INFO log). Several genes with one
        symbol (common in CELLxGENE files): the one of the largest total count in the study
        (the first on ties) keeps the symbol and the others are left out, with a warning
        (their counts are not added up: they may be different loci). ``None`` (default): the
        ``var_names``. A study with symbols in a column pairs with one that has symbols as
        ``var_names``.

    Returns
    -------
    Two new AnnData objects with the highly variable genes (same genes, same order, named
    by symbol with ``gene_symbols_*``, the ids then in ``var["gene_ids"]``), raw counts in
    ``X`` (read from where ``counts_*`` said), the cluster and sample columns as Categoricals
    of strings, copied also to
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
    options = checked_options(
        n_top_genes=n_top_genes,
        filter_genes=filter_genes,
        n_samples_auroc=n_samples_auroc,
        n_samples_hvg_selection=n_samples_hvg_selection,
        random_state=random_state,
        genes_to_keep=genes_to_keep,
        genes_to_drop=genes_to_drop,
        chunk_size=chunk_size,
        store_pseudobulk=store_pseudobulk,
        min_shared_genes=min_shared_genes,
    )
    locations = {
        "adata1": parse_counts(counts_adata1, "counts_adata1"),
        "adata2": parse_counts(counts_adata2, "counts_adata2"),
    }
    symbols = {
        "adata1": check_gene_symbols(gene_symbols_adata1, "gene_symbols_adata1"),
        "adata2": check_gene_symbols(gene_symbols_adata2, "gene_symbols_adata2"),
    }
    columns = {
        name: Columns(name, cluster, sample, f"cell_type_column_{name}", f"sample_column_{name}")
        for name, cluster, sample in (
            ("adata1", cell_type_column_adata1, sample_column_adata1),
            ("adata2", cell_type_column_adata2, sample_column_adata2),
        )
    }
    adatas = {"adata1": adata1, "adata2": adata2}
    outputs = preprocess_steps(adatas, columns, locations, symbols, **options)
    return outputs["adata1"], outputs["adata2"]


def checked_options(
    *,
    n_top_genes,
    filter_genes,
    n_samples_auroc,
    n_samples_hvg_selection,
    random_state,
    genes_to_keep,
    genes_to_drop,
    chunk_size,
    store_pseudobulk,
    min_shared_genes,
) -> dict:
    """The options common to ``preprocess_adatas`` and ``preprocess_studies``, checked, as
    the keyword arguments of :func:`preprocess_steps`."""
    n_top_genes = check_positive_int(n_top_genes, "n_top_genes")
    check_flag(filter_genes, "filter_genes")
    check_flag(store_pseudobulk, "store_pseudobulk")
    return {
        "n_top_genes": n_top_genes,
        "min_shared_genes": check_min_shared_genes(min_shared_genes, n_top_genes),
        "n_samples_auroc": check_max_cells(n_samples_auroc, "n_samples_auroc"),
        "n_samples_hvg_selection": check_max_cells(
            n_samples_hvg_selection, "n_samples_hvg_selection"
        ),
        "chunk_size": check_chunk_size(chunk_size),
        "filter_genes": filter_genes,
        "store_pseudobulk": store_pseudobulk,
        "keep": as_gene_list(genes_to_keep, "genes_to_keep"),
        "drop": as_gene_list(genes_to_drop, "genes_to_drop"),
        "random_state": random_state,
    }


def _params(
    *,
    names: list[str],
    n_top_genes: int,
    filter_genes: bool,
    n_samples_auroc: int | None,
    n_samples_hvg_selection: int | None,
    random_state: int,
    n_shared_genes: int,
    min_shared_genes: int,
    store_pseudobulk: bool,
    keep: list[str] | None,
    drop: list[str] | None,
    counts: dict[str, str],
    symbols: dict[str, str | None],
) -> dict:
    """``uns["pairot"]["params"]``: the parameters of a preprocessing, h5ad-safe."""
    params = {
        "n_top_genes": n_top_genes,
        "filter_genes": bool(filter_genes),
        # None (all cells) is stored as 0: h5ad cannot hold None in uns
        "n_samples_auroc": n_samples_auroc or 0,
        "n_samples_hvg_selection": n_samples_hvg_selection or 0,
        "random_state": int(random_state),
        "n_shared_genes": n_shared_genes,
        "min_shared_genes": min_shared_genes,
        "min_total_count": MIN_TOTAL_COUNT,
        "min_cells_per_profile": MIN_CELLS_PER_PROFILE,
        "pseudobulk_target_sum": PSEUDOBULK_TARGET_SUM,
        "store_pseudobulk": bool(store_pseudobulk),
    }
    for name in names:
        params[f"counts_{name}"] = counts[name]
        # None (var_names) is stored as "": h5ad cannot hold None in uns
        params[f"gene_symbols_{name}"] = symbols[name] or ""
    if keep:
        params["genes_to_keep"] = np.asarray(keep, dtype=str)
    if drop:
        params["genes_to_drop"] = np.asarray(drop, dtype=str)
    return params


def preprocess_steps(
    adatas: dict,
    columns: dict[str, Columns],
    locations: dict,
    symbols: dict[str, str | None],
    *,
    n_top_genes: int,
    filter_genes: bool,
    n_samples_auroc: int | None,
    n_samples_hvg_selection: int | None,
    random_state: int,
    keep: list[str] | None,
    drop: list[str] | None,
    chunk_size: int | None,
    store_pseudobulk: bool,
    min_shared_genes: int,
    arguments: dict[str, tuple[str, str]] | None = None,
    out_dir: Path | None = None,
) -> dict[str, AnnData] | dict[str, Path]:
    """The preprocessing of any number of studies (checked arguments), in the memory order of
    the four passes over each study's counts; ``preprocess_adatas`` runs it on two studies,
    ``preprocess_studies`` on many. Returns the outputs by study name, in input order.

    ``arguments``: per study, the names of the arguments that set its counts and symbols (for
    messages); ``counts_<name>`` / ``gene_symbols_<name>`` by default.

    ``out_dir`` (a checked folder): the studies in bounded memory. Across studies only the
    small summaries are held (pass 1's expressed genes, pass 2's HVG statistics); each
    study's DE tables (its AUROC subsample read right after its pseudobulk pass) and stored
    pseudobulk are parked in a file in ``out_dir`` until pass 4, which writes each output to
    ``out_dir/<safe name>.h5ad`` and releases it. Returns name -> path then. The outputs are
    those without ``out_dir``: the same computations on the same inputs, only in another order
    across studies (the HVG subsamples are still drawn study after study from one generator).
    """
    arguments = arguments or {}
    studies = {
        name: open_study(
            adata, name, chunk_size, locations[name], symbols[name], arguments.get(name)
        )
        for name, adata in adatas.items()
    }
    for name, study_ in studies.items():
        read_labels(study_, columns[name])
    for name, study_ in studies.items():
        check_limma_design(study_, columns[name])

    # pass 1: count checks and gene totals, then the shared genes and the gene filter
    expressed = [expressed_genes(study_) for study_ in studies.values()]
    genes = shared_genes(
        expressed,
        filter_genes=filter_genes,
        keep=keep,
        drop=drop,
        min_shared_genes=min_shared_genes,
        names=list(studies),
    )
    gene_index = {name: gene_positions(study_, genes) for name, study_ in studies.items()}
    # pass 2: pseudobulk sums and the HVG subsample, then limma and the HVG statistics
    all_hvgs = uses_all_genes(n_top_genes, len(genes))
    rng = np.random.default_rng([random_state, 1])
    hvg_tables, limma_results, take_auroc, auroc_counts, stored_profiles = [], {}, {}, {}, {}
    for name, study_ in studies.items():
        take_hvg = None if all_hvgs else hvg_subsample(study_, n_samples_hvg_selection, rng)
        profiles = study_profiles(study_)
        take_auroc[name] = auroc_rows(study_.clusters, n_samples_auroc, random_state)
        result = read_pseudobulk(
            study_, profiles, gene_index[name], take_hvg=take_hvg, take_auroc=take_auroc[name][0]
        )
        auroc_counts[name] = result.auroc_counts
        if store_pseudobulk:
            stored_profiles[name] = keep_pseudobulk(result, profiles, study_, genes)
        # limma first: it frees the summed counts before scanpy copies the HVG subsample
        expr = pseudobulk_expression(result)
        n_clusters = len(study_.clusters.categories)
        limma_results[name] = pseudobulk_limma(expr, profiles, n_clusters, name)
        del expr
        if not all_hvgs:
            hvg_tables.append(hvg_statistics(result, genes, n_top_genes))
        del result
        if out_dir is not None:  # this study's pass 3 now, its results parked on disk
            aurocs = subsample_aurocs(
                study_, gene_index[name], take_auroc.pop(name), auroc_counts.pop(name)
            )
            parked = (de_tables(limma_results.pop(name), aurocs, genes, study_.clusters),)
            del aurocs
            parked += (stored_profiles.pop(name, None),)
            spill(parked, _parked_path(out_dir, name))
            del parked
    hvg = highly_variable_genes(hvg_tables, genes, n_top_genes, all_hvgs=all_hvgs)
    del hvg_tables
    params = _params(
        names=list(studies),
        n_top_genes=n_top_genes,
        filter_genes=filter_genes,
        n_samples_auroc=n_samples_auroc,
        n_samples_hvg_selection=n_samples_hvg_selection,
        random_state=random_state,
        n_shared_genes=len(genes),
        min_shared_genes=min_shared_genes,
        store_pseudobulk=store_pseudobulk,
        keep=keep,
        drop=drop,
        counts={name: locations[name].value for name in studies},
        symbols={name: symbols[name] for name in studies},
    )

    # pass 3: the AUROC subsample, then the DE tables (each step pops what it frees)
    aurocs, tables = {}, {}
    for name, study_ in studies.items() if out_dir is None else ():  # else done in pass 2
        aurocs[name] = subsample_aurocs(
            study_, gene_index[name], take_auroc.pop(name), auroc_counts.pop(name)
        )
        tables[name] = de_tables(limma_results.pop(name), aurocs.pop(name), genes, study_.clusters)

    # pass 4: the output counts, read once every subsample is gone, then the output AnnData
    outputs = {}
    for name, study_ in studies.items():
        out_columns = gene_index[name][hvg]
        X_out = read_output_counts(study_, out_columns)
        if out_dir is None:
            table, stored = tables.pop(name), stored_profiles.pop(name, None)
        else:
            table, stored = unspill(_parked_path(out_dir, name))
        out = output_adata(
            study_, columns[name], X_out, out_columns, genes[hvg], table, params, stored
        )
        del table, stored, X_out
        if out_dir is None:
            outputs[name] = out
        else:
            path = study_h5ad(out_dir, name)
            write_atomically(out, path)
            del out
            logger.info("%s: written to %s", study(name, start=True), path)
            outputs[name] = path
    return outputs


def _parked_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f".parked-{safe_name(name)}.pkl"
