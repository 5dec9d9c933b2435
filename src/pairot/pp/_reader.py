"""Row chunks of a study's count matrix, wherever it lives.

Every preprocessing step reads the counts through one :class:`CountReader`, whatever holds
them:

- in memory: a numpy array or a scipy.sparse matrix / array (other sparse formats than CSR
  are converted to CSR once);
- backed: ``anndata.read_h5ad(path, backed="r")`` (anndata's on-disk CSR / CSC datasets, or
  an h5py / zarr dense dataset), also a view of such an AnnData;
- lazy: a dask array (for example from ``anndata.experimental.read_lazy`` or
  ``read_elem_lazy``), with numpy or scipy.sparse chunks;
- a row source: any object with ``shape``, ``dtype``, ``stored_entries`` (an int),
  ``description`` (words for log messages) and ``pairot_rows(start, stop)`` returning those
  rows as a scipy.sparse matrix (a SOMA query's X layer, :mod:`pairot.pp._soma`).

A pass is :meth:`CountReader.map`: a function of one row chunk (a CSR matrix of all genes) and
of per-cell arrays sliced to the chunk's rows returns a small partial result; the caller
combines the partial results in row order. In memory and backed, chunks are read one after the
other in this process. With dask input each chunk is one dask task: a ``dask.distributed``
client, when one is active, runs them on its workers (that is how preprocessing spreads over
machines), otherwise dask's local scheduler does. At most a window of chunks is in flight, so
memory stays bounded by the chunk size, never by the matrix.

Functions given to :meth:`map` run on dask workers: they must be module-level (picklable) and
must not raise for bad data; they report what they found and the caller words the message.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import sparse

from .._interrupt import check as check_interrupt
from .._logging import logger
from ._validate import part

#: Stored entries (non-zeros, or values of a dense matrix) read at once by default.
CHUNK_ENTRIES = 1 << 24
#: The largest integer up to which float16 holds every integer (above it every 2nd, then
#: every 4th, ...; at most 65504).
FLOAT16_EXACT_MAX = 2048


def _is_dask(X) -> bool:
    """A dask array, also anndata's view of one (a subclass)."""
    return hasattr(X, "to_delayed") and any(
        cls.__module__.split(".")[0] == "dask" for cls in type(X).__mro__
    )


def _is_backed_sparse(X) -> bool:
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata._core.sparse_dataset import BaseCompressedSparseDataset

        return isinstance(X, BaseCompressedSparseDataset)
    return isinstance(X, CSRDataset | CSCDataset)


def _is_row_source(X) -> bool:
    return callable(getattr(X, "pairot_rows", None))


def _is_backed_dense(X) -> bool:
    module = type(X).__module__.split(".")[0]
    return module in ("h5py", "zarr") and hasattr(X, "shape") and hasattr(X, "dtype")


def _index_array(index, n: int) -> np.ndarray | None:
    """``None`` for all of ``range(n)``, else the selected positions as an int64 array."""
    if index is None:
        return None
    if isinstance(index, slice):
        positions = np.arange(n)[index]
    else:
        positions = np.asarray(index)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64)
    if positions.size == n and np.array_equal(positions, np.arange(n)):
        return None
    return positions


def _file_of(X) -> str | None:
    for attribute in ("group", "file"):
        obj = getattr(X, attribute, None)
        filename = getattr(getattr(obj, "file", obj), "filename", None)
        if filename:
            return str(filename)
    return None


class UnreadableChunk(ValueError):
    """A chunk's stored sparse structure is inconsistent (a corrupt file)."""


