"""SOMA experiments (the CELLxGENE Census's format) as studies: a
``tiledbsoma.ExperimentAxisQuery`` read in chunks of cells, like a backed file.

``tiledbsoma`` is an optional dependency (``pip install "pairot[soma]"``), imported only when
such a query is given.

What a query gives a study:

- ``obs`` / ``var``: the query's rows of the experiment's ``obs`` and of the measurement's
  ``var``, read as :meth:`~tiledbsoma.ExperimentAxisQuery.to_anndata` reads them (no X, and
  without the categories no selected cell or gene uses, as an AnnData subset drops them), so
  the names are those ``tiledbsoma.io.from_anndata`` stored (the ``obs_id`` / ``var_id``
  columns, or the original index's name). Without such a column the cells are named by their
  ``soma_joinid`` and the genes by ``feature_id`` (the CELLxGENE schema's, the Census's gene
  ids) or their ``soma_joinid``. The ``soma_joinid`` column is left out. ``obsm``: the
  measurement's ``obsm`` arrays, when it has any.
- the counts: one X layer, read a chunk of cells at a time (only those cells' stored values):
  ``counts="X"`` reads the layer ``"data"`` (what ``from_anndata`` names an AnnData's ``X``),
  ``"raw"`` the layer ``"raw"`` (the Census's counts), ``"layers/<name>"`` the layer
  ``<name>``. Cells and genes are in the query's order: that of ``obs_joinids()`` /
  ``var_joinids()`` (the order ``obs()`` / ``var()`` return them in).
- gene symbols: a ``var`` column (``"feature_name"`` in the Census), with the rules of
  :mod:`pairot.pp._counts` (a gene without a symbol keeps its id; several genes with one
  symbol are resolved in the first pass).

The experiment is only read, never written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import ImplicitModificationWarning
from scipy import sparse

from ._counts import PEEK_CELLS, CountsLocation, CountsSource, gene_names, suggested_counts
from ._reader import CountReader, to_csr
from ._validate import (  # is_soma_query: where pairot.pp._study looks for it
    argument_text,
    check_count_matrix,
    code_name,
    is_soma_query,
    part,
    study,
)

__all__ = ["is_soma_query", "open_soma_study"]

#: The X layer each counts location names (``layers/<name>``: the layer ``<name>``).
LAYER_OF = {"X": "data", "raw": "raw"}
#: Cells read when a query is opened to estimate its stored values (the chunks' size).
_SIZE_CELLS = 500
#: The id columns of a SOMA ``var`` used as gene names when the index column is missing.
_VAR_ID_FALLBACKS = ("feature_id",)


def _tiledbsoma():
    """The ``tiledbsoma`` module, imported now (``ImportError`` with the fix without it)."""
    try:
        import tiledbsoma
    except ImportError as err:  # pragma: no cover - a query cannot exist without it
        msg = 'reading a SOMA experiment needs the tiledbsoma package: pip install "pairot[soma]"'
        raise ImportError(msg) from err
    return tiledbsoma


def layer_name(location: CountsLocation) -> str:
    """The X layer of a SOMA measurement that ``location`` names."""
    return LAYER_OF.get(location.kind) or location.layer


def location_of(layer: str) -> CountsLocation:
    """The counts location (as an argument spells it) that names the X layer ``layer``."""
    for kind, name in LAYER_OF.items():
        if name == layer:
            return CountsLocation(kind)
    return CountsLocation("layer", layer)


def where_of(layer: str) -> str:
    """An X layer as a part of the study in messages: ``X['raw']``."""
    return f"X[{layer!r}]"


class SomaRows:
    """A row source (see :mod:`pairot.pp._reader`) over one X layer of a SOMA query: rows
    ``start:stop`` of the query's cells, every gene of the query, in the query's order.

    Only the stored values of a chunk's cells (and the query's genes) are read: contiguous
    ``soma_joinid`` runs as one range, others as a list of points.
    """

    def __init__(self, array, obs_joinids, var_joinids, description: str) -> None:
        tiledbsoma = _tiledbsoma()
        self._array = array
        self._obs = np.asarray(obs_joinids, dtype=np.int64)
        self._var = np.asarray(var_joinids, dtype=np.int64)
        self._var_coords = _coords(np.sort(self._var))
        self._obs_index = tiledbsoma.IntIndexer(self._obs)
        self._var_index = tiledbsoma.IntIndexer(self._var)
        self.shape = (self._obs.size, self._var.size)
        self.dtype = np.dtype(array.schema.field("soma_data").type.to_pandas_dtype())
        self.description = description
        self._stored_entries: int | None = None

    @property
    def stored_entries(self) -> int:
        """The stored values of the query's cells and genes, estimated from its first
        :data:`_SIZE_CELLS` cells (to size the chunks; a layer's own count of its values can
        mean a scan of the whole layer, and covers all of its cells and genes)."""
        if self._stored_entries is None:
            n_obs = self.shape[0]
            peek = min(n_obs, _SIZE_CELLS)
            stored = self._read(0, peek).nnz if peek else 0
            self._stored_entries = int(round(stored * n_obs / peek)) if peek else 0
        return self._stored_entries

    def pairot_rows(self, start: int, stop: int) -> sparse.csr_matrix:
        """Rows ``start:stop`` (positions in the query) as CSR over the query's genes."""
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> sparse.csr_matrix:
        """Rows ``start:stop`` of the query as CSR: the layer's values of those cells, read
        batch by batch and placed at their positions in the query."""
        ids = self._obs[start:stop]
        shape = (ids.size, self.shape[1])
        if ids.size == 0 or shape[1] == 0:
            return sparse.csr_matrix(shape, dtype=self.dtype)
        index = np.int32 if max(shape) < np.iinfo(np.int32).max else np.int64
        rows, cols, data = [], [], []
        for table in self._array.read(coords=(_coords(np.sort(ids)), self._var_coords)).tables():
            rows.append(
                (self._obs_index.get_indexer(table["soma_dim_0"].to_numpy()) - start).astype(index)
            )
            cols.append(self._var_index.get_indexer(table["soma_dim_1"].to_numpy()).astype(index))
            data.append(table["soma_data"].to_numpy().astype(self.dtype, copy=False))
            del table
        if not data:
            return sparse.csr_matrix(shape, dtype=self.dtype)
        rows, cols, data = (np.concatenate(parts) for parts in (rows, cols, data))
        if rows.size and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0):
            msg = "the layer returned values outside the cells and genes read"
            raise ValueError(msg)
        return sparse.coo_matrix((data, (rows, cols)), shape=shape).tocsr()


