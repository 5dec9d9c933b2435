"""Atlas-scale simulated pair of single-cell studies, written to h5ad without holding a matrix.

Run by hand (not by CI)::

    python benchmarks/atlas_data.py --scale seed --out /tmp/pairot_seed/seed
    python benchmarks/atlas_data.py --cells-query 20000 --cells-reference 40000 --out DIR

or import it (``write_pair``, ``simulate_pair_in_memory``, ``SIZES``). ``DIR`` receives
``query.h5ad``, ``reference.h5ad`` and ``atlas_data.json`` (the parameters, the truth: shared
types and marker genes, and the measured figures); a second call with the same parameters finds
the json and the files and does nothing.

Model (per study, 20,000 genes ``GENE00001``...): a baseline over genes with log-normal
proportions (sd 2.6, clipped at the 99th percentile) plus 100 "housekeeping" genes taking a
quarter of the UMIs with Zipf-like shares, a per-study gene effect, cell types ``T00``... with
a small type-specific deviation on every gene plus 20-50 disjoint up-regulated marker genes
with log2 fold changes 1-3; types shared by both studies share their profile (and markers).
Each sample (donor) multiplies every gene by a clipped log-normal effect, each cell gets a
log-normal library size (type, sample and cell factors; the mean is calibrated so that the mean
number of non-zero genes per cell is ``nnz_per_cell``: about 3,700 UMIs for 1,500 genes), and
counts are gamma-Poisson (per-gene dispersion) for the genes whose expected count in the type
reaches 0.5 and Poisson for the others. Cells are in random order; every type is present in
nearly every sample, with unequal type proportions (a few rare types) and per-sample
composition noise.

Counts are drawn sparsely, chunk by chunk, by a numba kernel: a cell's well-expressed genes get
one gamma and one Poisson draw each; for the others the cell draws ``Poisson(L * rate)`` UMIs
from its type's distribution over those genes (alias table, O(1) per UMI), thinned by the
donor effect, and duplicates are collapsed to counts. Two threads draw chunks while the main
thread appends them to resizable h5py datasets in anndata's on-disk CSR layout (float32 data,
int32 indices, int64 indptr, uncompressed, 2**20-element chunks), so the resident memory is a
few chunks whatever the number of cells. Each chunk's generator comes from the seed's
``SeedSequence`` and the chunk number: the draws depend on ``seed`` and ``chunk_cells`` only
(not on the number of threads).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

try:
    from anndata.io import write_elem
except ImportError:  # pragma: no cover - anndata < 0.11
    from anndata.experimental import write_elem

#: Preset sizes, (query cells, reference cells), for ``--scale``.
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (3_000, 5_000),
    "small": (20_000, 40_000),
    "q100k_r200k": (100_000, 200_000),
    "200k": (200_000, 200_000),
    "q200k_r400k": (200_000, 400_000),
    "q300k_r600k": (300_000, 600_000),
    "seed": (600_929, 1_265_624),
}

#: Bumped whenever a change alters the files written for the same parameters.
FORMAT_VERSION = 1

# Default cells per generation chunk. Part of the random stream (each chunk has a generator).
CHUNK_CELLS = 16_384
# h5py chunk size (elements) of X/data and X/indices.
H5_CHUNK = 2**20
# A gene is drawn gamma-Poisson ("dense") when its expected count at the study's mean library
# size reaches this in some cell type; below, overdispersion hardly changes the variance and
# the gene is drawn Poisson from the sparse UMI sampler.
_DENSE_MU = 0.5
# Baseline: log proportions ~ N(0, _BASELINE_LOG_SD), clipped at their 99th percentile, plus
# _N_HOUSEKEEPING random genes (ribosomal / mitochondrial / MALAT1-like) that take
# _HOUSEKEEPING_SHARE of the UMIs with Zipf-like shares (the first one about 5%).
_BASELINE_LOG_SD = 2.6
_N_HOUSEKEEPING = 100
_HOUSEKEEPING_SHARE = 0.25
# Marker genes are drawn among the genes ranked (by baseline) in this window: expressed
# enough to be detected, not the housekeeping genes.
_MARKER_RANKS = (_N_HOUSEKEEPING, 6_000)
_MARKERS_PER_TYPE = (20, 50)
_MARKER_LOG2FC = (1.0, 3.0)
_TYPE_LOG_SD = 0.15  # type-specific deviation on every gene (natural log)
_STUDY_LOG_SD = 0.1  # per-study gene effect (natural log)
_DONOR_LOG_SD = 0.15  # per-sample gene effect (natural log), clipped at 2 sd
_DISPERSION = 0.2  # median gamma-Poisson dispersion; per gene log-normal, sd 0.5
_DISPERSION_LOG_SD = 0.5
_RARE_FRACTION = (0.002, 0.006)  # cell fraction of each rare type
_COMMON_LOG_SD = 0.5  # spread of the common types' proportions
_COMPOSITION_LOG_SD = 0.3  # per-sample deviation of type proportions
_SAMPLE_SIZE_LOG_SD = 0.5  # spread of cells per sample
_LIB_TYPE_LOG_SD = 0.3
_LIB_SAMPLE_LOG_SD = 0.25
_LIB_CELL_LOG_SD = 0.4


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# ---------------------------------------------------------------------------------------------
# the model


@dataclass
class Study:
    """Everything the kernel needs to draw one study's counts, plus its labels."""

    name: str
    cell_prefix: str
    n_genes: int
    type_names: list[str]
    sample_names: list[str]
    type_of_cell: np.ndarray  # (n_cells,) int32 index into type_names
    sample_of_cell: np.ndarray  # (n_cells,) int32 index into sample_names
    library: np.ndarray  # (n_cells,) float64 expected library size
    # per type t, its n_dense[t] gamma-Poisson genes (sorted, padded rows), their proportion
    # and dispersion; the other genes are drawn from the alias table of p_t with those genes
    # zeroed: Poisson(library * sparse_rate[t]) candidates, each kept with probability
    # donor[s, g] / 255. The donor factor of gene g in sample s is donor_max * donor[s, g] / 255
    # (8-bit codes: a row of the table stays in cache while a cell's UMIs look it up)
    n_dense: np.ndarray  # (n_types,) int64
    dense_genes: np.ndarray  # (n_types, max_dense) int32
    dense_p: np.ndarray  # (n_types, max_dense) float64
    phi: np.ndarray  # (n_types, max_dense) float64
    inv_phi: np.ndarray  # (n_types, max_dense) float64
    sparse_rate: np.ndarray  # (n_types,) float64
    alias_prob: np.ndarray  # (n_types, n_genes) float64
    alias_idx: np.ndarray  # (n_types, n_genes) int32
    donor: np.ndarray  # (n_samples, n_genes) uint8 donor factor codes
    donor_max: float
    mean_library: float
    seed: np.random.SeedSequence

    @property
    def n_cells(self) -> int:
        return int(self.type_of_cell.size)

    def chunk_generator(self, k: int) -> np.random.Generator:
        """The generator of chunk ``k`` (the ``k``-th child of the study's seed)."""
        child = np.random.SeedSequence(
            self.seed.entropy, spawn_key=(*self.seed.spawn_key, k), pool_size=self.seed.pool_size
        )
        return np.random.default_rng(child)