def _check_structure(block) -> None:
    """Raise :class:`UnreadableChunk` unless a CSR / CSC block's arrays are consistent."""
    indptr, indices = block.indptr, block.indices
    n_minor = block.shape[1] if block.format == "csr" else block.shape[0]
    if indptr.size != (block.shape[0] if block.format == "csr" else block.shape[1]) + 1:
        msg = f"its index pointer has {indptr.size} entries for shape {block.shape}"
        raise UnreadableChunk(msg)
    if indptr.size and (
        indptr[0] != 0 or indptr[-1] != indices.size or indices.size != block.data.size
    ):
        msg = "its index pointer does not match its stored entries"
        raise UnreadableChunk(msg)
    if np.any(np.diff(indptr) < 0):
        msg = "its index pointer decreases"
        raise UnreadableChunk(msg)
    if indices.size and (indices.min() < 0 or indices.max() >= n_minor):
        msg = f"it stores entries at positions outside 0..{n_minor - 1}"
        raise UnreadableChunk(msg)


def to_csr(block) -> sparse.csr_matrix:
    """A chunk as a canonical scipy CSR matrix (numpy, np.matrix or any scipy.sparse).

    Raises :class:`UnreadableChunk` when a sparse block's stored structure is inconsistent.
    """
    if sparse.issparse(block):
        if block.format in ("csr", "csc"):
            _check_structure(block)
        block = sparse.csr_matrix(block)
    else:
        block = np.asarray(block)
        if block.dtype == np.float16:  # scipy.sparse has no float16; float32 holds it exactly
            block = block.astype(np.float32)
        block = sparse.csr_matrix(block)
    if not block.has_canonical_format:
        block = block.copy()
        block.sum_duplicates()
    return block


def _csr_rows(X, start: int, stop: int, genes) -> sparse.csr_matrix:
    """Rows ``start:stop`` of an in-memory CSR matrix as views of its arrays (no copy; scipy's
    own slicing copies, and converts every index array when indptr and indices differ in
    dtype, as in matrices read from CELLxGENE files)."""
    lo, hi = int(X.indptr[start]), int(X.indptr[stop])
    indptr = X.indptr[start : stop + 1] - lo
    if hi - lo < np.iinfo(X.indices.dtype).max:  # one index dtype for scipy's routines
        indptr = indptr.astype(X.indices.dtype, copy=False)
    block = sparse.csr_matrix((stop - start, X.shape[1]), dtype=X.dtype)
    block.data, block.indices, block.indptr = X.data[lo:hi], X.indices[lo:hi], indptr
    block = to_csr(block)
    return block if genes is None else to_csr(block[:, genes])