def _coords(ids: np.ndarray):
    """SOMA coordinates of sorted joinids: one (inclusive) slice for a run, else the points."""
    if ids.size and int(ids[-1]) - int(ids[0]) == ids.size - 1 and np.all(np.diff(ids) == 1):
        return slice(int(ids[0]), int(ids[-1]))
    return ids


def _frames(query, obsm: bool) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The query's ``obs`` and ``var`` (indexed by the names, without ``soma_joinid``, in the
    joinids' order) and its ``obsm`` arrays."""
    ms = query.experiment.ms[query.measurement_name]
    obsm_layers = list(ms["obsm"].keys()) if obsm and "obsm" in ms else []
    with warnings.catch_warnings():
        # anndata's note on the string index it makes of a default one (set below)
        warnings.filterwarnings("ignore", "Transforming to str index", ImplicitModificationWarning)
        adata = query.to_anndata(X_name=None, obsm_layers=obsm_layers, drop_levels=True)
    obs = _named(adata.obs, query.experiment.obs, query.obs_joinids(), ())
    var = _named(adata.var, ms.var, query.var_joinids(), _VAR_ID_FALLBACKS)
    # to_anndata reads obsm in the joinids' order already
    obsm_ = {key: np.asarray(value) for key, value in adata.obsm.items()}
    return obs, var, obsm_


def _named(frame: pd.DataFrame, df, joinids, fallbacks) -> pd.DataFrame:
    """``frame`` (a query's ``obs`` / ``var`` as ``to_anndata`` reads it) indexed by its names
    and in the order of ``joinids``, without ``soma_joinid``."""
    joinids = np.asarray(joinids, dtype=np.int64)
    frame = frame.copy()
    own = frame.pop("soma_joinid").to_numpy(np.int64)
    if not np.array_equal(own, joinids):
        order = pd.Index(own).get_indexer(joinids)
        frame = frame.iloc[order]
        own = own[order]
    # to_anndata set an id column as the index when the frame has one fewer column
    if len(frame.columns) + 1 == len(df.schema.names):
        for column in fallbacks:
            if column in frame.columns:
                frame.index = pd.Index(frame[column].astype(str).to_numpy(), name=None)
                frame = frame.drop(columns=column)
                break
        else:
            frame.index = pd.Index(own.astype(str))
    return frame


