"""Checks of user input shared by the preprocessing entry points.

Messages name the studies and their column arguments as the Python API does (``adata1``,
``cell_type_column_adata1='ct'``). Inside a :func:`study_names` block they use other words
instead, e.g. the command line's "the query study" and ``--query-cell-type 'ct'``: the
helpers :func:`study`, :func:`part`, :func:`argument_text` and :func:`code_name` build every
name that a message shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

import numpy as np
import pandas as pd
from anndata import AnnData

from .._logging import logger
from ._constants import MIN_SHARED_GENES, NO_INFORMATION

#: The words of the command line: study roles and the options that set each column argument.
CLI_STUDY_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "adata1": "query",
        "adata2": "reference",
        "cell_type_column_adata1": "--query-cell-type",
        "cell_type_column_adata2": "--ref-cell-type",
        "sample_column_adata1": "--query-sample",
        "sample_column_adata2": "--ref-sample",
        "embedding_layer": "--embedding-layer",
        "n_top_genes": "--n-top-genes",
        "min_shared_genes": "--min-shared-genes",
        "counts_adata1": "--query-counts",
        "counts_adata2": "--ref-counts",
        "gene_symbols_adata1": "--query-gene-symbols",
        "gene_symbols_adata2": "--ref-gene-symbols",
    }
)

_NAMES: ContextVar[Mapping[str, str]] = ContextVar(
    "pairot_study_names", default=MappingProxyType({})
)
_NO_VALUE = object()


@contextmanager
def study_names(names: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within the block, messages of the preprocessing checks use ``names``.

    ``names`` maps a study's Python name (``"adata1"``) to its role (``"query"``, shown as
    "the query study", "the query's X") and a column argument (``"sample_column_adata1"``) to
    the option that sets it (``"--query-sample"``, shown as ``--query-sample 'donor'``). The
    default is :data:`CLI_STUDY_NAMES`, the words of the ``pairot`` command line. Names not in
    the mapping are shown as they are. The setting is local to the running thread / task
    (a :class:`contextvars.ContextVar`) and restored on exit.
    """
    token = _NAMES.set(dict(CLI_STUDY_NAMES if names is None else names))
    try:
        yield
    finally:
        _NAMES.reset(token)


def study(name: str, *, start: bool = False) -> str:
    """How a message names a study: ``adata1``, or "the query study" in a study_names block
    (capitalized with ``start=True``, at the start of a message)."""
    role = _NAMES.get().get(name)
    if role is None:
        return name
    text = f"the {role} study"
    return text[0].upper() + text[1:] if start else text


def part(name: str, attribute: str) -> str:
    """A part of a study: ``adata1.obs['ct']``, or "the query's obs['ct']"."""
    role = _NAMES.get().get(name)
    return f"{name}.{attribute}" if role is None else f"the {role}'s {attribute}"


def argument_text(name: str, value=_NO_VALUE) -> str:
    """An argument, with its value if given: ``sample_column_adata1='donor'``, or
    ``--query-sample 'donor'`` in a study_names block."""
    option = _NAMES.get().get(name)
    if value is _NO_VALUE:
        return name if option is None else option
    return f"{name}={value!r}" if option is None else f"{option} {value!r}"


def code_name(name: str) -> str:
    """The variable that a fix written as Python code uses: ``adata1``, or ``adata`` (a
    command-line user's own variable) in a study_names block."""
    return name if _NAMES.get().get(name) is None else "adata"


def is_soma_query(obj) -> bool:
    """Whether ``obj`` is a ``tiledbsoma.ExperimentAxisQuery`` (without importing tiledbsoma)."""
    return any(
        cls.__module__.split(".")[0] == "tiledbsoma" and cls.__name__ == "ExperimentAxisQuery"
        for cls in type(obj).__mro__
    )


def check_adata(adata, name: str) -> None:
    """Raise ``TypeError`` unless ``adata`` is an AnnData with cells, genes and unique genes
    (a SOMA query is checked when it is opened, :mod:`pairot.pp._soma`)."""
    if is_soma_query(adata):
        return
    if not isinstance(adata, AnnData):
        msg = f"{study(name, start=True)} must be an anndata.AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = (
            f"{study(name, start=True)} is empty ({adata.n_obs} cells x {adata.n_vars} "
            "genes); pass a study with cells and genes."
        )
        raise ValueError(msg)
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        msg = (
            f"{part(name, 'var_names')} has duplicated gene names, e.g. {dup}; make them "
            f"unique first, e.g. with {code_name(name)}.var_names_make_unique()."
        )
        raise ValueError(msg)


def check_count_matrix(X, name: str, where: str = "X", argument: str | None = None) -> None:
    """Raise unless ``X`` (the study's ``where``) can hold raw counts: present and numeric.

    The values themselves (finite, non-negative integers) are checked while the counts are
    streamed (:func:`pairot.pp._stream.count_error`), so a matrix on disk is read only once.
    """
    argument = argument or f"counts_{name}"
    if X is None:
        msg = (
            f"{part(name, where)} is None; pairot reads raw UMI counts from {where}: set it "
            f"first, e.g. {code_name(name)}.X = {code_name(name)}.layers['counts'], or say "
            f"where the counts are with {argument_text(argument, 'layers/counts')} "
            f"or {argument_text(argument, 'raw')}."
        )
        raise ValueError(msg)
    dtype = getattr(X, "dtype", None)
    if dtype is None or not (np.issubdtype(dtype, np.number) or np.dtype(dtype).kind == "b"):
        msg = f"{part(name, where)} has dtype {dtype}; raw UMI counts (numbers) are needed."
        raise TypeError(msg)


