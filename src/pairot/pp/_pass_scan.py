"""Pass 1 over a study's counts: the count checks and each gene's total (its expressed genes)."""

from __future__ import annotations

import time

import pandas as pd

from .._interrupt import check as check_interrupt
from .._logging import logger, progress_logger
from ._constants import MIN_TOTAL_COUNT
from ._stream import PassSpec
from ._study import Study, resolve_gene_names
from ._validate import study


def expressed_genes(study_: Study) -> pd.Index:
    """Check the study's counts (one pass) and return the names of its genes of total count
    above :data:`~pairot.pp._constants.MIN_TOTAL_COUNT`, in the study's order, one per name
    (several genes with one symbol: the most expressed, see
    :func:`~pairot.pp._study.resolve_gene_names`)."""
    check_interrupt()
    reader = study_.reader
    progress_logger.info(
        "Checking %s's counts (%d cells x %d genes, %s).",
        study(study_.name),
        *reader.shape,
        reader.source,
    )
    start = time.perf_counter()
    totals = study_.read(PassSpec(scan=True)).totals
    logger.info(
        "%s: checked %d x %d counts (%s, %d chunks of <= %d cells) in %.1f s",
        study(study_.name),
        *reader.shape,
        reader.source,
        reader.n_chunks,
        reader.chunk_rows,
        time.perf_counter() - start,
    )
    return resolve_gene_names(study_, totals, totals > MIN_TOTAL_COUNT)
