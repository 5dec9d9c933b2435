"""``label_distance_mode="auto"``: how far to trust the label term, decided from the pair
(docs/method.md#automatic-label-distance).

Not part of the published method. On a real pair of studies
(docs/method.md#accuracy-on-real-studies) the label term of the published weights
(``lambda_label=1.5`` against ``lambda_feature=0.5``) spans up to 1.5 cost units in a row while
the cell term of a query cell varies by a median 0.03 across the reference clusters: a row of
``L`` resting on one or two marker genes then moves every cell of its cluster, whatever the
cells say. The rule here first puts the two terms on an equal footing, drops a label term the
cells do not corroborate, and then gives the label term back its full weight on the rows where
the cells and the marginals confirm it:

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
4. **Confirmed rows**: a first, balanced fit at the weights of step 2 on the subsample
   (:func:`first_fit_top1`, a dense float64 Sinkhorn) gives each query cluster its top-1
   reference cluster. Where that is the label term's own nearest cluster (argmin of the row of
   ``L``; the label term, the cells and the marginals agree), the row gets the published label
   weight ``CONFIRMED_WEIGHT = 1.5``, so that every cell of the cluster follows the answer, as
   it does with the published method; the other rows keep ``s``.

The cell-term figures and the first fit are computed on a seeded, stratified subsample (at most
2,000 cells per study, every cluster kept), so the decision costs one ``2,000 x 2,000`` cost
matrix and a few hundred matrix-vector products.

:func:`choose` and :func:`coverage_association` are a tested and rejected variant of step 1
(``init_geom`` does not use them; ``benchmarks/bench_accuracy.py`` and
``benchmarks/bench_real_pair.py`` measure them as ``auto_choice`` and ``auto_shrink``): of the
published and the robust label distance, take the one whose rows agree better with the cell
term. It chose the robust one on every simulated seed and on the real pair, so it changed
nothing (docs/method.md#automatic-label-distance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import special, stats

__all__ = [
    "AutoDecision",
    "cell_term_summary",
    "choose",
    "confirm_rows",
    "coverage_association",
    "decide",
    "first_fit_top1",
    "label_cell_association",
    "subsample",
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
#: The label weight of a confirmed row (step 4): the published ``lambda_label``.
CONFIRMED_WEIGHT = 1.5
#: The first fit's stopping rule: the solver's default marginal error, checked every 10
#: iterations, at most this many iterations.
FIRST_FIT_THRESHOLD = 1e-3
FIRST_FIT_MAX_ITERATIONS = 2000


@dataclass(frozen=True)
class AutoDecision:
    """What ``label_distance_mode="auto"`` decided, and why."""

    label_distance: str  # "robust" or "none"
    lambda_feature: float
    lambda_label: float  # the weight of the rows not confirmed (s), 0 for none
    cell_scale: float  # s: the median spread of a query cell's cell-term cost
    association: float  # mean row-wise Spearman correlation of L with the cell-term cost
    p_value: float
    reason: str
    confirmed_weight: float = 0.0  # the weight of the confirmed rows (step 4)
    confirmed: tuple[str, ...] = ()  # the query clusters whose row is confirmed
    first_fit_converged: bool | None = None  # None: no first fit (no label term)

    def weights(self, query_clusters) -> np.ndarray:
        """The label weight of each query cluster's row of ``L`` (float64)."""
        confirmed = set(self.confirmed)
        high, low = self.confirmed_weight, self.lambda_label
        return np.array([high if c in confirmed else low for c in query_clusters], np.float64)

    def record(self) -> dict:
        """The decision as a dict of scalars and one list of cluster names (``confirmed``),
        for ``label_distance_params`` and run.json."""
        out = asdict(self)
        out["confirmed"] = [str(c) for c in self.confirmed]
        return out


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


