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

No-match flags. ``DatasetMap.unmatched_clusters("query")`` flags a's clusters (relaxing
``tau_a``), ``unmatched_clusters("reference")`` b's, by the same rule mirrored on the same
fit (relaxing ``tau_b``; the reverse ``"mean"`` mapping): one rule, in DatasetMap, for both
sides.
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
        unmatched_a = _side_table(dm.unmatched_clusters("query", **unm), "reference")
        unmatched_b = _side_table(dm.unmatched_clusters("reference", **unm), "query")
    return PairResult(a, b, mean, transported, distance, unmatched_a, unmatched_b, info)


def _side_table(table: pd.DataFrame, other: str) -> pd.DataFrame:
    """A side's ``unmatched_clusters`` table in the atlas' columns (``UNMATCHED_COLUMNS``)."""
    return pd.DataFrame(
        {
            "unmatched": table["unmatched"].to_numpy(dtype=bool),
            "score": table["score"].to_numpy(dtype=np.float64),
            "retained": table["retained"].to_numpy(dtype=np.float64),
            "mapping_ratio": table["mapping_ratio"].to_numpy(dtype=np.float64),
            "best_match": [str(c) for c in table[f"best_{other}"]],
            "best_mapping": table["best_mapping"].to_numpy(dtype=np.float64),
            "reason": [str(r) for r in table["reason"]],
        },
        index=pd.Index([str(c) for c in table.index], name="cluster"),
    )[list(UNMATCHED_COLUMNS)]
