"""Confidence of each match: the mapping and the distance under resampling
(``DatasetMap.bootstrap``, docs/method.md#confidence-of-each-match).

Every resample draws, independently and from its own seed:

- **cells**: a stratified bootstrap within every cluster of both studies. Cluster ``k``'s
  ``n_k`` cells are drawn ``n_k`` times with replacement; the drawn cells enter with their
  multiplicity ``w_i`` as a weight in the marginals (``a_i`` proportional to ``w_i`` times the
  cell's weight in the full problem: with balanced marginals every cluster still carries
  ``1 / K``), which is the same transport problem as the one on the explicitly duplicated
  cells (duplicated rows get equal potentials and split their mass evenly). The geometry is
  not rebuilt: the rows of the drawn cells are taken from ``geom.x_aug`` / ``geom.y_aug``.
- **samples** (donors): within each study, as many donors as it has (with pseudobulk
  profiles) are drawn with replacement, and limma is re-run on the drawn donors' profiles
  (all genes of the DE tables) with the bootstrap's variance shrinkage removed (see
  ``DONOR_SCHEME``); the AUROC columns of the original tables are kept, and the marker
  lists, the label distance ``L`` and the label columns of ``x_aug``
  (``lambda_label * L[query code]``) are rebuilt; the cell features stay. This needs the
  per-(sample, cluster) count sums that :func:`pairot.pp.preprocess_adatas` stores in
  ``uns["pairot"]["pseudobulk"]``. With ``init_geom(label_distance_mode="robust")`` the
  donors are not resampled (an INFO log, a WARNING when only ``"samples"`` was asked for, and
  then the cells are resampled): that label distance rests on the one-vs-all AUROC alone,
  which a donor resample keeps, so every resample would rebuild the same ``L``.

Each resample is solved again with the engine and the options of the full solve, starting
from the full fit's potentials restricted to the drawn cells (:data:`WARM_START`; shifted by
``tau * epsilon * log(a' / a)`` for the resample's marginal ``a'``, so that the dual function
``f - tau epsilon log a`` carries over), and aggregated in one pass. The stopping rule is the
full solve's, so the answers are those of a cold start within it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm.auto import tqdm

from .._interrupt import check as check_interrupt
from .._interrupt import interruptible
from ..pp._limma import group_statistics, limma_ava, limma_ova
from ..pp._pseudobulk import LogExpression
from ..pp._validate import study
from ._answers._scores import mean_cost
from ._cost._label_distance import label_distance
from ._cost._labels import restrict_markers, study_markers
from ._ot import cluster_sums
from ._solve import run_sinkhorn

logger = logging.getLogger("pairot")

#: A study's donors are resampled only when it has at least this many donors with profiles.
MIN_DONORS = 3
#: Donor draws with a single distinct donor (no replicate at all) are drawn again, at most
#: this many times in a row.
_MAX_REDRAWS = 100
#: How a cell resample enters the solve: ``"duplicated"`` (default) repeats a drawn cell's
#: row once per draw, so every resample has the shapes of the full problem (cluster sizes
#: included) and reuses its compiled JAX code; ``"weighted"`` keeps each drawn cell once with
#: its multiplicity as a weight (the same problem on about 63% of the cells per side, but new
#: shapes, hence a new compilation, at every resample). See benchmarks/bench_bootstrap.py.
CELL_LAYOUT = "duplicated"
#: How a donor draw enters limma. ``"corrected"`` (default): a donor drawn ``m`` times
#: contributes its profiles ``m`` times, except the profile of a cluster that has a single
#: profile in the study (kept once: its mean is fixed and it has no spread), and every
#: cluster's within-cluster sum of squares is multiplied by ``k_c / (k_c - 1)`` (``k_c``: the
#: cluster's profiles in the study). Given ``N`` draws among its ``k`` profiles, the sum of
#: squares of a bootstrap sample has expectation ``(N - 1) / k`` times the study's, against
#: ``(N - 1) / (k - 1)`` for ``N`` new independent profiles: without the factor, limma sees
#: too little residual variance and passes too many markers. ``"duplicated"``: the same
#: draw fitted as if the repeated profiles were independent replicates (the first
#: implementation). ``"bayesian"``: no draw; every donor gets a weight ``S * Dirichlet(1,
#: ..., 1)``, used as limma's precision weight on its profiles. Mean markers over 20 donor
#: resamples of the demo, against the full fit's 48 (query) and 102 (reference):
#: corrected 48.9 and 102.9, duplicated 54.0 and 138.6, bayesian 57.8 and 148.4
#: (benchmarks/bench_bootstrap.py ``--donor-schemes``).
DONOR_SCHEME = "corrected"
DONOR_SCHEMES = ("corrected", "duplicated", "bayesian")
#: Whether a resample starts from the full fit's potentials (else from the engine's start).
WARM_START = True
_LABEL_COLUMNS = {"ova": ("cluster",), "ava": ("cluster", "versus")}
_LIMMA_COLUMNS = ("logFC", "P.Value", "adj.P.Val")


# ------------------------------------------------------------------------------ cell draws
def draw_cells(
    codes: np.ndarray, rng: np.random.Generator, layout: str = "weighted"
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified bootstrap of cells: each cluster's ``n_k`` cells drawn ``n_k`` times.

    Returns ``(rows, weights)``. ``layout="weighted"``: the drawn cells (sorted indices, each
    once) and their multiplicities (>= 1; those of a cluster sum to its size).
    ``"duplicated"``: every drawn cell repeated once per draw (sorted indices, as many as
    ``codes``, so each cluster keeps its size) with weights 1.
    """
    codes = np.asarray(codes, dtype=np.int64)
    sizes = np.bincount(codes)
    order = np.argsort(codes, kind="stable")
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    drawn = order[start[codes] + rng.integers(0, sizes[codes])]
    counts = np.bincount(drawn, minlength=codes.size)
    rows = np.flatnonzero(counts)
    if layout == "duplicated":
        rows = np.repeat(rows, counts[rows])
        return rows, np.ones(rows.size)
    return rows, counts[rows].astype(np.float64)


