"""The genes a preprocessing keeps: expressed in every study, through the gene filter."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._logging import logger
from ._constants import MIN_TOTAL_COUNT, NO_INFORMATION
from ._gene_filter import gene_filter_mask
from ._study import Study
from ._validate import argument_text, study


def _check_shared_genes(n_shared: int, min_shared_genes: int, *, filtered: bool) -> None:
    """``ValueError`` when fewer than ``min_shared_genes`` genes are shared."""
    if n_shared >= min_shared_genes:
        return
    after = " and pass the gene filter" if filtered else ""
    msg = (
        f"{study('adata1', start=True)} and {study('adata2')} share only {n_shared} "
        f"gene{'s' if n_shared != 1 else ''} expressed (total count > {MIN_TOTAL_COUNT}) in "
        f"both{after}, fewer than {argument_text('min_shared_genes', min_shared_genes)}: "
        f"{NO_INFORMATION}. Check that both studies name genes the same way (e.g. both gene "
        "symbols, not symbols and Ensembl IDs, and the same species); to run anyway, pass "
        f"{argument_text('min_shared_genes', n_shared)}."
    )
    raise ValueError(msg)


def shared_genes(
    expressed: list[pd.Index],
    *,
    filter_genes: bool,
    keep: list[str] | None,
    drop: list[str] | None,
    min_shared_genes: int,
) -> pd.Index:
    """The genes expressed in every study (in the first study's order), without the genes the
    gene filter drops (``filter_genes``) and those of ``drop``, as an Index of ``str``.

    ``ValueError`` when no gene or fewer than ``min_shared_genes`` genes remain.
    """
    genes = expressed[0]
    for other in expressed[1:]:
        genes = genes[genes.isin(other)]
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
    return pd.Index(np.asarray(genes, dtype=str))


def gene_positions(study_: Study, genes: pd.Index) -> np.ndarray:
    """The columns of ``genes`` (names of its expressed genes) in the study's counts (int64)."""
    return study_.gene_columns.to_numpy()[study_.gene_columns.index.get_indexer(genes)]
