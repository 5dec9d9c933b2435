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
from ._pseudobulk import Profiles, profiles_of
from ._reader import CountReader, x_of
from ._stream import PassResult, PassSpec, run_pass
from ._validate import argument_text, check_count_matrix, get_labels, study


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
    var: pd.DataFrame
    obsm: dict
    clusters: pd.Categorical | None = None
    samples: pd.Categorical | None = None

    def read(self, spec: PassSpec, **kwargs) -> PassResult:
        """One pass over the counts (:func:`~pairot.pp._stream.run_pass` with this reader)."""
        return run_pass(self.reader, spec, **kwargs)


def _in_memory_frame(frame) -> pd.DataFrame:
    """``obs`` / ``var`` as a pandas DataFrame (a lazy AnnData holds them as ``Dataset2D``)."""
    if isinstance(frame, pd.DataFrame):
        return frame
    return frame.to_memory()


def open_study(adata: AnnData, name: str, chunk_size: int | None) -> Study:
    """The reader and annotations of a study, in memory, backed or lazy; nothing is loaded."""
    X, rows, genes = x_of(adata)
    check_count_matrix(X, name)
    reader = CountReader(X, name=name, chunk_size=chunk_size, rows=rows, genes=genes)
    obs = _in_memory_frame(adata.obs)
    var = _in_memory_frame(adata.var)
    return Study(name=name, reader=reader, obs=obs, var=var, obsm=dict(adata.obsm.items()))


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
