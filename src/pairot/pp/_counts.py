"""Where a study's counts are (``X``, ``raw.X`` or a layer) and what its genes are called
(``var_names`` or a ``var`` column of gene symbols), without loading the counts.

``counts="X"`` (the default) reads ``adata.X``; ``"raw"`` reads ``adata.raw.X`` with the genes
of ``adata.raw.var`` (all of raw's genes: a view's gene subset does not apply to ``raw``, as in
anndata); ``"layers/<name>"`` reads ``adata.layers[name]`` with the genes of ``adata.var``.
For a backed AnnData ``raw.X`` stays on disk and is streamed like ``X``; for a lazy one
(``anndata.experimental.read_lazy``) every location is a dask array. anndata loads a backed
file's layers into memory when it opens the file: to stream a layer from disk, open the file
with ``read_lazy`` (the command line does).

Gene symbols (``gene_symbols="feature_name"``): the column of the counts' ``var`` (for
``raw``, ``raw.var``, or ``adata.var`` when raw's genes are all in it) names the genes. A gene
without a symbol (missing or empty) keeps its id. Several genes with one symbol are resolved
in the first pass over the counts (:func:`unique_gene_columns`): the most expressed keeps the
symbol, the others are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._logging import logger
from ._validate import argument_text, code_name, part, study

#: The column of the outputs' ``var`` holding the original gene ids when symbols are used.
GENE_ID_COLUMN = "gene_ids"
COUNTS_VALUES = '"X" (the default), "raw" (adata.raw.X) or "layers/<name>"'


@dataclass(frozen=True)
class CountsLocation:
    """Where the counts are: ``kind`` ``"X"``, ``"raw"`` or ``"layer"`` (with its ``layer``)."""

    kind: str
    layer: str | None = None

    @property
    def value(self) -> str:
        """As the argument spells it: ``"X"``, ``"raw"``, ``"layers/counts"``."""
        return f"layers/{self.layer}" if self.kind == "layer" else self.kind

    @property
    def where(self) -> str:
        """As a part of the AnnData: ``X``, ``raw.X``, ``layers['counts']``."""
        return {"X": "X", "raw": "raw.X"}.get(self.kind) or f"layers[{self.layer!r}]"


def parse_counts(value, argument: str) -> CountsLocation:
    """``"X"``, ``"raw"`` or ``"layers/<name>"`` as a :class:`CountsLocation`."""
    if isinstance(value, str):
        if value in ("X", "raw"):
            return CountsLocation(value)
        if value.startswith("layers/") and len(value) > len("layers/"):
            return CountsLocation("layer", value[len("layers/") :])
    msg = (
        f"{argument_text(argument, value)} is not a place of counts; pass {COUNTS_VALUES}, "
        "e.g. 'layers/counts'."
    )
    raise ValueError(msg)


def check_gene_symbols(value, argument: str) -> str | None:
    """``None`` or the name of a ``var`` column (a non-empty string)."""
    if value is None or (isinstance(value, str) and value):
        return value
    msg = (
        f"{argument_text(argument, value)} must be None or the name of a var column holding "
        "gene symbols, e.g. 'feature_name'."
    )
    raise TypeError(msg)


@dataclass
class CountsSource:
    """The matrix to stream, the positions of its rows and genes to read (``None``: all), the
    ``var`` of those genes (in the order read) and where it is, in words (``"X"``,
    ``"raw.X"``)."""

    X: object
    rows: object
    genes: object
    var: pd.DataFrame
    where: str


def in_memory(frame) -> pd.DataFrame:
    """``obs`` / ``var`` as a pandas DataFrame (a lazy AnnData holds them as ``Dataset2D``)."""
    return frame if isinstance(frame, pd.DataFrame) else frame.to_memory()


def _parent(adata):
    """The AnnData the rows (and genes) of ``adata`` are read from, and their positions: a
    view of a backed or in-memory AnnData reads its parent's matrices at its positions (a
    lazy AnnData subsets its dask arrays itself)."""
    if adata.is_view and not _is_lazy(adata):
        return adata._adata_ref, adata._oidx, adata._vidx
    return adata, None, None


def _is_lazy(adata) -> bool:
    return not isinstance(adata.obs, pd.DataFrame)


def _source(X, rows, genes, var, where: str) -> CountsSource:
    """A :class:`CountsSource` whose ``var`` is restricted to the ``genes`` read."""
    var = in_memory(var)
    return CountsSource(X, rows, genes, var if genes is None else var.iloc[genes], where)


def counts_source(adata, location: CountsLocation, name: str, argument: str) -> CountsSource:
    """The counts of ``adata`` at ``location``, unread."""
    if location.kind == "X":
        if not adata.isbacked:  # in memory or lazy: X as anndata gives it (a view's subset)
            return _source(adata.X, None, None, adata.var, "X")
        parent, rows, genes = _parent(adata)  # a backed view: the parent's X on disk
        try:
            X = parent.X
        except KeyError:  # a backed file without X
            X = None
        return _source(X, rows, genes, parent.var, "X")
    parent, rows, genes = _parent(adata)
    if location.kind == "raw":
        raw = parent.raw
        if raw is None:
            msg = (
                f"{argument_text(argument, 'raw')} but {part(name, 'raw')} is None (the study "
                f"has no raw counts); pass {argument_text(argument, 'X')} or a layer "
                f"({_layers_text(adata)})."
            )
            raise ValueError(msg)
        if _is_lazy(adata):  # a lazy view subsets its raw itself
            raw = adata.raw
        var = in_memory(raw.var)
        if not var.index.is_unique:
            dup = var.index[var.index.duplicated()].unique()[:5].tolist()
            msg = (
                f"{part(name, 'raw.var_names')} has duplicated gene names, e.g. {dup}; make "
                "them unique first."
            )
            raise ValueError(msg)
        # raw keeps all of its genes, also in a view that subsets the genes (as anndata's raw)
        return _source(raw.X, rows, None, var, "raw.X")
    if location.layer not in parent.layers.keys():
        msg = (
            f"{argument_text(argument, location.value)} but {study(name)} has no layer "
            f"{location.layer!r} ({_layers_text(adata)}); pass one of its layers, "
            f"{argument_text(argument, 'raw')} or {argument_text(argument, 'X')}."
        )
        raise KeyError(msg)
    return _source(parent.layers[location.layer], rows, genes, parent.var, location.where)


def _layers_text(adata) -> str:
    keys = list(adata.layers.keys())
    return f"its layers: {keys}" if keys else "it has no layers"


def gene_names(
    source: CountsSource, adata, symbols: str | None, name: str, argument: str
) -> tuple[pd.Index, pd.Index | None]:
    """The names the genes are matched by (symbols, or the ids where a gene has none) and
    the original ids (``None`` without ``symbols``), both in the counts' gene order."""
    ids = pd.Index(np.asarray(source.var.index.astype(str)))
    if symbols is None:
        return ids, None
    column = _symbol_column(source, adata, symbols, name, argument)
    values = column.to_numpy(dtype=object)
    missing = pd.isna(values) | (column.astype(str).str.strip().to_numpy() == "")
    names = np.where(missing, np.asarray(ids, dtype=object), column.astype(str).to_numpy())
    if missing.any():
        logger.info(
            "%s: %d genes have no symbol in var[%r]; they keep their ids (e.g. %s).",
            study(name),
            int(missing.sum()),
            symbols,
            ids[missing][:3].tolist(),
        )
    return pd.Index(names.astype(str)), ids


