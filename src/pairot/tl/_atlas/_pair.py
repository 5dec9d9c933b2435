"""One pair of an atlas: the ``DatasetMap`` fit of (a, b), and its outputs read in both
directions from that one plan.

The reverse reading (docs/method.md#many-studies-atlas). The fit has study ``a`` as query and
``b`` as reference, plan ``P`` (a-cells x b-cells) and marginals ``a_i``, ``b_j`` that are
constant within each cluster (``"balanced"`` or ``"uniform"``; per-cell weights are refused).
Read from b's side, the ``"mean"`` mapping of b-cluster ``c`` onto a-cluster ``k`` is the mean
over the a-cells ``i`` of ``k`` of ``sum_{j in c} P_ij / a_i``; with ``a_i`` constant on ``k``
this is ``P(k, c) / A_k``, exactly the forward ``"transported_mass"`` ``T[k, c]``. Likewise the
reverse ``"transported_mass"`` is the forward ``"mean"``, and the reverse distance is the
forward distance transposed (the same plan-weighted mean cost). So ``mapping(b, a)`` is the
same coupling seen from b. When the cost is symmetric (``label_distance_mode="robust"``, or
``lambda_label=0``: the cell term is symmetric and that label distance is a correlation) and
the taus are swapped, it is also the answer of fitting ``DatasetMap(b, a)``, up to the solve's
convergence tolerance (tests/tl/test_atlas.py pins it). With the default (``"pairot"``) label
distance the query side uses top-n marker lists and the reference side full lists, so a
``DatasetMap(b, a)`` fit has a different cost; the reverse reading is then not that fit but
the same coupling, which keeps every pair one coupling and the atlas consistent.

No-match flags of the reference side. ``DatasetMap.unmatched_clusters`` flags query
clusters (relaxing ``tau_a``). b's clusters get the same rule from the same fit, mirrored:
the problem is solved once more with ``tau_b`` relaxed instead (``tau_a`` as fitted), each
b-cluster's ``retained`` share is its share of the plan mass over its share of ``b``, and its
``mapping_ratio`` is its best reverse ``"mean"`` mapping over the median best of the other
b-clusters; flagged when ``retained < min_retained`` and ``mapping_ratio <
max_mapping_ratio``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._dataset_map import DatasetMap

logger = logging.getLogger("pairot")

#: The columns of a side's no-match table, as an atlas keeps it.
UNMATCHED_COLUMNS = (
    "unmatched",
    "score",
    "retained",
    "mapping_ratio",
    "best_match",
    "best_mapping",
    "reason",
)


@dataclass
class PairResult:
    """The outputs of one fitted pair ``(a, b)`` (``a`` the query of the fit)."""

    a: str
    b: str
    mapping_mean: pd.DataFrame  # a-clusters x b-clusters, DatasetMap's "mean"
    mapping_transported_mass: pd.DataFrame  # a x b, DatasetMap's "transported_mass"
    distance: pd.DataFrame  # a x b
    unmatched_a: pd.DataFrame | None  # index a-clusters, UNMATCHED_COLUMNS
    unmatched_b: pd.DataFrame | None  # index b-clusters
    info: dict = field(default_factory=dict)

    def mapping(self, query: str, method: str = "mean") -> pd.DataFrame:
        """The mapping with ``query``'s clusters as rows (``query`` is ``a`` or ``b``)."""
        if method not in ("mean", "transported_mass"):
            msg = f"method must be 'mean' or 'transported_mass', got {method!r}."
            raise ValueError(msg)
        if query == self.a:
            return (self.mapping_mean if method == "mean" else self.mapping_transported_mass).copy()
        # the reverse reading: mean <-> transported_mass, transposed
        forward = self.mapping_transported_mass if method == "mean" else self.mapping_mean
        return _transposed(forward)

    def distance_from(self, query: str) -> pd.DataFrame:
        return self.distance.copy() if query == self.a else _transposed(self.distance)

    def unmatched(self, side: str) -> pd.DataFrame | None:
        table = self.unmatched_a if side == self.a else self.unmatched_b
        return None if table is None else table.copy()


def _transposed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.T.copy()
    out.index.name, out.columns.name = "query", "reference"
    return out


