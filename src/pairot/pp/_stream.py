"""The streamed passes of preprocessing: what each row chunk contributes, and how it adds up.

One pass over a study's rows (:meth:`CountReader.map`) computes, per chunk, whatever its
:class:`PassSpec` asks for:

- ``scan``: the count checks (non-finite, negative, fractional values) and the genes' totals;
- ``pseudobulk``: the chunk's contribution to every (sample, cluster) profile's summed counts
  over the genes ``gene_index``;
- ``hvg``: the chunk's cells of the HVG subsample, over ``gene_index``, as float32 counts;
- ``auroc``: the chunk's cells of the AUROC subsample, over ``gene_index``, normalized to 1e4
  counts per cell (over ``gene_index``) as float32, placed by gene with each cell's cluster
  code (:class:`AurocBuilder`);
- ``output``: all of the chunk's cells at the genes ``output_index`` (the preprocessed study).

:func:`run_pass` runs the pass and combines the chunk results into a :class:`PassResult`:
partial sums are added into dense accumulators, subsample rows are kept as compact chunks, and
the first bad value found is reported as the message a user reads. Chunk functions only
compute (they run on dask workers, where the caller's message context does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from .._logging import logger
from .._numba import njit_serial
from ._auroc import LabelledColumns, code_dtype_for
from ._reader import FLOAT16_EXACT_MAX, CountReader
from ._validate import part

#: Every cell of the AUROC subsample is scaled to this many counts (over the tested genes).
AUROC_TARGET_SUM = 1e4


@dataclass(frozen=True)
class PassSpec:
    """What one pass computes (see the module docstring)."""

    scan: bool = False
    gene_index: np.ndarray | None = None
    n_profiles: int = 0
    hvg: bool = False
    auroc: bool = False
    auroc_counts: bool = False
    output_index: np.ndarray | None = None
    output_dense: bool = False

    @property
    def pseudobulk(self) -> bool:
        return self.n_profiles > 0


@dataclass
class ChunkResult:
    """What one chunk contributes (computed where the chunk is, e.g. on a dask worker)."""

    totals: np.ndarray | None = None
    nonfinite: bool = False
    minimum: float = 0.0
    fractional: float | None = None
    n_fractional: int = 0
    n_nonzero: int = 0
    maximum: float = 0.0
    total_min: float = np.inf
    total_max: float = 0.0
    profiles: np.ndarray | None = None
    profile_sums: sparse.csr_matrix | None = None
    hvg: sparse.csr_matrix | None = None
    auroc: sparse.csr_matrix | None = None
    auroc_counts: np.ndarray | None = None
    output: object = None


def _columns(chunk: sparse.csr_matrix, index: np.ndarray | None) -> sparse.csr_matrix:
    if index is None:
        return chunk
    return chunk[:, index]


def _float32(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    if matrix.dtype == np.float32:
        return matrix
    return sparse.csr_matrix(
        (matrix.data.astype(np.float32), matrix.indices, matrix.indptr), shape=matrix.shape
    )


def _normalized(sub: sparse.csr_matrix, target_sum: float) -> sparse.csr_matrix:
    """Each row scaled to ``target_sum`` (rows without counts stay zero), float32."""
    data = sub.data.astype(np.float64)
    row_of = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    totals = np.bincount(row_of, weights=data, minlength=sub.shape[0]).astype(np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    values = (data * scale[row_of]).astype(np.float32)
    return sparse.csr_matrix((values, sub.indices, sub.indptr), shape=sub.shape)


@njit_serial
def _scatter_profiles(indptr, indices, data, profile, column_of, acc):  # pragma: no cover
    """``acc[profile[r], column_of[j]] += X[r, j]`` over a CSR chunk (-1 codes skipped)."""
    for r in range(indptr.size - 1):
        p = profile[r]
        if p < 0:
            continue
        target = acc[p]
        for k in range(indptr[r], indptr[r + 1]):
            col = column_of[indices[k]]
            if col >= 0:
                target[col] += data[k]


def chunk_work(
    chunk: sparse.csr_matrix,
    profile: np.ndarray,
    take_hvg: np.ndarray,
    take_auroc: np.ndarray,
    spec: PassSpec,
    accumulator: tuple | None = None,
) -> ChunkResult:
    """One chunk's part of a pass; ``profile`` is each row's profile code (-1: none).

    With ``accumulator = (column_of, sums)`` (a pass in this process) the chunk's counts are
    added into the profiles' sums directly; without (on a dask worker) its partial sums are
    returned.
    """
    result = ChunkResult()
    data = chunk.data
    if spec.scan:
        floating = not np.issubdtype(data.dtype, np.integer) and data.dtype != bool
        if floating and data.size and not np.isfinite(data).all():
            result.nonfinite = True
            return result
        if data.size:
            result.minimum = float(data.min())
            result.maximum = float(data.max())
            result.n_nonzero = int(np.count_nonzero(data))
        if floating and data.size:
            fractional = data != np.rint(data)
            result.n_fractional = int(np.count_nonzero(fractional))
            if result.n_fractional:
                result.fractional = float(data[fractional][0])
                cell_totals = np.asarray(chunk.sum(axis=1), dtype=np.float64).ravel()
                cell_totals = cell_totals[cell_totals > 0]
                if cell_totals.size:
                    result.total_min = float(cell_totals.min())
                    result.total_max = float(cell_totals.max())
        result.totals = np.bincount(
            chunk.indices, weights=data.astype(np.float64), minlength=chunk.shape[1]
        ).astype(np.float64)
    if spec.pseudobulk and accumulator is not None:
        column_of, sums = accumulator
        _scatter_profiles(
            chunk.indptr.astype(np.int64, copy=False),
            chunk.indices.astype(np.int64, copy=False),
            data.astype(np.float64, copy=False),
            profile.astype(np.int64, copy=False),
            column_of,
            sums,
        )
    elif spec.pseudobulk:
        kept = np.flatnonzero(profile >= 0)
        if kept.size:
            profiles, local = np.unique(profile[kept], return_inverse=True)
            indicator = sparse.csr_matrix(
                (np.ones(kept.size), (local, kept)), shape=(profiles.size, chunk.shape[0])
            )
            sums = indicator @ chunk
            result.profiles = profiles
            result.profile_sums = _columns(sparse.csr_matrix(sums), spec.gene_index)
    if spec.hvg and take_hvg.any():
        sub = _columns(chunk[take_hvg], spec.gene_index)
        result.hvg = _float32(sub)
    if (spec.auroc or spec.auroc_counts) and take_auroc.any():
        sub = _columns(chunk[take_auroc], spec.gene_index)
        if spec.auroc_counts:
            result.auroc_counts = np.bincount(sub.indices, minlength=sub.shape[1])
        if spec.auroc:
            result.auroc = _normalized(sub, AUROC_TARGET_SUM)
    if spec.output_index is not None:
        out = chunk[:, spec.output_index]
        result.output = out.toarray() if spec.output_dense else out
    return result


#: Fractional values whose study's largest value is below this look log-transformed: log1p of
#: counts per 10,000 stays below 9.3, log1p of counts per million below 13.9 and log2 of
#: counts per million + 1 below 20; a count-scale study has genes with far more UMIs in a cell.
LOG_SCALE_MAX = 30.0
#: Fractional values whose cells all have the same total, to this relative spread, look
#: normalized to a fixed total (``normalize_total`` without ``log1p``).
EQUAL_TOTALS_SPREAD = 1e-3


@dataclass
class CountSummary:
    """What the scan of a whole study saw of its values, to judge fractional counts."""

    n_fractional: int = 0
    n_nonzero: int = 0
    example: float | None = None
    maximum: float = 0.0
    total_min: float = np.inf
    total_max: float = 0.0

    def add(self, result: ChunkResult) -> None:
        self.n_fractional += result.n_fractional
        self.n_nonzero += result.n_nonzero
        if self.example is None and result.fractional is not None:
            self.example = result.fractional
        self.maximum = max(self.maximum, result.maximum)
        self.total_min = min(self.total_min, result.total_min)
        self.total_max = max(self.total_max, result.total_max)

    def check(self, reader: CountReader) -> None:
        """Raise when fractional values look log-transformed or normalized; warn when they
        look like counts on a count scale (corrected or rebuilt counts); nothing for
        integers."""
        if not self.n_fractional:
            return
        dtype = reader.dtype
        where = part(reader.name, reader.where)
        example = np.asarray(self.example, dtype=dtype).item()
        maximum = np.asarray(self.maximum, dtype=dtype).item()
        seen = (
            f"{where} contains non-integer values (e.g. {example:.6g}; {self.n_fractional:,} of "
            f"its {self.n_nonzero:,} non-zero values)"
        )
        if self.maximum < LOG_SCALE_MAX:
            msg = (
                f"{seen} and its largest value is {maximum:.4g}: it looks log-transformed. "
                f"pairot needs counts: {reader.counts_fix()}."
            )
            raise ValueError(msg)
        spread = (self.total_max - self.total_min) / self.total_max
        if np.isfinite(spread) and spread < EQUAL_TOTALS_SPREAD and self.total_min < np.inf:
            msg = (
                f"{seen} and every cell sums to {self.total_max:.6g}: it looks normalized to "
                f"a fixed total per cell. pairot needs counts: {reader.counts_fix()}."
            )
            raise ValueError(msg)
        logger.warning(
            "%s; its values reach %.4g and cell totals range from %.4g to %.4g, so pairot "
            "reads them as counts on a count scale (e.g. ambient-RNA-corrected counts, or "
            "counts rebuilt from normalized data). If they are normalized values, %s "
            "instead.",
            seen,
            maximum,
            self.total_min,
            self.total_max,
            reader.counts_fix(),
        )


@dataclass
class PassResult:
    """A pass's combined results."""

    totals: np.ndarray | None = None
    profile_sums: np.ndarray | None = None
    hvg: list = field(default_factory=list)
    auroc_counts: np.ndarray | None = None
    output: list = field(default_factory=list)