def open_soma_study(query, name, chunk_size, counts, symbols, arguments) -> dict:
    """The fields of the :class:`~pairot.pp._study.Study` of a SOMA query (its keyword
    arguments: :mod:`pairot.pp._study` builds it, this module does not import it): its counts'
    reader streaming the X layer ``counts`` names (see the module docstring), its ``obs``,
    ``var`` and ``obsm`` in memory, its gene names.

    ``arguments``: the names of the arguments that set ``counts`` and ``symbols`` (for
    messages, e.g. ``counts_adata1``, ``gene_symbols_adata1``).
    """
    _tiledbsoma()
    counts = CountsLocation("X") if counts is None else counts
    counts_arg, symbols_arg = arguments
    n_obs, n_vars = query.n_obs, query.n_vars
    if n_obs == 0 or n_vars == 0:
        msg = (
            f"{study(name, start=True)} is empty ({n_obs} cells x {n_vars} genes): its SOMA "
            "query selects no cells or no genes; check the query's value_filter / coords and "
            "pass a study with cells and genes."
        )
        raise ValueError(msg)
    layer = layer_name(counts)
    array = _x_layer(query, layer, name, counts, counts_arg)
    obs, var, obsm = _frames(query, obsm=True)
    if not var.index.is_unique:
        dup = var.index[var.index.duplicated()].unique()[:5].tolist()
        msg = (
            f"{part(name, 'var')} (a SOMA query) has duplicated gene names, e.g. {dup}; make "
            "them unique in the experiment, or query the genes without them."
        )
        raise ValueError(msg)
    source = _rows(query, array, layer)
    where = where_of(layer)
    check_count_matrix(source, name, where, counts_arg)
    names, ids = gene_names(
        CountsSource(source, None, None, var, where), None, symbols, name, symbols_arg
    )
    reader = CountReader(
        source,
        name=name,
        chunk_size=chunk_size,
        where=where,
        counts_fix=lambda: counts_fix(query, name, layer, counts_arg),
    )
    return {
        "name": name,
        "reader": reader,
        "obs": obs,
        "var": var,
        "obsm": obsm,
        "gene_names": names,
        "gene_ids": ids,
        "symbols": symbols,
    }


def _layers(query) -> list[str]:
    return list(query.experiment.ms[query.measurement_name].X.keys())


def _x_layer(query, layer: str, name: str, counts: CountsLocation, argument: str):
    """The sparse X layer ``layer`` of the query's measurement (``KeyError`` naming the
    argument and the layers that exist when it has none of that name)."""
    tiledbsoma = _tiledbsoma()
    layers = _layers(query)
    if layer not in layers:
        values = [location_of(key).value for key in layers]
        msg = (
            f"{argument_text(argument, counts.value)} but {study(name)} (a SOMA query of "
            f"measurement {query.measurement_name!r}) has no X layer {layer!r} (its X layers: "
            f"{layers}); pass one of {values} ({_naming_rule()})."
        )
        raise KeyError(msg)
    array = query.experiment.ms[query.measurement_name].X[layer]
    if not isinstance(array, tiledbsoma.SparseNDArray):
        msg = (
            f"{part(name, where_of(layer))} is a {type(array).__name__}; pairot reads the "
            "counts of a SOMA query from a sparse X layer (SparseNDArray)."
        )
        raise TypeError(msg)
    return array


def _naming_rule() -> str:
    return "'X' reads the X layer 'data', 'raw' the layer 'raw', 'layers/<name>' the layer <name>"


def _rows(query, array, layer: str) -> SomaRows:
    experiment = query.experiment
    description = (
        f"SOMA experiment {experiment.uri}, measurement {query.measurement_name!r}, X layer "
        f"{layer!r}"
    )
    return SomaRows(array, query.obs_joinids(), query.var_joinids(), description)


def counts_fix(query, name: str, current: str, argument: str) -> str:
    """What to do when the X layer ``current`` holds no counts: the option (``argument``)
    naming another X layer whose first cells hold non-negative integers, or else the general
    advice."""
    layers = _layers(query)

    def first_values(layer):
        array = _x_layer(query, layer, name, location_of(layer), argument)
        rows = _rows(query, array, layer)
        return to_csr(rows.pairot_rows(0, min(PEEK_CELLS, rows.shape[0]))).data

    candidates = (
        (where_of(layer), location_of(layer).value, lambda layer=layer: first_values(layer))
        for layer in layers
        if layer != current
    )
    suggestion = suggested_counts(name, argument, candidates)
    if suggestion is not None:
        return suggestion
    return (
        f"pass the X layer of unnormalized counts, e.g. {argument_text(argument, 'raw')} (the "
        f"CELLxGENE Census's layer 'raw') or {argument_text(argument, 'layers/counts')}; "
        f"{code_name(name)}'s X layers: {layers} ({_naming_rule()})"
    )