def fit_pair(adata_a, adata_b, a: str, b: str, options: dict, progress: bool) -> PairResult:
    """Fit ``DatasetMap(adata_a, adata_b)`` with the atlas' options and read both sides."""
    dm = DatasetMap(adata_a, adata_b)
    dm.init_geom(**options["init_geom"])
    dm.init_problem(**options["init_problem"])
    solution = dm.solve(progress=progress, **options["solve"])
    mappings = dm.compute_mapping(None)
    mean, transported = mappings["mean"], mappings["transported_mass"]
    distance = dm.compute_distance()
    info = {
        "converged": bool(solution.converged),
        "n_cells_a": int(dm.adata1.n_obs),
        "n_cells_b": int(dm.adata2.n_obs),
        "small_clusters": dm.small_clusters.to_dict(orient="records"),
    }
    unmatched_a = unmatched_b = None
    unm = options["unmatched"]
    if unm is not None:
        table = dm.unmatched_clusters(**unm)
        unmatched_a = pd.DataFrame(
            {
                "unmatched": table["unmatched"].astype(bool),
                "score": table["score"].astype(np.float64),
                "retained": table["retained"].astype(np.float64),
                "mapping_ratio": table["mapping_ratio"].astype(np.float64),
                "best_match": table["best_reference"].astype(str),
                "best_mapping": table["best_mapping"].astype(np.float64),
                "reason": table["reason"].astype(str),
            },
            index=pd.Index([str(q) for q in table.index], name="cluster"),
        )
        unmatched_b = _reference_unmatched(dm, options, transported, progress, unm)
    return PairResult(a, b, mean, transported, distance, unmatched_a, unmatched_b, info)


def _reference_unmatched(dm, options, transported, progress, unm) -> pd.DataFrame:
    """The no-match rule for the reference (b) clusters, mirrored (module docstring)."""
    problem = dm.ot_prob
    tau = unm["tau_a"]
    kwargs = {**options["init_problem"], "tau_a": problem.tau_a, "tau_b": tau}
    dm.init_problem(**kwargs)
    logger.info("Solving again with tau_b=%g to find reference clusters without a match.", tau)
    relaxed = dm.solve(progress=progress, **options["solve"])
    if not bool(relaxed.converged):
        logger.warning(
            "The relaxed solve (tau_b=%g) did not converge; the retained shares of the "
            "reference clusters are approximate.",
            tau,
        )
    t_relaxed = dm.compute_mapping("transported_mass").to_numpy(dtype=np.float64)
    a_clusters = _cluster_mass(dm.ot_prob.a, dm.query_labels, dm.query_clusters)
    b_clusters = _cluster_mass(dm.ot_prob.b, dm.reference_labels, dm.reference_clusters)
    mass = np.nansum(a_clusters[:, None] * t_relaxed, axis=0)
    share = mass / mass.sum()
    retained = np.divide(share, b_clusters, out=np.full(share.size, np.nan), where=b_clusters > 0)
    reverse = transported.to_numpy(dtype=np.float64).T  # b-clusters x a-clusters, "mean"
    best = np.nanargmax(reverse, axis=1)
    best_mapping = reverse[np.arange(reverse.shape[0]), best]
    n = best_mapping.size
    typical = np.array(
        [np.median(np.delete(best_mapping, k)) if n > 1 else np.nan for k in range(n)]
    )
    ratio = np.divide(best_mapping, typical, out=np.full(n, np.nan), where=typical > 0)
    score = np.fmax(retained / unm["min_retained"], ratio / unm["max_mapping_ratio"])
    flagged = score < 1
    columns = np.asarray(transported.index, dtype=object)
    reasons = [
        (
            f"{'no match' if f else 'matched'}: keeps {100 * r:.0f}% of its share of the mass "
            f"when the reference marginal is relaxed (tau_b={tau:g}; flag below "
            f"{100 * unm['min_retained']:.0f}%), and its best reverse mapping ({m:.2f}, to "
            f"{str(c)!r}) is {100 * q:.0f}% of the typical (flag below "
            f"{100 * unm['max_mapping_ratio']:.0f}%)."
        )
        if np.isfinite(r) and np.isfinite(q)
        else "not assessed: it needs at least two clusters to compare with."
        for f, r, q, m, c in zip(flagged, retained, ratio, best_mapping, columns[best], strict=True)
    ]
    return pd.DataFrame(
        {
            "unmatched": flagged,
            "score": score,
            "retained": retained,
            "mapping_ratio": ratio,
            "best_match": [str(c) for c in columns[best]],
            "best_mapping": best_mapping,
            "reason": reasons,
        },
        index=pd.Index([str(c) for c in transported.columns], name="cluster"),
    )


def _cluster_mass(weights, labels, clusters) -> np.ndarray:
    codes = pd.Categorical(np.asarray(labels, dtype=object), categories=clusters).codes
    return np.bincount(
        codes, weights=np.asarray(weights, dtype=np.float64), minlength=len(clusters)
    )
