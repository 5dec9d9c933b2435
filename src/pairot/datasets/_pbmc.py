"""A small real pair of raw-count studies cut from scanpy's bundled ``pbmc68k_reduced``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["pbmc_demo"]

# Largest distance of a recovered count from the nearest integer that is accepted. The
# bundled log values are stored in float32 and were rounded, so the recovered counts deviate
# from integers by up to ~0.08; anything near 0.5 would mean the recovery formula is wrong.
_MAX_INTEGER_DEVIATION = 0.25
_TARGET_SUM = 1e4  # pbmc68k_reduced.raw holds log1p(counts / n_counts * 1e4)


def pbmc_demo(
    random_state: int | np.random.Generator = 0,
    *,
    n_samples: int = 4,
    min_cells_per_type: int | None = None,
) -> tuple[ad.AnnData, ad.AnnData]:
    """A real, small pair of raw-count studies from scanpy's bundled ``pbmc68k_reduced``.

    The 700 cells of :func:`scanpy.datasets.pbmc68k_reduced` (shipped with scanpy, no network
    needed) are split into a query and a reference study, stratified by cell type, and each
    study's cells are assigned to ``n_samples`` pseudo-donors.

    Counts. ``pbmc68k_reduced.raw`` holds ``log1p(counts / n_counts * 1e4)`` for 765 genes,
    with ``n_counts`` the cell's total over all genes of the original data. The counts are
    recovered as ``rint(expm1(raw) * n_counts / 1e4)``; the recovered values lie within 0.1
    of an integer and are non-negative (checked). ``X`` therefore holds the raw counts of those
    765 genes only; ``obs["n_counts_original"]`` keeps the original totals, with which
    ``log1p(X / n_counts_original * 1e4)`` reproduces ``.raw`` to about 1e-3.

    Cell types. Labels are ``obs["bulk_labels"]``, names kept exactly (they contain ``/``,
    ``+`` and spaces). Types with fewer than ``min_cells_per_type`` cells are dropped
    (default ``4 * n_samples`` = 16: of the 10 labels this drops ``CD34+`` (13 cells) and
    ``CD4+/CD45RA+/CD25- Naive T`` (8 cells), keeping 8 types and 679 cells). Every kept type
    is split as evenly as possible between the two studies (the study that gets the odd cell
    is drawn at random), and within a study its cells are dealt to the pseudo-donors in a
    random order, round robin. With the default threshold every (pseudo-donor, type) pair of
    each study thus holds at least 2 cells, enough for pseudobulk.

    Parameters
    ----------
    random_state
        Seed (``int``) or :class:`numpy.random.Generator` of the split and of the pseudo-donor
        assignment; the same seed gives the same pair.
    n_samples
        Number of pseudo-donors per study (``sample_id`` values ``"query_donor1"``, ...,
        ``"reference_donor1"``, ...).
    min_cells_per_type
        Cell types with fewer cells in the whole dataset are dropped. Default
        ``4 * n_samples``.

    Returns
    -------
    ``(query, reference)``, two :class:`anndata.AnnData` with ``X`` the raw counts as a
    :class:`scipy.sparse.csr_matrix` of dtype ``float32``, ``var_names`` the gene symbols of
    ``pbmc68k_reduced.raw``, ``obs`` columns ``cell_type`` and ``sample_id`` (Categorical),
    ``n_counts_original``, ``obsm["X_pca"]`` and ``obsm["X_umap"]`` (the original
    embeddings' rows of the kept cells) and ``uns["pbmc_demo"]`` (the parameters and the
    dropped cell types).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
        msg = f"n_samples must be an integer >= 1, got {n_samples!r}; pass e.g. n_samples=4."
        raise ValueError(msg)
    if min_cells_per_type is None:
        min_cells_per_type = 4 * int(n_samples)
    if (
        isinstance(min_cells_per_type, bool)
        or not isinstance(min_cells_per_type, int | np.integer)
        or min_cells_per_type < 2
    ):
        msg = (
            f"min_cells_per_type must be an integer >= 2, got {min_cells_per_type!r}; pass "
            "e.g. min_cells_per_type=16 (or None for 4 * n_samples)."
        )
        raise ValueError(msg)
    rng = _generator(random_state)

    import scanpy as sc  # deferred: scanpy is slow to import

    adata = sc.datasets.pbmc68k_reduced()
    counts = recover_counts(adata.raw.X, adata.obs["n_counts"].to_numpy())

    labels = adata.obs["bulk_labels"]
    sizes = labels.value_counts()
    kept_types = [c for c in labels.cat.categories if sizes.get(c, 0) >= min_cells_per_type]
    dropped = [str(c) for c in labels.cat.categories if c not in kept_types]
    if not kept_types:
        msg = (
            f"min_cells_per_type={min_cells_per_type} drops every cell type of "
            f"pbmc68k_reduced (largest: {int(sizes.max())} cells); pass a smaller value."
        )
        raise ValueError(msg)

    # split each kept type between the studies and deal its cells to pseudo-donors
    study_of_cell = np.full(adata.n_obs, -1, dtype=np.int64)
    donor_of_cell = np.full(adata.n_obs, -1, dtype=np.int64)
    codes = labels.to_numpy()
    for cell_type in kept_types:
        members = rng.permutation(np.flatnonzero(codes == cell_type))
        n_first = len(members) // 2 + (len(members) % 2) * int(rng.integers(2))
        for study, part in enumerate((members[:n_first], members[n_first:])):
            study_of_cell[part] = study
            donor_of_cell[part] = rng.permutation(np.arange(len(part)) % n_samples)

    out = []
    for study, name in enumerate(("query", "reference")):
        cells = np.flatnonzero(study_of_cell == study)
        obs = pd.DataFrame(
            {
                "cell_type": pd.Categorical(
                    labels.to_numpy()[cells].astype(str), categories=[str(c) for c in kept_types]
                ),
                "sample_id": pd.Categorical.from_codes(
                    donor_of_cell[cells],
                    categories=[f"{name}_donor{d + 1}" for d in range(n_samples)],
                ),
                "n_counts_original": adata.obs["n_counts"].to_numpy()[cells].astype(np.float64),
            },
            index=pd.Index(adata.obs_names[cells].astype(str), dtype=object),
        )
        obsm = {
            k: np.asarray(adata.obsm[k])[cells].copy()
            for k in ("X_pca", "X_umap")
            if k in adata.obsm
        }
        uns = {
            "pbmc_demo": {
                "study": name,
                "n_samples": int(n_samples),
                "min_cells_per_type": int(min_cells_per_type),
                "random_state": -1
                if isinstance(random_state, np.random.Generator)
                else int(random_state),
                "dropped_cell_types": np.array(dropped, dtype=object),
            }
        }
        out.append(
            ad.AnnData(
                X=counts[cells],
                obs=obs,
                var=pd.DataFrame(index=pd.Index(adata.raw.var_names.astype(str), dtype=object)),
                obsm=obsm,
                uns=uns,
            )
        )
    return out[0], out[1]