def count_error(result: ChunkResult, reader: CountReader) -> ValueError | None:
    """The message for a chunk's first bad value, or ``None`` (the checks' order: non-finite,
    negative; fractional values are judged over the whole study, :class:`CountSummary`).
    A stored float16 adds that float16 overflows to infinity above 65504."""
    where = part(reader.name, reader.where)
    dtype, stored_dtype = reader.dtype, reader.stored_dtype
    if result.nonfinite:
        overflow = (
            " float16 holds at most 65504: larger counts become infinite when converted to "
            "it, so keep the counts in float32 or an integer dtype."
            if stored_dtype is not None and np.dtype(stored_dtype) == np.float16
            else ""
        )
        msg = (
            f"{where} contains NaN or infinite values; pairot needs raw UMI counts "
            f"(finite non-negative integers): {reader.counts_fix()}.{overflow}"
        )
        return ValueError(msg)
    if result.minimum < 0:
        minimum = np.asarray(result.minimum, dtype=dtype).item()
        msg = (
            f"{where} contains negative values (min {minimum}); pairot needs raw "
            "UMI counts, not scaled or centered data."
        )
        return ValueError(msg)
    return None


def run_pass(
    reader: CountReader,
    spec: PassSpec,
    *,
    profile: np.ndarray | None = None,
    take_hvg: np.ndarray | None = None,
    take_auroc: np.ndarray | None = None,
    auroc_into: AurocBuilder | None = None,
) -> PassResult:
    """Run one pass of ``spec`` over ``reader`` and combine its chunks' results.

    A pass with ``spec.auroc`` places the AUROC subsample's rows into ``auroc_into`` (sized
    by the column counts of an earlier ``auroc_counts`` pass) as each chunk arrives.
    """
    if spec.auroc and auroc_into is None:
        msg = "a pass with spec.auroc needs auroc_into, the AurocBuilder its rows go to."
        raise ValueError(msg)
    n_cells, n_genes = reader.shape
    none = np.zeros(n_cells, dtype=bool)
    profile = np.full(n_cells, -1, dtype=np.int64) if profile is None else profile
    take_hvg = none if take_hvg is None else take_hvg
    take_auroc = none if take_auroc is None else take_auroc
    out = PassResult()
    summary = CountSummary()
    if spec.scan:
        out.totals = np.zeros(n_genes, dtype=np.float64)
    if spec.pseudobulk:
        width = n_genes if spec.gene_index is None else spec.gene_index.size
        out.profile_sums = np.zeros((spec.n_profiles, width), dtype=np.float64)
    shared: tuple = (spec,)
    if spec.pseudobulk and reader.kind != "dask":
        column_of = np.full(n_genes, -1, dtype=np.int64)
        index = np.arange(n_genes) if spec.gene_index is None else spec.gene_index
        column_of[index] = np.arange(index.size)
        shared = (spec, (column_of, out.profile_sums))
    for _start, _stop, result in reader.map(
        chunk_work, per_row=(profile, take_hvg, take_auroc), shared=shared
    ):
        if spec.scan:
            error = count_error(result, reader)
            if error is not None:
                raise error
            summary.add(result)
            out.totals += result.totals
        if result.profile_sums is not None:  # a dask worker's partial sums: add them up
            sums = result.profile_sums
            _scatter_profiles(
                sums.indptr.astype(np.int64),
                sums.indices.astype(np.int64),
                sums.data.astype(np.float64, copy=False),
                result.profiles.astype(np.int64),
                np.arange(sums.shape[1], dtype=np.int64),
                out.profile_sums,
            )
        if result.hvg is not None:
            out.hvg.append(result.hvg)
        if result.auroc is not None:
            auroc_into.add(result.auroc)
        if result.auroc_counts is not None:
            if out.auroc_counts is None:
                out.auroc_counts = np.zeros(result.auroc_counts.size, dtype=np.int64)
            out.auroc_counts += result.auroc_counts
        if result.output is not None:
            out.output.append(result.output)
    if spec.scan:
        summary.check(reader)
        if reader.stored_dtype == np.float16 and summary.maximum > FLOAT16_EXACT_MAX:
            logger.warning(
                "%s holds float16 values up to %d; float16 holds every integer only up to "
                "%d (above it every 2nd, then every 4th, ...), so counts above %d may have "
                "been rounded when X was converted to float16. pairot reads them as they are; "
                "for exact counts rebuild X from the original counts in float32 or an integer "
                "dtype.",
                part(reader.name, reader.where),
                int(summary.maximum),
                FLOAT16_EXACT_MAX,
                FLOAT16_EXACT_MAX,
            )
    return out


