"""The argument checks of the public preprocessing functions (before any study is opened)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._constants import MIN_SHARED_GENES, NO_INFORMATION
from ._validate import argument_text

#: The result forms of :func:`~pairot.pp.rank_genes_limma`: upstream's dicts or pairot's
#: long tables.
RESULT_FORMATS = ("dict", "long")


def check_positive_int(value, argument: str) -> int:
    """``value`` as an ``int``; ``TypeError`` unless an integer, ``ValueError`` below 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{argument} must be a positive integer, got {value!r}."
        raise TypeError(msg)
    if value < 1:
        msg = f"{argument} must be >= 1, got {value}."
        raise ValueError(msg)
    return int(value)


def check_max_cells(value, argument: str) -> int | None:
    """A cap on cells (a positive integer), or ``None`` for all cells (upstream's meaning)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = (
            f"{argument} must be a positive integer or None (all cells), got {value!r}; pass "
            f"e.g. {argument}=10_000."
        )
        raise TypeError(msg)
    if value < 1:
        msg = f"{argument} must be >= 1 or None (all cells), got {value}."
        raise ValueError(msg)
    return int(value)


def check_chunk_size(chunk_size) -> int | None:
    """The checked ``chunk_size``: a positive integer, or ``None`` (the reader's default)."""
    if chunk_size is None:
        return None
    return check_positive_int(chunk_size, "chunk_size")


def check_flags(**flags) -> None:
    """``TypeError`` for the first of ``flags`` (argument name -> value) that is not a bool."""
    for flag, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            msg = f"{flag} must be True or False, got {value!r}."
            raise TypeError(msg)


def check_result_format(result_format) -> None:
    """``ValueError`` unless ``result_format`` is one of :data:`RESULT_FORMATS`."""
    if not isinstance(result_format, str) or result_format not in RESULT_FORMATS:
        msg = (
            f"result_format must be one of {list(RESULT_FORMATS)}, got {result_format!r}; "
            "'dict' gives upstream pairOT's dicts of DataFrames, 'long' pairot's long tables."
        )
        raise ValueError(msg)


def check_min_shared_genes(value, n_top_genes: int) -> int:
    """The checked ``min_shared_genes``; ``ValueError`` when ``n_top_genes`` is below it."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        msg = (
            f"{argument_text('min_shared_genes', value)} must be a positive integer (the "
            f"fewest genes the cell term may use; default {MIN_SHARED_GENES}), got "
            f"{type(value).__name__}."
        )
        raise TypeError(msg)
    if value < 1:
        msg = (
            f"{argument_text('min_shared_genes', value)} must be >= 1 (the fewest genes the "
            f"cell term may use; default {MIN_SHARED_GENES}); pass e.g. "
            f"{argument_text('min_shared_genes', 1)} to allow any number of genes."
        )
        raise ValueError(msg)
    value = int(value)
    if n_top_genes < value:
        msg = (
            f"{argument_text('n_top_genes', n_top_genes)} is below "
            f"{argument_text('min_shared_genes', value)}: {NO_INFORMATION}. Use at least "
            f"{argument_text('n_top_genes', value)} (500 by default), or pass "
            f"{argument_text('min_shared_genes', n_top_genes)} to run with {n_top_genes} "
            "highly variable genes anyway."
        )
        raise ValueError(msg)
    return value


def as_gene_list(genes, argument: str) -> list[str] | None:
    """``genes`` as a list of ``str`` (``None`` stays ``None``); ``TypeError`` for a string or
    a non-iterable."""
    if genes is None:
        return None
    if isinstance(genes, str) or not isinstance(genes, Iterable):
        msg = f"{argument} must be a list of gene names, got {genes!r}."
        raise TypeError(msg)
    return [str(g) for g in genes]
