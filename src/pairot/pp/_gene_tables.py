"""The gene tables of the gene filter: official human symbols and uninformative genes.

See docs/method.md#gene-filtering.

Two tables ship with the package (``resources/``, built by ``scripts/build_gene_tables.py``
from NCBI Gene and Gene Ontology data; provenance and agreement figures in
``resources/README.md``):

- :data:`pairot.pp.OFFICIAL_GENES`: ``feature_name, origin``, human gene symbols (``origin``
  ``Approved symbol`` or ``Alias symbols``);
- :data:`pairot.pp.FILTERED_GENES`: ``feature_name, origin, filter_type``, the genes dropped as
  uninformative (``filter_type`` ``mitochondrial``, ``ribosomal``, ``IncRNA``, ``TCR``,
  ``BCR``).

This file reads them (on first use, about 0.2 s, then cached; ``import pairot`` does not read
them) and offers them as name sets for matching (``_lookup``); the name rules are in
:mod:`pairot.pp._genes` and :func:`~pairot.pp._gene_filter.gene_filter_mask`, which applies
both, in :mod:`pairot.pp._gene_filter`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["FILTER_TYPES", "ORIGINS", "filtered_genes", "official_genes"]

RESOURCES = Path(__file__).resolve().parent / "resources"
OFFICIAL_FILE = RESOURCES / "official-genes.csv.gz"
FILTERED_FILE = RESOURCES / "filtered-genes.csv.gz"

#: Categories of ``OFFICIAL_GENES["origin"]`` (the names of the upstream pairOT tables; the
#: NCBI source does not tell previous from alias symbols, so ``Previous symbols`` is unused).
ORIGINS = ("Approved symbol", "Previous symbols", "Alias symbols")
#: Categories of ``FILTERED_GENES["filter_type"]`` (``IncRNA`` spelled as upstream does).
FILTER_TYPES = ("mitochondrial", "ribosomal", "IncRNA", "TCR", "BCR")


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