def stack_rows(parts: list, n_cols: int, dtype, *, dense: bool = False):
    """Concatenate row chunks (CSR or dense), emptying ``parts`` as it goes."""
    if dense:
        if not parts:
            return np.zeros((0, n_cols), dtype=dtype)
        result = np.concatenate(parts, axis=0)
        parts.clear()
        return result
    n_rows = sum(p.shape[0] for p in parts)
    nnz = sum(p.nnz for p in parts)
    index_dtype = np.int32 if max(nnz, n_cols) < 2**31 else np.int64
    indptr = np.zeros(n_rows + 1, dtype=np.int64 if nnz >= 2**31 else index_dtype)
    data = np.empty(nnz, dtype=dtype)
    indices = np.empty(nnz, dtype=index_dtype)
    row = pos = 0
    while parts:
        p = parts.pop(0)
        k = p.shape[0]
        indptr[row + 1 : row + k + 1] = pos + p.indptr[1:]
        data[pos : pos + p.nnz] = p.data
        indices[pos : pos + p.nnz] = p.indices
        row += k
        pos += p.nnz
        del p
    return sparse.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


@njit_serial
def _scatter_columns(indptr, indices, data, row_codes, next_free, out_codes, out_data):
    """Place a CSR chunk's entries into preallocated per-gene arrays: each entry's value and
    the cluster code of its row (``row_codes``: the chunk's rows)."""
    for r in range(indptr.size - 1):  # pragma: no cover - numba
        code = row_codes[r]
        for p in range(indptr[r], indptr[r + 1]):
            col = indices[p]
            q = next_free[col]
            out_codes[q] = code
            out_data[q] = data[p]
            next_free[col] = q + 1


