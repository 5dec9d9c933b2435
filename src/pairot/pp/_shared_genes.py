"""The genes a preprocessing keeps: expressed in every study, through the gene filter."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._logging import logger
from ._constants import MIN_TOTAL_COUNT, NO_INFORMATION
from ._gene_filter import gene_filter_mask
from ._study import Study
from ._validate import argument_text, study


def _who(names: list[str]) -> tuple[str, str]:
    """The studies as a message's subject, and "both" / "all of them"."""
    if len(names) == 2:
        return f"{study(names[0], start=True)} and {study(names[1])}", "both"
    listed = ", ".join(study(name) for name in names)
    return f"The {len(names)} studies ({listed})", "all of them"


def _check_shared_genes(
    n_shared: int, min_shared_genes: int, *, filtered: bool, names: list[str]
) -> None:
    """``ValueError`` when fewer than ``min_shared_genes`` genes are shared."""
    if n_shared >= min_shared_genes:
        return
    after = " and pass the gene filter" if filtered else ""
    who, every = _who(names)
    msg = (
        f"{who} share only {n_shared} "
        f"gene{'s' if n_shared != 1 else ''} expressed (total count > {MIN_TOTAL_COUNT}) in "
        f"{every}{after}, fewer than {argument_text('min_shared_genes', min_shared_genes)}: "
        f"{NO_INFORMATION}. Check that {'both' if len(names) == 2 else 'all'} studies name "
        "genes the same way (e.g. gene symbols in each, not symbols and Ensembl IDs, and the "
        "same species; gene_symbols names a var column of symbols); to run anyway, pass "
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
    names: list[str] = ("adata1", "adata2"),
) -> pd.Index:
    """The genes expressed in every study (in the first study's order), without the genes the
    gene filter drops (``filter_genes``) and those of ``drop``, as an Index of ``str``.

    ``expressed``: each study's expressed genes, in the order of ``names``. A gene that one
    study lacks is left out of every study (an INFO line per study says how many of its
    expressed genes go that way). ``ValueError`` when no gene or fewer than
    ``min_shared_genes`` genes remain.
    """
    names = list(names)
    genes = expressed[0]
    for other in expressed[1:]:
        genes = genes[genes.isin(other)]
    logger.info(
        "%d genes are expressed (total count > %d) in %s studies.",
        len(genes),
        MIN_TOTAL_COUNT,
        "both" if len(names) == 2 else f"all {len(names)}",
    )
    if len(names) > 2:
        for name, own in zip(names, expressed, strict=True):
            logger.info(
                "%s: %d of its %d expressed genes are missing (or not expressed) in another "
                "study and are left out.",
                study(name),
                len(own) - len(genes),
                len(own),
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
        who, every = _who(names)
        msg = (
            f"{who} share no gene expressed (total count > 10) in {every}; check that "
            "var_names use the same gene identifiers (e.g. both symbols), or name the symbols' "
            "var column (gene_symbols)."
        )
        raise ValueError(msg)
    _check_shared_genes(len(genes), min_shared_genes, filtered=bool(flagged.any()), names=names)
    return pd.Index(np.asarray(genes, dtype=str))


def gene_positions(study_: Study, genes: pd.Index) -> np.ndarray:
    """The columns of ``genes`` (names of its expressed genes) in the study's counts (int64)."""
    return study_.gene_columns.to_numpy()[study_.gene_columns.index.get_indexer(genes)]