class CountReader:
    """Row chunks of a cells x genes count matrix held in memory, on disk or by dask.

    Parameters
    ----------
    X
        The matrix (see the module docstring for what is accepted).
    name
        The study's name in messages (``"adata1"``).
    chunk_size
        Rows per chunk; by default about :data:`CHUNK_ENTRIES` stored entries' worth of rows.
        With dask input the array's own row chunks are used unless ``chunk_size`` is given
        (then it is rechunked to it).
    rows, genes
        Positions of the cells and genes to read (a view of a backed AnnData); all by default.
    """

    def __init__(
        self,
        X,
        *,
        name: str,
        chunk_size: int | None = None,
        rows=None,
        genes=None,
        where: str = "X",
        counts_fix: Callable[[], str] | None = None,
    ) -> None:
        self.name = name
        #: Where the matrix is in the study, as messages name it: ``X``, ``raw.X``, a layer.
        self.where = where
        self._counts_fix = counts_fix
        self.file = None
        if _is_dask(X):
            self.kind = "dask"
        elif _is_row_source(X):
            self.kind = "source"
            if rows is not None or genes is not None:
                msg = "a row source reads all its rows and genes (rows=None, genes=None)"
                raise ValueError(msg)
        elif _is_backed_sparse(X) or _is_backed_dense(X):
            self.kind = "backed"
            self.file = _file_of(X)
        else:
            self.kind = "memory"
            if sparse.issparse(X):
                if X.format != "csr":
                    X = sparse.csr_matrix(X)
            else:
                X = np.asarray(X)
        n_rows, n_cols = X.shape
        self._rows = _index_array(rows, n_rows)
        self._genes = _index_array(genes, n_cols)
        if self.kind == "dask":
            if self._rows is not None:
                X = X[self._rows]
            if self._genes is not None:
                X = X[:, self._genes]
            self._rows = self._genes = None
        self.X = X
        #: The dtype of the values as stored, and as read: float16 is read as float32 (exactly:
        #: scipy.sparse has no float16), every other dtype as it is.
        self.stored_dtype = np.dtype(X.dtype)
        self.dtype = self.stored_dtype
        if self.stored_dtype == np.float16:
            if _is_backed_sparse(X):
                msg = (
                    f"{part(name, where)} is a sparse matrix of float16 values on disk, which "
                    "scipy.sparse (and so anndata) cannot read. Rewrite its values as float32, "
                    "e.g. with h5py: f = h5py.File(path, 'r+'); data = f['X/data'][:]; "
                    "del f['X/data']; f['X'].create_dataset('data', data=data.astype('float32'))."
                )
                raise TypeError(msg)
            self.dtype = np.dtype(np.float32)
            logger.info("%s holds float16 values; they are read as float32.", part(name, where))
        self.shape = (
            n_rows if self._rows is None else self._rows.size,
            n_cols if self._genes is None else self._genes.size,
        )
        if self.kind == "backed" and getattr(X, "format", "csr") == "csc":
            logger.warning(
                "%s is stored column by column (CSC) on disk; reading it by cells reads the "
                "whole matrix for every chunk and is slow. Rewrite the file as CSR for speed, "
                "e.g. adata.X = scipy.sparse.csr_matrix(adata.X) before write_h5ad.",
                part(name, where),
            )
        self._bounds = self._chunk_bounds(chunk_size)

    def counts_fix(self) -> str:
        """What to do when the matrix holds no counts, as a clause: where the study's counts
        are instead, when that is known."""
        if self._counts_fix is not None:
            return self._counts_fix()
        return "pass the unnormalized counts, e.g. from a layer or raw"

    # -- planning ---------------------------------------------------------------------------

    def _stored_entries(self) -> int:
        X = self.X
        if sparse.issparse(X):
            return X.nnz
        if self.kind == "source":
            return int(X.stored_entries)
        if _is_backed_sparse(X):
            return int(X.group["data"].shape[0])
        return X.shape[0] * X.shape[1]

    def _chunk_bounds(self, chunk_size: int | None) -> np.ndarray:
        n = self.shape[0]
        if self.kind == "dask":
            if chunk_size is not None:
                self.X = self.X.rechunk({0: int(chunk_size)})
            sizes = self.X.chunks[0]
            return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if chunk_size is None:
            per_row = self._stored_entries() / max(1, self.X.shape[0])
            chunk_size = int(max(1, min(n, CHUNK_ENTRIES // max(1.0, per_row))))
        chunk_size = max(1, int(chunk_size))
        return np.unique(np.r_[np.arange(0, n, chunk_size), n]).astype(np.int64)

    @property
    def n_chunks(self) -> int:
        """Number of row chunks of a pass."""
        return self._bounds.size - 1

    @property
    def chunk_rows(self) -> int:
        """Rows of the largest chunk."""
        return int(np.diff(self._bounds).max(initial=0))

    @property
    def dense(self) -> bool:
        """Whether the matrix is dense (then the preprocessed counts are dense too)."""
        if self.kind == "dask":
            return not sparse.issparse(getattr(self.X, "_meta", None))
        if self.kind == "source":
            return False
        return not (sparse.issparse(self.X) or _is_backed_sparse(self.X))

    @property
    def source(self) -> str:
        """Where the counts are read from, in words (for log messages)."""
        if self.kind == "backed":
            return f"backed file {self.file}" if self.file else "a backed file"
        if self.kind == "source":
            return str(self.X.description)
        return "dask array" if self.kind == "dask" else "memory"

    # -- reading ----------------------------------------------------------------------------

    def _read(self, start: int, stop: int) -> sparse.csr_matrix:
        """Rows ``start:stop`` (of the selected rows) as CSR, every selected gene."""
        X = self.X
        if self.kind == "memory" and sparse.issparse(X) and self._rows is None:
            return _csr_rows(X, start, stop, self._genes)
        try:
            if self.kind == "source":
                return to_csr(X.pairot_rows(start, stop))
            if self._rows is None:
                block = X[start:stop]
            else:
                block = X[self._rows[start:stop]]
            if self._genes is not None:
                block = block[:, self._genes]
            return to_csr(block)
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            if self.kind not in ("backed", "source") and not isinstance(err, UnreadableChunk):
                raise
            raise self._unreadable(start, stop, err) from err

    def _unreadable(self, start: int, stop: int, err: Exception) -> OSError:
        where = f" in {self.file}" if self.file else ""
        msg = (
            f"cannot read cells {start}..{stop - 1} of {part(self.name, self.where)}{where}: "
            f"{type(err).__name__}: {err}. The file looks truncated or corrupt; write it "
            "again or download it again."
        )
        return OSError(msg)

    def map(
        self,
        func: Callable,
        *,
        per_row: Sequence[np.ndarray] = (),
        shared: Sequence = (),
    ) -> Iterator[tuple[int, int, object]]:
        """Apply ``func(chunk, *per_row_slices, *shared)`` to every row chunk, in row order.

        Yields ``(start, stop, result)``. ``per_row`` arrays (one value per cell) are sliced to
        each chunk's rows; ``shared`` objects are passed whole (sent once to dask workers).
        Interruptible between chunks.
        """
        bounds = self._bounds
        if self.kind == "dask":
            yield from self._map_dask(func, per_row, shared)
            return
        for start, stop in zip(bounds[:-1], bounds[1:]):
            check_interrupt()
            chunk = self._read(int(start), int(stop))
            yield int(start), int(stop), func(chunk, *(a[start:stop] for a in per_row), *shared)
            del chunk

    def _map_dask(self, func, per_row, shared) -> Iterator[tuple[int, int, object]]:
        import dask

        X = self.X
        if X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        blocks = X.to_delayed()[:, 0]
        bounds = self._bounds
        shared_keys = [dask.delayed(value, pure=True) for value in shared]
        run = dask.delayed(_run_chunk, pure=True)
        tasks = [
            run(func, block, *(a[s:e] for a in per_row), *shared_keys)
            for block, s, e in zip(blocks, bounds[:-1], bounds[1:])
        ]
        yield from self._checked(self._run_dask(tasks, bounds))

    def _checked(self, results):
        for s, e, result in results:
            if isinstance(result, UnreadableChunk):
                raise self._unreadable(s, e, result)
            yield s, e, result

    def _run_dask(self, tasks, bounds):
        import dask

        client = _distributed_client()
        window = _window(client)
        spans = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        if client is not None:
            pending: deque = deque()
            try:
                for i, task in enumerate(tasks):
                    pending.append((spans[i], client.compute(task)))
                    while len(pending) >= window:
                        (s, e), future = pending.popleft()
                        yield s, e, _result(future)
                while pending:
                    (s, e), future = pending.popleft()
                    yield s, e, _result(future)
            finally:
                for _, future in pending:
                    future.cancel()
            return
        for first in range(0, len(tasks), window):
            check_interrupt()
            results = dask.compute(*tasks[first : first + window])
            for (s, e), result in zip(spans[first : first + window], results):
                yield s, e, result


def _run_chunk(func, block, *args):
    try:
        chunk = to_csr(block)
    except UnreadableChunk as err:  # reported by the caller, with the study's name
        return err
    return func(chunk, *args)


def _result(future):
    while True:
        check_interrupt()
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            continue


def _distributed_client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client
        return None


def _window(client) -> int:
    """Chunks in flight at once: twice the worker threads (or local cores), at least 2."""
    threads = os.cpu_count() or 1
    if client is not None:
        try:
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        except Exception:  # noqa: BLE001 - any failure: fall back to the local core count
            threads = os.cpu_count() or 1
    return max(2, 2 * threads)