class AurocBuilder:
    """The AUROC subsample as :class:`LabelledColumns`, filled from CSR row chunks in row
    order, in place.

    ``col_counts`` (stored entries per gene, counted in an earlier pass) sizes the arrays once;
    every chunk is placed as it arrives, so no chunk list is held beside the result. Each
    entry keeps its float32 value and its cell's cluster code (``row_codes``, one per
    subsample row, in row order) in the smallest unsigned type that holds the codes: the AUROC
    needs no more of a cell, so at most 5 bytes per entry (below 256 clusters) instead of a
    CSC matrix's 8.
    """

    def __init__(self, col_counts: np.ndarray, row_codes: np.ndarray, n_clusters: int) -> None:
        self.indptr = np.concatenate([[0], np.cumsum(col_counts)]).astype(np.int64)
        code_dtype = code_dtype_for(n_clusters)
        self.row_codes = np.asarray(row_codes).astype(code_dtype)
        self.codes = np.empty(self.indptr[-1], dtype=code_dtype)
        self.data = np.empty(self.indptr[-1], dtype=np.float32)
        self.next_free = self.indptr[:-1].copy()
        self.n_rows = self.row_codes.size
        self.n_clusters = n_clusters
        self.offset = 0

    def add(self, part: sparse.csr_matrix) -> None:
        counts = np.bincount(part.indices, minlength=self.next_free.size)
        if (
            counts.size != self.next_free.size
            or self.offset + part.shape[0] > self.n_rows
            or np.any(self.next_free + counts > self.indptr[1:])
        ):
            raise _changed_between_passes()
        _scatter_columns(
            part.indptr.astype(np.int64),
            part.indices.astype(np.int64),
            part.data.astype(np.float32, copy=False),
            self.row_codes[self.offset : self.offset + part.shape[0]],
            self.next_free,
            self.codes,
            self.data,
        )
        self.offset += part.shape[0]

    def result(self) -> LabelledColumns:
        if self.offset != self.n_rows or not np.array_equal(self.next_free, self.indptr[1:]):
            raise _changed_between_passes()
        sizes = np.bincount(self.row_codes, minlength=self.n_clusters).astype(np.int64)
        columns = LabelledColumns(self.data, self.codes, self.indptr, sizes)
        self.data = self.codes = None  # the result owns them
        return columns


def _changed_between_passes() -> RuntimeError:
    msg = (
        "the counts changed between two passes over them (a file rewritten while pairot "
        "read it?); run again."
    )
    return RuntimeError(msg)
