"""``label_distance_mode="auto"``: how far to trust the label term, decided from the pair
(docs/method.md#automatic-label-distance).

Not part of the published method. On a real pair of studies
(docs/method.md#accuracy-on-real-studies) the label term of the published weights
(``lambda_label=1.5`` against ``lambda_feature=0.5``) spans up to 1.5 cost units in a row while
the cell term of a query cell varies by a median 0.03 across the reference clusters: a row of
``L`` resting on one or two marker genes then moves every cell of its cluster, whatever the
cells say. The rule here puts the two terms on an equal footing and drops a label term the cells
do not corroborate:

1. **Which label distance**: the robust one (:mod:`._robust_label_distance`), which was the most
   accurate label distance on every simulated regime of ``benchmarks/bench_accuracy.py``,
   also at the equal-footing weight below (the published one was not; see the docs).
2. **What weight**: ``lambda_feature = 1`` and ``lambda_label = s``, where ``s`` is the median,
   over the query cells, of the spread (largest minus smallest) of a cell's mean cell-term cost
   ``0.5 * (1 - rho)`` to the reference clusters. The label term at its most decisive then
   moves a cell as far as the cell term's own preferences do: neither term alone can override
   the other, and a cluster's cells follow the label term only where their own evidence is
   weak. No constant is fitted: the scale comes from the data of the pair.
3. **Or none**: the label term is kept only when it agrees with the cell term beyond chance:
   the mean over query clusters of the Spearman correlation between a row of ``L`` and the same
   row of the cluster-level cell-term cost must exceed that of row-wise permutations of ``L``
   (one-sided permutation test, ``alpha = 0.05``, 199 seeded permutations). A label term
   of pure noise, or a constant one, gets ``lambda_label = 0``.

The cell-term figures are computed on a seeded, stratified subsample (at most 2,000 cells per
study, every cluster kept), so the decision costs one ``2,000 x 2,000`` matrix product.

:func:`choose` and :func:`coverage_association` are a tested and rejected variant of step 1
(``init_geom`` does not use them; ``benchmarks/bench_accuracy.py`` and
``benchmarks/bench_real_pair.py`` measure them as ``auto_choice`` and ``auto_shrink``): of the
published and the robust label distance, take the one whose rows agree better with the cell
term. It chose the robust one on every simulated seed and on the real pair, so it changed
nothing (docs/method.md#automatic-label-distance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = [
    "AutoDecision",
    "cell_term_summary",
    "choose",
    "coverage_association",
    "decide",
    "label_cell_association",
]

#: Significance level of the association test (a label term that agrees with the cells no
#: better than a permutation of itself gets no weight).
ALPHA = 0.05
#: Row-wise permutations of ``L`` in the association test.
N_PERMUTATIONS = 199
#: Cells per study used for the cell-term figures (stratified: every cluster keeps cells).
MAX_CELLS = 2000
#: Seed of the subsample and the permutations.
SEED = 0


@dataclass(frozen=True)
class AutoDecision:
    """What ``label_distance_mode="auto"`` decided, and why."""

    label_distance: str  # "robust" or "none"
    lambda_feature: float
    lambda_label: float
    cell_scale: float  # s: the median spread of a query cell's cell-term cost
    association: float  # mean row-wise Spearman correlation of L with the cell-term cost
    p_value: float
    reason: str

    def record(self) -> dict:
        """The decision as a flat dict of scalars (for ``label_distance_params``, run.json)."""
        return asdict(self)


def _stratified(labels: np.ndarray, n_clusters: int, total: int, rng) -> np.ndarray:
    """At most ``total`` indices, ``ceil(total / n_clusters)`` per cluster at most, every
    cluster keeping at least one cell; sorted."""
    per = max(1, -(-total // max(n_clusters, 1)))
    keep = []
    for k in range(n_clusters):
        cells = np.flatnonzero(labels == k)
        if cells.size > per:
            cells = rng.choice(cells, size=per, replace=False)
        keep.append(cells)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def cell_term_summary(
    x: np.ndarray,
    y: np.ndarray,
    query_codes: np.ndarray,
    ref_codes: np.ndarray,
    n_query: int,
    n_reference: int,
    *,
    max_cells: int = MAX_CELLS,
    seed: int = SEED,
) -> tuple[np.ndarray, float]:
    """The cluster-level cell-term cost and the cell term's scale, on a subsample.

    Parameters
    ----------
    x, y
        Unit (or zero) feature rows of the query and reference cells (their inner product is
        ``rho``).
    query_codes, ref_codes
        Cluster code of every query / reference cell.
    n_query, n_reference
        Number of query / reference clusters.

    Returns
    -------
    M
        ``(n_query, n_reference)``: the mean of ``0.5 * (1 - rho)`` between the sampled cells
        of query cluster ``k`` and of reference cluster ``c`` (NaN for a cluster without
        cells).
    s
        The median over the sampled query cells of ``max_c m_i(c) - min_c m_i(c)``, with
        ``m_i(c)`` the mean cell-term cost of cell ``i`` to reference cluster ``c``.
    """
    rng = np.random.default_rng(seed)
    rows = _stratified(np.asarray(query_codes), n_query, max_cells, rng)
    cols = _stratified(np.asarray(ref_codes), n_reference, max_cells, rng)
    rho = np.asarray(x[rows], dtype=np.float64) @ np.asarray(y[cols], dtype=np.float64).T
    cost = 0.5 * (1.0 - rho)
    codes_r = np.asarray(ref_codes)[cols]
    counts = np.bincount(codes_r, minlength=n_reference).astype(np.float64)
    onehot = np.zeros((cols.size, n_reference))
    onehot[np.arange(cols.size), codes_r] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_cell = (cost @ onehot) / counts  # sampled query cells x reference clusters
    present = counts > 0
    spread = per_cell[:, present].max(axis=1) - per_cell[:, present].min(axis=1)
    codes_q = np.asarray(query_codes)[rows]
    M = np.full((n_query, n_reference), np.nan)
    for k in range(n_query):
        own = codes_q == k
        if own.any():
            M[k] = per_cell[own].mean(axis=0)
    return M, float(np.median(spread)) if spread.size else 0.0


def _row_spearman(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``A`` with the same row of ``B`` (ties share their
    mean rank; 0 for a constant row); both may hold stacks of matrices along leading axes."""
    ra = stats.rankdata(A, axis=-1)
    rb = stats.rankdata(B, axis=-1)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    num = (ra * rb).sum(axis=-1)
    denominator = np.linalg.norm(ra, axis=-1) * np.linalg.norm(rb, axis=-1)
    return np.divide(num, denominator, out=np.zeros_like(num), where=denominator > 0)


