"""Pass 3 over a study's counts: its AUROC subsample (drawn before pass 2), read and evaluated."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .._interrupt import check as check_interrupt
from .._logging import logger
from ._auroc import auroc_columns
from ._sampling import downsample_indices
from ._stream import AurocBuilder, PassSpec
from ._study import Study
from ._validate import study


def auroc_rows(
    clusters: pd.Categorical, n_samples_auroc: int | None, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """The AUROC subsample: a mask of its cells (at most ``n_samples_auroc`` per cluster;
    ``None``: all) and their cluster codes, in row order."""
    if n_samples_auroc is None:
        rows = np.arange(len(clusters))
    else:
        rows = downsample_indices(clusters.codes, n_samples_auroc, random_state=random_state)
    take = np.zeros(len(clusters), dtype=bool)
    take[rows] = True
    return take, np.asarray(clusters.codes)[rows]


def read_subsample(
    study_: Study, builder: AurocBuilder, take: np.ndarray, gene_index: np.ndarray | None = None
) -> None:
    """Pass 3: fill ``builder`` with the subsample's normalized values (of ``gene_index``;
    ``None``: all genes)."""
    study_.read(PassSpec(gene_index=gene_index, auroc=True), take_auroc=take, auroc_into=builder)


def evaluate(builder: AurocBuilder, name: str):
    """The one-vs-all and all-vs-all AUROCs of a filled subsample; the subsample's values are
    dropped before this returns (the builder hands them over)."""
    normalized = builder.result()
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


def subsample_aurocs(
    study_: Study,
    gene_index: np.ndarray,
    take_auroc: tuple[np.ndarray, np.ndarray],
    counts: np.ndarray | None,
):
    """Read the study's AUROC subsample at the shared genes ``gene_index`` (pass 3, sized by
    pass 2's ``counts`` of stored entries per gene) and evaluate it; only the AUROCs stay."""
    take, codes = take_auroc
    builder = AurocBuilder(
        np.zeros(gene_index.size, dtype=np.int64) if counts is None else counts,
        codes,
        len(study_.clusters.categories),
    )
    check_interrupt()
    start = time.perf_counter()
    read_subsample(study_, builder, take, gene_index)
    logger.info(
        "%s: AUROC subsample read in %.1f s", study(study_.name), time.perf_counter() - start
    )
    aurocs = evaluate(builder, study_.name)
    del builder  # the subsample's values, before the tables are built
    return aurocs
