"""``DatasetMap``: the public, staged OT model (geometry -> problem -> solution -> outputs).

A facade: each public method checks its arguments (``_checks``) and makes one call into a
layer: the cost (``_cost``: studies, label distance, features, geometry, problem), the engine
(``_ot``, through ``_solve``) or the answers (``_answers``: mapping, distance, per-cell
mapping, no-match flags, matches); ``bootstrap`` runs them all again per resample
(``_bootstrap``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from .._interrupt import interruptible
from . import _checks as checks
from ._checks import StageError
from ._cost import _geometry, _labels, _studies
from ._cost._geometry import Geometry
from ._cost._label_diagnostics import diagnostics_of as label_term_diagnostics
from ._cost._ott_arguments import translate
from ._cost._problem import OTProblem, build_problem
from ._cost._robust_label_distance import check_mode
from ._cost._small_clusters import DEFAULT_MIN_CELLS
from ._dataset_map_answers import DatasetMapAnswers
from ._solve import solve_problem


class DatasetMap(DatasetMapAnswers):
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
        studies = _studies.load_studies(adata1, adata2, min_cells, small_clusters)
        self.adata1, self.adata2 = studies.adata1, studies.adata2
        self._info = studies.info
        self.query_labels = studies.query_labels
        self.reference_labels = studies.reference_labels
        #: The clusters below ``min_cells`` and what was done with them (columns ``side,
        #: cluster, n_cells, action, merged_into``); empty when there are none.
        self.small_clusters = studies.small_clusters
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
            marker thresholds (docs/method.md#robust-label-distance). ``"auto"`` (not part
            of the published method): the robust label distance, weighted to the scale of the
            cell term (``lambda_feature=1``, ``lambda_label`` = the median spread of a query
            cell's cell-term cost across the reference clusters), or left out
            (``lambda_label=0``) when it agrees with the cell term no better than chance; the
            decision and its reason are in ``label_distance_params["auto_decision"]``
            (docs/method.md#automatic-label-distance). It decides the weights, so
            ``lambda_feature`` and ``lambda_label`` must stay at their defaults.
            ``DEGs_label_distance`` lists the marker genes in every mode.
        **kwargs
            Upstream pairOT forwarded extra arguments to OTT-JAX's ``PointCloud``; pairot
            accepts ``relative_epsilon=None/False`` and ``scale_cost=1`` (what it computes)
            and raises a ``TypeError`` naming any other one
            (docs/method.md#switching-from-upstream-pairot).

        Calling ``init_geom`` again discards the problem and the solution.
        """
        translate("init_geom", kwargs, checks.own_arguments(self.init_geom))
        label_distance_mode = check_mode(label_distance_mode)
        epsilon = checks.check_positive(epsilon, "epsilon")
        batch_size = checks.check_positive(batch_size, "batch_size", integer=True)
        lambda_feature, lambda_label = checks.check_weights(
            lambda_feature, lambda_label, label_distance_mode
        )
        # kept for bootstrap(), which rebuilds the label distance from resampled DE tables
        self._label_params = _labels.label_parameters(
            n_genes_ova=n_genes_ova,
            n_genes_ava=n_genes_ava,
            q_norm=q_norm,
            overlap_threshold_ava=overlap_threshold_ava,
            overlap_n_genes_ava=overlap_n_genes_ava,
            adj_p_val_threshold=adj_p_val_threshold,
            auroc_threshold=auroc_threshold,
            logfc_threshold=logfc_threshold,
            gene_filtering=gene_filtering,
            label_distance_mode=label_distance_mode,
        )
        self.geom, labels = _geometry.build_cost(
            self.adata1,
            self.adata2,
            self._info,
            self.query_labels,
            self.reference_labels,
            self._label_params,
            embedding_layer=embedding_layer,
            epsilon=epsilon,
            batch_size=batch_size,
            lambda_feature=lambda_feature,
            lambda_label=lambda_label,
        )
        if labels.auto is not None:
            self._label_params["auto_decision"] = dict(labels.auto)
        self._rank_distance = labels.rank_distance
        self._label_distance = labels.label_distance
        self._label_details = labels.details
        self._problem = None
        self.ot_solution = None
        self._aggregates = None

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
        translate("init_problem", kwargs, checks.own_arguments(self.init_problem))
        geom = self._require("geom")
        tau_a = checks.check_tau(tau_a, "tau_a")
        tau_b = checks.check_tau(tau_b, "tau_b")
        marginals_distribution = checks.check_marginals_distribution(marginals_distribution)
        if a is not None:
            a = checks.check_marginal(a, geom.x.shape[0], "a", "query")
        if b is not None:
            b = checks.check_marginal(b, geom.y.shape[0], "b", "reference")
        self._problem = build_problem(
            geom,
            tau_a=tau_a,
            tau_b=tau_b,
            marginals_distribution=marginals_distribution,
            a=a,
            b=b,
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
        init="auto",
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
        init
            Where the iterations start (docs/method.md#warm-starts); every start leads to the
            same solution, and the stopping rule and the skipped-mass certificate are the
            same. ``"zeros"``: the engine's start (``f = g = 0`` for the dense passes, the
            cluster-level potentials for the active-block passes). ``"cluster"``: the
            cluster-level potentials for the dense passes too. ``"multiscale"``: first a
            solve on a seeded stratified downsample of the same cells (at most 1,000 cells
            per cluster of each study, seed 0 for the query and 1 for the reference, each
            cluster keeping its mass) with the same options and stopping rule, its potentials
            extended to every cell by one exact c-transform pass each way. A solved
            ``DatasetMap`` on a subset of these cells (matched by ``obs_names``): its
            potentials, extended the same way. ``"auto"`` (default): ``"multiscale"`` above
            2**40 cell pairs (1.1e12, more than the seed's full 600,929 x 1,265,624 cells)
            when the downsample holds at most a quarter of them, else ``"zeros"``: below it,
            at every size measured, the default solve converged after 2 iterations from the
            engine's start, and the multiscale start only cost time. A warm start pays
            where Sinkhorn is slow from zero: plain Sinkhorn (``cluster_correction=False``,
            or above 1,000 clusters where the correction is skipped) on the PBMC demo needs
            3 iterations to 1e-3 from ``"cluster"`` instead of 502. ``ot_solution.start``
            names the start that ran and ``ot_solution.start_iterations`` the downsample's
            iterations.
        **kwargs
            Upstream pairOT forwarded extra arguments to OTT-JAX's ``Sinkhorn``. pairot maps
            ``lse_mode=True`` to ``kernel_memory_budget=0`` (log-domain updates only; the same
            result), accepts ``norm_error=1``, ``min_iterations=0``,
            ``recenter_potentials``, ``use_danskin`` and ``implicit_diff=None`` (no effect
            here), and raises a ``TypeError`` naming any other one, with what to do instead
            (docs/method.md#switching-from-upstream-pairot).
        """
        mapped = translate("solve", kwargs, checks.own_arguments(self.solve))
        kernel_memory_budget = checks.check_lse_mode(mapped, kernel_memory_budget)
        geom = self._require("geom")
        problem = self._require("problem")
        # the options bootstrap() solves its resamples with
        self._solve_options = checks.check_solve_options(
            threshold=threshold,
            max_iterations=max_iterations,
            inner_iterations=inner_iterations,
            kernel_memory_budget=kernel_memory_budget,
            cluster_correction=cluster_correction,
            block_memory_budget=block_memory_budget,
            sparse=sparse,
            sparse_tolerance=sparse_tolerance,
            kernel_dtype=kernel_dtype,
            devices=devices,
        )
        start = checks.check_init(init, self, DatasetMap)
        self._progress = bool(progress)
        with interruptible():
            self.ot_solution = solve_problem(
                geom, problem, self._solve_options, progress=progress, init=start
            )
        self._block_memory_budget = block_memory_budget
        self._devices = devices
        self._aggregates = None
        return self.ot_solution

    def label_term_diagnostics(self) -> pd.DataFrame:
        """Per query cluster, how much evidence its row of the label term has and whether the
        cells agree with it (docs/method.md#accuracy-on-real-studies).

        Returns
        -------
        DataFrame
            Indexed by query cluster; columns ``n_cells`` (cells in the fit), ``n_markers``
            (genes in the cluster's published marker list after ``init_geom``'s selection,
            in every mode), ``saturated_share`` (share of its row of ``label_distance`` at
            1), ``constant_row`` (a constant row does not move the plan), ``label_nearest``
            (the reference cluster of smallest ``L``; None for a constant row),
            ``cell_nearest`` (the reference cluster of smallest cluster-level cell-term cost,
            each reference cluster's mean over the query clusters subtracted so that a
            cluster close to all is nobody's default; on a seeded subsample of at most 2,000
            cells per study) and ``disagree`` (both defined and different). Rows with few
            markers, a high ``saturated_share`` or ``disagree`` are where the label term can
            carry a cluster's cells to a reference cluster its cells do not resemble.
        """
        self._require("geom")
        return label_term_diagnostics(
            self.geom,
            self._label_distance,
            self._label_details,
            self.query_clusters,
            self.reference_clusters,
        )

    # -------------------------------------------------------------- properties
    @property
    def label_distance_mode(self) -> str:
        """The label distance ``init_geom`` built: ``"pairot"``, ``"robust"`` or ``"auto"``
        (:class:`StageError` before ``init_geom``)."""
        self._require("geom")
        return self._label_params["label_distance_mode"]

    @property
    def label_distance_params(self) -> dict:
        """The marker and label-distance parameters ``init_geom`` used (a copy), with
        ``label_distance_mode``; :meth:`bootstrap` rebuilds the label distance with them.
        With ``label_distance_mode="auto"`` also ``auto_decision``: ``label_distance``
        (``"robust"`` or ``"none"``), the weights used, ``cell_scale``, ``association``,
        ``p_value`` and ``reason``."""
        self._require("geom")
        params = dict(self._label_params)
        if "auto_decision" in params:
            params["auto_decision"] = dict(params["auto_decision"])
        return params

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
        return _labels.DegTable(self._label_details, self.query_clusters, self.reference_clusters)