def build_pair(
    *,
    n_cells_query: int,
    n_cells_reference: int,
    n_genes: int = 20_000,
    nnz_per_cell: float = 1500.0,
    n_types_query: int = 30,
    n_types_reference: int = 35,
    n_query_only: int = 2,
    n_samples_query: int = 120,
    n_samples_reference: int = 500,
    seed: int = 0,
) -> tuple[Study, Study, dict]:
    """The two studies' models and the truth (shared types, marker genes).

    Query types are ``T00``..; the first ``n_types_query - n_query_only`` are shared with the
    reference, which adds ``n_types_reference - n_shared`` types of its own.
    """
    n_shared = n_types_query - n_query_only
    if not 1 <= n_shared <= n_types_reference:
        msg = (
            f"n_types_query - n_query_only = {n_shared} shared types must be between 1 and "
            f"n_types_reference = {n_types_reference}"
        )
        raise ValueError(msg)
    n_pool = n_types_query + n_types_reference - n_shared
    ss_genes, ss_types, ss_query, ss_reference = np.random.SeedSequence(seed).spawn(4)

    # baseline over genes and per-gene dispersion
    rng = np.random.default_rng(ss_genes)
    log_base = rng.normal(0.0, _BASELINE_LOG_SD, n_genes)
    np.minimum(log_base, np.quantile(log_base, 0.99), out=log_base)
    n_hk = min(_N_HOUSEKEEPING, n_genes // 10)
    if n_hk:
        hk = rng.choice(n_genes, n_hk, replace=False)
        rest = np.ones(n_genes, dtype=bool)
        rest[hk] = False
        zipf = 1.0 / np.arange(1, n_hk + 1) * np.exp(rng.normal(0.0, 0.1, n_hk))
        share = _HOUSEKEEPING_SHARE * zipf / zipf.sum()
        total_rest = np.exp(log_base[rest]).sum()
        log_base[hk] = np.log(share * total_rest / (1.0 - _HOUSEKEEPING_SHARE))
    phi_all = _DISPERSION * np.exp(rng.normal(0.0, _DISPERSION_LOG_SD, n_genes))
    np.clip(phi_all, 0.05, 1.0, out=phi_all)

    # type programs: a deviation on every gene plus disjoint up-regulated markers
    rng = np.random.default_rng(ss_types)
    ranked = np.argsort(-log_base)
    lo, hi = (min(r, n_genes) for r in _MARKER_RANKS)
    lo = min(lo, hi // 4)
    pool = rng.permutation(ranked[lo:hi])
    n_markers = rng.integers(_MARKERS_PER_TYPE[0], _MARKERS_PER_TYPE[1] + 1, n_pool)
    if n_markers.sum() > pool.size:
        n_markers = np.maximum(1, n_markers * pool.size // n_markers.sum())
    log_type = rng.normal(0.0, _TYPE_LOG_SD, (n_pool, n_genes))
    markers: dict[str, list[str]] = {}
    gene_names = _gene_names(n_genes)
    start = 0
    for t in range(n_pool):
        genes = np.sort(pool[start : start + n_markers[t]])
        start += n_markers[t]
        log_type[t, genes] += np.log(2.0) * rng.uniform(*_MARKER_LOG2FC, genes.size)
        markers[f"T{t:02d}"] = [gene_names[g] for g in genes]
    log_type += log_base

    pool_query = list(range(n_types_query))
    pool_reference = list(range(n_shared)) + list(range(n_types_query, n_pool))
    query = _build_study(
        "query",
        "Q",
        pool_query,
        log_type,
        phi_all,
        n_cells_query,
        n_samples_query,
        nnz_per_cell,
        ss_query,
    )
    reference = _build_study(
        "reference",
        "R",
        pool_reference,
        log_type,
        phi_all,
        n_cells_reference,
        n_samples_reference,
        nnz_per_cell,
        ss_reference,
    )
    truth = {
        "shared_types": [f"T{t:02d}" for t in range(n_shared)],
        "query_only_types": [f"T{t:02d}" for t in range(n_shared, n_types_query)],
        "reference_only_types": [f"T{t:02d}" for t in range(n_types_query, n_pool)],
        "markers": {name: markers[name] for name in sorted(markers)},
    }
    return query, reference, truth


def _build_study(
    name: str,
    prefix: str,
    pool_types: list[int],
    log_type: np.ndarray,
    phi_all: np.ndarray,
    n_cells: int,
    n_samples: int,
    nnz_per_cell: float,
    seed: np.random.SeedSequence,
) -> Study:
    ss_model, ss_cells, ss_counts = seed.spawn(3)
    rng = np.random.default_rng(ss_model)
    n_types = len(pool_types)
    n_genes = log_type.shape[1]
    logp = log_type[pool_types] + rng.normal(0.0, _STUDY_LOG_SD, n_genes)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    p /= p.sum(axis=1, keepdims=True)
    z = rng.normal(0.0, _DONOR_LOG_SD, (n_samples, n_genes))
    d_max = math.exp(2 * _DONOR_LOG_SD)
    code = np.rint(255 * np.exp(np.clip(z, -2 * _DONOR_LOG_SD, 2 * _DONOR_LOG_SD)) / d_max)
    donor_code = code.astype(np.uint8)
    del z, code

    # type proportions (a few rare types), sample sizes, per-sample composition
    n_rare = max(1, round(0.1 * n_types)) if n_types >= 5 else 0
    frac = np.exp(rng.normal(0.0, _COMMON_LOG_SD, n_types))
    rare = rng.choice(n_types, n_rare, replace=False)
    rare_frac = rng.uniform(*_RARE_FRACTION, n_rare)
    common = np.setdiff1d(np.arange(n_types), rare)
    frac[common] *= (1.0 - rare_frac.sum()) / frac[common].sum()
    frac[rare] = rare_frac
    sample_size = np.exp(rng.normal(0.0, _SAMPLE_SIZE_LOG_SD, n_samples))
    comp = frac * np.exp(rng.normal(0.0, _COMPOSITION_LOG_SD, (n_samples, n_types)))
    comp /= comp.sum(axis=1, keepdims=True)
    joint = (sample_size / sample_size.sum())[:, None] * comp
    lib_type = np.exp(rng.normal(0.0, _LIB_TYPE_LOG_SD, n_types))
    lib_sample = np.exp(rng.normal(0.0, _LIB_SAMPLE_LOG_SD, n_samples))

    # cells: (sample, type) counts, shuffled; library factors
    rng = np.random.default_rng(ss_cells)
    counts = rng.multinomial(n_cells, joint.ravel() / joint.sum())
    pair = np.repeat(np.arange(counts.size), counts)
    pair = pair[rng.permutation(n_cells)]
    sample_of_cell = (pair // n_types).astype(np.int32)
    type_of_cell = (pair % n_types).astype(np.int32)
    lib_factor = lib_type[type_of_cell] * lib_sample[sample_of_cell]
    lib_factor *= np.exp(rng.normal(0.0, _LIB_CELL_LOG_SD, n_cells))

    # calibrate the mean library size on the expected number of non-zero genes per cell,
    # first with every gene Poisson, then with the dense / sparse split that implies
    probe = rng.choice(n_cells, min(n_cells, 100_000), replace=False)
    args = (nnz_per_cell, p, phi_all, type_of_cell[probe], lib_factor[probe])
    mean_lib = _calibrate(*args, np.zeros(p.shape, dtype=bool))
    dense_mask = p * mean_lib >= _DENSE_MU  # (n_types, n_genes)
    mean_lib = _calibrate(*args, dense_mask)
    n_dense = dense_mask.sum(axis=1)
    width = max(int(n_dense.max()), 1)
    dense_genes = np.zeros((n_types, width), dtype=np.int32)
    for t in range(n_types):
        dense_genes[t, : n_dense[t]] = np.flatnonzero(dense_mask[t])
    rows = np.arange(n_types)[:, None]
    p_sparse = np.where(dense_mask, 0.0, p)
    sparse_rate = p_sparse.sum(axis=1) * d_max
    alias_prob = np.empty(p.shape)
    alias_idx = np.empty(p.shape, dtype=np.int32)
    for t in range(n_types):
        alias_prob[t], alias_idx[t] = _alias_table(p_sparse[t] / p_sparse[t].sum())
    return Study(
        name=name,
        cell_prefix=prefix,
        n_genes=n_genes,
        type_names=[f"T{t:02d}" for t in pool_types],
        sample_names=[f"{prefix}_S{s:03d}" for s in range(n_samples)],
        type_of_cell=type_of_cell,
        sample_of_cell=sample_of_cell,
        library=mean_lib * lib_factor,
        n_dense=n_dense.astype(np.int64),
        dense_genes=dense_genes,
        dense_p=p[rows, dense_genes],
        phi=phi_all[dense_genes],
        inv_phi=1.0 / phi_all[dense_genes],
        sparse_rate=sparse_rate,
        alias_prob=alias_prob,
        alias_idx=alias_idx,
        donor=donor_code,
        donor_max=d_max,
        mean_library=float(mean_lib),
        seed=ss_counts,
    )


def _calibrate(target, p, phi, types, lib_factor, dense_mask) -> float:
    """The mean library size that gives ``target`` expected non-zero genes per probe cell.

    Per type, the expected non-zeros at library size L, sum over genes of P(count > 0)
    (gamma-Poisson for dense genes, Poisson for the others), is tabulated on a log grid of L
    and interpolated; the mean over the probe cells is solved for by bisection in log L.
    """
    grid = np.logspace(1.5, 6.0, 73)
    log_grid = np.log(grid)
    table = np.empty((p.shape[0], grid.size))
    rows, cols = np.nonzero(dense_mask)
    p_dense = p[rows, cols]
    phi_dense = phi[cols]
    for k, L in enumerate(grid):
        nb = 1.0 - (1.0 + L * p_dense * phi_dense) ** (-1.0 / phi_dense)
        poisson = -np.expm1(-L * p_dense)
        table[:, k] = -np.expm1(-L * p).sum(axis=1)
        table[:, k] += np.bincount(rows, nb - poisson, minlength=p.shape[0])
    log_f = np.log(lib_factor)
    lo, hi = 0.0, log_grid[-1]
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        value = np.mean(_interp_rows(table, log_grid, types, mid + log_f))
        lo, hi = (mid, hi) if value < target else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _interp_rows(table, log_grid, rows, x):
    step = log_grid[1] - log_grid[0]
    pos = np.clip((x - log_grid[0]) / step, 0, log_grid.size - 1 - 1e-9)
    k = pos.astype(np.int64)
    w = pos - k
    return (1 - w) * table[rows, k] + w * table[rows, k + 1]


@numba.njit(cache=True)
def _alias_table(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table: draw ``j = floor(u * n)``, keep it if ``frac(u * n) < q[j]``,
    else take ``alias[j]``."""
    n = prob.size
    q = prob * n
    alias = np.arange(n).astype(np.int32)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for j in range(n):
        if q[j] < 1.0:
            small[ns] = j
            ns += 1
        else:
            large[nl] = j
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        alias[s] = g
        q[g] = q[g] + q[s] - 1.0
        if q[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    for k in range(nl):
        q[large[k]] = 1.0
    for k in range(ns):
        q[small[k]] = 1.0
    return q, alias


# ---------------------------------------------------------------------------------------------
# count sampling


@numba.njit(nogil=True, cache=True)
def _draw_chunk(
    rng,
    order,
    types,
    samples,
    library,
    n_dense,
    dense_genes,
    dense_p,
    phi,
    inv_phi,
    sparse_rate,
    alias_prob,
    alias_idx,
    donor,
    donor_max,
):
    """Counts of one chunk of cells: (non-zeros per row, column indices, values), CSR order.

    Cells are drawn in the order ``order`` (sorted by type, then sample, so that the type's
    tables and the donor's factors stay in cache), into a buffer that is then gathered into
    row order.
    """
    n_cells = types.size
    n_genes = alias_prob.shape[1]
    scale = donor_max / 255.0
    counts = np.zeros(n_genes, dtype=np.int32)
    hits = np.empty(n_genes, dtype=np.int32)
    cap = max(n_cells * 2048, n_genes)
    buf_indices = np.empty(cap, dtype=np.int32)
    buf_data = np.empty(cap, dtype=np.float32)
    start = np.empty(n_cells, dtype=np.int64)
    row_nnz = np.empty(n_cells, dtype=np.int64)
    pos = 0
    for i in order:
        t = types[i]
        s = samples[i]
        lib = library[i]
        if pos + n_genes > cap:
            cap = max(2 * cap, pos + n_genes)
            new_indices = np.empty(cap, dtype=np.int32)
            new_data = np.empty(cap, dtype=np.float32)
            new_indices[:pos] = buf_indices[:pos]
            new_data[:pos] = buf_data[:pos]
            buf_indices = new_indices
            buf_data = new_data
        # well-expressed genes: gamma-Poisson, in gene order
        m_dense = 0
        for j in range(n_dense[t]):
            g = dense_genes[t, j]
            mu = lib * scale * dense_p[t, j] * donor[s, g]
            c = rng.poisson(mu * rng.gamma(inv_phi[t, j], phi[t, j]))
            if c > 0:
                buf_indices[pos + m_dense] = g
                buf_data[pos + m_dense] = c
                m_dense += 1
        # the others: UMIs from the alias table, thinned by the donor factor
        m_sparse = 0
        n_draw = rng.poisson(lib * sparse_rate[t])
        for _ in range(n_draw):
            u = rng.random() * n_genes
            g = min(int(u), n_genes - 1)
            if u - g >= alias_prob[t, g]:
                g = alias_idx[t, g]
            if rng.random() * 255.0 < donor[s, g]:
                if counts[g] == 0:
                    hits[m_sparse] = g
                    m_sparse += 1
                counts[g] += 1
        # merge the two sorted lists (disjoint genes) in place, from the end
        sparse_sorted = np.sort(hits[:m_sparse])
        a = m_dense - 1
        b = m_sparse - 1
        for k in range(m_dense + m_sparse - 1, -1, -1):
            if b < 0 or (a >= 0 and buf_indices[pos + a] > sparse_sorted[b]):
                buf_indices[pos + k] = buf_indices[pos + a]
                buf_data[pos + k] = buf_data[pos + a]
                a -= 1
            else:
                g = sparse_sorted[b]
                buf_indices[pos + k] = g
                buf_data[pos + k] = counts[g]
                counts[g] = 0
                b -= 1
        start[i] = pos
        row_nnz[i] = m_dense + m_sparse
        pos += m_dense + m_sparse
    indices = np.empty(pos, dtype=np.int32)
    data = np.empty(pos, dtype=np.float32)
    out = 0
    for i in range(n_cells):
        m = row_nnz[i]
        indices[out : out + m] = buf_indices[start[i] : start[i] + m]
        data[out : out + m] = buf_data[start[i] : start[i] + m]
        out += m
    return row_nnz, indices, data


def draw_chunk(study: Study, k: int, chunk_cells: int):
    """Chunk ``k`` of a study: (non-zeros per row, indices int32, data float32)."""
    start = k * chunk_cells
    stop = min(start + chunk_cells, study.n_cells)
    types = study.type_of_cell[start:stop]
    samples = study.sample_of_cell[start:stop]
    order = np.argsort(types.astype(np.int64) * len(study.sample_names) + samples, kind="stable")
    return _draw_chunk(
        study.chunk_generator(k),
        order,
        types,
        samples,
        study.library[start:stop],
        study.n_dense,
        study.dense_genes,
        study.dense_p,
        study.phi,
        study.inv_phi,
        study.sparse_rate,
        study.alias_prob,
        study.alias_idx,
        study.donor,
        study.donor_max,
    )


def _chunks(study: Study, chunk_cells: int, n_threads: int) -> Iterator[tuple]:
    """The study's chunks in order, drawn ``n_threads`` at a time ahead of the consumer."""
    n_chunks = -(-study.n_cells // chunk_cells)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        pending = {}
        for k in range(n_chunks):
            for ahead in range(k, min(k + n_threads + 1, n_chunks)):
                if ahead not in pending:
                    pending[ahead] = pool.submit(draw_chunk, study, ahead, chunk_cells)
            yield k, pending.pop(k).result()


def obs_frame(study: Study) -> pd.DataFrame:
    """``obs`` of a study: unique cell names, categorical ``cell_type`` and ``sample_id``."""
    width = len(str(max(study.n_cells - 1, 0)))
    names = pd.Index([f"{study.cell_prefix}{i:0{width}d}" for i in range(study.n_cells)])
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(study.type_of_cell, categories=study.type_names),
            "sample_id": pd.Categorical.from_codes(
                study.sample_of_cell, categories=study.sample_names
            ),
        },
        index=names,
    )


def _gene_names(n_genes: int) -> list[str]:
    width = max(5, len(str(n_genes)))
    return [f"GENE{g + 1:0{width}d}" for g in range(n_genes)]


def var_frame(n_genes: int) -> pd.DataFrame:
    return pd.DataFrame(index=pd.Index(_gene_names(n_genes)))


def ensembl_ids(n_genes: int) -> list[str]:
    """Ensembl-like ids for the genes ``GENE00001``... (``ENSG00000000001``...)."""
    return [f"ENSG{i + 1:011d}" for i in range(n_genes)]


def write_cellxgene_copy(source: Path, target: Path, *, log=print) -> dict:
    """A study file rewritten in the CELLxGENE layout: the counts moved to ``raw/X`` (copied
    dataset by dataset), ``X`` the normalized values (``log1p`` of counts per 10,000, float32,
    the counts' sparsity, written chunk by chunk), Ensembl-like ids as ``var_names`` and the
    symbols in ``var["feature_name"]`` and ``raw/var["feature_name"]``. Bounded memory; skipped
    when ``target`` exists and is newer than ``source``."""
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        log(f"# {target}: exists, nothing to do", flush=True)
        return {"path": str(target), "file_gb": round(target.stat().st_size / 1e9, 3)}
    start = time.perf_counter()
    tmp = target.with_name(target.name + ".partial")
    with h5py.File(source, "r") as src, h5py.File(tmp, "w", rdcc_nbytes=64 * 2**20) as out:
        for key, value in src.attrs.items():
            out.attrs[key] = value
        counts = src["X"]
        n_cells, n_genes = (int(v) for v in counts.attrs["shape"])
        names = pd.Index(_gene_names(n_genes))
        var = pd.DataFrame({"feature_name": np.asarray(names)}, index=ensembl_ids(n_genes))
        raw = out.create_group("raw")
        raw.attrs["encoding-type"] = "raw"
        raw.attrs["encoding-version"] = "0.1.0"
        src.copy(counts, raw, "X")
        write_elem(raw, "var", var)
        write_elem(raw, "varm", {})
        X = out.create_group("X")
        for key, value in counts.attrs.items():
            X.attrs[key] = value
        indptr = counts["indptr"][:]
        X.create_dataset("indptr", data=indptr)
        X.create_dataset("indices", data=counts["indices"], chunks=(H5_CHUNK,))
        data = X.create_dataset(
            "data", shape=counts["data"].shape, dtype=np.float32, chunks=(H5_CHUNK,)
        )
        rows = 20_000
        for lo in range(0, n_cells, rows):
            hi = min(n_cells, lo + rows)
            a, b = int(indptr[lo]), int(indptr[hi])
            values = counts["data"][a:b].astype(np.float64)
            lengths = np.diff(indptr[lo : hi + 1])
            row = np.repeat(np.arange(hi - lo), lengths)
            totals = np.bincount(row, weights=values, minlength=hi - lo)
            totals[totals == 0] = 1.0
            data[a:b] = np.log1p(values / np.repeat(totals, lengths) * 1e4).astype(np.float32)
        for key in ("obs", "uns", "obsm", "varm", "obsp", "varp", "layers"):
            if key in src:
                src.copy(src[key], out, key)
        write_elem(out, "var", var)
    os.replace(tmp, target)
    figures = {
        "path": str(target),
        "file_gb": round(target.stat().st_size / 1e9, 3),
        "seconds": round(time.perf_counter() - start, 1),
    }
    log(f"  {target.name} (CELLxGENE layout): {json.dumps(figures)}", flush=True)
    return figures


# ---------------------------------------------------------------------------------------------
# writing


def write_study(
    path: Path,
    study: Study,
    uns: dict,
    *,
    chunk_cells: int = CHUNK_CELLS,
    n_threads: int = 2,
    log=print,
) -> dict:
    """Write one study to ``path`` (h5ad) chunk by chunk; returns its figures."""
    start_time = time.perf_counter()
    n_cells, n_genes = study.n_cells, study.n_genes
    tmp = path.with_name(path.name + ".partial")
    pos = 0
    n_chunks = -(-n_cells // chunk_cells)
    report_every = max(1, n_chunks // 10)
    with h5py.File(tmp, "w", rdcc_nbytes=64 * 2**20) as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        X = f.create_group("X")
        X.attrs["encoding-type"] = "csr_matrix"
        X.attrs["encoding-version"] = "0.1.0"
        X.attrs["shape"] = (n_cells, n_genes)
        data = X.create_dataset(
            "data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(H5_CHUNK,)
        )
        indices = X.create_dataset(
            "indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(H5_CHUNK,)
        )
        indptr = np.zeros(n_cells + 1, dtype=np.int64)
        for k, (row_nnz, idx, val) in _chunks(study, chunk_cells, n_threads):
            lo = k * chunk_cells
            indptr[lo + 1 : lo + 1 + row_nnz.size] = pos + np.cumsum(row_nnz)
            data.resize((pos + val.size,))
            indices.resize((pos + idx.size,))
            data[pos:] = val
            indices[pos:] = idx
            pos += val.size
            if (k + 1) % report_every == 0 or k + 1 == n_chunks:
                elapsed = time.perf_counter() - start_time
                log(
                    f"  {study.name}: {min(lo + chunk_cells, n_cells):,}/{n_cells:,} cells, "
                    f"{pos / 1e9:.2f}e9 nnz, {elapsed:.0f} s, peak RSS {peak_rss_gb():.2f} GB",
                    flush=True,
                )
        X.create_dataset("indptr", data=indptr)
        write_elem(f, "obs", obs_frame(study))
        write_elem(f, "var", var_frame(n_genes))
        write_elem(f, "uns", uns)
        for key in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(f, key, {})
    os.replace(tmp, path)
    return {
        "path": str(path),
        "n_cells": n_cells,
        "nnz": int(pos),
        "nnz_per_cell": round(pos / max(n_cells, 1), 1),
        "dense_genes_per_type": round(float(study.n_dense.mean()), 1),
        "mean_library": round(study.mean_library, 1),
        "file_gb": round(path.stat().st_size / 1e9, 3),
        "seconds": round(time.perf_counter() - start_time, 1),
    }


def _params(**kwargs) -> dict:
    return {"format_version": FORMAT_VERSION, **kwargs}


def write_pair(
    out_dir: str | Path,
    *,
    n_cells_query: int,
    n_cells_reference: int,
    n_genes: int = 20_000,
    nnz_per_cell: float = 1500.0,
    n_types_query: int = 30,
    n_types_reference: int = 35,
    n_query_only: int = 2,
    n_samples_query: int = 120,
    n_samples_reference: int = 500,
    seed: int = 0,
    chunk_cells: int = CHUNK_CELLS,
    n_threads: int = 2,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Write the simulated pair to ``out_dir/query.h5ad`` and ``out_dir/reference.h5ad``.

    Parameters
    ----------
    out_dir
        Folder for the two files and ``atlas_data.json`` (created if missing).
    n_cells_query, n_cells_reference
        Cells of each study.
    n_genes
        Genes (``GENE00001``...), the same in both studies.
    nnz_per_cell
        Target mean number of non-zero genes per cell (the library sizes are calibrated on it).
    n_types_query, n_types_reference, n_query_only
        Cell types of each study; ``n_query_only`` query types are absent from the reference,
        the others are shared (same name, same profile).
    n_samples_query, n_samples_reference
        Samples (donors) of each study.
    seed
        Seed of everything drawn.
    chunk_cells
        Cells per generation chunk (part of the random stream).
    n_threads
        Threads drawing chunks (not part of the random stream).
    overwrite
        Write even when the files exist with the same parameters.
    log
        Progress printer (``print``-like; ``None`` for silence).

    Returns
    -------
    dict
        ``params``, ``truth`` (shared / query-only / reference-only types, markers), and
        ``query`` / ``reference`` figures (path, cells, nnz, nnz per cell, file size, seconds),
        the total seconds and the peak resident memory (GB) of the process.
    """
    log = log or (lambda *args, **kwargs: None)
    out_dir = Path(out_dir)
    params = _params(
        n_cells_query=n_cells_query,
        n_cells_reference=n_cells_reference,
        n_genes=n_genes,
        nnz_per_cell=nnz_per_cell,
        n_types_query=n_types_query,
        n_types_reference=n_types_reference,
        n_query_only=n_query_only,
        n_samples_query=n_samples_query,
        n_samples_reference=n_samples_reference,
        seed=seed,
        chunk_cells=chunk_cells,
    )
    meta_path = out_dir / "atlas_data.json"
    paths = {"query": out_dir / "query.h5ad", "reference": out_dir / "reference.h5ad"}
    if not overwrite and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params and all(
            p.exists() and p.stat().st_size == round(meta[k]["file_bytes"])
            for k, p in paths.items()
        ):
            log(f"# {out_dir}: files exist with these parameters, nothing to do", flush=True)
            return meta
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    start = time.perf_counter()
    log(
        f"# {n_cells_query:,} + {n_cells_reference:,} cells x {n_genes:,} genes -> {out_dir}",
        flush=True,
    )
    query, reference, truth = build_pair(
        n_cells_query=n_cells_query,
        n_cells_reference=n_cells_reference,
        n_genes=n_genes,
        nnz_per_cell=nnz_per_cell,
        n_types_query=n_types_query,
        n_types_reference=n_types_reference,
        n_query_only=n_query_only,
        n_samples_query=n_samples_query,
        n_samples_reference=n_samples_reference,
        seed=seed,
    )
    log(
        f"  model: {time.perf_counter() - start:.1f} s; gamma-Poisson genes per type "
        f"{query.n_dense.mean():.0f} / {reference.n_dense.mean():.0f}, mean library "
        f"{query.mean_library:.0f} / {reference.mean_library:.0f}",
        flush=True,
    )
    meta = {"params": params, "truth": truth}
    for study in (query, reference):
        uns = {
            "atlas_data": {
                "study": study.name,
                "params": json.dumps(params),
                "truth": json.dumps(truth),
            }
        }
        figures = write_study(
            paths[study.name], study, uns, chunk_cells=chunk_cells, n_threads=n_threads, log=log
        )
        figures["file_bytes"] = paths[study.name].stat().st_size
        meta[study.name] = figures
        log(f"  {study.name}: {json.dumps(figures)}", flush=True)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    meta["peak_rss_gb"] = round(peak_rss_gb(), 3)
    meta["total_nnz"] = meta["query"]["nnz"] + meta["reference"]["nnz"]
    meta["total_file_gb"] = round(meta["query"]["file_gb"] + meta["reference"]["file_gb"], 3)
    meta_path.write_text(json.dumps(meta, indent=1))
    log(
        f"# done: {meta['seconds']:.0f} s, {meta['total_nnz'] / 1e9:.2f}e9 nnz, "
        f"{meta['total_file_gb']:.1f} GB on disk, peak RSS {meta['peak_rss_gb']:.2f} GB",
        flush=True,
    )
    return meta


def simulate_pair_in_memory(
    *, chunk_cells: int = CHUNK_CELLS, **kwargs
) -> tuple[ad.AnnData, ad.AnnData]:
    """The same pair as :func:`write_pair` (same keyword arguments), built in memory.

    For tests and small sizes: the counts equal the written files' for the same ``seed`` and
    ``chunk_cells``.
    """
    query, reference, _ = build_pair(**kwargs)
    out = []
    for study in (query, reference):
        n_chunks = -(-study.n_cells // chunk_cells)
        parts = [draw_chunk(study, k, chunk_cells) for k in range(n_chunks)]
        indptr = np.concatenate([[0], np.cumsum(np.concatenate([p[0] for p in parts]))])
        X = sp.csr_matrix(
            (
                np.concatenate([p[2] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                indptr,
            ),
            shape=(study.n_cells, study.n_genes),
        )
        out.append(ad.AnnData(X=X, obs=obs_frame(study), var=var_frame(study.n_genes)))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SIZES), default="seed")
    parser.add_argument("--cells-query", type=int, default=None)
    parser.add_argument("--cells-reference", type=int, default=None)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--nnz-per-cell", type=float, default=1500.0)
    parser.add_argument("--types-query", type=int, default=30)
    parser.add_argument("--types-reference", type=int, default=35)
    parser.add_argument("--samples-query", type=int, default=120)
    parser.add_argument("--samples-reference", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-cells", type=int, default=CHUNK_CELLS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default /tmp/pairot_atlas/SCALE")
    args = parser.parse_args(argv)
    n_query, n_reference = SIZES[args.scale]
    custom = args.cells_query is not None or args.cells_reference is not None
    n_query = n_query if args.cells_query is None else args.cells_query
    n_reference = n_reference if args.cells_reference is None else args.cells_reference
    name = f"q{n_query}_r{n_reference}" if custom else args.scale
    out = args.out if args.out is not None else Path("/tmp/pairot_atlas") / name
    return write_pair(
        out,
        n_cells_query=n_query,
        n_cells_reference=n_reference,
        n_genes=args.genes,
        nnz_per_cell=args.nnz_per_cell,
        n_types_query=args.types_query,
        n_types_reference=args.types_reference,
        n_samples_query=args.samples_query,
        n_samples_reference=args.samples_reference,
        seed=args.seed,
        chunk_cells=args.chunk_cells,
        n_threads=args.threads,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