def label_cell_association(
    L: np.ndarray,
    M: np.ndarray,
    *,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = SEED,
) -> tuple[float, float]:
    """The mean row-wise Spearman correlation of ``L`` with the cell-term cost ``M`` and its
    one-sided permutation p-value (each row of ``L`` permuted on its own, seeded).

    Rows of ``M`` with a missing value and constant rows of ``L`` are left out; with no row
    left the result is ``(0.0, 1.0)``.
    """
    L = np.asarray(L, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    usable = np.isfinite(M).all(axis=1) & (np.ptp(L, axis=1) > 0)
    if not usable.any():
        return 0.0, 1.0
    L, M = L[usable], M[usable]
    observed = float(_row_spearman(L, M).mean())
    rng = np.random.default_rng(seed)
    permuted = rng.permuted(np.broadcast_to(L, (n_permutations, *L.shape)).copy(), axis=-1)
    null = _row_spearman(permuted, np.broadcast_to(M, permuted.shape)).mean(axis=-1)
    p_value = (1.0 + float((null >= observed).sum())) / (1.0 + n_permutations)
    return observed, p_value


def decide(L: np.ndarray, M: np.ndarray, s: float) -> AutoDecision:
    """The decision of ``label_distance_mode="auto"`` from the robust ``L`` and the cell-term
    summary ``(M, s)`` of :func:`cell_term_summary` (see the module docstring)."""
    association, p_value = label_cell_association(L, M)
    if not np.ptp(np.asarray(L)) > 0:
        return AutoDecision(
            "none", 1.0, 0.0, s, association, p_value,
            "the label distance is constant: it carries no information about the clusters",
        )  # fmt: skip
    if not s > 0:
        return AutoDecision(
            "none", 1.0, 0.0, s, association, p_value,
            "the cell term does not vary across the reference clusters, so there is no scale "
            "to weigh the label term against",
        )  # fmt: skip
    if p_value >= ALPHA:
        return AutoDecision(
            "none", 1.0, 0.0, s, association, p_value,
            f"the label distance agrees with the cell term no better than chance (mean row "
            f"Spearman {association:.3f}, permutation p = {p_value:.3f} >= {ALPHA})",
        )  # fmt: skip
    return AutoDecision(
        "robust", 1.0, s, s, association, p_value,
        f"the robust label distance agrees with the cell term (mean row Spearman "
        f"{association:.3f}, permutation p = {p_value:.3f} < {ALPHA}); weighted to the cell "
        f"term's scale (lambda_label = s = {s:.4f}, lambda_feature = 1)",
    )  # fmt: skip


def coverage_association(L: np.ndarray, M: np.ndarray, **kwargs) -> tuple[float, float]:
    """:func:`label_cell_association` with a constant row of ``L`` counted as agreement 0
    (it says nothing about its cluster) instead of left out: the mean is over every row of
    ``M`` without a missing value, so two label distances with different numbers of constant
    rows are compared on the same clusters. The p-value is the same as
    :func:`label_cell_association`'s (observed and null means are scaled alike)."""
    L = np.asarray(L, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    finite = np.isfinite(M).all(axis=1)
    informative = finite & (np.ptp(L, axis=1) > 0)
    association, p_value = label_cell_association(L, M, **kwargs)
    if not finite.any():
        return 0.0, p_value
    return association * informative.sum() / finite.sum(), p_value


def choose(candidates: dict, M: np.ndarray, s: float) -> tuple[str, float, dict]:
    """Of several label distances (name -> ``L``), the one whose rows agree best with the
    cell-term cost ``M`` (:func:`coverage_association`) among those that agree beyond chance
    (permutation ``p < ALPHA``), weighted ``lambda_label = s``; ``"none"`` (weight 0) when no
    candidate is significant. Ties keep the first candidate given. Returns the name, the
    weight and ``{name: (association, p_value)}``."""
    tests = {name: coverage_association(L, M) for name, L in candidates.items()}
    eligible = [
        name for name, (_, p) in tests.items() if p < ALPHA and np.ptp(candidates[name]) > 0
    ]
    if not eligible or not s > 0:
        return "none", 0.0, tests
    best = max(eligible, key=lambda name: tests[name][0])  # first wins a tie
    return best, float(s), tests