# ---------------------------------------------------------------------------- donor draws
def _codes_in(values: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of every value of a label column in ``index`` (-1 when absent)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        lookup = index.get_indexer(values.cat.categories.astype(str))
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1)
    return index.get_indexer(values.astype(str).to_numpy())


@dataclass
class _Rows:
    """The rows of one DE table that can pass the marker filter whatever limma says (their
    AUROC, which resampling keeps, passes), with the cluster(s) and gene of each row."""

    base: pd.DataFrame
    clusters: tuple[np.ndarray, ...]
    genes: np.ndarray


class StudyDE:
    """The DE of one study, rebuilt from its stored pseudobulk profiles for a donor draw.

    Parameters
    ----------
    counts
        Summed counts, profiles x genes.
    cluster, sample
        Cluster and sample code of each profile.
    n_clusters
        Number of clusters (rows of limma's outputs).
    tables
        ``{"ova": de_ova, "ava": de_ava}`` of the study.
    clusters, genes
        The names behind the cluster codes and the columns of ``counts``.
    auroc_threshold
        The marker filter's AUROC threshold: rows below it never pass, so only the others
        are rebuilt.
    target_sum
        Each profile is scaled to this total before ``log1p`` (as in preprocessing).
    """

    def __init__(
        self,
        counts,
        cluster,
        sample,
        n_clusters: int,
        tables: Mapping[str, pd.DataFrame],
        clusters: pd.Index,
        genes: pd.Index,
        auroc_threshold: float,
        target_sum: float,
    ):
        self.counts = counts
        self.cluster = np.asarray(cluster, dtype=np.int64)
        sample = np.asarray(sample, dtype=np.int64)
        self.donors = np.unique(sample)
        self.rows_of = {int(d): np.flatnonzero(sample == d) for d in self.donors}
        self.profiles_per_cluster = np.bincount(self.cluster, minlength=int(n_clusters))
        self.n_clusters = int(n_clusters)
        self.target_sum = float(target_sum)
        self.rows = {}
        for kind, table in tables.items():
            self.rows[kind] = _table_rows(table, kind, clusters, genes, auroc_threshold)

    @property
    def n_donors(self) -> int:
        return int(self.donors.size)

    def draw(self, rng: np.random.Generator, scheme: str | None = None) -> np.ndarray:
        """The weight of every donor (in the order of ``donors``) in one resample.

        ``"corrected"`` and ``"duplicated"``: how often each donor is drawn in ``S`` draws
        with replacement (at least two distinct donors; such a draw is otherwise drawn
        again). ``"bayesian"``: ``S * Dirichlet(1, ..., 1)``, positive, mean 1.
        """
        scheme = DONOR_SCHEME if scheme is None else scheme
        if scheme == "bayesian":
            weights = rng.dirichlet(np.ones(self.n_donors)) * self.n_donors
            # a Dirichlet weight can underflow to 0 (probability ~0); keep every donor in
            return np.maximum(weights, np.finfo(np.float64).tiny)
        for _ in range(_MAX_REDRAWS):
            drawn = rng.integers(0, self.n_donors, self.n_donors)
            counts = np.bincount(drawn, minlength=self.n_donors)
            if np.count_nonzero(counts) >= 2:
                return counts.astype(np.float64)
        msg = "could not draw two distinct donors"  # pragma: no cover - p <= (1/3)**200
        raise RuntimeError(msg)  # pragma: no cover

    def tables(self, weights, scheme: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The DE tables (the rows that can pass the marker filter) with limma's columns
        recomputed for the donor ``weights`` of :meth:`draw` (``DONOR_SCHEME`` says how)."""
        scheme = DONOR_SCHEME if scheme is None else scheme
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != self.donors.shape:
            msg = f"one weight per donor expected ({self.donors.size}), got {weights.shape}"
            raise ValueError(msg)
        profile_weights = None
        if scheme == "bayesian":
            rows = np.concatenate([self.rows_of[int(d)] for d in self.donors])
            profile_weights = np.concatenate(
                [np.full(self.rows_of[int(d)].size, w) for d, w in zip(self.donors, weights)]
            )
            if np.all(profile_weights == 1.0):
                profile_weights = None  # the unweighted fit, exactly
        else:
            if np.any(weights % 1 != 0) or np.any(weights < 0):
                msg = f"donor counts must be whole numbers >= 0, got {weights}"
                raise ValueError(msg)
            single = self.profiles_per_cluster[self.cluster] == 1
            parts = []
            for d, c in zip(self.donors, weights.astype(np.int64)):
                own = self.rows_of[int(d)]
                if scheme == "corrected" and c > 1:
                    parts.append(np.concatenate([np.tile(own[~single[own]], c), own[single[own]]]))
                else:
                    parts.append(np.tile(own, c))
            rows = np.concatenate(parts)
        labels = self.cluster[rows]
        expr = LogExpression(np.asarray(self.counts[rows], dtype=np.float64), self.target_sum)
        statistics = group_statistics(expr, labels, self.n_clusters, weights=profile_weights)
        expr.release()
        if scheme == "corrected":
            k = self.profiles_per_cluster[np.unique(labels)].astype(np.float64)
            factor = np.divide(k, k - 1.0, out=np.ones_like(k), where=k > 1)
            statistics = (statistics[0], statistics[1] * factor[None, :])
        fits = {"statistics": statistics, "weights": profile_weights}
        ova = limma_ova(expr, labels, self.n_clusters, **fits)
        ava = limma_ava(expr, labels, self.n_clusters, **fits)
        out = []
        for kind, results in (("ova", ova), ("ava", ava)):
            part = self.rows[kind]
            index = (*part.clusters, part.genes)
            columns = {name: values[index] for name, values in zip(_LIMMA_COLUMNS, results)}
            out.append(part.base.assign(**columns))
        return out[0], out[1]


def _table_rows(table, kind, clusters, genes, auroc_threshold) -> _Rows:
    auroc = table["auroc"].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.flatnonzero(auroc >= auroc_threshold)
    base = table.take(keep).reset_index(drop=True)
    codes = []
    for column in _LABEL_COLUMNS[kind]:
        if not isinstance(table[column].dtype, pd.CategoricalDtype):
            # every cluster stays a category, also one without rows left
            base[column] = pd.Categorical(table[column])[keep]
        code = _codes_in(base[column], clusters)
        if (code < 0).any():
            missing = base[column][code < 0].astype(str).iloc[0]
            msg = f"its DE tables name cluster {missing!r}, which its stored profiles lack"
            raise LookupError(msg)
        codes.append(code)
    gene = _codes_in(base["gene"], genes)
    if (gene < 0).any():
        missing = base["gene"][gene < 0].astype(str).iloc[0]
        msg = f"its DE tables hold gene {missing!r}, which its stored profiles lack"
        raise LookupError(msg)
    return _Rows(base=base, clusters=tuple(codes), genes=gene)


def study_de(info: Mapping, name: str, auroc_threshold: float) -> tuple[StudyDE | None, str]:
    """The resamplable DE of one study from its ``uns["pairot"]``, or ``None`` and why not."""
    stored = info.get("pseudobulk")
    if not isinstance(stored, Mapping) or "counts" not in stored:
        if info.get("params", {}).get("store_pseudobulk") is False:
            return None, (
                "it was preprocessed with store_pseudobulk=False, so its uns['pairot'] holds "
                "no pseudobulk profiles; preprocess it again with store_pseudobulk=True (the "
                "default) to resample its donors"
            )
        return None, (
            "its uns['pairot'] holds no pseudobulk profiles (it was preprocessed by an "
            "earlier pairot or by upstream pairOT); preprocess it again with "
            "pairot.pp.preprocess_adatas to resample its donors"
        )
    try:
        counts = np.asarray(stored["counts"])
        cluster = np.asarray(stored["cluster"], dtype=np.int64)
        sample = np.asarray(stored["sample"], dtype=np.int64)
        clusters = pd.Index(np.asarray(stored["clusters"]).astype(str))
        genes = pd.Index(np.asarray(stored["genes"]).astype(str))
    except (KeyError, TypeError, ValueError) as error:
        return None, f"its stored pseudobulk profiles are incomplete ({error!r})"
    shape_ok = counts.ndim == 2 and counts.shape == (cluster.size, genes.size)
    if not shape_ok or sample.size != cluster.size:
        return None, (
            f"its stored pseudobulk profiles are inconsistent (counts {counts.shape}, "
            f"{cluster.size} cluster codes, {sample.size} sample codes, {genes.size} genes)"
        )
    n_donors = np.unique(sample).size
    if n_donors < MIN_DONORS:
        return None, (
            f"it has only {n_donors} sample(s) (donors) with pseudobulk profiles, and "
            f"resampling donors needs at least {MIN_DONORS} (limma needs replicates)"
        )
    params = info.get("params", {})
    target_sum = float(params.get("pseudobulk_target_sum", 1e5)) if params else 1e5
    try:
        de = StudyDE(
            counts,
            cluster,
            sample,
            len(clusters),
            {"ova": info["de_ova"], "ava": info["de_ava"]},
            clusters,
            genes,
            auroc_threshold,
            target_sum,
        )
    except LookupError as error:
        return None, str(error)
    return de, ""


# -------------------------------------------------------------------------- label distance
def label_params(dm) -> dict:
    """The marker and label-distance parameters of ``dm.init_geom`` (its defaults when an
    older object lacks them)."""
    defaults = {
        "n_genes_ova": 10,
        "n_genes_ava": 3,
        "overlap_threshold_ava": 0.3,
        "overlap_n_genes_ava": 10,
        "adj_p_val_threshold": 0.05,
        "auroc_threshold": 0.6,
        "logfc_threshold": 1.0,
        "gene_filtering": True,
        "q_norm": 0.33,
        "label_distance_mode": "pairot",
    }
    return {**defaults, **(getattr(dm, "_label_params", None) or {})}


class LabelDistance:
    """``L`` (query x reference clusters) from DE tables, as ``DatasetMap.init_geom`` builds
    it with ``label_distance_mode="pairot"``; the marker lists of a study whose donors are not
    resampled are built once. (In ``"robust"`` mode donors are not resampled, see the module
    docstring.)"""

    def __init__(self, dm):
        self.dm = dm
        self.params = label_params(dm)
        self.q_norm = self.params["q_norm"]
        self.clusters = {"adata1": dm.query_clusters, "adata2": dm.reference_clusters}
        self._fixed = {}

    def markers(self, name: str, de_ova: pd.DataFrame, de_ava: pd.DataFrame) -> pd.DataFrame:
        table = study_markers(de_ova, de_ava, self.params, query=name == "adata1")
        return restrict_markers(table, self.clusters[name], name)

    def fixed(self, name: str) -> pd.DataFrame:
        """The marker lists of the study's stored DE tables (computed once)."""
        if name not in self._fixed:
            info = self.dm._info[0 if name == "adata1" else 1]
            self._fixed[name] = self.markers(name, info["de_ova"], info["de_ava"])
        return self._fixed[name]

    def __call__(self, query_markers: pd.DataFrame, reference_markers: pd.DataFrame):
        _, L, _ = label_distance(query_markers, reference_markers, q_norm=self.q_norm)
        L = L.loc[self.clusters["adata1"], self.clusters["adata2"]]
        return L.to_numpy(dtype=np.float64)


# ------------------------------------------------------------------------ solve and outputs
def _cluster_sums(points: np.ndarray, codes: np.ndarray, weights: np.ndarray, k: int):
    """``sum_{i in cluster} w_i points_i`` for every cluster, float64 (k x d)."""
    onehot = sparse.csr_matrix(
        (weights, (codes, np.arange(codes.size))), shape=(k, codes.size), dtype=np.float64
    )
    return np.asarray(onehot @ np.asarray(points, dtype=np.float64))


def weighted_outputs(agg, b, x, y, offset, qc, rc, wq, wr, n_query: int, n_ref: int):
    """The ``"mean"`` mapping and the distance of a plan over weighted cells.

    A cell of multiplicity ``w`` stands for ``w`` identical copies: the mapping averages
    ``tm_k(j) / b_j`` over the reference cells of a cluster with weights ``w_j``; the
    distance is ``sum P C / sum P`` (a merged cell carries its copies' mass), and where the
    plan carries no mass the unweighted mean cost over the copies,
    ``offset + (sum_k w x) . (sum_c w y) / (W_k W_c)``. With all ``w = 1`` these are
    :func:`~._answers._scores.mapping_mean` and
    :func:`~._answers._scores.cluster_distance`.
    """
    tm = agg["tm"]
    ratio = np.divide(tm, b[None, :], out=np.zeros_like(tm, dtype=np.float64), where=b > 0)
    w_ref = np.bincount(rc, weights=wr, minlength=n_ref)
    sums = cluster_sums(ratio * wr[None, :], rc, n_ref)
    mapping = np.divide(sums, w_ref[None, :], out=np.full_like(sums, np.nan), where=w_ref > 0)
    w_query = np.bincount(qc, weights=wq, minlength=n_query)
    pairs = np.outer(w_query, w_ref)
    cost_sum = (
        offset * pairs + _cluster_sums(x, qc, wq, n_query) @ _cluster_sums(y, rc, wr, n_ref).T
    )
    return mapping, mean_cost(agg["mass"], agg["cost_mass"], cost_sum, pairs)


def _restricted(potential, rows, marginal, full_marginal, scale) -> np.ndarray:
    """The full fit's ``potential`` on ``rows`` for the resample's ``marginal``: shifted by
    ``scale * log(marginal / full_marginal[rows])`` (``scale = tau * epsilon``); cells without
    mass keep the full fit's value."""
    base = np.asarray(potential, dtype=np.float64)[rows]
    shift = scale * np.log(marginal / np.asarray(full_marginal, dtype=np.float64)[rows])
    return np.where(np.isfinite(shift), base + shift, base)


def solve_weighted(dm, x_aug, y_aug, rows, cols, wq, wr):
    """Solve the problem of ``dm`` on the given cells (rows of ``x_aug`` / ``y_aug`` already
    taken) with multiplicities ``wq`` / ``wr``; returns (mapping, distance, converged)."""
    from ._ot import aggregate

    geom, problem = dm.geom, dm.ot_prob
    n_query, n_ref = len(dm.query_clusters), len(dm.reference_clusters)
    options = dict(getattr(dm, "_solve_options", None) or {})
    block_memory_budget = options.get("block_memory_budget")
    a = wq * problem.a[rows]
    b = wr * problem.b[cols]
    a, b = a / a.sum(), b / b.sum()
    qc, rc = geom.query_codes[rows], geom.ref_codes[cols]
    init = None
    if WARM_START and dm.ot_solution is not None:
        eps = geom.epsilon
        with np.errstate(divide="ignore", invalid="ignore"):
            init = (
                _restricted(dm.ot_solution.f, rows, a, problem.a, problem.tau_a * eps),
                _restricted(dm.ot_solution.g, cols, b, problem.b, problem.tau_b * eps),
            )
    solution = run_sinkhorn(
        geom,
        x_aug,
        y_aug,
        a,
        b,
        qc,
        rc,
        tau_a=problem.tau_a,
        tau_b=problem.tau_b,
        options=options,
        progress=False,
        init=init,
    )
    agg = aggregate(
        x_aug,
        y_aug,
        geom.offset,
        np.asarray(solution.f),
        np.asarray(solution.g),
        epsilon=geom.epsilon,
        query_codes=qc,
        ref_codes=rc,
        n_query_clusters=n_query,
        n_ref_clusters=n_ref,
        batch_size=geom.batch_size,
        kernel=solution.kernel,
        progress=False,
        block_memory_budget=block_memory_budget,
        active=solution.blocks,
        devices=list(solution.devices),
    )
    solution.kernel = None
    if solution.blocks is not None:
        solution.blocks.release()
    mapping, distance = weighted_outputs(
        agg, b, x_aug, y_aug, geom.offset, qc, rc, wq, wr, n_query, n_ref
    )
    return mapping, distance, bool(solution.converged)


# ---------------------------------------------------------------------------- the resamples
class Resampler:
    """The resamples of one solved ``DatasetMap``: what is drawn and how each is solved."""

    def __init__(self, dm, kinds: tuple[str, ...], random_state: int):
        self.dm = dm
        self.random_state = random_state
        geom = dm.geom
        self.n_ref = len(dm.reference_clusters)
        self.features = geom.x_aug[:, : geom.x_aug.shape[1] - self.n_ref]
        self.studies: dict[str, StudyDE] = {}
        self.cells = "cells" in kinds
        params = label_params(dm)
        if "samples" in kinds and params["label_distance_mode"] in ("robust", "auto"):
            log = logger.info if self.cells else logger.warning
            log(
                "DatasetMap.bootstrap: the samples (donors) are not resampled: the robust label "
                "distance (label_distance_mode='robust') rests on the one-vs-all AUROC of the "
                "cells, which a donor resample keeps, so it would not change "
                "(docs/method.md#robust-label-distance)."
            )
        elif "samples" in kinds:
            threshold = params["auroc_threshold"]
            for name, info in zip(("adata1", "adata2"), dm._info, strict=True):
                de, reason = study_de(info, name, threshold)
                if de is None:
                    logger.warning(
                        "DatasetMap.bootstrap: the samples (donors) of %s are not resampled: %s.",
                        study(name),
                        reason,
                    )
                else:
                    self.studies[name] = de
        if "samples" in kinds and not self.studies and not self.cells:
            logger.warning(
                "DatasetMap.bootstrap: no study's samples (donors) can be resampled; "
                "resampling the cells instead."
            )
            self.cells = True
        self.labels = LabelDistance(dm) if self.studies else None

    @property
    def kinds(self) -> tuple[str, ...]:
        return (("cells",) if self.cells else ()) + (("samples",) if self.studies else ())

    def label_distance(self, donors: Mapping[str, np.ndarray]) -> np.ndarray:
        """``L`` with the DE of the studies in ``donors`` rebuilt with those donor weights."""
        markers = {}
        for name in ("adata1", "adata2"):
            if name in donors:
                tables = self.studies[name].tables(donors[name])
                markers[name] = self.labels.markers(name, *tables)
            else:
                markers[name] = self.labels.fixed(name)
        return self.labels(markers["adata1"], markers["adata2"])

    def x_aug(self, rows: np.ndarray, L: np.ndarray | None) -> np.ndarray:
        """The query's augmented vectors of ``rows``, with label columns from ``L``."""
        geom = self.dm.geom
        if L is None:
            return geom.x_aug[rows]
        label = (geom.lambda_label * L.astype(np.float32))[geom.query_codes[rows]]
        return np.concatenate([self.features[rows], label], axis=1).astype(np.float32)

    def one(self, index: int):
        """Resample ``index``: (mapping, distance, L or None, converged)."""
        geom = self.dm.geom
        n, m = geom.query_codes.size, geom.ref_codes.size
        if self.cells:
            rng = np.random.default_rng([self.random_state, index, 0])
            rows, wq = draw_cells(geom.query_codes, rng, CELL_LAYOUT)
            cols, wr = draw_cells(geom.ref_codes, rng, CELL_LAYOUT)
        else:
            rows, wq, cols, wr = np.arange(n), np.ones(n), np.arange(m), np.ones(m)
        L = None
        if self.studies:
            rng = np.random.default_rng([self.random_state, index, 1])
            donors = {name: de.draw(rng) for name, de in self.studies.items()}
            L = self.label_distance(donors)
        mapping, distance, converged = solve_weighted(
            self.dm, self.x_aug(rows, L), geom.y_aug[cols], rows, cols, wq, wr
        )
        return mapping, distance, L, converged


def bootstrap(dm, n_bootstrap, *, resample, confidence, random_state, progress) -> pd.DataFrame:
    """``DatasetMap.bootstrap`` (see there), with the arguments of
    :func:`~pairot.tl._checks.check_bootstrap` (``resample``: the kinds, in order)."""
    kinds = resample
    dm._require("geom")
    dm._require("problem")
    solution = dm._require("solution")
    point_mapping = dm.compute_mapping("mean").to_numpy(dtype=np.float64)
    point_distance = dm.compute_distance().to_numpy(dtype=np.float64)
    resampler = Resampler(dm, kinds, random_state)
    n_query, n_ref = point_mapping.shape
    draws = {
        "mapping": np.empty((n_bootstrap, n_query, n_ref)),
        "distance": np.empty((n_bootstrap, n_query, n_ref)),
    }
    if resampler.studies:
        draws["label_distance"] = np.empty((n_bootstrap, n_query, n_ref))
    not_converged = 0
    start = time.perf_counter()
    with (
        interruptible(),
        tqdm(total=n_bootstrap, desc="Bootstrap", disable=not progress, leave=False) as bar,
    ):
        for index in range(n_bootstrap):
            check_interrupt()
            mapping, distance, L, converged = resampler.one(index)
            draws["mapping"][index] = mapping
            draws["distance"][index] = distance
            if L is not None:
                draws["label_distance"][index] = L
            not_converged += not converged
            bar.update()
    elapsed = time.perf_counter() - start
    logger.info(
        "DatasetMap.bootstrap: %d resamples of the %s in %.1f s (%.2f s each).",
        n_bootstrap,
        " and the ".join(resampler.kinds),
        elapsed,
        elapsed / n_bootstrap,
    )
    if not_converged:
        logger.warning(
            "DatasetMap.bootstrap: Sinkhorn did not converge in %d of %d resamples; their "
            "values enter the intervals as they are.",
            not_converged,
            n_bootstrap,
        )
    table = interval_table(
        dm, point_mapping, point_distance, draws["mapping"], draws["distance"], confidence
    )
    table.attrs.update(
        {
            "n_bootstrap": n_bootstrap,
            "confidence": confidence,
            "random_state": random_state,
            "resample": list(resampler.kinds),
            "samples_resampled": [
                "query" if name == "adata1" else "reference" for name in resampler.studies
            ],
            "n_not_converged": int(not_converged),
            "seconds": round(elapsed, 3),
            "label_distance_mode": label_params(dm)["label_distance_mode"],
        }
    )
    dm._bootstrap_state = (solution, table, draws)
    return table


def interval_table(dm, mapping, distance, mapping_draws, distance_draws, confidence):
    """The long table of ``DatasetMap.bootstrap`` from the point estimates and the draws."""
    levels = [(1 - confidence) / 2, (1 + confidence) / 2]
    m_low, m_high = np.quantile(mapping_draws, levels, axis=0)
    d_low, d_high = np.quantile(distance_draws, levels, axis=0)
    n_bootstrap, n_query, n_ref = mapping_draws.shape
    top = np.argmax(mapping_draws, axis=2)  # (resample, query cluster)
    share = np.zeros((n_query, n_ref))
    for k in range(n_query):
        share[k] = np.bincount(top[:, k], minlength=n_ref) / n_bootstrap
    columns = {
        "query": np.repeat(np.asarray(dm.query_clusters, dtype=object), n_ref),
        "reference": np.tile(np.asarray(dm.reference_clusters, dtype=object), n_query),
        "mapping": mapping,
        "mapping_low": m_low,
        "mapping_high": m_high,
        "distance": distance,
        "distance_low": d_low,
        "distance_high": d_high,
        "top_share": share,
    }
    return pd.DataFrame({k: np.ravel(v) for k, v in columns.items()})
