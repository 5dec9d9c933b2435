"""``DatasetMap``: the public, staged OT model (geometry -> problem -> solution -> outputs)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._interrupt import interruptible
from .._logging import logger, progress_logger
from ..pp._sampling import downsample_indices
from ..pp._validate import argument_text, get_labels, part, study
from ._answers import _scores
from ._cost import _small_clusters
from ._cost._features import cosine_features, spearman_features, uninformative_features
from ._cost._label_distance import label_distance, marker_lists
from ._cost._ott_arguments import translate
from ._cost._robust_label_distance import check_mode, robust_label_distance
from ._cost._small_clusters import DEFAULT_MIN_CELLS

AGGREGATION_METHODS = ("mean", "jensen_shannon", "transported_mass")


class StageError(ValueError, RuntimeError):
    """A ``DatasetMap`` step was called before the step it needs (e.g. ``solve`` before
    ``init_problem``). Subclasses ``ValueError`` and ``RuntimeError``, so either catches it."""


MARGINALS = ("balanced", "uniform")


@dataclass(frozen=True, repr=False)
class OTProblem:
    """The transport problem set by :meth:`DatasetMap.init_problem` (``dataset_map.ot_prob``).

    Attributes
    ----------
    a, b
        Query and reference marginals (cell weights), each summing to 1.
    tau_a, tau_b
        How strictly each marginal is enforced: 1 enforces it, smaller values relax it
        (OTT-JAX's convention ``tau = rho / (rho + epsilon)``).
    marginals_distribution
        ``"balanced"``, ``"uniform"``, or ``"given"`` when ``a`` and ``b`` were passed.
    epsilon
        The entropic regularization of the geometry.
    """

    a: np.ndarray
    b: np.ndarray
    tau_a: float
    tau_b: float
    marginals_distribution: str
    epsilon: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.size, self.b.size)

    def __repr__(self) -> str:
        n, m = self.shape
        return (
            f"OTProblem({n:,} x {m:,} cells, marginals={self.marginals_distribution!r}, "
            f"tau_a={self.tau_a:g}, tau_b={self.tau_b:g}, epsilon={self.epsilon:g})"
        )


@dataclass
class Geometry:
    """Cell features and the cost structure of the OT problem.

    ``C[i, j] = lambda_feature * 0.5 * (1 - x[i] . y[j]) + lambda_label * L[k_i, c_j]``, written as
    ``offset + x_aug[i] . y_aug[j]`` with ``x_aug = [-0.5 * lambda_feature * x, lambda_label *
    L[k_i]]`` and ``y_aug = [y, onehot(c_j)]``.
    """

    x: np.ndarray
    y: np.ndarray
    x_aug: np.ndarray
    y_aug: np.ndarray
    offset: float
    query_codes: np.ndarray
    ref_codes: np.ndarray
    label_distance: np.ndarray
    epsilon: float
    batch_size: int
    lambda_feature: float
    lambda_label: float

    def cost(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The cost of the given query cells against every reference cell (float64).

        This materializes ``len(rows) x m`` values: meant for inspection and tests on small
        data; the solver and the outputs never build the full matrix.
        """
        x_aug = np.asarray(self.x_aug[rows], dtype=np.float64)
        return self.offset + x_aug @ np.asarray(self.y_aug, dtype=np.float64).T


class _DegTable(Mapping):
    """``DEGs_label_distance[q][r]``: the genes behind one label-distance entry."""

    def __init__(self, details: pd.DataFrame, query: list[str], reference: list[str]):
        self._details = details
        self._query = query
        self._reference = reference

    def __getitem__(self, query_cluster):
        if query_cluster not in self._query:
            msg = f"{query_cluster!r} is not a query cluster; query clusters: {self._query}."
            raise KeyError(msg)
        rows = self._details[self._details["query_cluster"] == query_cluster]
        return {r: _deg_frame(rows[rows["reference_cluster"] == r]) for r in self._reference}

    def __iter__(self):
        return iter(self._query)

    def __len__(self):
        return len(self._query)


#: The columns of ``DEGs_label_distance[q][r]``, upstream's names first (the gene is the index).
DEG_COLUMNS = ["rank_query", "logFC_query", "rank_ref", "logFC_ref", "contribution"]


def _deg_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One ``DEGs_label_distance[q][r]`` table in upstream's layout: indexed by gene."""
    table = rows.rename(columns={"rank_reference": "rank_ref", "logFC_reference": "logFC_ref"})
    table = table.set_index(pd.Index(table["gene"].astype(str).to_numpy(), name="gene"))
    return table[DEG_COLUMNS]


#: The obs column where upstream pairOT's ``preprocess_adatas`` writes the cluster labels.
UPSTREAM_CLUSTER_COLUMN = "cell_type_author"
#: The ``uns`` keys of upstream pairOT's DE results.
UPSTREAM_DE_KEYS = ("de_res_ova", "de_res_ava")


def _cluster_order(adata: AnnData, column: str, keys: list[str]) -> list[str]:
    """The DE clusters in the order of ``obs[column]`` (h5ad returns dict keys sorted), then
    those the column does not have, in dict order."""
    values = adata.obs[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        in_obs = [str(c) for c in values.cat.categories]
    else:
        in_obs = sorted({str(v) for v in values.dropna().unique()})
    present = set(keys)
    ordered = [c for c in dict.fromkeys(in_obs) if c in present]
    seen = set(ordered)
    return ordered + [k for k in keys if k not in seen]


def _upstream_info(adata: AnnData, name: str) -> dict:
    """``uns["pairot"]``'s content built from upstream pairOT's ``uns["de_res_ova"]`` /
    ``uns["de_res_ava"]`` and ``obs["cell_type_author"]``; ``adata`` is not modified."""
    # imported here: this upstream adapter is the only user in this module
    from .._logging import logger
    from ..pp._upstream import ava_from_dict, ova_from_dict

    for key in UPSTREAM_DE_KEYS:
        if key not in adata.uns:
            other = next(k for k in UPSTREAM_DE_KEYS if k != key)
            msg = (
                f"{name}.uns has {other!r} but not {key!r}: upstream pairOT's DE results need "
                f"both; preprocess the study again (pairot.pp.preprocess_adatas writes "
                f"{name}.uns['pairot'])."
            )
            raise ValueError(msg)
    column = UPSTREAM_CLUSTER_COLUMN
    if column not in adata.obs.columns:
        available = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        msg = (
            f"{name} carries upstream pairOT's DE results (uns['de_res_ova'] / "
            f"uns['de_res_ava']) but {name}.obs has no column {column!r} with the clusters "
            f"they were computed for; obs has: {available}. Copy the cluster labels there, "
            f"e.g. {name}.obs[{column!r}] = {name}.obs['<your cluster column>']."
        )
        raise KeyError(msg)
    ova_dict = adata.uns["de_res_ova"]
    if not isinstance(ova_dict, Mapping):
        msg = (
            f"{name}.uns['de_res_ova'] must be a dict of DataFrames (upstream pairOT's "
            f"one-vs-all DE results), got {type(ova_dict).__name__}."
        )
        raise TypeError(msg)
    clusters = _cluster_order(adata, column, [k for k in ova_dict if isinstance(k, str)])
    de_ova = ova_from_dict(ova_dict, argument=f"{name}.uns['de_res_ova']", clusters=clusters)
    de_ava = ava_from_dict(
        adata.uns["de_res_ava"], argument=f"{name}.uns['de_res_ava']", clusters=clusters
    )
    logger.info(
        "%s: converted upstream pairOT DE results (uns['de_res_ova'] / uns['de_res_ava'], "
        "%d clusters, clusters in obs[%r]) to pairot's long tables.",
        name,
        len(clusters),
        column,
    )
    return {"cell_type_key": column, "de_ova": de_ova, "de_ava": de_ava}


def _pairot_info(adata: AnnData, name: str) -> dict:
    """The cluster column and the long DE tables of a study: ``uns["pairot"]`` (pairot's
    preprocessing) or, without it, upstream pairOT's ``uns["de_res_ova"]`` /
    ``uns["de_res_ava"]`` with the clusters in ``obs["cell_type_author"]``, converted."""
    if not isinstance(adata, AnnData):
        msg = f"{name} must be an anndata.AnnData, got {type(adata).__name__}."
        raise TypeError(msg)
    info = adata.uns.get("pairot")
    hint = (
        "run pairot.pp.preprocess_adatas(adata1, adata2, ...) first and pass its outputs "
        "(also fine after write_h5ad / read_h5ad or as views)."
    )
    if info is None and any(key in adata.uns for key in UPSTREAM_DE_KEYS):
        return _upstream_info(adata, name)
    if not isinstance(info, Mapping):
        msg = (
            f"{name}.uns['pairot'] is missing (pairot's preprocess_adatas writes it), and so "
            "are upstream pairOT's uns['de_res_ova'] / uns['de_res_ava'] (read with the "
            f"clusters in obs['cell_type_author']): {name} has no DE results; {hint}"
        )
        raise ValueError(msg)
    for key in ("cell_type_key", "de_ova", "de_ava"):
        if key not in info:
            msg = f"{name}.uns['pairot'] lacks {key!r} (incomplete); {hint}"
            raise ValueError(msg)
    if not isinstance(info["cell_type_key"], str):
        msg = (
            f"{name}.uns['pairot']['cell_type_key'] must be the name of the cluster column, "
            f"got {info['cell_type_key']!r}; {hint}"
        )
        raise TypeError(msg)
    for key in ("de_ova", "de_ava"):
        if not isinstance(info[key], pd.DataFrame):
            msg = (
                f"{name}.uns['pairot'][{key!r}] must be a pandas DataFrame, got "
                f"{type(info[key]).__name__}; {hint}"
            )
            raise TypeError(msg)
    return info


def _labels(adata: AnnData, key: str, name: str) -> pd.Categorical:
    """Cluster labels as strings (see :func:`pairot.pp._validate.get_labels`): unused
    categories dropped with an INFO log, missing labels an error."""
    if key not in adata.obs.columns:
        available = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        msg = (
            f"{name}.obs has no column {key!r} (the cluster column recorded in "
            f"{name}.uns['pairot']['cell_type_key'] by preprocess_adatas); available: "
            f"{available}. Restore the column or preprocess again."
        )
        raise KeyError(msg)
    return get_labels(adata, key, name, f"{name}.uns['pairot']['cell_type_key']")


def _check_positive(value, argument: str, *, integer: bool = False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    what = "a positive integer" if integer else "a positive number"
    if isinstance(value, bool | np.bool_) or not isinstance(value, kind):
        msg = f"{argument} must be {what}, got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    if not np.isfinite(value):
        msg = f"{argument} must be a finite number, got {value!r}; pass {what}."
        raise ValueError(msg)
    if value <= 0:
        msg = f"{argument} must be > 0, got {value!r}; pass {what}."
        raise ValueError(msg)
    return int(value) if integer else float(value)


def _check_tau(value, argument: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        msg = f"{argument} must be a number in (0, 1], got {value!r} ({type(value).__name__})."
        raise TypeError(msg)
    if not (0 < value <= 1):  # also catches NaN
        msg = (
            f"{argument} must lie in (0, 1], got {value!r}; 1 enforces the marginal, values "
            "such as 0.95 relax it (unbalanced OT)."
        )
        raise ValueError(msg)
    return float(value)


def _check_marginal(values, n: int, argument: str, cells: str) -> np.ndarray:
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        msg = f"{argument} must be an array of {n} non-negative weights, one per {cells} cell."
        raise TypeError(msg) from error
    if values.shape != (n,):
        msg = (
            f"{argument} must have one weight per {cells} cell, shape ({n},), got "
            f"{values.shape}; pass None for the default marginal."
        )
        raise ValueError(msg)
    bad = ~np.isfinite(values)
    if bad.any():
        msg = (
            f"{argument} has {int(bad.sum())} NaN or infinite weight(s) (first at index "
            f"{int(np.flatnonzero(bad)[0])}); weights must be finite and >= 0."
        )
        raise ValueError(msg)
    if (values < 0).any():
        msg = (
            f"{argument} has {int((values < 0).sum())} negative weight(s) (min "
            f"{values.min()}); weights must be >= 0."
        )
        raise ValueError(msg)
    total = values.sum()
    if total <= 0:
        msg = f"{argument} sums to {total}; give it a positive total mass."
        raise ValueError(msg)
    return values / total


def _features(function, matrix, where: str) -> np.ndarray:
    """``function(matrix)``, its input errors prefixed with where the matrix comes from."""
    try:
        return function(matrix)
    except (TypeError, ValueError) as error:
        msg = f"{where}: {error}"
        raise type(error)(msg) from error


def _warn_uninformative(x: np.ndarray, y: np.ndarray, embedding_layer: str | None) -> None:
    """Warn when the cell features of either study carry no information
    (docs/method.md#cell-features-and-cost)."""
    for features, name in ((x, "adata1"), (y, "adata2")):
        reason = uninformative_features(features, embedding=embedding_layer is not None)
        if reason is None:
            continue
        fix = (
            "use a shared embedding that separates the cells"
            if embedding_layer is not None
            else "use more highly variable genes (preprocess_adatas(n_top_genes=...), at "
            "least 50) or a shared embedding (init_geom(embedding_layer='X_pca'))"
        )
        logger.warning(
            "The cell features of %s carry no information: %s. The cell term of the cost "
            "(lambda_feature) then cannot tell cells apart, and the mapping rests on the "
            "label term (the marker genes) alone; %s.",
            study(name),
            reason,
            fix,
        )


def _own_arguments(method) -> list[str]:
    """The named parameters of a ``DatasetMap`` method, for messages."""
    return [
        name
        for name, parameter in inspect.signature(method).parameters.items()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    ]


def _balanced(codes: np.ndarray) -> np.ndarray:
    counts = np.bincount(codes)
    present = np.count_nonzero(counts)
    return 1.0 / (counts[codes] * present)


class DatasetMap:
    """Map the clusters of a query study onto the clusters of a reference study.

    Parameters
    ----------
    adata1, adata2
        Query and reference, as returned by :func:`pairot.pp.preprocess_adatas` (also after a
        ``write_h5ad`` / ``read_h5ad`` round trip, and as views such as
        ``adata[pr.pp.downsample_indices(...), :]``). They are never modified.
    min_cells
        Clusters with fewer cells than this (default 5) are handled by ``small_clusters``,
        with a warning that says why: with balanced marginals every cluster carries the same
        share of the mass (``1/K``), so a cluster of one cell in a study of seven clusters
        would take a seventh of the mass and shift every other mapping score (measured in
        benchmarks/README.md). Below 5 cells a cluster cannot form two pseudobulk profiles
        of 2 cells in two samples plus one more cell, so its markers rest on at most two
        replicates. ``None`` (or 0) keeps every cluster as it is, without a check.
    small_clusters
        What happens to those clusters: ``"drop"`` (default) leaves their cells out of the
        transport (``adata1`` / ``adata2`` become views without them; their clusters are
        absent from every output); ``"merge"`` relabels their cells as the cluster of the
        same study whose mean log-expression (log1p of counts per 10,000) correlates best
        with theirs (``query_labels`` / ``reference_labels`` hold the merged labels;
        ``obs`` is unchanged); ``"keep"`` keeps them, with the warning. What was done is in
        :attr:`small_clusters` (columns ``side, cluster, n_cells, action, merged_into``).

    Notes
    -----
    The inputs must carry ``uns["pairot"]`` from :func:`pairot.pp.preprocess_adatas`
    (``ValueError`` when missing or incomplete) and the same genes in the same order
    (``ValueError`` naming the genes that differ). The cluster column recorded there is read as
    strings; categories without cells (e.g. after subsetting) are dropped with an INFO log.
    Steps must run in order ``init_geom -> init_problem -> solve -> compute_*``; calling one
    too early raises :class:`StageError` (a ``ValueError`` and ``RuntimeError``) naming the
    step to call first.

    Examples
    --------
    >>> dm = pr.tl.DatasetMap(adata_query, adata_ref)
    >>> dm.init_geom(batch_size=1024, epsilon=0.05)
    >>> dm.init_problem(tau_a=1.0, tau_b=1.0)
    >>> dm.solve()
    >>> mapping = dm.compute_mapping()
    >>> distance = dm.compute_distance()
    """

    def __init__(
        self,
        adata1: AnnData,
        adata2: AnnData,
        *,
        min_cells: int | None = DEFAULT_MIN_CELLS,
        small_clusters: str = "drop",
    ):
        info1 = _pairot_info(adata1, "adata1")
        info2 = _pairot_info(adata2, "adata2")
        if list(adata1.var_names) != list(adata2.var_names):
            only1 = adata1.var_names.difference(adata2.var_names)[:5].tolist()
            only2 = adata2.var_names.difference(adata1.var_names)[:5].tolist()
            how = (
                f"genes only in adata1: {only1}, only in adata2: {only2}"
                if only1 or only2
                else "the same genes in a different order"
            )
            msg = (
                f"adata1 and adata2 must have the same genes in the same order ({how}); "
                "pass both outputs of one preprocess_adatas call."
            )
            raise ValueError(msg)
        self.adata1 = adata1
        self.adata2 = adata2
        self._info = (info1, info2)
        self.query_labels = _labels(adata1, info1["cell_type_key"], "adata1")
        self.reference_labels = _labels(adata2, info2["cell_type_key"], "adata2")
        min_cells, small_clusters = _small_clusters.check_arguments(min_cells, small_clusters)
        rows = []
        for side, name in (("query", "adata1"), ("reference", "adata2")):
            adata = self.adata1 if side == "query" else self.adata2
            labels = self.query_labels if side == "query" else self.reference_labels
            outcome = _small_clusters.handle(
                adata.X, labels, side=side, name=name, min_cells=min_cells, action=small_clusters
            )
            rows += outcome.rows
            if outcome.keep is not None:
                adata = adata[outcome.keep]
            if side == "query":
                self.adata1, self.query_labels = adata, outcome.labels
            else:
                self.adata2, self.reference_labels = adata, outcome.labels
        #: The clusters below ``min_cells`` and what was done with them (columns ``side,
        #: cluster, n_cells, action, merged_into``); empty when there are none.
        self.small_clusters = _small_clusters.table(rows)
        self.geom: Geometry | None = None
        self.ot_solution = None
        self._problem = None
        self._aggregates = None
        self._label_details = None
        self._label_distance = None
        self._rank_distance = None
        self._progress = True  # solve(progress=...) also governs the aggregation's bar
        self._block_memory_budget = None  # and solve(block_memory_budget=...) its blocks
        self._devices = None  # and solve(devices=...) its devices

    # ------------------------------------------------------------------ stages
    def _require(self, stage: str):
        needs = {
            "geom": (self.geom, "call init_geom() first"),
            "problem": (self._problem, "call init_problem() first (after init_geom())"),
            "solution": (self.ot_solution, "call solve() first (after init_problem())"),
        }
        value, hint = needs[stage]
        if value is None:
            msg = f"DatasetMap has no {stage} yet: {hint}."
            raise StageError(msg)
        return value

    @staticmethod
    def preprocess_adatas(
        adata1: AnnData,
        adata2: AnnData,
        cell_type_column_adata1: str = "cell_type_author",
        cell_type_column_adata2: str = "cell_type_author",
        sample_column_adata1: str = "sample_id",
        sample_column_adata2: str = "sample_id",
        n_top_genes: int = 500,
        filter_genes: bool = False,
        n_samples_auroc: int | None = 10_000,
        n_samples_hvg_selection: int | None = 100_000,
        **kwargs,
    ) -> tuple[AnnData, AnnData]:
        """:func:`pairot.pp.preprocess_adatas`, with upstream pairOT's column defaults
        ``"cell_type_author"`` and ``"sample_id"`` (upstream also offers it here).

        All arguments, and the keyword-only ones passed through ``kwargs``
        (``random_state``, ``genes_to_keep``, ``genes_to_drop``, ``chunk_size``,
        ``store_pseudobulk``, ``min_shared_genes``), are those
        of :func:`pairot.pp.preprocess_adatas`.
        """
        from ..pp import preprocess_adatas

        return preprocess_adatas(
            adata1,
            adata2,
            cell_type_column_adata1,
            cell_type_column_adata2,
            sample_column_adata1,
            sample_column_adata2,
            n_top_genes,
            filter_genes,
            n_samples_auroc,
            n_samples_hvg_selection,
            **kwargs,
        )

    @property
    def ot_prob(self) -> OTProblem:
        """The transport problem set by :meth:`init_problem`: marginals ``a`` and ``b``,
        ``tau_a``, ``tau_b``, ``marginals_distribution`` and ``epsilon`` (an
        :class:`OTProblem`); :class:`StageError` before ``init_problem``."""
        return self._require("problem")

    @property
    def query_clusters(self) -> list[str]:
        return list(self.query_labels.categories)

    @property
    def reference_clusters(self) -> list[str]:
        return list(self.reference_labels.categories)

    def init_geom(
        self,
        epsilon: float = 0.05,
        batch_size: int = 1024,
        lambda_feature: float = 0.5,
        lambda_label: float = 1.5,
        n_genes_ova: int = 10,
        n_genes_ava: int = 3,
        overlap_threshold_ava: float = 0.3,
        overlap_n_genes_ava: int = 10,
        adj_p_val_threshold: float = 0.05,
        auroc_threshold: float = 0.6,
        logfc_threshold: float = 1.0,
        gene_filtering: bool = True,
        q_norm: float = 0.33,
        embedding_layer: str | None = None,
        *,
        label_distance_mode: str = "pairot",
        **kwargs,
    ) -> None:
        """Build the label distance, the cell features and the cost geometry.

        Parameters
        ----------
        epsilon
            Entropic regularization in cost units, > 0 (finite). Small values (down to about
            0.005) stay finite but need more Sinkhorn iterations.
        batch_size
            Rows of the cost computed at once, an integer >= 1; it does not change results.
            Capped so that one block fits ``solve(block_memory_budget=...)`` (1 GiB by
            default; an INFO log says when), so a value sized for a large GPU does not
            exhaust a smaller machine.
        lambda_feature, lambda_label
            Weights (>= 0) of the feature and the label distance in the cost.
        n_genes_ova, n_genes_ava, overlap_threshold_ava, overlap_n_genes_ava,
        adj_p_val_threshold, auroc_threshold, logfc_threshold, gene_filtering, q_norm
            Marker selection and label distance (docs/method.md#label-distance). A cluster
            without marker genes (e.g. a one-cell cluster, or none passing the thresholds) is
            at label distance 1 from every reference cluster; if no cluster has markers, ``L``
            is 1 everywhere and the mapping rests on the cell features alone.
        embedding_layer
            Key of ``obsm`` present in both studies to use instead of Spearman features of
            ``X``; ``KeyError`` listing the available keys when missing.
        label_distance_mode
            ``"pairot"`` (default): the published method's label distance from ranked marker
            lists (docs/method.md#label-distance). ``"robust"``: the correlation of the
            clusters' one-vs-all AUROC up-regulation profiles over all genes, for studies
            whose clusters have few or no markers passing the filters (few samples, small
            clusters, subtle subtypes); it uses ``gene_filtering`` and ``q_norm``, not the
            marker thresholds (docs/method.md#robust-label-distance).
            ``DEGs_label_distance`` lists the marker genes in both modes.
        **kwargs
            Upstream pairOT forwarded extra arguments to OTT-JAX's ``PointCloud``; pairot
            accepts ``relative_epsilon=None/False`` and ``scale_cost=1`` (what it computes)
            and raises a ``TypeError`` naming any other one
            (docs/method.md#switching-from-upstream-pairot).

        Calling ``init_geom`` again discards the problem and the solution.
        """
        translate("init_geom", kwargs, _own_arguments(self.init_geom))
        label_distance_mode = check_mode(label_distance_mode)
        epsilon = _check_positive(epsilon, "epsilon")
        batch_size = _check_positive(batch_size, "batch_size", integer=True)
        lambda_feature = float(lambda_feature)
        lambda_label = float(lambda_label)
        for value, argument in ((lambda_feature, "lambda_feature"), (lambda_label, "lambda_label")):
            if not np.isfinite(value) or value < 0:
                msg = f"{argument} must be a finite number >= 0, got {value}."
                raise ValueError(msg)
        common = {
            "overlap_threshold_ava": overlap_threshold_ava,
            "overlap_n_genes_ava": overlap_n_genes_ava,
            "adj_p_val_threshold": adj_p_val_threshold,
            "auroc_threshold": auroc_threshold,
            "logfc_threshold": logfc_threshold,
            "gene_filtering": gene_filtering,
        }
        info1, info2 = self._info
        # kept for bootstrap(), which rebuilds the label distance from resampled DE tables
        self._label_params = {
            "n_genes_ova": n_genes_ova,
            "n_genes_ava": n_genes_ava,
            "q_norm": q_norm,
            **common,
            "label_distance_mode": label_distance_mode,
        }
        query_markers = marker_lists(
            info1["de_ova"],
            info1["de_ava"],
            n_genes_ova=n_genes_ova,
            n_genes_ava=n_genes_ava,
            **common,
        )
        reference_markers = marker_lists(
            info2["de_ova"], info2["de_ava"], n_genes_ova=None, n_genes_ava=None, **common
        )
        query_markers = self._restrict(query_markers, self.query_clusters, "adata1")
        reference_markers = self._restrict(reference_markers, self.reference_clusters, "adata2")
        D, L, details = label_distance(query_markers, reference_markers, q_norm=q_norm)
        if label_distance_mode == "robust":
            D, L = robust_label_distance(
                info1["de_ova"],
                info2["de_ova"],
                self.query_clusters,
                self.reference_clusters,
                q_norm=q_norm,
                gene_filtering=gene_filtering,
            )
        L = L.loc[self.query_clusters, self.reference_clusters]
        self._rank_distance = D.loc[self.query_clusters, self.reference_clusters]
        self._label_distance = L
        # users read ranks from 1 (1 = top marker); the formula works on 0-based positions
        self._label_details = details.assign(
            rank_query=details["rank_query"] + 1, rank_reference=details["rank_reference"] + 1
        )

        if embedding_layer is None:
            x = _features(spearman_features, self.adata1.X, "adata1.X")
            y = _features(spearman_features, self.adata2.X, "adata2.X")
        else:
            if not isinstance(embedding_layer, str):
                msg = (
                    f"embedding_layer must be None or the name of an obsm entry such as "
                    f"'X_pca', got {embedding_layer!r}."
                )
                raise TypeError(msg)
            for adata, name in ((self.adata1, "adata1"), (self.adata2, "adata2")):
                if embedding_layer not in adata.obsm:
                    msg = (
                        f"{argument_text('embedding_layer', embedding_layer)} is not in "
                        f"{part(name, 'obsm')}; available: {list(adata.obsm.keys())}."
                    )
                    raise KeyError(msg)
            e1 = self.adata1.obsm[embedding_layer]
            e2 = self.adata2.obsm[embedding_layer]
            e1 = e1.toarray() if sparse.issparse(e1) else np.asarray(e1)
            e2 = e2.toarray() if sparse.issparse(e2) else np.asarray(e2)
            e1 = e1.reshape(e1.shape[0], -1)
            e2 = e2.reshape(e2.shape[0], -1)
            if e1.shape[1] != e2.shape[1]:
                msg = (
                    f"{argument_text('embedding_layer', embedding_layer)} has {e1.shape[1]} "
                    f"dimensions in {study('adata1')} but {e2.shape[1]} in "
                    f"{study('adata2')}; use a shared embedding."
                )
                raise ValueError(msg)
            where = f"obsm[{embedding_layer!r}]"
            x = _features(cosine_features, e1, part("adata1", where))
            y = _features(cosine_features, e2, part("adata2", where))
        if lambda_feature > 0:
            _warn_uninformative(x, y, embedding_layer)
        qc = self.query_labels.codes.astype(np.int64)
        rc = self.reference_labels.codes.astype(np.int64)
        Lv = L.to_numpy(dtype=np.float32)
        x_aug = np.concatenate(
            [(-0.5 * lambda_feature) * x, (lambda_label * Lv)[qc]], axis=1
        ).astype(np.float32)
        y_aug = np.concatenate(
            [y, np.eye(len(self.reference_clusters), dtype=np.float32)[rc]], axis=1
        ).astype(np.float32)
        self.geom = Geometry(
            x=x,
            y=y,
            x_aug=x_aug,
            y_aug=y_aug,
            offset=0.5 * lambda_feature,
            query_codes=qc,
            ref_codes=rc,
            label_distance=L.to_numpy(dtype=np.float64),
            epsilon=epsilon,
            batch_size=batch_size,
            lambda_feature=lambda_feature,
            lambda_label=lambda_label,
        )
        self._problem = None
        self.ot_solution = None
        self._aggregates = None

    @staticmethod
    def _restrict(markers: pd.DataFrame, clusters: list[str], name: str) -> pd.DataFrame:
        """Keep the marker lists of the clusters present in the data, in the data's order."""
        known = set(markers["cluster"].cat.categories.astype(str))
        missing = [c for c in clusters if c not in known]
        if missing:
            msg = (
                f"{name} has clusters {missing} that its DE tables in uns['pairot'] do not "
                "know; were the labels changed after preprocess_adatas?"
            )
            raise ValueError(msg)
        markers = markers[markers["cluster"].astype(str).isin(clusters)].copy()
        markers["cluster"] = pd.Categorical(markers["cluster"].astype(str), categories=clusters)
        return markers.sort_values(["cluster", "rank"], kind="stable").reset_index(drop=True)

    def init_problem(
        self,
        tau_a: float = 1.0,
        tau_b: float = 1.0,
        marginals_distribution: str = "balanced",
        a: np.ndarray | None = None,
        b: np.ndarray | None = None,
        **kwargs,
    ) -> None:
        """Set the marginals and how strictly they are enforced (``ot_prob``).

        See docs/method.md#the-optimal-transport-problem.

        Parameters
        ----------
        tau_a, tau_b
            In (0, 1]: 1 enforces the query / reference marginal, smaller values relax it
            (unbalanced OT, e.g. 0.9-0.975 when a cell type is missing on one side).
        marginals_distribution
            ``"balanced"`` (each cluster the same total mass) or ``"uniform"`` (each cell).
        a, b
            Optional cell weights overriding the distribution: one finite, non-negative
            weight per query (``a``) / reference (``b``) cell with a positive sum; they are
            rescaled to sum to 1.
        **kwargs
            Upstream pairOT forwarded extra arguments to OTT-JAX's ``LinearProblem``; they
            have no meaning here and raise a ``TypeError`` naming them.

        Requires :meth:`init_geom`; discards an earlier solution. The problem is then
        :attr:`ot_prob`.
        """
        translate("init_problem", kwargs, _own_arguments(self.init_problem))
        geom = self._require("geom")
        tau_a = _check_tau(tau_a, "tau_a")
        tau_b = _check_tau(tau_b, "tau_b")
        if marginals_distribution not in MARGINALS:
            msg = (
                f"marginals_distribution must be one of {MARGINALS}, got "
                f"{marginals_distribution!r}."
            )
            raise ValueError(msg)
        n, m = geom.x.shape[0], geom.y.shape[0]
        both_given = a is not None and b is not None
        if a is None:
            a = (
                _balanced(geom.query_codes)
                if marginals_distribution == "balanced"
                else (np.full(n, 1.0 / n))
            )
        else:
            a = _check_marginal(a, n, "a", "query")
        if b is None:
            b = (
                _balanced(geom.ref_codes)
                if marginals_distribution == "balanced"
                else (np.full(m, 1.0 / m))
            )
        else:
            b = _check_marginal(b, m, "b", "reference")
        self._problem = OTProblem(
            a=a,
            b=b,
            tau_a=tau_a,
            tau_b=tau_b,
            marginals_distribution="given" if both_given else marginals_distribution,
            epsilon=geom.epsilon,
        )
        self.ot_solution = None
        self._aggregates = None

    def solve(
        self,
        *,
        threshold: float = 1e-3,
        max_iterations: int = 2000,
        inner_iterations: int = 10,
        progress: bool = True,
        kernel_memory_budget: int | None = None,
        cluster_correction: bool = True,
        block_memory_budget: int | None = None,
        sparse: bool = True,
        sparse_tolerance: float = 1e-3,
        kernel_dtype=None,
        devices=None,
        **kwargs,
    ):
        """Run Sinkhorn; the result is in ``ot_solution`` (``f, g, errors, converged``, ...).

        Returns ``ot_solution`` too, whose one-line repr sums it up (a notebook cell ending in
        ``dataset_map.solve()`` shows that line, not the potentials).

        Parameters
        ----------
        threshold
            Stop when the marginal error (checked every ``inner_iterations``) is below this.
        max_iterations
            Give up (with a logged warning) after this many iterations.
        inner_iterations
            Iterations between two checks of the marginal error.
        progress
            Show a tqdm progress bar on stderr.
        kernel_memory_budget
            Bytes the precomputed kernel ``exp(-C / epsilon)`` may take (default 4 GiB). When the
            n x m kernel fits and epsilon allows it without underflow, the iterations run as
            matrix-vector products on it (about 30x faster per iteration on a CPU at 4,000 x
            4,000); otherwise, or with 0, the blocked log-domain path runs, whose memory is
            bounded by ``batch_size x m``. The results agree to float round-off.
        cluster_correction
            When the marginal error is above ``threshold`` after the second iteration, and
            at every check that finds it above, shift the potentials by one constant per
            cluster so that every cluster's plan mass meets its marginal exactly (one extra
            pass, a dual ascent step; the solution is the same). On annotation-informed
            costs, where clusters with label distance 1 are linked only by tiny kernel
            entries, plain Sinkhorn can need hundreds of iterations to move mass between
            clusters; with the correction the PBMC demo converges at the first check (10
            iterations) instead of after 500. ``False`` runs plain Sinkhorn.
        block_memory_budget
            Bytes one row block of the cost may take, in the solve and in the aggregation of
            the outputs (``compute_*``); ``None`` (default) for 1 GiB. The rows per block are
            ``batch_size`` (see :meth:`init_geom`) capped so that about ``1.25 * rows * m``
            values (Sinkhorn; ``rows * n`` for reference blocks) or ``2 * rows * m`` values
            (aggregation) fit, with an INFO log when the cap applies. Like ``batch_size`` it
            changes results by float round-off only.
        sparse
            Skip the (query cluster, reference cluster) blocks of cells that carry no plan
            mass (default). Annotation-informed costs make most blocks negligible: a block at
            label distance 1 pays ``lambda_label`` more per cell pair, a factor
            ``exp(-lambda_label / epsilon)`` (``exp(-30)`` at the defaults) on its plan
            entries. From the potentials and a lower bound of every block's cost, a block is
            skipped in every pass (iterations, correction, outputs) while its plan mass is
            certified below ``sparse_tolerance * threshold``; the set is updated at every
            check, and the solve ends only once the final potentials certify it. The active
            blocks' tile kernels are stored while they fit ``kernel_memory_budget``; the
            others are computed from the cost. ``ot_solution`` reports ``active_share`` (of
            the cell pairs) and ``skipped_mass_bound`` (all skipped blocks together). Skipped
            blocks get the distance of a block without plan mass (their unweighted mean
            cost, see :meth:`compute_distance`). Small problems (below about 4 million cell
            pairs) and problems where more than 80% of the cell pairs must stay active run
            the dense passes. ``False`` always runs them.
        sparse_tolerance
            Largest plan mass a skipped block may carry, relative to ``threshold`` (default
            1e-3: 1e-6 of the plan's unit mass at the default threshold, a thousandth of the
            marginal error the stopping rule allows). With 1e-6, every block that carries
            more than 1e-9 stays active (distances then agree with the dense passes on all
            those blocks), at the price of more active blocks.
        kernel_dtype
            Storage of the active blocks' tile kernels: ``None`` (float32) or ``"bfloat16"``
            (half the memory; opt-in, see docs/method.md for its accuracy and speed).
        devices
            The JAX devices to run on: ``None`` (default) for all of them (``jax.devices()``:
            every GPU of the machine, and in a multi-process run started with
            ``jax.distributed.initialize`` the devices of every process), or a list such as
            ``jax.devices()[:2]``. With several devices every pass over the cost (the
            iterations, the cluster-level correction, the outputs' aggregation) is split by
            rows of cells over them, and kernel mode keeps each device's rows of the kernel
            on that device (``kernel_memory_budget`` is per device); results equal those of
            one device up to float round-off. ``ot_solution.n_devices`` says how many ran
            (docs/method.md#several-devices-and-hosts).
        **kwargs
            Upstream pairOT forwarded extra arguments to OTT-JAX's ``Sinkhorn``. pairot maps
            ``lse_mode=True`` to ``kernel_memory_budget=0`` (log-domain updates only; the same
            result), accepts ``norm_error=1``, ``min_iterations=0``,
            ``recenter_potentials``, ``use_danskin`` and ``implicit_diff=None`` (no effect
            here), and raises a ``TypeError`` naming any other one, with what to do instead
            (docs/method.md#switching-from-upstream-pairot).
        """
        from ._ot import DEFAULT_KERNEL_MEMORY_BUDGET, sinkhorn
        from ._ot._shard import resolve_devices

        mapped = translate("solve", kwargs, _own_arguments(self.solve))
        if "kernel_memory_budget" in mapped:
            if kernel_memory_budget not in (None, 0):
                msg = (
                    f"solve(lse_mode=True, kernel_memory_budget={kernel_memory_budget}) "
                    "contradict each other: lse_mode=True means kernel_memory_budget=0 (no "
                    "precomputed kernel); pass one of the two."
                )
                raise ValueError(msg)
            kernel_memory_budget = mapped["kernel_memory_budget"]

        geom = self._require("geom")
        problem = self._require("problem")
        threshold = _check_positive(threshold, "threshold")
        max_iterations = _check_positive(max_iterations, "max_iterations", integer=True)
        inner_iterations = _check_positive(inner_iterations, "inner_iterations", integer=True)
        if not isinstance(cluster_correction, bool | np.bool_):
            msg = f"cluster_correction must be True or False, got {cluster_correction!r}."
            raise TypeError(msg)
        resolve_devices(devices)  # checked here, before any work
        self._progress = bool(progress)
        # the options bootstrap() solves its resamples with
        self._solve_options = {
            "threshold": threshold,
            "max_iterations": max_iterations,
            "inner_iterations": inner_iterations,
            "kernel_memory_budget": kernel_memory_budget,
            "cluster_correction": bool(cluster_correction),
            "block_memory_budget": block_memory_budget,
            "sparse": sparse,
            "sparse_tolerance": sparse_tolerance,
            "kernel_dtype": kernel_dtype,
            "devices": devices,
        }
        with interruptible():
            solution = sinkhorn(
                geom.x_aug,
                geom.y_aug,
                geom.offset,
                problem.a,
                problem.b,
                epsilon=geom.epsilon,
                tau_a=problem.tau_a,
                tau_b=problem.tau_b,
                batch_size=geom.batch_size,
                threshold=threshold,
                max_iterations=max_iterations,
                inner_iterations=inner_iterations,
                progress=progress,
                kernel_memory_budget=(
                    DEFAULT_KERNEL_MEMORY_BUDGET
                    if kernel_memory_budget is None
                    else kernel_memory_budget
                ),
                query_codes=geom.query_codes,
                ref_codes=geom.ref_codes,
                cluster_correction=bool(cluster_correction),
                block_memory_budget=block_memory_budget,
                sparse=sparse,
                sparse_tolerance=sparse_tolerance,
                kernel_dtype=kernel_dtype,
                devices=devices,
            )
        self.ot_solution = solution
        self._block_memory_budget = block_memory_budget
        self._devices = devices
        self._aggregates = None
        return self.ot_solution

    # ----------------------------------------------------------------- outputs
    def _aggregate(self, rows=None, cols=None) -> dict:
        from ._ot import aggregate

        geom = self._require("geom")
        solution = self._require("solution")
        full = rows is None and cols is None
        if full and self._aggregates is not None:
            return self._aggregates
        rows = slice(None) if rows is None else rows
        cols = slice(None) if cols is None else cols
        progress_logger.info(
            "Aggregating the transport plan over %s x %s cells.",
            f"{len(geom.query_codes[rows]):,}",
            f"{len(geom.ref_codes[cols]):,}",
        )
        with interruptible():
            out = aggregate(
                geom.x_aug[rows],
                geom.y_aug[cols],
                geom.offset,
                np.asarray(solution.f)[rows],
                np.asarray(solution.g)[cols],
                epsilon=geom.epsilon,
                query_codes=geom.query_codes[rows],
                ref_codes=geom.ref_codes[cols],
                n_query_clusters=len(self.query_clusters),
                n_ref_clusters=len(self.reference_clusters),
                batch_size=geom.batch_size,
                kernel=solution.kernel if full else None,
                progress=self._progress,
                block_memory_budget=self._block_memory_budget,
                active=_active_of(solution, full),
                devices=list(getattr(solution, "devices", ())) or None,
            )
        if full:
            self._aggregates = out
            solution.kernel = None  # the outputs are cached: free the n x m kernel
            if solution.blocks is not None:
                solution.blocks.release()  # and the active blocks' tile kernels
        return out

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            values,
            index=pd.Index(self.query_clusters, name="query"),
            columns=pd.Index(self.reference_clusters, name="reference"),
        )

    def compute_mapping(self, aggregation_method: str | None = "mean"):
        """Mapping scores: query clusters (rows) x reference clusters (columns).

        With ``tm_k(j)`` the plan mass that reference cell ``j`` receives from the cells of
        query cluster ``k``, ``a`` and ``b`` the query and reference marginals (see
        docs/method.md#outputs):

        - ``"mean"`` (default): ``M[k, c]`` = mean over the reference cells ``j`` of cluster
          ``c`` of ``tm_k(j) / b_j``, the share of cell j's incoming mass that comes from
          ``k``. Read it down a column: each column sums to 1 over the query clusters (when
          the reference marginal is enforced, ``tau_b=1``), and a score near 1 means the
          cells of reference cluster ``c`` receive their mass almost entirely from query
          cluster ``k``. With the default balanced marginals every cell of ``c`` has the same
          ``b_j``, and ``"mean"`` equals ``"transported_mass"`` times (reference clusters /
          query clusters); with uniform or user-given marginals the two differ.
        - ``"jensen_shannon"``: one minus the base-2 Jensen-Shannon distance between the
          profile ``tm_k(j) / b_j`` over all reference cells and the uniform profile on the
          cells of ``c`` (both normalized to sum 1). 1 when ``k``'s share lands only on
          ``c``'s cells and evenly there, 0 when it lands only outside ``c``.
        - ``"transported_mass"``: ``sum_{j in c} tm_k(j) / sum_{i in k} a_i``, the share of
          query cluster ``k``'s mass that goes to reference cluster ``c``. Read it along a
          row: each row sums to 1 (when the query marginal is enforced, ``tau_a=1``), and a
          score near 1 means the cells of ``k`` are transported almost entirely onto ``c``.
        - ``None``: all three, as a dict keyed by these names.

        Returns
        -------
        DataFrame (index ``query``, columns ``reference``), or a dict of them for ``None``.
        """
        if aggregation_method is not None and aggregation_method not in AGGREGATION_METHODS:
            msg = (
                f"aggregation_method must be one of {AGGREGATION_METHODS} or None, got "
                f"{aggregation_method!r}."
            )
            raise ValueError(msg)
        geom = self._require("geom")
        problem = self._require("problem")
        agg = self._aggregate()
        n_ref = len(self.reference_clusters)
        methods = AGGREGATION_METHODS if aggregation_method is None else (aggregation_method,)
        out = {}
        for method in methods:
            if method == "mean":
                values = _scores.mapping_mean(agg["tm"], problem.b, geom.ref_codes, n_ref)
            elif method == "jensen_shannon":
                values = _scores.mapping_jensen_shannon(agg["tm"], problem.b, geom.ref_codes, n_ref)
            else:
                values = _scores.mapping_transported_mass(agg["mass"], problem.a, geom.query_codes)
            out[method] = self._frame(values)
        return out if aggregation_method is None else out[aggregation_method]

    def compute_distance(self, n_samples: int | None = None, random_state: int = 0):
        """Plan-weighted mean cost between each query and reference cluster, from 0 to 2.

        See docs/method.md#outputs.

        Exact over all cells by default; with ``n_samples``, over a seeded subsample of at most
        ``n_samples`` cells per cluster on each side.
        """
        geom = self._require("geom")
        self._require("solution")
        if n_samples is None:
            agg = self._aggregate()
            qc, rc = geom.query_codes, geom.ref_codes
        else:
            n_samples = _check_positive(n_samples, "n_samples", integer=True)
            rows = downsample_indices(geom.query_codes, n_samples, random_state=random_state)
            cols = downsample_indices(geom.ref_codes, n_samples, random_state=random_state)
            agg = self._aggregate(rows, cols)
            qc, rc = geom.query_codes[rows], geom.ref_codes[cols]
        values = _scores.cluster_distance(agg["mass"], agg["cost_mass"], agg["cost_sum"], qc, rc)
        return self._frame(values)

    # ------------------------------------------------------------ per-cell mapping
    def _side(self, side: str) -> str:
        if side not in ("query", "reference"):
            msg = f"side must be 'query' or 'reference', got {side!r}."
            raise ValueError(msg)
        return side

    def compute_cell_mapping(self, side: str = "query") -> pd.DataFrame:
        """Each cell's distribution over the clusters of the other study, from the plan.

        For a query cell ``i`` and a reference cluster ``c``: ``p_i(c) = sum_{j in c} P_ij /
        sum_j P_ij``, the share of the cell's transported mass that lands on ``c``; for a
        reference cell ``j`` and a query cluster ``k`` (``side="reference"``): ``q_j(k) =
        sum_{i in k} P_ij / sum_i P_ij``. It is the conditional of the entropic plan, shaped
        by ``epsilon`` and the (balanced) marginals, not a classifier's probability (see
        docs/method.md#per-cell-mapping). The sums come from the same single pass over the
        plan as :meth:`compute_mapping` and :meth:`compute_distance` and are cached with
        them: after either, this costs no further pass.

        Parameters
        ----------
        side
            ``"query"`` (default): one row per query cell, one column per reference cluster;
            ``"reference"``: one row per reference cell, one column per query cluster.

        Returns
        -------
        DataFrame
            Indexed by the cell names (``adata1.obs_names`` or ``adata2.obs_names``, in
            order); columns (their name is the other side, ``"reference"`` or ``"query"``):
            one per cluster of the other side, the distribution (rows sum to 1); then
            ``best`` (Categorical over those clusters: the most probable one, the first in
            cluster order on ties), ``probability`` (its probability), ``entropy``
            (``-sum_c p(c) log p(c)``, natural log, in nats; 0 for a cell sent to one cluster)
            and ``entropy_normalized`` (entropy divided by ``log(number of clusters)``, in
            [0, 1]; 1 = spread evenly over all clusters).

        Notes
        -----
        A cell whose plan row (column) carries no mass at all, possible only with relaxed
        marginals (``tau < 1``) or float underflow, has NaN in every column and a missing
        ``best`` (logged at INFO). If a cluster is named like a summary column (``"best"``,
        ``"probability"``, ``"entropy"``, ``"entropy_normalized"``), every distribution
        column is prefixed with ``"p_"`` (``"p_best"``, ...), so names never clash; the
        clusters, in column order, are always ``frame["best"].cat.categories``.
        """
        from ._answers._cell_mapping import cell_mapping_frame

        side = self._side(side)
        agg = self._aggregate()
        if "row_cluster" not in agg:  # cached by a pass without per-cell sums: redo it
            self._aggregates = None
            agg = self._aggregate()
        if side == "query":
            return cell_mapping_frame(
                agg["row_cluster"], self.adata1.obs_names, self.reference_clusters, "reference"
            )
        return cell_mapping_frame(
            np.asarray(agg["tm"]).T, self.adata2.obs_names, self.query_clusters, "query"
        )

    def transfer_labels(
        self,
        adata: AnnData | None = None,
        *,
        side: str = "query",
        key_added: str = "pairot",
    ) -> AnnData:
        """A copy of a study with each cell's best cluster of the other study, its confidence,
        entropy and distribution (see :func:`pairot.tl.transfer_labels`).

        Parameters
        ----------
        adata
            The study to annotate (matched by cell name): by default the one given to this
            ``DatasetMap`` (``adata1`` for ``side="query"``, ``adata2`` otherwise); also the
            full study when the fit used a downsampled one (unfitted cells get NaN). Never
            modified.
        side
            Whose cells to annotate: ``"query"`` (with reference clusters) or
            ``"reference"`` (with query clusters).
        key_added
            Prefix of the ``obs`` / ``obsm`` / ``uns`` keys written.
        """
        from ._answers._cell_mapping import transfer_labels

        side = self._side(side)
        if adata is None:
            adata = self.adata1 if side == "query" else self.adata2
        return transfer_labels(adata, self.compute_cell_mapping(side), key_added=key_added)

    def best_cluster_shares(self, side: str = "query") -> pd.DataFrame:
        """Cells of each cluster counted by their best cluster of the other study.

        Returns a table with one row per cluster of ``side`` and one column per cluster of the
        other study: the number of cells whose ``best`` (:meth:`compute_cell_mapping`) is that
        cluster. Divide by the row sums for shares.
        """
        from ._answers._cell_mapping import best_cluster_shares

        side = self._side(side)
        own = self.query_labels if side == "query" else self.reference_labels
        other = "reference" if side == "query" else "query"
        return best_cluster_shares(own, self.compute_cell_mapping(side), side, other)

    def cell_mapping_summary(
        self,
        side: str = "query",
        *,
        split_share: float = 0.25,
        min_cells: int = 5,
    ) -> pd.DataFrame:
        """Per cluster, how its cells' best clusters of the other study are distributed, and
        whether the cluster splits.

        A cluster whose cells go, cell by cell, to two different clusters of the other study
        is a finding (a coarse annotation against a finer one, a mixed cluster): the cluster
        mapping averages it away. The rule: a cluster is ``split`` when the second most
        frequent best cluster among its cells holds at least ``split_share`` of them (default
        25%) and at least ``min_cells`` cells.

        Parameters
        ----------
        side
            ``"query"`` (default; query clusters over reference clusters) or
            ``"reference"``.
        split_share
            Share in (0, 1] of the second most frequent best cluster that flags a split.
        min_cells
            Minimum number of cells behind that second cluster (so that a handful of cells of
            a small cluster is no split).

        Returns
        -------
        DataFrame
            Indexed by cluster; columns ``n_cells``, ``n_mapped`` (cells with a best cluster),
            ``first``, ``first_share``, ``first_cells``, ``second``, ``second_share``,
            ``second_cells`` (the two most frequent best clusters, their shares of
            ``n_mapped`` and cell counts; missing when there is none) and ``split``. The full
            counts are :meth:`best_cluster_shares`.
        """
        from ._answers._cell_mapping import split_summary

        if isinstance(split_share, bool | np.bool_) or not isinstance(
            split_share, int | float | np.integer | np.floating
        ):
            msg = f"split_share must be a number in (0, 1], got {split_share!r}."
            raise TypeError(msg)
        if not 0 < split_share <= 1:
            msg = f"split_share must lie in (0, 1], got {split_share!r}; e.g. 0.25."
            raise ValueError(msg)
        if isinstance(min_cells, bool | np.bool_) or not isinstance(min_cells, int | np.integer):
            msg = f"min_cells must be an integer >= 0, got {min_cells!r}."
            raise TypeError(msg)
        if min_cells < 0:
            msg = f"min_cells must be >= 0, got {min_cells}; e.g. 5."
            raise ValueError(msg)
        side = self._side(side)
        counts = self.best_cluster_shares(side)
        own = self.query_labels if side == "query" else self.reference_labels
        n_cells = np.bincount(own.codes, minlength=len(own.categories))
        return split_summary(
            counts, n_cells, split_share=float(split_share), min_cells=int(min_cells)
        )

    def bootstrap(
        self,
        n_bootstrap: int = 20,
        *,
        resample: tuple[str, ...] | str = ("cells", "samples"),
        confidence: float = 0.9,
        random_state: int = 0,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Confidence of each match: the mapping and the distance under resampling.

        See docs/method.md#confidence-of-each-match. Each of the ``n_bootstrap`` resamples
        draws, from its own seed ``[random_state, resample index]``:

        - ``"cells"``: within every cluster of both studies, as many cells as the cluster
          has, with replacement; the drawn cells enter the marginals with their
          multiplicities (the same problem as on the duplicated cells; the cell features are
          not recomputed);
        - ``"samples"``: within each study, its samples (donors) with replacement (a donor
          drawn twice contributes its pseudobulk profiles twice; a draw of one distinct
          donor is drawn again); limma is re-run on the drawn profiles, the AUROC columns of
          the original DE tables are kept, and the marker lists, the label distance and the
          label part of the cost are rebuilt with the parameters of :meth:`init_geom`.
          After ``init_geom(label_distance_mode="robust")`` the samples are not resampled
          (that label distance rests on the AUROC alone, which a donor resample keeps; an
          INFO log says so, and with ``resample="samples"`` alone the cells are resampled
          instead, with a warning).

        Each resample is solved again with the options of :meth:`solve` (from zero
        potentials) and aggregated into the ``"mean"`` mapping and the distance.

        Parameters
        ----------
        n_bootstrap
            Number of resamples, >= 2. Each costs about one solve plus one aggregation,
            plus limma and the label distance when samples are resampled.
        resample
            ``"cells"``, ``"samples"`` or both (default). A study's samples are resampled
            only when its ``uns["pairot"]`` holds the pseudobulk profiles (stored by
            :func:`pairot.pp.preprocess_adatas`) and it has at least 3 donors with
            profiles; otherwise a WARNING says why and its DE stays as it is (when neither
            study qualifies and only ``"samples"`` was asked for, the cells are resampled).
        confidence
            Share of the resampled values inside each interval, in (0, 1): the interval is
            from the ``(1 - confidence) / 2`` to the ``(1 + confidence) / 2`` quantile of
            the resampled values (percentile intervals).
        random_state
            Seed, an integer >= 0; the same seed gives the same table.
        progress
            Show a tqdm progress bar over the resamples (Ctrl-C stops between two).

        Returns
        -------
        A long DataFrame, one row per (query cluster, reference cluster), in the order of
        the mapping's rows, then columns: ``query, reference, mapping, mapping_low,
        mapping_high, distance, distance_low, distance_high, top_share``. ``mapping`` and
        ``distance`` are the point estimates of the full solve (``compute_mapping()``,
        ``compute_distance()``); ``*_low`` / ``*_high`` the interval bounds; ``top_share``
        the share of resamples in which this reference cluster has the query cluster's
        highest mapping. ``attrs`` records ``n_bootstrap``, ``confidence``,
        ``random_state``, ``resample`` (what was resampled), ``samples_resampled`` (whose
        donors) and ``n_not_converged``. The table is also kept as
        :attr:`bootstrap_results` (for ``select_similar_clusters(..., intervals=...)``).

        The intervals describe the variability of the estimates when the cells and the
        donors are resampled, given the annotations and the method. They are not p-values,
        their coverage is not calibrated, and they contain neither annotation errors nor the
        effect of choosing ``epsilon``, the HVGs or the thresholds.
        """
        from ._bootstrap import bootstrap

        return bootstrap(
            self,
            n_bootstrap,
            resample=resample,
            confidence=confidence,
            random_state=random_state,
            progress=progress,
        )

    @property
    def bootstrap_results(self) -> pd.DataFrame:
        """The table of the last :meth:`bootstrap` of the current solution;
        :class:`StageError` before it (or after a new ``solve``)."""
        state = getattr(self, "_bootstrap_state", None)
        if state is None or self.ot_solution is None or state[0] is not self.ot_solution:
            msg = "DatasetMap has no bootstrap yet: call bootstrap() first (after solve())."
            raise StageError(msg)
        return state[1]

    @staticmethod
    def select_similar_clusters(
        mapping: pd.DataFrame,
        distance: pd.DataFrame,
        threshold_mapping: float | None = 0.25,
        threshold_distance: float | None = 1.0,
        n_top: int | None = None,
        *,
        output: str = "dict",
        unmatched: pd.DataFrame | None = None,
        intervals: pd.DataFrame | None = None,
    ) -> dict[str, list[str]] | pd.DataFrame:
        """Suggested matches: for each query cluster, the reference clusters with mapping >=
        ``threshold_mapping`` and distance <= ``threshold_distance``, best mapping first (at
        most ``n_top`` each).

        With the default ``"mean"`` mapping, a match (q, r) says that the cells of reference
        cluster r receive at least ``threshold_mapping`` of their mass, on average, from query
        cluster q, and that the plan-weighted mean cost between the two clusters is at most
        ``threshold_distance`` (see docs/method.md#outputs). A query cluster can have several
        matches (it spreads over several reference clusters) or none.

        Parameters
        ----------
        mapping, distance
            Outputs of :meth:`compute_mapping` (one method) and :meth:`compute_distance`, with
            the same rows and columns.
        threshold_mapping, threshold_distance
            The thresholds; ``None`` applies none (upstream pairOT's meaning): with both
            ``None`` every pair is listed, ranked by mapping.
        n_top
            At most this many matches per query cluster; ``None`` for all.
        output
            ``"dict"`` (default, upstream pairOT's contract): ``{query cluster: [reference
            clusters, best first]}`` with every query cluster as a key, in the mapping's row
            order (an empty list when nothing passes). ``"table"``: the long table below,
            with the scores and the rank of every match (what pairot's own pipeline, report
            and command line use).
        unmatched
            The output of :meth:`unmatched_clusters`; needs ``output="table"`` (with the
            dict it is a ``ValueError``: a list of names has no room for it). The table then gets
            two more columns, ``unmatched`` (the flag of the row's query cluster) and
            ``reason`` (its sentence for flagged clusters, ``""`` otherwise), and every
            flagged query cluster without a passing match gets one row with ``reference``
            ``None``, ``mapping`` and ``distance`` NaN and ``rank`` 0, so that it is listed.
            ``None`` (default): the table as without it.
        intervals
            The table of :meth:`bootstrap` (e.g. ``dataset_map.bootstrap_results``); needs
            ``output="table"`` (``ValueError`` with the dict). Adds its columns ``mapping_low,
            mapping_high, distance_low, distance_high, top_share`` to the table, matched by
            (query, reference).

        Returns
        -------
        By default the dict described under ``output``. With ``output="table"`` a long table
        with columns ``query, reference, mapping, distance, rank``; ``rank`` counts the
        matches of each query cluster from 1 (1 = its best match; see
        docs/method.md#rank-convention).

        Examples
        --------
        >>> matches = pr.tl.DatasetMap.select_similar_clusters(mapping, distance)
        >>> best = {query: refs[0] for query, refs in matches.items() if refs}  # upstream's use
        >>> table = pr.tl.DatasetMap.select_similar_clusters(mapping, distance, output="table")
        """
        if output not in ("table", "dict"):
            msg = (
                f"output must be 'dict' (the default: {{query: [reference clusters]}}) or "
                f"'table' (the long table with scores and ranks), got {output!r}."
            )
            raise ValueError(msg)
        if output == "dict":
            for argument, value in (("unmatched", unmatched), ("intervals", intervals)):
                if value is not None:
                    msg = (
                        f"{argument}= adds columns to the long table, but output='dict' (the "
                        "default) returns {query: [reference clusters]}, which has no room "
                        f"for them; pass output='table' together with {argument}=."
                    )
                    raise ValueError(msg)
        if not isinstance(mapping, pd.DataFrame) or not isinstance(distance, pd.DataFrame):
            msg = (
                "mapping and distance must be the DataFrames of compute_mapping/compute_distance, "
                f"got {type(mapping).__name__} and {type(distance).__name__}; for "
                "compute_mapping(aggregation_method=None) pass one entry, e.g. mapping['mean']."
            )
            raise TypeError(msg)
        if list(mapping.index) != list(distance.index) or list(mapping.columns) != list(
            distance.columns
        ):
            msg = "mapping and distance must have the same query rows and reference columns."
            raise ValueError(msg)
        thresholds = {}
        for argument, value in (
            ("threshold_mapping", threshold_mapping),
            ("threshold_distance", threshold_distance),
        ):
            if value is None:
                thresholds[argument] = None
                continue
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
                msg = f"{argument} must be a number or None (no threshold), got {value!r}."
                raise TypeError(msg)
            if not np.isfinite(value):
                msg = f"{argument} must be finite or None (no threshold), got {value}."
                raise ValueError(msg)
            thresholds[argument] = float(value)
        if n_top is not None:
            n_top = _check_positive(n_top, "n_top", integer=True)
        long = pd.DataFrame(
            {
                "query": np.repeat(np.asarray(mapping.index, dtype=object), mapping.shape[1]),
                "reference": np.tile(np.asarray(mapping.columns, dtype=object), mapping.shape[0]),
                "mapping": mapping.to_numpy(dtype=np.float64).ravel(),
                "distance": distance.to_numpy(dtype=np.float64).ravel(),
            }
        )
        long["query_order"] = np.repeat(np.arange(mapping.shape[0]), mapping.shape[1])
        keep = np.ones(len(long), dtype=bool)
        if thresholds["threshold_mapping"] is not None:
            keep &= long["mapping"].to_numpy() >= thresholds["threshold_mapping"]
        if thresholds["threshold_distance"] is not None:
            keep &= long["distance"].to_numpy() <= thresholds["threshold_distance"]
        long = long[keep].sort_values(
            ["query_order", "mapping"], ascending=[True, False], kind="stable"
        )
        long["rank"] = long.groupby("query_order").cumcount() + 1
        if n_top is not None:
            long = long[long["rank"] <= n_top]
        long = long.drop(columns="query_order").reset_index(drop=True)
        if unmatched is not None:
            from ._answers._novelty import mark_unmatched

            long = mark_unmatched(long, unmatched, list(mapping.index))
        if intervals is not None:
            from ._bootstrap import add_intervals

            long = add_intervals(long, intervals)
        if output == "dict":
            chosen = {query: [] for query in mapping.index}
            for query, reference in zip(long["query"], long["reference"], strict=True):
                chosen[query].append(reference)
            return chosen
        return long

    def unmatched_clusters(
        self,
        *,
        tau_a: float = 0.95,
        min_retained: float = 0.6,
        max_mapping_ratio: float = 0.7,
    ) -> pd.DataFrame:
        """Flag the query clusters whose cell type the reference lacks ("no match").

        The balanced plan sends every query cluster somewhere, so a missing type still has a
        best reference cluster. Two figures tell it apart
        (docs/method.md#unmatched-query-clusters):

        - ``retained``: the problem is solved again with the query marginal relaxed
          (``tau_a``, unbalanced OT; ``tau_b`` and the marginals as set by
          :meth:`init_problem`), and each query cluster's share of the transported mass is
          divided by its share of the marginal ``a``. About 1 for a matched cluster (a bit
          above when another cluster sheds mass); low when its cells find no partner worth
          their cost.
        - ``mapping_ratio``: its best ``"mean"`` mapping over the median best mapping of the
          other query clusters. About 1 for the main source of a reference cluster; low when
          it only takes what the main source leaves.

        A cluster is flagged when ``retained < min_retained`` **and** ``mapping_ratio <
        max_mapping_ratio``. Either alone misfires on a missing type close to a reference
        type: its sibling query cluster then competes for the same reference cells and also
        sheds mass when relaxed, but it stays that cluster's main source (calibration:
        benchmarks/bench_novelty.py and benchmarks/README.md).

        Parameters
        ----------
        tau_a
            Relaxation of the query marginal in the extra solve, in (0, 1); 1 would enforce
            it and tell nothing. The thresholds are calibrated at 0.95.
        min_retained
            Flag only clusters keeping less than this share (> 0) of their mass.
        max_mapping_ratio
            Flag only clusters whose best mapping is below this fraction (> 0) of the typical
            best mapping.

        Returns
        -------
        DataFrame indexed by query cluster (``query``), in the mapping's row order, with

        - ``unmatched`` (bool): the flag;
        - ``score``: ``max(retained / min_retained, mapping_ratio / max_mapping_ratio)``, the
          number the rule thresholds: flagged exactly when ``score < 1``; lower = more novel;
        - ``reason``: a plain-language sentence with the figures and thresholds;
        - the components: ``retained``, ``mapping_ratio``, ``best_reference`` and
          ``best_mapping`` (highest mapping), ``closest_reference`` and ``best_distance``
          (lowest distance), ``distance_ratio`` (that distance over the median of the other
          query clusters' lowest distances), ``feature_ratio`` (the expression part of that
          distance over the mean expression cost between the cluster's own cells) and
          ``label_distance`` (lowest label distance). The last three are shown to explain a
          flag; the rule does not read them (they separated worse on the simulations).

        Notes
        -----
        Cost: one extra Sinkhorn solve with ``tau_a`` relaxed, plus one aggregation pass over
        its plan (the same work as :meth:`solve` and :meth:`compute_mapping`), and the
        mapping and distance of the fitted plan (cached if already computed). The object's
        own problem and solution are left as they are. Requires :meth:`solve`.

        A flag says: on these data, the cluster's cells have no counterpart worth their
        transport cost, and no reference cluster draws its mass mainly from it. It does not
        prove a new cell type (a cluster split differently, a state or a batch artefact can
        look the same), and an unflagged cluster may still be novel when it is very close to a
        reference type (see the calibration figures).
        """
        from ._answers import _novelty

        for stage in ("geom", "problem", "solution"):
            self._require(stage)
        tau_a = _check_tau(tau_a, "tau_a")
        if tau_a == 1:
            msg = (
                "tau_a must be below 1 for unmatched_clusters (1 enforces the query marginal, "
                "so no cluster can shed mass); pass e.g. tau_a=0.95 (the calibrated value)."
            )
            raise ValueError(msg)
        min_retained = _check_positive(min_retained, "min_retained")
        max_mapping_ratio = _check_positive(max_mapping_ratio, "max_mapping_ratio")
        mapping = self.compute_mapping("mean")
        distance = self.compute_distance()
        table = _novelty.components(self, mapping, distance, tau_a)
        return _novelty.flag(
            table, tau_a=tau_a, min_retained=min_retained, max_mapping_ratio=max_mapping_ratio
        )

    # -------------------------------------------------------------- properties
    @property
    def label_distance_mode(self) -> str:
        """The label distance ``init_geom`` built: ``"pairot"`` or ``"robust"``
        (:class:`StageError` before ``init_geom``)."""
        self._require("geom")
        return self._label_params["label_distance_mode"]

    @property
    def label_distance_params(self) -> dict:
        """The marker and label-distance parameters ``init_geom`` used (a copy), with
        ``label_distance_mode``; :meth:`bootstrap` rebuilds the label distance with them."""
        self._require("geom")
        return dict(self._label_params)

    @property
    def label_distance(self) -> pd.DataFrame:
        """The normalized label distance L, query x reference clusters."""
        self._require("geom")
        return self._label_distance

    @property
    def DEGs_label_distance(self) -> Mapping:  # noqa: N802 - public name of the method
        """``DEGs_label_distance[q][r]``: the genes behind the label distance between query
        cluster q and reference cluster r.

        One DataFrame per (q, r), indexed by gene (index name ``gene``), a row per marker
        gene of q's list in list order, with upstream pairOT's columns ``rank_query`` (int64:
        the gene's rank in q's list, 1 = q's top marker), ``logFC_query``, ``rank_ref``
        (float64: its rank in r's full marker list, 1 = r's top marker; NaN when the gene is
        not a marker of r) and ``logFC_ref`` (NaN when absent), and pairot's
        ``contribution`` = ``|log(rank_query) - log(rank_ref)|``, with 251 standing in for
        an absent gene's rank; the rank distance ``D[q, r]`` is the mean of ``contribution``
        (see docs/method.md#label-distance and docs/method.md#rank-convention).
        """
        self._require("geom")
        return _DegTable(self._label_details, self.query_clusters, self.reference_clusters)


def _active_of(solution, full: bool):
    """What :func:`~pairot.tl._ot.aggregate` gets as ``active``: the solve's blocks for the
    full outputs, their active set for a subsample, ``None`` after dense passes."""
    blocks = getattr(solution, "blocks", None)
    if blocks is None:
        return None
    return blocks if full else blocks.active
