"""The gene tables of the marker filter: official human symbols and uninformative genes.

See docs/method.md#gene-filtering.

Two tables ship with the package (``resources/``, built by ``scripts/build_gene_tables.py``
from NCBI Gene and Gene Ontology data; provenance and agreement figures in
``resources/README.md``):

- :data:`pairot.pp.OFFICIAL_GENES`: ``feature_name, origin``, human gene symbols (``origin``
  ``Approved symbol`` or ``Alias symbols``);
- :data:`pairot.pp.FILTERED_GENES`: ``feature_name, origin, filter_type``, the genes dropped as
  uninformative (``filter_type`` ``mitochondrial``, ``ribosomal``, ``IncRNA``, ``TCR``,
  ``BCR``).

:func:`gene_filter_mask` applies both to a list of gene names; it is the one rule behind
``preprocess_adatas(filter_genes=True)`` and the ``gene_filtering`` of the marker filters.
The tables are read on first use (about 0.2 s) and cached; ``import pairot`` does not read them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import logger
from ._genes import _check_lists, _flag, _with_lists

__all__ = [
    "FILTER_TYPES",
    "MIN_MATCH_SHARE",
    "ORIGINS",
    "filtered_genes",
    "gene_filter_mask",
    "official_genes",
]

RESOURCES = Path(__file__).resolve().parent / "resources"
OFFICIAL_FILE = RESOURCES / "official-genes.csv.gz"
FILTERED_FILE = RESOURCES / "filtered-genes.csv.gz"

#: Categories of ``OFFICIAL_GENES["origin"]`` (the names of the upstream pairOT tables; the
#: NCBI source does not tell previous from alias symbols, so ``Previous symbols`` is unused).
ORIGINS = ("Approved symbol", "Previous symbols", "Alias symbols")
#: Categories of ``FILTERED_GENES["filter_type"]`` (``IncRNA`` spelled as upstream does).
FILTER_TYPES = ("mitochondrial", "ribosomal", "IncRNA", "TCR", "BCR")

#: Share of a study's distinct gene names that must be official symbols for the tables to be
#: matched exactly; below it, upper-cased matching is tried (mouse-style symbols), and below it
#: again the official-symbol restriction is skipped. Human symbol lists are far above it
#: (pbmc68k_reduced: 98% exact), mouse ones far below exactly (3%) and far above upper-cased
#: (98%), Ensembl IDs at 0%. See docs/method.md#gene-filtering.
MIN_MATCH_SHARE = 0.5


def _read(path: Path, columns: list[str], categories: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    if not path.is_file():
        msg = (
            f"pairot's gene table {path.name} is missing from {path.parent}; the installation "
            "is incomplete: reinstall pairot (pip install --force-reinstall pairot)."
        )
        raise FileNotFoundError(msg)
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    table = table[columns]
    table["feature_name"] = table["feature_name"].astype(object)
    for column, values in categories.items():
        table[column] = pd.Categorical(table[column], categories=list(values))
    return table


@functools.cache
def _official() -> pd.DataFrame:
    return _read(OFFICIAL_FILE, ["feature_name", "origin"], {"origin": ORIGINS})


@functools.cache
def _filtered() -> pd.DataFrame:
    return _read(
        FILTERED_FILE,
        ["feature_name", "origin", "filter_type"],
        {"origin": ORIGINS, "filter_type": FILTER_TYPES},
    )


def official_genes() -> pd.DataFrame:
    """Official human gene symbols, a new DataFrame ``feature_name, origin`` (see module doc)."""
    return _official().copy()


def filtered_genes() -> pd.DataFrame:
    """Uninformative genes, a new DataFrame ``feature_name, origin, filter_type``."""
    return _filtered().copy()


@dataclass(frozen=True)
class _Lookup:
    official: frozenset[str]
    official_upper: frozenset[str]
    #: upper-cased name -> filter_type (the first category of the table wins)
    filtered_upper: dict[str, str]


@functools.cache
def _lookup() -> _Lookup:
    official = _official()["feature_name"]
    filtered = _filtered()
    # the table lists each name once, in category order: the first upper-cased spelling wins
    names = filtered["feature_name"].to_numpy(dtype=object)
    types = filtered["filter_type"].astype(str).to_numpy(dtype=object)
    upper = {}
    for name, kind in zip(names, types, strict=True):
        upper.setdefault(name.upper(), kind)
    return _Lookup(
        official=frozenset(official),
        official_upper=frozenset(official.str.upper()),
        filtered_upper=upper,
    )


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
