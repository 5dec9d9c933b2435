"""One study as the passes read it: opened (reader, annotations), labelled, checked for limma.

Every pass over a study's counts goes through :meth:`Study.read`, so the reads of a whole
preprocessing can be seen (and counted) in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._logging import logger
from ._constants import MIN_CELLS_PER_PROFILE
from ._counts import (
    PEEK_CELLS,
    CountsLocation,
    counts_source,
    gene_names,
    in_memory,
    suggested_counts,
    unique_gene_columns,
)
from ._pseudobulk import Profiles, profiles_of
from ._reader import CountReader
from ._soma import is_soma_query
from ._stream import PassResult, PassSpec, run_pass
from ._validate import argument_text, check_count_matrix, code_name, get_labels, study


@dataclass(frozen=True)
class Columns:
    """The ``obs`` columns of a study's clusters and samples, and the arguments naming them."""

    name: str
    cluster: str
    sample: str
    cluster_arg: str
    sample_arg: str

    def check_distinct(self) -> None:
        """``ValueError`` when one column is given as both the clusters and the samples."""
        if isinstance(self.cluster, str) and self.cluster == self.sample:
            msg = (
                f"{argument_text(self.cluster_arg)} and {argument_text(self.sample_arg)} are "
                f"both {self.cluster!r}; pass the column of cluster labels and the column of "
                "samples / donors, two different columns."
            )
            raise ValueError(msg)


@dataclass
class Study:
    """One study as the passes read it: its counts' reader, labels and in-memory annotations."""

    name: str
    reader: CountReader
    obs: pd.DataFrame
    #: The ``var`` of the counts' genes (``raw.var`` for ``raw``), in the counts' column order.
    var: pd.DataFrame
    obsm: dict
    #: The names the genes are matched by, one per column of the counts (may repeat when
    #: they are symbols), and the original ids when they are symbols (else ``None``).
    gene_names: pd.Index | None = None
    gene_ids: pd.Index | None = None
    #: The ``var`` column of symbols, or ``None``.
    symbols: str | None = None
    #: After the first pass: each expressed gene's column of the counts, by its (unique) name.
    gene_columns: pd.Series | None = None
    clusters: pd.Categorical | None = None
    samples: pd.Categorical | None = None

    def read(self, spec: PassSpec, **kwargs) -> PassResult:
        """One pass over the counts (:func:`~pairot.pp._stream.run_pass` with this reader)."""
        return run_pass(self.reader, spec, **kwargs)


def open_study(
    adata: AnnData,
    name: str,
    chunk_size: int | None,
    counts: CountsLocation | None = None,
    symbols: str | None = None,
    arguments: tuple[str, str] | None = None,
) -> Study:
    """The reader and annotations of a study, in memory, backed or lazy; nothing is loaded.

    ``counts``: where its counts are (``X`` by default); ``symbols``: the ``var`` column that
    names its genes (``None``: ``var_names``); ``arguments``: the names of the arguments that
    set them, for messages (``counts_adata1``, ``gene_symbols_adata1`` by default).
    """
    counts = CountsLocation("X") if counts is None else counts
    counts_arg, symbols_arg = arguments or (f"counts_{name}", f"gene_symbols_{name}")
    if is_soma_query(adata):
        from ._soma import open_soma_study

        fields = open_soma_study(
            adata, name, chunk_size, counts, symbols, (counts_arg, symbols_arg)
        )
        return Study(**fields)
    source = counts_source(adata, counts, name, counts_arg)
    check_count_matrix(source.X, name, source.where, counts_arg)
    names, ids = gene_names(source, adata, symbols, name, symbols_arg)
    reader = CountReader(
        source.X,
        name=name,
        chunk_size=chunk_size,
        rows=source.rows,
        genes=source.genes,
        where=source.where,
        counts_fix=lambda: counts_fix(adata, name, counts, counts_arg),
    )
    return Study(
        name=name,
        reader=reader,
        obs=in_memory(adata.obs),
        var=source.var,
        obsm=dict(adata.obsm.items()),
        gene_names=names,
        gene_ids=ids,
        symbols=symbols,
    )