def _symbol_column(source, adata, symbols: str, name: str, argument: str) -> pd.Series:
    var = source.var
    if symbols in var.columns:
        return var[symbols]
    if source.where == "raw.X":
        main = in_memory(adata.var)
        if symbols in main.columns and var.index.isin(main.index).all():
            return main[symbols].reindex(var.index)
    where = "raw.var" if source.where == "raw.X" else "var"
    msg = (
        f"{argument_text(argument, symbols)} but {part(name, where)} has no column "
        f"{symbols!r} (its columns: {list(var.columns)}); pass the var column that holds the "
        f"gene symbols, or None to match genes by {code_name(name)}.var_names."
    )
    raise KeyError(msg)


#: Cells read from another place of a study's counts to judge whether it holds counts.
PEEK_CELLS = 2000


def suggested_counts(name: str, argument: str, candidates) -> str | None:
    """The first of ``candidates`` whose first cells hold non-negative integers, as a clause
    naming the option that reads it (``adata1.raw.X holds integer counts: pass
    counts_adata1='raw'``), or ``None``.

    ``candidates``: ``(where, value, read)`` triples, ``where`` the place as messages name it,
    ``value`` the option's value, ``read()`` the stored values of the place's first
    :data:`PEEK_CELLS` cells. A place that cannot be read is no suggestion.
    """
    for where, value, read in candidates:
        try:
            values = np.asarray(read())
        except Exception:  # noqa: BLE001 - a place that cannot be read is no suggestion
            continue
        if (
            values.size
            and np.all(np.isfinite(values))
            and np.all(values >= 0)
            and np.all(values == np.rint(values))
        ):
            return (
                f"{part(name, where)} holds integer counts: pass {argument_text(argument, value)}"
            )
    return None


def unique_gene_columns(
    names: pd.Index, totals: np.ndarray, keep: np.ndarray, name: str, symbols: str | None
) -> pd.Series:
    """The columns of the genes ``keep`` selects, indexed by their names, one per name: where
    several kept genes share a name (a symbol), the one of the largest total count (the first
    in gene order on ties) keeps it and the others are left out, with a warning."""
    columns = np.flatnonzero(keep)
    table = pd.DataFrame({"name": np.asarray(names)[columns], "column": columns})
    table["total"] = np.asarray(totals)[columns]
    duplicated = table["name"].duplicated(keep=False)
    if duplicated.any():
        order = table.sort_values(["total", "column"], ascending=[False, True], kind="stable")
        chosen = order.drop_duplicates("name").sort_values("column", kind="stable")
        n_names = int(table.loc[duplicated, "name"].nunique())
        n_left = int(duplicated.sum()) - n_names
        example = table.loc[duplicated, "name"].iloc[0]
        logger.warning(
            "%s: %d gene symbols of var[%r] name several expressed genes (e.g. %r); the most "
            "expressed gene keeps each symbol and the other %d genes are left out (their ids "
            "are not in the outputs).",
            study(name, start=True),
            n_names,
            symbols,
            example,
            n_left,
        )
        table = chosen
    return pd.Series(table["column"].to_numpy(np.int64), index=pd.Index(table["name"], dtype=str))