def get_labels(adata: AnnData, column, name: str, argument: str) -> pd.Categorical:
    """The labels of ``adata.obs[column]`` as a Categorical of strings without unused categories.

    Labels are converted to strings (``1`` becomes ``"1"``) so that they survive
    ``write_h5ad`` / ``read_h5ad`` and index tables the same way everywhere. The category order
    is that of the original values: a categorical column keeps its categories' order; any
    other column is ordered as ``pandas.Categorical`` orders its values, so numbers come in
    numeric order (``1, 2, 10`` gives ``"1", "2", "10"``) and strings in lexicographic order.
    Unused categories are dropped with an INFO log message; missing labels are an error.
    """
    if not isinstance(column, str):
        msg = (
            f"{argument_text(argument)} must be the name of a column of {part(name, 'obs')}, "
            f"got {column!r}."
        )
        raise TypeError(msg)
    if column not in adata.obs.columns:
        available = ", ".join(map(repr, adata.obs.columns[:20]))
        msg = (
            f"{argument_text(argument, column)} is not a column of {part(name, 'obs')}; "
            f"available: {available or 'none'}."
        )
        raise KeyError(msg)
    values = adata.obs[column]
    if values.isna().any():
        msg = (
            f"{part(name, f'obs[{column!r}]')} has {int(values.isna().sum())} missing values "
            "(NaN); drop those cells or give them a label first."
        )
        raise ValueError(msg)
    if isinstance(values.dtype, pd.CategoricalDtype):
        used = values.cat.remove_unused_categories()
        if len(used.cat.categories) < len(values.cat.categories):
            unused = sorted(set(values.cat.categories) - set(used.cat.categories), key=str)
            logger.info(
                "Dropping unused categories of %s: %s", part(name, f"obs[{column!r}]"), unused
            )
        labels = pd.Categorical(used)
    else:
        try:
            labels = pd.Categorical(values.to_numpy())
        except TypeError:  # values that cannot be ordered together: order them as text
            as_str = values.astype(str).to_numpy()
            labels = pd.Categorical(as_str, categories=sorted(set(as_str)))
    categories = [str(c) for c in labels.categories]
    if len(set(categories)) < len(categories):
        seen: dict[str, list] = {}
        for original, text in zip(labels.categories, categories, strict=True):
            seen.setdefault(text, []).append(original)
        clash = next(group for group in seen.values() if len(group) > 1)
        msg = (
            f"{part(name, f'obs[{column!r}]')} has labels that coincide as text ({clash!r} "
            f"all read {str(clash[0])!r}); rename them so each label is unique as a string."
        )
        raise ValueError(msg)
    return pd.Categorical.from_codes(np.asarray(labels.codes), categories=categories)


def check_has_columns(table: pd.DataFrame, argument: str, required, fix: str) -> None:
    """``ValueError`` naming the columns of ``required`` that ``table`` lacks, then ``fix``."""
    missing = [c for c in required if c not in table.columns]
    if missing:
        msg = (
            f"{argument} is missing the column(s) {missing}; it has the columns "
            f"{list(table.columns)}. {fix}"
        )
        raise ValueError(msg)


def check_numeric_columns(table: pd.DataFrame, argument: str, columns) -> None:
    """``TypeError`` for the first of ``columns`` of ``table`` that is not numeric (booleans
    are not), saying how to convert it."""
    for column in columns:
        dtype = table[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            msg = (
                f"{argument}[{column!r}] must be numeric, got dtype {dtype}; convert it, e.g. "
                f"with pd.to_numeric({argument}[{column!r}])."
            )
            raise TypeError(msg)


# --------------------------------------------------------------------------------------------
# the arguments of the public preprocessing functions
# --------------------------------------------------------------------------------------------
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


def check_flag(value, argument: str) -> bool:
    """``value`` as a ``bool``; ``TypeError`` unless it is ``True`` or ``False``."""
    if not isinstance(value, bool | np.bool_):
        msg = f"{argument} must be True or False, got {value!r}."
        raise TypeError(msg)
    return bool(value)


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


def check_study_names(studies, *, what: str, one_study: str) -> list[str]:
    """The names of ``studies`` (a dict name -> study), in order: at least two, non-empty
    strings, distinct also ignoring case (they name files and columns). ``what``: what the
    values must be, for the message; ``one_study``: what to use for a single pair."""
    if not isinstance(studies, Mapping):
        msg = (
            f"studies must be a dict of study name -> {what}, got {type(studies).__name__}; "
            "e.g. studies={'smith2020': adata_a, 'lee2021': adata_b}."
        )
        raise TypeError(msg)
    names = list(studies)
    bad = [name for name in names if not isinstance(name, str) or not name]
    if bad:
        msg = f"studies has names {bad!r}; name every study by a non-empty string."
        raise TypeError(msg)
    if len(names) < 2:
        msg = (
            f"studies has {len(names)} stud{'y' if len(names) == 1 else 'ies'} ({names}); "
            f"at least two are needed (for one pair, {one_study} does the same)."
        )
        raise ValueError(msg)
    folded: dict[str, list[str]] = {}
    for name in names:
        folded.setdefault(name.casefold(), []).append(name)
    clash = [group for group in folded.values() if len(group) > 1]
    if clash:
        msg = (
            f"studies has names that differ only in case, {clash[0]}; files and tables name "
            "studies by these names: make them distinct."
        )
        raise ValueError(msg)
    return names