def subsample(
    query_codes: np.ndarray,
    ref_codes: np.ndarray,
    n_query: int,
    n_reference: int,
    *,
    max_cells: int = MAX_CELLS,
    seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded, stratified subsample of both studies' cells the decision reads: sorted
    query rows and reference columns (every cluster keeps at least one cell)."""
    rng = np.random.default_rng(seed)
    rows = _stratified(np.asarray(query_codes), n_query, max_cells, rng)
    cols = _stratified(np.asarray(ref_codes), n_reference, max_cells, rng)
    return rows, cols


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
    rows, cols = subsample(
        query_codes, ref_codes, n_query, n_reference, max_cells=max_cells, seed=seed
    )
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


def _balanced(codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """Every present cluster the same total mass, split evenly over its cells (sums to 1)."""
    counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    return 1.0 / (np.count_nonzero(counts) * counts[codes])


def _kernel_sinkhorn(K, a, b, threshold, max_iterations):
    """Balanced Sinkhorn on a kernel ``K``: the plan and whether it converged."""
    u, v = np.ones_like(a), np.ones_like(b)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for iteration in range(max_iterations):
            u = a / (K @ v)
            v = b / (K.T @ u)
            if iteration % 10 == 9:
                if not (np.isfinite(u).all() and np.isfinite(v).all()):
                    return None, False
                if np.abs(u * (K @ v) - a).sum() < threshold:
                    return u[:, None] * K * v[None, :], True
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        return None, False
    return u[:, None] * K * v[None, :], False


def _log_sinkhorn(logK, a, b, threshold, max_iterations):
    """Balanced log-domain Sinkhorn (for a kernel that would underflow)."""
    f, g = np.zeros_like(a), np.zeros_like(b)
    for iteration in range(max_iterations):
        f = np.log(a) - special.logsumexp(logK + g[None, :], axis=1)
        g = np.log(b) - special.logsumexp(logK + f[:, None], axis=0)
        if iteration % 10 == 9:
            rows = np.exp(special.logsumexp(logK + f[:, None] + g[None, :], axis=1))
            if np.abs(rows - a).sum() < threshold:
                return np.exp(logK + f[:, None] + g[None, :]), True
    return np.exp(logK + f[:, None] + g[None, :]), False


def first_fit_top1(
    x: np.ndarray,
    y: np.ndarray,
    query_codes: np.ndarray,
    ref_codes: np.ndarray,
    weighted_label: np.ndarray,
    lambda_feature: float,
    epsilon: float,
    *,
    threshold: float = FIRST_FIT_THRESHOLD,
    max_iterations: int = FIRST_FIT_MAX_ITERATIONS,
) -> tuple[np.ndarray, bool]:
    """Each query cluster's top-1 reference cluster in a balanced entropic fit of the given
    cells (step 4 of the module docstring), by a dense float64 Sinkhorn.

    Parameters
    ----------
    x, y
        Feature rows of the (subsampled) query and reference cells.
    query_codes, ref_codes
        Their cluster codes.
    weighted_label
        ``lambda_label * L`` (query x reference clusters, weights included).
    lambda_feature, epsilon
        The cost's feature weight and the entropic regularization.

    Returns
    -------
    top1
        Per query cluster, the reference cluster receiving most of its plan mass (with
        balanced marginals this is the argmax of the ``"mean"`` mapping), ``-1`` for a
        cluster without cells.
    converged
        Whether the row marginal error fell below ``threshold`` (checked every 10 iterations).
    """
    qc = np.asarray(query_codes)
    rc = np.asarray(ref_codes)
    n_q, n_r = weighted_label.shape
    C = lambda_feature * 0.5 * (1.0 - np.asarray(x, np.float64) @ np.asarray(y, np.float64).T)
    C += np.asarray(weighted_label, dtype=np.float64)[np.ix_(qc, rc)]
    a, b = _balanced(qc, n_q), _balanced(rc, n_r)
    logK = -(C - C.min(axis=1, keepdims=True)) / epsilon  # row shifts fold into f
    P = None
    if logK.min() > -700.0:  # the kernel does not underflow: matrix-vector products
        P, converged = _kernel_sinkhorn(np.exp(logK), a, b, threshold, max_iterations)
    if P is None:  # it would underflow, or the scalings overflowed: the log domain
        P, converged = _log_sinkhorn(logK, a, b, threshold, max_iterations)
    onehot_q = np.zeros((qc.size, n_q))
    onehot_q[np.arange(qc.size), qc] = 1.0
    onehot_r = np.zeros((rc.size, n_r))
    onehot_r[np.arange(rc.size), rc] = 1.0
    clusters = onehot_q.T @ P @ onehot_r
    top1 = np.where(onehot_q.sum(axis=0) > 0, clusters.argmax(axis=1), -1)
    return top1, converged


def confirm_rows(
    decision: AutoDecision,
    L: np.ndarray,
    top1: np.ndarray,
    query_clusters,
    converged: bool,
) -> AutoDecision:
    """Step 4: the rows of ``L`` whose argmin is the first fit's ``top1`` (and that are not
    constant) get ``CONFIRMED_WEIGHT``; the others keep ``decision.lambda_label``."""
    L = np.asarray(L, dtype=np.float64)
    varying = np.ptp(L, axis=1) > 1e-12
    confirmed = varying & (np.argmin(L, axis=1) == np.asarray(top1))
    names = tuple(str(c) for c, keep in zip(query_clusters, confirmed, strict=True) if keep)
    reason = (
        f"{decision.reason}; {len(names)} of {len(confirmed)} rows confirmed by a first fit at "
        f"that weight (its top-1 reference cluster is the row's nearest in L) and weighted "
        f"lambda_label = {CONFIRMED_WEIGHT}"
    )
    return replace(
        decision,
        reason=reason,
        confirmed_weight=CONFIRMED_WEIGHT,
        confirmed=names,
        first_fit_converged=bool(converged),
    )


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