def recover_counts(
    log_normalized, n_counts: np.ndarray, target_sum: float = _TARGET_SUM
) -> sp.csr_matrix:
    """Raw counts from ``log1p(counts / n_counts * target_sum)`` values.

    Parameters
    ----------
    log_normalized
        Cells x genes matrix (dense or scipy.sparse) of log-normalized values.
    n_counts
        Per-cell size factor used in the normalization (the cell's total count).
    target_sum
        Normalization target (1e4 for ``pbmc68k_reduced``).

    Returns
    -------
    ``rint(expm1(x) * n_counts / target_sum)`` as a canonical CSR matrix of dtype float32.

    Raises
    ------
    ValueError
        If a recovered value is negative or further than 0.25 from an integer, i.e. the input
        was not produced by that normalization.
    """
    mat = sp.csr_matrix(log_normalized, dtype=np.float64, copy=True)
    mat.sum_duplicates()
    n_counts = np.asarray(n_counts, dtype=np.float64).ravel()
    if n_counts.shape[0] != mat.shape[0]:
        msg = (
            f"n_counts has {n_counts.shape[0]} values for {mat.shape[0]} cells; pass one total "
            "count per cell."
        )
        raise ValueError(msg)
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    values = np.expm1(mat.data) * n_counts[rows] / target_sum
    rounded = np.rint(values)
    deviation = float(np.abs(values - rounded).max(initial=0.0))
    if deviation > _MAX_INTEGER_DEVIATION or (rounded < 0).any():
        msg = (
            f"recovered counts are not non-negative near-integers (largest distance to an "
            f"integer {deviation:.3f}, minimum {float(rounded.min(initial=0.0))}); the input "
            f"is not log1p(counts / n_counts * {target_sum:g}) with these n_counts."
        )
        raise ValueError(msg)
    out = sp.csr_matrix((rounded.astype(np.float32), mat.indices, mat.indptr), shape=mat.shape)
    out.eliminate_zeros()
    return out


def _generator(random_state: int | np.random.Generator) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if (
        isinstance(random_state, bool)
        or not isinstance(random_state, int | np.integer)
        or random_state < 0
    ):
        msg = (
            f"random_state must be a non-negative int or a numpy.random.Generator, got "
            f"{random_state!r}; pass e.g. random_state=0."
        )
        raise ValueError(msg)
    return np.random.default_rng(int(random_state))