def counts_fix(adata: AnnData, name: str, current: CountsLocation, argument: str) -> str:
    """What to do when the counts at ``current`` are no counts: the option (``argument``)
    naming another place of the study (``raw``, a layer) whose first cells hold non-negative
    integers (:func:`~pairot.pp._counts.suggested_counts`), or else the general advice."""
    places = [CountsLocation("raw")] if getattr(adata, "raw", None) is not None else []
    places += [CountsLocation("layer", key) for key in adata.layers.keys()]

    def first_values(place):
        source = counts_source(adata, place, name, argument)
        peek = CountReader(
            source.X, name=name, chunk_size=PEEK_CELLS, rows=source.rows, genes=source.genes
        )
        return peek._read(0, min(PEEK_CELLS, peek.shape[0])).data

    candidates = (
        (place.where, place.value, lambda place=place: first_values(place))
        for place in places
        if place != current
    )
    return suggested_counts(name, argument, candidates) or (
        f"pass the unnormalized counts, e.g. {argument_text(argument, 'layers/counts')} or "
        f"{argument_text(argument, 'raw')} where {code_name(name)}.layers['counts'] or "
        f"{code_name(name)}.raw hold them"
    )


def check_unique_symbols(study_: Study, argument: str) -> None:
    """``ValueError`` when symbols name the genes and several genes share one (where every
    gene is tested, there is no pass to choose one of them first)."""
    names = study_.gene_names
    if study_.symbols is None or names.is_unique:
        return
    dup = names[names.duplicated()].unique()
    msg = (
        f"{argument_text(argument, study_.symbols)} names several genes alike ({len(dup)} "
        f"symbols, e.g. {dup[:5].tolist()}), and every gene is tested here; keep one gene per "
        f"symbol first, e.g. {code_name(study_.name)}[:, ~{code_name(study_.name)}.var"
        f"[{study_.symbols!r}].duplicated()], or use preprocess_adatas, which keeps the most "
        "expressed gene of each symbol."
    )
    raise ValueError(msg)


def resolve_gene_names(study_: Study, totals: np.ndarray, expressed: np.ndarray) -> pd.Index:
    """Set ``study_.gene_columns`` for the ``expressed`` genes (one column per name, see
    :func:`~pairot.pp._counts.unique_gene_columns`) and return their names."""
    study_.gene_columns = unique_gene_columns(
        study_.gene_names, totals, expressed, study_.name, study_.symbols
    )
    return study_.gene_columns.index


def read_labels(study_: Study, columns: Columns) -> None:
    """Set the study's clusters and samples from its ``obs`` columns (checked distinct)."""
    columns.check_distinct()
    study_.clusters = get_labels(study_, columns.cluster, columns.name, columns.cluster_arg)
    study_.samples = get_labels(study_, columns.sample, columns.name, columns.sample_arg)


def check_limma_design(study_: Study, columns: Columns) -> None:
    """Raise ``ValueError`` unless the pseudobulk profiles of a study can be fitted by limma.

    A profile is a (sample, cluster) pair with at least ``MIN_CELLS_PER_PROFILE`` cells.
    One-vs-all limma (design ``~ is_c``) needs at least 3 profiles and all-vs-all limma
    (``~ 0 + cluster``) one more profile than clusters with profiles, both from at least two
    clusters: one residual degree of freedom. Clusters without a profile of their own (e.g. a
    cluster of one cell) are allowed: their limma statistics are NaN. Checked from the labels
    alone, before any expensive step. Each message starts with the problem in plain words and
    what to do; the limma details follow in parentheses.
    """
    clusters, samples = study_.clusters, study_.samples
    sample_arg = columns.sample_arg
    who = study(columns.name, start=True)
    cluster_given = argument_text(columns.cluster_arg, columns.cluster)
    sample_given = argument_text(sample_arg, columns.sample)
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
    kept = _profiles(study_).cluster
    n_profiles = kept.size
    n_present = np.unique(kept).size
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


def _profiles(study_: Study) -> Profiles:
    """The study's pseudobulk profiles: (sample, cluster) pairs of enough cells."""
    return profiles_of(
        study_.clusters.codes,
        study_.samples.codes,
        n_clusters=len(study_.clusters.categories),
        n_samples=len(study_.samples.categories),
        min_cells=MIN_CELLS_PER_PROFILE,
    )


def study_profiles(study_: Study) -> Profiles:
    """The study's pseudobulk profiles ((sample, cluster) pairs of enough cells), with a
    warning naming the clusters left without one (their limma statistics are NaN)."""
    clusters = study_.clusters
    profiles = _profiles(study_)
    missing = sorted(set(range(len(clusters.categories))) - set(profiles.cluster.tolist()))
    if missing:
        logger.warning(
            "%s: clusters %s have no (sample, cluster) pair with >= %d cells; their limma "
            "statistics are NaN.",
            study(study_.name),
            [clusters.categories[k] for k in missing],
            MIN_CELLS_PER_PROFILE,
        )
    return profiles
