"""Pass 2 over a study's counts: its pseudobulk sums and HVG subsample, then limma and the
HVG statistics they feed (and, over all studies, the highly variable genes)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .._interrupt import check as check_interrupt
from .._logging import logger, progress_logger
from ._constants import PSEUDOBULK_TARGET_SUM
from ._hvg import combine_statistics, hvg_rows, study_statistics
from ._limma import group_statistics, limma_ava, limma_ova
from ._pseudobulk import LogExpression, Profiles, stored_pseudobulk
from ._stream import PassResult, PassSpec, stack_rows
from ._study import Study
from ._validate import study


def uses_all_genes(n_top_genes: int, n_genes: int) -> bool:
    """Whether every shared gene is highly variable (``n_top_genes`` not below their number);
    a warning says so."""
    all_hvgs = n_top_genes >= n_genes
    if all_hvgs:
        logger.warning(
            "n_top_genes=%d is not smaller than the %d shared genes; using all shared genes.",
            n_top_genes,
            n_genes,
        )
    return all_hvgs


def hvg_subsample(study_: Study, n_max: int | None, rng: np.random.Generator) -> np.ndarray:
    """The cells of the study's HVG subsample (at most ``n_max``; ``None``: all), a mask."""
    n_cells = study_.reader.shape[0]
    take_hvg = np.zeros(n_cells, dtype=bool)
    n_max = n_cells if n_max is None else n_max
    take_hvg[hvg_rows(n_cells, n_max, rng)] = True
    return take_hvg


def read_pseudobulk(
    study_: Study,
    profiles: Profiles,
    gene_index: np.ndarray,
    *,
    take_hvg: np.ndarray | None,
    take_auroc: np.ndarray,
) -> PassResult:
    """Pass 2: the pseudobulk sums of the shared genes, the HVG subsample's rows (unless
    ``take_hvg`` is ``None``) and the stored entries per gene of the AUROC subsample."""
    check_interrupt()
    progress_logger.info(
        "Differential expression of %s's %d clusters (pseudobulk limma, AUROC).",
        study(study_.name),
        len(study_.clusters.categories),
    )
    spec = PassSpec(
        gene_index=gene_index,
        n_profiles=profiles.n_profiles,
        hvg=take_hvg is not None,
        auroc_counts=True,
    )
    start = time.perf_counter()
    result = study_.read(spec, profile=profiles.of_cell, take_hvg=take_hvg, take_auroc=take_auroc)
    logger.info(
        "%s: pseudobulk sums of %d profiles%s in %.1f s",
        study(study_.name),
        profiles.n_profiles,
        "" if take_hvg is None else " and the HVG subsample",
        time.perf_counter() - start,
    )
    return result


def read_whole_study(study_: Study, profiles: Profiles, take_auroc: np.ndarray) -> PassResult:
    """Passes 1 and 2 in one, over all of a study's genes (no gene choice to wait for): the
    count checks, the pseudobulk sums and the stored entries per gene of the AUROC
    subsample."""
    spec = PassSpec(scan=True, n_profiles=profiles.n_profiles, auroc_counts=True)
    start = time.perf_counter()
    result = study_.read(spec, profile=profiles.of_cell, take_auroc=take_auroc)
    logger.info(
        "%s: read %d x %d counts (%s) in %.1f s",
        study_.name,
        *study_.reader.shape,
        study_.reader.source,
        time.perf_counter() - start,
    )
    return result


def keep_pseudobulk(
    result: PassResult, profiles: Profiles, study_: Study, genes: pd.Index
) -> dict[str, np.ndarray]:
    """The summed counts as stored for ``DatasetMap.bootstrap``'s resampling of the samples
    (donors): :func:`~pairot.pp._pseudobulk.stored_pseudobulk`, in float32."""
    return stored_pseudobulk(result.profile_sums, profiles, study_.clusters, study_.samples, genes)


def pseudobulk_expression(result: PassResult) -> LogExpression:
    """The log-expression of the pass's summed profiles; the pass result lets go of the sums
    (the expression then holds the only reference, released by :func:`pseudobulk_limma`)."""
    expr = LogExpression(result.profile_sums, PSEUDOBULK_TARGET_SUM)
    result.profile_sums = None
    return expr


def pseudobulk_limma(expr: LogExpression, profiles: Profiles, n_clusters: int, name: str):
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


def hvg_statistics(result: PassResult, genes: pd.Index, n_top_genes: int) -> pd.DataFrame:
    """The HVG statistics of the study's subsample (read by :func:`read_pseudobulk`)."""
    sub = stack_rows(result.hvg, len(genes), np.float32)
    table = study_statistics(sub, genes, n_top_genes)
    del sub
    return table


def highly_variable_genes(
    hvg_tables: list[pd.DataFrame], genes: pd.Index, n_top_genes: int, *, all_hvgs: bool
) -> np.ndarray:
    """The positions in ``genes`` of the highly variable genes, from every study's statistics
    (all genes when ``all_hvgs``)."""
    if all_hvgs:
        return np.arange(len(genes))
    check_interrupt()
    progress_logger.info(
        "Selecting %d highly variable genes among %d shared genes.", n_top_genes, len(genes)
    )
    return combine_statistics(hvg_tables, genes, n_top_genes)
