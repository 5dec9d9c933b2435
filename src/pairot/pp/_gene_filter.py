"""The gene filter: official human symbols only, and no uninformative genes.

See docs/method.md#gene-filtering.

:func:`gene_filter_mask` applies the gene tables (:mod:`pairot.pp._gene_tables`) and the name
rules (:mod:`pairot.pp._genes`) to a list of gene names; it is the one rule behind
``preprocess_adatas(filter_genes=True)`` and the ``gene_filtering`` of the marker filters.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .._logging import logger
from ._gene_tables import _Lookup, _lookup
from ._genes import _check_lists, _flag, _with_lists

__all__ = ["MIN_MATCH_SHARE", "gene_filter_mask"]

#: Share of a study's distinct gene names that must be official symbols for the tables to be
#: matched exactly; below it, upper-cased matching is tried (mouse-style symbols), and below it
#: again the official-symbol restriction is skipped. Human symbol lists are far above it
#: (pbmc68k_reduced: 98% exact), mouse ones far below exactly (3%) and far above upper-cased
#: (98%), Ensembl IDs at 0%. See docs/method.md#gene-filtering.
MIN_MATCH_SHARE = 0.5

#: Gene sets already warned about (hashes), so a repeated filter logs at INFO only.
_WARNED: set[int] = set()


def _match_mode(names: pd.Series, lookup: _Lookup, what: str) -> str:
    """How to match ``names`` to the tables: ``"exact"``, ``"upper"`` or ``"none"``, logged."""
    distinct = pd.Series(names.unique(), dtype=object)
    if distinct.empty:
        return "exact"
    exact = float(distinct.isin(lookup.official).mean())
    if exact >= MIN_MATCH_SHARE:
        return "exact"
    upper = float(distinct.str.upper().isin(lookup.official_upper).mean())
    if upper >= MIN_MATCH_SHARE:
        logger.info(
            "Gene filter: only %.0f%% of the %d genes of %s are official human gene symbols "
            "as written, but %.0f%% are once upper-cased (mouse-style symbols such as 'Gal', "
            "'mt-Co1'?): matching OFFICIAL_GENES and FILTERED_GENES case-insensitively.",
            100 * exact,
            distinct.size,
            what,
            100 * upper,
        )
        return "upper"
    # once per gene set and process: the marker filter runs on four tables per DatasetMap
    key = hash(frozenset(distinct))
    log = logger.info if key in _WARNED else logger.warning
    _WARNED.add(key)
    log(
        "Gene filter: only %.0f%% of the %d genes of %s are official human gene symbols "
        "(%.0f%% case-insensitively), so the restriction to OFFICIAL_GENES is skipped (it "
        "would drop nearly every gene); only the genes of FILTERED_GENES are dropped. If "
        "var_names hold gene IDs (e.g. Ensembl), use gene symbols instead (e.g. "
        "adata.var_names = adata.var['gene_symbols']), or pass gene_filtering=False / "
        "filter_genes=False to silence this.",
        100 * exact,
        distinct.size,
        what,
        100 * upper,
    )
    return "none"


def gene_filter_mask(
    genes,
    *,
    keep: Iterable[str] | None = None,
    drop: Iterable[str] | None = None,
    what: str = "the study",
) -> np.ndarray:
    """The genes the gene filter drops: not an official symbol, or an uninformative gene.

    See docs/method.md#gene-filtering.

    A gene is dropped (``True``) when its name is not in :data:`pairot.pp.OFFICIAL_GENES`
    (any origin) or when it is in :data:`pairot.pp.FILTERED_GENES` (mitochondrial,
    ribosomal, lncRNA, T-cell or B-cell receptor segment) or flagged by the name rules of
    :func:`~pairot.pp.flag_uninformative_genes` (matched case-insensitively, as in that
    function). How names are matched to ``OFFICIAL_GENES`` depends on
    the share of the distinct names of ``genes`` that are official symbols as written:

    - at least :data:`MIN_MATCH_SHARE` (human symbols): exactly;
    - otherwise, when at least that share matches once upper-cased (mouse-style symbols:
      ``Gal``, ``Sst``, ``mt-Co1``, ``Rpl10``), on upper-cased names, so mouse genes are kept
      when their upper-cased symbol is a human one (logged at INFO);
    - otherwise (Ensembl IDs, another naming), the official-symbol restriction is skipped, as
      it would drop nearly every gene, and only the uninformative genes are dropped (a
      WARNING on the ``pairot`` logger names the shares and the fix).

    Parameters
    ----------
    genes
        Gene names, a 1-D sequence of strings (e.g. ``adata.var_names``).
    keep
        Genes never dropped (rescued), matched exactly.
    drop
        Genes always dropped, matched exactly. A gene may not be in both ``keep`` and ``drop``.
    what
        What ``genes`` are, for the log messages.

    Returns
    -------
    Boolean array of ``len(genes)``: ``True`` where the gene is dropped.

    Examples
    --------
    >>> gene_filter_mask(["CD3E", "MS4A1", "MT-CO1", "RPL10", "AL627309.1", "GAPDH"])
    array([False, False,  True,  True,  True, False])
    """
    names, keep_names, drop_names = _check_lists(genes, keep, drop)
    if names.size == 0:
        return np.zeros(0, dtype=bool)
    symbols = pd.Series(names, dtype=object)
    lookup = _lookup()
    mode = _match_mode(symbols, lookup, what)
    dropped = _flag(symbols)
    if mode == "exact":
        dropped |= ~symbols.isin(lookup.official).to_numpy(dtype=bool)
    elif mode == "upper":
        dropped |= ~symbols.str.upper().isin(lookup.official_upper).to_numpy(dtype=bool)
    return _with_lists(symbols, dropped, keep_names, drop_names)
